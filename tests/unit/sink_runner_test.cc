// SinkRunner: a sink fed from the journal on its own thread, from a durable cursor, with backoff,
// partial deliveries, a filter, and a shutdown that a hung sink cannot hold up.
//
// The journal is a real one in a temporary state database. Nothing sleeps: the test waits on what
// the fake sink records (a condition variable with a deadline that only turns a hang into a
// failure).
#include "daemon/sink/sink_runner.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <vector>

#include "daemon/state/state_db.h"
#include "support/temp_dir.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
constexpr auto kDeadline = 10s;

EventPtr event(uint64_t seq, std::string type = "fs.error") {
  Event e;
  e.seq = seq;
  e.journal_id = "test";
  e.type = std::move(type);
  e.severity = Severity::error;
  e.source = "test";
  e.time = e.first_time = e.last_time = std::chrono::system_clock::now();
  return make_bus_event(std::move(e));
}

// What a FakeSink saw; outlives the sink (the runner owns the sink).
struct Record {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint64_t> seqs;
  int calls = 0;
  int fail_first = 0;          // calls that fail
  size_t accept_at_most = 0;   // per call; 0: all
  bool hang = false;           // deliver blocks until release
  bool released = false;
  bool in_deliver = false;

  bool wait(std::function<bool()> pred) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kDeadline, pred);
  }
  void release() {
    std::lock_guard lock(mu);
    released = true;
    cv.notify_all();
  }
};

class FakeSink : public Sink {
 public:
  explicit FakeSink(std::shared_ptr<Record> r, std::string skip_type = "") : r_(r), skip_(skip_type) {}
  std::string name() const override { return "fake"; }
  bool wants(const Event& e) const override { return e.type != skip_; }
  Result<size_t> deliver(std::span<const EventPtr> events) override {
    std::unique_lock lock(r_->mu);
    ++r_->calls;
    r_->in_deliver = true;
    r_->cv.notify_all();
    if (r_->hang) r_->cv.wait(lock, [&] { return r_->released; });
    r_->in_deliver = false;
    if (r_->fail_first > 0) {
      --r_->fail_first;
      r_->cv.notify_all();
      return fail_invalid("destination down");
    }
    size_t n = r_->accept_at_most ? std::min(r_->accept_at_most, events.size()) : events.size();
    for (size_t i = 0; i < n; ++i) r_->seqs.push_back(events[i]->event.seq);
    r_->cv.notify_all();
    return n;
  }

 private:
  std::shared_ptr<Record> r_;
  std::string skip_;
};

class SinkRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = StateDb::open(dir_.sub("state"));
    ASSERT_TRUE(db) << db.error().message();
    db_ = std::move(*db);
    auto j = Journal::open(db_->path(), {}, nullptr);
    ASSERT_TRUE(j) << j.error().message();
    journal_ = std::move(*j);
  }
  void append(uint64_t first, uint64_t last, std::string type = "fs.error") {
    for (uint64_t s = first; s <= last; ++s) journal_->append(event(s, type));
    ASSERT_TRUE(journal_->flush(kDeadline));
  }
  std::unique_ptr<SinkRunner> start(std::shared_ptr<Record> r, std::string skip = "",
                                    std::string journal_id = "J1") {
    SinkRunnerOptions o;
    o.backoff_min = 1ms;
    o.backoff_max = 4ms;
    o.batch = 4;
    o.stop_timeout = 200ms;
    auto runner = SinkRunner::start(*journal_, journal_id, std::make_unique<FakeSink>(r, skip), o);
    EXPECT_TRUE(runner) << runner.error().message();
    return runner ? std::move(*runner) : nullptr;
  }
  static std::vector<uint64_t> range(uint64_t a, uint64_t b) {
    std::vector<uint64_t> v;
    for (uint64_t s = a; s <= b; ++s) v.push_back(s);
    return v;
  }
  bool wait_status(SinkRunner& runner, std::function<bool(const SinkStatus&)> pred) {
    // The status is the runner's, which has no condition variable for the test; its cursor moves
    // right after a delivery the Record saw, so this polls only that short window.
    auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (std::chrono::steady_clock::now() < deadline)
      if (pred(runner.status())) return true;
      else std::this_thread::yield();
    return false;
  }

  test::TempDir dir_;
  std::unique_ptr<StateDb> db_;
  std::unique_ptr<Journal> journal_;
};

