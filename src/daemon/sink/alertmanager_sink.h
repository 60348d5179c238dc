// AlertmanagerSink: conditions storwatch reports, as alerts on Alertmanager's v2 API (POST
// /api/v2/alerts), so its grouping, routing, silences and receivers apply:
//   StorwatchSpaceThreshold  space.threshold below a level; resolved by the same level's "above"
//   StorwatchReadOnly        fs.readonly; resolved by fs.writable
//   StorwatchShutdown        fs.shutdown; resolved by fs.writable (mounted again)
//   StorwatchIOErrors        block.io_error; firing until `io_error_hold` after the last error
// Alertmanager resolves an alert it has not heard of within its resolve_timeout, so firing alerts
// are sent again every `resend` by a thread of the sink's own. Which alerts fire is kept in memory:
// after a restart an alert whose condition is not reported again is resolved by Alertmanager at its
// resolve_timeout (docs/sinks.md).
//
// AlertBook is the pure part (events in, alerts out); the sink adds HTTP. deliver() runs on the
// SinkRunner's thread, the resend on the sink's; both take the book's mutex, never during a request.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/sink/sink.h"

namespace storwatch::daemon {

struct AlertmanagerOptions {
  std::string url;  // http://host:port, optionally with a path prefix
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds resend{60000};
  std::chrono::milliseconds io_error_hold{std::chrono::minutes(5)};
  std::string host;  // the `host` label; the machine's host name when empty
};

// Alert state, from events. Not thread-safe (the sink locks it).
class AlertBook {
 public:
  using Time = std::chrono::system_clock::time_point;
  AlertBook(std::string host, std::chrono::milliseconds io_error_hold)
      : host_(std::move(host)), io_hold_(io_error_hold) {}

  // Whether `type` can start or end an alert.
  static bool relevant(std::string_view type);
  // Alerts (Alertmanager's postable alert JSON) this event starts, updates or resolves.
  std::vector<nlohmann::json> apply(const Event& e);
  // Every alert firing at `now`, for the periodic resend; I/O error alerts past their end are
  // dropped.
  std::vector<nlohmann::json> firing(Time now);
  size_t size() const { return firing_.size(); }

 private:
  struct Alert {
    nlohmann::json labels, annotations;
    Time starts;
    std::optional<Time> ends;  // I/O errors: when it stops firing without news
  };
  static nlohmann::json to_json(const Alert& a, std::optional<Time> ends);
  nlohmann::json labels(const std::string& alertname, const Event& e) const;
  std::vector<nlohmann::json> resolve(const std::string& key, const Event& e);

  std::string host_;
  std::chrono::milliseconds io_hold_;
  std::map<std::string, Alert> firing_;  // key: alertname|dev[|level_id]
};

class AlertmanagerSink final : public Sink {
 public:
  explicit AlertmanagerSink(AlertmanagerOptions o);
  ~AlertmanagerSink() override;
  std::string name() const override { return "alertmanager"; }
  bool wants(const Event& e) const override { return AlertBook::relevant(e.type); }
  [[nodiscard]] Result<size_t> deliver(std::span<const EventPtr> events) override;

 private:
  [[nodiscard]] Result<void> post(const std::vector<nlohmann::json>& alerts) const;
  void resend_loop();

  AlertmanagerOptions options_;
  std::string base_, prefix_;  // scheme://host:port and the path before /api/v2/alerts
  std::mutex mu_;
  AlertBook book_;
  static constexpr size_t kUnsentMax = 1000;
  std::vector<nlohmann::json> unsent_;  // of a failed POST, sent with the next
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread resender_;
};

// RFC 3339 in UTC with milliseconds, as Alertmanager reads it.
std::string rfc3339(std::chrono::system_clock::time_point t);

}  // namespace storwatch::daemon
