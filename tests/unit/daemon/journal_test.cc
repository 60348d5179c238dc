// Journal: batches written off the loop, reads that merge committed rows with the events still in
// memory, gaps as stream.lost rows, a database that cannot be written, retention.
//
// The writer is a real thread writing a real SQLite database in a temporary state directory. Tests
// never sleep: they wait on the journal's own flush(), on the status callback (a condition variable
// with a deadline that only turns a hang into a failure), or hold the writer still with a write
// lock taken by a second connection, which SQLite's busy handler makes it wait behind.
#include "daemon/journal/journal.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/state/state_db.h"
#include "support/temp_dir.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr auto kFlush = 10s;  // a bound for hangs only; passing runs take milliseconds

const Event::Time kNow = std::chrono::system_clock::now();

EventPtr event(uint64_t seq, Event::Time time = kNow, std::string type = "fs.error") {
  Event e;
  e.seq = seq;
  e.journal_id = "test";
  e.type = std::move(type);
  e.severity = Severity::error;
  e.source = "test";
  e.time = e.first_time = e.last_time = time;
  e.detail = {{"inode", seq}};
  return make_bus_event(std::move(e));
}

std::vector<uint64_t> seqs(const std::vector<EventPtr>& es) {
  std::vector<uint64_t> out;
  for (const auto& e : es) out.push_back(e->event.seq);
  return out;
}

std::vector<uint64_t> range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (uint64_t s = first; s <= last; ++s) out.push_back(s);
  return out;
}

// Records the status callback (called on the writer thread) and lets the test wait for it.
class StatusLog {
 public:
  Journal::StatusFn fn() {
    return [this](bool ok, std::string reason) {
      std::lock_guard lock(mu_);
      calls_.emplace_back(ok, std::move(reason));
      cv_.notify_all();
    };
  }
  bool wait_for(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kFlush, [&] { return calls_.size() >= n; });
  }
  std::vector<std::pair<bool, std::string>> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<bool, std::string>> calls_;
};

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The journal lives in the state database, which StateDb creates (meta table, journal id).
    auto db = StateDb::open(dir_.sub("state"));
    ASSERT_TRUE(db) << db.error().message();
    db_ = std::move(*db);
  }

  std::unique_ptr<Journal> open(JournalOptions o = {}) {
    auto j = Journal::open(db_->path(), o, status_.fn());
    EXPECT_TRUE(j) << j.error().message();
    return j ? std::move(*j) : nullptr;
  }

  std::vector<EventPtr> read(Journal& j, Journal::Query q = {}) {
    auto r = j.read(q);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : std::vector<EventPtr>{};
  }

  // A second connection that holds the database's write lock: the writer waits in SQLite's busy
  // handler (5 s) until release(), so what was appended stays in memory meanwhile.
  class WriteLock {
   public:
    explicit WriteLock(const std::string& path) {
      EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
      EXPECT_EQ(sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
    }
    ~WriteLock() { release(); }
    void release() {
      if (!db_) return;
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      sqlite3_close(db_);
      db_ = nullptr;
    }

   private:
    sqlite3* db_ = nullptr;
  };

  test::TempDir dir_;
  std::unique_ptr<StateDb> db_;
  StatusLog status_;
};

TEST_F(JournalTest, AppendedEventsAreReadBackInOrderAfterFlush) {
  auto j = open();
  ASSERT_TRUE(j);
  EXPECT_EQ(j->journaled_seq(), 0u);
  EXPECT_EQ(j->max_seq_at_open(), 0u);
  for (uint64_t s = 1; s <= 50; ++s) j->append(event(s));
  ASSERT_TRUE(j->flush(kFlush));
  EXPECT_EQ(j->journaled_seq(), 50u);
  EXPECT_EQ(j->buffered(), 0u);
  EXPECT_TRUE(j->healthy());
  auto es = read(*j);
  EXPECT_EQ(seqs(es), range(1, 50));
  // Rows are the event's JSON as published, byte for byte, and parse back to the same event.
  EXPECT_EQ(es[6]->json, event(7)->json);
  EXPECT_EQ(es[6]->event.type, "fs.error");
  EXPECT_EQ(es[6]->event.detail["inode"], 7);
  EXPECT_TRUE(status_.calls().empty());

  // after / upto / limit.
  EXPECT_EQ(seqs(read(*j, {.after = 45})), range(46, 50));
  EXPECT_EQ(seqs(read(*j, {.after = 10, .upto = 13})), range(11, 13));
  EXPECT_EQ(seqs(read(*j, {.after = 20, .limit = 3})), range(21, 23));
  EXPECT_TRUE(read(*j, {.after = 50}).empty());
}

