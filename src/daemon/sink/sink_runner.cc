#include "daemon/sink/sink_runner.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/log.h"

namespace storwatch::daemon {

// Everything the thread touches. It is shared, not owned by the runner, so a thread left behind
// by a hung deliver() at shutdown still finds it alive; the thread never touches the Journal.
struct SinkRunner::Shared {
  std::unique_ptr<Sink> sink;
  std::unique_ptr<JournalReader> reader;
  std::string journal_id;
  SinkRunnerOptions options;

  mutable std::mutex mu;
  std::condition_variable cv;       // journaled advanced, or stop
  std::condition_variable done_cv;  // the thread has finished
  uint64_t journaled = 0;
  bool stop = false;
  bool done = false;
  SinkStatus status;

  void run();
  void set_failing(const std::string& error) {
    std::lock_guard lock(mu);
    status.state = "failing";
    status.last_error = error;
    ++status.failures;
  }
  // Waits out a backoff; false when stopping.
  bool backoff(std::chrono::milliseconds& delay) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, delay, [&] { return stop; });
    delay = std::min(delay * 2, options.backoff_max);
    return !stop;
  }
};

SinkRunner::SinkRunner(Journal& journal, std::shared_ptr<Shared> shared, std::string name)
    : journal_(journal), shared_(std::move(shared)), name_(std::move(name)) {}

Result<std::unique_ptr<SinkRunner>> SinkRunner::start(Journal& journal, std::string journal_id,
                                                      std::unique_ptr<Sink> sink, SinkRunnerOptions options) {
  auto reader = journal.open_reader();
  if (!reader) return fail(reader.error());
  auto s = std::make_shared<Shared>();
  std::string name = sink->name();
  s->sink = std::move(sink);
  s->reader = std::move(*reader);
  s->journal_id = std::move(journal_id);
  s->options = options;
  s->status.name = name;
  s->status.state = "starting";
  std::unique_ptr<SinkRunner> r(new SinkRunner(journal, s, name));
  // The listener first, then the current value: an advance between the two is not missed.
  std::weak_ptr<Shared> weak = s;
  r->listener_ = journal.add_journaled_listener([weak](uint64_t seq) {
    if (auto p = weak.lock()) {
      {
        std::lock_guard lock(p->mu);
        p->journaled = std::max(p->journaled, seq);
      }
      p->cv.notify_all();
    }
  });
  {
    std::lock_guard lock(s->mu);
    s->journaled = std::max(s->journaled, journal.journaled_seq());
  }
  std::thread([s] {
    s->run();
    {
      std::lock_guard lock(s->mu);
      s->done = true;
    }
    s->done_cv.notify_all();
  }).detach();
  return r;
}

SinkRunner::~SinkRunner() {
  journal_.remove_journaled_listener(listener_);
  std::unique_lock lock(shared_->mu);
  shared_->stop = true;
  shared_->cv.notify_all();
  if (!shared_->done_cv.wait_for(lock, shared_->options.stop_timeout, [&] { return shared_->done; }))
    log_warning("sink {}: still delivering at shutdown; not waiting for it", name_);
}

SinkStatus SinkRunner::status() const {
  std::lock_guard lock(shared_->mu);
  SinkStatus s = shared_->status;
  s.journaled = shared_->journaled;
  return s;
}

void SinkRunner::Shared::run() {
  const std::string name = status.name;
  auto delay = options.backoff_min;
  uint64_t cursor = 0;
  // Where to start; retried like a delivery when the database cannot be read.
  for (;;) {
    auto c = reader->load_cursor(name);
    if (c) {
      uint64_t journaled_now;
      {
        std::lock_guard lock(mu);
        journaled_now = journaled;
      }
      if (!*c) {
        cursor = journaled_now;
        log_info("sink {}: no cursor yet; starting after seq {} (the end of the journal)", name, cursor);
      } else if ((*c)->journal_id != journal_id) {
        cursor = 0;
        log_info("sink {}: its cursor belongs to journal {}, not {}; starting from the beginning", name,
                 (*c)->journal_id, journal_id);
      } else {
        cursor = (*c)->seq;
      }
      if (auto w = reader->save_cursor(name, {journal_id, cursor}); w) break;
      else c = fail(w.error());
    }
    set_failing(c.error().message());
    if (!backoff(delay)) return;
  }
  {
    std::lock_guard lock(mu);
    status.cursor = cursor;
    status.state = "ok";
  }
  delay = options.backoff_min;

  for (;;) {
    uint64_t upto;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return stop || journaled > cursor; });
      if (stop) return;
      upto = journaled;
    }
    auto batch = reader->read(cursor, upto, options.batch);
    if (!batch) {
      set_failing(batch.error().message());
      if (!backoff(delay)) return;
      continue;
    }
    // Past the last row read when the batch was full; past `upto` otherwise (also across numbers
    // without a row: stream.lost ranges, events removed by retention).
    uint64_t end = batch->size() < options.batch || batch->empty() ? upto : batch->back()->event.seq;
    std::vector<EventPtr> wanted;
    for (auto& e : *batch)
      if (sink->wants(e->event)) wanted.push_back(std::move(e));
    uint64_t next = end;
    size_t delivered = 0;
    if (!wanted.empty()) {
      auto r = sink->deliver(wanted);
      if (!r) {
        log_debug("sink {}: {}", name, r.error().message());
        set_failing(r.error().message());
        if (!backoff(delay)) return;
        continue;
      }
      delivered = std::min(*r, wanted.size());
      if (delivered < wanted.size()) next = wanted[delivered]->event.seq - 1;
    }
    if (next > cursor) {
      if (auto w = reader->save_cursor(name, {journal_id, next}); !w) {
        // Delivered, but the cursor is not durable: after a restart these may come again.
        set_failing(w.error().message());
      }
    }
    bool stuck = !wanted.empty() && delivered == 0;
    {
      std::lock_guard lock(mu);
      cursor = std::max(cursor, next);
      status.cursor = cursor;
      status.delivered += delivered;
      if (delivered) status.last_delivery = std::chrono::system_clock::now();
      if (stuck) {
        status.state = "failing";
        status.last_error = "the destination accepted none of the events offered";
        ++status.failures;
      } else {
        status.state = "ok";
      }
    }
    if (stuck) {
      if (!backoff(delay)) return;
    } else {
      delay = options.backoff_min;
    }
  }
}

}  // namespace storwatch::daemon
