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

#include "daemon/source/fanotify_errors.h"

namespace storwatch::daemon {

namespace {

// Newer than Debian 12's 6.1 headers (values from upstream UAPI).
constexpr unsigned kFanReportMnt = 0x4000;

std::string errno_text(int err) { return std::strerror(err); }

// Tries fanotify_init with these flags; empty string when it works, else why not.
std::string try_fanotify(unsigned flags) {
  int fd = ::fanotify_init(flags | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fmt::format("fanotify_init: {}", errno_text(errno));
  ::close(fd);
  return {};
}

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

SourceStatus planned(std::string name, std::vector<std::string> types, const std::string& kernel_answer) {
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
  out.push_back(planned("fanotify-mount", {"mount.attached", "mount.detached", "mount.changed"},
                        try_fanotify(FAN_CLASS_NOTIF | kFanReportMnt)));
  {
    // Filesystem errors, and block.io_error until the eBPF source exists (rate-limited lines).
    std::string why = try_open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
    out.push_back({"kmsg", why.empty(), why, {"fs.error", "fs.readonly", "fs.shutdown", "block.io_error"}});
  }
  {
    std::string why = try_open("/sys/kernel/btf/vmlinux", O_RDONLY);
    if (why.empty() && !(cap_eff() & (1ull << 39)) && !(cap_eff() & (1ull << 21)))
      why = "needs CAP_BPF (or CAP_SYS_ADMIN)";
    out.push_back(planned("ebpf", {"space.enospc", "space.edquot", "block.io_error"}, why));
  }
  {
    std::string why = try_netlink(NETLINK_KOBJECT_UEVENT, 1);
    out.push_back({"uevent", why.empty(), why,
                   {"device.added", "device.removed", "device.changed", "device.resized"}});
  }
  out.push_back(planned("quota-netlink", {"quota.warning"}, try_netlink(NETLINK_GENERIC, 0)));
  return out;
}

}  // namespace storwatch::daemon
