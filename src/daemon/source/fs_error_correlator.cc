#include "daemon/source/fs_error_correlator.h"

#include <cstring>

#include "base/log.h"
#include "base/time_format.h"

namespace storwatch::daemon {

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

bool ext_family(const std::string& fstype) { return fstype == "ext4" || fstype == "ext3" || fstype == "ext2"; }

// A kmsg line and a fanotify report may describe the same error unless both name an inode and
// the inodes differ (or both name an errno and they differ).
bool compatible(const FsErrorReport& a, const FsErrorReport& b) {
  if (a.inode && b.inode && *a.inode != *b.inode) return false;
  if (a.err && b.err && a.err != b.err) return false;
  return true;
}

// Mount-table checks after an error, relative to the previous one: 5 ms, 50 ms, 250 ms, 1 s.
constexpr milliseconds kMountCheckSteps[] = {milliseconds(5), milliseconds(45), milliseconds(200),
                                             milliseconds(750)};
constexpr seconds kMountCheckCooldown{10};
constexpr seconds kRecentError{5};      // a remount to ro this soon after an error: cause errors
constexpr seconds kKmsgAttribution{10};  // an unattributed "suppressed" line belongs to the last
constexpr seconds kRetiredKeep{60};      // removed filesystems kept for late reports
constexpr size_t kRetiredMax = 64;

}  // namespace

const char* FsErrorCorrelator::health_name(Health h) {
  switch (h) {
    case Health::ok: return "ok";
    case Health::errors: return "errors";
    case Health::readonly: return "readonly";
    case Health::shutdown: return "shutdown";
  }
  return "ok";
}

struct FsErrorCorrelator::FsState {
  FsRef ref;
  bool removed = false;
  MonoTime removed_at{};
  uint64_t errors = 0;  // reported this run (status)
  bool readonly = false, shut = false;
  std::string ro_cause;
  WallTime down_wall{};
  uint64_t since_down = 0;
  int since_down_errno = 0;
  bool fanotify_seen = false;
  // Ledger against the filesystem's own counter.
  bool has_counter = false;
  uint64_t counter_seen = 0, counted = 0;
  EventLoop::TimerId reconcile_timer = 0;
  // kmsg "callbacks suppressed" not yet given to an event.
  uint64_t suppressed = 0;
  EventLoop::TimerId suppressed_timer = 0;
  // A kmsg detail no fanotify report claimed in time, for the next one.
  std::optional<FsErrorReport> orphan;
  MonoTime orphan_until{};
  std::string expect_cause;  // the kernel log said read-only/shutdown; mountinfo not yet
  EventLoop::TimerId expect_timer = 0;
  MonoTime last_error{};
  bool any_error = false;
  MonoTime last_mount_check{};
  bool mount_checked = false;
};

struct FsErrorCorrelator::Pending {
  uint64_t id = 0;
  std::string dev;
  bool fanotify = false;  // a fanotify report (its count is the kernel's)
  bool counts = false;    // kmsg line that counts (fanotify does not count this filesystem)
  bool kmsg = false;      // kmsg details attached
  bool unexplained = false;
  uint64_t kmsg_lines = 0;
  uint64_t count = 0;
  uint64_t suppressed = 0;
  FsErrorReport r;  // errno, inode, path, function, line, comm, message
  std::set<std::string> sources;
  MonoTime first{}, last{};
  EventLoop::TimerId timer = 0;
};

FsErrorCorrelator::FsErrorCorrelator(EventLoop& loop, Hooks hooks, Options options)
    : loop_(loop), hooks_(std::move(hooks)), options_(options) {}

FsErrorCorrelator::~FsErrorCorrelator() {
  for (auto& p : pending_) loop_.cancel_timer(p.timer);
  for (auto& [dev, st] : fss_) {
    loop_.cancel_timer(st->reconcile_timer);
    loop_.cancel_timer(st->suppressed_timer);
    loop_.cancel_timer(st->expect_timer);
  }
  loop_.cancel_timer(mount_checks_);
}

WallTime FsErrorCorrelator::wall(MonoTime t) const {
  const Clock& c = loop_.clock();
  if (t == MonoTime{}) return c.wall_now();
  return c.wall_now() - std::chrono::duration_cast<WallTime::duration>(c.now() - t);
}

