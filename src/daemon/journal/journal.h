// Journal: every published event, in SQLite (WAL) in the state database, written off the event
// loop in batches by a writer thread. The loop hands each event over with append() (never waits);
// the writer commits batches with synchronous=FULL and then advances journaled_seq(): every event
// at or below it is durable. If the disk is full (or the database fails otherwise) events wait in a
// bounded memory buffer and the journal catches up when it can; events that do not fit are recorded
// as one stream.lost row, so the gap stays visible forever.
//
// Reads (history, replay for Subscribe with `after`) use their own connection and see committed rows
// plus the events and losses still waiting in memory, so a reader never misses an event that was
// published, nor a gap that was recorded.
//
// Thread-safety: all public methods may be called from the loop thread; the writer thread is
// internal. The status callback runs on the writer thread. Other threads read through a
// JournalReader of their own (open_reader) and learn of progress from a journaled listener.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "daemon/bus/bus.h"

struct sqlite3;

namespace storwatch::daemon {

struct JournalOptions {
  size_t batch_max = 4096;                       // events per transaction at most
  size_t buffer_events = 100000;                 // events waiting in memory at most
  std::chrono::seconds max_age{30 * 24 * 3600};  // retention by age
  uint64_t max_bytes = 256ull << 20;             // retention by size (database pages in use)
  std::chrono::milliseconds retry{1000};         // after a failed write
};

// A read connection of its own, for a thread that is not the loop (sink runners). It returns
// committed rows only, never the events still waiting in memory: what it hands out is durable, so
// a sink never delivers an event that a crash then takes out of the journal. It also keeps the
// sinks' cursors (table sink_cursors, beside the events). One thread at a time.
class JournalReader {
 public:
  ~JournalReader();
  JournalReader(const JournalReader&) = delete;
  JournalReader& operator=(const JournalReader&) = delete;

  // Committed events with after < seq <= upto, in seq order, at most `limit`.
  [[nodiscard]] Result<std::vector<EventPtr>> read(uint64_t after, uint64_t upto, size_t limit);

  struct Cursor {
    std::string journal_id;
    uint64_t seq = 0;
  };
  [[nodiscard]] Result<std::optional<Cursor>> load_cursor(const std::string& name);
  [[nodiscard]] Result<void> save_cursor(const std::string& name, const Cursor& c);

 private:
  friend class Journal;
  explicit JournalReader(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

class Journal {
 public:
  // Health changes, for daemon.degraded events: (ok, reason).
  using StatusFn = std::function<void(bool ok, std::string reason)>;

  [[nodiscard]] static Result<std::unique_ptr<Journal>> open(const std::string& db_path, JournalOptions options,
                                                             StatusFn status);
  ~Journal();  // flushes what it can, then stops the writer

  // Hands an event to the writer. Never blocks beyond a mutex.
  void append(const EventPtr& e);
  // Records that numbers [first, last] were reserved but their events were never journaled (a
  // crash); becomes one stream.lost row.
  void append_gap(uint64_t first, uint64_t last, std::string reason);

  uint64_t journaled_seq() const { return journaled_.load(); }
  // The highest seq in the database at open (0 when empty): where a crash may have cut off.
  uint64_t max_seq_at_open() const { return max_at_open_; }
  bool healthy() const { return healthy_.load(); }
  size_t buffered() const;

  struct Query {
    uint64_t after = 0;           // seq > after
    uint64_t upto = UINT64_MAX;   // seq <= upto
    std::optional<std::chrono::system_clock::time_point> since;
    size_t limit = 1000;
  };
  // Events in seq order: committed rows first, then those waiting in memory. Matching by type,
  // filesystem and severity is the caller's: it filters what comes back.
  [[nodiscard]] Result<std::vector<EventPtr>> read(const Query& q);

  // A reader for another thread (sinks), on a connection of its own. Any thread.
  [[nodiscard]] Result<std::unique_ptr<JournalReader>> open_reader();
  // `fn(journaled_seq)` runs on the writer thread each time journaled_seq() advances: it must only
  // wake someone (a condition variable), never block. Any thread; after remove, fn is not running
  // and will not run again.
  using JournaledFn = std::function<void(uint64_t)>;
  int add_journaled_listener(JournaledFn fn);
  void remove_journaled_listener(int id);

  // Waits until everything appended so far is committed (or `timeout`). For shutdown and tests.
  bool flush(std::chrono::milliseconds timeout);

 private:
  Journal(JournalOptions o, StatusFn s);
  void run();
  [[nodiscard]] Result<void> write_batch(const std::vector<EventPtr>& batch);
  void retain();

  struct Gap {
    uint64_t first, last, count;
    std::string reason;
    std::chrono::system_clock::time_point time = std::chrono::system_clock::now();  // of its row
  };
  struct Gaps {
    std::vector<Gap> closed;
    std::optional<Gap> open;  // still growing: the buffer is full
  };

  JournalOptions options_;
  StatusFn status_;
  sqlite3* wdb_ = nullptr;  // writer thread only
  sqlite3* rdb_ = nullptr;  // loop thread only
  uint64_t max_at_open_ = 0;
  std::string journal_id_;  // for stream.lost rows; set at open, then read-only

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable flushed_cv_;
  std::deque<EventPtr> queue_;   // appended, not yet committed (front is oldest)
  size_t in_flight_ = 0;         // of queue_'s front, being written now
  Gaps gaps_;                    // lost or never-journaled ranges, written as stream.lost rows
  uint64_t lost_ = 0;
  bool stop_ = false;
  std::atomic<uint64_t> journaled_{0};
  std::atomic<bool> healthy_{true};
  std::string db_path_;
  std::mutex listeners_mu_;  // never taken with mu_ held
  std::vector<std::pair<int, JournaledFn>> listeners_;
  int next_listener_ = 0;
  std::thread writer_;
};

}  // namespace storwatch::daemon
