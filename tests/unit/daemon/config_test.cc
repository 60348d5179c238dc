#include "daemon/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "support/temp_dir.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

Config parse_ok(std::string_view text) {
  auto c = parse_config(text, "test.toml");
  EXPECT_TRUE(c) << c.error().message();
  return c ? *c : Config{};
}

std::string parse_error(std::string_view text) {
  auto c = parse_config(text, "test.toml");
  EXPECT_FALSE(c) << "accepted:\n" << text;
  return c ? std::string() : c.error().message();
}

TEST(Config, EmbeddedDefaultParses) {
  Config c = parse_ok("");
  EXPECT_EQ(c.socket, kDefaultSocketPath);
  EXPECT_EQ(c.state_dir, kDefaultStateDir);
  EXPECT_EQ(c.statfs_timeout, 5s);
  EXPECT_EQ(c.poll_min, 100ms);
  EXPECT_EQ(c.poll_max, 5s);
  EXPECT_FALSE(c.watch_readonly);
  EXPECT_TRUE(c.rules.empty());
  ASSERT_EQ(c.default_levels.size(), 6u);
  std::vector<std::string> ids;
  for (const auto& l : c.default_levels) ids.push_back(l.id());
  EXPECT_EQ(ids, (std::vector<std::string>{"blocks<10%", "blocks<5%", "blocks<1%", "inodes<10%",
                                           "inodes<5%", "inodes<1%"}));
  EXPECT_EQ(c.default_levels[0].severity, Severity::warning);
  EXPECT_EQ(c.default_levels[1].severity, Severity::error);
  EXPECT_EQ(c.default_levels[2].severity, Severity::critical);
  EXPECT_EQ(c.limits.max_clients, 1024u);
  EXPECT_EQ(c.limits.max_clients_per_uid, 128u);
  EXPECT_EQ(c.limits.max_output, 4194304u);
  EXPECT_EQ(c.limits.requests_per_second, 200u);
  EXPECT_EQ(c.limits.request_burst, 400u);
  EXPECT_EQ(c.limits.max_message, 65536u);
  EXPECT_EQ(c.limits.max_subscriptions_per_process, 32u);
  EXPECT_EQ(c.limits.queue_events, 4096u);
}

TEST(Config, EmbeddedDefaultMatchesTheStructDefaults) {
  // The text is what --print-default-config shows; it must say what the daemon does.
  Config text = parse_ok("");
  Config plain;
  EXPECT_EQ(text.socket, plain.socket);
  EXPECT_EQ(text.state_dir, plain.state_dir);
  EXPECT_EQ(text.statfs_timeout, plain.statfs_timeout);
  EXPECT_EQ(text.poll_min, plain.poll_min);
  EXPECT_EQ(text.poll_max, plain.poll_max);
  EXPECT_EQ(text.limits.max_clients, plain.limits.max_clients);
  EXPECT_EQ(text.limits.max_message, plain.limits.max_message);
  EXPECT_EQ(text.limits.queue_events, plain.limits.queue_events);
}

TEST(Config, OverridesOnlyWhatItNames) {
  Config c = parse_ok(R"(
[daemon]
socket = "/run/x/sock"
[watch]
skip_fstypes = ["nfs4"]
skip_paths = ["/mnt/backup"]
watch_readonly = true
[thresholds]
statfs_timeout = "2s"
poll_max = "1m"
levels = [ { resource = "blocks", below = "20G" } ]
[[rule]]
path = "/data"
levels = [ { resource = "inodes", below = "2%", severity = "critical" } ]
[limits]
clients = 10
queue_events = 100
)");
  EXPECT_EQ(c.socket, "/run/x/sock");
  EXPECT_EQ(c.state_dir, kDefaultStateDir);  // untouched
  EXPECT_EQ(c.skip_fstypes, (std::vector<std::string>{"nfs4"}));
  EXPECT_EQ(c.skip_paths, (std::vector<std::string>{"/mnt/backup"}));
  EXPECT_TRUE(c.watch_readonly);
  EXPECT_EQ(c.statfs_timeout, 2s);
  EXPECT_EQ(c.poll_min, 100ms);
  EXPECT_EQ(c.poll_max, 60s);
  ASSERT_EQ(c.default_levels.size(), 1u);  // the list is replaced, not merged
  EXPECT_EQ(c.default_levels[0].id(), "blocks<20G");
  ASSERT_EQ(c.rules.size(), 1u);
  EXPECT_EQ(c.rules[0].path, "/data");
  ASSERT_EQ(c.rules[0].levels.size(), 1u);
  EXPECT_EQ(c.rules[0].levels[0].severity, Severity::critical);
  EXPECT_EQ(c.limits.max_clients, 10u);
  EXPECT_EQ(c.limits.queue_events, 100u);
  EXPECT_EQ(c.limits.max_message, 65536u);
}

