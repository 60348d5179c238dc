#include "daemon/sink/alertmanager_sink.h"

#include <httplib.h>
#include <time.h>
#include <unistd.h>

#include <fmt/format.h>

#include "base/log.h"

namespace storwatch::daemon {

using nlohmann::json;

std::string rfc3339(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

namespace {

std::string str(const json& d, const char* key) {
  auto it = d.find(key);
  if (it == d.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string where(const Event& e) {
  if (e.fs) return e.fs->mounts.empty() ? e.fs->source : e.fs->mounts.front();
  if (e.device) return "/dev/" + e.device->name;
  return "?";
}

}  // namespace

bool AlertBook::relevant(std::string_view type) {
  return type == "space.threshold" || type == "fs.readonly" || type == "fs.writable" || type == "fs.shutdown" ||
         type == "block.io_error";
}

json AlertBook::labels(const std::string& alertname, const Event& e) const {
  json l = {{"alertname", alertname}, {"host", host_}};
  if (e.fs) {
    l["dev"] = e.fs->dev();
    if (!e.fs->mounts.empty()) l["mount"] = e.fs->mounts.front();
    if (!e.fs->fstype.empty()) l["fstype"] = e.fs->fstype;
  }
  if (e.device) {
    l["device"] = e.device->name;
    if (!e.fs) l["dev"] = e.device->dev();
  }
  return l;
}

json AlertBook::to_json(const Alert& a, std::optional<Time> ends) {
  json j = {{"labels", a.labels}, {"annotations", a.annotations}, {"startsAt", rfc3339(a.starts)}};
  if (ends) j["endsAt"] = rfc3339(*ends);
  return j;
}

std::vector<json> AlertBook::resolve(const std::string& key, const Event& e) {
  auto it = firing_.find(key);
  if (it == firing_.end()) return {};
  Time ends = std::max(e.time, it->second.starts);
  json j = to_json(it->second, ends);
  firing_.erase(it);
  return {j};
}

std::vector<json> AlertBook::apply(const Event& e) {
  const std::string dev = e.fs ? e.fs->dev() : e.device ? e.device->dev() : "";
  const json& d = e.detail;
  if (e.type == "space.threshold") {
    std::string key = "StorwatchSpaceThreshold|" + dev + "|" + str(d, "level_id");
    if (str(d, "direction") == "above") return resolve(key, e);
    Alert a;
    a.labels = labels("StorwatchSpaceThreshold", e);
    a.labels["resource"] = str(d, "resource");
    a.labels["level"] = str(d, "level");
    a.labels["severity"] = str(d, "level_severity").empty() ? std::string(severity_name(e.severity))
                                                            : str(d, "level_severity");
    a.annotations = {{"summary", fmt::format("free {} on {} below {}", str(d, "resource"), where(e), str(d, "level"))},
                     {"description", event_to_line(e)}};
    a.starts = e.time;
    if (auto it = firing_.find(key); it != firing_.end()) a.starts = it->second.starts;
    firing_[key] = a;
    return {to_json(a, std::nullopt)};
  }
  if (e.type == "fs.readonly" || e.type == "fs.shutdown") {
    bool ro = e.type == "fs.readonly";
    std::string name = ro ? "StorwatchReadOnly" : "StorwatchShutdown";
    std::string key = name + "|" + dev;
    if (auto it = firing_.find(key); it != firing_.end()) return {};  // already firing
    Alert a;
    a.labels = labels(name, e);
    a.labels["severity"] = std::string(severity_name(e.severity));
    a.annotations = {{"summary", ro ? fmt::format("{} is read-only ({})", where(e), str(d, "cause"))
                                    : fmt::format("{} was shut down by its filesystem", where(e))},
                     {"description", event_to_line(e)}};
    a.starts = e.time;
    firing_[key] = a;
    return {to_json(a, std::nullopt)};
  }
  if (e.type == "fs.writable") {
    auto out = resolve("StorwatchReadOnly|" + dev, e);
    for (auto& j : resolve("StorwatchShutdown|" + dev, e)) out.push_back(std::move(j));
    return out;
  }
  if (e.type == "block.io_error") {
    std::string key = "StorwatchIOErrors|" + (e.device ? e.device->dev() : dev);
    Alert a;
    a.labels = labels("StorwatchIOErrors", e);
    a.labels["severity"] = std::string(severity_name(e.severity));
    a.annotations = {{"summary", fmt::format("I/O errors on {}", e.device ? "/dev/" + e.device->name : where(e))},
                     {"description", event_to_line(e)}};
    a.starts = e.first_time == Time{} ? e.time : e.first_time;
    if (auto it = firing_.find(key); it != firing_.end() && it->second.ends && *it->second.ends > e.time)
      a.starts = it->second.starts;  // the same burst goes on
    a.ends = e.time + io_hold_;
    firing_[key] = a;
    return {to_json(a, a.ends)};
  }
  return {};
}

std::vector<json> AlertBook::firing(Time now) {
  std::vector<json> out;
  for (auto it = firing_.begin(); it != firing_.end();) {
    if (it->second.ends && *it->second.ends <= now) {
      it = firing_.erase(it);  // its endsAt was sent with it: Alertmanager resolves it itself
      continue;
    }
    out.push_back(to_json(it->second, it->second.ends));
    ++it;
  }
  return out;
}

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

}  // namespace

AlertmanagerSink::AlertmanagerSink(AlertmanagerOptions o)
    : options_(std::move(o)), book_(options_.host.empty() ? host_name() : options_.host, options_.io_error_hold) {
  auto scheme = options_.url.find("://");
  auto slash = options_.url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  base_ = options_.url.substr(0, slash);
  if (slash != std::string::npos) prefix_ = options_.url.substr(slash);
  while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
  resender_ = std::thread([this] { resend_loop(); });
}

AlertmanagerSink::~AlertmanagerSink() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  resender_.join();
}

Result<void> AlertmanagerSink::post(const std::vector<json>& alerts) const {
  if (alerts.empty()) return {};
  httplib::Client cli(base_);
  auto secs = std::chrono::duration_cast<std::chrono::microseconds>(options_.timeout).count();
  cli.set_connection_timeout(secs / 1000000, secs % 1000000);
  cli.set_read_timeout(secs / 1000000, secs % 1000000);
  cli.set_write_timeout(secs / 1000000, secs % 1000000);
  std::string body = json(alerts).dump(-1, ' ', false, json::error_handler_t::replace);
  auto res = cli.Post(prefix_ + "/api/v2/alerts", body, "application/json");
  if (!res)
    return fail_invalid(fmt::format("alertmanager: POST {}{}/api/v2/alerts: {}", base_, prefix_,
                                    httplib::to_string(res.error())));
  if (res->status / 100 != 2)
    return fail_invalid(fmt::format("alertmanager: POST {}{}/api/v2/alerts: HTTP {}: {}", base_, prefix_,
                                    res->status, res->body.substr(0, 200)));
  return {};
}

Result<size_t> AlertmanagerSink::deliver(std::span<const EventPtr> events) {
  std::vector<json> alerts;
  {
    std::lock_guard lock(mu_);
    // What a failed POST did not send goes first: the runner offers the same events again, and
    // applying them twice gives the same firing alerts, but a resolution is gone from the book.
    alerts = std::move(unsent_);
    unsent_.clear();
    for (const auto& e : events)
      for (auto& a : book_.apply(e->event)) alerts.push_back(std::move(a));
  }
  if (auto r = post(alerts); !r) {
    std::lock_guard lock(mu_);
    if (alerts.size() > kUnsentMax) alerts.erase(alerts.begin(), alerts.end() - kUnsentMax);
    unsent_ = std::move(alerts);
    return fail(r.error());
  }
  return events.size();
}

void AlertmanagerSink::resend_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (cv_.wait_for(lock, options_.resend, [&] { return stop_; })) return;
    auto alerts = book_.firing(std::chrono::system_clock::now());
    lock.unlock();
    if (auto r = post(alerts); !r) log_debug("alertmanager: resend: {}", r.error().message());
    lock.lock();
  }
}

}  // namespace storwatch::daemon
