// storwatch fleet monitor|history: the events of every host that publishes to NATS, through
// libstorwatch's fleet component (storwatch/fleet.h).
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include <charconv>
#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include <storwatch/fleet.h>

#include "cli/commands.h"

namespace storwatch::cli {

namespace {

volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

void print_fleet_event(const FleetEvent& e, bool json) {
  if (json) {
    nlohmann::json j = event_to_json(e.event);
    j["host"] = e.host;
    if (e.stream_seq) j["stream_seq"] = e.stream_seq;
    print_json_line(j);
  } else {
    print_text(fmt::format("{} {}\n", e.host, event_to_line(e.event)));
  }
}

std::optional<Fleet> fleet_connect(const FleetArgs& a) {
  FleetOptions o;
  o.url = a.nats;
  if (o.url.empty())
    if (const char* env = ::getenv("STORWATCH_NATS")) o.url = env;
  if (o.url.empty()) {
    usage_error("give --nats URL (or set STORWATCH_NATS), e.g. nats://127.0.0.1:4222");
    return std::nullopt;
  }
  if (!a.stream.empty()) o.stream = a.stream;
  auto f = Fleet::connect(o);
  if (!f) {
    report(f.error());
    return std::nullopt;
  }
  return std::move(*f);
}

FleetFilter filter_of(const FleetArgs& a) { return FleetFilter{a.host, a.types}; }

std::optional<std::chrono::system_clock::time_point> parse_fleet_since(const std::string& text) {
  using namespace std::chrono;
  auto now = system_clock::now();
  if (text.empty()) return std::nullopt;
  if (text[0] == '@') {
    int64_t secs = 0;
    auto [p, ec] = std::from_chars(text.data() + 1, text.data() + text.size(), secs);
    if (ec != std::errc() || p != text.data() + text.size() || secs < 0) return std::nullopt;
    return system_clock::time_point(seconds(secs));
  }
  // An age: 90s, 15m, 2h, 3d, 1w.
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size() - 1, n);
  if (ec == std::errc() && p == text.data() + text.size() - 1 && n < (1ull << 32)) {
    switch (text.back()) {
      case 's': return now - seconds(n);
      case 'm': return now - minutes(n);
      case 'h': return now - hours(n);
      case 'd': return now - hours(24 * n);
      case 'w': return now - hours(24 * 7 * n);
      default: break;
    }
  }
  // RFC 3339 in UTC ("2026-11-21T23:00:00Z") or "2026-11-21 23:00" (UTC).
  for (const char* fmt : {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"}) {
    struct tm tm {};
    const char* end = ::strptime(text.c_str(), fmt, &tm);
    if (end && *end == '\0') return system_clock::from_time_t(::timegm(&tm));
  }
  return std::nullopt;
}

}  // namespace

int run_fleet_monitor(const GlobalOptions& g, const FleetArgs& a) {
  auto fleet = fleet_connect(a);
  if (!fleet) return a.nats.empty() && !::getenv("STORWATCH_NATS") ? kExitUsage : kExitError;
  auto mon = fleet->monitor(filter_of(a));
  if (!mon) return report(mon.error());
  // libnats runs threads of its own; a flag checked between waits stops cleanly on Ctrl-C.
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  while (!g_stop) {
    auto e = mon->wait(std::chrono::milliseconds(200));
    if (!e) return report(e.error());
    if (*e) print_fleet_event(**e, g.json);
  }
  return kExitOk;
}

int run_fleet_history(const GlobalOptions& g, const FleetArgs& a) {
  FleetHistoryOptions o;
  o.filter = filter_of(a);
  if (!a.since.empty()) {
    o.since = parse_fleet_since(a.since);
    if (!o.since)
      return usage_error(fmt::format("--since {}: expected e.g. 2026-11-21T23:00:00Z, @EPOCH_SECONDS or 2h", a.since));
  }
  if (a.limit) o.limit = *a.limit;
  auto fleet = fleet_connect(a);
  if (!fleet) return a.nats.empty() && !::getenv("STORWATCH_NATS") ? kExitUsage : kExitError;
  auto n = fleet->history(o, [&](const FleetEvent& e) { print_fleet_event(e, g.json); });
  if (!n) return report(n.error());
  return kExitOk;
}

}  // namespace storwatch::cli