FsErrorCorrelator::FsState& FsErrorCorrelator::state(const std::string& dev) {
  auto& slot = fss_[dev];
  if (!slot) {
    slot = std::make_unique<FsState>();
    if (hooks_.fs_ref)
      if (auto ref = hooks_.fs_ref(dev)) slot->ref = std::move(*ref);
  }
  return *slot;
}

std::optional<std::string> FsErrorCorrelator::resolve(const FsErrorReport& r) {
  std::optional<std::string> dev;
  if (r.sb_dev) {
    dev = std::to_string(r.sb_dev->first) + ":" + std::to_string(r.sb_dev->second);
  } else if (!r.device_name.empty() && hooks_.resolve_device) {
    dev = hooks_.resolve_device(r.device_name);
  } else if (r.kind == FsErrorReport::Kind::suppressed && !last_kmsg_dev_.empty() &&
             loop_.clock().now() - last_kmsg_at_ < kKmsgAttribution) {
    dev = last_kmsg_dev_;  // the kernel did not say which filesystem: the one that just spoke
  }
  if (!dev) return std::nullopt;
  // Known (or recently removed) filesystems keep their state; others must be watched now.
  auto it = fss_.find(*dev);
  if (it != fss_.end()) {
    if (!it->second->removed && hooks_.fs_ref)
      if (auto ref = hooks_.fs_ref(*dev)) it->second->ref = std::move(*ref);
    return dev;
  }
  if (!hooks_.fs_ref || !hooks_.fs_ref(*dev)) return std::nullopt;
  return dev;
}

bool FsErrorCorrelator::fanotify_counts(const std::string& dev, const FsState& st) const {
  if (!hooks_.fanotify_marked || !hooks_.fanotify_marked(dev)) return false;
  return st.fanotify_seen || ext_family(st.ref.fstype);
}

void FsErrorCorrelator::report(FsErrorReport r) {
  auto dev = resolve(r);
  if (!dev) {
    log_debug("fs errors: {} report from {} about {} ignored: not a watched filesystem",
              static_cast<int>(r.kind), r.source, r.device_name);
    return;
  }
  if (r.when == MonoTime{}) r.when = loop_.clock().now();
  switch (r.kind) {
    case FsErrorReport::Kind::error: on_error(*dev, std::move(r)); break;
    case FsErrorReport::Kind::suppressed: on_suppressed(*dev, r); break;
    case FsErrorReport::Kind::readonly: on_readonly(*dev, r); break;
    case FsErrorReport::Kind::shutdown: on_shutdown(*dev, r); break;
    case FsErrorReport::Kind::writable: on_writable(*dev, r); break;
  }
}

