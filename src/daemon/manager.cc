#include "daemon/manager.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>
#include <fmt/format.h>

#include "base/log.h"
#include "base/time_format.h"
#include "daemon/mount/fanotify_mount_source.h"
#include "daemon/mount/mountinfo_source.h"
#include "daemon/probe/probes.h"
#include "daemon/sink/alertmanager_sink.h"
#include "daemon/sink/hook_sink.h"
#include "daemon/sink/journald_sink.h"
#include "daemon/sink/nats_sink.h"
#include "proto/filter.h"
#include "proto/varlink.h"

namespace storwatch::daemon {

using nlohmann::json;
namespace errs = proto::errors;

namespace {

// Lexically normalises an absolute path: no ".", "..", duplicate or trailing slashes. The CLI
// sends realpath()s; this only guards against sloppy input from other clients.
std::optional<std::string> normalise(const std::string& path) {
  if (path.empty() || path.front() != '/') return std::nullopt;
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string part = path.substr(i, j - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

bool under(const std::string& path, const std::string& prefix) {
  if (prefix == "/") return true;
  return path == prefix || (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
                            path[prefix.size()] == '/');
}

// "7:0" -> (7, 0): the form of mountinfo field 3, sysfs `dev` files and our "dev" fields.
std::optional<std::pair<uint32_t, uint32_t>> parse_dev(const std::string& dev) {
  unsigned maj = 0, min = 0;
  char tail = 0;
  if (std::sscanf(dev.c_str(), "%u:%u%c", &maj, &min, &tail) != 2) return std::nullopt;
  return std::pair<uint32_t, uint32_t>(maj, min);
}

VarlinkError invalid_param(std::string param, std::string reason) {
  return VarlinkError{errs::kInvalidParameter, {{"parameter", std::move(param)}, {"reason", std::move(reason)}}};
}

}  // namespace

Manager::Manager(Config config, Options options)
    : config_(std::move(config)),
      options_(options),
      inventory_([this](const MountEntry& m) { return is_watched(m); }) {}

Manager::~Manager() {
  *alive_ = false;
  // The server and sources reference the loop and bus; tear down in dependency order.
  metrics_.reset();
  if (metrics_timer_) loop_->cancel_timer(*metrics_timer_);
  server_.reset();
  replay_.reset();
  uevent_.reset();
  enospc_.reset();  // its hooks use statfs_, space_ and the inventory
  quota_.reset();
  kmsg_.reset();
  bpf_block_.reset();
  if (block_timer_) loop_->cancel_timer(*block_timer_);
  block_timer_.reset();
  block_merger_.reset();
  fanotify_errors_.reset();
  sysfs_errors_.reset();
  fs_errors_.reset();
  space_.reset();
  statfs_.reset();
  folder_.reset();
  sinks_.clear();    // they listen to the journal; each waits (bounded) for a delivery in progress
  journal_.reset();  // flushes (bounded) and stops the writer
}

void Manager::shutdown() {
  if (fs_errors_) {
    // Errors still held go out now; the counters are compared once more and saved, so the next
    // start reports only what happens after this.
    fs_errors_->flush();
    if (sysfs_errors_) sysfs_errors_->persist();
  }
  if (bpf_block_) bpf_block_->drain();
  if (enospc_) enospc_->flush();
  if (block_merger_) emit_block_errors(block_merger_->flush_all());
  folder_->flush_all();
  if (journal_->flush(std::chrono::milliseconds(5000)) && journal_->healthy()) {
    if (auto r = db_->mark_clean_shutdown(bus_->last_seq()); !r)
      log_warning("recording the clean shutdown: {}", r.error().message());
  } else {
    log_warning("the journal could not be flushed before exit; the next start reports the gap");
  }
}

void Manager::on_journal_status(bool ok, const std::string& reason) {
  Event e;
  e.source = "journal";
  if (ok) {
    e.type = "daemon.recovered";
    e.severity = Severity::info;
    e.detail = {{"source", "journal"}, {"reason", "the journal is written again"}};
    log_info("journal: writing again");
  } else {
    e.type = "daemon.degraded";
    e.severity = Severity::error;
    e.detail = {{"source", "journal"},
                {"reason", reason + "; events are delivered live and wait in memory for the journal"}};
    log_error("journal: {}", reason);
  }
  emit(std::move(e));
}

Result<std::unique_ptr<Manager>> Manager::create(Config config, Options options, Deps deps) {
  std::unique_ptr<Manager> m(new Manager(std::move(config), options));
  if (auto r = m->start(std::move(deps)); !r) return fail(r.error());
  return m;
}

bool Manager::is_watched(const MountEntry& m) const {
  for (const auto& p : config_.skip_paths)
    if (under(m.mount_point, p)) return false;
  for (const auto& t : config_.skip_fstypes)
    if (t == m.fstype) return false;
  bool forced = std::find(config_.watch_fstypes.begin(), config_.watch_fstypes.end(), m.fstype) !=
                config_.watch_fstypes.end();
  if (!forced && is_pseudo_fstype(m.fstype)) return false;
  if (!config_.watch_readonly && m.read_only()) return false;
  return true;
}

Result<void> Manager::start(Deps deps) {
  if (deps.clock) {
    clock_ = deps.clock;
  } else {
    own_clock_ = std::make_unique<RealClock>();
    clock_ = own_clock_.get();
  }
  auto loop = EventLoop::create(*clock_);
  if (!loop) return fail(loop.error());
  loop_ = std::move(*loop);

  auto db = StateDb::open(config_.state_dir);
  if (!db) return fail(db.error());
  db_ = std::move(*db);
  StateDb* dbp = db_.get();
  bus_ = std::make_unique<Bus>(*clock_, db_->journal_id(), db_->seq_reserved(),
                               [dbp](uint64_t upto) { return dbp->reserve_seq(upto); });

  std::weak_ptr<bool> alive = alive_;
  EventLoop* loop_ptr = loop_.get();
  auto journal = Journal::open(
      db_->path(),
      JournalOptions{.buffer_events = config_.journal_buffer_events,
                     .max_age = config_.journal_max_age,
                     .max_bytes = config_.journal_max_bytes},
      [this, alive, loop_ptr](bool ok, std::string reason) {
        // Called on the journal's writer thread: hand it to the loop.
        loop_ptr->post([this, alive, ok, reason = std::move(reason)] {
          if (alive.lock()) on_journal_status(ok, reason);
        });
      });
  if (!journal) return fail(journal.error());
  journal_ = std::move(*journal);
  // Numbers reserved before a crash whose events never reached the journal: say so, once.
  if (!db_->clean_at_open() && journal_->max_seq_at_open() < db_->seq_reserved())
    journal_->append_gap(journal_->max_seq_at_open() + 1, db_->seq_reserved(),
                         "storwatchd stopped before these sequence numbers were journaled (at most this many events)");
  Journal* jp = journal_.get();
  bus_->add_observer([jp](const EventPtr& e) { jp->append(e); });
  folder_ = std::make_unique<Folder>(*loop_, [this](Event e) { publish(std::move(e)); },
                                     Folder::Options{config_.fold_window, config_.fold_max_keys});
  if (options_.print) {
    bus_->add_observer([](const EventPtr& e) {
      std::string line = event_to_line(e->event);
      line.push_back('\n');
      std::fwrite(line.data(), 1, line.size(), stdout);
      std::fflush(stdout);
    });
  }

  auto rules = db_->load_rules();
  if (!rules) return fail(rules.error());
  for (const auto& [path, text] : *rules) {
    json j = json::parse(text, nullptr, false);
    auto rule = rule_from_json(j);
    if (!rule) {
      log_warning("ignoring stored rule for {}: {}", path, rule.error().message());
      continue;
    }
    runtime_rules_[path] = std::move(*rule);
  }

  if (!deps.statfs) deps.statfs = std::make_shared<RealStatfsProbe>();
  statfs_ = std::make_unique<StatfsRunner>(*loop_, deps.statfs);
  space_ = std::make_unique<SpaceMonitor>(
      *loop_, *statfs_, db_.get(), [this](Event e) { emit(std::move(e)); },
      SpaceMonitor::Options{config_.statfs_timeout, config_.poll_min, config_.poll_max});

  const bool fake_mount_table = static_cast<bool>(deps.mount_table);
  if (deps.mount_table) {
    mount_source_ = std::make_unique<MountinfoSource>(std::move(deps.mount_table));
    mount_tracker_ = MountTracker(nullptr);  // its mount points are not on this machine: no statx
  } else {
    if (config_.mounts_backend != MountsBackend::mountinfo) {
      auto fast = FanotifyMountSource::create({});
      if (fast) {
        mount_source_ = std::move(*fast);
      } else if (config_.mounts_backend == MountsBackend::fanotify) {
        report_unavailable("fanotify", "fanotify-mount",
                           fast.error().message() + "; mount changes come from the mountinfo fallback");
      } else {
        log_info("fanotify mount notifications: {}; using the mountinfo fallback", fast.error().message());
      }
    }
    if (!mount_source_) {
      auto t = ProcMountTable::open("/proc/self/mountinfo");
      if (!t) return fail(t.error());
      mount_source_ = std::make_unique<MountinfoSource>(std::move(*t));
    }
  }
  bool fs_error_sources = deps.fs_error_sources.value_or(!fake_mount_table);
  if (fs_error_sources) {
    start_fs_errors();
    start_block_sources();
    start_quota();
    start_enospc();
  }

  if (auto r = mount_source_->start(*loop_, [this](Result<MountChanges> c) { on_mount_changes(std::move(c)); });
      !r)
    return fail(r.error());

  if (!config_.replay_fifo.empty()) {
    auto replay = ReplaySource::create(
        *loop_, config_.replay_fifo,
        [this](const std::string& path) -> std::optional<FsRef> {
          const Filesystem* fs = resolve_path(path);
          if (!fs) return std::nullopt;
          return fs_ref(*fs);
        },
        [this](Event e) { emit(std::move(e)); });
    if (!replay) return fail(replay.error());
    replay_ = std::move(*replay);
  }

  UniqueFd listener;
  if (deps.listener) {
    listener = std::move(*deps.listener);
  } else {
    auto l = Server::listen_unix(config_.socket);
    if (!l) return fail(l.error());
    listener = std::move(*l);
  }
  auto server = Server::create(*loop_, *bus_, *this, std::move(listener), config_.limits);
  if (!server) return fail(server.error());
  server_ = std::move(*server);
  start_sinks();
  if (!config_.metrics_listen.empty())
    if (auto r = start_metrics(); !r) return r;
  return {};
}

std::vector<std::unique_ptr<Sink>> Manager::make_sinks() const {
  const SinksConfig& c = config_.sinks;
  std::vector<std::unique_ptr<Sink>> sinks;
  if (c.journald.value_or(::access(kJournaldSocket, F_OK) == 0)) sinks.push_back(std::make_unique<JournaldSink>());
  if (!c.hooks_dir.empty())
    sinks.push_back(std::make_unique<HookSink>(
        HookOptions{.dir = c.hooks_dir, .concurrency = c.hooks_concurrency, .timeout = c.hooks_timeout}));
  if (!c.alertmanager_url.empty())
    sinks.push_back(std::make_unique<AlertmanagerSink>(AlertmanagerOptions{.url = c.alertmanager_url,
                                                                           .timeout = c.alertmanager_timeout,
                                                                           .resend = c.alertmanager_resend,
                                                                           .io_error_hold = c.alertmanager_io_error_hold}));
  if (!c.nats_url.empty()) {
    auto nats = NatsSink::create(NatsSinkOptions{.url = c.nats_url,
                                                 .stream = c.nats_stream,
                                                 .host = c.nats_host,
                                                 .create_stream = c.nats_create_stream,
                                                 .duplicate_window = c.nats_duplicate_window,
                                                 .timeout = c.nats_timeout});
    if (nats)
      sinks.push_back(std::move(*nats));
    else
      log_error("sink nats: {}", nats.error().message());
  }
  return sinks;
}

void Manager::start_sinks() {
  // A sink that cannot start (its read connection) is reported; the daemon runs without it.
  for (auto& sink : make_sinks()) {
    std::string name = sink->name();
    auto r = SinkRunner::start(*journal_, bus_->journal_id(), std::move(sink));
    if (!r) {
      log_error("sink {}: cannot start: {}", name, r.error().message());
      continue;
    }
    log_info("sink {}: on", name);
    sinks_.push_back(std::move(*r));
  }
}

std::vector<SinkStatus> Manager::sink_status() const {
  std::vector<SinkStatus> out;
  for (const auto& r : sinks_) out.push_back(r->status());
  return out;
}

Result<void> Manager::start_metrics() {
  auto m = MetricsServer::start(config_.metrics_listen);
  if (!m) return fail(m.error());
  metrics_ = std::move(*m);
  log_info("metrics on http://{}/metrics", metrics_->address());
  bus_->add_observer([this](const EventPtr& e) { ++events_by_type_[e->event.type]; });
  refresh_metrics();
  return {};
}

void Manager::refresh_metrics() {
  MetricsSnapshot s;
  for (const Filesystem* fs : inventory_.all()) {
    if (!fs->watched) continue;
    // filesystem_json is what ListFilesystems reports: the metrics say the same.
    json j = filesystem_json(*fs);
    MetricsSnapshot::Filesystem f;
    f.dev = fs->dev();
    f.mount = fs->mounts.empty() ? "" : fs->mounts.front();
    f.fstype = fs->fstype;
    f.health = j.value("health", "ok");
    f.readonly = j.value("read_only", false);
    f.error_count = j.value("error_count", uint64_t{0});
    if (j.contains("blocks_total")) {
      uint64_t bs = j.value("block_size", uint64_t{0});
      f.has_usage = true;
      f.size_bytes = j.value("blocks_total", uint64_t{0}) * bs;
      f.free_bytes = j.value("blocks_avail", uint64_t{0}) * bs;
      f.files = j.value("inodes_total", uint64_t{0});
      f.files_free = j.value("inodes_avail", uint64_t{0});
    }
    for (const auto& l : j["levels"])
      f.levels.push_back({l.value("resource", ""), l.value("below", ""), l.value("severity", ""),
                          l.value("crossed", false)});
    s.filesystems.push_back(std::move(f));
  }
  s.events_by_type = events_by_type_;
  s.last_seq = bus_->last_seq();
  s.journaled_seq = journal_->journaled_seq();
  s.journal_buffered = journal_->buffered();
  s.journal_healthy = journal_->healthy();
  s.events_dropped = dropped_;
  s.subscribers = server_->subscription_count();
  s.connections = server_->connection_count();
  for (const auto& st : sink_status())
    s.sinks.push_back({st.name, st.state == "ok", st.lag()});
  metrics_->update(render_metrics(s));
  // Scrapers see state at most this old; rendering costs a walk over the watched filesystems.
  metrics_timer_ = loop_->add_timer_after(std::chrono::milliseconds(1000), [this] { refresh_metrics(); });
}

void Manager::reload(Config config) {
  if (config.socket != config_.socket)
    log_warning("reload: socket changes take effect at restart ({} stays)", config_.socket);
  if (config.state_dir != config_.state_dir)
    log_warning("reload: state_dir changes take effect at restart ({} stays)", config_.state_dir);
  if (config.metrics_listen != config_.metrics_listen)
    log_warning("reload: metrics address changes take effect at restart ({} stays)",
                config_.metrics_listen.empty() ? "off" : config_.metrics_listen);
  config.socket = config_.socket;
  config.state_dir = config_.state_dir;
  config.metrics_listen = config_.metrics_listen;
  const bool enospc_changed = config.ebpf_enospc != config_.ebpf_enospc;
  config_ = std::move(config);
  if (enospc_changed && fs_errors_) start_enospc();  // loads or unloads the probe
  server_->set_limits(config_.limits);
  folder_->set_options({config_.fold_window, config_.fold_max_keys});
  space_->set_options({config_.statfs_timeout, config_.poll_min, config_.poll_max});
  apply_policy();
}

void Manager::emit(Event e) { folder_->offer(std::move(e)); }

void Manager::publish(Event e) {
  auto r = bus_->publish(std::move(e));
  if (!r) {
    ++dropped_;
    log_error("cannot publish event: {} ({} events dropped so far)", r.error().message(), dropped_);
  }
}

void Manager::refresh_mounts() { mount_source_->refresh(); }

void Manager::on_mount_changes(Result<MountChanges> changes) {
  if (!changes) {
    log_error("{}", changes.error().message());
    return;
  }
  const bool resync = changes->resync;
  const std::string source = changes->source;
  auto diff = inventory_.apply(std::move(*changes));
  for (const auto& fs : diff.removed) statfs_->forget("enospc:" + fs.dev());  // the ENOSPC probe's worker
  // mount.* events go to the bus directly, not through the Folder: each one is a state change a
  // client applies to its copy of the table (Subscribe `mounts`), so none may be held or merged.
  auto fs_of = [&](const MountEntry& m) -> std::optional<FsRef> {
    if (const Filesystem* fs = inventory_.find(m.major, m.minor)) return fs_ref(*fs);
    for (const auto& fs : diff.removed)
      if (fs.major == m.major && fs.minor == m.minor) return fs_ref(fs);
    return std::nullopt;
  };
  for (auto& e : mount_tracker_.apply(diff, fs_of, source)) publish(std::move(e));
  if (resync) {
    // After the mount.* events the resync produced, so a client knows its table is whole again.
    log_warning("mount notifications lost (queue overflow): the mount table was read again");
    Event e;
    e.type = "mount.resync";
    e.severity = Severity::warning;
    e.source = source;
    e.detail = {{"reason", "overflow"},
                {"mounts", inventory_.mount_count()},
                {"attached", diff.mounts_attached.size()},
                {"detached", diff.mounts_detached.size()},
                {"changed", diff.mounts_changed.size()}};
    publish(std::move(e));
  }
  if (!diff.empty())
    for (auto& [ns, weak] : ns_views_)
      if (auto v = weak.lock()) v->host_changed();
  if (!diff.added.empty() || !diff.removed.empty() || !diff.changed.empty()) sync_space();
  // Also when nothing looks different: sync re-adds a fanotify mark the kernel dropped with a
  // superblock replaced between two reads.
  sync_fs_errors();
}

void Manager::apply_policy() {
  // Re-evaluate the policy over the same table (the config changed, not the mounts).
  std::vector<MountEntry> same = inventory_.mounts();
  inventory_.update({});
  inventory_.update(std::move(same));
  sync_space();
  sync_fs_errors();
}

std::vector<const Rule*> Manager::rules_for(const Filesystem& fs) const {
  // A rule names a mount point; it applies to the filesystem mounted there (at any of its mounts).
  std::vector<const Rule*> out;
  auto match = [&](const Rule& r) {
    return std::find(fs.mounts.begin(), fs.mounts.end(), r.path) != fs.mounts.end();
  };
  for (const auto& r : config_.rules)
    if (match(r)) out.push_back(&r);
  for (const auto& [path, r] : runtime_rules_)
    if (match(r)) out.push_back(&r);
  return out;
}

SpaceMonitor::Plan Manager::plan_for(const Filesystem& fs) const {
  SpaceMonitor::Plan plan;
  auto rules = rules_for(fs);
  if (rules.empty()) {
    plan.levels = config_.default_levels;
    return plan;
  }
  // Several rules on one filesystem (one per mount point) merge; a level named twice counts once.
  plan.thresholds = false;
  for (const Rule* r : rules) {
    if (!r->thresholds) continue;
    plan.thresholds = true;
    for (const auto& l : r->levels) {
      bool dup = std::any_of(plan.levels.begin(), plan.levels.end(),
                             [&](const Level& x) { return x.id() == l.id(); });
      if (!dup) plan.levels.push_back(l);
    }
  }
  return plan;
}

void Manager::sync_space() {
  std::vector<std::pair<Filesystem, SpaceMonitor::Plan>> plans;
  for (const Filesystem* fs : inventory_.all()) {
    if (!fs->watched) continue;
    plans.emplace_back(*fs, plan_for(*fs));
  }
  space_->sync(plans);
}

// ---------------------------------------------------------------------------------------------
// Filesystem errors

void Manager::start_fs_errors() {
  auto dev_of = [](const std::string& dev) {
    return parse_dev(dev).value_or(std::pair<uint32_t, uint32_t>(0, 0));
  };
  FsErrorCorrelator::Hooks hooks;
  hooks.emit = [this](Event e) { emit(std::move(e)); };
  hooks.fs_ref = [this](const std::string& dev) -> std::optional<FsRef> {
    const Filesystem* fs = find_dev(dev);
    if (!fs || !error_watched(*fs)) return std::nullopt;
    return fs_ref(*fs);
  };
  hooks.resolve_device = [this](const std::string& name) { return resolve_device(name); };
  hooks.fanotify_marked = [this, dev_of](const std::string& dev) {
    auto [maj, min] = dev_of(dev);
    return fanotify_errors_ && fanotify_errors_->marked(maj, min);
  };
  hooks.drain = [this, dev_of](const std::string& dev) -> uint64_t {
    if (!fanotify_errors_) return 0;
    fanotify_errors_->drain();
    auto [maj, min] = dev_of(dev);
    return fanotify_errors_->in_flight(maj, min);
  };
  hooks.read_counter = [this, dev_of](const std::string& dev) -> std::optional<uint64_t> {
    if (!sysfs_errors_) return std::nullopt;
    auto [maj, min] = dev_of(dev);
    return sysfs_errors_->read_now(maj, min);
  };
  hooks.refresh_mounts = [this] { refresh_mounts(); };
  fs_errors_ = std::make_unique<FsErrorCorrelator>(*loop_, std::move(hooks), FsErrorCorrelator::Options{});

  fanotify_errors_ = FanotifyErrorSource::create(
      *loop_, [this](FsErrorReport r) { fs_errors_->report(std::move(r)); },
      [this] {
        log_warning("fanotify: the kernel's event queue overflowed; comparing the error counters");
        fs_errors_->missed();
      },
      FanotifyErrorSource::Options{});
  auto unavailable = [this](const std::string& source, const std::string& name, const std::string& reason) {
    report_unavailable(source, name, reason);
  };
  if (!fanotify_errors_->available())
    unavailable("fanotify", "fanotify-fs-error",
                fanotify_errors_->reason() + "; errors are counted from the kernel log and the filesystems' own counters");
  // Block-layer lines become block.io_error events (merged into ranges: on_block_line).
  block_merger_ = std::make_unique<BlockErrorMerger>(loop_->clock());
  auto kmsg = KmsgSource::create(
      *loop_, [this](FsErrorReport r) { fs_errors_->report(std::move(r)); },
      [this](const BlockErrorLine& b, const KmsgRecord&) { on_block_line(b); });
  if (kmsg)
    kmsg_ = std::move(*kmsg);
  else
    unavailable("kmsg", "kmsg", kmsg.error().message() + "; filesystem errors lack function, line and message");
  sysfs_errors_ = std::make_unique<SysfsErrorSource>(
      *loop_, db_.get(), [this](FsErrorReport r) { fs_errors_->report(std::move(r)); },
      [this](FsErrorReport r, json detail) { fs_errors_->catch_up(std::move(r), std::move(detail)); },
      SysfsErrorSource::Options{});
}

// ---------------------------------------------------------------------------------------------
// Block-layer errors (kmsg fallback) and device events (uevents)

namespace {

// A kernel device name as it may stand in a sysfs path (the name comes from kernel log text).
bool safe_block_name(const std::string& name) {
  if (name.empty() || name.size() > 64 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':';
  });
}

// /sys/class/block/NAME/dev ("7:0").
std::optional<std::pair<uint32_t, uint32_t>> block_dev_numbers(const std::string& name) {
  if (!safe_block_name(name)) return std::nullopt;
  std::ifstream in("/sys/class/block/" + name + "/dev");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  return parse_dev(line);
}

std::optional<uint64_t> read_u64_file(const std::string& path) {
  std::ifstream in(path);
  uint64_t v = 0;
  if (!(in >> v)) return std::nullopt;
  return v;
}

// Requests the device cannot do at all (EOPNOTSUPP): mkfs and ext4's lazy init try them on
// loop-over-FUSE. Not media errors.
bool unsupported_request(const BlockErrorLine& b) {
  if (b.subtype != "not_supported" && b.err != EOPNOTSUPP) return false;
  return b.op == "DISCARD" || b.op == "WRITE_ZEROES" || b.op == "SECURE_ERASE";
}

}  // namespace

void Manager::start_block_sources() {
  start_bpf_block_errors();
  auto uevent = UeventSource::create(*loop_, [this](Event e) { emit(std::move(e)); });
  if (uevent) {
    uevent_ = std::move(*uevent);
    return;
  }
  report_unavailable("uevent", "uevent",
                     uevent.error().message() + "; no device.added, device.removed, device.changed, device.resized");
}

void Manager::start_bpf_block_errors() {
  if (!block_merger_) return;
  const std::string fallback = kmsg_ ? "; block.io_error comes from the kernel log (at most 10 lines per 5 s, the "
                                       "rest counted from its \"callbacks suppressed\" lines)"
                                     : "; the kernel log cannot be read either: no block.io_error";
  if (!config_.ebpf_block) {
    bpf_block_unavailable_ = "turned off in the configuration ([sources] ebpf_block = false)" + fallback;
    report_unavailable("ebpf", "ebpf-block", bpf_block_unavailable_);
    return;
  }
  auto src = BpfBlockErrorSource::create(*loop_, [this](const BlockErrorMerger::Report& r) { on_block_report(r); });
  if (!src) {
    bpf_block_unavailable_ = src.error().message() + fallback;
    report_unavailable("ebpf", "ebpf-block", bpf_block_unavailable_);
    return;
  }
  bpf_block_ = std::move(*src);
}

void Manager::report_unavailable(const std::string& source, const std::string& name, const std::string& reason) {
  log_warning("{}: {}", name, reason);
  Event e;
  e.type = "source.unavailable";
  e.severity = Severity::warning;
  e.source = source;
  e.detail = {{"source", name}, {"reason", reason}};
  emit(std::move(e));
}

void Manager::on_block_line(const BlockErrorLine& b) {
  // The eBPF source sees every failed request the log prints, and those it does not.
  if (!block_merger_ || bpf_block_) return;
  if (b.subtype == "suppressed") {
    // Only the block layer's own rate limit counts requests; buffer_io_error repeats them.
    if (b.function == "blk_print_req_error" && !b.device.empty()) block_merger_->suppressed(b.device, b.count);
    return;
  }
  if (b.subtype == "buffer" || b.device.empty() || !b.sector || unsupported_request(b)) return;
  BlockErrorMerger::Report r;
  r.device = b.device;
  r.op = b.op;
  r.subtype = b.subtype;
  r.err = b.err;
  r.sector = *b.sector;
  emit_block_errors(block_merger_->add(r));
  arm_block_timer();
}

void Manager::on_block_report(const BlockErrorMerger::Report& r) {
  emit_block_errors(block_merger_->add(r));
  arm_block_timer();
}

void Manager::arm_block_timer() {
  if (block_timer_) loop_->cancel_timer(*block_timer_);
  block_timer_.reset();
  auto when = block_merger_ ? block_merger_->next_deadline() : std::nullopt;
  if (!when) return;
  block_timer_ = loop_->add_timer(*when, [this] {
    block_timer_.reset();
    emit_block_errors(block_merger_->expire());
    arm_block_timer();
  });
}

void Manager::emit_block_errors(std::vector<BlockErrorMerger::Merged> ranges) {
  const MonoTime mono = clock_->now();
  const WallTime wall = clock_->wall_now();
  auto to_wall = [&](MonoTime t) {
    return wall - std::chrono::duration_cast<WallTime::duration>(mono - t);
  };
  for (auto& m : ranges) {
    Event e;
    e.type = "block.io_error";
    e.severity = Severity::error;
    e.source = bpf_block_ ? "ebpf" : "kmsg";
    e.count = m.count();
    e.first_time = to_wall(m.first);
    e.last_time = to_wall(m.last);
    DeviceRef d;
    d.name = m.device;
    if (auto n = block_dev_numbers(m.device)) std::tie(d.major, d.minor) = *n;
    e.device = d;
    e.fs = block_fs(m.device, m.sector);
    e.detail["subtype"] = m.subtype;
    e.detail["op"] = m.op;
    e.detail["sector"] = m.sector;
    // A single kmsg line gives no length; a merged range spans at least its requests' first
    // sectors. The eBPF source knows every request's length.
    if (m.requests > 1 || m.sectors_known) e.detail["sectors"] = m.sectors;
    e.detail["requests"] = m.requests;
    if (m.suppressed) e.detail["suppressed"] = m.suppressed;
    if (m.err) {
      e.detail["errno"] = m.err;
      if (const char* name = ::strerrorname_np(m.err)) e.detail["error"] = name;
    }
    emit(std::move(e));
  }
}

std::optional<FsRef> Manager::block_fs(const std::string& name, uint64_t sector) const {
  if (!safe_block_name(name)) return std::nullopt;
  // The kernel names the whole disk and a sector on it: the partition holding that sector is
  // where the filesystem is.
  std::string target = name;
  std::error_code ec;
  for (const auto& ent : std::filesystem::directory_iterator("/sys/class/block/" + name, ec)) {
    std::string dir = ent.path().string();
    if (::access((dir + "/partition").c_str(), F_OK) != 0) continue;
    auto start = read_u64_file(dir + "/start");
    auto size = read_u64_file(dir + "/size");
    if (start && size && sector >= *start && sector < *start + *size) {
      target = ent.path().filename().string();
      break;
    }
  }
  const Filesystem* fs = filesystem_on_device(target, nullptr);
  if (!fs && target != name) fs = filesystem_on_device(name, nullptr);
  if (!fs) return std::nullopt;
  return fs_ref(*fs);
}

bool Manager::error_watched(const Filesystem& fs) const {
  // The watch policy, except that read-only filesystems count: a filesystem that errors turned
  // read-only, or one remounted read-only, is exactly where errors matter.
  for (const auto& t : config_.skip_fstypes)
    if (t == fs.fstype) return false;
  bool forced = std::find(config_.watch_fstypes.begin(), config_.watch_fstypes.end(), fs.fstype) !=
                config_.watch_fstypes.end();
  if (!forced && is_pseudo_fstype(fs.fstype)) return false;
  for (const auto& m : fs.mounts) {
    bool skipped = std::any_of(config_.skip_paths.begin(), config_.skip_paths.end(),
                               [&](const std::string& p) { return under(m, p); });
    if (!skipped) return true;
  }
  return false;
}

const Filesystem* Manager::find_dev(const std::string& dev) const {
  auto d = parse_dev(dev);
  return d ? inventory_.find(d->first, d->second) : nullptr;
}

const Filesystem* Manager::filesystem_on_device(const std::string& name,
                                                bool (Manager::*accept)(const Filesystem&) const) const {
  // The superblock on that device by its major:minor from sysfs; else (btrfs, whose superblock
  // dev is anonymous) by the mount source, also through /dev/mapper and /dev/disk links.
  auto ok = [&](const Filesystem* fs) { return fs && (!accept || (this->*accept)(*fs)); };
  auto d = block_dev_numbers(name);
  if (!d) {
    if (!safe_block_name(name)) return nullptr;
  } else if (const Filesystem* fs = inventory_.find(d->first, d->second); ok(fs)) {
    return fs;
  }
  const std::string want = "/dev/" + name;
  for (const Filesystem* fs : inventory_.all()) {
    if (!ok(fs) || fs->source.rfind("/dev/", 0) != 0) continue;
    if (fs->source == want) return fs;
    if (fs->source.rfind("/dev/mapper/", 0) == 0 || fs->source.rfind("/dev/disk/", 0) == 0) {
      char real[PATH_MAX];
      if (::realpath(fs->source.c_str(), real) && want == real) return fs;
    }
  }
  return nullptr;
}

std::optional<std::string> Manager::resolve_device(const std::string& name) const {
  // The kernel's device name from a log line ("loop1", "sda2", "dm-0", jbd2's "loop1-8").
  auto lookup = [&](const std::string& n) -> std::optional<std::string> {
    if (const Filesystem* fs = filesystem_on_device(n, &Manager::error_watched)) return fs->dev();
    return std::nullopt;
  };
  if (auto d = lookup(name)) return d;
  // jbd2 names a journal "<device>-<inode>".
  auto dash = name.rfind('-');
  if (dash != std::string::npos && dash + 1 < name.size() &&
      std::all_of(name.begin() + static_cast<long>(dash) + 1, name.end(), ::isdigit))
    return lookup(name.substr(0, dash));
  return std::nullopt;
}

void Manager::sync_fs_errors() {
  if (!fs_errors_) return;
  std::map<std::string, RoState> now;
  std::vector<FanotifyErrorSource::Target> marks;
  std::vector<SysfsErrorSource::Target> counters;
  for (const Filesystem* fs : inventory_.all()) {
    if (!error_watched(*fs)) continue;
    now[fs->dev()] = {fs->read_only, fs->emergency_ro};
    // Filesystems on a device: the ones that report errors (btrfs' superblock dev is anonymous).
    if (fs->major == 0 && fs->fstype != "btrfs") continue;
    marks.push_back({fs->major, fs->minor, fs->probe_path});
    counters.push_back({fs->major, fs->minor, fs->fstype, fs->source, fs->probe_path});
  }
  for (const auto& [dev, ro] : error_watched_)
    if (!now.count(dev)) fs_errors_->filesystem_removed(dev);
  // Counters first: their baseline is read before the mark exists, so an error in between is
  // counted by the counter and not twice.
  sysfs_errors_->sync(counters);
  fanotify_errors_->sync(marks);
  for (const auto& [dev, ro] : now) {
    auto old = error_watched_.find(dev);
    FsErrorReport r;
    r.source = "mountinfo";
    if (old == error_watched_.end()) {
      fs_errors_->filesystem_added(dev, ro.read_only && !ro.emergency_ro);
      if (!ro.emergency_ro) continue;
      r.kind = FsErrorReport::Kind::readonly;
      r.cause = "emergency_ro";
    } else if (ro.emergency_ro && !old->second.emergency_ro) {
      r.kind = FsErrorReport::Kind::readonly;
      r.cause = "emergency_ro";
    } else if (ro.read_only && !old->second.read_only) {
      r.kind = FsErrorReport::Kind::readonly;
      r.cause = "remount";
    } else if (!ro.read_only && old->second.read_only) {
      r.kind = FsErrorReport::Kind::writable;
    } else {
      continue;
    }
    r.sb_dev = parse_dev(dev);
    fs_errors_->report(std::move(r));
  }
  error_watched_ = std::move(now);
}

// ---------------------------------------------------------------------------------------------
// ENOSPC and EDQUOT from the eBPF probe

void Manager::start_enospc() {
  enospc_.reset();
  const std::string fallback =
      "; ENOSPC is seen only by statfs (space.enospc once a filesystem is full, without the process) "
      "and EDQUOT not at all";
  if (!config_.ebpf_enospc) {
    enospc_unavailable_ = "turned off in the configuration ([sources] ebpf_enospc = false)";
    report_unavailable("ebpf", "ebpf-enospc", enospc_unavailable_ + fallback);
    return;
  }
  if (!cgroups_) cgroups_ = std::make_unique<CgroupResolver>();
  EnospcTracker::Hooks h;
  h.emit = [this](Event e) {
    if (e.type == "space.enospc" && e.fs)
      space_->enospc_reported(e.fs->dev(), e.detail.value("kind", "") == "inodes");
    emit(std::move(e));
  };
  h.by_dev = [this](uint32_t major, uint32_t minor, bool& ignored) -> std::optional<EnospcFs> {
    const Filesystem* fs = inventory_.find(major, minor);
    if (!fs) return std::nullopt;
    if (!error_watched(*fs)) {
      ignored = true;
      return std::nullopt;
    }
    return EnospcFs{fs_ref(*fs), fs->probe_path};
  };
  h.by_path = [this](const std::string& path, bool& ignored) -> std::optional<EnospcFs> {
    const Filesystem* fs = resolve_path(path);
    if (!fs) return std::nullopt;
    if (!error_watched(*fs)) {
      ignored = true;
      return std::nullopt;
    }
    return EnospcFs{fs_ref(*fs), fs->probe_path};
  };
  h.statfs = [this](const std::string& dev, const std::string& path,
                    std::function<void(std::optional<Usage>)> done) {
    // Off the loop, on a worker of its own (not the poller's, which may be busy); an answer that
    // takes longer than this leaves the kind as the syscall says.
    auto pending = std::make_shared<std::function<void(std::optional<Usage>)>>(std::move(done));
    auto answer = [pending](std::optional<Usage> u) {
      if (!*pending) return;
      auto f = std::move(*pending);
      *pending = nullptr;
      f(u);
    };
    bool queued = statfs_->request("enospc:" + dev, path, [answer](Result<Usage> r) {
      answer(r ? std::optional<Usage>(*r) : std::nullopt);
    });
    if (!queued) return answer(std::nullopt);
    loop_->add_timer_after(std::chrono::milliseconds(500), [answer] { answer(std::nullopt); });
  };
  h.cgroup_path = [this](uint64_t id) { return cgroups_->path(id); };
  h.mono_ns = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);  // bpf_ktime_get_ns()'s clock
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
  };
  h.wall_now = [] { return std::chrono::system_clock::now(); };
  auto src = EnospcSource::create(*loop_, std::move(h));
  if (!src) {
    enospc_unavailable_ = src.error().message();
    report_unavailable("ebpf", "ebpf-enospc", enospc_unavailable_ + fallback);
    return;
  }
  enospc_unavailable_.clear();
  enospc_ = std::move(*src);
}

