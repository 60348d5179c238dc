// FsErrorCorrelator: turns what the filesystem-error sources saw (FsErrorReport from fanotify,
// /dev/kmsg, the sysfs counters and the mount table) into events, so that one kernel error seen by
// several sources is one event, and the counts of the fs.error events add up to the errors the
// kernel counted. It also keeps each filesystem's health for `storwatch status`.
//
// The rules (docs/events.md, "Filesystem errors"):
// - The counter of record. fanotify counts a filesystem's errors when it has a mark on it and the
//   filesystem reports through fanotify (ext2/3/4, or any filesystem once a fanotify report came).
//   Then kmsg lines only add details (function, line, comm, inode, message) and never count.
//   Otherwise each kmsg error line counts one, and "N callbacks suppressed" adds N to the next
//   fs.error of that filesystem (sent alone after Options::hold if no error follows) unless a
//   counter (below) covers the filesystem.
// - Merging, bounded and timer-driven (no sleeps): a fanotify report is held Options::hold (200 ms)
//   and merged with further fanotify reports of the same filesystem, errno and inode, and with the
//   first kmsg error line of that filesystem (compatible inode) that arrives in that time, in either
//   order. A kmsg line that found no fanotify report within `hold` is kept (one per filesystem) for
//   Options::detail_keep and given to the next fanotify report instead; on a filesystem where
//   fanotify does not count it goes out as its own counted fs.error after `hold` (at once when no
//   fanotify mark exists). At most Options::max_pending reports are held; past that the oldest goes
//   out early.
// - Counters (ext4 errors_count, btrfs error statistics) are a ledger: each filesystem's counter
//   increases are compared, Options::settle (300 ms) after the increase and after reading what
//   fanotify has queued, with the errors already counted; only the unexplained part becomes an
//   fs.error (source "sysfs", detail.unexplained). Every counted error schedules such a comparison,
//   which reads the counter first (ext4 does not signal errors_count after errors=remount-ro).
// - After fs.shutdown or fs.readonly, errors of that filesystem are counted, not sent; one summary
//   fs.error (detail.summary, count = errors since) goes out when it becomes writable again
//   (fs.writable) or is unmounted. Errors held when it goes down are sent first.
// - Read-only: the mount table's emergency_ro gives fs.readonly cause emergency_ro; "ro" after a
//   remount gives cause remount (cause errors if the kernel log said it remounted read-only after
//   errors). A kmsg read-only or shutdown line, and every error, make the correlator ask for the
//   mount table again (5 ms, 50 ms, 250 ms and 1 s later: mountinfo gives no POLLPRI for
//   emergency_ro); if the kernel log said read-only and the mount table does not show it within
//   Options::readonly_wait, fs.readonly goes out with cause errors (shutdown after a shutdown
//   line). XFS shutdowns give fs.shutdown and fs.readonly cause shutdown at once.
// - fs.writable when the mount table shows it writable again, or when a filesystem that was
//   read-only or shut down is mounted afresh on the same device.
//
// Ownership: hooks are called on the loop thread and must not call back into the correlator
// synchronously, except drain (which may call report()). Loop-thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>
#include <storwatch/event.h>

#include "daemon/loop/event_loop.h"
#include "daemon/source/fs_error_report.h"

namespace storwatch::daemon {

class FsErrorCorrelator {
 public:
  enum class Health { ok, errors, readonly, shutdown };
  static const char* health_name(Health h);

