#include "daemon/sink/metrics_server.h"

#include <fmt/format.h>
#include <httplib.h>

#include <charconv>
#include <mutex>
#include <thread>

namespace storwatch::daemon {

namespace {

// Label values escape backslash, double quote and newline (exposition format 0.0.4).
std::string escape(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void sample(std::string_view name, const Labels& labels, uint64_t value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      bool first = true;
      for (const auto& [k, v] : labels) {
        if (!first) out_ += ',';
        first = false;
        fmt::format_to(std::back_inserter(out_), "{}=\"{}\"", k, escape(v));
      }
      out_ += '}';
    }
    fmt::format_to(std::back_inserter(out_), " {}\n", value);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

Labels fs_labels(const MetricsSnapshot::Filesystem& f) {
  return {{"dev", f.dev}, {"mount", f.mount}, {"fstype", f.fstype}};
}

}  // namespace

std::string render_metrics(const MetricsSnapshot& s) {
  Writer w;
  struct Gauge {
    const char* name;
    const char* help;
    uint64_t MetricsSnapshot::Filesystem::*field;
  };
  static const Gauge kUsage[] = {
      {"storwatch_filesystem_size_bytes", "Size of the filesystem (f_blocks * f_frsize).",
       &MetricsSnapshot::Filesystem::size_bytes},
      {"storwatch_filesystem_free_bytes", "Free bytes as df shows them: available to unprivileged users (f_bavail * f_frsize).",
       &MetricsSnapshot::Filesystem::free_bytes},
      {"storwatch_filesystem_files", "Inodes of the filesystem (f_files).", &MetricsSnapshot::Filesystem::files},
      {"storwatch_filesystem_files_free", "Free inodes as df -i shows them (f_favail).",
       &MetricsSnapshot::Filesystem::files_free},
  };
  for (const auto& g : kUsage) {
    w.family(g.name, "gauge", g.help);
    for (const auto& f : s.filesystems)
      if (f.has_usage) w.sample(g.name, fs_labels(f), f.*g.field);
  }
  w.family("storwatch_filesystem_level_crossed", "gauge",
           "1 while free space or inodes are below the level (after hysteresis), else 0.");
  for (const auto& f : s.filesystems)
    for (const auto& l : f.levels) {
      Labels ls = fs_labels(f);
      ls.insert(ls.end(), {{"resource", l.resource}, {"below", l.below}, {"severity", l.severity}});
      w.sample("storwatch_filesystem_level_crossed", ls, l.crossed ? 1 : 0);
    }
  w.family("storwatch_filesystem_healthy", "gauge",
           "1 when the filesystem's health is ok (no errors, writable, statfs answers), else 0.");
  for (const auto& f : s.filesystems) w.sample("storwatch_filesystem_healthy", fs_labels(f), f.health == "ok" ? 1 : 0);
  w.family("storwatch_filesystem_health", "gauge",
           "1 for the filesystem's current health: ok, errors, readonly, shutdown or stale.");
  for (const auto& f : s.filesystems) {
    Labels ls = fs_labels(f);
    ls.emplace_back("health", f.health);
    w.sample("storwatch_filesystem_health", ls, 1);
  }
  w.family("storwatch_filesystem_readonly", "gauge", "1 when the filesystem does not accept writes.");
  for (const auto& f : s.filesystems) w.sample("storwatch_filesystem_readonly", fs_labels(f), f.readonly ? 1 : 0);
  w.family("storwatch_filesystem_errors_total", "counter", "Filesystem errors counted since storwatchd started.");
  for (const auto& f : s.filesystems) w.sample("storwatch_filesystem_errors_total", fs_labels(f), f.error_count);

  w.family("storwatch_events_total", "counter", "Events published since storwatchd started, by type.");
  for (const auto& [type, n] : s.events_by_type) w.sample("storwatch_events_total", {{"type", type}}, n);
  w.family("storwatch_events_dropped_total", "counter",
           "Events dropped because sequence numbers could not be reserved.");
  w.sample("storwatch_events_dropped_total", {}, s.events_dropped);
  w.family("storwatch_last_seq", "gauge", "Sequence number of the last event published.");
  w.sample("storwatch_last_seq", {}, s.last_seq);
  w.family("storwatch_journal_lag_events", "gauge", "Events published but not yet written to the journal.");
  w.sample("storwatch_journal_lag_events", {}, s.last_seq > s.journaled_seq ? s.last_seq - s.journaled_seq : 0);
  w.family("storwatch_journal_buffered_events", "gauge", "Events waiting in memory for the journal's disk.");
  w.sample("storwatch_journal_buffered_events", {}, s.journal_buffered);
  w.family("storwatch_journal_healthy", "gauge", "1 while the journal is written, 0 while it fails.");
  w.sample("storwatch_journal_healthy", {}, s.journal_healthy ? 1 : 0);
  w.family("storwatch_subscribers", "gauge", "Subscribe streams open on the Varlink socket.");
  w.sample("storwatch_subscribers", {}, s.subscribers);
  w.family("storwatch_connections", "gauge", "Client connections open on the Varlink socket.");
  w.sample("storwatch_connections", {}, s.connections);
  w.family("storwatch_sink_up", "gauge", "1 while the sink delivers, 0 while it fails and retries.");
  for (const auto& k : s.sinks) w.sample("storwatch_sink_up", {{"sink", k.name}}, k.up ? 1 : 0);
  w.family("storwatch_sink_lag_events", "gauge", "Journaled events the sink has not delivered yet.");
  for (const auto& k : s.sinks) w.sample("storwatch_sink_lag_events", {{"sink", k.name}}, k.lag_events);
  return w.take();
}

Result<std::pair<std::string, int>> parse_listen_address(const std::string& address) {
  auto bad = [&](std::string_view why) {
    return fail_invalid(fmt::format("metrics address \"{}\": {} (expected HOST:PORT, e.g. 127.0.0.1:9639)",
                                    address, why));
  };
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return bad("no port");
  std::string host = address.substr(0, colon);
  std::string port_text = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return bad("no host (0.0.0.0 listens on every address)");
  int port = -1;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || port < 0 || port > 65535)
    return bad("the port must be a number from 0 to 65535");
  return std::make_pair(host, port);
}

struct MetricsServer::Impl {
  httplib::Server server;
  std::thread thread;
  std::mutex mu;
  std::string text;  // guarded by mu
};

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl, std::string bound)
    : impl_(std::move(impl)), bound_(std::move(bound)) {}

