#include "daemon/mount/inventory.h"

#include <algorithm>
#include <tuple>

namespace storwatch::daemon {
namespace {

bool dev_less(uint32_t major_a, uint32_t minor_a, uint32_t major_b, uint32_t minor_b) {
  return std::tie(major_a, minor_a) < std::tie(major_b, minor_b);
}

bool same_mount(const MountEntry& a, const MountEntry& b) {
  return a.mnt_id == b.mnt_id && a.parent_id == b.parent_id && a.major == b.major &&
         a.minor == b.minor && a.root == b.root && a.mount_point == b.mount_point &&
         a.mount_options == b.mount_options && a.optional_fields == b.optional_fields &&
         a.fstype == b.fstype && a.source == b.source && a.super_options == b.super_options;
}

auto identity(const MountEntry& m) { return std::tie(m.mnt_id, m.mount_point, m.major, m.minor); }

// Indices of `mounts` ordered by identity; table order breaks ties so duplicate identities (which
// the kernel never writes) still pair up deterministically.
std::vector<size_t> order_by_identity(const std::vector<MountEntry>& mounts) {
  std::vector<size_t> order(mounts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return identity(mounts[a]) < identity(mounts[b]); });
  return order;
}

Filesystem make_filesystem(const std::vector<MountEntry>& mounts, const std::vector<size_t>& group,
                           const Inventory::Policy& policy) {
  // group is sorted by mount point, so "the first" below is the same whatever order the kernel
  // listed the mounts in, and a reordered table yields an equal Filesystem.
  const MountEntry* probe = &mounts[group.front()];
  for (size_t i : group) {
    if (mounts[i].root == "/") {
      probe = &mounts[i];
      break;
    }
  }
  Filesystem fs;
  fs.major = probe->major;
  fs.minor = probe->minor;
  fs.fstype = probe->fstype;
  fs.source = probe->source;
  fs.super_options = probe->super_options;
  fs.probe_path = probe->mount_point;
  bool all_ro = true;
  for (size_t i : group) {
    const MountEntry& m = mounts[i];
    if (fs.mounts.empty() || fs.mounts.back() != m.mount_point) fs.mounts.push_back(m.mount_point);
    all_ro = all_ro && m.read_only();
    fs.emergency_ro = fs.emergency_ro || m.has_super_option("emergency_ro");
    fs.watched = fs.watched || policy(m);
  }
  fs.read_only = all_ro || fs.emergency_ro;
  return fs;
}

std::vector<Filesystem> group_filesystems(const std::vector<MountEntry>& mounts,
                                          const Inventory::Policy& policy) {
  std::vector<size_t> order(mounts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const MountEntry& x = mounts[a];
    const MountEntry& y = mounts[b];
    return std::tie(x.major, x.minor, x.mount_point, a) <
           std::tie(y.major, y.minor, y.mount_point, b);
  });
  std::vector<Filesystem> out;
  std::vector<size_t> group;
  for (size_t k = 0; k < order.size(); ++k) {
    group.push_back(order[k]);
    bool last = k + 1 == order.size() || mounts[order[k + 1]].major != mounts[order[k]].major ||
                mounts[order[k + 1]].minor != mounts[order[k]].minor;
    if (!last) continue;
    out.push_back(make_filesystem(mounts, group, policy));
    group.clear();
  }
  return out;
}

void diff_filesystems(const std::vector<Filesystem>& before, const std::vector<Filesystem>& after,
                      Inventory::Diff& diff) {
  size_t i = 0, j = 0;
  while (i < before.size() || j < after.size()) {
    if (j == after.size() || (i < before.size() && dev_less(before[i].major, before[i].minor,
                                                            after[j].major, after[j].minor))) {
      diff.removed.push_back(before[i++]);
    } else if (i == before.size() ||
               dev_less(after[j].major, after[j].minor, before[i].major, before[i].minor)) {
      diff.added.push_back(after[j++]);
    } else {
      if (before[i] != after[j]) diff.changed.push_back(after[j]);
      ++i;
      ++j;
    }
  }
}

