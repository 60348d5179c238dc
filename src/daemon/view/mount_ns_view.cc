#include "daemon/view/mount_ns_view.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/log.h"
#include "daemon/source/space_monitor.h"

namespace storwatch::daemon {

namespace {

constexpr unsigned kStatxMntId = 0x1000;        // STATX_MNT_ID (5.8)
constexpr unsigned kStatxMntIdUnique = 0x4000;  // STATX_MNT_ID_UNIQUE (6.8)

Result<std::string> read_all(int fd) {
  // From offset 0 on the same file: this also re-arms its POLLPRI.
  if (::lseek(fd, 0, SEEK_SET) < 0) return fail_errno(errno, "seeking the client's mountinfo");
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(errno, "reading the client's mountinfo");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// `path` relative to `under` ("/" + rest), when `path` is `under` or below it.
std::optional<std::string> strip(const std::string& path, const std::string& under) {
  if (under == "/") return path;
  if (path == under) return std::string("/");
  if (path.size() > under.size() && path.compare(0, under.size(), under) == 0 && path[under.size()] == '/')
    return path.substr(under.size());
  return std::nullopt;
}

std::string join(const std::string& base, const std::string& rel) {
  if (rel == "/") return base;
  if (base == "/") return rel;
  return base + rel;
}

}  // namespace

MountNsView::MountNsView(EventLoop& loop, const Inventory& host, MountNsId ns, UniqueFd mountinfo, UniqueFd root,
                         Publish publish)
    : loop_(loop),
      host_(host),
      ns_(ns),
      mountinfo_(std::move(mountinfo)),
      root_(std::move(root)),
      publish_(std::move(publish)),
      tracker_([this](const MountEntry& m) -> std::optional<uint64_t> {
        // Looked up from the namespace's own root, so the walk crosses its mounts, not ours.
        if (!root_ || m.mount_point.empty() || m.mount_point.front() != '/') return std::nullopt;
        std::string rel = m.mount_point == "/" ? "." : m.mount_point.substr(1);
        auto id = [&](unsigned mask) -> std::optional<uint64_t> {
          struct statx st {};
          if (::statx(root_.get(), rel.c_str(), AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC | AT_SYMLINK_NOFOLLOW, mask,
                      &st) != 0 ||
              !(st.stx_mask & mask))
            return std::nullopt;
          return st.stx_mnt_id;
        };
        auto unique = id(kStatxMntIdUnique);
        if (!unique || *unique < (uint64_t{1} << 31)) return std::nullopt;
        auto old = id(kStatxMntId);
        if (!old || *old != m.mnt_id) return std::nullopt;
        return unique;
      }) {}

Result<std::shared_ptr<MountNsView>> MountNsView::create(EventLoop& loop, const Inventory& host, MountNsId ns,
                                                         UniqueFd mountinfo, UniqueFd root, Publish publish) {
  std::shared_ptr<MountNsView> v(
      new MountNsView(loop, host, ns, std::move(mountinfo), std::move(root), std::move(publish)));
  auto text = read_all(v->mountinfo_.get());
  if (!text) return fail(text.error());
  auto mounts = parse_mountinfo(*text);
  if (!mounts) return fail(mounts.error());
  v->here_ = index(*mounts);
  // The first apply() (the table as found) yields no events, as for the daemon's own table.
  v->tracker_.apply(v->table_.update(std::move(*mounts)), [](const MountEntry&) { return std::nullopt; });
  MountNsView* raw = v.get();
  if (auto r = loop.add_fd(v->mountinfo_.get(), EPOLLPRI | EPOLLERR, [raw](uint32_t) { raw->on_change(); }); !r)
    return fail(r.error());
  v->watching_ = true;
  return v;
}

MountNsView::~MountNsView() {
  if (holdoff_) loop_.cancel_timer(*holdoff_);
  if (watching_) loop_.remove_fd(mountinfo_.get());
}

void MountNsView::on_change() {
  refresh();
  // Out of the loop meanwhile: mountinfo raises POLLERR with POLLPRI, which epoll reports
  // whatever the interest. A change in between is still signalled when it is watched again.
  loop_.remove_fd(mountinfo_.get());
  watching_ = false;
  holdoff_ = loop_.add_timer_after(kMinInterval, [this] {
    holdoff_.reset();
    auto r = loop_.add_fd(mountinfo_.get(), EPOLLPRI | EPOLLERR, [this](uint32_t) { on_change(); });
    if (!r) {
      log_warning("mount namespace {}: no longer following its mount table: {}", ns_.ino, r.error().message());
      return;
    }
    watching_ = true;
    // The kernel reports a change to the first poll after it, and adding the file to epoll is
    // that poll: what changed meanwhile is read now, not signalled.
    refresh();
  });
}

MountNsView::Index MountNsView::index(const std::vector<MountEntry>& mounts) {
  Index out;
  for (const auto& m : mounts) out[{m.major, m.minor}].push_back({m.root, m.mount_point});
  return out;
}

const MountNsView::Index& MountNsView::host_index() const {
  if (!host_index_) host_index_ = index(host_.mounts());
  return *host_index_;
}

void MountNsView::refresh() {
  auto text = read_all(mountinfo_.get());
  if (!text) {
    log_warning("mount namespace {}: {}", ns_.ino, text.error().message());
    return;
  }
  auto mounts = parse_mountinfo(*text);
  if (!mounts) {
    log_warning("mount namespace {}: {}", ns_.ino, mounts.error().message());
    return;
  }
  here_ = index(*mounts);
  auto diff = table_.update(std::move(*mounts));
  auto fs_of = [&](const MountEntry& m) -> std::optional<FsRef> {
    if (const Filesystem* fs = table_.find(m.major, m.minor)) return fs_ref(*fs);
    for (const auto& fs : diff.removed)
      if (fs.major == m.major && fs.minor == m.minor) return fs_ref(fs);
    return std::nullopt;
  };
  for (auto& e : tracker_.apply(diff, fs_of)) {
    e.detail["mnt_ns"] = ns_.ino;
    publish_(std::move(e));
  }
}

std::vector<std::string> MountNsView::mounts_of(uint32_t major, uint32_t minor) const {
  if (const Filesystem* fs = table_.find(major, minor)) return fs->mounts;
  return {};
}

std::optional<std::string> translate_path(const std::vector<MountPlace>& from, const std::vector<MountPlace>& to,
                                          const std::string& path) {
  std::optional<std::string> inside;
  size_t best = 0;
  for (const auto& place : from) {
    auto rel = strip(path, place.mount_point);
    if (rel && (!inside || place.mount_point.size() > best)) {
      inside = join(place.root, *rel);
      best = place.mount_point.size();
    }
  }
  if (!inside) return std::nullopt;
  std::optional<std::string> out;
  best = 0;
  for (const auto& place : to) {
    auto rel = strip(*inside, place.root);
    if (rel && (!out || place.root.size() > best)) {
      out = join(place.mount_point, *rel);
      best = place.root.size();
    }
  }
  return out;
}

std::optional<std::string> MountNsView::path_here(uint32_t major, uint32_t minor, const std::string& host_path) const {
  const auto& host = host_index();
  auto h = host.find({major, minor});
  auto p = here_.find({major, minor});
  if (h == host.end() || p == here_.end()) return std::nullopt;
  return translate_path(h->second, p->second, host_path);
}

bool MountNsView::sees(const Event& e) const {
  if (e.type.rfind("mount.", 0) == 0) {
    // Only this namespace's own table changes; the host's mount.* describe another table.
    auto it = e.detail.find("mnt_ns");
    return it != e.detail.end() && it->is_number_unsigned() && it->get<uint64_t>() == ns_.ino;
  }
  if (e.fs) return here_.count({e.fs->major, e.fs->minor}) > 0;
  if (e.device) {
    if (here_.count({e.device->major, e.device->minor})) return true;
    const std::string dev_path = "/dev/" + e.device->name;
    for (const Filesystem* fs : table_.all())
      if (fs->source == dev_path) return true;
    return false;
  }
  // Nothing about a filesystem or device: the daemon's own health (daemon.*, source.unavailable)
  // and this stream's gaps (stream.lost) concern every client.
  return true;
}

bool MountNsView::rewrite(Event& e) const {
  if (e.type.rfind("mount.", 0) == 0) return false;  // published in this namespace's terms
  bool changed = false;
  if (e.fs) {
    auto here = mounts_of(e.fs->major, e.fs->minor);
    if (here != e.fs->mounts) {
      // The host's path of a file before its mount points are replaced.
      if (auto p = e.detail.find("path"); p != e.detail.end() && p->is_string()) {
        auto mapped = path_here(e.fs->major, e.fs->minor, p->get<std::string>());
        if (mapped)
          *p = *mapped;
        else
          e.detail.erase("path");
      }
      e.fs->mounts = std::move(here);
      changed = true;
    }
  }
  return changed;
}

}  // namespace storwatch::daemon
