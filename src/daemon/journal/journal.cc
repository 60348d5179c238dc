#include "daemon/journal/journal.h"

#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <fmt/format.h>

#include "base/log.h"
#include "daemon/state/sqlite_util.h"

namespace storwatch::daemon {

namespace {

int64_t to_us(Event::Time t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

Result<sqlite3*> open_db(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    auto e = sql_error(db, "journal: opening " + path);
    sqlite3_close(db);
    return fail(e);
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", nullptr, nullptr, nullptr);
  return db;
}

template <class Gap>
EventPtr gap_event(const Gap& g, const std::string& journal_id) {
  Event e;
  e.seq = g.first;
  e.journal_id = journal_id;
  e.type = "stream.lost";
  e.severity = Severity::warning;
  e.source = "journal";
  e.count = g.count;
  e.time = e.first_time = e.last_time = g.time;
  e.detail = {{"count", g.count}, {"first_seq", g.first}, {"last_seq", g.last}, {"reason", g.reason}};
  return make_bus_event(std::move(e));
}

}  // namespace

Journal::Journal(JournalOptions o, StatusFn s) : options_(o), status_(std::move(s)) {}

Result<std::unique_ptr<Journal>> Journal::open(const std::string& db_path, JournalOptions options,
                                               StatusFn status) {
  std::unique_ptr<Journal> j(new Journal(options, std::move(status)));
  j->db_path_ = db_path;
  auto w = open_db(db_path);
  if (!w) return fail(w.error());
  j->wdb_ = *w;
  const char* schema =
      "CREATE TABLE IF NOT EXISTS events ("
      "  seq INTEGER PRIMARY KEY,"
      "  time_us INTEGER NOT NULL,"
      "  type TEXT NOT NULL,"
      "  event TEXT NOT NULL);"
      "CREATE INDEX IF NOT EXISTS events_time ON events (time_us);"
      "INSERT OR IGNORE INTO meta (key, value) VALUES ('journal_schema', '1');";
  char* msg = nullptr;
  if (sqlite3_exec(j->wdb_, schema, nullptr, nullptr, &msg) != SQLITE_OK) {
    auto e = sql_error(j->wdb_, "journal: creating tables");
    sqlite3_free(msg);
    return fail(e);
  }
  {
    // The last row; when it is a stream.lost record (seq = first_seq), the numbers up to its
    // last_seq are accounted for too: a crash before anything else was journaled must not
    // record them a second time.
    SqlStmt st(j->wdb_, "SELECT seq, type, event FROM events ORDER BY seq DESC LIMIT 1");
    if (st && sqlite3_step(st.get()) == SQLITE_ROW) {
      j->max_at_open_ = static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0));
      const char* type = reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 1));
      const char* text = reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 2));
      if (type && std::string_view(type) == "stream.lost" && text) {
        auto ev = nlohmann::json::parse(text, nullptr, false);
        if (ev.is_object() && ev.contains("detail") && ev["detail"].is_object()) {
          auto last = ev["detail"].find("last_seq");
          if (last != ev["detail"].end() && last->is_number_unsigned())
            j->max_at_open_ = std::max(j->max_at_open_, last->get<uint64_t>());
        }
      }
    }
  }
  j->journaled_ = j->max_at_open_;
  {
    SqlStmt st(j->wdb_, "SELECT value FROM meta WHERE key = 'journal_id'");
    if (st && sqlite3_step(st.get()) == SQLITE_ROW)
      j->journal_id_ = reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0));
  }
  auto r = open_db(db_path);
  if (!r) return fail(r.error());
  j->rdb_ = *r;
  j->writer_ = std::thread([p = j.get()] { p->run(); });
  return j;
}

Journal::~Journal() {
  flush(std::chrono::milliseconds(5000));
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  sqlite3_close(wdb_);
  sqlite3_close(rdb_);
}

void Journal::append(const EventPtr& e) {
  {
    std::lock_guard lock(mu_);
    auto& g = gaps_;
    if (queue_.size() >= options_.buffer_events) {
      uint64_t s = e->event.seq;
      if (g.open && g.open->last + 1 == s) {
        g.open->last = s;
        ++g.open->count;
      } else {
        if (g.open) g.closed.push_back(*g.open);
        g.open = Gap{s, s, 1, "journal buffer full while the database could not be written"};
      }
      ++lost_;
      return;
    }
    if (g.open) {
      g.closed.push_back(*g.open);
      g.open.reset();
    }
    queue_.push_back(e);
  }
  cv_.notify_one();
}