// ---------------------------------------------------------------------------------------------
// Quota warnings

void Manager::start_quota() {
  if (!config_.quota_netlink) {
    quota_unavailable_ = "turned off in the configuration ([sources] quota_netlink = false)";
    report_unavailable("netlink", "quota-netlink", quota_unavailable_ + "; no quota.warning");
    return;
  }
  auto q = QuotaNetlinkSource::create(*loop_, [this](const QuotaWarning& w) { on_quota_warning(w); });
  if (!q) {
    quota_unavailable_ = q.error().message();
    report_unavailable("netlink", "quota-netlink", quota_unavailable_ + "; no quota.warning");
    return;
  }
  quota_ = std::move(*q);
}

void Manager::on_quota_warning(const QuotaWarning& w) {
  Event e = quota_warning_event(w);
  // The kernel names the superblock's device, as mountinfo field 3 does: any filesystem we
  // know, watched or not (a quota on it matters either way).
  if (const Filesystem* fs = inventory_.find(w.dev_major, w.dev_minor)) e.fs = fs_ref(*fs);
  emit(std::move(e));
}

const Filesystem* Manager::resolve_path(const std::string& path) const {
  auto n = normalise(path);
  if (!n) return nullptr;
  return inventory_.find_by_mount_prefix(*n);
}