TEST(Config, EmptyLevelListPollsOnlyRules) {
  Config c = parse_ok("[thresholds]\nlevels = []\n");
  EXPECT_TRUE(c.default_levels.empty());
}

TEST(Config, UnknownKeysAreRefusedByName) {
  EXPECT_THAT(parse_error("bogus = 1\n"), HasSubstr("unknown key \"bogus\""));
  EXPECT_THAT(parse_error("[daemon]\nsokcet = \"/x\"\n"), HasSubstr("unknown key \"sokcet\""));
  EXPECT_THAT(parse_error("[watch]\nskip_fstype = []\n"), HasSubstr("unknown key \"skip_fstype\""));
  EXPECT_THAT(parse_error("[thresholds]\ntimeout = \"5s\"\n"), HasSubstr("unknown key \"timeout\""));
  EXPECT_THAT(parse_error("[limits]\nmax_clients = 5\n"), HasSubstr("unknown key \"max_clients\""));
  // The message says where: the file and the table.
  std::string e = parse_error("[limits]\nmax_clients = 5\n");
  EXPECT_THAT(e, HasSubstr("test.toml"));
  EXPECT_THAT(e, HasSubstr("limits"));
}

TEST(Config, UnknownKeysInsideRulesAndLevelsAreRefused) {
  EXPECT_THAT(parse_error("[[rule]]\npath = \"/data\"\nlevel = []\n"), HasSubstr("\"level\""));
  EXPECT_THAT(parse_error("[thresholds]\nlevels = [ { resource = \"blocks\", below = \"5%\", sev = \"error\" } ]\n"),
              HasSubstr("\"sev\""));
}

TEST(Config, TomlSyntaxErrorsSayWhere) {
  std::string e = parse_error("[daemon\nsocket = 1\n");
  EXPECT_THAT(e, HasSubstr("test.toml:1:"));
}

TEST(Config, WrongTypesAreRefused) {
  EXPECT_THAT(parse_error("[daemon]\nsocket = 5\n"), HasSubstr("daemon.socket: must be a string"));
  EXPECT_THAT(parse_error("[watch]\nwatch_readonly = \"yes\"\n"), HasSubstr("watch.watch_readonly"));
  EXPECT_THAT(parse_error("[watch]\nskip_paths = \"/x\"\n"), HasSubstr("watch.skip_paths"));
  EXPECT_THAT(parse_error("daemon = 5\n"), HasSubstr("daemon: must be a table"));
  EXPECT_THAT(parse_error("[limits]\nclients = \"many\"\n"), HasSubstr("limits.clients: must be an integer"));
}