void FsErrorCorrelator::on_error(const std::string& dev, FsErrorReport r) {
  FsState& st = state(dev);
  if (r.source == "sysfs") {  // a counter's increase: the ledger decides
    st.has_counter = true;
    st.counter_seen += r.count;
    schedule_reconcile(dev);
    return;
  }
  const bool fan = r.source == "fanotify";
  st.last_error = r.when;
  st.any_error = true;
  if (fan) st.fanotify_seen = true;
  if (r.source == "kmsg") {
    last_kmsg_dev_ = dev;
    last_kmsg_at_ = r.when;
  }
  const bool counts = fan || !fanotify_counts(dev, st);
  uint64_t n = 0;
  if (counts) {
    n = fan ? r.count : 1 + st.suppressed;
    if (!fan && st.suppressed) {
      loop_.cancel_timer(st.suppressed_timer);
      st.suppressed_timer = 0;
    }
    st.counted += n;
  }
  uint64_t carried = fan ? 0 : (counts ? st.suppressed : 0);
  if (counts && !fan) st.suppressed = 0;
  schedule_reconcile(dev);
  if ((st.readonly || st.shut) && !st.removed) {
    if (counts) count_down(st, n, r.err);
    return;
  }
  check_mounts(dev);

  if (fan) {
    for (auto& p : pending_) {
      if (p.dev == dev && p.fanotify && p.r.err == r.err && p.r.inode == r.inode) {
        p.count += r.count;
        p.last = r.when;
        if (p.r.path.empty()) p.r.path = r.path;
        return;
      }
    }
    for (auto& p : pending_) {
      if (p.dev == dev && !p.fanotify && compatible(p.r, r)) {
        // A kmsg line waited for this report: fanotify's count replaces the line's.
        if (p.counts) st.counted -= p.count;
        p.fanotify = true;
        p.counts = false;
        p.count = r.count;
        p.r.err = r.err;
        if (r.inode) p.r.inode = r.inode;
        p.r.path = r.path;
        p.sources.insert("fanotify");
        p.last = std::max(p.last, r.when);
        return;
      }
    }
    Pending& p = hold(dev, r, true);
    p.count = r.count;
    if (st.orphan && loop_.clock().now() < st.orphan_until && compatible(*st.orphan, r)) {
      attach_kmsg(p, *st.orphan);
      st.orphan.reset();
    }
    return;
  }

  // A kernel-log line.
  for (auto& p : pending_) {
    if (p.dev == dev && p.fanotify && !p.kmsg && compatible(p.r, r)) {
      attach_kmsg(p, r);
      return;
    }
  }
  for (auto& p : pending_) {
    if (p.dev == dev && p.fanotify && compatible(p.r, r)) {
      ++p.kmsg_lines;
      return;
    }
  }
  if (!counts) {
    hold(dev, r, false);  // details only: waits for fanotify's report
    return;
  }
  Pending tmp;
  tmp.dev = dev;
  tmp.counts = true;
  tmp.count = n;
  tmp.suppressed = carried;
  tmp.r = r;
  tmp.kmsg = true;
  tmp.kmsg_lines = 1;
  tmp.sources.insert(r.source);
  tmp.first = tmp.last = r.when;
  if (hooks_.fanotify_marked && hooks_.fanotify_marked(dev)) {
    // Marked, but this filesystem has not reported through fanotify (yet): hold it in case it does.
    Pending& p = hold(dev, r, false);
    p.counts = true;
    p.count = n;
    p.suppressed = carried;
    p.kmsg = true;
    p.kmsg_lines = 1;
    return;
  }
  send_error(dev, tmp);
}

void FsErrorCorrelator::on_suppressed(const std::string& dev, const FsErrorReport& r) {
  FsState& st = state(dev);
  if (fanotify_counts(dev, st)) return;  // fanotify counted them
  if (hooks_.read_counter) {
    if (auto d = hooks_.read_counter(dev)) {
      st.has_counter = true;
      st.counter_seen += *d;
    }
  }
  if (st.has_counter) {  // the counter covers what the log left out
    schedule_reconcile(dev);
    return;
  }
  st.suppressed += r.count;
  if (st.suppressed_timer) return;
  st.suppressed_timer = loop_.add_timer_after(options_.hold, [this, dev] {
    FsState& s = state(dev);
    s.suppressed_timer = 0;
    if (!s.suppressed) return;
    uint64_t n = s.suppressed;
    s.suppressed = 0;
    s.counted += n;
    if ((s.readonly || s.shut) && !s.removed) {
      count_down(s, n, 0);
      return;
    }
    Pending p;
    p.dev = dev;
    p.count = n;
    p.suppressed = n;
    p.r.source = "kmsg";
    p.r.message = "errors the kernel log did not print (callbacks suppressed)";
    p.sources.insert("kmsg");
    p.first = p.last = loop_.clock().now();
    send_error(dev, p);
  });
}

FsErrorCorrelator::Pending& FsErrorCorrelator::hold(const std::string& dev, const FsErrorReport& r, bool fanotify) {
  if (pending_.size() >= options_.max_pending) release(pending_.begin());
  Pending p;
  p.id = next_id_++;
  p.dev = dev;
  p.fanotify = fanotify;
  p.r = r;
  p.first = p.last = r.when;
  p.sources.insert(r.source);
  if (!fanotify) {
    p.kmsg = true;
    p.kmsg_lines = 1;
  }
  uint64_t id = p.id;
  p.timer = loop_.add_timer_after(options_.hold, [this, id] { expire(id); });
  pending_.push_back(std::move(p));
  return pending_.back();
}

