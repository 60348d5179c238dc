// libFuzzer target for the mountinfo parser and the inventory built from it. The input is split
// at the first NUL into two tables so that Inventory::update() also diffs one against another;
// each half is tried whole and line by line. Lookups use the parsed mount points and a few
// fixed paths. Nothing here may crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "daemon/mount/inventory.h"
#include "daemon/mount/mountinfo.h"

using storwatch::daemon::Inventory;
using storwatch::daemon::MountEntry;

namespace {

void exercise(Inventory& inv, std::string_view text) {
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    auto line = storwatch::daemon::parse_mountinfo_line(rest.substr(0, nl));
    if (line) (void)line->read_only();
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }

  auto mounts = storwatch::daemon::parse_mountinfo(text);
  if (!mounts) return;
  for (const MountEntry& m : *mounts) {
    (void)storwatch::daemon::watched_by_default(m);
    (void)m.has_super_option("emergency_ro");
  }
  Inventory::Diff diff = inv.update(*mounts);
  (void)diff.empty();
  for (const MountEntry& m : inv.mounts()) {
    (void)inv.find_by_mount_prefix(m.mount_point);
    (void)inv.find_by_mount_prefix(m.mount_point + "/x");
    (void)inv.find(m.major, m.minor);
  }
  for (std::string_view p : {"/", "", "x", "//", "/a/", "/a//b", "/mnt/a/b"})
    (void)inv.find_by_mount_prefix(p);
  for (const auto* fs : inv.all()) (void)fs->dev();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nul = input.find('\0');
  Inventory inv;
  exercise(inv, input.substr(0, nul));
  if (nul != std::string_view::npos) exercise(inv, input.substr(nul + 1));
  return 0;
}