// ---------------------------------------------------------------------------------------------
// Service

json Manager::stream_reply_fields() const {
  return {{"journal_id", bus_->journal_id()}, {"journaled_seq", journal_->journaled_seq()}};
}

Reply<Subscriber::Filter> Manager::make_filter(const json& p, const std::shared_ptr<ClientView>& view) {
  auto f = proto::filter_from_json(p.contains("filter") ? p["filter"] : json(nullptr));
  if (!f) {
    if (f.error().name() == errs::kLimitExceeded)
      return reply_error(errs::kLimitExceeded, {{"limit", "filter_entries"}, {"max", proto::kMaxFilterEntries}});
    return tl::unexpected(invalid_param("filter", f.error().message()));
  }
  std::set<std::string> devs;
  for (const auto& path : f->fs) {
    // A client in another mount namespace names its own paths.
    const MountNsView* ns = view->ns().get();
    auto n = normalise(path);
    const Filesystem* fs = !ns ? resolve_path(path) : n ? ns->inventory().find_by_mount_prefix(*n) : nullptr;
    if (!fs) return reply_error(errs::kNoSuchFilesystem, {{"path", path}});
    devs.insert(fs->dev());
  }
  return Subscriber::Filter([filter = std::move(*f), devs = std::move(devs), view](const Event& e) {
    if (!view->accepts(e)) return false;
    if (!proto::matches_type_severity_subtype(filter, e)) return false;
    if (!devs.empty() && (!e.fs || !devs.count(e.fs->dev()))) return false;
    return true;
  });
}

