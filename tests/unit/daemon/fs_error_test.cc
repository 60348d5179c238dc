// FsErrorCorrelator with a FakeClock and synthetic reports: merging of fanotify and kmsg, counts
// that add up, the counter ledger, suppression after read-only or shutdown with the summary, and
// health. The loop is stepped; nothing sleeps.
#include "daemon/source/fs_error_correlator.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "support/fake_clock.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using Health = FsErrorCorrelator::Health;

constexpr const char* kExt4 = "7:1";
constexpr const char* kXfs = "7:2";

class FsErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = EventLoop::create(clock_);
    ASSERT_TRUE(l);
    loop_ = std::move(*l);
    fss_[kExt4] = FsRef{7, 1, "ext4", "", "/dev/loop1", {"/mnt/e"}};
    fss_[kXfs] = FsRef{7, 2, "xfs", "", "/dev/loop2", {"/mnt/x"}};
    marked_ = {kExt4, kXfs};
    make();
  }

  void make(FsErrorCorrelator::Options options = {}) {
    FsErrorCorrelator::Hooks h;
    h.emit = [this](Event e) { events_.push_back(std::move(e)); };
    h.fs_ref = [this](const std::string& dev) -> std::optional<FsRef> {
      auto it = fss_.find(dev);
      if (it == fss_.end()) return std::nullopt;
      return it->second;
    };
    h.resolve_device = [](const std::string& name) -> std::optional<std::string> {
      if (name == "loop1") return std::string(kExt4);
      if (name == "loop2") return std::string(kXfs);
      return std::nullopt;
    };
    h.fanotify_marked = [this](const std::string& dev) { return marked_.count(dev) > 0; };
    h.drain = [this](const std::string&) -> uint64_t {
      ++drains_;
      return 0;
    };
    h.read_counter = [this](const std::string& dev) -> std::optional<uint64_t> {
      if (!counters_.count(dev)) return std::nullopt;
      return std::exchange(counters_[dev], 0);
    };
    h.refresh_mounts = [this] { ++refreshes_; };
    c_ = std::make_unique<FsErrorCorrelator>(*loop_, std::move(h), options);
    c_->filesystem_added(kExt4, false);
    c_->filesystem_added(kXfs, false);
  }

  void advance(std::chrono::milliseconds d) {
    // In small steps so chained timers (mount checks, holds) run at their times.
    for (auto t = 0ms; t < d; t += 5ms) {
      clock_.advance(std::min(5ms, d - t));
      loop_->step(0ms);
    }
  }

  FsErrorReport fanotify(const char* dev, uint64_t count, int err = 117, std::optional<uint64_t> inode = {}) {
    FsErrorReport r;
    r.source = "fanotify";
    unsigned maj, min;
    std::sscanf(dev, "%u:%u", &maj, &min);
    r.sb_dev = std::pair<uint32_t, uint32_t>(maj, min);
    r.count = count;
    r.err = err;
    r.inode = inode;
    r.when = clock_.now();
    return r;
  }
  FsErrorReport kmsg(const char* device, const char* function = "ext4_lookup",
                     std::optional<uint64_t> inode = {}) {
    FsErrorReport r;
    r.source = "kmsg";
    r.device_name = device;
    r.function = function;
    r.line = 1787;
    r.comm = "cat";
    r.inode = inode;
    r.message = std::string("EXT4-fs error (device ") + device + "): ...";
    r.when = clock_.now();
    return r;
  }
  FsErrorReport mountinfo(const char* dev, FsErrorReport::Kind kind, const char* cause = "") {
    FsErrorReport r;
    r.source = "mountinfo";
    unsigned maj, min;
    std::sscanf(dev, "%u:%u", &maj, &min);
    r.sb_dev = std::pair<uint32_t, uint32_t>(maj, min);
    r.kind = kind;
    r.cause = cause;
    return r;
  }

  std::vector<Event> take() { return std::exchange(events_, {}); }
  static uint64_t error_sum(const std::vector<Event>& es) {
    uint64_t n = 0;
    for (const auto& e : es)
      if (e.type == "fs.error") n += e.count;
    return n;
  }
  static std::vector<std::string> types(const std::vector<Event>& es) {
    std::vector<std::string> out;
    for (const auto& e : es) out.push_back(e.type);
    return out;
  }

  test::FakeClock clock_;
  std::unique_ptr<EventLoop> loop_;
  std::map<std::string, FsRef> fss_;
  std::set<std::string> marked_;
  std::map<std::string, uint64_t> counters_;
  int drains_ = 0, refreshes_ = 0;
  std::vector<Event> events_;
  std::unique_ptr<FsErrorCorrelator> c_;
};