void FsErrorCorrelator::attach_kmsg(Pending& p, const FsErrorReport& k) {
  p.kmsg = true;
  ++p.kmsg_lines;
  p.sources.insert("kmsg");
  if (!p.r.inode && k.inode) p.r.inode = k.inode;
  if (!p.r.err && k.err) p.r.err = k.err;
  p.r.function = k.function;
  p.r.line = k.line;
  p.r.comm = k.comm;
  p.r.message = k.message;
  if (p.r.path.empty()) p.r.path = k.path;
}

void FsErrorCorrelator::expire(uint64_t id) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->id != id) continue;
    it->timer = 0;
    if (it->fanotify || it->counts) {
      release(it);
    } else {
      // Details nobody claimed: keep them a while for the next fanotify report.
      FsState& st = state(it->dev);
      st.orphan = it->r;
      st.orphan_until = loop_.clock().now() + options_.detail_keep;
      pending_.erase(it);
    }
    return;
  }
}

void FsErrorCorrelator::release(std::list<Pending>::iterator it) {
  loop_.cancel_timer(it->timer);
  Pending p = std::move(*it);
  pending_.erase(it);
  if (p.fanotify || p.counts) send_error(p.dev, p);
}

void FsErrorCorrelator::release_all(const std::string& dev) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    auto next = std::next(it);
    if (it->dev == dev) release(it);
    it = next;
  }
}

Event FsErrorCorrelator::make_event(const std::string& dev, FsState& st, const char* type, Severity sev,
                                    const std::string& source) {
  Event e;
  e.type = type;
  e.severity = sev;
  e.source = source;
  if (st.ref.major == 0 && st.ref.minor == 0) {
    auto colon = dev.find(':');
    st.ref.major = static_cast<uint32_t>(std::stoul(dev.substr(0, colon)));
    st.ref.minor = static_cast<uint32_t>(std::stoul(dev.substr(colon + 1)));
  }
  e.fs = st.ref;
  return e;
}

void FsErrorCorrelator::send_error(const std::string& dev, const Pending& p) {
  if (p.count == 0) return;
  FsState& st = state(dev);
  st.errors += p.count;
  std::string source = p.fanotify ? "fanotify" : (p.sources.empty() ? p.r.source : *p.sources.begin());
  if (p.unexplained) source = "sysfs";
  Event e = make_event(dev, st, "fs.error", Severity::error, source);
  e.count = p.count;
  e.first_time = wall(p.first);
  e.last_time = wall(p.last);
  auto& d = e.detail;
  if (p.r.err) {
    d["errno"] = p.r.err;
    if (const char* name = ::strerrorname_np(p.r.err)) d["error"] = name;
  }
  if (p.r.inode) d["inode"] = *p.r.inode;
  if (!p.r.path.empty()) d["path"] = p.r.path;
  if (!p.r.function.empty()) d["function"] = p.r.function;
  if (p.r.line) d["line"] = p.r.line;
  if (!p.r.comm.empty()) d["comm"] = p.r.comm;
  if (!p.r.message.empty()) d["message"] = p.r.message;
  if (p.suppressed) d["suppressed"] = p.suppressed;
  if (p.kmsg_lines > 1) d["kmsg_lines"] = p.kmsg_lines;
  if (p.unexplained) d["unexplained"] = true;
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& s : p.sources) sources.push_back(s);
  d["sources"] = sources;
  d["error_count"] = st.errors;
  if (hooks_.emit) hooks_.emit(std::move(e));
}

void FsErrorCorrelator::count_down(FsState& st, uint64_t n, int err) {
  st.since_down += n;
  if (!st.since_down_errno) st.since_down_errno = err;
}

void FsErrorCorrelator::send_summary(const std::string& dev, FsState& st, const std::string& why) {
  uint64_t n = st.since_down;
  int err = st.since_down_errno;
  std::string message = std::string("errors while the filesystem was ") + (st.shut ? "shut down" : "read-only");
  st.since_down = 0;
  st.since_down_errno = 0;
  st.errors += n;
  Event e = make_event(dev, st, "fs.error", Severity::error, "correlator");
  e.count = n;
  e.first_time = st.down_wall;
  e.last_time = loop_.clock().wall_now();
  auto& d = e.detail;
  d["summary"] = true;
  d["until"] = why;
  d["since"] = format_time(st.down_wall);
  if (err) {
    d["errno"] = err;
    if (const char* name = ::strerrorname_np(err)) d["error"] = name;
  }
  d["message"] = message;
  d["error_count"] = st.errors;
  if (hooks_.emit) hooks_.emit(std::move(e));
}

