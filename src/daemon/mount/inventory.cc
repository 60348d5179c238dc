#include "daemon/mount/inventory.h"

#include <algorithm>
#include <optional>
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

// `group` is one filesystem's mounts sorted by mount point, so "the first" below is the same
// whatever order the kernel listed the mounts in, and a reordered table yields an equal Filesystem.
Filesystem make_filesystem(const std::vector<const MountEntry*>& group, const Inventory::Policy& policy) {
  const MountEntry* probe = group.front();
  for (const MountEntry* m : group) {
    if (m->root == "/") {
      probe = m;
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
  for (const MountEntry* m : group) {
    if (fs.mounts.empty() || fs.mounts.back() != m->mount_point) fs.mounts.push_back(m->mount_point);
    all_ro = all_ro && m->read_only();
    fs.emergency_ro = fs.emergency_ro || m->has_super_option("emergency_ro");
    fs.watched = fs.watched || policy(*m);
  }
  fs.read_only = all_ro || fs.emergency_ro;
  return fs;
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

void Inventory::clear() {
  mounts_.clear();
  by_identity_.clear();
  filesystems_.clear();
  fs_mounts_.clear();
  by_mount_point_.clear();
}

void Inventory::insert(MountEntry m) {
  uint64_t seq = next_seq_++;
  by_identity_.emplace(identity_of(m), seq);
  fs_mounts_[{m.major, m.minor}].emplace(m.mount_point, seq);
  by_mount_point_[m.mount_point].insert(seq);
  mounts_.emplace(seq, std::move(m));
}

bool Inventory::erase(const MountEntry& m) {
  auto [first, last] = by_identity_.equal_range(identity_of(m));
  if (first == last) return false;
  auto it = std::prev(last);  // the latest one, as a re-read would pair them
  uint64_t seq = it->second;
  by_identity_.erase(it);
  if (auto f = fs_mounts_.find({m.major, m.minor}); f != fs_mounts_.end()) {
    f->second.erase({m.mount_point, seq});
    if (f->second.empty()) fs_mounts_.erase(f);
  }
  if (auto p = by_mount_point_.find(m.mount_point); p != by_mount_point_.end()) {
    p->second.erase(seq);
    if (p->second.empty()) by_mount_point_.erase(p);
  }
  mounts_.erase(seq);
  return true;
}

void Inventory::rebuild_filesystem(Dev dev) {
  auto f = fs_mounts_.find(dev);
  if (f == fs_mounts_.end()) {
    filesystems_.erase(dev);
    return;
  }
  std::vector<const MountEntry*> group;
  group.reserve(f->second.size());
  for (const auto& [point, seq] : f->second) group.push_back(&mounts_.at(seq));
  filesystems_[dev] = make_filesystem(group, policy_);
}

Inventory::Diff Inventory::update(std::vector<MountEntry> mounts) {
  std::vector<Filesystem> before_fs;
  before_fs.reserve(filesystems_.size());
  for (auto& [dev, fs] : filesystems_) before_fs.push_back(std::move(fs));
  std::vector<MountEntry> before = this->mounts();
  Diff diff;
  diff_mounts(before, mounts, diff);
  clear();
  for (auto& m : mounts) insert(std::move(m));
  for (const auto& [dev, group] : fs_mounts_) rebuild_filesystem(dev);
  std::vector<Filesystem> after_fs;
  after_fs.reserve(filesystems_.size());
  for (const auto& [dev, fs] : filesystems_) after_fs.push_back(fs);
  diff_filesystems(before_fs, after_fs, diff);
  return diff;
}

Inventory::Diff Inventory::apply(MountChanges changes) {
  if (changes.full) return update(std::move(changes.attached));
  // The old state of each filesystem the changes touch, taken before the first change to it.
  std::map<Dev, std::optional<Filesystem>> touched;
  auto touch = [&](const MountEntry& m) {
    Dev dev{m.major, m.minor};
    if (touched.count(dev)) return;
    auto it = filesystems_.find(dev);
    touched.emplace(dev, it == filesystems_.end() ? std::nullopt : std::optional<Filesystem>(it->second));
  };
  Diff diff;
  for (auto& m : changes.detached) {
    touch(m);
    if (erase(m)) diff.mounts_detached.push_back(std::move(m));
  }
  for (auto& [old_m, new_m] : changes.changed) {
    touch(old_m);
    touch(new_m);
    if (!erase(old_m)) continue;
    // A change that moved the mount is a detach and an attach here, as in update().
    if (identity_of(old_m) != identity_of(new_m)) {
      diff.mounts_detached.push_back(old_m);
      diff.mounts_attached.push_back(new_m);
      insert(std::move(new_m));
      continue;
    }
    insert(new_m);
    if (!same_mount(old_m, new_m)) diff.mounts_changed.emplace_back(std::move(old_m), std::move(new_m));
  }
  for (auto& m : changes.attached) {
    touch(m);
    insert(m);
    diff.mounts_attached.push_back(std::move(m));
  }
  for (auto& [dev, before] : touched) {
    rebuild_filesystem(dev);
    auto it = filesystems_.find(dev);
    if (!before && it != filesystems_.end()) {
      diff.added.push_back(it->second);
    } else if (before && it == filesystems_.end()) {
      diff.removed.push_back(std::move(*before));
    } else if (before && *before != it->second) {
      diff.changed.push_back(it->second);
    }
  }
  return diff;
}

std::vector<MountEntry> Inventory::mounts() const {
  std::vector<MountEntry> out;
  out.reserve(mounts_.size());
  for (const auto& [seq, m] : mounts_) out.push_back(m);
  return out;
}

const Filesystem* Inventory::find(uint32_t major, uint32_t minor) const {
  auto it = filesystems_.find({major, minor});
  return it == filesystems_.end() ? nullptr : &it->second;
}

const Filesystem* Inventory::find_by_mount_prefix(std::string_view path) const {
  if (path.empty() || path.front() != '/') return nullptr;
  // Trailing slashes name the same directory; "/" itself stays.
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  auto lookup = [&](std::string_view point) -> const Filesystem* {
    auto it = by_mount_point_.find(point);
    if (it == by_mount_point_.end()) return nullptr;
    const std::set<uint64_t>& stack = it->second;
    // Overmounts stack: each one's parent is the mount it covers. The visible one is the mount
    // no other mount at this point sits on; a garbled table without one falls back to the last.
    const MountEntry* top = &mounts_.at(*stack.rbegin());
    if (stack.size() > 1) {
      for (auto s = stack.rbegin(); s != stack.rend(); ++s) {
        const MountEntry& m = mounts_.at(*s);
        bool covered = false;
        for (uint64_t other : stack) covered = covered || mounts_.at(other).parent_id == m.mnt_id;
        if (!covered) {
          top = &m;
          break;
        }
      }
    }
    return find(top->major, top->minor);
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
  for (const auto& [dev, fs] : filesystems_) out.push_back(&fs);
  return out;
}

}  // namespace storwatch::daemon
