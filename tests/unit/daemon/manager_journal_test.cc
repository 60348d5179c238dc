// The Manager with its journal: Subscribe with `after` (replay, then live without a gap or a
// duplicate at the seam), JournalMismatch, ListEvents, the gap a crash leaves, a clean shutdown,
// the replay FIFO, and daemon.degraded/recovered when the journal cannot be written.
//
// Same fakes as manager_test.cc (clock, statfs, mount table, a listener in a temp dir); the loop is
// stepped by the test and clients talk Varlink over the real socket.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <functional>

#include "base/time_format.h"
#include "daemon/manager.h"
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
namespace errs = proto::errors;

constexpr const char* kMountinfo =
    "20 1 8:2 / / ro,relatime - ext4 /dev/sda2 ro,errors=remount-ro\n"
    "30 20 8:17 / /mnt/data rw,relatime shared:7 - ext4 /dev/sdb1 rw\n"
    "40 20 8:33 / /mnt/other rw,relatime - xfs /dev/sdc1 rw\n";

const Peer kUser{.pid = 101, .uid = 1000, .gid = 1000};

daemon::Usage usage(uint64_t bavail) {
  return {.frsize = 4096, .blocks = 1'000'000, .bavail = bavail, .files = 1000, .favail = 1000};
}

FsRef fs_ref(uint32_t minor) {
  FsRef f;
  f.major = 8;
  f.minor = minor;
  f.fstype = minor == 17 ? "ext4" : "xfs";
  f.mounts = {minor == 17 ? "/mnt/data" : "/mnt/other"};
  return f;
}

// Distinct inodes: never folded together.
Event fs_error(uint64_t inode, uint32_t minor = 17) {
  Event e;
  e.type = "fs.error";
  e.severity = Severity::error;
  e.source = "test";
  e.fs = fs_ref(minor);
  e.detail = {{"errno", 5}, {"inode", inode}};
  return e;
}

Event fs_shutdown(uint32_t minor) {
  Event e;
  e.type = "fs.shutdown";
  e.severity = Severity::critical;
  e.source = "test";
  e.fs = fs_ref(minor);
  return e;
}

class ManagerJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    probe_ = std::make_shared<test::FakeStatfsProbe>();
    probe_->set("/mnt/data", usage(500'000));
    probe_->set("/mnt/other", usage(800'000));
    mounts_ = std::make_shared<test::FakeMountTable::State>();
    mounts_->text = kMountinfo;
  }
  void TearDown() override {
    probe_->release_all();
    sub_.reset();
    manager_.reset();
  }

  Config config() {
    auto c = parse_config("", "test");
    EXPECT_TRUE(c);
    c->state_dir = dir_.sub("state");
    c->socket = dir_.sub("io.storwatch");
    c->fold_window = 0ms;  // every event its own (folding has a test of its own below)
    return *c;
  }

  // Destroys the previous Manager first without shutdown(): to the next one, that is a crash.
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
    sub_ = manager_->bus().subscribe(100000, nullptr, nullptr);
  }
  void start() { start(config()); }

  void step() { manager_->step(0ms); }
  bool step_until(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      manager_->step(20ms);
    }
    return true;
  }
  std::vector<Event> events() {
    std::vector<Event> out;
    while (auto e = sub_->pop()) out.push_back(e->event);
    return out;
  }

  json list_events(json params) {
    auto r = manager_->call(kUser, "ListEvents", params);
    EXPECT_TRUE(r) << r.error().name << " " << r.error().parameters.dump();
    return r ? *r : json::object();
  }
  static std::vector<uint64_t> seqs(const json& events) {
    std::vector<uint64_t> out;
    for (const auto& e : events) out.push_back(e["seq"].get<uint64_t>());
    return out;
  }
  // Reads a stream's event replies until `n` arrived (or the deadline), stepping the daemon.
  std::vector<json> stream_events(test::VarlinkTestClient& c, size_t n) {
    std::vector<json> out;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (out.size() < n && std::chrono::steady_clock::now() < deadline && !c.eof()) {
      step();
      c.read_available();
      while (!c.messages().empty()) {
        json m = c.next();
        EXPECT_EQ(m.value("continues", false), true) << m.dump();
        if (m.contains("parameters") && m["parameters"].contains("event"))
          out.push_back(m["parameters"]);
      }
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

TEST_F(ManagerJournalTest, SubscribeAfterReplaysTheJournalThenGoesLiveWithoutGapOrDuplicate) {
  start();
  const std::string id = manager_->bus().journal_id();
  // Part of the history committed, part still in the journal's memory when the client comes.
  for (uint64_t i = 1; i <= 1000; ++i) manager_->emit(fs_error(i));
  ASSERT_TRUE(manager_->journal().flush(10s));
  for (uint64_t i = 1001; i <= 3000; ++i) manager_->emit(fs_error(i));
  ASSERT_EQ(manager_->bus().last_seq(), 3000u);

  test::VarlinkTestClient c(dir_.sub("io.storwatch"));
  ASSERT_TRUE(
      c.call("io.storwatch.Subscribe", {{"after", 100}, {"journal_id", id}}, /*more=*/true));
  ASSERT_TRUE(c.wait_for(1, [&] { step(); }));
  json first = c.next();
  ASSERT_FALSE(first.contains("error")) << first.dump();
  EXPECT_EQ(first["continues"], true);
  EXPECT_EQ(first["parameters"]["journal_id"], id);
  EXPECT_LE(first["parameters"]["journaled_seq"].get<uint64_t>(), 3000u);
  EXPECT_GE(first["parameters"]["journaled_seq"].get<uint64_t>(), 1000u);

  // 2900 events (about 1.4 MB) to replay are far more than the server writes ahead (the socket
  // buffer plus 256 KiB) while the client does not read: the replay is still going on when these
  // are published, so the seam between replay and live falls among them.
  size_t before_seam = c.messages().size();
  EXPECT_LT(before_seam, 2000u);
  for (uint64_t i = 3001; i <= 3100; ++i) manager_->emit(fs_error(i));
  auto got = stream_events(c, 3000);
  for (uint64_t i = 3101; i <= 3200; ++i) manager_->emit(fs_error(i));  // live
  auto more = stream_events(c, 100);
  got.insert(got.end(), more.begin(), more.end());

  ASSERT_EQ(got.size(), 3100u);
  for (size_t k = 0; k < got.size(); ++k) {
    ASSERT_EQ(got[k]["event"]["seq"], 101 + k) << "gap or duplicate at position " << k;
    ASSERT_EQ(got[k]["event"]["detail"]["inode"], 101 + k);
    EXPECT_EQ(got[k]["journal_id"], id);
  }
  for (int i = 0; i < 5; ++i) step();
  c.read_available();
  EXPECT_TRUE(c.messages().empty()) << c.messages().front().dump();
}

TEST_F(ManagerJournalTest, SubscribeAfterAppliesTheFilterToTheReplayButKeepsStreamLost) {
  start();
  manager_->emit(fs_error(1));
  manager_->emit(fs_shutdown(33));
  manager_->emit(fs_shutdown(17));
  manager_->journal().append_gap(50, 60, "test gap");  // journal rows concern every subscriber
  ASSERT_TRUE(manager_->journal().flush(10s));

  test::VarlinkTestClient c(dir_.sub("io.storwatch"));
  ASSERT_TRUE(c.call(
      "io.storwatch.Subscribe",
      {{"after", 0}, {"filter", {{"types", {"fs.shutdown"}}, {"fs", {"/mnt/other"}}}}}, true));
  ASSERT_TRUE(c.wait_for(1, [&] { step(); }));
  ASSERT_FALSE(c.next().contains("error"));
  auto got = stream_events(c, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]["event"]["seq"], 2);
  EXPECT_EQ(got[0]["event"]["fs"]["dev"], "8:33");
  EXPECT_EQ(got[1]["event"]["type"], "stream.lost");
  EXPECT_EQ(got[1]["event"]["detail"]["first_seq"], 50);

  manager_->emit(fs_shutdown(17));  // filtered out live too
  manager_->emit(fs_shutdown(33));
  got = stream_events(c, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["event"]["seq"], 5);
}

TEST_F(ManagerJournalTest, SubscribeWithoutAfterIsLiveOnly) {
  start();
  manager_->emit(fs_error(1));
  test::VarlinkTestClient c(dir_.sub("io.storwatch"));
  ASSERT_TRUE(c.call("io.storwatch.Subscribe", json::object(), true));
  ASSERT_TRUE(c.wait_for(1, [&] { step(); }));
  ASSERT_FALSE(c.next().contains("error"));
  manager_->emit(fs_error(2));
  auto got = stream_events(c, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["event"]["seq"], 2);
}

TEST_F(ManagerJournalTest, SubscribeWithAnotherJournalIdIsJournalMismatch) {
  start();
  const std::string id = manager_->bus().journal_id();
  test::VarlinkTestClient c(dir_.sub("io.storwatch"));
  ASSERT_TRUE(
      c.call("io.storwatch.Subscribe", {{"after", 5}, {"journal_id", "0123456789abcdef"}}, true));
  ASSERT_TRUE(c.wait_for(1, [&] { step(); }));
  json r = c.next();
  EXPECT_EQ(r["error"], errs::kJournalMismatch) << r.dump();
  EXPECT_EQ(r["parameters"]["expected"], "0123456789abcdef");
  EXPECT_EQ(r["parameters"]["actual"], id);

  auto bad = manager_->subscribe(kUser, {{"after", -1}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().name, errs::kInvalidParameter);
  EXPECT_EQ(bad.error().parameters["parameter"], "after");
  bad = manager_->subscribe(kUser, {{"after", 1u}, {"journal_id", 7}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().parameters["parameter"], "journal_id");
  // The right id, or none, is fine.
  EXPECT_TRUE(manager_->subscribe(kUser, {{"after", 1u}, {"journal_id", id}}));
  EXPECT_TRUE(manager_->subscribe(kUser, {{"after", 1u}}));
}

TEST_F(ManagerJournalTest, ListEventsFiltersLimitsAndContinuesWithNextAfter) {
  start();
  for (uint64_t i = 1; i <= 5; ++i) {
    manager_->emit(fs_error(i));      // odd seqs, on /mnt/data
    manager_->emit(fs_shutdown(33));  // even seqs, on /mnt/other
    clock_.advance(1min);
  }
  json r = list_events({{"filter", {{"types", {"fs.error"}}}}, {"limit", 3u}});
  EXPECT_EQ(seqs(r["events"]), (std::vector<uint64_t>{1, 3, 5}));
  EXPECT_EQ(r["journal_id"], manager_->bus().journal_id());
  ASSERT_TRUE(r.contains("next_after"));
  EXPECT_EQ(r["next_after"], 5);
  r = list_events(
      {{"filter", {{"types", {"fs.error"}}}}, {"limit", 3u}, {"after", r["next_after"]}});
  EXPECT_EQ(seqs(r["events"]), (std::vector<uint64_t>{7, 9}));
  EXPECT_FALSE(r.contains("next_after")) << "the journal was read to its end";

  r = list_events({{"filter", {{"fs", {"/mnt/other"}}}}});
  EXPECT_EQ(seqs(r["events"]), (std::vector<uint64_t>{2, 4, 6, 8, 10}));
  EXPECT_EQ(r["events"][0]["type"], "fs.shutdown");
  EXPECT_EQ(seqs(list_events(json::object())["events"]).size(), 10u);

  // since: the events of the last two minutes of the fake clock (times 3 min and 4 min after
  // start).
  std::string since = format_time(clock_.wall_now() - 2min);
  EXPECT_EQ(seqs(list_events({{"since", since}})["events"]), (std::vector<uint64_t>{7, 8, 9, 10}));

  for (json bad : {json{{"limit", 0u}}, json{{"limit", "3"}}, json{{"after", "x"}},
                   json{{"since", "yesterday"}}}) {
    auto e = manager_->call(kUser, "ListEvents", bad);
    ASSERT_FALSE(e) << bad.dump();
    EXPECT_EQ(e.error().name, errs::kInvalidParameter) << bad.dump();
  }
  auto e = manager_->call(kUser, "ListEvents", {{"filter", {{"fs", {"relative"}}}}});
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().name, errs::kNoSuchFilesystem);
}

TEST_F(ManagerJournalTest, ListEventsScansPastManyNonMatchingEvents) {
  start();
  for (uint64_t i = 1; i <= 2500; ++i) manager_->emit(fs_error(i));
  manager_->emit(fs_shutdown(33));
  json r = list_events({{"filter", {{"types", {"fs.shutdown"}}}}});
  EXPECT_EQ(seqs(r["events"]), (std::vector<uint64_t>{2501}));
  EXPECT_FALSE(r.contains("next_after"));
}

TEST_F(ManagerJournalTest, ACrashLeavesOneGapRowAndACleanShutdownNone) {
  start();
  for (uint64_t i = 1; i <= 3; ++i) manager_->emit(fs_error(i));
  start();  // the previous Manager died without shutdown(): numbers 4..65536 were reserved
  json r = list_events(json::object());
  ASSERT_EQ(seqs(r["events"]), (std::vector<uint64_t>{1, 2, 3, 4}));
  json gap = r["events"][3];
  EXPECT_EQ(gap["type"], "stream.lost");
  EXPECT_EQ(gap["source"], "journal");
  EXPECT_EQ(gap["count"], Bus::kReserveBlock - 3);
  EXPECT_EQ(gap["detail"]["first_seq"], 4);
  EXPECT_EQ(gap["detail"]["last_seq"], Bus::kReserveBlock);
  EXPECT_EQ(gap["journal_id"], manager_->bus().journal_id());
  // Another crash before anything new was numbered: those numbers are accounted for already.
  start();
  EXPECT_EQ(seqs(list_events(json::object())["events"]), (std::vector<uint64_t>{1, 2, 3, 4}));

  // Numbering continues past the reservation: a number is never used twice.
  manager_->emit(fs_error(4));
  auto es = events();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].seq, Bus::kReserveBlock + 1);
  manager_->emit(fs_error(5));

  manager_->shutdown();
  start();
  r = list_events({{"after", 4u}});
  EXPECT_EQ(seqs(r["events"]),
            (std::vector<uint64_t>{Bus::kReserveBlock + 1, Bus::kReserveBlock + 2}))
      << "a clean shutdown leaves no gap";
  manager_->emit(fs_error(6));
  es = events();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].seq, Bus::kReserveBlock + 3) << "numbering continues right after the last event";

  // And a clean shutdown with nothing new since is clean too.
  manager_->shutdown();
  start();
  manager_->shutdown();
  start();
  r = list_events({{"after", 4u}});
  EXPECT_EQ(seqs(r["events"]).size(), 3u);
  manager_->emit(fs_error(7));
  EXPECT_EQ(events().at(0).seq, Bus::kReserveBlock + 4);
}