TEST_F(SinkRunnerTest, DeliversNewEventsInOrderAndResumesFromItsCursor) {
  append(1, 3);  // before the sink existed: a new sink starts at the end of the journal
  auto r = std::make_shared<Record>();
  auto runner = start(r);
  ASSERT_TRUE(wait_status(*runner, [](const SinkStatus& s) { return s.state == "ok"; }));
  append(4, 13);
  ASSERT_TRUE(r->wait([&] { return r->seqs.size() >= 10; }));
  EXPECT_EQ(r->seqs, range(4, 13));
  ASSERT_TRUE(wait_status(*runner, [](const SinkStatus& s) { return s.cursor == 13; }));
  SinkStatus st = runner->status();
  EXPECT_EQ(st.name, "fake");
  EXPECT_EQ(st.delivered, 10u);
  EXPECT_EQ(st.lag(), 0u);
  EXPECT_TRUE(st.last_delivery.has_value());
  runner.reset();

  append(14, 16);  // while the sink was stopped
  auto r2 = std::make_shared<Record>();
  auto runner2 = start(r2);
  ASSERT_TRUE(r2->wait([&] { return r2->seqs.size() >= 3; }));
  EXPECT_EQ(r2->seqs, range(14, 16));
}

TEST_F(SinkRunnerTest, RetriesAFailingSinkAndReportsIt) {
  auto r = std::make_shared<Record>();
  r->fail_first = 3;
  auto runner = start(r);
  ASSERT_TRUE(wait_status(*runner, [](const SinkStatus& s) { return s.state == "ok"; }));
  append(1, 2);
  ASSERT_TRUE(r->wait([&] { return r->seqs.size() >= 2; }));
  EXPECT_EQ(r->seqs, range(1, 2));
  ASSERT_TRUE(wait_status(*runner, [](const SinkStatus& s) { return s.cursor == 2; }));
  SinkStatus st = runner->status();
  EXPECT_EQ(st.failures, 3u);
  EXPECT_EQ(st.last_error.find("destination down") != std::string::npos, true) << st.last_error;
  EXPECT_EQ(st.state, "ok");
}

TEST_F(SinkRunnerTest, PartialDeliveriesAreOfferedAgainWithoutRepeats) {
  auto r = std::make_shared<Record>();
  r->accept_at_most = 1;
  auto runner = start(r);
  ASSERT_TRUE(wait_status(*runner, [](const SinkStatus& s) { return s.state == "ok"; }));
  append(1, 9);
  ASSERT_TRUE(r->wait([&] { return r->seqs.size() >= 9; }));
  EXPECT_EQ(r->seqs, range(1, 9));
}

TEST_F(SinkRunnerTest, UnwantedEventsMoveTheCursorWithoutADelivery) {
  auto r = std::make_shared<Record>();
  auto runner = start(r, "mount.attached");
  ASSERT_TRUE(wait_status(*runner, [](const SinkStatus& s) { return s.state == "ok"; }));
  append(1, 6, "mount.attached");
  append(7, 7);
  ASSERT_TRUE(r->wait([&] { return !r->seqs.empty(); }));
  EXPECT_EQ(r->seqs, std::vector<uint64_t>{7});
  ASSERT_TRUE(wait_status(*runner, [](const SinkStatus& s) { return s.cursor == 7; }));
}

TEST_F(SinkRunnerTest, ACursorOfAnotherJournalStartsFromTheBeginning) {
  {
    auto r = std::make_shared<Record>();
    auto runner = start(r, "", "OLD");
    ASSERT_TRUE(wait_status(*runner, [](const SinkStatus& s) { return s.state == "ok"; }));
  }
  append(1, 3);
  auto r = std::make_shared<Record>();
  auto runner = start(r, "", "NEW");
  ASSERT_TRUE(r->wait([&] { return r->seqs.size() >= 3; }));
  EXPECT_EQ(r->seqs, range(1, 3));
}

TEST_F(SinkRunnerTest, AHungSinkDoesNotHoldUpShutdown) {
  auto r = std::make_shared<Record>();
  r->hang = true;
  auto runner = start(r);
  ASSERT_TRUE(wait_status(*runner, [](const SinkStatus& s) { return s.state == "ok"; }));
  append(1, 1);
  ASSERT_TRUE(r->wait([&] { return r->in_deliver; }));
  auto t0 = std::chrono::steady_clock::now();
  runner.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  r->release();  // the thread left behind finishes on its own
  ASSERT_TRUE(r->wait([&] { return !r->in_deliver; }));
}

}  // namespace
}  // namespace storwatch::daemon