TEST_F(FsErrorTest, FanotifyThenKmsgIsOneEventWithBothDetails) {
  c_->report(fanotify(kExt4, 1, 74, 13));
  advance(20ms);
  c_->report(kmsg("loop1", "ext4_lookup", 13));
  EXPECT_TRUE(events_.empty()) << "held for the kernel log";
  advance(250ms);
  auto es = take();
  ASSERT_EQ(es.size(), 1u);
  const Event& e = es[0];
  EXPECT_EQ(e.type, "fs.error");
  EXPECT_EQ(e.source, "fanotify");
  EXPECT_EQ(e.count, 1u);
  ASSERT_TRUE(e.fs);
  EXPECT_EQ(e.fs->dev(), kExt4);
  EXPECT_EQ(e.detail["errno"], 74);
  EXPECT_EQ(e.detail["error"], "EBADMSG");
  EXPECT_EQ(e.detail["inode"], 13);
  EXPECT_EQ(e.detail["function"], "ext4_lookup");
  EXPECT_EQ(e.detail["line"], 1787);
  EXPECT_EQ(e.detail["comm"], "cat");
  EXPECT_EQ(e.detail["sources"], (nlohmann::json{"fanotify", "kmsg"}));
  EXPECT_EQ(c_->health(kExt4), Health::errors);
  EXPECT_EQ(c_->error_count(kExt4), 1u);
}

TEST_F(FsErrorTest, KmsgThenFanotifyIsOneEventCountedByFanotify) {
  c_->report(kmsg("loop1"));
  advance(50ms);
  c_->report(fanotify(kExt4, 3));
  advance(250ms);
  auto es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].count, 3u);  // fanotify's count, not the one kmsg line
  EXPECT_EQ(es[0].detail["function"], "ext4_lookup");
}

TEST_F(FsErrorTest, KmsgArrivingLateGoesToTheNextFanotifyReport) {
  c_->report(fanotify(kExt4, 1));
  advance(250ms);
  ASSERT_EQ(take().size(), 1u);
  c_->report(kmsg("loop1", "late_func"));
  advance(250ms);  // no fanotify report: fanotify counts ext4, so the line alone is no event
  EXPECT_TRUE(take().empty());
  c_->report(fanotify(kExt4, 2));
  advance(250ms);
  auto es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].count, 2u);
  EXPECT_EQ(es[0].detail["function"], "late_func");
}

TEST_F(FsErrorTest, BurstCountsAddUpToTheKernelsCount) {
  uint64_t kernel = 0;
  for (int i = 0; i < 1000; ++i) {
    uint64_t n = 1 + (i % 97) * 3;  // merged counts as fanotify gives them
    kernel += n;
    c_->report(fanotify(kExt4, n));
    if (i % 10 == 0) c_->report(kmsg("loop1"));
    advance(5ms);
  }
  advance(1s);
  auto es = take();
  EXPECT_EQ(error_sum(es), kernel);
  EXPECT_LT(es.size(), 60u) << "merged, not one event per report";
  EXPECT_EQ(c_->error_count(kExt4), kernel);
}

TEST_F(FsErrorTest, DifferentInodesOrErrnosAreDifferentEvents) {
  c_->report(fanotify(kExt4, 1, 74, 13));
  c_->report(fanotify(kExt4, 1, 74, 14));
  c_->report(fanotify(kExt4, 2, 117));
  advance(250ms);
  auto es = take();
  ASSERT_EQ(es.size(), 3u);
  EXPECT_EQ(error_sum(es), 4u);
}

