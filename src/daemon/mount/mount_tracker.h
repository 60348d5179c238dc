// MountTracker: turns the Inventory's mount diff into mount.attached, mount.detached and
// mount.changed events (whichever MountSource produced the changes), and renders the mount table
// as the interface's Mount type.
//
// It remembers each mount's 64-bit unique id, because after a detach the id cannot be read any
// more: the one the source gave (MountEntry::unique_id, from statmount), else statx
// STATX_MNT_ID_UNIQUE on the mount point, read once when the mount first appears, checked against
// the reusable id so an overmounted point does not lend its id to the mount below.
// A move shows in mountinfo as one mount leaving and one appearing with the same reusable id and
// device (and the same unique id when known): it is reported as one mount.changed with old_path.
//
// Loop-thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>
#include <storwatch/event.h>

#include "daemon/mount/inventory.h"
#include "daemon/mount/mountinfo.h"

namespace storwatch::daemon {

class MountTracker {
 public:
  // Reads the unique id of the mount `m` describes, or nullopt (kernel before 6.8, the mount
  // point not reachable, or covered by another mount).
  using UniqueId = std::function<std::optional<uint64_t>(const MountEntry& m)>;
  // The filesystem an event is about (dev "major:minor"), when known.
  using FsOf = std::function<std::optional<FsRef>(const MountEntry& m)>;

  explicit MountTracker(UniqueId unique_id = statx_unique_id);

  // The default UniqueId: statx(STATX_MNT_ID_UNIQUE) and statx(STATX_MNT_ID) on the mount point
  // (AT_NO_AUTOMOUNT, AT_STATX_DONT_SYNC), the unique id kept only when the reusable id is m's.
  static std::optional<uint64_t> statx_unique_id(const MountEntry& m);

  // Applies a diff of the Inventory. The first call (the table at start) yields no events.
  // `source` is the events' source field ("mountinfo", "fanotify").
  std::vector<Event> apply(const Inventory::Diff& diff, const FsOf& fs_of,
                           std::string_view source = "mountinfo");

  // One entry of the Mount type (io.storwatch.varlink). mnt_id is the unique id, or the reusable
  // one when the unique id is unknown. Exactly the type's fields.
  nlohmann::json mount_json(const MountEntry& m) const;
  nlohmann::json table_json(const std::vector<MountEntry>& mounts) const;

  std::optional<uint64_t> unique_id(const MountEntry& m) const;
  size_t size() const { return ids_.size(); }

 private:
  using Key = std::tuple<uint64_t, uint32_t, uint32_t, std::string>;  // mnt_id, major, minor, path
  static Key key(const MountEntry& m) { return {m.mnt_id, m.major, m.minor, m.mount_point}; }
  nlohmann::json detail(const MountEntry& m, std::optional<uint64_t> id) const;

  UniqueId read_unique_;
  bool started_ = false;
  std::map<Key, std::optional<uint64_t>> ids_;
};

}  // namespace storwatch::daemon