Reply<Service::Stream> Manager::subscribe(const Peer& peer, const json& p) {
  if (!p.is_object()) return reply_error(errs::kInvalidParameter, {{"parameter", "parameters"}, {"reason", "must be an object"}});
  if (auto d = deny(Operation::subscribe, peer)) return tl::unexpected(*d);
  auto ns = ns_view(peer);
  if (!ns) return tl::unexpected(ns.error());
  auto view = client_view(peer, *ns);
  auto filter = make_filter(p, view);
  if (!filter) return tl::unexpected(filter.error());
  bool mounts = false;
  if (auto m = p.find("mounts"); m != p.end() && !m->is_null()) {
    if (!m->is_boolean()) return tl::unexpected(invalid_param("mounts", "must be a boolean"));
    mounts = m->get<bool>();
  }
  if (mounts && p.contains("after") && !p["after"].is_null())
    return tl::unexpected(invalid_param(
        "mounts", "cannot be combined with after: the table is the current one, replayed events are older"));
  Stream s;
  s.filter = std::move(*filter);
  if (*ns || !view->grants().everything()) s.present = [view](const EventPtr& e) { return view->present(e); };
  if (auto a = p.find("after"); a != p.end() && !a->is_null()) {
    if (!a->is_number_unsigned()) return tl::unexpected(invalid_param("after", "must be a sequence number"));
    if (auto id = p.find("journal_id"); id != p.end() && !id->is_null()) {
      if (!id->is_string()) return tl::unexpected(invalid_param("journal_id", "must be a string"));
      if (id->get<std::string>() != bus_->journal_id())
        return reply_error(errs::kJournalMismatch,
                           {{"expected", id->get<std::string>()}, {"actual", bus_->journal_id()}});
    }
    s.after = a->get<uint64_t>();
    Journal* j = journal_.get();
    s.fetch = [j](uint64_t after, size_t max) { return j->read({.after = after, .limit = max}); };
  }
  s.first_reply = stream_reply_fields();
  // The table and the attach to the bus (by the server, right after this returns) both happen on
  // the loop thread, between two reads of mountinfo: every change after this table is an event
  // of the stream, and none before it is.
  if (mounts)
    s.first_reply["mount_table"] = *ns ? (*ns)->tracker().table_json((*ns)->inventory().mounts())
                                        : mount_tracker_.table_json(inventory_.mounts());
  return s;
}

