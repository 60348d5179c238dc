// storwatch: the command-line client of storwatchd. Parses the command line (CLI11) and runs one
// command from commands.h. Exit status: 0 success, 1 error from the daemon or the connection,
// 2 usage error.
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/commands.h"

#ifndef STORWATCH_VERSION
#define STORWATCH_VERSION "unknown"
#endif

namespace {

using namespace storwatch::cli;

constexpr const char* kSocketHelp =
    "storwatchd's Varlink socket (default: $STORWATCH_SOCKET if set, else /run/storwatch/io.storwatch)";

constexpr const char* kRulesAddFooter = R"(AMOUNT (free space or inodes below which the level counts as crossed):
  10%, 2.5%        percent of the filesystem's size (or inode count)
  500M, 5G, 1T     K, M, G, T, P are powers of 1024 (also KiB, MiB...); inodes too
  500000           bytes for --free-below, inodes for --inodes-below
  1000 blocks      filesystem blocks (--free-below only; quote the space)
SEVERITY is info, warning, error or critical. Levels without one get, per resource, warning
for the level with the most free space, error for the next and critical for the rest.
"Free" is what df shows as available. Amounts are checked by storwatchd.

Seed one-line syntax (when PATH|LINE starts with '!', or holds a space and is no existing
path; `storwatch rules line LINE` says so explicitly):
  "MOUNT G T L1 L2"  generic events on, thresholds on with levels L1 > L2 (free blocks)
  "MOUNT T L1"       thresholds on with one level;  "MOUNT G"  generic events on
  "!MOUNT T"         thresholds off;  "!MOUNT G"  generic events off
  "!MOUNT"           remove the rule
Changing rules needs root.)";

constexpr const char* kSeedFooter = R"(Seed one-line syntax:
  "MOUNT G T L1 L2"  generic events on, thresholds on with levels L1 > L2 (free blocks)
  "MOUNT T L1"       thresholds on with one level;  "MOUNT G"  generic events on
  "!MOUNT T"         thresholds off;  "!MOUNT G"  generic events off
  "!MOUNT"           remove the rule
Changing rules needs root.)";

void add_common(CLI::App* cmd, GlobalOptions& g, const char* json_help) {
  cmd->add_option("--socket", g.socket, kSocketHelp)->type_name("PATH");
  cmd->add_flag("--json", g.json, json_help);
}

// One value per occurrence: `--type a --type b`, so an option never swallows a positional.
CLI::Option* add_list(CLI::App* cmd, const char* name, std::vector<std::string>& v, const char* help,
                      const char* type) {
  return cmd->add_option(name, v, help)->type_name(type)->allow_extra_args(false);
}

// Whole numbers checked before CLI11 converts them: its conversion lets "-1" wrap around, and
// CLI::PositiveNumber accepts 2.5 and prints a 300-digit range.
std::optional<uint64_t> whole_number(const std::string& s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}
const CLI::Validator kSeq(
    [](std::string& s) -> std::string { return whole_number(s) ? "" : "must be a sequence number (0 or more)"; }, "",
    "seq");
const CLI::Validator kPositive(
    [](std::string& s) -> std::string {
      auto v = whole_number(s);
      return v && *v > 0 ? "" : "must be a whole number above 0";
    },
    "", "positive");

