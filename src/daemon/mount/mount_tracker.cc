#include "daemon/mount/mount_tracker.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

namespace storwatch::daemon {

using nlohmann::json;

namespace {

constexpr unsigned kStatxMntId = 0x1000;        // STATX_MNT_ID (5.8)
constexpr unsigned kStatxMntIdUnique = 0x4000;  // STATX_MNT_ID_UNIQUE (6.8)

std::optional<uint64_t> statx_mnt_id(const std::string& path, unsigned mask) {
  struct statx st {};
  // No automount, no revalidation round trip on network filesystems, the mount itself.
  if (::statx(AT_FDCWD, path.c_str(), AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC | AT_SYMLINK_NOFOLLOW, mask, &st) != 0)
    return std::nullopt;
  if (!(st.stx_mask & mask)) return std::nullopt;
  return st.stx_mnt_id;
}

std::string fs_dev(const MountEntry& m) { return std::to_string(m.major) + ":" + std::to_string(m.minor); }

}  // namespace

MountTracker::MountTracker(UniqueId unique_id) : read_unique_(std::move(unique_id)) {
  if (!read_unique_) read_unique_ = [](const MountEntry&) { return std::optional<uint64_t>(); };
}

std::optional<uint64_t> MountTracker::statx_unique_id(const MountEntry& m) {
  if (m.mount_point.empty() || m.mount_point.front() != '/') return std::nullopt;
  auto unique = statx_mnt_id(m.mount_point, kStatxMntIdUnique);
  if (!unique || *unique < (uint64_t{1} << 31)) return std::nullopt;  // an old kernel answered the old id
  // The path shows the topmost mount there: keep the id only when that is this mount.
  auto old = statx_mnt_id(m.mount_point, kStatxMntId);
  if (!old || *old != m.mnt_id) return std::nullopt;
  return unique;
}

std::optional<uint64_t> MountTracker::unique_id(const MountEntry& m) const {
  auto it = ids_.find(key(m));
  return it == ids_.end() ? std::nullopt : it->second;
}

json MountTracker::detail(const MountEntry& m, std::optional<uint64_t> id) const {
  json d = json::object();
  if (id) d["mnt_id"] = *id;
  d["mnt_id_old"] = m.mnt_id;
  d["parent_id"] = m.parent_id;
  d["dev"] = fs_dev(m);
  d["path"] = m.mount_point;
  d["root"] = m.root;
  d["fstype"] = m.fstype;
  d["source"] = m.source;
  d["options"] = m.mount_options;
  d["super_options"] = m.super_options;
  d["propagation"] = m.optional_fields;
  return d;
}

json MountTracker::mount_json(const MountEntry& m) const {
  auto id = unique_id(m);
  json j = {{"mnt_id", id ? *id : m.mnt_id},
            {"mnt_id_old", m.mnt_id},
            {"parent_id", m.parent_id},
            {"dev", fs_dev(m)},
            {"root", m.root},
            {"path", m.mount_point},
            {"fstype", m.fstype},
            {"source", m.source},
            {"options", m.mount_options},
            {"super_options", m.super_options},
            {"propagation", m.optional_fields}};
  return j;
}

json MountTracker::table_json(const std::vector<MountEntry>& mounts) const {
  json out = json::array();
  for (const auto& m : mounts) out.push_back(mount_json(m));
  return out;
}

std::vector<Event> MountTracker::apply(const Inventory::Diff& diff, const FsOf& fs_of,
                                       std::string_view source) {
  const bool quiet = !started_;
  started_ = true;
  std::vector<Event> out;
  auto make = [&](const char* type, const MountEntry& m, std::optional<uint64_t> id) {
    Event e;
    e.type = type;
    e.severity = Severity::info;
    e.source = std::string(source);
    if (fs_of) e.fs = fs_of(m);
    e.detail = detail(m, id);
    return e;
  };

  // Detached mounts: their ids, remembered (the mount can no longer be asked).
  struct Gone {
    const MountEntry* m;
    std::optional<uint64_t> id;
    bool moved = false;
  };
  std::vector<Gone> gone;
  gone.reserve(diff.mounts_detached.size());
  for (const auto& m : diff.mounts_detached) {
    auto it = ids_.find(key(m));
    std::optional<uint64_t> id;
    if (it != ids_.end()) {
      id = it->second;
      ids_.erase(it);
    }
    gone.push_back({&m, id});
  }
  // Attached mounts: a detached one with the same reusable id, device and root (and unique id,
  // when both are known) is the same mount moved.
  std::vector<Event> attached;
  for (const auto& m : diff.mounts_attached) {
    std::optional<uint64_t> id = m.unique_id ? std::optional<uint64_t>(m.unique_id) : read_unique_(m);
    Gone* from = nullptr;
    for (auto& g : gone) {
      if (g.moved || g.m->mnt_id != m.mnt_id || g.m->major != m.major || g.m->minor != m.minor ||
          g.m->root != m.root)
        continue;
      if (id && g.id && *id != *g.id) continue;
      from = &g;
      break;
    }
    if (from) {
      from->moved = true;
      if (!id) id = from->id;
    }
    ids_[key(m)] = id;
    if (quiet) continue;
    if (!from) {
      attached.push_back(make("mount.attached", m, id));
      continue;
    }
    Event e = make("mount.changed", m, id);
    std::vector<std::string> what = {"path"};
    e.detail["old_path"] = from->m->mount_point;
    if (from->m->parent_id != m.parent_id) {
      e.detail["old_parent_id"] = from->m->parent_id;
      what.push_back("parent_id");
    }
    if (from->m->mount_options != m.mount_options) {
      e.detail["old_options"] = from->m->mount_options;
      what.push_back("options");
    }
    e.detail["changed"] = what;
    attached.push_back(std::move(e));
  }
  if (quiet) return out;

  for (const auto& g : gone)
    if (!g.moved) out.push_back(make("mount.detached", *g.m, g.id));
  for (const auto& [old_m, new_m] : diff.mounts_changed) {
    auto it = ids_.find(key(new_m));
    std::optional<uint64_t> id = it != ids_.end() ? it->second : std::nullopt;
    Event e = make("mount.changed", new_m, id);
    std::vector<std::string> what;
    auto note = [&](const char* name, const json& old_value, bool differs) {
      if (!differs) return;
      e.detail[std::string("old_") + name] = old_value;
      what.push_back(name);
    };
    note("options", old_m.mount_options, old_m.mount_options != new_m.mount_options);
    note("super_options", old_m.super_options, old_m.super_options != new_m.super_options);
    note("propagation", old_m.optional_fields, old_m.optional_fields != new_m.optional_fields);
    note("parent_id", old_m.parent_id, old_m.parent_id != new_m.parent_id);
    note("root", old_m.root, old_m.root != new_m.root);
    note("source", old_m.source, old_m.source != new_m.source);
    note("fstype", old_m.fstype, old_m.fstype != new_m.fstype);
    e.detail["changed"] = what;
    out.push_back(std::move(e));
  }
  for (auto& e : attached) out.push_back(std::move(e));
  return out;
}

}  // namespace storwatch::daemon