TEST_F(FsErrorTest, WithoutFanotifyKmsgCountsAndSuppressedGoesToTheNextError) {
  marked_.clear();
  c_->report(kmsg("loop1"));
  auto es = take();
  ASSERT_EQ(es.size(), 1u) << "no mark: nothing to wait for";
  EXPECT_EQ(es[0].source, "kmsg");
  EXPECT_EQ(es[0].count, 1u);
  FsErrorReport s;
  s.source = "kmsg";
  s.kind = FsErrorReport::Kind::suppressed;
  s.device_name = "loop1";
  s.count = 41;
  c_->report(s);
  c_->report(kmsg("loop1"));
  es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].count, 42u);
  EXPECT_EQ(es[0].detail["suppressed"], 41);
  // A suppressed count with no error after it goes out on its own.
  c_->report(s);
  advance(250ms);
  es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].count, 41u);
  EXPECT_EQ(c_->error_count(kExt4), 1u + 42u + 41u);
}

TEST_F(FsErrorTest, XfsKmsgCountsWhenFanotifyStaysSilent) {
  c_->report(kmsg("loop2", "xfs_inode_buf_verify"));
  EXPECT_TRUE(take().empty()) << "marked: held in case fanotify reports it";
  advance(250ms);
  auto es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].source, "kmsg");
  EXPECT_EQ(es[0].count, 1u);
  EXPECT_EQ(es[0].fs->fstype, "xfs");
}

TEST_F(FsErrorTest, CounterIncreasesNotExplainedBecomeOneEvent) {
  counters_[kExt4] = 0;
  c_->report(fanotify(kExt4, 3));
  FsErrorReport r;
  r.source = "sysfs";
  unsigned maj = 7, min = 1;
  r.sb_dev = std::pair<uint32_t, uint32_t>(maj, min);
  r.count = 5;  // the counter rose by 5; fanotify saw 3
  c_->report(r);
  advance(400ms);
  auto es = take();
  ASSERT_EQ(es.size(), 2u);
  EXPECT_EQ(error_sum(es), 5u);
  EXPECT_GT(drains_, 0) << "fanotify read before comparing";
  bool unexplained = false;
  for (const auto& e : es)
    if (e.detail.value("unexplained", false)) {
      unexplained = true;
      EXPECT_EQ(e.count, 2u);
      EXPECT_EQ(e.source, "sysfs");
    }
  EXPECT_TRUE(unexplained);
  // The counter catching up later with what fanotify already counted adds nothing.
  counters_[kExt4] = 0;
  c_->report(fanotify(kExt4, 4));
  advance(100ms);
  counters_[kExt4] = 4;  // read at the comparison
  advance(400ms);
  EXPECT_EQ(error_sum(take()), 4u);
}

TEST_F(FsErrorTest, ErrorsAfterReadonlyAreSummarisedWhenWritableAgain) {
  c_->report(fanotify(kExt4, 1));
  c_->report(mountinfo(kExt4, FsErrorReport::Kind::readonly, "emergency_ro"));
  auto es = take();
  // The held error goes out first, then fs.readonly.
  ASSERT_EQ(types(es), (std::vector<std::string>{"fs.error", "fs.readonly"}));
  EXPECT_EQ(es[1].detail["cause"], "emergency_ro");
  EXPECT_EQ(c_->health(kExt4), Health::readonly);
  for (int i = 0; i < 100; ++i) c_->report(fanotify(kExt4, 10));
  c_->report(kmsg("loop1"));
  advance(1s);
  EXPECT_TRUE(take().empty()) << "counted, not sent";
  EXPECT_EQ(c_->error_count(kExt4), 1001u);
  c_->report(mountinfo(kExt4, FsErrorReport::Kind::writable));
  es = take();
  ASSERT_EQ(types(es), (std::vector<std::string>{"fs.error", "fs.writable"}));
  EXPECT_EQ(es[0].count, 1000u);
  EXPECT_EQ(es[0].detail["summary"], true);
  EXPECT_EQ(c_->health(kExt4), Health::errors);
  EXPECT_EQ(c_->error_count(kExt4), 1001u);
}

