// storwatch monitor, history and mounts: the commands that print events.
#include <charconv>
#include <chrono>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/format.h"

namespace storwatch::cli {

namespace {

// Resolves --fs paths here, because the daemon resolves relative paths against its own working
// directory, not ours.
std::optional<EventFilter> make_filter(const std::vector<std::string>& types, const std::vector<std::string>& fs,
                                       const std::string& severity, const std::vector<std::string>& subtypes) {
  EventFilter f;
  f.types = types;
  f.subtypes = subtypes;
  for (const auto& p : fs) {
    auto abs = existing_path(p, "--fs");
    if (!abs) return std::nullopt;
    f.fs.push_back(std::move(*abs));
  }
  if (!severity.empty()) {
    f.min_severity = severity_from_name(severity);
    if (!f.min_severity) {
      usage_error(fmt::format("--severity {}: not one of info, warning, error, critical", severity));
      return std::nullopt;
    }
  }
  return f;
}

// "90s", "15m", "2h", "3d", "1w": that long ago, as "@SECONDS" (a form the daemon's time parser
// accepts); anything else is sent unchanged for the daemon to parse or refuse.
std::string since_argument(const std::string& since) {
  if (since.size() < 2) return since;
  uint64_t n = 0;
  const char* end = since.data() + since.size() - 1;
  auto [p, ec] = std::from_chars(since.data(), end, n);
  if (ec != std::errc() || p != end) return since;
  uint64_t unit = 0;
  switch (since.back()) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    case 'w': unit = 7 * 86400; break;
    default: return since;
  }
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  uint64_t ago = 0;
  if (__builtin_mul_overflow(n, unit, &ago) || ago > static_cast<uint64_t>(now)) return "@0";
  return fmt::format("@{}", static_cast<uint64_t>(now) - ago);
}

}  // namespace

int run_monitor(const GlobalOptions& g, const MonitorArgs& a) {
  auto filter = make_filter(a.types, a.fs, a.severity, a.subtypes);
  if (!filter) return kExitUsage;
  auto client = connect(g);
  if (!client) return kExitError;
  SubscribeOptions options;
  options.filter = std::move(*filter);
  options.after = a.after;
  auto sub = client->subscribe(options);
  if (!sub) return report(sub.error());
  return print_stream(*sub, g.json);
}

int run_history(const GlobalOptions& g, const HistoryArgs& a) {
  auto filter = make_filter(a.types, a.fs, "", {});
  if (!filter) return kExitUsage;
  auto client = connect(g);
  if (!client) return kExitError;
  std::optional<std::string> since;
  if (!a.since.empty()) since = since_argument(a.since);
  // Follows the daemon's pages until the journal (or --limit) is exhausted.
  std::optional<uint64_t> after = a.after;
  uint64_t printed = 0;
  for (;;) {
    std::optional<uint64_t> want;
    if (a.limit) want = *a.limit - printed;
    auto page = client->list_events(*filter, after, since, want);
    if (!page) return report(page.error());
    for (const auto& e : page->events) {
      if (g.json)
        print_json_line(event_to_json(e));
      else
        print_text(event_to_line(e) + "\n");
    }
    printed += page->events.size();
    if (!page->next_after || page->next_after == after || (a.limit && printed >= *a.limit)) break;
    after = page->next_after;
  }
  return kExitOk;
}

int run_mounts(const GlobalOptions& g, bool follow) {
  auto client = connect(g);
  if (!client) return kExitError;
  if (!follow) {
    auto reply = client->list_mounts();
    if (!reply) return report(reply.error());
    if (g.json) {
      print_json(*reply);
    } else {
      auto it = reply->find("mounts");
      print_text(format_mounts(it != reply->end() ? *it : nlohmann::json::array()));
    }
    return kExitOk;
  }
  // The subscription's snapshot and its changes come from one stream, so no change falls between
  // a ListMounts and a Subscribe.
  SubscribeOptions options;
  options.mounts = true;
  options.filter.types = {"mount.*"};
  auto sub = client->subscribe(options);
  if (!sub) return report(sub.error());
  if (g.json)
    print_json_line({{"mounts", sub->mount_table()}});
  else
    print_text(format_mounts(sub->mount_table()));
  return print_stream(*sub, g.json);
}

}  // namespace storwatch::cli
