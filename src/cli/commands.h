// The commands of the storwatch CLI. main.cc parses the command line into these structs and calls
// one run_* function, which talks to storwatchd through libstorwatch only (no proto, no daemon
// code: the CLI dogfoods the public API) and returns the process exit code.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <storwatch/client.h>

namespace storwatch::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;  // the daemon refused, or the connection failed
inline constexpr int kExitUsage = 2;  // the command line is wrong

struct GlobalOptions {
  std::string socket;  // empty: default_socket_path()
  bool json = false;
};

struct MonitorArgs {
  std::vector<std::string> types;
  std::vector<std::string> fs;
  std::string severity;  // empty: all
  std::vector<std::string> subtypes;
  std::optional<uint64_t> after;
};

struct HistoryArgs {
  std::string since;  // empty: from the start of the journal
  std::optional<uint64_t> after;
  std::vector<std::string> types;
  std::vector<std::string> fs;
  std::optional<uint64_t> limit;
};

struct StatusArgs {
  std::string path;  // empty: every filesystem
  bool all = false;
};

struct RuleAddArgs {
  std::string target;  // a path, or a seed line
  std::vector<std::string> free_below;    // AMOUNT[:SEVERITY]
  std::vector<std::string> inodes_below;  // AMOUNT[:SEVERITY]
  std::string hysteresis;                 // empty: the daemon's default
  bool no_thresholds = false;
  bool no_events = false;
};

// storwatch fleet monitor|history: events of every host publishing to NATS (docs/fleet.md).
struct FleetArgs {
  std::string nats;    // empty: $STORWATCH_NATS
  std::string stream;  // empty: the library's default (STORWATCH)
  std::string host;    // empty: every host
  std::vector<std::string> types;
  std::string since;  // history only
  std::optional<uint64_t> limit;
};

int run_monitor(const GlobalOptions& g, const MonitorArgs& a);
int run_fleet_monitor(const GlobalOptions& g, const FleetArgs& a);
int run_fleet_history(const GlobalOptions& g, const FleetArgs& a);
int run_history(const GlobalOptions& g, const HistoryArgs& a);
int run_status(const GlobalOptions& g, const StatusArgs& a);
int run_rules_list(const GlobalOptions& g);
int run_rules_add(const GlobalOptions& g, const RuleAddArgs& a);
int run_rules_line(const GlobalOptions& g, const std::string& line);
int run_rules_remove(const GlobalOptions& g, const std::string& path);
int run_mounts(const GlobalOptions& g, bool follow);
int run_doctor(const GlobalOptions& g);

// ---- shared by the commands (common.cc) ----

// Prints "storwatch: MESSAGE" on stderr and returns kExitError.
int report(const Error& e);
// Prints "storwatch: MESSAGE" on stderr and returns kExitUsage.
int usage_error(std::string_view message);
// Connects to the daemon, or prints why not (with a hint when nothing listens there).
std::optional<Client> connect(const GlobalOptions& g);
// The canonical absolute path of an existing file (what the daemon resolves --fs to); nullopt
// after printing why not.
std::optional<std::string> existing_path(const std::string& path, std::string_view option);
// realpath() when the path exists, else the absolute, lexically normal form (for paths that need
// not exist, such as a rule to remove).
std::string absolute_path(const std::string& path);
// "warning" -> Severity::warning; the CLI accepts exactly the four names.
std::optional<Severity> severity_from_name(std::string_view name);
// Splits "10%:error" into ("10%", "error"); the amount never contains ':'.
std::pair<std::string, std::string> split_level(const std::string& spec);

// `--json` output: one compact object per line, flushed (for pipes), or one pretty reply.
void print_json_line(const nlohmann::json& j);
void print_json(const nlohmann::json& j);
void print_text(std::string_view text);

// Prints the subscription's events until Ctrl-C/SIGTERM (exit 0) or the end of the stream
// (message and exit 1). Events are lines of event_to_line(), or JSON lines with json.
int print_stream(Subscription& sub, bool json);

}  // namespace storwatch::cli
