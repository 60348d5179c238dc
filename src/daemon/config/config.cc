#include "daemon/config/config.h"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

// Debian builds toml++ as a shared library with exceptions; they are caught in parse_toml().
#include <toml++/toml.h>

#include "daemon/sink/metrics_server.h"

namespace storwatch::daemon {

const std::string_view kDefaultConfig = R"(# storwatchd configuration (TOML). Every key is optional; these are the defaults.

[daemon]
# The Varlink socket (io.storwatch). --socket overrides it.
socket = "/run/storwatch/io.storwatch"
# Rules set at runtime, levels crossed, sequence numbers. --state-dir overrides it.
state_dir = "/var/lib/storwatch"

[watch]
# Every real, writable filesystem is watched. Pseudo filesystems (proc, sysfs, cgroup, devpts,
# debugfs, tracefs, ...), image filesystems (squashfs, erofs, iso9660) and read-only mounts are not.
skip_fstypes = []      # more filesystem types not to watch
watch_fstypes = []     # types to watch although they are in the built-in skip list
skip_paths = []        # mount points not to watch (with everything mounted below them)
watch_readonly = false # also watch read-only mounts

[thresholds]
# statfs runs off the event loop; one that takes longer marks the filesystem unresponsive.
statfs_timeout = "5s"
# Polling adapts between these: faster as free space nears a level or the fill rate rises.
poll_min = "100ms"
poll_max = "5s"
# Levels for every watched filesystem that has no rule of its own. "Free" is what df shows as
# available (f_bavail, f_favail). An empty list polls only filesystems that have rules.
levels = [
  { resource = "blocks", below = "10%", severity = "warning" },
  { resource = "blocks", below = "5%",  severity = "error" },
  { resource = "blocks", below = "1%",  severity = "critical" },
  { resource = "inodes", below = "10%", severity = "warning" },
  { resource = "inodes", below = "5%",  severity = "error" },
  { resource = "inodes", below = "1%",  severity = "critical" },
]

# Rules for particular filesystems replace the default levels there; add any number:
# [[rule]]
# path = "/data"
# levels = [ { resource = "blocks", below = "20G" }, { resource = "inodes", below = "2%" } ]
# events = true       # errors, read-only, ENOSPC events for this filesystem
# thresholds = true   # level events

[limits]
# What one client may cost the daemon (docs/security.md). A client over a limit gets the error
# io.storwatch.LimitExceeded and is disconnected.
clients = 1024                 # connections at once (the fd limit is raised to fit)
clients_per_uid = 128          # connections of one uid at once
message_bytes = 65536          # largest request
output_bytes = 4194304         # reply bytes a client may leave unread
requests_per_second = 200      # sustained requests per connection; 0: no limit
request_burst = 400            # requests a connection may send at once
subscriptions_per_process = 32 # concurrent Subscribe streams of one client process
queue_events = 4096            # events queued per subscriber before it gets stream.lost

[journal]
# Every event is kept in the state database (SQLite, WAL) for `storwatch history` and for clients
# resuming with --after. The oldest events go first when either limit is reached.
max_age = "30d"
max_size = "256M"
# Events wait in memory (at most this many) while the journal's disk is full; beyond that they are
# recorded as lost (a stream.lost entry with the count).
buffer_events = 100000

[fold]
# The first of a flood of equal events is sent at once; equal ones in the window that follows are
# sent as one event with their count. "0s" turns folding off.
window = "1s"
max_keys = 4096

[sources]
# eBPF probe on syscall exits: space.enospc / space.edquot the moment a syscall fails with
# ENOSPC or EDQUOT, with the process. Costs every syscall a little (docs/performance.md).
ebpf_enospc = true
# eBPF program on the block layer's block_rq_error tracepoint: every failed request, with its
# length (the kernel log, the fallback, prints at most 10 per 5 s). Costs nothing without errors.
ebpf_block = true
# The kernel's quota warnings (generic netlink VFS_DQUOT, what quota_nld reads): quota.warning.
# Costs nothing until a quota limit is crossed.
quota_netlink = true

[mounts]
# Where mount changes come from: "fanotify" (fanotify mount notifications and statmount, Linux
# 6.15+: an attach or detach costs the same at any table size), "mountinfo" (re-read and diff
# /proc/self/mountinfo on every change: cost grows with the table), or "auto" (fanotify when this
# kernel has it). See docs/performance.md.
backend = "auto"

[replay]
# A FIFO whose lines (JSON events: {"type": ..., "fs": PATH, "detail": {...}}) are emitted as
# events: for demonstrations, recorded streams and tests. Off when empty.
fifo = ""

[policy]
# Who may do what over the socket, by "*", "uid:N", "gid:N" (also a supplementary group),
# "user:NAME", "group:NAME" or a user name. Root (uid 0) may always do everything. Anyone who can
# open the socket (mode 0666) is a client; clients in another mount namespace see only its
# filesystems, at its paths (docs/security.md).
subscribe = ["*"]         # Subscribe (storwatch monitor, mounts --follow)
query = ["*"]             # ListFilesystems, GetFilesystem, ListMounts, ListRules, ListEvents, Doctor
rules = ["uid:0"]         # AddRule, RemoveRule
process_fields = ["uid:0"] # see pid, uid, comm, cgroup of events other users caused (own: always)
kernel_text = ["uid:0"]   # see kernel log text in fs.* events (detail.message, detail.comm)

[metrics]
# The Prometheus endpoint (http://ADDRESS/metrics), e.g. "127.0.0.1:9639"; off when empty.
# storwatchd --metrics ADDRESS overrides it. Anyone who reaches the address sees mount points.
listen = ""

[sinks.journald]
# Every event as a structured journal entry: MESSAGE (the readable line), a MESSAGE_ID per type,
# PRIORITY from the severity, STORWATCH_* fields. "auto": on when journald's socket
# (/run/systemd/journal/socket) exists at start; true or false to choose.
enabled = "auto"

[sinks.hooks]
# Executables run for each event they select by name (SELECTOR-NAME: "all-log", "fs-mail",
# "space.threshold-page"), with the event as JSON on stdin and STORWATCH_* variables in the
# environment (docs/sinks.md). A directory that does not exist has no hooks; "" turns hooks off.
dir = "/etc/storwatch/hooks.d"
concurrency = 4  # hooks running at once
timeout = "30s"  # then SIGTERM to the hook's process group, SIGKILL 2 s later

[sinks.alertmanager]
# Alertmanager's URL (e.g. "http://127.0.0.1:9093"): levels crossed, read-only filesystems,
# shutdowns and I/O errors become alerts there, resolved when the condition clears. Off when empty.
url = ""
timeout = "10s"       # per request
resend = "1m"         # firing alerts are sent again this often (below Alertmanager's resolve_timeout)
io_error_hold = "5m"  # an I/O error alert fires until this long after the device's last error

[sinks.nats]
# NATS JetStream for fleets (docs/fleet.md): every event is published on storwatch.<host>.<type>
# with message id "<journal_id>:<seq>", so the stream holds each event once, also after outages.
# Off when the url is empty; e.g. "nats://nats.example:4222" (several separated by commas).
url = ""
stream = "STORWATCH"
host = ""                    # the host token of the subjects; empty: the short hostname
create_stream = true         # create the stream (file storage, subjects storwatch.>) when missing
duplicate_window = "10m"     # the stream's deduplication window, for a stream created here
timeout = "5s"               # connect, and wait for each event's acknowledgement
)";

