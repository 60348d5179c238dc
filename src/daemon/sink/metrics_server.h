// MetricsServer: the Prometheus /metrics endpoint (docs/sinks.md). The state it reports belongs to
// the event loop, so the loop copies it into a MetricsSnapshot, renders it as text and hands the
// text to update(); the HTTP thread (cpp-httplib, its own threads) only serves the last text it
// was given, so a slow or hostile scraper never touches loop-owned state or blocks the loop.
// update() and address() are thread-safe; create and destroy on one thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"

namespace storwatch::daemon {

struct MetricsSnapshot {
  struct Level {
    std::string resource;  // blocks or inodes
    std::string below;     // as configured: "10%", "5G"
    std::string severity;
    bool crossed = false;
  };
  struct Filesystem {
    std::string dev, mount, fstype;
    bool has_usage = false;  // false until statfs answered once (or when the fs is not polled)
    uint64_t size_bytes = 0, free_bytes = 0;  // free: f_bavail * f_frsize, what df shows
    uint64_t files = 0, files_free = 0;       // files_free: f_favail
    std::string health;                       // ok, errors, readonly, shutdown, stale
    bool readonly = false;
    uint64_t error_count = 0;
    std::vector<Level> levels;
  };
  struct Sink {
    std::string name;
    bool up = false;
    uint64_t lag_events = 0;  // journaled events this sink has not delivered yet
  };
  std::vector<Filesystem> filesystems;
  std::map<std::string, uint64_t> events_by_type;  // published since the daemon started
  uint64_t last_seq = 0, journaled_seq = 0, journal_buffered = 0, events_dropped = 0;
  bool journal_healthy = true;
  uint64_t subscribers = 0, connections = 0;
  std::vector<Sink> sinks;
};

// The Prometheus text exposition format (version 0.0.4) of `s`; every name starts storwatch_.
std::string render_metrics(const MetricsSnapshot& s);

class MetricsServer {
 public:
  // Listens on `address` ("127.0.0.1:9639", "[::1]:9639", "0.0.0.0:9639"; port 0 picks a free
  // one) and serves GET /metrics from a thread of its own.
  [[nodiscard]] static Result<std::unique_ptr<MetricsServer>> start(const std::string& address);
  ~MetricsServer();  // stops serving and joins the thread

  // The text served from now on (any thread).
  void update(std::string text);
  // "host:port" actually bound.
  const std::string& address() const { return bound_; }

 private:
  struct Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl, std::string bound);
  std::unique_ptr<Impl> impl_;
  std::string bound_;
};

// Splits "host:port" / "[v6]:port"; the port must be a number 0-65535.
[[nodiscard]] Result<std::pair<std::string, int>> parse_listen_address(const std::string& address);

}  // namespace storwatch::daemon