  struct Options {
    std::chrono::milliseconds hold{200};
    std::chrono::milliseconds settle{300};
    std::chrono::milliseconds readonly_wait{1000};
    std::chrono::milliseconds detail_keep{2000};
    size_t max_pending = 256;
  };
  struct Hooks {
    std::function<void(Event)> emit;
    // The filesystem with this superblock dev ("major:minor") if it is watched, else nullopt.
    std::function<std::optional<FsRef>(const std::string& dev)> fs_ref;
    // A kernel block device name ("loop1", "sda2", "loop1-8") to the dev of the filesystem on it.
    std::function<std::optional<std::string>(const std::string& name)> resolve_device;
    // Whether fanotify has a mark on this filesystem.
    std::function<bool(const std::string& dev)> fanotify_marked;
    // Reads what fanotify has queued (may call report()); returns the errors of `dev` read but not
    // reported yet (waiting for their path).
    std::function<uint64_t(const std::string& dev)> drain;
    // The counter's increase since its last reading; nullopt: the filesystem has no counter.
    std::function<std::optional<uint64_t>(const std::string& dev)> read_counter;
    // Re-read the mount table now (it reports back through report() and filesystem_*()).
    std::function<void()> refresh_mounts;
  };

  FsErrorCorrelator(EventLoop& loop, Hooks hooks, Options options);
  ~FsErrorCorrelator();

  // Live reports from every source. Mount-table reports: kind readonly (cause emergency_ro or
  // remount) and writable, source "mountinfo".
  void report(FsErrorReport r);
  // Errors counted while storwatchd was not running: one fs.error with detail.catch_up (plus
  // `detail`), at once; not part of the live ledger.
  void catch_up(FsErrorReport r, nlohmann::json detail);
  // The inventory: a filesystem appeared (read_only: it is mounted read-only) or went away.
  void filesystem_added(const std::string& dev, bool read_only);
  void filesystem_removed(const std::string& dev);
  // fanotify's queue overflowed: errors were lost; every counter is compared now.
  void missed();
  // Sends everything held now (clean exit).
  void flush();

  Health health(const std::string& dev) const;
  // Errors reported for this filesystem since storwatchd started (catch-up included).
  uint64_t error_count(const std::string& dev) const;
  size_t pending() const { return pending_.size(); }

 private:
  struct FsState;
  struct Pending;
  FsState& state(const std::string& dev);
  std::optional<std::string> resolve(const FsErrorReport& r);
  bool fanotify_counts(const std::string& dev, const FsState& st) const;
  void on_error(const std::string& dev, FsErrorReport r);
  void on_suppressed(const std::string& dev, const FsErrorReport& r);
  void on_readonly(const std::string& dev, const FsErrorReport& r);
  void on_shutdown(const std::string& dev, const FsErrorReport& r);
  void on_writable(const std::string& dev, const FsErrorReport& r);
  Pending& hold(const std::string& dev, const FsErrorReport& r, bool fanotify);
  void attach_kmsg(Pending& p, const FsErrorReport& k);
  void release(std::list<Pending>::iterator it);
  void release_all(const std::string& dev);
  void expire(uint64_t id);
  void send_error(const std::string& dev, const Pending& p);
  void count_down(FsState& st, uint64_t n, int err);
  void go_down(const std::string& dev, bool shutdown, const std::string& cause, const FsErrorReport& r);
  void recover(const std::string& dev, const std::string& source);
  void send_summary(const std::string& dev, FsState& st, const std::string& why);
  void schedule_reconcile(const std::string& dev);
  void reconcile(const std::string& dev);
  void check_mounts(const std::string& dev);
  void expect_readonly(const std::string& dev, const std::string& cause);
  Event make_event(const std::string& dev, FsState& st, const char* type, Severity sev,
                   const std::string& source);
  WallTime wall(MonoTime t) const;

  EventLoop& loop_;
  Hooks hooks_;
  Options options_;
  std::map<std::string, std::unique_ptr<FsState>> fss_;
  std::list<Pending> pending_;  // oldest first
  uint64_t next_id_ = 1;
  std::string last_kmsg_dev_;  // where an unattributed "callbacks suppressed" line belongs
  MonoTime last_kmsg_at_{};
  EventLoop::TimerId mount_checks_ = 0;
  int mount_check_step_ = 0;
};

}  // namespace storwatch::daemon