void Journal::append_gap(uint64_t first, uint64_t last, std::string reason) {
  {
    std::lock_guard lock(mu_);
    gaps_.closed.push_back(Gap{first, last, last - first + 1, std::move(reason)});
  }
  cv_.notify_one();
}

size_t Journal::buffered() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

Result<void> Journal::write_batch(const std::vector<EventPtr>& batch) {
  if (sqlite3_exec(wdb_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
    return fail(sql_error(wdb_, "journal: begin"));
  SqlStmt st(wdb_, "INSERT OR REPLACE INTO events (seq, time_us, type, event) VALUES (?1, ?2, ?3, ?4)");
  if (!st) {
    auto e = sql_error(wdb_, "journal: prepare");
    sqlite3_exec(wdb_, "ROLLBACK", nullptr, nullptr, nullptr);
    return fail(e);
  }
  for (const auto& e : batch) {
    sqlite3_bind_int64(st.get(), 1, static_cast<sqlite3_int64>(e->event.seq));
    sqlite3_bind_int64(st.get(), 2, to_us(e->event.time));
    sqlite3_bind_text(st.get(), 3, e->event.type.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(st.get(), 4, e->json.c_str(), static_cast<int>(e->json.size()), SQLITE_STATIC);
    if (sqlite3_step(st.get()) != SQLITE_DONE) {
      auto err = sql_error(wdb_, "journal: insert");
      sqlite3_exec(wdb_, "ROLLBACK", nullptr, nullptr, nullptr);
      return fail(err);
    }
    sqlite3_reset(st.get());
  }
  if (sqlite3_exec(wdb_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    auto err = sql_error(wdb_, "journal: commit");
    sqlite3_exec(wdb_, "ROLLBACK", nullptr, nullptr, nullptr);
    return fail(err);
  }
  return {};
}

void Journal::retain() {
  auto cutoff = std::chrono::system_clock::now() - options_.max_age;
  SqlStmt del(wdb_, "DELETE FROM events WHERE time_us < ?1");
  sqlite3_bind_int64(del.get(), 1, to_us(cutoff));
  sqlite3_step(del.get());
  for (int round = 0; round < 64; ++round) {
    int64_t pages = 0, free_pages = 0, page_size = 4096;
    {
      SqlStmt a(wdb_, "PRAGMA page_count");
      if (sqlite3_step(a.get()) == SQLITE_ROW) pages = sqlite3_column_int64(a.get(), 0);
      SqlStmt b(wdb_, "PRAGMA freelist_count");
      if (sqlite3_step(b.get()) == SQLITE_ROW) free_pages = sqlite3_column_int64(b.get(), 0);
      SqlStmt c(wdb_, "PRAGMA page_size");
      if (sqlite3_step(c.get()) == SQLITE_ROW) page_size = sqlite3_column_int64(c.get(), 0);
    }
    uint64_t used = static_cast<uint64_t>(pages - free_pages) * static_cast<uint64_t>(page_size);
    if (used <= options_.max_bytes) break;
    // Oldest tenth at a time: the size is approximate (pages, not rows) and this stays cheap.
    SqlStmt d(wdb_,
           "DELETE FROM events WHERE seq <= (SELECT seq FROM events ORDER BY seq "
           "LIMIT 1 OFFSET (SELECT COUNT(*) / 10 FROM events))");
    if (sqlite3_step(d.get()) != SQLITE_DONE || sqlite3_changes(wdb_) == 0) break;
  }
}

void Journal::run() {
  auto last_retain = std::chrono::steady_clock::now() - std::chrono::hours(1);
  uint64_t written_since_retain = 0;  // bytes of event JSON committed since the last retain()
  bool ok = true;
  for (;;) {
    std::vector<EventPtr> batch;
    std::vector<Gap> gaps;
    {
      std::unique_lock lock(mu_);
      auto& g = gaps_;
      cv_.wait(lock, [&] { return stop_ || !queue_.empty() || !g.closed.empty() || g.open; });
      if (stop_ && queue_.empty() && g.closed.empty() && !g.open) return;
      // While writes fail, a loss still going on stays open, so it becomes one row however many
      // retries it spans; it is closed (and written) once a write has succeeded.
      if (g.open && ok) {
        g.closed.push_back(*g.open);
        g.open.reset();
      }
      gaps = g.closed;
      size_t n = std::min(queue_.size(), options_.batch_max);
      batch.assign(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
      in_flight_ = n;
    }
    std::vector<EventPtr> rows = batch;
    for (const auto& g : gaps) rows.push_back(gap_event(g, journal_id_));
    auto r = write_batch(rows);
    if (!r) {
      if (ok) {
        ok = false;
        healthy_ = false;
        if (status_) status_(false, r.error().message());
      }
      std::unique_lock lock(mu_);
      in_flight_ = 0;
      if (stop_) return;  // shutting down: what is not written is lost with the process
      cv_.wait_for(lock, options_.retry, [&] { return stop_; });
      continue;
    }
    uint64_t written_max = 0;
    for (const auto& e : rows) written_max = std::max(written_max, e->event.seq);
    for (const auto& g : gaps) written_max = std::max(written_max, g.last);  // accounted for
    {
      std::lock_guard lock(mu_);
      auto& g = gaps_;
      g.closed.erase(g.closed.begin(), g.closed.begin() + static_cast<std::ptrdiff_t>(gaps.size()));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(batch.size()));
      in_flight_ = 0;
      uint64_t j = queue_.empty() ? written_max : queue_.front()->event.seq - 1;
      if (j > journaled_.load()) journaled_ = j;
    }
    flushed_cv_.notify_all();
    {
      std::lock_guard lock(listeners_mu_);
      for (const auto& [id, fn] : listeners_) fn(journaled_.load());
    }
    if (!ok) {
      ok = true;
      healthy_ = true;
      if (status_) status_(true, "");
    }
    for (const auto& e : rows) written_since_retain += e->json.size();
    auto now = std::chrono::steady_clock::now();
    // Once a minute, and whenever an eighth of max_bytes was written since: a burst must not grow
    // the journal far past its limit before the next minute.
    if (now - last_retain > std::chrono::seconds(60) || written_since_retain > options_.max_bytes / 8) {
      last_retain = now;
      written_since_retain = 0;
      retain();
    }
  }
}

bool Journal::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  auto& g = gaps_;
  return flushed_cv_.wait_for(lock, timeout, [&] { return queue_.empty() && g.closed.empty() && !g.open; });
}

Result<std::vector<EventPtr>> Journal::read(const Query& q) {
  std::vector<EventPtr> out;
  // Holding mu_ across the SELECT and the queue scan: the writer pops only after its commit, so
  // every appended event is in the database or in the queue (or both: deduplicated by seq).
  std::lock_guard lock(mu_);
  SqlStmt st(rdb_, q.since ? "SELECT event FROM events WHERE seq > ?1 AND seq <= ?2 AND time_us >= ?4 "
                          "ORDER BY seq LIMIT ?3"
                        : "SELECT event FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3");
  if (!st) return fail(sql_error(rdb_, "journal: prepare read"));
  sqlite3_bind_int64(st.get(), 1, static_cast<sqlite3_int64>(q.after));
  sqlite3_bind_int64(st.get(), 2, static_cast<sqlite3_int64>(std::min<uint64_t>(q.upto, INT64_MAX)));
  sqlite3_bind_int64(st.get(), 3, static_cast<sqlite3_int64>(q.limit));
  if (q.since) sqlite3_bind_int64(st.get(), 4, to_us(*q.since));
  int rc;
  uint64_t last = q.after;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    const char* text = reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0));
    auto j = nlohmann::json::parse(text ? text : "", nullptr, false);
    auto e = event_from_json(j);
    if (!e) continue;  // a row we cannot read is skipped, never fatal
    last = e->seq;
    auto b = std::make_shared<BusEvent>();
    b->json = text;
    b->event = std::move(*e);
    out.push_back(std::move(b));
  }
  if (rc != SQLITE_DONE) return fail(sql_error(rdb_, "journal: read"));
  // Losses not written yet are part of the history too: a reader must not step over them unaware.
  std::vector<EventPtr> gaps;
  for (const auto& g : gaps_.closed) gaps.push_back(gap_event(g, journal_id_));
  if (gaps_.open) gaps.push_back(gap_event(*gaps_.open, journal_id_));
  std::sort(gaps.begin(), gaps.end(),
            [](const EventPtr& a, const EventPtr& b) { return a->event.seq < b->event.seq; });
  auto gi = gaps.begin();
  auto qi = queue_.begin();
  while (out.size() < q.limit) {
    EventPtr e;
    if (gi != gaps.end() && (qi == queue_.end() || (*gi)->event.seq < (*qi)->event.seq))
      e = *gi++;
    else if (qi != queue_.end())
      e = *qi++;
    else
      break;
    uint64_t s = e->event.seq;
    if (s <= last || s > q.upto) continue;
    if (q.since && e->event.time < *q.since) continue;
    out.push_back(e);
    last = s;
  }
  return out;
}

