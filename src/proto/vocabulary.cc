#include "proto/vocabulary.h"

#include <array>

namespace storwatch {
namespace {

using S = Severity;
constexpr std::array kTypes = {
    EventTypeInfo{"space.enospc", S::error, "fs, detail.kind, process.pid",
                  "a syscall failed with ENOSPC, or the filesystem has no free blocks/inodes left"},
    EventTypeInfo{"space.edquot", S::warning, "fs, process.uid", "a syscall failed with EDQUOT"},
    EventTypeInfo{"space.threshold", S::warning, "fs, detail.resource, detail.level, detail.direction",
                  "free blocks or inodes crossed a configured level"},
    EventTypeInfo{"space.forecast", S::warning, "fs, detail.resource",
                  "at the current fill rate the filesystem is full within the configured horizon"},
    EventTypeInfo{"quota.warning", S::warning, "fs, detail.quota_type, detail.id, detail.warning",
                  "the kernel's VFS_DQUOT netlink quota warning"},
    EventTypeInfo{"fs.error", S::error, "fs, detail.errno, detail.inode",
                  "the filesystem reported an error"},
    EventTypeInfo{"fs.readonly", S::critical, "fs, detail.cause", "the filesystem stopped accepting writes"},
    EventTypeInfo{"fs.writable", S::info, "fs", "the filesystem accepts writes again"},
    EventTypeInfo{"fs.shutdown", S::critical, "fs",
                  "the filesystem shut down (XFS shutdown, ext4 journal abort)"},
    EventTypeInfo{"fs.unresponsive", S::warning, "fs",
                  "statfs did not answer within the timeout (e.g. a hung network filesystem)"},
    EventTypeInfo{"fs.responsive", S::info, "fs", "statfs answers again"},
    EventTypeInfo{"block.io_error", S::error, "device, detail.subtype, detail.op",
                  "the block layer failed a request"},
    EventTypeInfo{"device.added", S::info, "device", "a block device appeared"},
    EventTypeInfo{"device.removed", S::info, "device", "a block device disappeared"},
    EventTypeInfo{"device.changed", S::info, "device", "a block device changed (e.g. media change)"},
    EventTypeInfo{"device.resized", S::info, "device", "a block device changed size"},
    EventTypeInfo{"mount.attached", S::info, "detail.mnt_id", "a mount appeared in the mount table"},
    EventTypeInfo{"mount.detached", S::info, "detail.mnt_id", "a mount left the mount table"},
    EventTypeInfo{"mount.changed", S::info, "detail.mnt_id",
                  "a mount's options, flags or place changed"},
    EventTypeInfo{"mount.resync", S::warning, "(never folded)",
                  "mount notifications were lost (queue overflow); the table was read again and "
                  "the differences reported as mount.* events"},
    EventTypeInfo{"stream.lost", S::warning, "(never folded)",
                  "this subscriber (or the journal) missed events; the count and range say which"},
    EventTypeInfo{"source.unavailable", S::warning, "detail.source",
                  "an event source cannot work on this kernel or with these privileges"},
    EventTypeInfo{"daemon.degraded", S::error, "detail.source",
                  "part of the monitoring is not working"},
    EventTypeInfo{"daemon.recovered", S::info, "detail.source",
                  "a part reported by daemon.degraded works again"},
};

}  // namespace

std::span<const EventTypeInfo> vocabulary() { return kTypes; }

const EventTypeInfo* find_event_type(std::string_view name) {
  for (const auto& t : kTypes)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace storwatch
