// Who is on the other end of a client socket, beyond SO_PEERCRED's ids: its supplementary
// groups (for gid entries of the policy), a pidfd (so a recycled pid is never mistaken for the
// client), and its mount namespace (so a client in a container gets that namespace's view).
// Read once per connection at accept, with a few non-blocking syscalls.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace storwatch::daemon {

// A mount namespace, as stat() of its nsfs file gives it; or, where that file may not be opened
// (another uid's, without CAP_SYS_PTRACE), dev 0 and the reusable id of its root mount, which
// no other namespace has while this one lives.
struct MountNsId {
  uint64_t dev = 0, ino = 0;
  bool known() const { return ino != 0; }
  bool operator==(const MountNsId&) const = default;
  auto operator<=>(const MountNsId&) const = default;
};

// The daemon's own mount namespace (read once).
MountNsId own_mount_ns();
// Whether `id` (either form) is the daemon's own mount namespace.
bool is_own_mount_ns(const MountNsId& id);

// The peer of a connected Unix socket: SO_PEERPIDFD (-1 when the kernel has none).
UniqueFd peer_pidfd(int sock);
// SO_PEERGROUPS: the peer's supplementary groups at connect() (empty when unavailable).
std::vector<gid_t> peer_groups(int sock);
// The mount namespace of the process `pidfd` refers to (PIDFD_GET_MNT_NAMESPACE; without it
// /proc/<pid>/ns/mnt, else its root mount; checked against the pidfd when there is one).
[[nodiscard]] Result<MountNsId> mount_ns_of(int pidfd, pid_t pid);

// Opens /proc/<pid>/mountinfo of the process behind `pidfd`, checked to be in `ns`. The open file
// keeps the namespace and the process's root: it reads (and polls) correctly after that process
// exits, so one client's file serves every client of the namespace.
[[nodiscard]] Result<UniqueFd> open_peer_mountinfo(int pidfd, pid_t pid, MountNsId ns);

}  // namespace storwatch::daemon