TEST_F(JournalTest, ReadMergesCommittedRowsWithEventsStillInMemory) {
  auto j = open({.batch_max = 2});
  ASSERT_TRUE(j);
  for (uint64_t s = 1; s <= 5; ++s) j->append(event(s));
  ASSERT_TRUE(j->flush(kFlush));
  ASSERT_EQ(j->journaled_seq(), 5u);

  WriteLock lock(db_->path());
  for (uint64_t s = 6; s <= 12; ++s) j->append(event(s));
  // Nothing of 6..12 can be committed while the lock is held.
  EXPECT_EQ(j->journaled_seq(), 5u);
  EXPECT_EQ(j->buffered(), 7u);
  EXPECT_FALSE(j->flush(0ms));
  // 1..5 come from the database, 6..12 from memory: in order, each once.
  EXPECT_EQ(seqs(read(*j)), range(1, 12));
  EXPECT_EQ(seqs(read(*j, {.after = 3, .limit = 4})), range(4, 7));  // across the seam
  EXPECT_EQ(seqs(read(*j, {.after = 7, .upto = 9})), range(8, 9));   // memory only
  EXPECT_EQ(seqs(read(*j, {.after = 2, .limit = 2})), range(3, 4));  // database only
  EXPECT_EQ(j->journaled_seq(), 5u);

  lock.release();
  ASSERT_TRUE(j->flush(kFlush));
  EXPECT_EQ(j->journaled_seq(), 12u);
  EXPECT_EQ(seqs(read(*j)), range(1, 12));
  EXPECT_TRUE(status_.calls().empty()) << "a short wait for the lock is not a failure";
}

TEST_F(JournalTest, JournaledSeqNeverPassesAnEventStillInMemory) {
  // Whenever it is read, every event at or below journaled_seq() is committed: a connection of the
  // test's own sees it. With one event per transaction there are many moments to look at.
  auto j = open({.batch_max = 1});
  ASSERT_TRUE(j);
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open_v2(db_->path().c_str(), &raw, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  auto committed_upto = [&](uint64_t js) {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(raw, "SELECT COUNT(*) FROM events WHERE seq <= ?1", -1, &st, nullptr);
    sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(js));
    uint64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : UINT64_MAX;
    sqlite3_finalize(st);
    return n;
  };
  for (uint64_t s = 1; s <= 60; ++s) j->append(event(s));
  uint64_t prev = 0;
  for (int i = 0; i < 60; ++i) {
    uint64_t js = j->journaled_seq();
    EXPECT_GE(js, prev);
    prev = js;
    EXPECT_EQ(committed_upto(js), js) << "journaled_seq " << js << " is ahead of the database";
    ASSERT_EQ(seqs(read(*j)), range(1, 60)) << "read() must never miss or repeat an event";
  }
  ASSERT_TRUE(j->flush(kFlush));
  EXPECT_EQ(j->journaled_seq(), 60u);
  EXPECT_EQ(committed_upto(60), 60u);
  sqlite3_close(raw);
  // Reopened: the committed rows are all there.
  j.reset();
  j = open();
  EXPECT_EQ(j->max_seq_at_open(), 60u);
  EXPECT_EQ(j->journaled_seq(), 60u);
  EXPECT_EQ(seqs(read(*j)), range(1, 60));
}

