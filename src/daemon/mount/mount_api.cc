#include "daemon/mount/mount_api.h"

#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

namespace storwatch::daemon::mntapi {
namespace {

// MOUNT_ATTR_* as statmount reports them in mnt_attr.
constexpr uint64_t kAttrRdonly = 0x1;
constexpr uint64_t kAttrNosuid = 0x2;
constexpr uint64_t kAttrNodev = 0x4;
constexpr uint64_t kAttrNoexec = 0x8;
constexpr uint64_t kAttrAtimeMask = 0x70;
constexpr uint64_t kAttrRelatime = 0x0;
constexpr uint64_t kAttrNoatime = 0x10;
constexpr uint64_t kAttrNodiratime = 0x80;
constexpr uint64_t kAttrIdmap = 0x100000;
constexpr uint64_t kAttrNosymfollow = 0x200000;

// MS_* propagation flags in mnt_propagation; SB_* in sb_flags.
constexpr uint64_t kMsUnbindable = 1 << 17;
constexpr uint64_t kMsSlave = 1 << 19;
constexpr uint64_t kMsShared = 1 << 20;
constexpr uint32_t kSbRdonly = 0x1;
constexpr uint32_t kSbSynchronous = 0x10;
constexpr uint32_t kSbDirsync = 0x80;
constexpr uint32_t kSbLazytime = 1u << 25;

// _IOR(0xb7, 0x5, __u64): NS_GET_MNTNS_ID (6.12).
constexpr unsigned long kNsGetMntnsId = 0x8008b705;

// The kernel writes every string NUL-terminated inside the reply; anything else is refused.
Result<std::string_view> str_at(std::span<const char> reply, uint32_t offset, const char* what) {
  size_t base = sizeof(Statmount);
  if (reply.size() <= base || offset >= reply.size() - base)
    return fail_invalid(std::string("statmount: ") + what + " outside the reply");
  const char* s = reply.data() + base + offset;
  size_t room = reply.size() - base - offset;
  const void* nul = std::memchr(s, '\0', room);
  if (!nul) return fail_invalid(std::string("statmount: ") + what + " not terminated");
  return std::string_view(s, static_cast<const char*>(nul) - s);
}

// Field 6 of mountinfo (show_mnt_opts): the same options in the same order.
std::string mount_options(uint64_t attr) {
  std::string o = attr & kAttrRdonly ? "ro" : "rw";
  if (attr & kAttrNosuid) o += ",nosuid";
  if (attr & kAttrNodev) o += ",nodev";
  if (attr & kAttrNoexec) o += ",noexec";
  if ((attr & kAttrAtimeMask) == kAttrNoatime) o += ",noatime";
  if (attr & kAttrNodiratime) o += ",nodiratime";
  if ((attr & kAttrAtimeMask) == kAttrRelatime) o += ",relatime";
  if (attr & kAttrNosymfollow) o += ",nosymfollow";
  if (attr & kAttrIdmap) o += ",idmapped";
  return o;
}

}  // namespace

Result<MountEntry> statmount_to_entry(std::span<const char> reply) {
  if (reply.size() < sizeof(Statmount)) return fail_invalid("statmount: reply shorter than the header");
  Statmount sm;
  std::memcpy(&sm, reply.data(), sizeof sm);
  if (sm.size < sizeof(Statmount) || sm.size > reply.size())
    return fail_invalid("statmount: size " + std::to_string(sm.size) + " does not fit the reply");
  reply = reply.first(sm.size);
  constexpr uint64_t kNeeded = kStatmountSbBasic | kStatmountMntBasic | kStatmountMntRoot |
                               kStatmountMntPoint | kStatmountFsType;
  if ((sm.mask & kNeeded) != kNeeded) return fail_invalid("statmount: the kernel left out basic fields");

  MountEntry m;
  m.unique_id = sm.mnt_id;
  m.mnt_id = sm.mnt_id_old;
  m.parent_id = sm.mnt_parent_id_old;
  m.major = sm.sb_dev_major;
  m.minor = sm.sb_dev_minor;
  auto root = str_at(reply, sm.mnt_root, "mnt_root");
  if (!root) return fail(root.error());
  auto point = str_at(reply, sm.mnt_point, "mnt_point");
  if (!point) return fail(point.error());
  auto type = str_at(reply, sm.fs_type, "fs_type");
  if (!type) return fail(type.error());
  m.root = *root;
  m.mount_point = *point;
  m.fstype = *type;
  if (sm.mask & kStatmountFsSubtype) {
    auto sub = str_at(reply, sm.fs_subtype, "fs_subtype");
    if (!sub) return fail(sub.error());
    if (!sub->empty()) m.fstype += "." + std::string(*sub);
  }
  // mountinfo writes "none" for a mount without a source; statmount leaves the bit out.
  m.source = "none";
  if (sm.mask & kStatmountSbSource) {
    auto src = str_at(reply, sm.sb_source, "sb_source");
    if (!src) return fail(src.error());
    m.source = *src;
  }
  m.mount_options = mount_options(sm.mnt_attr);

  // The optional fields, as show_mountinfo writes them.
  if (sm.mnt_propagation & kMsShared) m.optional_fields.push_back("shared:" + std::to_string(sm.mnt_peer_group));
  if (sm.mnt_propagation & kMsSlave) {
    m.optional_fields.push_back("master:" + std::to_string(sm.mnt_master));
    if ((sm.mask & kStatmountPropagateFrom) && sm.propagate_from && sm.propagate_from != sm.mnt_master)
      m.optional_fields.push_back("propagate_from:" + std::to_string(sm.propagate_from));
  }
  if (sm.mnt_propagation & kMsUnbindable) m.optional_fields.push_back("unbindable");

  // Super options: rw/ro and the generic superblock flags (show_sb_opts), then the filesystem's
  // own (statmount strips their leading comma).
  m.super_options = sm.sb_flags & kSbRdonly ? "ro" : "rw";
  if (sm.sb_flags & kSbSynchronous) m.super_options += ",sync";
  if (sm.sb_flags & kSbDirsync) m.super_options += ",dirsync";
  if (sm.sb_flags & kSbLazytime) m.super_options += ",lazytime";
  if (sm.mask & kStatmountMntOpts) {
    auto opts = str_at(reply, sm.mnt_opts, "mnt_opts");
    if (!opts) return fail(opts.error());
    if (!opts->empty()) m.super_options += "," + std::string(*opts);
  }
  return m;
}

Result<uint64_t> MountApi::namespace_id(int ns_fd) {
  uint64_t id = 0;
  if (::ioctl(ns_fd, kNsGetMntnsId, &id) != 0) return fail_errno(errno, "NS_GET_MNTNS_ID");
  return id;
}

Result<MountEntry> MountApi::stat(uint64_t unique_id) {
  MntIdReq req{};
  req.size = ns_id_ ? kMntIdReqSizeVer1 : kMntIdReqSizeVer0;
  req.mnt_id = unique_id;
  req.param = kStatmountMountinfo;
  req.mnt_ns_id = ns_id_;
  for (;;) {
    long n = ::syscall(kSysStatmount, &req, buf_.data(), buf_.size(), 0);
    if (n == 0) break;
    // EOVERFLOW: the strings do not fit (a long overlay lowerdir, say); grow and ask again.
    if (errno == EOVERFLOW && buf_.size() < (size_t{1} << 24)) {
      buf_.resize(buf_.size() * 4);
      continue;
    }
    if (errno == EINTR) continue;
    return fail_errno(errno, "statmount of mount " + std::to_string(unique_id));
  }
  return statmount_to_entry(std::span<const char>(buf_.data(), buf_.size()));
}

Result<std::vector<uint64_t>> MountApi::list() {
  std::vector<uint64_t> out;
  std::vector<uint64_t> chunk(4096);
  MntIdReq req{};
  req.size = ns_id_ ? kMntIdReqSizeVer1 : kMntIdReqSizeVer0;
  req.mnt_id = kLsmtRoot;
  req.mnt_ns_id = ns_id_;
  // Paged: `param` is the last id of the previous page, the kernel continues after it.
  for (;;) {
    long n = ::syscall(kSysListmount, &req, chunk.data(), chunk.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(errno, "listmount");
    }
    out.insert(out.end(), chunk.begin(), chunk.begin() + n);
    if (static_cast<size_t>(n) < chunk.size()) break;
    req.param = chunk[static_cast<size_t>(n) - 1];
  }
  return out;
}

}  // namespace storwatch::daemon::mntapi