Result<std::unique_ptr<JournalReader>> Journal::open_reader() {
  auto db = open_db(db_path_);
  if (!db) return fail(db.error());
  std::unique_ptr<JournalReader> r(new JournalReader(*db));
  const char* schema =
      "CREATE TABLE IF NOT EXISTS sink_cursors ("
      "  name TEXT PRIMARY KEY,"
      "  journal_id TEXT NOT NULL,"
      "  seq INTEGER NOT NULL);";
  if (sqlite3_exec(r->db_, schema, nullptr, nullptr, nullptr) != SQLITE_OK)
    return fail(sql_error(r->db_, "journal: creating sink_cursors"));
  return r;
}

int Journal::add_journaled_listener(JournaledFn fn) {
  std::lock_guard lock(listeners_mu_);
  int id = ++next_listener_;
  listeners_.emplace_back(id, std::move(fn));
  return id;
}

void Journal::remove_journaled_listener(int id) {
  std::lock_guard lock(listeners_mu_);
  std::erase_if(listeners_, [id](const auto& l) { return l.first == id; });
}

JournalReader::~JournalReader() { sqlite3_close(db_); }

Result<std::vector<EventPtr>> JournalReader::read(uint64_t after, uint64_t upto, size_t limit) {
  std::vector<EventPtr> out;
  SqlStmt st(db_, "SELECT event FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3");
  if (!st) return fail(sql_error(db_, "journal: prepare read"));
  sqlite3_bind_int64(st.get(), 1, static_cast<sqlite3_int64>(std::min<uint64_t>(after, INT64_MAX)));
  sqlite3_bind_int64(st.get(), 2, static_cast<sqlite3_int64>(std::min<uint64_t>(upto, INT64_MAX)));
  sqlite3_bind_int64(st.get(), 3, static_cast<sqlite3_int64>(std::min<size_t>(limit, INT64_MAX)));
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    const char* text = reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0));
    auto e = event_from_json(nlohmann::json::parse(text ? text : "", nullptr, false));
    if (!e) continue;  // a row we cannot read is skipped, never fatal
    auto b = std::make_shared<BusEvent>();
    b->json = text;
    b->event = std::move(*e);
    out.push_back(std::move(b));
  }
  if (rc != SQLITE_DONE) return fail(sql_error(db_, "journal: read"));
  return out;
}