Reply<json> Manager::list_events(const json& p, const std::shared_ptr<ClientView>& view) {
  auto filter = make_filter(p, view);
  if (!filter) return tl::unexpected(filter.error());
  Journal::Query q;
  if (auto a = p.find("after"); a != p.end() && !a->is_null()) {
    if (!a->is_number_unsigned()) return tl::unexpected(invalid_param("after", "must be a sequence number"));
    q.after = a->get<uint64_t>();
  }
  if (auto since = p.find("since"); since != p.end() && !since->is_null()) {
    auto t = since->is_string() ? parse_time(since->get<std::string>()) : std::nullopt;
    if (!t) return tl::unexpected(invalid_param("since", "expected an RFC 3339 time such as 2026-11-21T23:00:00Z"));
    q.since = *t;
  }
  size_t limit = kListEventsDefault;
  if (auto l = p.find("limit"); l != p.end() && !l->is_null()) {
    if (!l->is_number_unsigned() || l->get<uint64_t>() == 0)
      return tl::unexpected(invalid_param("limit", "must be a positive number"));
    limit = std::min<uint64_t>(l->get<uint64_t>(), kListEventsMax);
  }
  // Scan in pages, filtering here; bounded per call, with next_after to continue.
  json events = json::array();
  size_t scanned = 0;
  bool exhausted = false;
  uint64_t cursor = q.after;
  while (events.size() < limit && scanned < kListEventsScan) {
    q.after = cursor;
    q.limit = 1000;
    auto page = journal_->read(q);
    if (!page) return tl::unexpected(invalid_param("journal", page.error().message()));
    if (page->empty()) {
      exhausted = true;
      break;
    }
    for (const auto& e : *page) {
      ++scanned;
      cursor = e->event.seq;
      if (e->event.type == "stream.lost" || (*filter)(e->event)) {
        events.push_back(json::parse(view->present(e)->json, nullptr, false));
        if (events.size() >= limit) break;
      }
    }
  }
  json out = {{"events", std::move(events)},
              {"journal_id", bus_->journal_id()},
              {"journaled_seq", journal_->journaled_seq()}};
  if (!exhausted) out["next_after"] = cursor;
  return out;
}