MetricsServer::~MetricsServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void MetricsServer::update(std::string text) {
  std::lock_guard lock(impl_->mu);
  impl_->text = std::move(text);
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& address) {
  auto hp = parse_listen_address(address);
  if (!hp) return fail(hp.error());
  auto [host, port] = *hp;
  auto impl = std::make_unique<Impl>();
  Impl* ip = impl.get();
  // Scrapes are rare and small: two workers bound the threads a burst of connections can take.
  impl->server.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a second daemon
  // share the port and answer every other scrape with its own numbers.
  impl->server.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  impl->server.set_keep_alive_timeout(2);
  impl->server.set_read_timeout(5, 0);
  impl->server.set_write_timeout(5, 0);
  impl->server.Get("/metrics", [ip](const httplib::Request&, httplib::Response& res) {
    std::string body;
    {
      std::lock_guard lock(ip->mu);
      body = ip->text;
    }
    res.set_content(std::move(body), "text/plain; version=0.0.4; charset=utf-8");
  });
  impl->server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("storwatchd: metrics at /metrics\n", "text/plain");
  });
  if (port == 0) {
    port = impl->server.bind_to_any_port(host);
    if (port < 0) return fail_errno(errno ? errno : EADDRNOTAVAIL, fmt::format("metrics: listening on {}", address));
  } else if (!impl->server.bind_to_port(host, port)) {
    return fail_errno(errno ? errno : EADDRINUSE, fmt::format("metrics: listening on {}", address));
  }
  impl->thread = std::thread([ip] { ip->server.listen_after_bind(); });
  std::string bound = host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                                           : fmt::format("{}:{}", host, port);
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl), std::move(bound)));
}

}  // namespace storwatch::daemon
