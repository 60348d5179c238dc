// SinkRunner: feeds one Sink from the journal on a thread of its own. It reads durable events
// (at or below journaled_seq()) after the sink's cursor through a JournalReader of its own, hands
// the wanted ones to Sink::deliver in batches, and moves the cursor, persisted in the state
// database (table sink_cursors), past what was delivered. It sleeps until the journal advances
// (a journaled listener wakes it); after a failure it retries with exponential backoff. A sink
// that is slow, failing or hung holds up nothing but itself.
//
// Where a sink starts (docs/sinks.md): from its saved cursor; without one (a sink configured for
// the first time) from the end of the journal, so enabling a sink does not replay weeks of
// history into it; with a cursor of another journal (the state database was replaced) from the
// beginning of the current journal, as every event in it is new to the sink.
//
// Thread-safety: create, status() and destruction on one thread (the loop). The destructor stops
// the thread and waits at most `stop_timeout` for a deliver() in progress; a sink stuck beyond
// that is left to finish on its own (it owns nothing of the loop's, and deliver implementations
// bound their own time), so shutdown is never held up by a sink.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/result.h"
#include "daemon/journal/journal.h"
#include "daemon/sink/sink.h"

namespace storwatch::daemon {

struct SinkStatus {
  std::string name;
  std::string state;       // "starting", "ok", "failing"
  std::string last_error;  // of the last failure; empty when none since start
  uint64_t cursor = 0;     // every event at or below it was delivered (or not wanted)
  uint64_t journaled = 0;  // the journal's journaled_seq as the runner last saw it
  uint64_t delivered = 0;  // events delivered since start
  uint64_t failures = 0;   // failed deliveries since start
  std::optional<std::chrono::system_clock::time_point> last_delivery;
  uint64_t lag() const { return journaled > cursor ? journaled - cursor : 0; }
};

struct SinkRunnerOptions {
  size_t batch = 256;  // events read (and offered) at once at most
  std::chrono::milliseconds backoff_min{500};
  std::chrono::milliseconds backoff_max{std::chrono::minutes(5)};
  std::chrono::milliseconds stop_timeout{2000};
};

class SinkRunner {
 public:
  // `journal_id`: the current journal's (the state database's) id, stored with the cursor.
  [[nodiscard]] static Result<std::unique_ptr<SinkRunner>> start(Journal& journal, std::string journal_id,
                                                                 std::unique_ptr<Sink> sink,
                                                                 SinkRunnerOptions options = {});
  ~SinkRunner();
  SinkRunner(const SinkRunner&) = delete;
  SinkRunner& operator=(const SinkRunner&) = delete;

  const std::string& name() const { return name_; }
  SinkStatus status() const;

 private:
  struct Shared;
  SinkRunner(Journal& journal, std::shared_ptr<Shared> shared, std::string name);

  Journal& journal_;
  std::shared_ptr<Shared> shared_;
  std::string name_;
  int listener_ = 0;
};

}  // namespace storwatch::daemon