void FsErrorCorrelator::go_down(const std::string& dev, bool shutdown, const std::string& cause,
                                const FsErrorReport& r) {
  FsState& st = state(dev);
  release_all(dev);  // errors held now happened before: they go out first, one by one
  bool was_down = st.readonly || st.shut;
  if (!was_down) {
    st.down_wall = loop_.clock().wall_now();
    st.since_down = 0;
    st.since_down_errno = 0;
  }
  if (shutdown && !st.shut) {
    st.shut = true;
    Event e = make_event(dev, st, "fs.shutdown", Severity::critical, r.source.empty() ? "kmsg" : r.source);
    if (!r.message.empty()) e.detail["message"] = r.message;
    if (!r.function.empty()) e.detail["function"] = r.function;
    if (r.err) e.detail["errno"] = r.err;
    if (hooks_.emit) hooks_.emit(std::move(e));
  }
  if (!cause.empty() && !st.readonly) {
    st.readonly = true;
    st.ro_cause = cause;
    loop_.cancel_timer(st.expect_timer);
    st.expect_timer = 0;
    st.expect_cause.clear();
    Event e = make_event(dev, st, "fs.readonly", Severity::critical, r.source.empty() ? "kmsg" : r.source);
    e.detail["cause"] = cause;
    if (!r.message.empty()) e.detail["message"] = r.message;
    if (hooks_.emit) hooks_.emit(std::move(e));
  }
}

void FsErrorCorrelator::expect_readonly(const std::string& dev, const std::string& cause) {
  FsState& st = state(dev);
  if (st.readonly) return;
  st.expect_cause = cause;
  st.mount_checked = false;  // ask the mount table now, whatever the cooldown
  check_mounts(dev);
  if (st.expect_timer) return;
  st.expect_timer = loop_.add_timer_after(options_.readonly_wait, [this, dev] {
    FsState& s = state(dev);
    s.expect_timer = 0;
    if (s.readonly || s.removed || s.expect_cause.empty()) return;
    FsErrorReport r;
    r.source = "kmsg";
    r.message = "the kernel log says so; the mount table does not show it";
    std::string why = s.expect_cause;  // a copy: go_down() clears expect_cause
    go_down(dev, false, why, r);
  });
}

void FsErrorCorrelator::on_readonly(const std::string& dev, const FsErrorReport& r) {
  FsState& st = state(dev);
  if (st.readonly) return;
  if (r.source != "mountinfo") {
    expect_readonly(dev, r.cause.empty() ? "errors" : r.cause);
    return;
  }
  std::string cause = r.cause.empty() ? "remount" : r.cause;
  if (cause == "remount") {
    // Older kernels set "ro" themselves after errors=remount-ro.
    if (!st.expect_cause.empty())
      cause = st.expect_cause;
    else if (st.any_error && loop_.clock().now() - st.last_error < kRecentError)
      cause = "errors";
  }
  go_down(dev, false, cause, r);
}

void FsErrorCorrelator::on_shutdown(const std::string& dev, const FsErrorReport& r) {
  FsState& st = state(dev);
  if (st.shut) return;
  if (ext_family(st.ref.fstype)) {
    // ext4's journal abort: the mount table may yet say emergency_ro, the better cause.
    go_down(dev, true, "", r);
    expect_readonly(dev, "shutdown");
    return;
  }
  go_down(dev, true, "shutdown", r);
}

void FsErrorCorrelator::recover(const std::string& dev, const std::string& source) {
  FsState& st = state(dev);
  if (!st.readonly && !st.shut) return;
  release_all(dev);
  if (st.since_down > 0) send_summary(dev, st, "writable");
  st.readonly = st.shut = false;
  st.ro_cause.clear();
  st.expect_cause.clear();
  loop_.cancel_timer(st.expect_timer);
  st.expect_timer = 0;
  Event e = make_event(dev, st, "fs.writable", Severity::info, source);
  if (hooks_.emit) hooks_.emit(std::move(e));
}

void FsErrorCorrelator::on_writable(const std::string& dev, const FsErrorReport& r) {
  recover(dev, r.source.empty() ? "mountinfo" : r.source);
}

