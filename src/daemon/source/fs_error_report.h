// FsErrorReport: what the filesystem-error sources (fanotify FAN_FS_ERROR, /dev/kmsg, ext4/btrfs
// sysfs counters, mountinfo's emergency_ro) saw, before correlation. One kernel error is often
// seen by several sources; FsErrorCorrelator merges them into one event (docs/events.md).
// Plain data.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "base/clock.h"

namespace storwatch::daemon {

struct FsErrorReport {
  enum class Kind {
    error,       // the filesystem reported an error (fs.error)
    readonly,    // it stopped accepting writes (fs.readonly; `cause` says why)
    writable,    // it accepts writes again (fs.writable)
    shutdown,    // XFS shutdown, ext4 journal abort (fs.shutdown)
    suppressed,  // "N callbacks suppressed": errors the kernel log did not print (count)
  };
  Kind kind = Kind::error;
  std::string source;      // "fanotify", "kmsg", "sysfs", "mountinfo"
  // The filesystem: its superblock device when known (fanotify, sysfs), else the block device
  // name the kernel printed ("loop1", "sda2"); the correlator resolves names to filesystems.
  std::optional<std::pair<uint32_t, uint32_t>> sb_dev;
  std::string device_name;
  int err = 0;             // errno (EUCLEAN 117 corruption, EBADMSG 74, EIO 5...), 0 if unknown
  uint64_t count = 1;      // occurrences this report stands for (fanotify error_count, suppressed N)
  std::optional<uint64_t> inode;
  std::string path;        // resolved from the inode handle where possible
  std::string function;    // "ext4_lookup" (kmsg)
  int line = 0;            // source line (kmsg)
  std::string comm;        // the process the kernel log names, if any
  std::string message;     // the kernel's text (shown to root only, later)
  std::string cause;       // readonly: errors, remount, shutdown, emergency_ro
  MonoTime when{};
};

}  // namespace storwatch::daemon