TEST(Config, BadDurationsAreRefused) {
  EXPECT_THAT(parse_error("[thresholds]\nstatfs_timeout = \"5x\"\n"),
              HasSubstr("thresholds.statfs_timeout"));
  EXPECT_THAT(parse_error("[thresholds]\nstatfs_timeout = \"5x\"\n"), HasSubstr("unknown unit \"x\""));
  EXPECT_THAT(parse_error("[thresholds]\npoll_max = \"soon\"\n"), HasSubstr("thresholds.poll_max"));
  EXPECT_THAT(parse_error("[thresholds]\npoll_max = \"-5s\"\n"), HasSubstr("thresholds.poll_max"));
  EXPECT_THAT(parse_error("[thresholds]\npoll_max = 30\n"), HasSubstr("must be a string"));
  // An empty string is a mistake, not "use the default".
  EXPECT_THAT(parse_error("[thresholds]\nstatfs_timeout = \"\"\n"), HasSubstr("thresholds.statfs_timeout"));
  // Ranges.
  EXPECT_THAT(parse_error("[thresholds]\npoll_min = \"5ms\"\n"), HasSubstr("poll_min"));
  EXPECT_THAT(parse_error("[thresholds]\npoll_min = \"10s\"\npoll_max = \"5s\"\n"),
              HasSubstr("poll_min <= poll_max"));
  EXPECT_THAT(parse_error("[thresholds]\nstatfs_timeout = \"1ms\"\n"), HasSubstr("at least 10ms"));
}