TEST_F(JournalTest, AppendGapBecomesAStreamLostRow) {
  auto j = open();
  ASSERT_TRUE(j);
  for (uint64_t s = 1; s <= 3; ++s) j->append(event(s));
  j->append_gap(4, 100, "storwatchd stopped");
  j->append(event(101));
  ASSERT_TRUE(j->flush(kFlush));
  auto es = read(*j);
  ASSERT_EQ(seqs(es), (std::vector<uint64_t>{1, 2, 3, 4, 101}));
  const Event& lost = es[3]->event;
  EXPECT_EQ(lost.type, "stream.lost");
  EXPECT_EQ(lost.severity, Severity::warning);
  EXPECT_EQ(lost.source, "journal");
  EXPECT_EQ(lost.count, 97u);
  EXPECT_EQ(lost.journal_id, db_->journal_id());
  EXPECT_EQ(lost.detail["count"], 97);
  EXPECT_EQ(lost.detail["first_seq"], 4);
  EXPECT_EQ(lost.detail["last_seq"], 100);
  EXPECT_EQ(lost.detail["reason"], "storwatchd stopped");
  // A reader resuming inside the gap does not see it again; one before it does.
  EXPECT_EQ(seqs(read(*j, {.after = 4})), (std::vector<uint64_t>{101}));
  EXPECT_EQ(seqs(read(*j, {.after = 3})), (std::vector<uint64_t>{4, 101}));
}

// Makes every write of this process to a regular file fail (EFBIG) while it lives, the way a full
// disk makes the database unwritable, without root: RLIMIT_FSIZE lowered to one byte. SIGXFSZ,
// which the kernel sends with each refused write, is counted instead of killing the process, so
// the test can tell that the writer tried (and failed) again.
class UnwritableFiles {
 public:
  static inline std::atomic<int> refused{0};

  UnwritableFiles() {
    struct sigaction sa {};
    sa.sa_handler = [](int) { refused.fetch_add(1); };
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGXFSZ, &sa, &old_action_);
    ::getrlimit(RLIMIT_FSIZE, &old_limit_);
    rlimit low = old_limit_;
    low.rlim_cur = 1;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &low), 0);
  }
  ~UnwritableFiles() { restore(); }
  void restore() {
    if (restored_) return;
    restored_ = true;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &old_limit_), 0);
    ::sigaction(SIGXFSZ, &old_action_, nullptr);
  }

 private:
  rlimit old_limit_{};
  struct sigaction old_action_ {};
  bool restored_ = false;
};

bool wait_until(const std::function<bool()>& done) {
  auto deadline = std::chrono::steady_clock::now() + kFlush;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();  // waiting for another thread, which has no hook to wait on
  }
  return true;
}

TEST_F(JournalTest, EventsBeyondTheBufferWhileTheDiskIsFullBecomeOneStreamLostRow) {
  auto j = open({.buffer_events = 4, .retry = 5ms});
  ASSERT_TRUE(j);
  j->append(event(1));
  ASSERT_TRUE(j->flush(kFlush));

  UnwritableFiles full;
  for (uint64_t s = 2; s <= 5; ++s) j->append(event(s));  // fills the buffer
  ASSERT_TRUE(status_.wait_for(1)) << "no status callback for the failed write";
  EXPECT_FALSE(status_.calls()[0].first);
  EXPECT_FALSE(j->healthy());
  EXPECT_FALSE(status_.calls()[0].second.empty());
  EXPECT_EQ(j->buffered(), 4u);
  EXPECT_EQ(j->journaled_seq(), 1u);

  for (uint64_t s = 6; s <= 8; ++s) j->append(event(s));  // no room: lost
  // Let the writer retry (and fail) at least once more while the loss is going on: the lost range
  // must still come out as one row, not one per retry.
  int before = UnwritableFiles::refused.load();
  ASSERT_TRUE(wait_until([&] { return UnwritableFiles::refused.load() > before; }));
  for (uint64_t s = 9; s <= 10; ++s) j->append(event(s));
  EXPECT_EQ(j->buffered(), 4u);
  // Readers still see everything that is in memory, and the loss so far.
  auto mid = read(*j);
  ASSERT_EQ(seqs(mid), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(mid[5]->event.type, "stream.lost");
  EXPECT_EQ(mid[5]->event.detail["last_seq"], 10);

  full.restore();  // space again
  ASSERT_TRUE(status_.wait_for(2)) << "no status callback for the recovery";
  ASSERT_TRUE(j->flush(kFlush));
  auto calls = status_.calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1], std::make_pair(true, std::string()));
  EXPECT_TRUE(j->healthy());

  j->append(event(11));
  ASSERT_TRUE(j->flush(kFlush));
  EXPECT_EQ(j->journaled_seq(), 11u);
  auto es = read(*j);
  ASSERT_EQ(seqs(es), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 11}));
  const Event& lost = es[5]->event;
  EXPECT_EQ(lost.type, "stream.lost");
  EXPECT_EQ(lost.count, 5u);
  EXPECT_EQ(lost.detail["count"], 5);
  EXPECT_EQ(lost.detail["first_seq"], 6);
  EXPECT_EQ(lost.detail["last_seq"], 10);
  EXPECT_NE(lost.detail["reason"].get<std::string>().find("buffer full"), std::string::npos);
}

