// The sinks' pure parts: the STORWATCH_* fields and MESSAGE_IDs, which hooks select which types,
// journald priorities, and the Alertmanager alerts events turn into (firing, resolved, I/O error
// bursts that end by themselves). Plus the hook sink with real processes: stdin and environment,
// and a hook that outlives its timeout.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "daemon/sink/alertmanager_sink.h"
#include "daemon/sink/event_fields.h"
#include "daemon/sink/hook_sink.h"
#include "daemon/sink/journald_sink.h"
#include "support/temp_dir.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

Event threshold(std::string direction, Event::Time t) {
  Event e;
  e.seq = 42;
  e.journal_id = "J";
  e.type = "space.threshold";
  e.severity = direction == "below" ? Severity::warning : Severity::info;
  e.source = "statfs";
  e.time = e.first_time = e.last_time = t;
  e.fs = FsRef{7, 1, "ext4", "", "/dev/loop1", {"/mnt/data"}};
  e.detail = {{"resource", "blocks"}, {"level", "10%"},         {"level_id", "blocks<10%"},
              {"direction", direction}, {"level_severity", "warning"}, {"avail", 5}};
  return e;
}

std::string field(const std::vector<std::pair<std::string, std::string>>& f, const std::string& k) {
  for (const auto& [key, v] : f)
    if (key == k) return v;
  return "<absent>";
}

TEST(EventFields, NameEveryPartOfTheEvent) {
  Event e = threshold("below", std::chrono::system_clock::now());
  e.process = ProcessRef{1234, 1000, "dd", ""};
  auto f = event_fields(e);
  EXPECT_EQ(field(f, "STORWATCH_TYPE"), "space.threshold");
  EXPECT_EQ(field(f, "STORWATCH_SEQ"), "42");
  EXPECT_EQ(field(f, "STORWATCH_JOURNAL_ID"), "J");
  EXPECT_EQ(field(f, "STORWATCH_SEVERITY"), "warning");
  EXPECT_EQ(field(f, "STORWATCH_FS_DEV"), "7:1");
  EXPECT_EQ(field(f, "STORWATCH_FS_MOUNT"), "/mnt/data");
  EXPECT_EQ(field(f, "STORWATCH_FS_TYPE"), "ext4");
  EXPECT_EQ(field(f, "STORWATCH_PID"), "1234");
  EXPECT_EQ(field(f, "STORWATCH_UID"), "1000");
  EXPECT_EQ(field(f, "STORWATCH_COMM"), "dd");
  EXPECT_EQ(field(f, "STORWATCH_DETAIL_LEVEL_ID"), "blocks<10%");
  EXPECT_EQ(field(f, "STORWATCH_DETAIL_AVAIL"), "5");
  EXPECT_EQ(field(f, "STORWATCH_DEVICE"), "<absent>");
  for (const auto& [k, v] : f)
    for (char c : k) EXPECT_TRUE((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_') << k;
}

TEST(EventFields, MessageIdsAreStableAndDistinct) {
  // The documented rule (docs/events.md); these values must never change.
  EXPECT_EQ(message_id("space.threshold").size(), 32u);
  EXPECT_EQ(message_id("space.threshold"), message_id("space.threshold"));
  EXPECT_NE(message_id("space.threshold"), message_id("space.enospc"));
  EXPECT_EQ(message_id(""), "1feb9b2bcd148f502e3c96f4bbb2c96c") << "FNV-1a 128 of \"storwatch:\"";
  EXPECT_EQ(message_id("space.threshold"), "78704d947ac20eca242876cd0f8bf1cf") << "as docs/events.md lists";
}

TEST(JournaldSink, PriorityFollowsSeverity) {
  EXPECT_EQ(journald_priority(Severity::critical), 2);
  EXPECT_EQ(journald_priority(Severity::error), 3);
  EXPECT_EQ(journald_priority(Severity::warning), 4);
  EXPECT_EQ(journald_priority(Severity::info), 6);
}

TEST(HookSelection, ByTypeGlobFamilyOrAll) {
  EXPECT_TRUE(hook_selects("all-log", "mount.attached"));
  EXPECT_TRUE(hook_selects("space.threshold-mail", "space.threshold"));
  EXPECT_FALSE(hook_selects("space.threshold-mail", "space.enospc"));
  EXPECT_TRUE(hook_selects("fs-page", "fs.readonly"));
  EXPECT_FALSE(hook_selects("fs-page", "fsx.readonly"));
  EXPECT_FALSE(hook_selects("fs-page", "space.enospc"));
  EXPECT_TRUE(hook_selects("fs.*-page", "fs.error"));
  EXPECT_TRUE(hook_selects("space.*-x.sh", "space.enospc"));
  EXPECT_FALSE(hook_selects("nodash", "fs.error"));
  EXPECT_FALSE(hook_selects("-x", "fs.error"));
}

TEST(AlertBook, ThresholdFiresThenResolvesWithTheSameLabels) {
  AlertBook book("host1", 5min);
  auto t0 = std::chrono::system_clock::now();
  auto fire = book.apply(threshold("below", t0));
  ASSERT_EQ(fire.size(), 1u);
  const json& a = fire[0];
  EXPECT_EQ(a["labels"]["alertname"], "StorwatchSpaceThreshold");
  EXPECT_EQ(a["labels"]["host"], "host1");
  EXPECT_EQ(a["labels"]["mount"], "/mnt/data");
  EXPECT_EQ(a["labels"]["dev"], "7:1");
  EXPECT_EQ(a["labels"]["level"], "10%");
  EXPECT_EQ(a["labels"]["severity"], "warning");
  EXPECT_FALSE(a.contains("endsAt"));
  EXPECT_EQ(book.firing(t0 + 1h).size(), 1u);  // resent until resolved

  auto resolved = book.apply(threshold("above", t0 + 10s));
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_EQ(resolved[0]["labels"], a["labels"]);  // how Alertmanager knows it is the same alert
  EXPECT_EQ(resolved[0]["startsAt"], a["startsAt"]);
  EXPECT_EQ(resolved[0]["endsAt"], rfc3339(t0 + 10s));
  EXPECT_TRUE(book.firing(t0 + 1h).empty());
  EXPECT_TRUE(book.apply(threshold("above", t0 + 20s)).empty()) << "nothing to resolve twice";
}

TEST(AlertBook, ReadOnlyAndShutdownResolveWhenWritable) {
  AlertBook book("h", 5min);
  auto t0 = std::chrono::system_clock::now();
  Event ro = threshold("below", t0);
  ro.type = "fs.readonly";
  ro.severity = Severity::critical;
  ro.detail = {{"cause", "emergency_ro"}};
  Event sd = ro;
  sd.type = "fs.shutdown";
  ASSERT_EQ(book.apply(ro).size(), 1u);
  EXPECT_TRUE(book.apply(ro).empty()) << "already firing";
  ASSERT_EQ(book.apply(sd).size(), 1u);
  Event w = ro;
  w.type = "fs.writable";
  w.severity = Severity::info;
  auto out = book.apply(w);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].contains("endsAt"));
  EXPECT_EQ(book.size(), 0u);
}