// "storwatch rules add" for the parsed command line, to name it in error messages.
std::string command_name(const CLI::App* app) {
  std::string name = "storwatch";
  for (;;) {
    auto subs = app->get_subcommands();
    if (subs.empty()) return name;
    app = subs.front();
    name += " " + app->get_name();
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"storwatch: what happens to storage, the moment it happens.\n"
               "The command-line client of storwatchd.",
               "storwatch"};
  app.set_version_flag("--version", "storwatch " STORWATCH_VERSION, "Print the version and exit");
  app.require_subcommand(1);
  app.footer(
      "--socket and --json may also follow the command; `storwatch COMMAND --help` describes each.\n"
      "Environment: STORWATCH_SOCKET  the socket when --socket is not given.\n"
      "Exit status: 0 success, 1 error from storwatchd or the connection, 2 usage error.");
  app.failure_message([](const CLI::App* a, const CLI::Error& e) {
    return "storwatch: " + std::string(e.what()) + "\nRun '" + command_name(a) +
           " --help' for more information.\n";
  });

  GlobalOptions g;
  // Also before the command (storwatch --socket PATH status), as other system tools accept them.
  add_common(&app, g, "Print JSON instead of text (each command's --help says which)");

  MonitorArgs mon_args;
  uint64_t mon_after = 0;
  auto* monitor = app.add_subcommand("monitor", "Print storage events as they happen, like udevadm monitor");
  add_list(monitor, "--type", mon_args.types,
           "Only events whose type matches GLOB, e.g. 'space.*' or fs.error (repeatable; default: every type)",
           "GLOB");
  add_list(monitor, "--fs", mon_args.fs,
           "Only events on the filesystem holding PATH, any path on it (repeatable; default: every filesystem)",
           "PATH")
      ->check(CLI::ExistingPath);
  monitor
      ->add_option("--severity", mon_args.severity,
                   "Only events of severity MIN or higher: info, warning, error or critical (default: all)")
      ->type_name("MIN")
      ->check(CLI::IsMember({"info", "warning", "error", "critical"}));
  add_list(monitor, "--subtype", mon_args.subtypes,
           "Only events whose detail.subtype is NAME, e.g. medium or timeout for block.io_error (repeatable)",
           "NAME");
  auto* mon_after_opt = monitor->add_option(
      "--after", mon_after,
      "First print the journaled events after sequence number SEQ, then live ones (default: live only)");
  mon_after_opt->type_name("SEQ")->check(kSeq);
  add_common(monitor, g, "Print each event as one JSON object per line (docs/events.md), flushed per line");
  monitor->footer("Stops on Ctrl-C or SIGTERM (exit status 0).");

  HistoryArgs hist_args;
  uint64_t hist_after = 0, hist_limit = 0;
  auto* history = app.add_subcommand("history", "Print journaled events, oldest first");
  history
      ->add_option("--since", hist_args.since,
                   "Only events since TIME: 2026-11-21T23:00:00Z (RFC 3339, Z or +HH:MM), '2026-11-21 23:00' "
                   "(UTC), @EPOCH_SECONDS, or an age: 90s, 15m, 2h, 3d, 1w (default: the whole journal)")
      ->type_name("TIME");
  auto* hist_after_opt =
      history->add_option("--after", hist_after, "Only events after sequence number SEQ")->type_name("SEQ")->check(kSeq);
  add_list(history, "--type", hist_args.types,
           "Only events whose type matches GLOB, e.g. 'space.*' (repeatable; default: every type)", "GLOB");
  add_list(history, "--fs", hist_args.fs,
           "Only events on the filesystem holding PATH (repeatable; default: every filesystem)", "PATH")
      ->check(CLI::ExistingPath);
  auto* hist_limit_opt =
      history->add_option("--limit", hist_limit, "At most N events (default: as many as storwatchd returns)")
          ->type_name("N")
          ->check(kPositive);
  add_common(history, g, "Print each event as one JSON object per line (docs/events.md)");

  StatusArgs status_args;
  auto* status = app.add_subcommand("status", "Show filesystems: usage, levels, health and error counts");
  auto* status_path = status
                          ->add_option("PATH", status_args.path,
                                       "Show only the filesystem holding PATH (default: every watched filesystem)")
                          ->type_name("")
                          ->check(CLI::ExistingPath);
  status
      ->add_flag("--all", status_args.all,
                 "Also show filesystems storwatchd does not watch (proc, tmpfs, read-only mounts...)")
      ->excludes(status_path);
  add_common(status, g, "Print storwatchd's reply (ListFilesystems or GetFilesystem) as JSON");

  auto* rules = app.add_subcommand("rules", "List or change the rules: levels and event switches per filesystem");
  rules->require_subcommand(1);
  auto* rules_list = rules->add_subcommand("list", "List the rules");
  add_common(rules_list, g, "Print storwatchd's reply (ListRules) as JSON");

  RuleAddArgs add_args;
  auto* rules_add = rules->add_subcommand(
      "add", "Add or replace the rule for a filesystem, and print the resulting rules (needs root)");
  rules_add
      ->add_option("PATH|LINE", add_args.target,
                   "The filesystem's mount point (or any path on it), or one seed line such as "
                   "\"/data G T 710000 500000\" (see below)")
      ->type_name("")
      ->required();
  add_list(rules_add, "--free-below", add_args.free_below,
           "A level on free space: crossed when it falls below AMOUNT (repeatable)", "AMOUNT[:SEVERITY]");
  add_list(rules_add, "--inodes-below", add_args.inodes_below,
           "A level on free inodes: crossed when they fall below AMOUNT (repeatable)", "AMOUNT[:SEVERITY]");
  rules_add
      ->add_option("--hysteresis", add_args.hysteresis,
                   "For every level given: how far above the level free space must rise again before it "
                   "re-arms (default: storwatchd's, 1% of the size)")
      ->type_name("AMOUNT");
  rules_add->add_flag("--no-thresholds", add_args.no_thresholds,
                      "Switch the level events (space.threshold) off for this filesystem (default: on)");
  rules_add->add_flag("--no-events", add_args.no_events,
                      "Switch the other events (errors, read-only, ENOSPC...) off for this filesystem "
                      "(default: on)");
  add_common(rules_add, g, "Print storwatchd's reply (the resulting rules) as JSON");
  rules_add->footer(kRulesAddFooter);

  std::string seed_line;
  auto* rules_line = rules->add_subcommand("line", "Apply one line of the seed syntax (needs root)");
  rules_line->add_option("LINE", seed_line, "e.g. \"/data G T 710000 500000\", \"!/data T\", \"!/data\"")
      ->type_name("")
      ->required();
  add_common(rules_line, g, "Print storwatchd's reply (the resulting rules) as JSON");
  rules_line->footer(kSeedFooter);

  std::string remove_path;
  auto* rules_remove = rules->add_subcommand("remove", "Remove the rule for a filesystem (needs root)");
  rules_remove->add_option("PATH", remove_path, "The path the rule was added for (need not exist any more)")
      ->type_name("")
      ->required();
  add_common(rules_remove, g, "Print storwatchd's reply (the resulting rules) as JSON");

  bool follow = false;
  auto* mounts = app.add_subcommand("mounts", "Show the mount table as storwatchd sees it");
  mounts->add_flag("--follow", follow,
                   "Then print mount changes (mount.attached, mount.detached, mount.changed) as they happen, "
                   "until Ctrl-C");
  add_common(mounts, g,
             "Print the reply (ListMounts) as JSON; with --follow, {\"mounts\": [...]} on one line, then "
             "one event per line");

  auto* doctor = app.add_subcommand(
      "doctor", "Show which event sources work with this kernel and storwatchd's privileges");
  add_common(doctor, g, "Print storwatchd's reply (Doctor) as JSON");

  // storwatch fleet: reads NATS, not storwatchd's socket (--socket is accepted and unused).
  FleetArgs fleet_args;
  uint64_t fleet_limit = 0;
  auto* fleet = app.add_subcommand("fleet", "Events of every host publishing to NATS JetStream (docs/fleet.md)");
  fleet->require_subcommand(1);
  add_common(fleet, g, "Print each event as one JSON object per line, with \"host\"");
  auto add_fleet_common = [&](CLI::App* cmd) {
    cmd->add_option("--nats", fleet_args.nats,
                    "The NATS server, e.g. nats://127.0.0.1:4222 (default: $STORWATCH_NATS)")
        ->type_name("URL");
    cmd->add_option("--stream", fleet_args.stream, "The JetStream stream (default: STORWATCH)")->type_name("NAME");
    cmd->add_option("--host", fleet_args.host, "Only events of host H (as its storwatchd names itself)")
        ->type_name("H");
    add_list(cmd, "--type", fleet_args.types,
             "Only events whose type matches GLOB, e.g. 'space.*' (repeatable; default: every type)", "GLOB");
  };
  auto* fleet_monitor = fleet->add_subcommand("monitor", "Print the hosts' events as they are published");
  add_fleet_common(fleet_monitor);
  add_common(fleet_monitor, g, "Print each event as one JSON object per line, with \"host\"");
  fleet_monitor->footer("Each line starts with the host. Stops on Ctrl-C or SIGTERM (exit status 0).");
  auto* fleet_history = fleet->add_subcommand("history", "Print the events the stream holds, oldest first");
  add_fleet_common(fleet_history);
  fleet_history
      ->add_option("--since", fleet_args.since,
                   "Only events the stream received since TIME: 2026-11-21T23:00:00Z (UTC), @EPOCH_SECONDS, "
                   "or an age: 90s, 15m, 2h, 3d, 1w (default: the whole stream)")
      ->type_name("TIME");
  auto* fleet_limit_opt =
      fleet_history->add_option("--limit", fleet_limit, "At most N events")->type_name("N")->check(kPositive);
  add_common(fleet_history, g, "Print each event as one JSON object per line, with \"host\" and \"stream_seq\"");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0.
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  if (monitor->parsed()) {
    if (mon_after_opt->count() > 0) mon_args.after = mon_after;
    return run_monitor(g, mon_args);
  }
  if (history->parsed()) {
    if (hist_after_opt->count() > 0) hist_args.after = hist_after;
    if (hist_limit_opt->count() > 0) hist_args.limit = hist_limit;
    return run_history(g, hist_args);
  }
  if (status->parsed()) return run_status(g, status_args);
  if (rules_list->parsed()) return run_rules_list(g);
  if (rules_add->parsed()) return run_rules_add(g, add_args);
  if (rules_line->parsed()) return run_rules_line(g, seed_line);
  if (rules_remove->parsed()) return run_rules_remove(g, remove_path);
  if (mounts->parsed()) return run_mounts(g, follow);
  if (doctor->parsed()) return run_doctor(g);
  if (fleet_monitor->parsed()) return run_fleet_monitor(g, fleet_args);
  if (fleet_history->parsed()) {
    if (fleet_limit_opt->count() > 0) fleet_args.limit = fleet_limit;
    return run_fleet_history(g, fleet_args);
  }
  return kExitUsage;  // unreachable: require_subcommand(1)
}
