#include "daemon/source/space_monitor.h"

#include "base/log.h"

namespace storwatch::daemon {

FsRef fs_ref(const Filesystem& fs) {
  FsRef r;
  r.major = fs.major;
  r.minor = fs.minor;
  r.fstype = fs.fstype;
  r.source = fs.source;
  r.mounts = fs.mounts;
  return r;
}

struct SpaceMonitor::FsState {
  Filesystem fs;
  std::string key;  // persisted identity: the first mount point
  std::vector<Level> levels;
  ThresholdMachine machine;
  PollScheduler scheduler;
  Status status;
  EventLoop::TimerId poll_timer = 0;
  EventLoop::TimerId timeout_timer = 0;
  uint64_t generation = 0;  // of the request in flight
  bool in_flight = false;
  bool restored = false;
  bool zero_blocks = false;  // space.enospc sent for blocks; re-armed when space returns
  bool zero_inodes = false;
  // Until then the eBPF probe's space.enospc stands for the statfs-based one (enospc_reported).
  MonoTime probe_blocks_until{}, probe_inodes_until{};
  explicit FsState(PollScheduler::Config c) : scheduler(c) {}
};

SpaceMonitor::SpaceMonitor(EventLoop& loop, StatfsRunner& runner, StateDb* db,
                           std::function<void(Event)> emit, Options options)
    : loop_(loop), runner_(runner), db_(db), emit_(std::move(emit)), options_(options) {
  if (db_) {
    auto crossed = db_->load_crossed();
    if (crossed)
      persisted_ = std::move(*crossed);
    else
      log_warning("loading crossed levels: {}", crossed.error().message());
  }
}

SpaceMonitor::~SpaceMonitor() {
  for (auto& [dev, s] : fss_) {
    loop_.cancel_timer(s->poll_timer);
    loop_.cancel_timer(s->timeout_timer);
  }
}

const SpaceMonitor::Status* SpaceMonitor::status(const std::string& dev) const {
  auto it = fss_.find(dev);
  return it == fss_.end() ? nullptr : &it->second->status;
}

void SpaceMonitor::enospc_reported(const std::string& dev, bool inodes) {
  auto it = fss_.find(dev);
  if (it == fss_.end()) return;
  // Marked as already sent (process() re-arms it when statfs sees free space again), and for a
  // while also when a poll between two failures saw a little space: the filesystem's own
  // accounting (btrfs metadata, xfs reserves, delayed allocation) is not exactly statfs'.
  FsState& s = *it->second;
  (inodes ? s.zero_inodes : s.zero_blocks) = true;
  (inodes ? s.probe_inodes_until : s.probe_blocks_until) = loop_.clock().now() + kProbeFold;
}

void SpaceMonitor::sync(const std::vector<std::pair<Filesystem, Plan>>& plans) {
  std::set<std::string> keep;
  for (const auto& [fs, plan] : plans) {
    if (!plan.thresholds || plan.levels.empty()) continue;
    std::string dev = fs.dev();
    keep.insert(dev);
    auto& slot = fss_[dev];
    bool fresh = !slot;
    if (fresh) slot = std::make_unique<FsState>(PollScheduler::Config{options_.poll_min, options_.poll_max});
    FsState& s = *slot;
    s.fs = fs;
    if (fresh || s.levels != plan.levels) {
      s.levels = plan.levels;
      s.machine.set_levels(plan.levels);
      s.status.levels = plan.levels;
      // New levels may already be crossed: look now rather than at the old, maybe long, interval.
      if (!fresh && !s.in_flight) schedule(s, std::chrono::milliseconds(0));
    }
    if (fresh) {
      s.key = fs.mounts.empty() ? dev : fs.mounts.front();
      std::set<std::string> ids;
      for (const auto& [k, id] : persisted_)
        if (k == s.key) ids.insert(id);
      s.machine.restore_crossed(ids);
      s.status.crossed = s.machine.crossed();
      schedule(s, std::chrono::milliseconds(0));
    }
  }
  for (auto it = fss_.begin(); it != fss_.end();) {
    if (keep.count(it->first)) {
      ++it;
      continue;
    }
    loop_.cancel_timer(it->second->poll_timer);
    loop_.cancel_timer(it->second->timeout_timer);
    runner_.forget(it->first);
    it = fss_.erase(it);
  }
}

void SpaceMonitor::schedule(FsState& s, std::chrono::milliseconds delay) {
  loop_.cancel_timer(s.poll_timer);
  std::string dev = s.fs.dev();
  s.poll_timer = loop_.add_timer_after(delay, [this, dev] { poll(dev); });
}

void SpaceMonitor::poll(const std::string& dev) {
  auto it = fss_.find(dev);
  if (it == fss_.end()) return;
  FsState& s = *it->second;
  s.poll_timer = 0;
  if (s.in_flight) return;  // the answer reschedules
  uint64_t gen = next_generation_++;
  const std::string& path = s.fs.probe_path.empty() ? s.fs.mounts.front() : s.fs.probe_path;
  if (!runner_.request(dev, path, [this, dev, gen](Result<Usage> r) { on_result(dev, gen, std::move(r)); }))
    return;  // a previous call is still stuck in the kernel; its answer reschedules
  s.in_flight = true;
  s.generation = gen;
  s.timeout_timer = loop_.add_timer_after(options_.statfs_timeout, [this, dev, gen] { on_timeout(dev, gen); });
}

void SpaceMonitor::on_timeout(const std::string& dev, uint64_t generation) {
  auto it = fss_.find(dev);
  if (it == fss_.end()) return;
  FsState& s = *it->second;
  s.timeout_timer = 0;
  if (!s.in_flight || s.generation != generation || s.status.stale) return;
  s.status.stale = true;
  Event e = make_event(s, "fs.unresponsive", Severity::warning);
  e.detail = {{"timeout_ms", options_.statfs_timeout.count()},
              {"path", s.fs.probe_path}};
  emit_(std::move(e));
}

void SpaceMonitor::on_result(const std::string& dev, uint64_t generation, Result<Usage> r) {
  auto it = fss_.find(dev);
  if (it == fss_.end()) return;
  FsState& s = *it->second;
  if (!s.in_flight || s.generation != generation) return;
  s.in_flight = false;
  loop_.cancel_timer(s.timeout_timer);
  s.timeout_timer = 0;
  if (s.status.stale) {
    s.status.stale = false;
    Event e = make_event(s, "fs.responsive", Severity::info);
    emit_(std::move(e));
  }
  if (!r) {
    // Typically a race with umount; the mount table update removes the filesystem soon.
    log_debug("statfs {}: {}", s.fs.probe_path, r.error().message());
    schedule(s, options_.poll_max);
    return;
  }
  process(s, *r);
  if (fss_.count(dev)) schedule(s, s.scheduler.next(loop_.clock().now(), *r, s.levels));
}

Event SpaceMonitor::make_event(const FsState& s, std::string type, Severity sev) {
  Event e;
  e.type = std::move(type);
  e.severity = sev;
  e.source = "statfs";
  e.fs = fs_ref(s.fs);
  return e;
}

void SpaceMonitor::process(FsState& s, const Usage& u) {
  s.status.usage = u;
  s.status.sampled = loop_.clock().wall_now();
  for (const auto& c : s.machine.update(u)) {
    Event e = make_event(s, "space.threshold", c.below ? c.severity : Severity::info);
    e.detail = {{"resource", resource_name(c.resource)},
                {"level", c.level_text},
                {"level_id", c.level_id},
                {"level_severity", severity_name(c.severity)},
                {"direction", c.below ? "below" : "above"}};
    if (c.resource == Resource::blocks) {
      e.detail["avail"] = u.bavail;
      e.detail["total"] = u.blocks;
      e.detail["block_size"] = u.frsize;
      e.detail["avail_bytes"] = c.avail;
      e.detail["total_bytes"] = c.total;
      e.detail["level_bytes"] = c.level;
    } else {
      e.detail["avail"] = u.favail;
      e.detail["total"] = u.files;
      e.detail["level_inodes"] = c.level;
    }
    emit_(std::move(e));
  }
  s.status.crossed = s.machine.crossed();
  persist_crossed(s);

  // "No space left" as statfs sees it: edge-triggered, re-armed once space is available again.
  const MonoTime now = loop_.clock().now();
  auto zero = [&](bool now_zero, bool& flag, const char* kind, uint64_t total, MonoTime probe_until) {
    if (now_zero && !flag && total > 0 && now >= probe_until) {
      Event e = make_event(s, "space.enospc", Severity::error);
      e.detail = {{"kind", kind}, {"avail", 0}, {"total", total}};
      if (std::string(kind) == "data") e.detail["block_size"] = u.frsize;
      emit_(std::move(e));
    }
    flag = now_zero;
  };
  zero(u.blocks > 0 && u.bavail == 0, s.zero_blocks, "data", u.blocks, s.probe_blocks_until);
  zero(u.files > 0 && u.favail == 0, s.zero_inodes, "inodes", u.files, s.probe_inodes_until);
}

void SpaceMonitor::persist_crossed(FsState& s) {
  if (!db_) return;
  const auto& now = s.status.crossed;
  for (auto it = persisted_.begin(); it != persisted_.end();) {
    if (it->first == s.key && !now.count(it->second)) {
      if (auto r = db_->set_crossed(s.key, it->second, false); !r)
        log_warning("saving crossed levels: {}", r.error().message());
      it = persisted_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& id : now) {
    if (persisted_.emplace(s.key, id).second) {
      if (auto r = db_->set_crossed(s.key, id, true); !r)
        log_warning("saving crossed levels: {}", r.error().message());
    }
  }
}

}  // namespace storwatch::daemon
