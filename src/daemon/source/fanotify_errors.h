// FanotifyErrorSource: filesystem errors as the kernel counts them, through fanotify FAN_FS_ERROR
// (Linux 5.16+; ext4 reports them, xfs and btrfs did not on 6.18). One FAN_MARK_FILESYSTEM mark
// per superblock, added and removed as sync() is told which filesystems exist. Each event is
// decoded into an FsErrorReport: errno, the kernel's merged error_count (an unread event keeps
// counting, so a burst of 10,000 errors can be one report with count 10000), the superblock (from
// the fsid) and, when the error names an inode, its number and path.
//
// The marks hold no reference on a mount or superblock: umount works with the mark in place and
// the kernel drops the mark with the superblock (verified on 6.18; the mark also leaves
// /proc/self/fdinfo). sync() reads that fdinfo to re-add marks the kernel dropped when a new
// superblock appears on the same device without the mount table looking different.
//
// Paths: open_by_handle_at() on a mount fd opened for that one call (a directory fd: the kernel
// refuses O_PATH mount fds with EBADF), then readlink of /proc/self/fd. Both can do I/O on a
// failing disk, so they run on one worker thread; a report waits for its path at most
// Options::resolve_timeout and goes out without it after that. An inode the kernel cannot load
// (a corrupted inode, the usual case for EBADMSG) has no path. Needs
// CAP_DAC_READ_SEARCH; without it reports carry the inode number only.
//
// Ownership: the source owns the fanotify fd and the worker; callbacks run on the loop thread.
// Loop-thread only (the worker never touches the source's state).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/fd.h"
#include "daemon/loop/event_loop.h"
#include "daemon/source/fs_error_report.h"

namespace storwatch::daemon {

// "" when this kernel and these privileges let fanotify report filesystem errors, else why not.
// Tries fanotify_init(FAN_REPORT_FID) and a FAN_FS_ERROR mark on `probe_path` (the mark is
// removed at once); an EINVAL mark means the kernel has no FAN_FS_ERROR.
std::string probe_fanotify_fs_error(const std::string& probe_path = "/");

// The inode number an exportfs file handle encodes, for the handle types whose layout is fixed
// (FILEID_INO32_GEN and _PARENT: ext2/3/4, xfs with 32-bit inodes; FILEID_INO64_GEN: xfs; btrfs'
// 0x4d-0x4f). nullopt for other types: the caller opens the handle and asks fstat.
std::optional<uint64_t> inode_from_handle(int handle_type, const unsigned char* bytes, size_t len);

class FanotifyErrorSource {
 public:
  struct Target {
    uint32_t major = 0, minor = 0;  // the superblock (mountinfo field 3)
    std::string path;               // a mount point of its root directory, to mark and resolve at
  };
  struct Options {
    std::chrono::milliseconds resolve_timeout{250};
    size_t resolve_queue = 64;  // handles waiting for the worker; more go out without a path
  };
  using ReportCallback = std::function<void(FsErrorReport)>;
  // The kernel's queue overflowed (FAN_Q_OVERFLOW): errors were not reported.
  using OverflowCallback = std::function<void()>;

  // Never fails: when fanotify cannot report filesystem errors here, available() is false and
  // reason() says why (the manager reports source.unavailable).
  static std::unique_ptr<FanotifyErrorSource> create(EventLoop& loop, ReportCallback on_report,
                                                     OverflowCallback on_overflow, Options options);
  ~FanotifyErrorSource();

  bool available() const { return available_; }
  const std::string& reason() const { return reason_; }

  // Marks every target and forgets the filesystems no longer listed (their marks die with their
  // superblocks; a still-mounted one is unmarked). A target whose mark cannot be added is retried
  // at the next sync only if its mount point changed.
  void sync(const std::vector<Target>& targets);
  bool marked(uint32_t major, uint32_t minor) const;
  size_t marks() const;
  // Reads and reports every event queued now (the correlator calls it before comparing counters).
  void drain();
  // Errors read but not reported yet (waiting for their path), for one filesystem.
  uint64_t in_flight(uint32_t major, uint32_t minor) const;

 private:
  struct Mark;
  class Resolver;
  struct Waiting;
  FanotifyErrorSource(EventLoop& loop, ReportCallback on_report, OverflowCallback on_overflow,
                      Options options);
  bool add_mark(Mark& m);
  void on_readable();
  void handle_event(const unsigned char* data, size_t len);
  void on_resolved(uint64_t id, std::string path, std::optional<uint64_t> inode);
  void on_resolve_timeout(uint64_t id);
  void disable(std::string reason);

  EventLoop& loop_;
  ReportCallback on_report_;
  OverflowCallback on_overflow_;
  Options options_;
  UniqueFd fd_;
  bool available_ = false;
  std::string reason_;
  std::map<std::string, std::unique_ptr<Mark>> marks_;  // by dev "major:minor"
  // fsid -> dev, for marked filesystems and (bounded) recently removed ones: an error raised just
  // before umount is read after it.
  std::map<uint64_t, std::pair<uint32_t, uint32_t>> by_fsid_;
  std::vector<uint64_t> retired_fsids_;
  std::unique_ptr<Resolver> resolver_;
  std::map<uint64_t, std::unique_ptr<Waiting>> waiting_;  // reports waiting for a path
  uint64_t next_id_ = 1;
  bool no_handle_access_ = false;  // open_by_handle_at said EPERM once: stop asking
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace storwatch::daemon