TEST_F(JournalTest, SeparateLossesStaySeparateRows) {
  // Two losses with a journaled event between them are two gaps: never merged across that event.
  auto j = open({.buffer_events = 2, .retry = 5ms});
  ASSERT_TRUE(j);
  {
    UnwritableFiles full;
    j->append(event(1));
    j->append(event(2));
    ASSERT_TRUE(status_.wait_for(1));
    j->append(event(3));  // lost
    j->append(event(4));  // lost
  }
  ASSERT_TRUE(status_.wait_for(2));
  ASSERT_TRUE(j->flush(kFlush));
  {
    UnwritableFiles full;
    j->append(event(5));
    j->append(event(6));
    ASSERT_TRUE(status_.wait_for(3));
    j->append(event(7));  // lost
  }
  ASSERT_TRUE(status_.wait_for(4));
  ASSERT_TRUE(j->flush(kFlush));
  auto es = read(*j);
  ASSERT_EQ(seqs(es), (std::vector<uint64_t>{1, 2, 3, 5, 6, 7}));
  EXPECT_EQ(es[2]->event.detail["first_seq"], 3);
  EXPECT_EQ(es[2]->event.detail["last_seq"], 4);
  EXPECT_EQ(es[2]->event.count, 2u);
  EXPECT_EQ(es[5]->event.type, "stream.lost");
  EXPECT_EQ(es[5]->event.count, 1u);
  EXPECT_EQ(es[5]->event.detail["first_seq"], 7);
}

TEST_F(JournalTest, RetentionByAgeDropsOldEvents) {
  // Retention runs after the first commit of each Journal: open a second one to trigger it, and
  // a third to read what the second left (its destructor joins the writer, so retention is done).
  {
    // The first journal keeps a year, so the 40-day-old event survives its own retention run.
    auto j = open({.max_age = std::chrono::hours(365 * 24)});
    j->append(event(1, kNow - 40 * 24h));
    j->append(event(2, kNow - 29 * 24h));
    j->append(event(3, kNow - 1h));
    ASSERT_TRUE(j->flush(kFlush));
    EXPECT_EQ(seqs(read(*j)), range(1, 3));
  }
  {
    auto j = open({.max_age = std::chrono::hours(30 * 24)});
    j->append(event(4));
  }
  auto j = open({.max_age = std::chrono::hours(365 * 24)});
  EXPECT_EQ(seqs(read(*j)), range(2, 4));
  EXPECT_EQ(j->max_seq_at_open(), 4u);
}

TEST_F(JournalTest, RetentionBySizeDropsTheOldestEvents) {
  constexpr uint64_t kEvents = 2000;
  {
    auto j = open();
    for (uint64_t s = 1; s <= kEvents; ++s) {
      Event e = event(s)->event;
      e.detail["pad"] = std::string(1000, 'x');  // about 1 KiB per row: 2 MiB in all
      j->append(make_bus_event(std::move(e)));
    }
    ASSERT_TRUE(j->flush(kFlush));
  }
  {
    auto j = open({.max_bytes = 256 << 10});
    j->append(event(kEvents + 1));
  }
  auto j = open();
  auto es = read(*j, {.limit = 100000});
  ASSERT_FALSE(es.empty());
  // The newest are kept, the oldest gone, and what is left has no holes.
  EXPECT_LT(es.size(), 300u);
  EXPECT_GT(es.size(), 50u);
  EXPECT_EQ(es.back()->event.seq, kEvents + 1);
  EXPECT_EQ(seqs(es), range(es.front()->event.seq, kEvents + 1));
}

