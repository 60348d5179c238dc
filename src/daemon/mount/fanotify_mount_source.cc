#include "daemon/mount/fanotify_mount_source.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/fanotify.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "daemon/mount/fanotify_mnt.h"

namespace storwatch::daemon {
namespace {

uint64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

bool same_state(const MountEntry& a, const MountEntry& b) {
  return a.mnt_id == b.mnt_id && a.parent_id == b.parent_id && a.major == b.major &&
         a.minor == b.minor && a.root == b.root && a.mount_point == b.mount_point &&
         a.mount_options == b.mount_options && a.optional_fields == b.optional_fields &&
         a.fstype == b.fstype && a.source == b.source && a.super_options == b.super_options;
}

uint64_t dev_key(const MountEntry& m) { return (uint64_t{m.major} << 32) | m.minor; }

Result<UniqueFd> open_group(const std::string& proc_dir) {
  UniqueFd ns(::open((proc_dir + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns) return fail_errno(errno, "opening " + proc_dir + "/ns/mnt");
  UniqueFd fan(::fanotify_init(FAN_CLASS_NOTIF | mntapi::kFanReportMnt | FAN_CLOEXEC | FAN_NONBLOCK,
                               O_RDONLY | O_CLOEXEC));
  if (!fan) return fail_errno(errno, "fanotify_init(FAN_REPORT_MNT)");
  if (::fanotify_mark(fan.get(), FAN_MARK_ADD | mntapi::kFanMarkMntns,
                      mntapi::kFanMntAttach | mntapi::kFanMntDetach, ns.get(), nullptr) != 0)
    return fail_errno(errno, "fanotify_mark(FAN_MARK_MNTNS)");
  return fan;
}

}  // namespace

std::string FanotifyMountSource::probe() {
  auto fan = open_group("/proc/self");
  if (!fan) return fan.error().message();
  mntapi::MountApi api;
  auto ids = api.list();
  if (!ids) return ids.error().message();
  if (ids->empty()) return "listmount returned no mounts";
  auto m = api.stat(ids->front());
  if (!m) return m.error().message();
  return "";
}

Result<std::unique_ptr<FanotifyMountSource>> FanotifyMountSource::create(Options options) {
  auto fan = open_group(options.proc_dir);
  if (!fan) return fail(fan.error());
  uint64_t ns_id = 0;
  if (options.proc_dir != "/proc/self") {
    UniqueFd ns(::open((options.proc_dir + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) return fail_errno(errno, "opening " + options.proc_dir + "/ns/mnt");
    auto id = mntapi::MountApi::namespace_id(ns.get());
    if (!id) return fail(id.error());
    ns_id = *id;
  }
  auto table = ProcMountTable::open(options.proc_dir + "/mountinfo");
  if (!table) return fail(table.error());
  mntapi::MountApi api(ns_id);
  if (auto ids = api.list(); !ids) return fail(ids.error());
  return std::unique_ptr<FanotifyMountSource>(
      new FanotifyMountSource(std::move(options), std::move(*fan), std::move(*table), ns_id));
}

FanotifyMountSource::FanotifyMountSource(Options options, UniqueFd fan,
                                         std::unique_ptr<ProcMountTable> mountinfo, uint64_t ns_id)
    : options_(std::move(options)), fan_(std::move(fan)), mountinfo_(std::move(mountinfo)), api_(ns_id) {}

FanotifyMountSource::~FanotifyMountSource() {
  if (!loop_) return;
  loop_->remove_fd(fan_.get());
  loop_->remove_fd(mountinfo_->poll_fd());
  if (check_timer_) loop_->cancel_timer(*check_timer_);
}

Result<void> FanotifyMountSource::start(EventLoop& loop, Sink sink) {
  sink_ = std::move(sink);
  if (auto r = loop.add_fd(fan_.get(), EPOLLIN, [this](uint32_t) { on_fanotify(); }); !r) return r;
  loop_ = &loop;
  if (auto r = loop.add_fd(mountinfo_->poll_fd(), EPOLLPRI | EPOLLERR, [this](uint32_t) { on_wake(); }); !r) {
    loop.remove_fd(fan_.get());
    loop_ = nullptr;
    return r;
  }
  // The mark is in place before the table is read: a change in between is both in the table and
  // in the queue, and applying it again finds nothing new.
  auto table = snapshot();
  if (!table) return fail(table.error());
  if (auto text = mountinfo_->read(); text) (void)scan_diff_.update(*text);
  sink_(std::move(*table));
  return {};
}

void FanotifyMountSource::refresh() {
  on_fanotify();
  scan();
}

std::optional<MountEntry> FanotifyMountSource::stat(uint64_t id) {
  ++stats_.statmounts;
  auto m = api_.stat(id);
  if (m) return std::move(*m);
  // ENOENT: detached again before we asked; its detach notification follows.
  if (m.error().errno_value() != ENOENT) sink_(fail(m.error()));
  return std::nullopt;
}

void FanotifyMountSource::remember(const MountEntry& m) {
  known_[m.unique_id] = m;
  by_old_[m.mnt_id] = m.unique_id;
  by_dev_[dev_key(m)].insert(m.unique_id);
  for (const auto& f : m.optional_fields)
    if (f.starts_with("shared:")) ++groups_[f];
}

void FanotifyMountSource::forget(const MountEntry& m) {
  if (auto it = by_old_.find(m.mnt_id); it != by_old_.end() && it->second == m.unique_id) by_old_.erase(it);
  if (auto it = by_dev_.find(dev_key(m)); it != by_dev_.end()) {
    it->second.erase(m.unique_id);
    if (it->second.empty()) by_dev_.erase(it);
  }
  for (const auto& f : m.optional_fields) {
    auto it = groups_.find(f);
    if (it != groups_.end() && --it->second == 0) groups_.erase(it);
  }
  known_.erase(m.unique_id);
}

void FanotifyMountSource::note_change(const MountEntry& old_m, const MountEntry& new_m, MountChanges& c) {
  if (same_state(old_m, new_m)) return;
  if (old_m.mount_point == new_m.mount_point && old_m.major == new_m.major && old_m.minor == new_m.minor &&
      old_m.mnt_id == new_m.mnt_id) {
    c.changed.emplace_back(old_m, new_m);
  } else {
    c.detached.push_back(old_m);
    c.attached.push_back(new_m);
  }
  MountEntry keep_old = old_m;  // old_m may live in known_
  forget(keep_old);
  remember(new_m);
}

void FanotifyMountSource::recheck_filesystem(const MountEntry& m, MountChanges& c) {
  bool new_group = false;
  for (const auto& f : m.optional_fields)
    if (f.starts_with("shared:") && !groups_.count(f)) new_group = true;
  if (!new_group) return;
  auto it = by_dev_.find(dev_key(m));
  if (it == by_dev_.end()) return;
  std::vector<uint64_t> ids(it->second.begin(), it->second.end());
  for (uint64_t id : ids) {
    auto k = known_.find(id);
    if (k == known_.end() || id == m.unique_id) continue;
    auto fresh = stat(id);
    if (!fresh) continue;
    MountEntry old_m = k->second;
    note_change(old_m, *fresh, c);
  }
}

void FanotifyMountSource::on_fanotify() {
  MountChanges c;
  c.source = "fanotify";
  bool lost = false;
  for (;;) {
    ssize_t n = ::read(fan_.get(), buf_.data(), buf_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) sink_(fail_errno(errno, "reading mount notifications"));
      break;
    }
    if (n == 0) break;
    auto batch = parse_fanotify_mnt(std::span<const unsigned char>(buf_.data(), static_cast<size_t>(n)));
    if (!batch) {
      sink_(fail(batch.error()));
      lost = true;
      break;
    }
    lost = lost || batch->overflow;
    stats_.notifications += batch->records.size();
    if (loop_ && !batch->records.empty()) {
      if (recent_reads_.size() >= kRecentReads) recent_reads_.pop_front();
      recent_reads_.emplace_back(loop_->clock().now(), batch->records.size());
    }
    for (const auto& r : batch->records) {
      auto known = known_.find(r.mnt_id);
      if (r.mask & mntapi::kFanMntAttach) {  // attach, or a move (both bits)
        auto m = stat(r.mnt_id);
        if (!m) continue;
        if (known == known_.end()) {
          recheck_filesystem(*m, c);
          remember(*m);
          c.attached.push_back(std::move(*m));
        } else {
          MountEntry old_m = known->second;
          note_change(old_m, *m, c);
        }
      } else if (r.mask & mntapi::kFanMntDetach) {
        if (known == known_.end()) continue;
        MountEntry old_m = std::move(known->second);
        forget(old_m);
        c.detached.push_back(std::move(old_m));
      }
    }
  }
  if (lost) {
    resync();
    return;
  }
  if (!c.empty()) sink_(std::move(c));
}

void FanotifyMountSource::on_wake() {
  ++stats_.wakes;
  ++wakes_pending_;
  if (check_timer_) return;  // coalesced into the check already due
  // Notifications read just before this wake-up may be its own (both fds were ready at once);
  // older ones belong to wake-ups already checked.
  MonoTime now = loop_->clock().now();
  uint64_t recent = 0;
  for (const auto& [at, n] : recent_reads_)
    if (at + options_.settle >= now) recent += n;
  recent_reads_.clear();
  notifications_at_check_ = stats_.notifications - recent;
  MonoTime when = std::max(now + options_.settle, next_scan_);
  check_timer_ = loop_->add_timer(when, [this] {
    check_timer_.reset();
    on_fanotify();
    // Every attach, detach or move gives at least one notification and at most one wake-up; a
    // remount gives a wake-up only. More wake-ups than notifications: something changed that
    // fanotify does not report.
    uint64_t notes = stats_.notifications - notifications_at_check_;
    bool unexplained = wakes_pending_ > notes;
    wakes_pending_ = 0;
    if (unexplained) scan();
  });
}

void FanotifyMountSource::scan() {
  uint64_t t0 = thread_cpu_ns();
  auto text = mountinfo_->read();
  if (!text) {
    sink_(fail(text.error()));
    return;
  }
  auto lines = scan_diff_.update(*text);
  MountChanges c;
  c.source = "mountinfo";
  if (lines && !lines->full) {
    // Lines new or different since the last scan (changed in place, or attached since: the
    // baseline does not follow the notifications). Where the line disagrees with what we know,
    // ask the mount itself, so the new state has the same form as the notifications'. Vanished
    // lines are fanotify's to report.
    auto check = [&](const MountEntry& line) {
      auto id = by_old_.find(line.mnt_id);
      if (id == by_old_.end()) return;
      auto k = known_.find(id->second);
      if (k == known_.end() || same_state(k->second, line)) return;
      auto fresh = stat(id->second);
      if (!fresh) return;
      MountEntry old_m = k->second;
      note_change(old_m, *fresh, c);
    };
    for (const auto& [old_line, new_line] : lines->changed) check(new_line);
    for (const auto& line : lines->attached) check(line);
  }
  uint64_t cost = thread_cpu_ns() - t0;
  ++stats_.scans;
  stats_.scan_cpu_ns += cost;
  auto gap = std::max<std::chrono::nanoseconds>(options_.min_scan_gap,
                                                std::chrono::nanoseconds(cost * options_.scan_budget));
  next_scan_ = loop_ ? loop_->clock().now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(gap)
                     : MonoTime{};
  if (!lines) sink_(fail(lines.error()));
  if (!c.empty()) sink_(std::move(c));
}

Result<MountChanges> FanotifyMountSource::snapshot() {
  auto ids = api_.list();
  if (!ids) return fail(ids.error());
  known_.clear();
  by_old_.clear();
  by_dev_.clear();
  groups_.clear();
  MountChanges c;
  c.full = true;
  c.source = "fanotify";
  c.attached.reserve(ids->size());
  for (uint64_t id : *ids) {
    auto m = stat(id);
    if (!m) continue;
    remember(*m);
    c.attached.push_back(std::move(*m));
  }
  return c;
}

void FanotifyMountSource::resync() {
  ++stats_.resyncs;
  auto table = snapshot();
  if (!table) {
    sink_(fail(table.error()));
    return;
  }
  table->resync = true;
  if (auto text = mountinfo_->read(); text) (void)scan_diff_.update(*text);
  sink_(std::move(*table));
}

}  // namespace storwatch::daemon