Reply<json> Manager::call(const Peer& peer, const std::string& method, const json& p) {
  if (!p.is_object()) return tl::unexpected(invalid_param("parameters", "must be an object"));
  if (method == "AddRule") return add_rule(peer, p);
  if (method == "RemoveRule") return remove_rule(peer, p);
  static const std::set<std::string> kQueries = {"ListFilesystems", "GetFilesystem", "ListRules",
                                                 "Doctor",          "ListEvents",    "ListMounts"};
  if (!kQueries.count(method)) return reply_error(errs::kMethodNotFound, {{"method", "io.storwatch." + method}});
  if (auto d = deny(Operation::query, peer)) return tl::unexpected(*d);
  if (method == "Doctor") return doctor(peer);
  auto ns = ns_view(peer);
  if (!ns) return tl::unexpected(ns.error());
  const MountNsView* view = ns->get();
  if (method == "ListFilesystems") return list_filesystems(p, view);
  if (method == "GetFilesystem") return get_filesystem(p, view);
  if (method == "ListRules") return json{{"rules", view ? rules_json(*view) : rules_json()}};
  if (method == "ListEvents") return list_events(p, client_view(peer, *ns));
  return json{{"mounts", view ? view->tracker().table_json(view->inventory().mounts())
                              : mount_tracker_.table_json(inventory_.mounts())}};
}

json Manager::filesystem_json(const Filesystem& fs) const {
  json j = {{"dev", fs.dev()},          {"major", fs.major},   {"minor", fs.minor},
            {"fstype", fs.fstype},      {"source", fs.source}, {"mounts", fs.mounts},
            {"watched", fs.watched},    {"read_only", fs.read_only || fs.emergency_ro},
            {"error_count", fs_errors_ ? fs_errors_->error_count(fs.dev()) : 0}};
  const SpaceMonitor::Status* st = space_->status(fs.dev());
  // Worst first: shut down, read-only, stale (statfs does not answer), errors, ok.
  auto h = fs_errors_ ? fs_errors_->health(fs.dev()) : FsErrorCorrelator::Health::ok;
  std::string health = FsErrorCorrelator::health_name(h);
  if (h != FsErrorCorrelator::Health::shutdown) {
    if (fs.emergency_ro) health = "readonly";
    if (health != "readonly" && st && st->stale) health = "stale";
  }
  j["health"] = health;
  if (sysfs_errors_)
    if (auto c = sysfs_errors_->counter(fs.major, fs.minor)) j["kernel_error_count"] = *c;
  json rules = json::array();
  for (const Rule* r : rules_for(fs)) rules.push_back(rule_to_json(*r));
  j["rules"] = rules;
  json levels = json::array();
  if (st) {
    if (st->usage) {
      const Usage& u = *st->usage;
      j["block_size"] = u.frsize;
      j["blocks_total"] = u.blocks;
      j["blocks_avail"] = u.bavail;
      j["inodes_total"] = u.files;
      j["inodes_avail"] = u.favail;
      j["sampled"] = format_time(st->sampled);
    }
    for (const auto& l : st->levels) {
      json lj = {{"id", l.id()},
                 {"resource", resource_name(l.resource)},
                 {"below", l.below.to_string()},
                 {"severity", severity_name(l.severity)},
                 {"crossed", st->crossed.count(l.id()) > 0}};
      if (st->usage)
        if (auto r = resolve_level(l, *st->usage)) lj["level"] = r->level;
      levels.push_back(std::move(lj));
    }
  }
  j["levels"] = levels;
  return j;
}

