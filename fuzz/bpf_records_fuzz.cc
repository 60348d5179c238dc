// libFuzzer target for the records the eBPF programs hand to user space. The kernel side is ours,
// but a record is still input from outside the process (another kernel's layout, a program of a
// different build, a bug in the BPF side): the first byte chooses the record type, the rest fills
// the record's bytes. Block errors go through report_from_record and the merger (every range's
// count adds up to the reports that went in); ENOSPC records go through the tracker as a ring
// record, then as a fold-map entry swept twice and removed. Nothing may crash or read past a
// field that lacks its NUL.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <storwatch/event.h>

#include "base/clock.h"
#include "daemon/bpf/block_error_record.h"
#include "daemon/bpf/enospc_record.h"
#include "daemon/source/bpf_block_errors.h"
#include "daemon/source/block_error_merger.h"
#include "daemon/source/enospc_source.h"

namespace {

using namespace storwatch;
using namespace storwatch::daemon;

template <class T>
T fill(const uint8_t* data, size_t size) {
  T t;
  std::memset(&t, 0, sizeof t);
  std::memcpy(&t, data, size < sizeof t ? size : sizeof t);
  return t;
}

void block(const uint8_t* data, size_t size) {
  auto rec = fill<storwatch_block_error>(data, size);
  static RealClock clock;
  BlockErrorMerger merger(clock);
  uint64_t in = 0, out = 0;
  for (bool resv : {true, false}) {
    auto r = report_from_record(rec, resv);
    if (!r) continue;
    if (r->device.empty() || r->subtype.empty() || r->op.empty()) std::abort();
    ++in;
    for (const auto& m : merger.add(*r)) out += m.count();
  }
  for (const auto& m : merger.flush_all()) out += m.count();
  if (in != out) std::abort();
}

void enospc_rec(const uint8_t* data, size_t size) {
  auto rec = fill<enospc_record>(data, size);
  uint64_t now = 1'000'000'000;
  uint64_t counted = 0;
  EnospcTracker::Hooks h;
  h.emit = [&](Event e) {
    counted += e.count;
    (void)event_to_json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // as the bus does
    (void)event_to_line(e);
  };
  h.by_dev = [](uint32_t major, uint32_t minor, bool& ignored) -> std::optional<EnospcFs> {
    if (major % 3 == 0) return std::nullopt;
    if (major % 3 == 1) {
      ignored = true;
      return std::nullopt;
    }
    EnospcFs fs;
    fs.ref.major = major;
    fs.ref.minor = minor;
    fs.ref.fstype = "ext4";
    fs.ref.mounts = {"/mnt"};
    fs.probe_path = "/mnt";
    return fs;
  };
  h.by_path = [](const std::string& path, bool&) -> std::optional<EnospcFs> {
    if (path.empty() || path.front() != '/') return std::nullopt;
    EnospcFs fs;
    fs.ref.major = 8;
    fs.ref.minor = 1;
    fs.ref.mounts = {"/"};
    fs.probe_path = "/";
    return fs;
  };
  h.statfs = [](const std::string&, const std::string&, std::function<void(std::optional<Usage>)> done) {
    done(Usage{4096, 100, 50, 10, 0});
  };
  h.cgroup_path = [](uint64_t id) { return id % 2 ? std::string("/system.slice/x.service") : std::string(); };
  h.mono_ns = [&] { return now; };
  h.wall_now = [] { return Event::Time{}; };
  EnospcTracker t(h);
  t.on_record(rec);
  std::vector<std::pair<enospc_key, enospc_value>> entries{{rec.key, rec.value}};
  (void)t.sweep(entries, std::chrono::milliseconds(1));
  entries[0].second.count += 3;
  now += 2'000'000'000;
  for (const auto& k : t.sweep(entries, std::chrono::milliseconds(1))) t.removed(k, entries[0].second);
  t.removed(rec.key, entries[0].second);
  (void)counted;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1)
    block(data + 1, size - 1);
  else
    enospc_rec(data + 1, size - 1);
  return 0;
}
