// MountSource: where the daemon learns about changes to one mount namespace's table. Two
// implementations deliver the same MountChanges (so the same events and API):
//  - FanotifyMountSource, the fast path (Linux 6.15+): fanotify mount notifications, one
//    statmount() per changed mount, listmount() for the first table and after a queue overflow;
//    remounts (which fanotify does not report) from a rate-limited mountinfo scan.
//  - MountinfoSource, the fallback: POLLPRI on mountinfo and an incremental diff of its lines.
// The backend is chosen by `[mounts] backend` (docs/configuration.md).
//
// Loop-thread only. The source owns its fds and removes them from the loop when destroyed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "daemon/loop/event_loop.h"
#include "daemon/mount/mount_changes.h"

namespace storwatch::daemon {

class MountSource {
 public:
  // Changes, or why the source could not read the table this time (it keeps trying).
  using Sink = std::function<void(Result<MountChanges>)>;

  // What the source has done so far, for `storwatch doctor` and the benchmark.
  struct Stats {
    uint64_t notifications = 0;  // fanotify records read
    uint64_t statmounts = 0;     // statmount() calls
    uint64_t wakes = 0;          // mountinfo POLLPRI wake-ups
    uint64_t scans = 0;          // mountinfo reads
    uint64_t scan_cpu_ns = 0;    // thread CPU time spent in those reads
    uint64_t resyncs = 0;        // full re-reads after lost notifications
  };

  virtual ~MountSource() = default;
  virtual std::string_view name() const = 0;  // "fanotify" or "mountinfo"
  // Registers with the loop, then hands the whole table (full) to `sink` before returning.
  [[nodiscard]] virtual Result<void> start(EventLoop& loop, Sink sink) = 0;
  // Looks now rather than waiting for the kernel's wake-up (tests, fake tables).
  virtual void refresh() = 0;
  virtual Stats stats() const = 0;
};

}  // namespace storwatch::daemon