void FsErrorCorrelator::filesystem_added(const std::string& dev, bool read_only) {
  auto it = fss_.find(dev);
  if (it != fss_.end() && it->second->removed) {
    bool was_down = it->second->readonly || it->second->shut;
    fss_.erase(it);  // a new superblock: nothing carries over
    FsState& st = state(dev);
    if (was_down && !read_only) {
      Event e = make_event(dev, st, "fs.writable", Severity::info, "mountinfo");
      e.detail["reason"] = "mounted again";
      if (hooks_.emit) hooks_.emit(std::move(e));
    }
    return;
  }
  FsState& st = state(dev);
  if (hooks_.fs_ref)
    if (auto ref = hooks_.fs_ref(dev)) st.ref = std::move(*ref);
}

void FsErrorCorrelator::filesystem_removed(const std::string& dev) {
  auto it = fss_.find(dev);
  if (it == fss_.end() || it->second->removed) return;
  FsState& st = *it->second;
  release_all(dev);
  if (st.suppressed) {
    Pending p;
    p.dev = dev;
    p.count = st.suppressed;
    p.suppressed = st.suppressed;
    p.r.message = "errors the kernel log did not print (callbacks suppressed)";
    p.sources.insert("kmsg");
    p.first = p.last = loop_.clock().now();
    st.counted += st.suppressed;
    st.suppressed = 0;
    if (st.readonly || st.shut)
      count_down(st, p.count, 0);
    else
      send_error(dev, p);
  }
  if (st.since_down > 0) send_summary(dev, st, "unmounted");
  for (auto* t : {&st.reconcile_timer, &st.suppressed_timer, &st.expect_timer}) {
    loop_.cancel_timer(*t);
    *t = 0;
  }
  st.expect_cause.clear();
  st.removed = true;
  st.removed_at = loop_.clock().now();
  // Forget old removed filesystems.
  size_t retired = 0;
  for (auto j = fss_.begin(); j != fss_.end();) {
    if (j->second->removed && (loop_.clock().now() - j->second->removed_at > kRetiredKeep)) {
      j = fss_.erase(j);
      continue;
    }
    retired += j->second->removed ? 1 : 0;
    ++j;
  }
  while (retired > kRetiredMax) {
    auto oldest = fss_.end();
    for (auto j = fss_.begin(); j != fss_.end(); ++j)
      if (j->second->removed && (oldest == fss_.end() || j->second->removed_at < oldest->second->removed_at))
        oldest = j;
    if (oldest == fss_.end()) break;
    fss_.erase(oldest);
    --retired;
  }
}

void FsErrorCorrelator::schedule_reconcile(const std::string& dev) {
  FsState& st = state(dev);
  if (st.reconcile_timer || st.removed) return;
  st.reconcile_timer = loop_.add_timer_after(options_.settle, [this, dev] { reconcile(dev); });
}

void FsErrorCorrelator::reconcile(const std::string& dev) {
  FsState& st = state(dev);
  st.reconcile_timer = 0;
  if (st.removed) return;
  // Everything fanotify queued so far first: errors the counter shows were queued before it rose.
  uint64_t in_flight = hooks_.drain ? hooks_.drain(dev) : 0;
  if (hooks_.read_counter) {
    if (auto d = hooks_.read_counter(dev)) {
      st.has_counter = true;
      st.counter_seen += *d;
    }
  }
  if (!st.has_counter) return;
  uint64_t explained = st.counted + in_flight;
  if (st.counter_seen <= explained) return;
  uint64_t n = st.counter_seen - explained;
  st.counted += n;
  if (st.readonly || st.shut) {
    count_down(st, n, 0);
    return;
  }
  Pending p;
  p.dev = dev;
  p.count = n;
  p.unexplained = true;
  p.r.message = "errors the filesystem counted that neither fanotify nor the kernel log reported";
  p.sources.insert("sysfs");
  p.first = p.last = loop_.clock().now();
  send_error(dev, p);
}