TEST(Config, ParseDuration) {
  EXPECT_EQ(*parse_duration("5s"), 5s);
  EXPECT_EQ(*parse_duration("5"), 5s);
  EXPECT_EQ(*parse_duration("100ms"), 100ms);
  EXPECT_EQ(*parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(*parse_duration("2m"), 2min);
  EXPECT_EQ(*parse_duration("2min"), 2min);
  EXPECT_EQ(*parse_duration("1h"), 1h);
  for (const char* bad : {"", "s", "5 s", "5sec", "-1s", "abc", "nan", "inf", "1e300s", "infs"})
    EXPECT_FALSE(parse_duration(bad)) << bad;
}

TEST(Config, BadLevelsAreRefused) {
  EXPECT_THAT(parse_error("[thresholds]\nlevels = [ { resource = \"blocks\", below = \"110%\" } ]\n"),
              HasSubstr("thresholds.levels"));
  EXPECT_THAT(parse_error("[thresholds]\nlevels = [ { resource = \"disks\", below = \"10%\" } ]\n"),
              HasSubstr("unknown resource \"disks\""));
  EXPECT_THAT(parse_error("[thresholds]\nlevels = [ { resource = \"blocks\" } ]\n"), HasSubstr("below"));
  EXPECT_THAT(parse_error("[thresholds]\nlevels = [ { resource = \"blocks\", below = \"10%\", severity = \"loud\" } ]\n"),
              HasSubstr("unknown severity \"loud\""));
  EXPECT_THAT(parse_error("[thresholds]\nlevels = [ { below = \"10%\" }, { below = \"10%\" } ]\n"),
              HasSubstr("thresholds.levels"));
  EXPECT_THAT(parse_error("[thresholds]\nlevels = \"10%\"\n"), HasSubstr("thresholds.levels"));
}

TEST(Config, DuplicateRulesAreRefused) {
  std::string e = parse_error(R"(
[[rule]]
path = "/data"
levels = [ { below = "10%" } ]
[[rule]]
path = "/srv"
[[rule]]
path = "/data"
levels = [ { below = "5%" } ]
)");
  EXPECT_THAT(e, HasSubstr("rule #3"));
  EXPECT_THAT(e, HasSubstr("a second rule for /data"));
}

TEST(Config, BadRulesAreRefusedWithTheirNumber) {
  EXPECT_THAT(parse_error("[[rule]]\nlevels = []\n"), HasSubstr("rule #1"));
  EXPECT_THAT(parse_error("[[rule]]\npath = \"relative\"\n"), HasSubstr("rule #1"));
  EXPECT_THAT(parse_error("rule = 5\n"), HasSubstr("[[rule]]"));
}

TEST(Config, LimitsMustBeInRange) {
  EXPECT_THAT(parse_error("[limits]\nclients = 0\n"), HasSubstr("limits.clients: must be between 1 and 100000"));
  EXPECT_THAT(parse_error("[limits]\nclients = 100001\n"), HasSubstr("limits.clients"));
  EXPECT_THAT(parse_error("[limits]\nmessage_bytes = 1023\n"), HasSubstr("limits.message_bytes"));
  EXPECT_THAT(parse_error("[limits]\nmessage_bytes = 16777217\n"), HasSubstr("limits.message_bytes"));
  EXPECT_THAT(parse_error("[limits]\nsubscriptions_per_process = 0\n"),
              HasSubstr("limits.subscriptions_per_process"));
  EXPECT_THAT(parse_error("[limits]\nqueue_events = 15\n"), HasSubstr("limits.queue_events: must be between 16"));
  EXPECT_THAT(parse_error("[limits]\nqueue_events = -1\n"), HasSubstr("limits.queue_events"));
  EXPECT_THAT(parse_error("[limits]\nrequest_burst = 0\n"), HasSubstr("limits.request_burst"));
  EXPECT_THAT(parse_error("[limits]\noutput_bytes = 1000\n"), HasSubstr("limits.output_bytes"));
  Config c = parse_ok("[limits]\nclients = 1\nmessage_bytes = 1024\nqueue_events = 16\nclients_per_uid = 3\n"
                      "requests_per_second = 0\nrequest_burst = 5\noutput_bytes = 65536\n");
  EXPECT_EQ(c.limits.max_clients_per_uid, 3u);
  EXPECT_EQ(c.limits.requests_per_second, 0u);
  EXPECT_EQ(c.limits.request_burst, 5u);
  EXPECT_EQ(c.limits.max_output, 65536u);
  EXPECT_EQ(c.limits.max_clients, 1u);
  EXPECT_EQ(c.limits.max_message, 1024u);
  EXPECT_EQ(c.limits.queue_events, 16u);
}

TEST(Config, JournalFoldReplayDefaultsMatchTheStruct) {
  Config text = parse_ok("");
  Config plain;
  EXPECT_EQ(text.journal_max_age, plain.journal_max_age);
  EXPECT_EQ(text.journal_max_age, std::chrono::seconds(30 * 24 * 3600));
  EXPECT_EQ(text.journal_max_bytes, plain.journal_max_bytes);
  EXPECT_EQ(text.journal_max_bytes, 256ull << 20);
  EXPECT_EQ(text.journal_buffer_events, plain.journal_buffer_events);
  EXPECT_EQ(text.fold_window, plain.fold_window);
  EXPECT_EQ(text.fold_window, 1s);
  EXPECT_EQ(text.fold_max_keys, plain.fold_max_keys);
  EXPECT_EQ(text.replay_fifo, plain.replay_fifo);
  EXPECT_TRUE(text.replay_fifo.empty());
}

TEST(Config, JournalFoldReplaySections) {
  Config c = parse_ok(R"(
[journal]
max_age = "7d"
max_size = "1G"
buffer_events = 5000
[fold]
window = "250ms"
max_keys = 10
[replay]
fifo = "/run/storwatch/replay"
)");
  EXPECT_EQ(c.journal_max_age, std::chrono::hours(7 * 24));
  EXPECT_EQ(c.journal_max_bytes, 1ull << 30);
  EXPECT_EQ(c.journal_buffer_events, 5000u);
  EXPECT_EQ(c.fold_window, 250ms);
  EXPECT_EQ(c.fold_max_keys, 10u);
  EXPECT_EQ(c.replay_fifo, "/run/storwatch/replay");

  // Each key alone leaves the others at their defaults; the smallest values allowed.
  c = parse_ok("[journal]\nmax_age = \"1m\"\n");
  EXPECT_EQ(c.journal_max_age, 60s);
  EXPECT_EQ(c.journal_max_bytes, 256ull << 20);
  c = parse_ok("[journal]\nmax_size = \"1M\"\nbuffer_events = 1000\n");
  EXPECT_EQ(c.journal_max_bytes, 1ull << 20);
  EXPECT_EQ(c.journal_buffer_events, 1000u);
  EXPECT_EQ(c.journal_max_age, std::chrono::seconds(30 * 24 * 3600));
  // "0s" turns folding off; max_keys 1 is allowed.
  c = parse_ok("[fold]\nwindow = \"0s\"\nmax_keys = 1\n");
  EXPECT_EQ(c.fold_window, 0ms);
  EXPECT_EQ(c.fold_max_keys, 1u);
  c = parse_ok("[replay]\nfifo = \"\"\n");
  EXPECT_TRUE(c.replay_fifo.empty());
}

TEST(Config, BadJournalValuesAreRefused) {
  EXPECT_THAT(parse_error("[journal]\nmax_age = \"59s\"\n"),
              HasSubstr("journal.max_age: must be at least 1m"));
  EXPECT_THAT(parse_error("[journal]\nmax_age = \"forever\"\n"), HasSubstr("journal.max_age"));
  EXPECT_THAT(parse_error("[journal]\nmax_age = 30\n"), HasSubstr("must be a string"));
  EXPECT_THAT(parse_error("[journal]\nmax_size = \"512K\"\n"),
              HasSubstr("journal.max_size: must be at least 1M"));
  EXPECT_THAT(parse_error("[journal]\nmax_size = \"10%\"\n"),
              HasSubstr("is not a size like 256M or 1G"));
  EXPECT_THAT(parse_error("[journal]\nmax_size = \"big\"\n"), HasSubstr("journal.max_size"));
  EXPECT_THAT(parse_error("[journal]\nmax_size = 1000000000\n"),
              HasSubstr("journal.max_size: must be a string"));
  EXPECT_THAT(parse_error("[journal]\nbuffer_events = 999\n"),
              HasSubstr("journal.buffer_events: must be between 1000 and 10000000"));
  EXPECT_THAT(parse_error("[journal]\nbuffer_events = 10000001\n"),
              HasSubstr("journal.buffer_events"));
  EXPECT_THAT(parse_error("[journal]\nbuffer_events = \"lots\"\n"),
              HasSubstr("must be an integer"));
  EXPECT_THAT(parse_error("[journal]\nmax_bytes = \"1G\"\n"),
              HasSubstr("unknown key \"max_bytes\""));
  EXPECT_THAT(parse_error("journal = 5\n"), HasSubstr("journal: must be a table"));
}

TEST(Config, BadFoldAndReplayValuesAreRefused) {
  EXPECT_THAT(parse_error("[fold]\nwindow = \"soon\"\n"), HasSubstr("fold.window"));
  EXPECT_THAT(parse_error("[fold]\nwindow = \"-1s\"\n"), HasSubstr("fold.window"));
  EXPECT_THAT(parse_error("[fold]\nwindow = \"\"\n"), HasSubstr("fold.window"));
  EXPECT_THAT(parse_error("[fold]\nmax_keys = 0\n"),
              HasSubstr("fold.max_keys: must be between 1 and 1000000"));
  EXPECT_THAT(parse_error("[fold]\nmax_keys = 1000001\n"), HasSubstr("fold.max_keys"));
  EXPECT_THAT(parse_error("[fold]\nkeys = 5\n"), HasSubstr("unknown key \"keys\""));
  EXPECT_THAT(parse_error("[replay]\nfifo = 5\n"), HasSubstr("replay.fifo: must be a string"));
  EXPECT_THAT(parse_error("[replay]\npath = \"/x\"\n"), HasSubstr("unknown key \"path\""));
  EXPECT_THAT(parse_error("replay = \"/x\"\n"), HasSubstr("replay: must be a table"));
}

TEST(Config, LoadConfigReadsAFileAndNamesItInErrors) {
  test::TempDir dir;
  std::string path = dir.sub("storwatch.toml");
  {
    std::ofstream out(path);
    out << "[limits]\nclients = 7\n";
  }
  auto c = load_config(path, false);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->limits.max_clients, 7u);
  {
    std::ofstream out(path);
    out << "[limits]\nclientz = 7\n";
  }
  auto bad = load_config(path, false);
  ASSERT_FALSE(bad);
  EXPECT_THAT(bad.error().message(), HasSubstr(path));
  EXPECT_THAT(bad.error().message(), HasSubstr("clientz"));
}

TEST(Config, MissingFileIsFineOnlyForTheDefaultPath) {
  test::TempDir dir;
  auto ok = load_config(dir.sub("absent.toml"), true);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->default_levels.size(), 6u);
  auto bad = load_config(dir.sub("absent.toml"), false);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().errno_value(), ENOENT);
}

}  // namespace
}  // namespace storwatch::daemon
