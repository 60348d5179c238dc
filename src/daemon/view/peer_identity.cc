#include "daemon/view/peer_identity.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <optional>
#include <string>
#include <fmt/format.h>

namespace storwatch::daemon {

namespace {

// Newer than Debian 12's headers (linux/pidfd.h of 6.11, asm-generic/socket.h of 6.5).
#ifndef SO_PEERPIDFD
constexpr int SO_PEERPIDFD = 77;
#endif
#ifndef SO_PEERGROUPS
constexpr int SO_PEERGROUPS = 59;
#endif
constexpr unsigned long kPidfdGetMntNamespace = _IO(0xFF, 3);

MountNsId ns_of_fd(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) < 0) return {};
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

// A pidfd polls readable once its process has exited.
bool alive(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

// The reusable id of the first mount /proc/<pid>/mountinfo lists: the namespace's root mount.
// Opening mountinfo needs no ptrace access, unlike the namespace file, and only its first line
// is generated.
std::optional<uint64_t> root_mount_id(const std::string& pid) {
  UniqueFd fd(::open(fmt::format("/proc/{}/mountinfo", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  char buf[64];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  buf[n] = 0;
  char* end = nullptr;
  unsigned long long id = std::strtoull(buf, &end, 10);
  if (end == buf || *end != ' ') return std::nullopt;
  return id;
}

MountNsId own_root_mount() {
  static const MountNsId id = [] {
    auto r = root_mount_id("self");
    return r ? MountNsId{0, *r} : MountNsId{};
  }();
  return id;
}

}  // namespace

MountNsId own_mount_ns() {
  static const MountNsId id = [] {
    UniqueFd fd(::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC));
    return fd ? ns_of_fd(fd.get()) : MountNsId{};
  }();
  return id;
}

bool is_own_mount_ns(const MountNsId& id) {
  if (!id.known()) return false;
  return id.dev == 0 ? id == own_root_mount() : id == own_mount_ns();
}

UniqueFd peer_pidfd(int sock) {
  int fd = -1;
  socklen_t len = sizeof fd;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) < 0) return UniqueFd();
  return UniqueFd(fd);
}

std::vector<gid_t> peer_groups(int sock) {
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    if (errno != ERANGE) break;
    groups.resize(len / sizeof(gid_t) + 1);  // the kernel said how much it needs
  }
  return {};
}

Result<MountNsId> mount_ns_of(int pidfd, pid_t pid) {
  if (pidfd >= 0) {
    UniqueFd ns(::ioctl(pidfd, kPidfdGetMntNamespace, 0));
    if (ns) return ns_of_fd(ns.get());
  }
  if (pid <= 0) return fail_errno(ESRCH, "the client's process is not visible in the daemon's pid namespace");
  MountNsId id;
  UniqueFd ns(::open(fmt::format("/proc/{}/ns/mnt", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (ns) {
    id = ns_of_fd(ns.get());
  } else if (errno == EACCES || errno == EPERM) {
    // Another uid's namespace file needs CAP_SYS_PTRACE, which the service does not get.
    auto root = root_mount_id(std::to_string(pid));
    if (!root) return fail_errno(ESRCH, fmt::format("reading /proc/{}/mountinfo", pid));
    id = MountNsId{0, *root};
  } else {
    return fail_errno(errno, fmt::format("/proc/{}/ns/mnt", pid));
  }
  // With a pidfd, a process still alive after the open() is the client (its pid cannot have been
  // recycled). Without one (kernels before 6.5) that window stays open.
  if (pidfd >= 0 && !alive(pidfd)) return fail_errno(ESRCH, "the client's process exited");
  return id;
}

Result<UniqueFd> open_peer_mountinfo(int pidfd, pid_t pid, MountNsId ns) {
  if (pid <= 0) return fail_errno(ESRCH, "the client's process is not visible in the daemon's pid namespace");
  std::string path = fmt::format("/proc/{}/mountinfo", pid);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno(errno, path);
  // Opened while the process is alive and still in that namespace: the file is the client's.
  if (pidfd >= 0 && !alive(pidfd)) return fail_errno(ESRCH, "the client's process exited");
  auto now = mount_ns_of(pidfd, pid);
  if (!now || !(*now == ns)) return fail_errno(ESRCH, "the client's process changed its mount namespace");
  return fd;
}

}  // namespace storwatch::daemon
