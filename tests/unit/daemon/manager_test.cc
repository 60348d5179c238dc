#include "daemon/manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "base/time_format.h"
#include "proto/varlink.h"
#include "support/fake_clock.h"
#include "support/fake_mount_table.h"
#include "support/fake_statfs_probe.h"
#include "support/temp_dir.h"
#include "support/varlink_test_client.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;
namespace errs = proto::errors;

// A read-only root (not watched), /proc, an ext4 at /mnt/data with a bind mount of a
// subdirectory at /srv/www, and an xfs at /mnt/other.
constexpr const char* kMountinfo =
    "20 1 8:2 / / ro,relatime - ext4 /dev/sda2 ro,errors=remount-ro\n"
    "21 20 0:19 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
    "30 20 8:17 / /mnt/data rw,relatime shared:7 - ext4 /dev/sdb1 rw\n"
    "31 20 8:17 /www /srv/www rw,relatime shared:7 - ext4 /dev/sdb1 rw\n"
    "40 20 8:33 / /mnt/other rw,relatime - xfs /dev/sdc1 rw\n";

constexpr const char* kData = "/mnt/data";
constexpr const char* kOther = "/mnt/other";
constexpr uint64_t kBlocks = 1'000'000;  // 4 KiB blocks: levels at 100000 (10%), 50000, 10000

daemon::Usage usage(uint64_t bavail) {
  return {.frsize = 4096, .blocks = kBlocks, .bavail = bavail, .files = 1000, .favail = 1000};
}

const Peer kRoot{.pid = 100, .uid = 0, .gid = 0};
const Peer kUser{.pid = 101, .uid = 1000, .gid = 1000};

class ManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    probe_ = std::make_shared<test::FakeStatfsProbe>();
    probe_->set(kData, usage(500'000));
    probe_->set(kOther, usage(800'000));
    mounts_ = std::make_shared<test::FakeMountTable::State>();
    mounts_->text = kMountinfo;
  }
  void TearDown() override {
    probe_->release_all();  // no worker may stay stuck in the fake
    sub_.reset();
    manager_.reset();
  }

  Config config() {
    auto c = parse_config("", "test");
    EXPECT_TRUE(c);
    c->state_dir = dir_.sub("state");
    c->socket = dir_.sub("io.storwatch");
    c->statfs_timeout = 5s;
    c->poll_min = 100ms;
    c->poll_max = 1s;
    return *c;
  }

  void start(Config c) {
    sub_.reset();
    manager_.reset();
    Manager::Deps deps;
    deps.clock = &clock_;
    deps.statfs = probe_;
    deps.mount_table = std::make_unique<test::FakeMountTable>(mounts_);
    auto l = Server::listen_unix(c.socket);
    ASSERT_TRUE(l) << l.error().message();
    deps.listener = std::move(*l);
    auto m = Manager::create(std::move(c), Manager::Options{}, std::move(deps));
    ASSERT_TRUE(m) << m.error().message();
    manager_ = std::move(*m);
    sub_ = manager_->bus().subscribe(10000, nullptr, nullptr);
  }
  void start() { start(config()); }

  // Steps the loop (which waits on its eventfd for the statfs workers) until `done`. The real-time
  // bound only turns a bug into a failure instead of a hang; passing runs never get near it.
  bool step_until(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      manager_->step(50ms);
    }
    return true;
  }

  json list(bool all = false) {
    auto r = manager_->call(kRoot, "ListFilesystems", {{"all", all}});
    EXPECT_TRUE(r) << r.error().name;
    return r ? (*r)["filesystems"] : json::array();
  }
  json fs(const std::string& dev) {
    for (const auto& f : list(true))
      if (f["dev"] == dev) return f;
    return nullptr;
  }
  std::string sampled(const std::string& dev) {
    json f = fs(dev);
    return f.is_object() && f.contains("sampled") ? f["sampled"].get<std::string>() : "";
  }

  // Moves time to the next poll of every polled filesystem (poll_max at most) and waits until
  // each has its answer, except those in `skip` (blocked in the fake).
  void poll_all(const std::vector<std::string>& skip = {}) {
    clock_.advance(1s);
    std::string now = format_time(clock_.wall_now());
    manager_->step(0ms);  // the due poll timers send their requests
    bool ok = step_until([&] {
      for (const auto& f : list()) {
        if (f["levels"].empty()) continue;  // not polled
        std::string dev = f["dev"];
        if (std::find(skip.begin(), skip.end(), dev) != skip.end()) continue;
        if (f.value("sampled", "") != now) return false;
      }
      return true;
    });
    ASSERT_TRUE(ok) << "statfs answers did not arrive";
  }
  // Sets what statfs of /mnt/data says and lets the daemon see it.
  void sample(uint64_t bavail) {
    probe_->set(kData, usage(bavail));
    poll_all();
  }

  std::vector<Event> events() {
    std::vector<Event> out;
    while (auto e = sub_->pop()) out.push_back(e->event);
    return out;
  }
  // "type direction level" for space.threshold, "type" otherwise: compact expectations.
  static std::vector<std::string> brief(const std::vector<Event>& es) {
    std::vector<std::string> out;
    for (const auto& e : es) {
      std::string s = e.type;
      if (e.type == "space.threshold")
        s += " " + e.detail["direction"].get<std::string>() + " " + e.detail["level"].get<std::string>();
      if (e.type == "space.enospc") s += " " + e.detail["kind"].get<std::string>();
      out.push_back(s);
    }
    return out;
  }

  test::TempDir dir_;
  test::FakeClock clock_;
  std::shared_ptr<test::FakeStatfsProbe> probe_;
  std::shared_ptr<test::FakeMountTable::State> mounts_;
  std::unique_ptr<Manager> manager_;
  std::shared_ptr<Subscriber> sub_;
};

using Strings = std::vector<std::string>;

TEST_F(ManagerTest, ThresholdEventsGoDownInOrderAndComeBackAfterHysteresis) {
  start();
  poll_all();  // 50% free: nothing to say
  EXPECT_TRUE(events().empty());

  sample(80'000);  // 8%
  auto es = events();
  ASSERT_EQ(brief(es), (Strings{"space.threshold below 10%"}));
  const Event& e = es[0];
  EXPECT_EQ(e.severity, Severity::warning);
  EXPECT_EQ(e.source, "statfs");
  ASSERT_TRUE(e.fs);
  EXPECT_EQ(e.fs->dev(), "8:17");
  EXPECT_EQ(e.fs->mounts, (Strings{"/mnt/data", "/srv/www"}));
  EXPECT_EQ(e.detail["resource"], "blocks");
  EXPECT_EQ(e.detail["level_id"], "blocks<10%");
  EXPECT_EQ(e.detail["avail"], 80'000);
  EXPECT_EQ(e.detail["avail_bytes"], 80'000ull * 4096);
  EXPECT_EQ(e.detail["level_bytes"], 100'000ull * 4096);
  EXPECT_EQ(e.time, clock_.wall_now());

  sample(30'000);  // 3%
  es = events();
  ASSERT_EQ(brief(es), (Strings{"space.threshold below 5%"}));
  EXPECT_EQ(es[0].severity, Severity::error);

  sample(5'000);  // 0.5%
  es = events();
  ASSERT_EQ(brief(es), (Strings{"space.threshold below 1%"}));
  EXPECT_EQ(es[0].severity, Severity::critical);

  sample(4'000);  // lower still: nothing new
  EXPECT_TRUE(events().empty());

  sample(0);
  es = events();
  ASSERT_EQ(brief(es), (Strings{"space.enospc data"}));
  EXPECT_EQ(es[0].severity, Severity::error);
  sample(0);
  EXPECT_TRUE(events().empty());  // edge-triggered

  // Back up to 10.5%: 1% and 5% are past their 1% hysteresis, 10% is not (re-arms at 11%).
  sample(105'000);
  es = events();
  ASSERT_EQ(brief(es), (Strings{"space.threshold above 1%", "space.threshold above 5%"}));
  EXPECT_EQ(es[0].severity, Severity::info);
  sample(109'999);
  EXPECT_TRUE(events().empty());
  sample(110'000);
  EXPECT_EQ(brief(events()), (Strings{"space.threshold above 10%"}));

  // Sequence numbers are consecutive across all of it.
  EXPECT_EQ(manager_->bus().last_seq(), 7u);
}

TEST_F(ManagerTest, AJumpPastSeveralLevelsReportsEachMostSevereLast) {
  start();
  poll_all();
  sample(0);
  EXPECT_EQ(brief(events()), (Strings{"space.threshold below 10%", "space.threshold below 5%",
                                      "space.threshold below 1%", "space.enospc data"}));
  sample(900'000);
  EXPECT_EQ(brief(events()), (Strings{"space.threshold above 1%", "space.threshold above 5%",
                                      "space.threshold above 10%"}));
}

TEST_F(ManagerTest, CrossedLevelsSurviveARestart) {
  start();
  poll_all();
  sample(80'000);
  EXPECT_EQ(events().size(), 1u);
  uint64_t last = manager_->bus().last_seq();
  start();  // same state directory
  poll_all();
  EXPECT_TRUE(events().empty()) << "the crossing was reported again after a restart";
  sample(200'000);
  auto es = events();
  ASSERT_EQ(brief(es), (Strings{"space.threshold above 10%"}));
  EXPECT_GT(es[0].seq, last);  // numbering continues past the previous run's reservation
}

TEST_F(ManagerTest, HungStatfsIsUnresponsiveAfterTheTimeoutThenResponsive) {
  // Only /mnt/data is polled, so nothing else is in flight while the clock jumps.
  mounts_->text =
      "20 1 8:2 / / ro,relatime - ext4 /dev/sda2 ro,errors=remount-ro\n"
      "30 20 8:17 / /mnt/data rw,relatime shared:7 - ext4 /dev/sdb1 rw\n";
  start();
  poll_all();
  probe_->block(kData);
  poll_all({"8:17"});  // the request goes out and gets stuck in the "kernel"
  ASSERT_TRUE(step_until([&] { return probe_->waiting() == 1; }));
  EXPECT_TRUE(events().empty());

  clock_.advance(4999ms);  // the request went out 0s ago; the timeout is 5s
  manager_->step(0ms);
  EXPECT_TRUE(events().empty()) << "unresponsive before statfs_timeout";
  clock_.advance(1ms);
  manager_->step(0ms);
  auto es = events();
  ASSERT_EQ(brief(es), (Strings{"fs.unresponsive"}));
  EXPECT_EQ(es[0].severity, Severity::warning);
  EXPECT_EQ(es[0].fs->dev(), "8:17");
  EXPECT_EQ(es[0].detail["timeout_ms"], 5000);
  EXPECT_EQ(es[0].detail["path"], kData);
  EXPECT_EQ(fs("8:17")["health"], "stale");

  // Still stuck: no second event, and no second statfs piling up behind the first.
  clock_.advance(10s);
  manager_->step(0ms);
  EXPECT_TRUE(events().empty());
  EXPECT_EQ(probe_->waiting(), 1);

  probe_->set(kData, usage(80'000));
  probe_->release(kData);
  ASSERT_TRUE(step_until([&] { return fs("8:17")["health"] == "ok"; }));
  // The late answer still counts as a sample.
  EXPECT_EQ(brief(events()), (Strings{"fs.responsive", "space.threshold below 10%"}));
}

TEST_F(ManagerTest, AddRuleAsRootAppliesPersistsAndReplacesDefaultLevels) {
  start();
  poll_all();
  json rule = {{"path", "/mnt/data"},
               {"levels", {{{"resource", "blocks"}, {"below", "60%"}, {"severity", "critical"}}}}};
  auto r = manager_->call(kRoot, "AddRule", {{"rule", rule}});
  ASSERT_TRUE(r) << r.error().parameters.dump();
  ASSERT_EQ((*r)["rules"].size(), 1u);
  EXPECT_EQ((*r)["rules"][0]["path"], "/mnt/data");
  EXPECT_EQ((*r)["rules"][0]["origin"], "runtime");
  json levels = fs("8:17")["levels"];
  ASSERT_EQ(levels.size(), 1u);  // the rule replaces the default levels on this filesystem
  EXPECT_EQ(levels[0]["id"], "blocks<60%");
  EXPECT_EQ(fs("8:33")["levels"].size(), 6u);  // others keep the defaults

  poll_all();  // 50% free is below 60%
  auto es = events();
  ASSERT_EQ(brief(es), (Strings{"space.threshold below 60%"}));
  EXPECT_EQ(es[0].severity, Severity::critical);

  // Persisted: a restart has it.
  start();
  auto rules = manager_->call(kUser, "ListRules", json::object());  // reading needs no root
  ASSERT_TRUE(rules);
  ASSERT_EQ((*rules)["rules"].size(), 1u);
  EXPECT_EQ((*rules)["rules"][0]["levels"][0]["below"], "60%");

  auto removed = manager_->call(kRoot, "RemoveRule", {{"path", "/mnt/data/"}});
  ASSERT_TRUE(removed) << removed.error().parameters.dump();
  EXPECT_TRUE((*removed)["rules"].empty());
  EXPECT_EQ(fs("8:17")["levels"].size(), 6u);
}

TEST_F(ManagerTest, ChangingRulesNeedsRoot) {
  start();
  json rule = {{"path", "/mnt/data"}, {"levels", {{{"below", "60%"}}}}};
  auto r = manager_->call(kUser, "AddRule", {{"rule", rule}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, errs::kPermissionDenied);
  EXPECT_EQ(r.error().parameters["reason"], "changing rules needs root; you are uid 1000");
  auto rm = manager_->call(kUser, "RemoveRule", {{"path", "/mnt/data"}});
  ASSERT_FALSE(rm);
  EXPECT_EQ(rm.error().name, errs::kPermissionDenied);
  auto seed = manager_->call(kUser, "AddRule", {{"line", "/mnt/data G T 1000"}});
  ASSERT_FALSE(seed);
  EXPECT_EQ(seed.error().name, errs::kPermissionDenied);
  EXPECT_TRUE((*manager_->call(kRoot, "ListRules", json::object()))["rules"].empty());
}

TEST_F(ManagerTest, RuleForAPathThatIsNotAMountPointIsRefusedPrecisely) {
  start();
  json rule = {{"path", "/mnt/data/projects"}, {"levels", {{{"below", "10%"}}}}};
  auto r = manager_->call(kRoot, "AddRule", {{"rule", rule}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, errs::kInvalidRule);
  EXPECT_EQ(r.error().parameters["reason"],
            "/mnt/data/projects is not a mount point (it is on the filesystem mounted at /mnt/data); "
            "a rule names the mount point of a filesystem");

  rule["path"] = "/proc";
  r = manager_->call(kRoot, "AddRule", {{"rule", rule}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().parameters["reason"], "/proc is a proc filesystem, which storwatch does not watch");

  rule["path"] = "relative";
  r = manager_->call(kRoot, "AddRule", {{"rule", rule}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, errs::kInvalidRule);

  // A bind mount's mount point is a mount point of the same filesystem: accepted.
  rule["path"] = "/srv/www";
  r = manager_->call(kRoot, "AddRule", {{"rule", rule}});
  EXPECT_TRUE(r) << r.error().parameters.dump();
}

TEST_F(ManagerTest, SeedLinesAddUpdateAndRemoveRules) {
  start();
  poll_all();
  auto r = manager_->call(kRoot, "AddRule", {{"line", "/mnt/data G T 1000 500"}});
  ASSERT_TRUE(r) << r.error().parameters.dump();
  json rule = (*r)["rules"][0];
  EXPECT_EQ(rule["path"], "/mnt/data");
  EXPECT_EQ(rule["events"], true);
  EXPECT_EQ(rule["thresholds"], true);
  ASSERT_EQ(rule["levels"].size(), 2u);
  EXPECT_EQ(rule["levels"][0]["below"], "1000 blocks");
  EXPECT_EQ(rule["levels"][0]["severity"], "warning");
  EXPECT_EQ(rule["levels"][1]["below"], "500 blocks");
  EXPECT_EQ(rule["levels"][1]["severity"], "error");

  sample(999);
  EXPECT_EQ(brief(events()), (Strings{"space.threshold below 1000 blocks"}));
  sample(499);
  EXPECT_EQ(brief(events()), (Strings{"space.threshold below 500 blocks"}));

  // "!MOUNT T" switches thresholds off (cumulative, as in the seed; a trailing slash names the
  // same rule): the filesystem is no longer polled.
  r = manager_->call(kRoot, "AddRule", {{"line", "!/mnt/data/ T"}});
  ASSERT_TRUE(r) << r.error().parameters.dump();
  ASSERT_EQ((*r)["rules"].size(), 1u);
  EXPECT_EQ((*r)["rules"][0]["thresholds"], false);
  EXPECT_EQ((*r)["rules"][0]["events"], true);
  EXPECT_TRUE(fs("8:17")["levels"].empty());

  // Bad lines are refused with the parser's message.
  auto bad = manager_->call(kRoot, "AddRule", {{"line", "/mnt/data T 500 1000"}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().name, errs::kInvalidRule);
  EXPECT_THAT(bad.error().parameters["reason"].get<std::string>(), HasSubstr("L1 (500) must be higher than L2 (1000)"));

  // "!MOUNT" removes it; the default levels apply again.
  r = manager_->call(kRoot, "AddRule", {{"line", "!/mnt/data"}});
  ASSERT_TRUE(r) << r.error().parameters.dump();
  EXPECT_TRUE((*r)["rules"].empty());
  EXPECT_EQ(fs("8:17")["levels"].size(), 6u);
}

TEST_F(ManagerTest, ListFilesystemsGroupsBindMountsIntoOneEntry) {
  start();
  poll_all();
  json l = list();
  ASSERT_EQ(l.size(), 2u) << l.dump(1);  // the read-only root and /proc are not watched
  EXPECT_EQ(l[0]["dev"], "8:17");
  EXPECT_EQ(l[0]["mounts"], (Strings{"/mnt/data", "/srv/www"}));
  EXPECT_EQ(l[0]["fstype"], "ext4");
  EXPECT_EQ(l[0]["source"], "/dev/sdb1");
  EXPECT_EQ(l[0]["watched"], true);
  EXPECT_EQ(l[0]["health"], "ok");
  EXPECT_EQ(l[0]["blocks_total"], kBlocks);
  EXPECT_EQ(l[0]["blocks_avail"], 500'000);
  EXPECT_EQ(l[0]["levels"].size(), 6u);
  EXPECT_EQ(l[1]["dev"], "8:33");
  EXPECT_EQ(probe_->calls("/srv/www"), 0);  // one statfs per filesystem, not per mount

  json all = list(true);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(fs("8:2")["watched"], false);
  EXPECT_EQ(fs("8:2")["read_only"], true);

  // GetFilesystem by any path on it, or by dev.
  auto g = manager_->call(kUser, "GetFilesystem", {{"path", "/srv/www/index.html"}});
  ASSERT_TRUE(g);
  EXPECT_EQ((*g)["filesystem"]["dev"], "8:17");
  g = manager_->call(kUser, "GetFilesystem", {{"dev", "8:33"}});
  ASSERT_TRUE(g);
  EXPECT_EQ((*g)["filesystem"]["mounts"], (Strings{"/mnt/other"}));
}

TEST_F(ManagerTest, FilesystemThatDisappearsIsDroppedAndNoLongerPolled) {
  start();
  poll_all();
  int other_calls = probe_->calls(kOther);
  EXPECT_GE(other_calls, 1);
  mounts_->text =
      "20 1 8:2 / / ro,relatime - ext4 /dev/sda2 ro,errors=remount-ro\n"
      "30 20 8:17 / /mnt/data rw,relatime shared:7 - ext4 /dev/sdb1 rw\n";
  manager_->refresh_mounts();  // where the kernel would raise POLLPRI on mountinfo
  json l = list();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0]["dev"], "8:17");
  EXPECT_EQ(l[0]["mounts"], (Strings{"/mnt/data"}));  // the bind went too
  EXPECT_TRUE(fs("8:33").is_null());
  int data_calls = probe_->calls(kData);
  poll_all();
  poll_all();
  EXPECT_EQ(probe_->calls(kOther), other_calls);
  EXPECT_EQ(probe_->calls(kData), data_calls + 2);
  auto g = manager_->call(kUser, "GetFilesystem", {{"path", "/mnt/other"}});
  ASSERT_TRUE(g);  // the path is now on the (unwatched) root
  EXPECT_EQ((*g)["filesystem"]["dev"], "8:2");

  // It comes back when mounted again, and is polled at once.
  mounts_->text = kMountinfo;
  manager_->refresh_mounts();
  poll_all();
  EXPECT_GT(probe_->calls(kOther), other_calls);
}

TEST_F(ManagerTest, SubscribersOverTheSocketGetFilteredEvents) {
  start();
  test::VarlinkTestClient c(dir_.sub("io.storwatch"));
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.call("io.storwatch.Subscribe",
                     {{"filter", {{"types", {"space.*"}}, {"fs", {"/srv/www"}}}}}, /*more=*/true));
  auto step = [&] { manager_->step(0ms); };
  ASSERT_TRUE(c.wait_for(1, step));
  json first = c.next();
  ASSERT_FALSE(first.contains("error")) << first.dump();
  EXPECT_EQ(first["continues"], true);
  EXPECT_EQ(first["parameters"]["journal_id"], manager_->bus().journal_id());

  poll_all();
  probe_->set(kOther, usage(1));  // another filesystem: filtered out
  sample(80'000);
  ASSERT_TRUE(c.wait_for(1, step));
  json r = c.next();
  EXPECT_EQ(r["continues"], true);
  EXPECT_EQ(r["parameters"]["event"]["type"], "space.threshold");
  EXPECT_EQ(r["parameters"]["event"]["fs"]["dev"], "8:17");
  EXPECT_EQ(r["parameters"]["journal_id"], manager_->bus().journal_id());
  for (int i = 0; i < 5; ++i) step();
  c.read_available();
  EXPECT_TRUE(c.messages().empty()) << c.messages().front().dump();

  // A filter on a path no filesystem holds is refused.
  test::VarlinkTestClient bad(dir_.sub("io.storwatch"));
  ASSERT_TRUE(bad.call("io.storwatch.Subscribe", {{"filter", {{"fs", {"relative/path"}}}}}, true));
  ASSERT_TRUE(bad.wait_for(1, step));
  EXPECT_EQ(bad.next()["error"], errs::kNoSuchFilesystem);
}

TEST_F(ManagerTest, ConfigRulesCannotBeChangedAtRuntime) {
  Config c = config();
  auto rule = rule_from_json({{"path", "/mnt/other"}, {"levels", {{{"below", "30%"}}}}});
  ASSERT_TRUE(rule);
  c.rules.push_back(*rule);
  start(c);
  EXPECT_EQ(fs("8:33")["levels"].size(), 1u);
  auto r = manager_->call(kRoot, "AddRule", {{"line", "/mnt/other G"}});
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().parameters["reason"].get<std::string>(), HasSubstr("comes from the configuration file"));
  auto rules = manager_->call(kRoot, "ListRules", json::object());
  ASSERT_TRUE(rules);
  EXPECT_EQ((*rules)["rules"][0]["origin"], "config");
}

TEST_F(ManagerTest, UnknownMethodsAndBadParameters) {
  start();
  auto r = manager_->call(kRoot, "Frobnicate", json::object());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, errs::kMethodNotFound);
  r = manager_->call(kRoot, "GetFilesystem", json::object());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, errs::kInvalidParameter);
  r = manager_->call(kRoot, "GetFilesystem", {{"path", "nowhere"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, errs::kNoSuchFilesystem);
  r = manager_->call(kRoot, "AddRule", {{"rule", {{"path", "/mnt/data"}}}, {"line", "/mnt/data G"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, errs::kInvalidRule);
}

}  // namespace
}  // namespace storwatch::daemon