TEST_F(ManagerJournalTest, ShutdownSendsPendingFoldsIntoTheJournal) {
  Config c = config();
  c.fold_window = 1s;
  start(c);
  manager_->emit(fs_error(1));
  manager_->emit(fs_error(1));
  manager_->emit(fs_error(1));  // folded: waits for the window
  manager_->shutdown();
  start();
  json r = list_events(json::object());
  ASSERT_EQ(r["events"].size(), 2u) << r.dump(1);
  EXPECT_EQ(r["events"][0]["count"], 1);
  EXPECT_EQ(r["events"][1]["count"], 2);
  EXPECT_EQ(r["events"][1]["seq"], 2);
}

TEST_F(ManagerJournalTest, LinesWrittenToTheReplayFifoAreEventsOfTheDaemon) {
  Config c = config();
  c.replay_fifo = dir_.sub("replay");
  start(c);
  int w = ::open(c.replay_fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(w, 0);
  std::string lines =
      R"({"type":"fs.error","fs":"/mnt/data/some/file","detail":{"errno":5,"inode":9}})"
      "\n"
      R"({"type":"fs.error","fs":"not/absolute"})"
      "\n"
      R"({"type":"fs.readonly","severity":"critical","fs":"/mnt/other"})"
      "\n";
  ASSERT_EQ(::write(w, lines.data(), lines.size()), static_cast<ssize_t>(lines.size()));
  ::close(w);
  std::vector<Event> got;
  ASSERT_TRUE(step_until([&] {
    for (auto& e : events()) got.push_back(std::move(e));
    return got.size() >= 2;
  }));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].type, "fs.error");
  EXPECT_EQ(got[0].source, "replay");
  EXPECT_EQ(got[0].fs->dev(), "8:17");
  EXPECT_EQ(got[0].fs->mounts, (std::vector<std::string>{"/mnt/data"}));
  EXPECT_EQ(got[0].seq, 1u);
  EXPECT_EQ(got[0].time, clock_.wall_now());
  // A path that resolves to no filesystem is a bad line: refused, never numbered.
  EXPECT_EQ(got[1].type, "fs.readonly");
  EXPECT_EQ(got[1].fs->dev(), "8:33");
  EXPECT_EQ(got[1].seq, 2u);
  EXPECT_EQ(seqs(list_events(json::object())["events"]), (std::vector<uint64_t>{1, 2}));
}