void diff_mounts(const std::vector<MountEntry>& before, const std::vector<MountEntry>& after,
                 Inventory::Diff& diff) {
  std::vector<size_t> ob = order_by_identity(before);
  std::vector<size_t> oa = order_by_identity(after);
  size_t i = 0, j = 0;
  while (i < ob.size() || j < oa.size()) {
    if (j == oa.size() || (i < ob.size() && identity(before[ob[i]]) < identity(after[oa[j]]))) {
      diff.mounts_detached.push_back(before[ob[i++]]);
    } else if (i == ob.size() || identity(after[oa[j]]) < identity(before[ob[i]])) {
      diff.mounts_attached.push_back(after[oa[j++]]);
    } else {
      const MountEntry& old_m = before[ob[i++]];
      const MountEntry& new_m = after[oa[j++]];
      if (!same_mount(old_m, new_m)) diff.mounts_changed.emplace_back(old_m, new_m);
    }
  }
}

}  // namespace

std::string Filesystem::dev() const { return std::to_string(major) + ":" + std::to_string(minor); }

bool Inventory::Diff::empty() const {
  return added.empty() && removed.empty() && changed.empty() && mounts_attached.empty() &&
         mounts_detached.empty() && mounts_changed.empty();
}

Inventory::Inventory(Policy policy) : policy_(std::move(policy)) {
  // An empty std::function would throw on the first call; fall back to the embedded default.
  if (!policy_) policy_ = watched_by_default;
}

Inventory::Diff Inventory::update(std::vector<MountEntry> mounts) {
  std::vector<Filesystem> fresh = group_filesystems(mounts, policy_);
  Diff diff;
  diff_filesystems(filesystems_, fresh, diff);
  diff_mounts(mounts_, mounts, diff);
  filesystems_ = std::move(fresh);
  mounts_ = std::move(mounts);
  index_mount_points();
  return diff;
}

void Inventory::index_mount_points() {
  by_mount_point_.clear();
  std::vector<size_t> order(mounts_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::tie(mounts_[a].mount_point, a) < std::tie(mounts_[b].mount_point, b);
  });
  std::vector<uint64_t> parents;
  for (size_t begin = 0; begin < order.size();) {
    const std::string& point = mounts_[order[begin]].mount_point;
    size_t end = begin + 1;
    while (end < order.size() && mounts_[order[end]].mount_point == point) ++end;
    // Overmounts stack: each one's parent is the mount it covers. The visible one is the mount
    // no other mount at this point sits on; a garbled table without one falls back to the last.
    size_t top = order[end - 1];
    if (end - begin > 1) {
      parents.clear();
      for (size_t k = begin; k < end; ++k) parents.push_back(mounts_[order[k]].parent_id);
      std::sort(parents.begin(), parents.end());
      for (size_t k = end; k-- > begin;) {
        if (!std::binary_search(parents.begin(), parents.end(), mounts_[order[k]].mnt_id)) {
          top = order[k];
          break;
        }
      }
    }
    const Filesystem* fs = find(mounts_[top].major, mounts_[top].minor);
    if (fs) by_mount_point_.emplace_back(point, static_cast<size_t>(fs - filesystems_.data()));
    begin = end;
  }
}

const Filesystem* Inventory::find(uint32_t major, uint32_t minor) const {
  auto it = std::lower_bound(filesystems_.begin(), filesystems_.end(), std::pair(major, minor),
                             [](const Filesystem& fs, const std::pair<uint32_t, uint32_t>& dev) {
                               return dev_less(fs.major, fs.minor, dev.first, dev.second);
                             });
  if (it == filesystems_.end() || it->major != major || it->minor != minor) return nullptr;
  return &*it;
}

const Filesystem* Inventory::find_by_mount_prefix(std::string_view path) const {
  if (path.empty() || path.front() != '/') return nullptr;
  // Trailing slashes name the same directory; "/" itself stays.
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  auto lookup = [&](std::string_view point) -> const Filesystem* {
    auto it =
        std::lower_bound(by_mount_point_.begin(), by_mount_point_.end(), point,
                         [](const auto& entry, std::string_view p) { return entry.first < p; });
    if (it == by_mount_point_.end() || it->first != point) return nullptr;
    return &filesystems_[it->second];
  };
  // Walk up one component at a time: each candidate ends at a '/' boundary, which is what
  // makes the match component-wise. Cost is O(depth * log n).
  while (true) {
    if (const Filesystem* fs = lookup(path)) return fs;
    if (path.size() == 1) return nullptr;
    size_t slash = path.rfind('/');
    path = slash == 0 ? path.substr(0, 1) : path.substr(0, slash);
  }
}

std::vector<const Filesystem*> Inventory::all() const {
  std::vector<const Filesystem*> out;
  out.reserve(filesystems_.size());
  for (const Filesystem& fs : filesystems_) out.push_back(&fs);
  return out;
}

}  // namespace storwatch::daemon