Result<std::chrono::milliseconds> parse_duration(std::string_view text) {
  double v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  // !(v >= 0) also refuses NaN; "inf" and huge values are refused below, before the conversion
  // to an integer (undefined behaviour out of range).
  if (ec != std::errc() || !(v >= 0))
    return fail_invalid(fmt::format("invalid duration \"{}\": expected e.g. 5s, 100ms, 2m", text));
  std::string_view unit(p, text.data() + text.size() - p);
  double ms;
  if (unit.empty() || unit == "s")
    ms = v * 1000;
  else if (unit == "ms")
    ms = v;
  else if (unit == "m" || unit == "min")
    ms = v * 60000;
  else if (unit == "h")
    ms = v * 3600000;
  else if (unit == "d")
    ms = v * 86400000;
  else
    return fail_invalid(fmt::format("invalid duration \"{}\": unknown unit \"{}\"", text, unit));
  if (!(ms <= 1e15))  // about 30000 years
    return fail_invalid(fmt::format("invalid duration \"{}\": too long", text));
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

namespace {

// Converts a TOML value to JSON so rules share rule_from_json with the protocol.
nlohmann::json to_json(const toml::node& n) {
  if (auto t = n.as_table()) {
    nlohmann::json j = nlohmann::json::object();
    for (auto&& [k, v] : *t) j[std::string(k.str())] = to_json(v);
    return j;
  }
  if (auto a = n.as_array()) {
    nlohmann::json j = nlohmann::json::array();
    for (auto&& v : *a) j.push_back(to_json(v));
    return j;
  }
  if (auto s = n.as_string()) return s->get();
  if (auto i = n.as_integer()) return i->get();
  if (auto f = n.as_floating_point()) return f->get();
  if (auto b = n.as_boolean()) return b->get();
  return nullptr;
}

class Reader {
 public:
  explicit Reader(std::string_view origin) : origin_(origin) {}

  Error err(std::string_view where, std::string_view what) const {
    return Error::invalid(fmt::format("{}: {}: {}", origin_, where, what));
  }

  // Checks that a table has only known keys.
  Result<void> known(const toml::table& t, std::string_view name, std::set<std::string_view> keys) const {
    for (auto&& [k, v] : t)
      if (!keys.count(k.str())) return fail(err(name, fmt::format("unknown key \"{}\"", k.str())));
    return {};
  }

  Result<std::string> string(const toml::table& t, std::string_view table, std::string_view key,
                             std::string fallback) const {
    auto n = t.get(key);
    if (!n) return fallback;
    if (!n->is_string()) return fail(err(fmt::format("{}.{}", table, key), "must be a string"));
    return std::string(n->as_string()->get());
  }

  Result<bool> boolean(const toml::table& t, std::string_view table, std::string_view key, bool fallback) const {
    auto n = t.get(key);
    if (!n) return fallback;
    if (!n->is_boolean()) return fail(err(fmt::format("{}.{}", table, key), "must be true or false"));
    return n->as_boolean()->get();
  }

  Result<size_t> count(const toml::table& t, std::string_view table, std::string_view key, size_t fallback,
                       size_t min, size_t max) const {
    auto n = t.get(key);
    if (!n) return fallback;
    if (!n->is_integer()) return fail(err(fmt::format("{}.{}", table, key), "must be an integer"));
    int64_t v = n->as_integer()->get();
    if (v < static_cast<int64_t>(min) || v > static_cast<int64_t>(max))
      return fail(err(fmt::format("{}.{}", table, key), fmt::format("must be between {} and {}", min, max)));
    return static_cast<size_t>(v);
  }

  Result<std::vector<std::string>> strings(const toml::table& t, std::string_view table,
                                           std::string_view key) const {
    std::vector<std::string> out;
    auto n = t.get(key);
    if (!n) return out;
    auto a = n->as_array();
    if (!a) return fail(err(fmt::format("{}.{}", table, key), "must be an array of strings"));
    for (auto&& v : *a) {
      if (!v.is_string()) return fail(err(fmt::format("{}.{}", table, key), "must be an array of strings"));
      out.emplace_back(v.as_string()->get());
    }
    return out;
  }

  Result<std::chrono::milliseconds> duration(const toml::table& t, std::string_view table,
                                             std::string_view key, std::chrono::milliseconds fallback) const {
    if (!t.get(key)) return fallback;
    auto s = string(t, table, key, "");
    if (!s) return fail(s.error());
    auto d = parse_duration(*s);  // an empty string is an error, not the default
    if (!d) return fail(err(fmt::format("{}.{}", table, key), d.error().message()));
    return *d;
  }

 private:
  std::string_view origin_;
};

#define CFG_TRY(lhs, expr)              \
  do {                                  \
    auto r_ = (expr);                   \
    if (!r_) return fail(r_.error());   \
    lhs = std::move(*r_);               \
  } while (0)

Result<void> apply_sinks(SinksConfig& c, const toml::table& root, const Reader& rd) {
  if (auto r = rd.known(root, "sinks", {"journald", "hooks", "alertmanager", "nats"}); !r) return r;
  auto section = [&](std::string_view name) -> Result<const toml::table*> {
    auto n = root.get(name);
    if (!n) return static_cast<const toml::table*>(nullptr);
    if (!n->is_table()) return fail(rd.err(fmt::format("sinks.{}", name), "must be a table"));
    return n->as_table();
  };
  const toml::table* t;
  CFG_TRY(t, section("journald"));
  if (t) {
    if (auto r = rd.known(*t, "sinks.journald", {"enabled"}); !r) return r;
    if (auto n = t->get("enabled")) {
      if (auto b = n->as_boolean()) c.journald = b->get();
      else if (n->is_string() && n->as_string()->get() == "auto") c.journald.reset();
      else return fail(rd.err("sinks.journald.enabled", "must be true, false or \"auto\""));
    }
  }
  CFG_TRY(t, section("hooks"));
  if (t) {
    if (auto r = rd.known(*t, "sinks.hooks", {"dir", "concurrency", "timeout"}); !r) return r;
    CFG_TRY(c.hooks_dir, rd.string(*t, "sinks.hooks", "dir", c.hooks_dir));
    CFG_TRY(c.hooks_concurrency, rd.count(*t, "sinks.hooks", "concurrency", c.hooks_concurrency, 1, 256));
    CFG_TRY(c.hooks_timeout, rd.duration(*t, "sinks.hooks", "timeout", c.hooks_timeout));
    if (c.hooks_timeout.count() < 10) return fail(rd.err("sinks.hooks.timeout", "must be at least 10ms"));
  }
  CFG_TRY(t, section("alertmanager"));
  if (t) {
    if (auto r = rd.known(*t, "sinks.alertmanager", {"url", "timeout", "resend", "io_error_hold"}); !r) return r;
    CFG_TRY(c.alertmanager_url, rd.string(*t, "sinks.alertmanager", "url", c.alertmanager_url));
    if (!c.alertmanager_url.empty() && c.alertmanager_url.rfind("http://", 0) != 0 &&
        c.alertmanager_url.rfind("https://", 0) != 0)
      return fail(rd.err("sinks.alertmanager.url", "must start with http:// or https://"));
    CFG_TRY(c.alertmanager_timeout, rd.duration(*t, "sinks.alertmanager", "timeout", c.alertmanager_timeout));
    CFG_TRY(c.alertmanager_resend, rd.duration(*t, "sinks.alertmanager", "resend", c.alertmanager_resend));
    CFG_TRY(c.alertmanager_io_error_hold,
            rd.duration(*t, "sinks.alertmanager", "io_error_hold", c.alertmanager_io_error_hold));
    if (c.alertmanager_timeout.count() < 10 || c.alertmanager_resend.count() < 100)
      return fail(rd.err("sinks.alertmanager", "need timeout >= 10ms and resend >= 100ms"));
  }
  CFG_TRY(t, section("nats"));
  if (t) {
    if (auto r = rd.known(*t, "sinks.nats", {"url", "stream", "host", "create_stream", "duplicate_window", "timeout"});
        !r)
      return r;
    CFG_TRY(c.nats_url, rd.string(*t, "sinks.nats", "url", c.nats_url));
    CFG_TRY(c.nats_stream, rd.string(*t, "sinks.nats", "stream", c.nats_stream));
    CFG_TRY(c.nats_host, rd.string(*t, "sinks.nats", "host", c.nats_host));
    CFG_TRY(c.nats_create_stream, rd.boolean(*t, "sinks.nats", "create_stream", c.nats_create_stream));
    CFG_TRY(c.nats_duplicate_window, rd.duration(*t, "sinks.nats", "duplicate_window", c.nats_duplicate_window));
    CFG_TRY(c.nats_timeout, rd.duration(*t, "sinks.nats", "timeout", c.nats_timeout));
    if (c.nats_stream.empty() || c.nats_stream.find_first_of(".*> \t") != std::string::npos)
      return fail(rd.err("sinks.nats.stream", "must be a name without '.', '*', '>' or spaces"));
    if (c.nats_timeout.count() < 10) return fail(rd.err("sinks.nats.timeout", "must be at least 10ms"));
    if (c.nats_duplicate_window.count() < 1000)
      return fail(rd.err("sinks.nats.duplicate_window", "must be at least 1s"));
  }
  return {};
}

Result<void> apply(Config& c, const toml::table& root, std::string_view origin) {
  Reader rd(origin);
  if (auto r = rd.known(root, "top level", {"daemon", "watch", "thresholds", "rule", "limits", "journal", "fold", "replay", "sources", "mounts", "metrics", "policy", "sinks"});
      !r)
    return r;
  auto section = [&](std::string_view name) -> Result<const toml::table*> {
    auto n = root.get(name);
    if (!n) return static_cast<const toml::table*>(nullptr);
    if (!n->is_table()) return fail(rd.err(name, "must be a table"));
    return n->as_table();
  };
  const toml::table* t;
  CFG_TRY(t, section("daemon"));
  if (t) {
    if (auto r = rd.known(*t, "daemon", {"socket", "state_dir"}); !r) return r;
    CFG_TRY(c.socket, rd.string(*t, "daemon", "socket", c.socket));
    CFG_TRY(c.state_dir, rd.string(*t, "daemon", "state_dir", c.state_dir));
  }
  CFG_TRY(t, section("watch"));
  if (t) {
    if (auto r = rd.known(*t, "watch", {"skip_fstypes", "watch_fstypes", "skip_paths", "watch_readonly"}); !r)
      return r;
    CFG_TRY(c.skip_fstypes, rd.strings(*t, "watch", "skip_fstypes"));
    CFG_TRY(c.watch_fstypes, rd.strings(*t, "watch", "watch_fstypes"));
    CFG_TRY(c.skip_paths, rd.strings(*t, "watch", "skip_paths"));
    CFG_TRY(c.watch_readonly, rd.boolean(*t, "watch", "watch_readonly", c.watch_readonly));
  }
  CFG_TRY(t, section("thresholds"));
  if (t) {
    if (auto r = rd.known(*t, "thresholds", {"statfs_timeout", "poll_min", "poll_max", "levels"}); !r) return r;
    CFG_TRY(c.statfs_timeout, rd.duration(*t, "thresholds", "statfs_timeout", c.statfs_timeout));
    CFG_TRY(c.poll_min, rd.duration(*t, "thresholds", "poll_min", c.poll_min));
    CFG_TRY(c.poll_max, rd.duration(*t, "thresholds", "poll_max", c.poll_max));
    if (c.poll_min.count() < 10 || c.poll_max < c.poll_min)
      return fail(rd.err("thresholds", "need 10ms <= poll_min <= poll_max"));
    if (c.statfs_timeout.count() < 10) return fail(rd.err("thresholds.statfs_timeout", "must be at least 10ms"));
    if (auto n = t->get("levels")) {
      if (!n->is_array()) return fail(rd.err("thresholds.levels", "must be an array of level tables"));
      nlohmann::json rule = {{"path", "/"}, {"levels", to_json(*n)}};
      auto parsed = rule_from_json(rule);
      if (!parsed) return fail(rd.err("thresholds.levels", parsed.error().message()));
      c.default_levels = parsed->levels;
    }
  }
  if (auto n = root.get("rule")) {
    auto a = n->as_array();
    if (!a) return fail(rd.err("rule", "must be an array of tables ([[rule]])"));
    size_t i = 0;
    for (auto&& v : *a) {
      ++i;
      if (!v.is_table()) return fail(rd.err(fmt::format("rule #{}", i), "must be a table"));
      auto parsed = rule_from_json(to_json(v));
      if (!parsed) return fail(rd.err(fmt::format("rule #{}", i), parsed.error().message()));
      for (const auto& existing : c.rules)
        if (existing.path == parsed->path)
          return fail(rd.err(fmt::format("rule #{}", i), fmt::format("a second rule for {}", parsed->path)));
      c.rules.push_back(std::move(*parsed));
    }
  }
  CFG_TRY(t, section("limits"));
  if (t) {
    if (auto r = rd.known(*t, "limits", {"clients", "clients_per_uid", "message_bytes", "output_bytes",
                                         "requests_per_second", "request_burst", "subscriptions_per_process",
                                         "queue_events"});
        !r)
      return r;
    CFG_TRY(c.limits.max_clients, rd.count(*t, "limits", "clients", c.limits.max_clients, 1, 100000));
    CFG_TRY(c.limits.max_clients_per_uid,
            rd.count(*t, "limits", "clients_per_uid", c.limits.max_clients_per_uid, 1, 100000));
    CFG_TRY(c.limits.max_output, rd.count(*t, "limits", "output_bytes", c.limits.max_output, 64 << 10, 1 << 30));
    CFG_TRY(c.limits.requests_per_second,
            rd.count(*t, "limits", "requests_per_second", c.limits.requests_per_second, 0, 1000000));
    CFG_TRY(c.limits.request_burst, rd.count(*t, "limits", "request_burst", c.limits.request_burst, 1, 1000000));
    CFG_TRY(c.limits.max_message, rd.count(*t, "limits", "message_bytes", c.limits.max_message, 1024, 16 << 20));
    CFG_TRY(c.limits.max_subscriptions_per_process,
            rd.count(*t, "limits", "subscriptions_per_process", c.limits.max_subscriptions_per_process, 1, 10000));
    CFG_TRY(c.limits.queue_events, rd.count(*t, "limits", "queue_events", c.limits.queue_events, 16, 1 << 24));
  }
  CFG_TRY(t, section("journal"));
  if (t) {
    if (auto r = rd.known(*t, "journal", {"max_age", "max_size", "buffer_events"}); !r) return r;
    std::chrono::milliseconds age;
    CFG_TRY(age, rd.duration(*t, "journal", "max_age",
                             std::chrono::duration_cast<std::chrono::milliseconds>(c.journal_max_age)));
    if (age < std::chrono::seconds(60)) return fail(rd.err("journal.max_age", "must be at least 1m"));
    c.journal_max_age = std::chrono::duration_cast<std::chrono::seconds>(age);
    std::string size;
    CFG_TRY(size, rd.string(*t, "journal", "max_size", ""));
    if (!size.empty()) {
      auto a = parse_amount(size, Resource::blocks);
      if (!a || a->unit != Amount::Unit::absolute)
        return fail(rd.err("journal.max_size", fmt::format("\"{}\" is not a size like 256M or 1G", size)));
      if (a->value < (1u << 20)) return fail(rd.err("journal.max_size", "must be at least 1M"));
      c.journal_max_bytes = a->value;
    }
    CFG_TRY(c.journal_buffer_events,
            rd.count(*t, "journal", "buffer_events", c.journal_buffer_events, 1000, 10000000));
  }
  CFG_TRY(t, section("fold"));
  if (t) {
    if (auto r = rd.known(*t, "fold", {"window", "max_keys"}); !r) return r;
    CFG_TRY(c.fold_window, rd.duration(*t, "fold", "window", c.fold_window));
    CFG_TRY(c.fold_max_keys, rd.count(*t, "fold", "max_keys", c.fold_max_keys, 1, 1000000));
  }
  CFG_TRY(t, section("sources"));
  if (t) {
    if (auto r = rd.known(*t, "sources", {"ebpf_enospc", "ebpf_block", "quota_netlink"}); !r) return r;
    CFG_TRY(c.ebpf_enospc, rd.boolean(*t, "sources", "ebpf_enospc", c.ebpf_enospc));
    CFG_TRY(c.ebpf_block, rd.boolean(*t, "sources", "ebpf_block", c.ebpf_block));
    CFG_TRY(c.quota_netlink, rd.boolean(*t, "sources", "quota_netlink", c.quota_netlink));
  }
  CFG_TRY(t, section("sinks"));
  if (t) {
    if (auto r = apply_sinks(c.sinks, *t, rd); !r) return r;
  }
  CFG_TRY(t, section("metrics"));
  if (t) {
    if (auto r = rd.known(*t, "metrics", {"listen"}); !r) return r;
    CFG_TRY(c.metrics_listen, rd.string(*t, "metrics", "listen", c.metrics_listen));
    if (!c.metrics_listen.empty())
      if (auto a = parse_listen_address(c.metrics_listen); !a) return fail(rd.err("metrics.listen", a.error().message()));
  }
  CFG_TRY(t, section("mounts"));
  if (t) {
    if (auto r = rd.known(*t, "mounts", {"backend"}); !r) return r;
    std::string backend;
    const char* now = c.mounts_backend == MountsBackend::fanotify    ? "fanotify"
                      : c.mounts_backend == MountsBackend::mountinfo ? "mountinfo"
                                                                     : "auto";
    CFG_TRY(backend, rd.string(*t, "mounts", "backend", now));
    if (backend == "auto") c.mounts_backend = MountsBackend::automatic;
    else if (backend == "fanotify") c.mounts_backend = MountsBackend::fanotify;
    else if (backend == "mountinfo") c.mounts_backend = MountsBackend::mountinfo;
    else return fail(rd.err("mounts.backend", "must be \"auto\", \"fanotify\" or \"mountinfo\""));
  }
  CFG_TRY(t, section("replay"));
  if (t) {
    if (auto r = rd.known(*t, "replay", {"fifo"}); !r) return r;
    CFG_TRY(c.replay_fifo, rd.string(*t, "replay", "fifo", c.replay_fifo));
  }
  CFG_TRY(t, section("policy"));
  if (t) {
    auto p = parse_policy(to_json(*t), c.policy);
    if (!p) return fail(Error::invalid(fmt::format("{}: {}", origin, p.error().message())));
    c.policy = std::move(*p);
  }
  return {};
}

Result<toml::table> parse_toml(std::string_view text, std::string_view origin) {
  try {
    return toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return fail_invalid(fmt::format("{}:{}:{}: {}", origin, e.source().begin.line, e.source().begin.column,
                                    e.description()));
  }
}

}  // namespace

Result<Config> parse_config(std::string_view toml_text, std::string_view origin) {
  Config c;
  auto defaults = parse_toml(kDefaultConfig, "embedded default");
  if (!defaults) return fail(defaults.error());
  if (auto r = apply(c, *defaults, "embedded default"); !r) return fail(r.error());
  auto user = parse_toml(toml_text, origin);
  if (!user) return fail(user.error());
  if (auto r = apply(c, *user, origin); !r) return fail(r.error());
  return c;
}

Result<Config> load_config(const std::string& path, bool missing_ok) {
  std::ifstream in(path);
  if (!in) {
    int err = errno;
    if (missing_ok && err == ENOENT) return parse_config("", "embedded default");
    return fail_errno(err, fmt::format("reading {}", path));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace storwatch::daemon