Result<std::optional<JournalReader::Cursor>> JournalReader::load_cursor(const std::string& name) {
  SqlStmt st(db_, "SELECT journal_id, seq FROM sink_cursors WHERE name = ?1");
  if (!st) return fail(sql_error(db_, "journal: prepare cursor read"));
  sqlite3_bind_text(st.get(), 1, name.c_str(), -1, SQLITE_STATIC);
  int rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return std::optional<Cursor>();
  if (rc != SQLITE_ROW) return fail(sql_error(db_, "journal: reading the cursor of " + name));
  const char* id = reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0));
  return std::optional<Cursor>(Cursor{id ? id : "", static_cast<uint64_t>(sqlite3_column_int64(st.get(), 1))});
}

Result<void> JournalReader::save_cursor(const std::string& name, const Cursor& c) {
  SqlStmt st(db_, "INSERT OR REPLACE INTO sink_cursors (name, journal_id, seq) VALUES (?1, ?2, ?3)");
  if (!st) return fail(sql_error(db_, "journal: prepare cursor write"));
  sqlite3_bind_text(st.get(), 1, name.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(st.get(), 2, c.journal_id.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_int64(st.get(), 3, static_cast<sqlite3_int64>(std::min<uint64_t>(c.seq, INT64_MAX)));
  if (sqlite3_step(st.get()) != SQLITE_DONE) return fail(sql_error(db_, "journal: saving the cursor of " + name));
  return {};
}

}  // namespace storwatch::daemon
