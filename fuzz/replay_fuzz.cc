// libFuzzer target for the replay FIFO's line parser (ReplaySource::parse_line): whoever can write
// to the FIFO controls these bytes. The input is tried whole and line by line, as the source splits
// it. A line that parses becomes an event, which must then serialise (as the bus does), read back,
// print as a line and yield a fold key without crashing. The resolver accepts every absolute path.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/bus/bus.h"
#include "daemon/bus/folder.h"
#include "daemon/source/replay_source.h"

namespace {

using storwatch::daemon::ReplaySource;

std::optional<storwatch::FsRef> resolve(const std::string& path) {
  if (path.empty() || path.front() != '/') return std::nullopt;
  storwatch::FsRef f;
  f.major = 8;
  f.minor = 1;
  f.fstype = "ext4";
  f.source = "/dev/sda1";
  f.mounts = {path};
  return f;
}

void exercise(std::string_view line) {
  static const ReplaySource::ResolveFs resolver = resolve;
  auto e = ReplaySource::parse_line(line, resolver);
  if (!e) {
    (void)e.error().message();
    return;
  }
  (void)storwatch::daemon::Folder::fold_key(*e);
  (void)storwatch::event_to_line(*e);
  auto bus = storwatch::daemon::make_bus_event(*e);
  auto back = storwatch::event_from_json(nlohmann::json::parse(bus->json, nullptr, false));
  if (!back) __builtin_trap();  // the daemon's own JSON must read back
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  exercise(text);
  while (!text.empty()) {
    size_t nl = text.find('\n');
    if (nl == std::string_view::npos) break;
    exercise(text.substr(0, nl));
    text.remove_prefix(nl + 1);
  }
  return 0;
}