Reply<json> Manager::list_filesystems(const json& p, const MountNsView* ns) {
  bool all = p.contains("all") && p["all"].is_boolean() && p["all"].get<bool>();
  json out = json::array();
  if (!ns) {
    for (const Filesystem* fs : inventory_.all())
      if (all || fs->watched) out.push_back(filesystem_json(*fs));
    return json{{"filesystems", out}};
  }
  for (const Filesystem* here : ns->inventory().all()) {
    const Filesystem* fs = inventory_.find(here->major, here->minor);
    if (fs && (all || fs->watched)) {
      out.push_back(filesystem_json(*fs, *ns));
    } else if (!fs && all) {
      out.push_back(unwatched_filesystem_json(*here));
    }
  }
  return json{{"filesystems", out}};
}

Reply<json> Manager::get_filesystem(const json& p, const MountNsView* ns) {
  const Filesystem* fs = nullptr;
  std::string what;
  if (auto it = p.find("path"); it != p.end() && it->is_string()) {
    what = it->get<std::string>();
    if (!ns) {
      fs = resolve_path(what);
    } else if (auto n = normalise(what)) {
      if (const Filesystem* here = ns->inventory().find_by_mount_prefix(*n)) {
        fs = inventory_.find(here->major, here->minor);
        if (!fs) return json{{"filesystem", unwatched_filesystem_json(*here)}};
      }
    }
  } else if (auto d = p.find("dev"); d != p.end() && d->is_string()) {
    what = d->get<std::string>();
    if (auto num = parse_dev(what))
      if (!ns || !ns->mounts_of(num->first, num->second).empty()) fs = inventory_.find(num->first, num->second);
  } else {
    return tl::unexpected(invalid_param("path", "give \"path\" or \"dev\""));
  }
  if (!fs) return reply_error(errs::kNoSuchFilesystem, {{"path", what}});
  return json{{"filesystem", ns ? filesystem_json(*fs, *ns) : filesystem_json(*fs)}};
}

std::optional<VarlinkError> Manager::deny(Operation op, const Peer& peer) const {
  if (!config_.policy.allows(op, peer))
    return VarlinkError{errs::kPermissionDenied, {{"reason", config_.policy.denial(op, peer)}}};
  // Rules name the daemon's mount points; a container's root changes nothing on the host.
  if (op == Operation::change_rules && peer.mnt_ns.known() && !is_own_mount_ns(peer.mnt_ns))
    return VarlinkError{errs::kPermissionDenied,
                        {{"reason", "changing rules is not possible from another mount namespace: rules name the "
                                    "daemon's mount points"}}};
  return std::nullopt;
}