TEST(AlertBook, IoErrorBurstsEndByThemselves) {
  AlertBook book("h", 5min);
  auto t0 = std::chrono::system_clock::now();
  Event e;
  e.type = "block.io_error";
  e.severity = Severity::error;
  e.time = e.first_time = e.last_time = t0;
  e.device = DeviceRef{7, 3, "loop3"};
  auto a = book.apply(e);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0]["labels"]["device"], "loop3");
  EXPECT_EQ(a[0]["endsAt"], rfc3339(t0 + 5min));
  e.time = e.first_time = e.last_time = t0 + 1min;
  auto b = book.apply(e);
  EXPECT_EQ(b[0]["startsAt"], a[0]["startsAt"]) << "the same burst";
  EXPECT_EQ(b[0]["endsAt"], rfc3339(t0 + 6min));
  EXPECT_EQ(book.firing(t0 + 2min).size(), 1u);
  EXPECT_TRUE(book.firing(t0 + 7min).empty());
}

TEST(AlertBook, Rfc3339) {
  EXPECT_EQ(rfc3339(std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123))),
            "2023-11-14T22:13:20.123Z");
}

class HookSinkTest : public ::testing::Test {
 protected:
  void SetUp() override { ::mkdir(dir_.sub("hooks").c_str(), 0755); }
  void hook(const std::string& name, const std::string& body) {
    std::string p = dir_.sub("hooks/" + name);
    std::ofstream(p) << "#!/bin/sh\n" << body;
    ::chmod(p.c_str(), 0755);
  }
  static std::string slurp(const std::string& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  test::TempDir dir_;
};

TEST_F(HookSinkTest, RunsSelectedHooksWithTheEventAndKillsOnesPastTheirTimeout) {
  hook("space-record", "cat > " + dir_.sub("stdin") + "; echo $STORWATCH_TYPE $STORWATCH_FS_MOUNT > " +
                           dir_.sub("env") + "\n");
  hook("space.threshold-hang", "sleep 1000\n");
  hook("fs-other", "touch " + dir_.sub("other") + "\n");
  HookSink sink(HookOptions{.dir = dir_.sub("hooks"), .concurrency = 4, .timeout = 200ms, .kill_grace = 200ms});
  Event e = threshold("below", std::chrono::system_clock::now());
  EXPECT_TRUE(sink.wants(e));
  Event other = e;
  other.type = "mount.attached";
  EXPECT_FALSE(sink.wants(other));

  auto ep = make_bus_event(e);
  auto t0 = std::chrono::steady_clock::now();
  auto r = sink.deliver(std::span<const EventPtr>(&ep, 1));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "the hanging hook was not killed";
  EXPECT_EQ(json::parse(slurp(dir_.sub("stdin")))["seq"], 42);
  EXPECT_EQ(slurp(dir_.sub("env")), "space.threshold /mnt/data\n");
  EXPECT_FALSE(std::ifstream(dir_.sub("other")).good());
}

TEST(HookSinkNoDir, WantsNothing) {
  HookSink sink(HookOptions{.dir = "/nonexistent/storwatch-hooks"});
  EXPECT_FALSE(sink.wants(threshold("below", std::chrono::system_clock::now())));
}

}  // namespace
}  // namespace storwatch::daemon
