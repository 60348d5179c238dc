// SysfsErrorSource: the error counters filesystems keep themselves, which survive remounts and
// reboots. ext4 keeps errors_count (with first_error_* and last_error_*) in its superblock and
// shows it in /sys/fs/ext4/<device>/; btrfs keeps per-device error statistics (write, read,
// flush, corruption, generation) in /sys/fs/btrfs/<fsid>/devinfo/<devid>/error_stats.
//
// Two uses:
// - Catch-up: when a filesystem appears (at start, or mounted later) its counter is compared with
//   the value last seen, kept in the state database by filesystem UUID. The difference is what
//   happened while storwatchd was not watching: one catch-up report, once. The new value is saved
//   at once, so the next start does not report it again.
// - A live counter for the correlator: poll(POLLPRI) on errors_count wakes when ext4 notifies it
//   (with errors=continue; not after errors=remount-ro, where the correlator asks with read_now()),
//   and each increase is reported (source "sysfs", count = the increase). The correlator reports
//   only the part that fanotify and kmsg did not explain.
// Live values are saved at most once per Options::persist_delay and by persist() (clean exit); a
// crash can make the next start report up to that much again.
//
// The sysfs files are opened per filesystem and never keep it busy: after umount they read ENODEV
// and are closed. Loop-thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/loop/event_loop.h"
#include "daemon/source/fs_error_report.h"
#include "daemon/state/state_db.h"

namespace storwatch::daemon {

class SysfsErrorSource {
 public:
  struct Target {
    uint32_t major = 0, minor = 0;  // the superblock (mountinfo field 3)
    std::string fstype;
    std::string source;  // the mount source ("/dev/loop1"): btrfs' superblock dev is anonymous
    std::string path;    // a mount point, to ask the filesystem for its UUID
  };
  struct Options {
    std::string sysfs_root = "/sys";
    std::chrono::milliseconds persist_delay{1000};
  };
  using ReportCallback = std::function<void(FsErrorReport)>;
  // Errors counted while storwatchd was not running: report.count, the last error's errno,
  // inode, function and line where the filesystem keeps them, and `detail` (catch_up, first/last
  // error times...) for the event.
  using CatchUpCallback = std::function<void(FsErrorReport, nlohmann::json detail)>;

  SysfsErrorSource(EventLoop& loop, StateDb* db, ReportCallback on_report, CatchUpCallback on_catch_up,
                   Options options);
  ~SysfsErrorSource();

  // Starts counting the new targets (catch-up first) and forgets the others.
  void sync(const std::vector<Target>& targets);
  // Reads the counter of one filesystem now: the increase since the last reading (0: none);
  // nullopt when it has no counter. Does not call the report callback.
  std::optional<uint64_t> read_now(uint32_t major, uint32_t minor);
  // The filesystem's own count as last read (for status), nullopt without a counter.
  std::optional<uint64_t> counter(uint32_t major, uint32_t minor) const;
  // Saves every value not saved yet (clean exit).
  void persist();
  size_t counters() const { return fss_.size(); }

 private:
  struct Fs;
  std::unique_ptr<Fs> open_ext4(const Target& t);
  std::unique_ptr<Fs> open_btrfs(const Target& t);
  std::optional<uint64_t> read_count(Fs& fs);
  void catch_up(Fs& fs, uint64_t now_count);
  void on_pollpri(const std::string& dev);
  void mark_dirty(Fs& fs);
  void close_fs(Fs& fs);

  EventLoop& loop_;
  StateDb* db_;
  ReportCallback on_report_;
  CatchUpCallback on_catch_up_;
  Options options_;
  std::map<std::string, uint64_t> saved_;  // filesystem key -> count, as in the state db
  std::map<std::string, std::unique_ptr<Fs>> fss_;  // by dev "major:minor"
  std::set<std::string> dirty_;  // devs whose last value is not saved
  EventLoop::TimerId persist_timer_ = 0;
};

}  // namespace storwatch::daemon