Reply<std::shared_ptr<MountNsView>> Manager::ns_view(const Peer& peer) {
  if (!peer.mnt_ns.known()) {
    // A peer without a pidfd is a test's or an old kernel's: taken to share our namespace. With
    // one, an unreadable namespace (the process exited, or is not visible to us) is no reason to
    // show it the host's paths.
    if (peer.pidfd < 0) return std::shared_ptr<MountNsView>();
    return reply_error(errs::kPermissionDenied,
                       {{"reason", "cannot tell which mount namespace the client is in (has its process exited?)"}});
  }
  if (is_own_mount_ns(peer.mnt_ns)) return std::shared_ptr<MountNsView>();
  for (auto it = ns_views_.begin(); it != ns_views_.end();) it = it->second.expired() ? ns_views_.erase(it) : std::next(it);
  if (auto it = ns_views_.find(peer.mnt_ns); it != ns_views_.end()) return it->second.lock();
  auto denied = [&](const std::string& why) {
    log_debug("client pid {} in mount namespace {}: {}", peer.pid, peer.mnt_ns.ino, why);
    return reply_error(errs::kPermissionDenied,
                       {{"reason", "you are in another mount namespace, whose mount table cannot be read: " + why}});
  };
  auto mountinfo = open_peer_mountinfo(peer.pidfd, peer.pid, peer.mnt_ns);
  if (!mountinfo) return denied(mountinfo.error().message());
  UniqueFd root(::open(fmt::format("/proc/{}/root", peer.pid).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto v = MountNsView::create(*loop_, inventory_, peer.mnt_ns, std::move(*mountinfo), std::move(root),
                               [this](Event e) { publish(std::move(e)); });
  if (!v) return denied(v.error().message());
  ns_views_[peer.mnt_ns] = *v;
  return *v;
}

std::shared_ptr<ClientView> Manager::client_view(const Peer& peer, std::shared_ptr<MountNsView> ns) {
  Grants g = config_.policy.grants(peer);
  // Clients that may see everything share one view whoever they are.
  if (g.all_processes) g.uid = static_cast<uid_t>(-1);
  auto key = std::make_tuple(g.uid, g.all_processes, g.kernel_text, ns ? ns->ns().ino : 0);
  for (auto it = client_views_.begin(); it != client_views_.end();)
    it = it->second.expired() ? client_views_.erase(it) : std::next(it);
  if (auto it = client_views_.find(key); it != client_views_.end())
    if (auto v = it->second.lock(); v && v->ns() == ns) return v;
  auto v = std::make_shared<ClientView>(g, std::move(ns));
  client_views_[key] = v;
  return v;
}

json Manager::unwatched_filesystem_json(const Filesystem& here) {
  // Mounted only in a client's namespace: the daemon does not watch it.
  return {{"dev", here.dev()},     {"major", here.major},   {"minor", here.minor},
          {"fstype", here.fstype}, {"source", here.source}, {"mounts", here.mounts},
          {"watched", false},      {"health", "ok"},        {"read_only", here.read_only},
          {"error_count", 0},      {"rules", json::array()}, {"levels", json::array()}};
}

json Manager::filesystem_json(const Filesystem& fs, const MountNsView& ns) const {
  json j = filesystem_json(fs);
  j["mounts"] = ns.mounts_of(fs.major, fs.minor);
  json rules = json::array();
  for (auto& r : j["rules"]) {
    auto here = r.contains("path") && r["path"].is_string()
                    ? ns.path_here(fs.major, fs.minor, r["path"].get<std::string>())
                    : std::nullopt;
    if (!here) continue;
    r["path"] = *here;
    rules.push_back(std::move(r));
  }
  j["rules"] = std::move(rules);
  return j;
}

json Manager::rules_json(const MountNsView& ns) const {
  // Only rules of filesystems it sees, at its paths of them.
  json out = json::array();
  for (auto& r : rules_json()) {
    if (!r.contains("path") || !r["path"].is_string()) continue;
    const Filesystem* fs = resolve_path(r["path"].get<std::string>());
    auto here = fs ? ns.path_here(fs->major, fs->minor, r["path"].get<std::string>()) : std::nullopt;
    if (!here) continue;
    r["path"] = *here;
    out.push_back(std::move(r));
  }
  return out;
}

json Manager::rules_json() const {
  json out = json::array();
  for (const auto& r : config_.rules) {
    json j = rule_to_json(r);
    j["origin"] = "config";
    out.push_back(std::move(j));
  }
  for (const auto& [path, r] : runtime_rules_) {
    json j = rule_to_json(r);
    j["origin"] = "runtime";
    out.push_back(std::move(j));
  }
  return out;
}

Reply<json> Manager::add_rule(const Peer& peer, const json& p) {
  if (auto d = deny(Operation::change_rules, peer)) return tl::unexpected(*d);
  auto invalid = [](std::string reason) { return reply_error(errs::kInvalidRule, {{"reason", std::move(reason)}}); };
  std::optional<Rule> result;
  std::string path;
  bool has_rule = p.contains("rule") && !p["rule"].is_null();
  bool has_line = p.contains("line") && !p["line"].is_null();
  if (has_rule == has_line) return invalid("give either \"rule\" or \"line\"");
  std::optional<Rule> current;
  if (has_rule) {
    json rule = p["rule"];
    // ListRules replies carry "origin"; accept a listed rule sent back unchanged.
    if (rule.is_object()) rule.erase("origin");
    auto r = rule_from_json(rule);
    if (!r) return invalid(r.error().message());
    result = std::move(*r);
  } else {
    if (!p["line"].is_string()) return invalid("\"line\" must be a string");
    auto cmd = parse_seed_line(p["line"].get<std::string>());
    if (!cmd) return invalid(cmd.error().message());
    // "/data/" names the rule of "/data": normalise before looking up the rule it updates.
    if (auto n = normalise(cmd->path)) cmd->path = *n;
    if (auto it = runtime_rules_.find(cmd->path); it != runtime_rules_.end()) current = it->second;
    auto applied = apply_seed_command(current, *cmd);
    if (!applied) return invalid(applied.error().message());
    if (!*applied) {  // "!MOUNT": remove
      json rp = {{"path", cmd->path}};
      return remove_rule(peer, rp);
    }
    result = std::move(**applied);
  }
  auto n = normalise(result->path);
  if (!n) return invalid(fmt::format("\"{}\" is not an absolute path", result->path));
  result->path = *n;
  if (auto v = validate_rule(*result); !v) return invalid(v.error().message());
  for (const auto& r : config_.rules)
    if (r.path == result->path)
      return invalid(fmt::format("the rule for {} comes from the configuration file; change it there", r.path));
  // A rule names a mount point; refuse anything else now rather than silently never matching.
  if (!current && !runtime_rules_.count(result->path)) {
    const Filesystem* fs = resolve_path(result->path);
    bool is_mount = fs && std::find(fs->mounts.begin(), fs->mounts.end(), result->path) != fs->mounts.end();
    if (!is_mount) {
      std::string where = fs && !fs->mounts.empty() ? fmt::format(" (it is on the filesystem mounted at {})", fs->mounts.front()) : "";
      return invalid(fmt::format("{} is not a mount point{}; a rule names the mount point of a filesystem",
                                 result->path, where));
    }
    if (!fs->watched)
      return invalid(fmt::format("{} is a {} filesystem, which storwatch does not watch", result->path, fs->fstype));
  }
  if (auto s = db_->save_rule(result->path, rule_to_json(*result).dump()); !s)
    return reply_error(errs::kInvalidRule, {{"reason", "cannot save the rule: " + s.error().message()}});
  runtime_rules_[result->path] = *result;
  sync_space();
  return json{{"rules", rules_json()}};
}

Reply<json> Manager::remove_rule(const Peer& peer, const json& p) {
  if (auto d = deny(Operation::change_rules, peer)) return tl::unexpected(*d);
  auto it = p.find("path");
  if (it == p.end() || !it->is_string()) return tl::unexpected(invalid_param("path", "must be a string"));
  auto n = normalise(it->get<std::string>());
  if (!n) return reply_error(errs::kInvalidRule, {{"reason", fmt::format("\"{}\" is not an absolute path", it->get<std::string>())}});
  for (const auto& r : config_.rules)
    if (r.path == *n)
      return reply_error(errs::kInvalidRule,
                         {{"reason", fmt::format("the rule for {} comes from the configuration file; change it there", *n)}});
  if (!runtime_rules_.count(*n))
    return reply_error(errs::kInvalidRule, {{"reason", fmt::format("there is no rule for {}", *n)}});
  if (auto s = db_->delete_rule(*n); !s)
    return reply_error(errs::kInvalidRule, {{"reason", "cannot remove the rule: " + s.error().message()}});
  runtime_rules_.erase(*n);
  sync_space();
  return json{{"rules", rules_json()}};
}

Reply<json> Manager::doctor(const Peer& peer) {
  json sources = json::array();
  for (const auto& s : probe_sources()) {
    json j = {{"name", s.name}, {"available", s.available}, {"types", s.types}};
    if (s.name == "quota-netlink") {
      // What the running listener has seen, rather than what a fresh probe says.
      if (quota_) {
        j["available"] = true;
        j["reason"] = fmt::format(
            "VFS_DQUOT family {}, group \"events\" {}: {} warnings ({} sent by processes, not the kernel), "
            "{} malformed messages dropped{}, {} socket overruns",
            quota_->family().family_id, quota_->family().group_id, quota_->warnings(), quota_->from_user_space(),
            quota_->malformed(), quota_->last_error().empty() ? "" : " (last: " + quota_->last_error() + ")",
            quota_->overruns());
        j["counters"] = {{"warnings", quota_->warnings()},
                         {"malformed", quota_->malformed()},
                         {"from_user_space", quota_->from_user_space()},
                         {"overruns", quota_->overruns()}};
      } else if (!quota_unavailable_.empty()) {
        j["available"] = false;
        j["reason"] = quota_unavailable_;
      }
    } else if (s.name == "ebpf-enospc" && (enospc_ || !enospc_unavailable_.empty())) {
      // Whether the running daemon has the probe loaded, and what it counted.
      j["available"] = static_cast<bool>(enospc_);
      j["reason"] = enospc_ ? enospc_->describe() : enospc_unavailable_;
      if (enospc_) {
        auto c = enospc_->counters();
        j["counters"] = {{"failed_calls", c.failures}, {"events", c.events}, {"keys_folding", c.keys},
                         {"lost", c.lost}};
        j["cost"] = enospc_->cost();
      }
    } else if (s.name == "ebpf-block" && (bpf_block_ || !bpf_block_unavailable_.empty())) {
      // Whether the running daemon has the program loaded: block.io_error comes from it or the log.
      j["available"] = static_cast<bool>(bpf_block_);
      j["reason"] = bpf_block_ ? "loaded on the block_rq_error tracepoint; the kernel log's block lines are ignored"
                               : bpf_block_unavailable_;
      if (bpf_block_) j["counters"] = {{"failed_requests", bpf_block_->records()}, {"lost", bpf_block_->lost()}};
    } else if (!s.reason.empty()) {
      j["reason"] = s.reason;
    }
    sources.push_back(std::move(j));
  }
  json missing = json::array();
  for (const auto& m : missing_capabilities()) missing.push_back({{"name", m.name}, {"disables", m.disables}});
  json sinks = json::array();
  for (const auto& st : sink_status()) {
    json j = {{"name", st.name}, {"state", st.state},         {"cursor", st.cursor},
              {"lag", st.lag()}, {"delivered", st.delivered}, {"failures", st.failures}};
    if (!st.last_error.empty()) j["last_error"] = st.last_error;
    if (st.last_delivery) j["last_delivery"] = format_time(*st.last_delivery);
    sinks.push_back(std::move(j));
  }
  return json{{"sources", sources},
              {"version", STORWATCH_VERSION},
              {"journal_id", bus_->journal_id()},
              {"journaled_seq", journal_->journaled_seq()},
              {"journal_healthy", journal_->healthy()},
              {"journal_buffered", journal_->buffered()},
              {"last_seq", bus_->last_seq()},
              {"uid", peer.uid},
              {"capabilities", effective_capabilities()},
              {"missing_capabilities", missing},
              {"sinks", sinks}};
}

}  // namespace storwatch::daemon