TEST_F(JournalTest, AGapNotYetWrittenIsReadFromMemory) {
  // A reader resuming right after a restart must learn of the crash gap even before the writer
  // has committed its row.
  auto j = open();
  for (uint64_t s = 1; s <= 3; ++s) j->append(event(s));
  ASSERT_TRUE(j->flush(kFlush));
  WriteLock lock(db_->path());
  j->append_gap(4, 100, "storwatchd stopped");
  j->append(event(101));
  auto es = read(*j, {.after = 3});
  ASSERT_EQ(seqs(es), (std::vector<uint64_t>{4, 101}));
  EXPECT_EQ(es[0]->event.type, "stream.lost");
  EXPECT_EQ(es[0]->event.detail["first_seq"], 4);
  EXPECT_EQ(es[0]->event.detail["last_seq"], 100);
  EXPECT_EQ(es[0]->event.journal_id, db_->journal_id());
  EXPECT_EQ(seqs(read(*j, {.after = 3, .limit = 1})), (std::vector<uint64_t>{4}));
  EXPECT_EQ(seqs(read(*j, {.after = 4})), (std::vector<uint64_t>{101}));
  std::string json_in_memory = es[0]->json;
  lock.release();
  ASSERT_TRUE(j->flush(kFlush));
  es = read(*j, {.after = 3});
  ASSERT_EQ(seqs(es), (std::vector<uint64_t>{4, 101}));
  EXPECT_EQ(es[0]->json, json_in_memory) << "the row written is the one read from memory";
}

TEST_F(JournalTest, MaxSeqAtOpenIsTheHighestRowIncludingGaps) {
  {
    auto j = open();
    EXPECT_EQ(j->max_seq_at_open(), 0u);
    j->append(event(1));
    j->append(event(2));
  }  // the destructor flushes
  {
    auto j = open();
    EXPECT_EQ(j->max_seq_at_open(), 2u);
    EXPECT_EQ(j->journaled_seq(), 2u);
    j->append_gap(3, 9, "test");
  }
  auto j = open();
  // The gap row carries its first number, and accounts for the numbers up to its last.
  EXPECT_EQ(j->max_seq_at_open(), 9u);
  EXPECT_EQ(j->journaled_seq(), 9u);
}

TEST_F(JournalTest, SinceSelectsByEventTimeInDatabaseAndMemory) {
  auto j = open();
  j->append(event(1, kNow - 3h));
  j->append(event(2, kNow - 2h));
  j->append(event(3, kNow - 1h));
  ASSERT_TRUE(j->flush(kFlush));
  {
    WriteLock lock(db_->path());
    j->append(event(4, kNow - 150min));  // older than its predecessor: time is not seq
    j->append(event(5, kNow));
    EXPECT_EQ(seqs(read(*j, {.since = kNow - 2h})), (std::vector<uint64_t>{2, 3, 5}));
  }
  ASSERT_TRUE(j->flush(kFlush));
  EXPECT_EQ(seqs(read(*j, {.since = kNow - 2h})), (std::vector<uint64_t>{2, 3, 5}));
  EXPECT_EQ(seqs(read(*j, {.after = 2, .since = kNow - 2h})), (std::vector<uint64_t>{3, 5}));
  EXPECT_TRUE(read(*j, {.since = kNow + 1h}).empty());
}

TEST_F(JournalTest, OpeningADirectoryFails) {
  auto j = Journal::open(dir_.path(), {}, nullptr);
  ASSERT_FALSE(j);
  EXPECT_NE(j.error().message().find("journal"), std::string::npos) << j.error().message();
}

}  // namespace
}  // namespace storwatch::daemon
