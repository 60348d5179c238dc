// The filesystem inventory: the daemon's model of which filesystems exist, keyed by superblock
// (mountinfo field 3), however many bind mounts, subvolume mounts or overmounts each one has.
// update() swaps in a fresh mount table and says what changed, so the manager can turn the
// difference into mount.* and fs.* events.
//
// Ownership: the Inventory owns its tables. Pointers returned by find(), find_by_mount_prefix()
// and all() stay valid until the next update(). Not thread-safe: the event loop owns it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/mount/mountinfo.h"

namespace storwatch::daemon {

struct Filesystem {
  uint32_t major = 0, minor = 0;  // superblock st_dev (mountinfo field 3)
  std::string fstype, source;     // as the probe mount shows them
  // Every mount point of this superblock in the table (shadowed ones too), sorted, unique.
  std::vector<std::string> mounts;
  std::string super_options;
  // Every mount of it is read-only, or the superblock is: super option "ro", or emergency_ro
  // (ext4 refuses writes then without setting "ro").
  bool read_only = false;
  bool emergency_ro = false;  // super option "emergency_ro" (ext4 after errors=remount-ro)
  bool watched = false;       // the policy accepts at least one of its mounts
  std::string probe_path;     // a mount point to statfs: one whose root is "/", else the first

  std::string dev() const;  // "major:minor"
  bool operator==(const Filesystem&) const = default;
};

class Inventory {
 public:
  // Decides per mount; a filesystem is watched when any of its mounts is accepted, so one
  // read-only bind of a writable filesystem does not hide it.
  using Policy = std::function<bool(const MountEntry&)>;

  explicit Inventory(Policy policy = watched_by_default);

  struct Diff {
    // changed holds the new state of filesystems whose mounts, options, read-only state,
    // watched state (or anything else) changed; look the old state up before update().
    std::vector<Filesystem> added, removed, changed;  // each sorted by dev
    // A mount's identity is (mnt_id, mount_point, dev): the reusable mnt_id alone could name a
    // different mount after an unmount, so a reused id with a new place is detach + attach.
    std::vector<MountEntry> mounts_attached, mounts_detached;
    std::vector<std::pair<MountEntry, MountEntry>> mounts_changed;  // same identity: (old, new)
    bool empty() const;
  };

  // Replaces the table with a fresh parse of mountinfo and returns what changed.
  // O(n log n) in the number of mounts.
  Diff update(std::vector<MountEntry> mounts);

  const Filesystem* find(uint32_t major, uint32_t minor) const;
  // The filesystem whose mount point is the longest component-wise prefix of an absolute,
  // normalised path ("/mnt/a" is not a prefix of "/mnt/ab"). When several mounts share that
  // mount point, the topmost (the one no other mount there is stacked on) wins. nullptr for a
  // relative path or when nothing is mounted on any prefix.
  const Filesystem* find_by_mount_prefix(std::string_view path) const;
  std::vector<const Filesystem*> all() const;  // sorted by dev
  const std::vector<MountEntry>& mounts() const { return mounts_; }

 private:
  void index_mount_points();

  Policy policy_;
  std::vector<MountEntry> mounts_;       // as given to update(), in table order
  std::vector<Filesystem> filesystems_;  // sorted by (major, minor)
  // Mount point -> index into filesystems_, sorted by mount point. The views point into mounts_.
  std::vector<std::pair<std::string_view, size_t>> by_mount_point_;
};

}  // namespace storwatch::daemon
