#include "daemon/probe/probes.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <sys/fanotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "daemon/bpf/bpf_support.h"
#include "daemon/mount/fanotify_mount_source.h"
#include "daemon/source/fanotify_errors.h"
#include "daemon/source/quota_netlink.h"

namespace storwatch::daemon {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::string try_open(const char* path, int flags) {
  int fd = ::open(path, flags | O_CLOEXEC);
  if (fd < 0) return fmt::format("{}: {}", path, errno_text(errno));
  ::close(fd);
  return {};
}

std::string try_netlink(int proto, unsigned groups) {
  int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, proto);
  if (fd < 0) return fmt::format("netlink socket: {}", errno_text(errno));
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = groups;
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int err = errno;
  ::close(fd);
  if (rc < 0) return fmt::format("netlink bind: {}", errno_text(err));
  return {};
}

uint64_t cap_eff() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  return 0;
}

const char* kCapNames[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE"};

[[maybe_unused]] SourceStatus planned(std::string name, std::vector<std::string> types, const std::string& kernel_answer) {
  // Sources of later versions: say what this kernel would allow, and that we don't run them yet.
  SourceStatus s{std::move(name), false, {}, std::move(types)};
  s.reason = kernel_answer.empty() ? "supported by this kernel; not implemented in this storwatchd version"
                                   : "not implemented in this storwatchd version; the kernel says: " + kernel_answer;
  return s;
}

}  // namespace

std::vector<std::string> effective_capabilities() {
  std::vector<std::string> out;
  uint64_t eff = cap_eff();
  for (size_t i = 0; i < std::size(kCapNames); ++i)
    if (eff & (1ull << i)) out.emplace_back(kCapNames[i]);
  return out;
}

std::vector<MissingCapability> missing_capabilities() {
  // Bit numbers from linux/capability.h (CAP_PERFMON and CAP_BPF are newer than some headers).
  constexpr int kDacReadSearch = 2, kSysAdmin = 21, kSyslog = 34, kPerfmon = 38, kBpf = 39;
  const uint64_t eff = cap_eff();
  auto has = [eff](int bit) { return (eff & (1ull << bit)) != 0; };
  std::vector<MissingCapability> out;
  if (!has(kSysAdmin))
    out.push_back({"CAP_SYS_ADMIN",
                   "fanotify FAN_FS_ERROR marks (fs.error with the kernel's exact error count, errno and inode; "
                   "errors then come only from the rate-limited kernel log and the filesystems' counters) and "
                   "fanotify mount notifications"});
  if (!has(kDacReadSearch))
    out.push_back({"CAP_DAC_READ_SEARCH",
                   "open_by_handle_at: fs.error has the inode but no path; statfs of mount points below "
                   "directories root may not search (space.threshold, space.enospc for them)"});
  if (!has(kSyslog) && !has(kSysAdmin))
    out.push_back({"CAP_SYSLOG",
                   "/dev/kmsg when kernel.dmesg_restrict=1: fs.error details (function, line, message), "
                   "fs.shutdown, xfs and btrfs errors, and the kernel-log block.io_error fallback"});
  if (!has(kBpf) && !has(kSysAdmin))
    out.push_back({"CAP_BPF",
                   "loading the eBPF programs: space.enospc/space.edquot with the process at the failing "
                   "syscall, and block.io_error from the block_rq_error tracepoint (the rate-limited kernel "
                   "log instead)"});
  if (!has(kPerfmon) && !has(kSysAdmin))
    out.push_back({"CAP_PERFMON",
                   "attaching the eBPF programs to tracepoints (perf_event_open) and reading kernel memory "
                   "in them: the same eBPF sources as CAP_BPF"});
  return out;
}

std::vector<SourceStatus> probe_sources() {
  std::vector<SourceStatus> out;
  {
    std::string why = try_open("/proc/self/mountinfo", O_RDONLY);
    out.push_back({"mountinfo", why.empty(), why, {"fs.readonly", "fs.writable"}});
  }
  out.push_back({"statfs", true, "", {"space.threshold", "space.enospc", "fs.unresponsive", "fs.responsive"}});
  {
    // Implemented: what this kernel says to a FAN_FS_ERROR mark.
    std::string why = probe_fanotify_fs_error();
    out.push_back({"fanotify-fs-error", why.empty(), why, {"fs.error"}});
  }
  {
    std::string why;
    if (::access("/sys/fs/ext4", F_OK) != 0 && ::access("/sys/fs/btrfs", F_OK) != 0)
      why = "neither /sys/fs/ext4 nor /sys/fs/btrfs exists";
    out.push_back({"sysfs-errors", why.empty(),
                   why.empty() ? "ext4 errors_count and btrfs device error statistics: errors while "
                                 "storwatchd was not running, and errors no other source reported"
                               : why,
                   {"fs.error"}});
  }
  {
    // Implemented: the mount table's fast path (FanotifyMountSource); the mountinfo fallback
    // gives the same events when it cannot run. `[mounts] backend` chooses (docs/configuration.md).
    std::string why = FanotifyMountSource::probe();
    out.push_back({"fanotify-mount", why.empty(),
                   why.empty() ? "attach, detach and move by notification (one statmount each); remounts "
                                 "by a rate-limited mountinfo scan"
                               : why + "; the mountinfo fallback reports mount changes instead",
                   {"mount.attached", "mount.detached", "mount.changed", "mount.resync"}});
  }
  {
    // Filesystem errors, and block.io_error when the eBPF source cannot run (rate-limited lines).
    std::string why = try_open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
    out.push_back({"kmsg", why.empty(), why, {"fs.error", "fs.readonly", "fs.shutdown", "block.io_error"}});
  }
  {
    // Implemented; the running daemon replaces this with whether it has the probe loaded.
    auto ok = bpf_supported();
    out.push_back({"ebpf-enospc", static_cast<bool>(ok),
                   ok ? "syscall-exit probe: every ENOSPC/EDQUOT with the process (unless [sources] "
                        "ebpf_enospc = false)"
                      : ok.error().message() + "; ENOSPC only from statfs, no EDQUOT",
                   {"space.enospc", "space.edquot"}});
  }
  {
    // Implemented: this build has the program and the process may load it on this kernel.
    auto ok = bpf_supported();
    out.push_back({"ebpf-block", static_cast<bool>(ok),
                   ok ? "block_rq_error tracepoint: every failed block request, with its length "
                        "(unless [sources] ebpf_block = false; then the kernel log)"
                      : ok.error().message() + "; block.io_error comes from the kernel log (rate limited)",
                   {"block.io_error"}});
  }
  {
    std::string why = try_netlink(NETLINK_KOBJECT_UEVENT, 1);
    out.push_back({"uevent", why.empty(), why,
                   {"device.added", "device.removed", "device.changed", "device.resized"}});
  }
  {
    // The manager replaces this with what its running listener counted.
    auto family = resolve_quota_family();
    out.push_back({"quota-netlink", static_cast<bool>(family),
                   family ? "the kernel's quota warnings (generic netlink VFS_DQUOT, as quota_nld reads them)"
                          : family.error().message(),
                   {"quota.warning"}});
  }
  return out;
}

}  // namespace storwatch::daemon
