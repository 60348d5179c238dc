// The filesystem inventory: the daemon's model of which filesystems exist, keyed by superblock
// (mountinfo field 3), however many bind mounts, subvolume mounts or overmounts each one has.
// update() swaps in a fresh mount table, apply() takes the changes a MountSource saw; both say
// what changed, so the manager can turn the difference into mount.* and fs.* events. apply()
// costs O(log n) per changed mount plus O(mounts of that filesystem) per touched filesystem, so a
// change to a 50,000-mount table costs what it costs to a 50-mount one.
//
// Ownership: the Inventory owns its tables. Pointers returned by find(), find_by_mount_prefix()
// and all() stay valid until the next update() or apply(). Not thread-safe: the event loop owns it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/mount/mount_changes.h"
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
  // Applies incremental changes (changes.full: replaces the table, as update()). A detached or
  // changed mount the inventory does not hold is ignored; an attached one it already holds is
  // replaced. The diff's mount lists are the changes as applied.
  Diff apply(MountChanges changes);

  const Filesystem* find(uint32_t major, uint32_t minor) const;
  // The filesystem whose mount point is the longest component-wise prefix of an absolute,
  // normalised path ("/mnt/a" is not a prefix of "/mnt/ab"). When several mounts share that
  // mount point, the topmost (the one no other mount there is stacked on) wins. nullptr for a
  // relative path or when nothing is mounted on any prefix.
  const Filesystem* find_by_mount_prefix(std::string_view path) const;
  std::vector<const Filesystem*> all() const;  // sorted by dev
  // The table in table order (update()'s order, then attach order). A copy: O(n).
  std::vector<MountEntry> mounts() const;
  size_t mount_count() const { return mounts_.size(); }

 private:
  using Dev = std::pair<uint32_t, uint32_t>;
  using Identity = std::tuple<uint64_t, std::string, uint32_t, uint32_t>;  // mnt_id, path, dev
  static Identity identity_of(const MountEntry& m) { return {m.mnt_id, m.mount_point, m.major, m.minor}; }
  void clear();
  void insert(MountEntry m);
  bool erase(const MountEntry& m);  // one mount of this identity; false when none is held
  void rebuild_filesystem(Dev dev);

  Policy policy_;
  uint64_t next_seq_ = 0;
  std::map<uint64_t, MountEntry> mounts_;  // by sequence number: table order
  std::multimap<Identity, uint64_t> by_identity_;  // a garbled table may repeat one
  std::map<Dev, Filesystem> filesystems_;
  std::map<Dev, std::set<std::pair<std::string, uint64_t>>> fs_mounts_;  // (mount point, seq)
  // Mount point -> the mounts stacked there, by seq.
  std::map<std::string, std::set<uint64_t>, std::less<>> by_mount_point_;
};

}  // namespace storwatch::daemon
