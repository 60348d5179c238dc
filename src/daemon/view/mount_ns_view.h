// MountNsView: what a client in another mount namespace (a container given the socket) sees of
// storage: the filesystems mounted in its namespace, at the paths it sees them, and nothing of
// the host's other filesystems. Built from that namespace's mountinfo (read through a file one
// of its clients' processes opened, which keeps working after that process exits), refreshed
// when the namespace's mount table changes (POLLPRI), and shared by every client of the
// namespace: the Manager holds it weakly, the clients' streams strongly, so it goes with the
// last client.
//
// Host events are mapped by the filesystem's device number (the superblock's, the same in every
// namespace): `fs.mounts` becomes the namespace's mount points of it, `detail.path` the same
// file's path as the namespace sees it (dropped when no mount there shows that file), and events
// about a filesystem or device it has no mount of are not for it. The host's mount.* events
// describe the host's table: instead, the view publishes its own (tagged with detail.mnt_ns).
//
// Loop-thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <storwatch/event.h>

#include "base/fd.h"
#include "base/result.h"
#include "daemon/loop/event_loop.h"
#include "daemon/mount/inventory.h"
#include "daemon/mount/mount_tracker.h"
#include "daemon/view/peer_identity.h"

namespace storwatch::daemon {

// A mount of one filesystem: the directory of the filesystem it shows (mountinfo field 4), and
// where (field 5).
struct MountPlace {
  std::string root, mount_point;
};
// A path through one set of mounts of a filesystem (`from`) as the same file shows through
// another (`to`): through the deepest mount point of `from` holding it to the path inside the
// filesystem, then out through the mount of `to` whose root holds that most closely. nullopt
// when no mount of `to` shows the file. Pure; used for host -> namespace paths.
std::optional<std::string> translate_path(const std::vector<MountPlace>& from, const std::vector<MountPlace>& to,
                                          const std::string& path);

class MountNsView {
 public:
  using Publish = std::function<void(Event)>;
  // `host` is the daemon's inventory and outlives the view. `mountinfo` is an open
  // /proc/<pid>/mountinfo of a process in `ns` (open_peer_mountinfo), `root` an O_PATH fd of its
  // root directory (for the unique mount ids), or invalid.
  [[nodiscard]] static Result<std::shared_ptr<MountNsView>> create(EventLoop& loop, const Inventory& host, MountNsId ns,
                                                                   UniqueFd mountinfo, UniqueFd root, Publish publish);
  ~MountNsView();
  MountNsView(const MountNsView&) = delete;
  MountNsView& operator=(const MountNsView&) = delete;

  MountNsId ns() const { return ns_; }
  const Inventory& inventory() const { return table_; }
  const MountTracker& tracker() const { return tracker_; }

  // Whether a client of this namespace receives `e` at all.
  bool sees(const Event& e) const;
  // Rewrites host paths into this namespace's; true when anything changed.
  bool rewrite(Event& e) const;
  // The namespace's mount points of a filesystem (sorted), empty when it has none.
  std::vector<std::string> mounts_of(uint32_t major, uint32_t minor) const;
  // A host path on filesystem major:minor as this namespace sees the same file, or nullopt.
  std::optional<std::string> path_here(uint32_t major, uint32_t minor, const std::string& host_path) const;

  // Re-reads the namespace's table; publishes its mount.* events (detail.mnt_ns set).
  void refresh();
  // Whoever owns the namespace may change its table without pause: re-read at most once per
  // this interval, the changes in between coming together with the next read.
  static constexpr std::chrono::milliseconds kMinInterval{50};
  // The daemon's own table changed: host paths map differently now.
  void host_changed() { host_index_.reset(); }

 private:
  MountNsView(EventLoop& loop, const Inventory& host, MountNsId ns, UniqueFd mountinfo, UniqueFd root,
              Publish publish);
  using Index = std::map<std::pair<uint32_t, uint32_t>, std::vector<MountPlace>>;
  static Index index(const std::vector<MountEntry>& mounts);
  const Index& host_index() const;

  EventLoop& loop_;
  const Inventory& host_;
  MountNsId ns_;
  UniqueFd mountinfo_;
  UniqueFd root_;
  Publish publish_;
  Inventory table_;
  MountTracker tracker_;
  Index here_;                                  // this namespace's mounts by device
  mutable std::optional<Index> host_index_;     // the host's, rebuilt after host_changed()
  bool watching_ = false;
  std::optional<EventLoop::TimerId> holdoff_;
  void on_change();
};

}  // namespace storwatch::daemon