// Every write of this process to a regular file past its first byte fails (EFBIG) while this
// lives: a disk that cannot take the journal's writes, without root. SIGXFSZ is ignored.
class UnwritableFiles {
 public:
  UnwritableFiles() {
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit low = old_;
    low.rlim_cur = 1;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &low), 0);
  }
  ~UnwritableFiles() { restore(); }
  void restore() {
    if (done_) return;
    done_ = true;
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_{};
  sighandler_t old_handler_ = SIG_DFL;
  bool done_ = false;
};

TEST_F(ManagerJournalTest, AJournalThatCannotBeWrittenIsDegradedThenRecovered) {
  start();
  manager_->emit(fs_error(1));  // reserves the first block of numbers while the disk has room
  ASSERT_TRUE(manager_->journal().flush(10s));
  events();

  UnwritableFiles full;
  manager_->emit(fs_error(2));
  // Live delivery goes on; the journal's writer reports the failure through the loop.
  std::vector<Event> got;
  auto collect = [&](const std::string& type) {
    return step_until([&] {
      for (auto& e : events()) got.push_back(std::move(e));
      return std::any_of(got.begin(), got.end(), [&](const Event& e) { return e.type == type; });
    });
  };
  ASSERT_TRUE(collect("daemon.degraded"));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].seq, 2u);
  EXPECT_EQ(got[1].type, "daemon.degraded");
  EXPECT_EQ(got[1].severity, Severity::error);
  EXPECT_EQ(got[1].detail["source"], "journal");
  EXPECT_FALSE(manager_->journal().healthy());
  // Still readable: the journal serves what waits in memory.
  EXPECT_EQ(seqs(list_events(json::object())["events"]), (std::vector<uint64_t>{1, 2, 3}));

  full.restore();
  got.clear();
  ASSERT_TRUE(collect("daemon.recovered"));  // after the journal's retry interval
  EXPECT_EQ(got.back().detail["source"], "journal");
  ASSERT_TRUE(manager_->journal().flush(10s));
  EXPECT_TRUE(manager_->journal().healthy());
  EXPECT_EQ(manager_->journal().journaled_seq(), manager_->bus().last_seq());
  manager_->shutdown();
  start();
  json r = list_events(json::object());
  EXPECT_EQ(r["events"].size(), 4u) << r.dump(1);  // 1, 2, degraded, recovered: nothing lost
}

}  // namespace
}  // namespace storwatch::daemon