TEST_F(FsErrorTest, ShutdownThenUnmountSendsTheSummary) {
  FsErrorReport s = kmsg("loop2", "");
  s.kind = FsErrorReport::Kind::shutdown;
  s.message = "XFS (loop2): Log I/O Error (0x6) detected. Shutting down filesystem.";
  c_->report(s);
  auto es = take();
  ASSERT_EQ(types(es), (std::vector<std::string>{"fs.shutdown", "fs.readonly"}));
  EXPECT_EQ(es[1].detail["cause"], "shutdown");
  EXPECT_EQ(c_->health(kXfs), Health::shutdown);
  for (int i = 0; i < 7; ++i) c_->report(kmsg("loop2", "xfs_iread"));
  advance(1s);
  EXPECT_TRUE(take().empty());
  c_->filesystem_removed(kXfs);
  es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].count, 7u);
  EXPECT_EQ(es[0].detail["summary"], true);
  EXPECT_EQ(es[0].detail["until"], "unmounted");
  // Mounted afresh on the same device: writable again.
  c_->filesystem_added(kXfs, false);
  es = take();
  ASSERT_EQ(types(es), (std::vector<std::string>{"fs.writable"}));
  EXPECT_EQ(c_->health(kXfs), Health::ok);
}

TEST_F(FsErrorTest, KmsgReadonlyAsksTheMountTableAndFallsBackToCauseErrors) {
  FsErrorReport r = kmsg("loop1", "");
  r.kind = FsErrorReport::Kind::readonly;
  c_->report(r);
  advance(20ms);
  EXPECT_GE(refreshes_, 1) << "the mount table is read again at once";
  EXPECT_TRUE(take().empty());
  advance(1100ms);
  auto es = take();
  ASSERT_EQ(types(es), (std::vector<std::string>{"fs.readonly"}));
  EXPECT_EQ(es[0].detail["cause"], "errors");
}

TEST_F(FsErrorTest, RemountReadonlySoonAfterErrorsHasCauseErrors) {
  c_->report(mountinfo(kXfs, FsErrorReport::Kind::readonly, "remount"));
  auto es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].detail["cause"], "remount");
  c_->report(mountinfo(kXfs, FsErrorReport::Kind::writable));
  EXPECT_EQ(types(take()), (std::vector<std::string>{"fs.writable"}));
  c_->report(fanotify(kExt4, 1));
  advance(250ms);
  take();
  c_->report(mountinfo(kExt4, FsErrorReport::Kind::readonly, "remount"));
  es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].detail["cause"], "errors");
}

TEST_F(FsErrorTest, ErrorsTriggerMountTableChecks) {
  c_->report(fanotify(kExt4, 1));
  advance(1100ms);
  EXPECT_EQ(refreshes_, 4) << "5 ms, 50 ms, 250 ms and 1 s after the error";
  c_->report(fanotify(kExt4, 1));
  advance(1100ms);
  EXPECT_EQ(refreshes_, 4) << "not again within the cooldown";
}

TEST_F(FsErrorTest, CatchUpIsOneEventAtOnce) {
  FsErrorReport r;
  r.source = "sysfs";
  r.sb_dev = std::pair<uint32_t, uint32_t>(7u, 1u);
  r.count = 12;
  r.err = 117;
  c_->catch_up(r, {{"last_error_time", "2026-01-01T00:00:00.000000Z"}});
  auto es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].count, 12u);
  EXPECT_EQ(es[0].detail["catch_up"], true);
  EXPECT_EQ(es[0].detail["last_error_time"], "2026-01-01T00:00:00.000000Z");
  EXPECT_EQ(c_->health(kExt4), Health::errors);
}

TEST_F(FsErrorTest, UnknownDevicesAndUnwatchedFilesystemsAreIgnored) {
  c_->report(kmsg("sdz9"));
  c_->report(fanotify("8:99", 5));
  advance(300ms);
  EXPECT_TRUE(take().empty());
}

TEST_F(FsErrorTest, FlushSendsWhatIsHeld) {
  c_->report(fanotify(kExt4, 2));
  c_->report(mountinfo(kXfs, FsErrorReport::Kind::readonly, "emergency_ro"));
  c_->report(kmsg("loop2", "xfs_x"));
  take();
  c_->flush();
  auto es = take();
  EXPECT_EQ(error_sum(es), 3u);
  EXPECT_EQ(c_->pending(), 0u);
}

TEST_F(FsErrorTest, PendingReportsAreBounded) {
  FsErrorCorrelator::Options o;
  o.max_pending = 4;
  make(o);
  for (uint64_t i = 0; i < 20; ++i) c_->report(fanotify(kExt4, 1, 74, 100 + i));
  EXPECT_LE(c_->pending(), 4u);
  advance(300ms);
  EXPECT_EQ(error_sum(take()), 20u);
}

}  // namespace
}  // namespace storwatch::daemon