void FsErrorCorrelator::check_mounts(const std::string& dev) {
  if (!hooks_.refresh_mounts) return;
  FsState& st = state(dev);
  MonoTime now = loop_.clock().now();
  if (st.mount_checked && now - st.last_mount_check < kMountCheckCooldown) return;
  st.mount_checked = true;
  st.last_mount_check = now;
  if (mount_checks_) {
    // A series is running: restart it so this error gets its full set of checks.
    loop_.cancel_timer(mount_checks_);
  }
  mount_check_step_ = 0;
  // The pending timer owns the series; the function refers to itself weakly (a strong capture of
  // itself was a cycle: every series leaked, found by LeakSanitizer).
  auto run = std::make_shared<std::function<void()>>();
  std::weak_ptr<std::function<void()>> weak = run;
  *run = [this, weak] {
    auto self = weak.lock();
    if (!self) return;
    mount_checks_ = 0;
    hooks_.refresh_mounts();
    if (++mount_check_step_ < static_cast<int>(std::size(kMountCheckSteps)))
      mount_checks_ = loop_.add_timer_after(kMountCheckSteps[mount_check_step_], [self] { (*self)(); });
  };
  mount_checks_ = loop_.add_timer_after(kMountCheckSteps[0], [run] { (*run)(); });
}

void FsErrorCorrelator::missed() {
  for (auto& [dev, st] : fss_)
    if (st->has_counter && !st->removed) schedule_reconcile(dev);
}

void FsErrorCorrelator::catch_up(FsErrorReport r, nlohmann::json detail) {
  auto dev = resolve(r);
  if (!dev || r.count == 0) return;
  FsState& st = state(*dev);
  st.errors += r.count;
  Event e = make_event(*dev, st, "fs.error", Severity::error, r.source.empty() ? "sysfs" : r.source);
  e.count = r.count;
  auto& d = e.detail;
  if (r.err) {
    d["errno"] = r.err;
    if (const char* name = ::strerrorname_np(r.err)) d["error"] = name;
  }
  if (r.inode) d["inode"] = *r.inode;
  if (!r.function.empty()) d["function"] = r.function;
  if (r.line) d["line"] = r.line;
  if (!r.message.empty()) d["message"] = r.message;
  if (detail.is_object())
    for (auto& [k, v] : detail.items()) d[k] = v;
  d["catch_up"] = true;
  d["error_count"] = st.errors;
  if (hooks_.emit) hooks_.emit(std::move(e));
}

void FsErrorCorrelator::flush() {
  // The counters once more, without waiting: what they show beyond the reports goes out now.
  for (auto& [dev, st] : fss_) {
    if (st->removed || !st->has_counter) continue;
    loop_.cancel_timer(st->reconcile_timer);
    reconcile(dev);
    loop_.cancel_timer(st->reconcile_timer);  // reconcile's drain may have scheduled another
    st->reconcile_timer = 0;
  }
  while (!pending_.empty()) {
    auto it = pending_.begin();
    if (!it->fanotify && !it->counts) {
      loop_.cancel_timer(it->timer);
      pending_.erase(it);
      continue;
    }
    release(it);
  }
  for (auto& [dev, st] : fss_) {
    if (st->removed) continue;
    if (st->suppressed) {
      loop_.cancel_timer(st->suppressed_timer);
      st->suppressed_timer = 0;
      uint64_t n = st->suppressed;
      st->suppressed = 0;
      st->counted += n;
      if (st->readonly || st->shut) {
        count_down(*st, n, 0);
      } else {
        Pending p;
        p.dev = dev;
        p.count = n;
        p.suppressed = n;
        p.r.message = "errors the kernel log did not print (callbacks suppressed)";
        p.sources.insert("kmsg");
        p.first = p.last = loop_.clock().now();
        send_error(dev, p);
      }
    }
    if (st->since_down > 0) send_summary(dev, *st, "stopped");
  }
}

FsErrorCorrelator::Health FsErrorCorrelator::health(const std::string& dev) const {
  auto it = fss_.find(dev);
  if (it == fss_.end() || it->second->removed) return Health::ok;
  const FsState& st = *it->second;
  if (st.shut) return Health::shutdown;
  if (st.readonly) return Health::readonly;
  if (st.errors > 0 || st.since_down > 0) return Health::errors;
  return Health::ok;
}

uint64_t FsErrorCorrelator::error_count(const std::string& dev) const {
  auto it = fss_.find(dev);
  if (it == fss_.end() || it->second->removed) return 0;
  return it->second->errors + it->second->since_down;
}

}  // namespace storwatch::daemon
