// The mount-table kernel interfaces of Linux 6.8+ (statmount, listmount) and 6.15+ (fanotify mount
// notifications), defined here because the distribution headers we build against predate them.
// Values and layouts follow the upstream UAPI headers (<linux/mount.h>, <linux/fanotify.h>);
// mount_api_test checks them against /proc/self/mountinfo on the running kernel.
//
// statmount_to_entry() is pure (a buffer in, a MountEntry out) so tests and the fuzzer feed it
// bytes. MountApi is the kernel: one object per mount namespace. Not thread-safe; cheap to make.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"
#include "daemon/mount/mountinfo.h"

namespace storwatch::daemon::mntapi {

inline constexpr long kSysStatmount = 457;  // same number on every architecture (unified table)
inline constexpr long kSysListmount = 458;

inline constexpr uint32_t kMntIdReqSizeVer0 = 24;
inline constexpr uint32_t kMntIdReqSizeVer1 = 32;  // with mnt_ns_id
struct MntIdReq {
  uint32_t size;
  uint32_t spare;
  uint64_t mnt_id;
  uint64_t param;
  uint64_t mnt_ns_id;
};
static_assert(sizeof(MntIdReq) == kMntIdReqSizeVer1);

inline constexpr uint64_t kLsmtRoot = ~0ULL;

inline constexpr uint64_t kStatmountSbBasic = 0x1;
inline constexpr uint64_t kStatmountMntBasic = 0x2;
inline constexpr uint64_t kStatmountPropagateFrom = 0x4;
inline constexpr uint64_t kStatmountMntRoot = 0x8;
inline constexpr uint64_t kStatmountMntPoint = 0x10;
inline constexpr uint64_t kStatmountFsType = 0x20;
inline constexpr uint64_t kStatmountMntNsId = 0x40;
inline constexpr uint64_t kStatmountMntOpts = 0x80;
inline constexpr uint64_t kStatmountFsSubtype = 0x100;
inline constexpr uint64_t kStatmountSbSource = 0x200;
// What a mountinfo line holds.
inline constexpr uint64_t kStatmountMountinfo =
    kStatmountSbBasic | kStatmountMntBasic | kStatmountPropagateFrom | kStatmountMntRoot |
    kStatmountMntPoint | kStatmountFsType | kStatmountMntOpts | kStatmountFsSubtype |
    kStatmountSbSource;

// struct statmount up to the string area (which starts at offset 512). [str] fields are offsets
// into the string area.
struct Statmount {
  uint32_t size;
  uint32_t mnt_opts;  // [str]
  uint64_t mask;
  uint32_t sb_dev_major;
  uint32_t sb_dev_minor;
  uint64_t sb_magic;
  uint32_t sb_flags;
  uint32_t fs_type;  // [str]
  uint64_t mnt_id;
  uint64_t mnt_parent_id;
  uint32_t mnt_id_old;
  uint32_t mnt_parent_id_old;
  uint64_t mnt_attr;
  uint64_t mnt_propagation;
  uint64_t mnt_peer_group;
  uint64_t mnt_master;
  uint64_t propagate_from;
  uint32_t mnt_root;   // [str]
  uint32_t mnt_point;  // [str]
  uint64_t mnt_ns_id;
  uint32_t fs_subtype;  // [str]
  uint32_t sb_source;   // [str]
  uint32_t opt_num;
  uint32_t opt_array;
  uint32_t opt_sec_num;
  uint32_t opt_sec_array;
  uint64_t supported_mask;
  uint32_t mnt_uidmap_num;
  uint32_t mnt_uidmap;
  uint32_t mnt_gidmap_num;
  uint32_t mnt_gidmap;
  uint64_t spare2[43];
};
static_assert(sizeof(Statmount) == 512);
static_assert(offsetof(Statmount, mnt_id) == 40);
static_assert(offsetof(Statmount, mnt_attr) == 64);
static_assert(offsetof(Statmount, mnt_root) == 104);
static_assert(offsetof(Statmount, mnt_ns_id) == 112);
static_assert(offsetof(Statmount, supported_mask) == 144);

// fanotify mount notifications.
inline constexpr unsigned kFanReportMnt = 0x4000;
inline constexpr unsigned kFanMarkMntns = 0x110;
inline constexpr uint64_t kFanMntAttach = 0x01000000;
inline constexpr uint64_t kFanMntDetach = 0x02000000;
inline constexpr uint64_t kFanQOverflow = 0x4000;
inline constexpr uint8_t kFanEventInfoTypeMnt = 7;

// Builds the MountEntry that /proc/<pid>/mountinfo would show for this mount, from a statmount
// reply (the buffer as the kernel filled it) asked with at least kStatmountMountinfo. Also sets
// unique_id. Fails on a truncated buffer, a string offset outside it, or a missing mask bit.
[[nodiscard]] Result<MountEntry> statmount_to_entry(std::span<const char> reply);

// The kernel side, for one mount namespace.
class MountApi {
 public:
  // mnt_ns_id 0: the caller's own namespace (and the smaller VER0 request).
  explicit MountApi(uint64_t mnt_ns_id = 0) : ns_id_(mnt_ns_id) {}

  // The namespace id of a /proc/<pid>/ns/mnt fd (ioctl NS_GET_MNTNS_ID).
  [[nodiscard]] static Result<uint64_t> namespace_id(int ns_fd);

  // ENOENT (Error::code) when the mount is gone: a detached id cannot be asked any more.
  [[nodiscard]] Result<MountEntry> stat(uint64_t unique_id);
  // Every mount id of the namespace, in the kernel's order (ascending unique id).
  [[nodiscard]] Result<std::vector<uint64_t>> list();

 private:
  uint64_t ns_id_;
  std::vector<char> buf_ = std::vector<char>(16384);
};

}  // namespace storwatch::daemon::mntapi
