// FanotifyMountSource: the fast-path MountSource (Linux 6.15+). Attach, detach and move arrive as
// fanotify mount notifications (FAN_REPORT_MNT, a FAN_MARK_MNTNS mark on the namespace); each
// costs one statmount() of the mount's unique id, whatever the size of the table. Because a
// detached id cannot be asked any more, the source remembers what every id was.
//
// What fanotify does not report, and how it is found:
//  - A remount (options, read-only) only wakes mountinfo POLLPRI; an attach, detach or move
//    wakes it too, and gives at least one notification. Wake-ups are checked `settle` after the
//    first: when there were more wake-ups than notifications read from `settle` before that
//    first wake-up until the check, something changed that fanotify does not report, and the source scans mountinfo (MountinfoDiff: a
//    hash per line; a parse for lines new or different since the last scan; a statmount only
//    where the line disagrees with what is known), at most every `min_scan_gap` and never more
//    than 1/`scan_budget` of one CPU (the next scan waits scan_budget times the last one's
//    cost), so a burst of remounts costs a bounded number of scans. The kernel coalesces
//    wake-ups: a remount whose wake-up merged with an attach's or detach's in the same namespace
//    is found by the next scan, not at once.
//  - A propagation change (--make-shared) wakes nothing. When a mount attaches in a peer group
//    no known mount had, the other mounts of its filesystem are asked again (statmount), which is
//    where such a change shows first.
//  - A queue overflow (16,384 unread notifications) loses records: the source reads the whole
//    table again (listmount + statmount) and reports it as a resync.
//
// Per namespace: `proc_dir` names the process whose mount namespace is watched ("/proc/self",
// or "/proc/<pid>"). Loop-thread only.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/fd.h"
#include "daemon/mount/mount_api.h"
#include "daemon/mount/mount_source.h"
#include "daemon/mount/mount_table.h"
#include "daemon/mount/mountinfo_diff.h"

namespace storwatch::daemon {

class FanotifyMountSource final : public MountSource {
 public:
  struct Options {
    std::string proc_dir = "/proc/self";
    std::chrono::milliseconds settle{2};
    std::chrono::milliseconds min_scan_gap{10};
    unsigned scan_budget = 20;
  };

  // Fails when this kernel or these privileges cannot give mount notifications, statmount or
  // listmount (the caller falls back to MountinfoSource).
  [[nodiscard]] static Result<std::unique_ptr<FanotifyMountSource>> create(Options options);
  // Empty when the fast path works here, else why not (`storwatch doctor`).
  static std::string probe();

  ~FanotifyMountSource() override;
  std::string_view name() const override { return "fanotify"; }
  [[nodiscard]] Result<void> start(EventLoop& loop, Sink sink) override;
  void refresh() override;
  Stats stats() const override { return stats_; }

 private:
  FanotifyMountSource(Options options, UniqueFd fan, std::unique_ptr<ProcMountTable> mountinfo, uint64_t ns_id);
  void on_fanotify();
  void on_wake();
  void scan();
  void resync();
  Result<MountChanges> snapshot();
  std::optional<MountEntry> stat(uint64_t id);
  void remember(const MountEntry& m);
  void forget(const MountEntry& m);
  // Records a new state for a known mount; a change of place or device is a detach + attach.
  void note_change(const MountEntry& old_m, const MountEntry& new_m, MountChanges& c);
  void recheck_filesystem(const MountEntry& m, MountChanges& c);

  Options options_;
  UniqueFd fan_;
  std::unique_ptr<ProcMountTable> mountinfo_;
  mntapi::MountApi api_;
  EventLoop* loop_ = nullptr;
  Sink sink_;
  Stats stats_;
  std::vector<unsigned char> buf_ = std::vector<unsigned char>(65536);

  std::unordered_map<uint64_t, MountEntry> known_;                     // unique id -> the mount
  std::unordered_map<uint64_t, uint64_t> by_old_;                      // reusable id -> unique id
  std::unordered_map<uint64_t, std::unordered_set<uint64_t>> by_dev_;  // st_dev -> unique ids
  std::unordered_map<std::string, size_t> groups_;                     // "shared:N" -> mounts in it

  MountinfoDiff scan_diff_;
  std::optional<EventLoop::TimerId> check_timer_;
  uint64_t wakes_pending_ = 0;           // mountinfo wake-ups since the first unchecked one
  uint64_t notifications_at_check_ = 0;  // stats_.notifications before that wake-up's own
  static constexpr size_t kRecentReads = 64;
  std::deque<std::pair<MonoTime, uint64_t>> recent_reads_;  // (when, notifications) of reads
  MonoTime next_scan_{};
};

}  // namespace storwatch::daemon
