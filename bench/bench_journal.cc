// bench_journal: journaled events per second through storwatchd's Journal (the real writer thread,
// batched transactions, WAL, synchronous=FULL) against SQLite's own insert rate for the very same
// rows in the same run: a plain loop on the calling thread, one transaction per batch of the same
// size, the same schema, statement and pragmas. The ratio says what the journal's own machinery
// (queue, mutex, hand-over to the writer thread, journaled_seq) costs on top of SQLite.
//
// Both write into a fresh database in a temporary directory (under $TMPDIR: put it on the disk you
// care about). The events are built and serialised before timing (in storwatchd the bus does that
// once per event, whoever reads it); the journal is timed from the first append() to the moment
// journaled_seq() reaches the last event, so the final commit's fsync is included. Besides the
// rates (wall time: mostly fsync, so they swing with the disk and other load), it prints the CPU
// time per event of the whole process, which other load hardly disturbs.
//
// Usage: bench_journal [--events-scale X] [--repeat N] [--batch N]   (prints a Markdown table)
#include <sqlite3.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/bus.h"
#include "daemon/journal/journal.h"
#include "daemon/state/state_db.h"

namespace {

using namespace storwatch;
using namespace storwatch::daemon;
using Clock = std::chrono::steady_clock;

constexpr const char* kJournalId = "0123456789abcdef0123456789abcdef";

// CPU time of the whole process (every thread): unlike wall time, hardly disturbed by other load.
double process_cpu() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct Timing {
  double seconds = 0, cpu = 0;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_journal: %s\n", what.c_str());
  std::exit(1);
}

// A typical journaled event: an fs.error with its filesystem and detail (~450 bytes of JSON).
std::vector<EventPtr> make_events(size_t n) {
  std::vector<EventPtr> out;
  out.reserve(n);
  auto t0 = std::chrono::system_clock::now();
  FsRef fs;
  fs.major = 8;
  fs.minor = 17;
  fs.fstype = "ext4";
  fs.source = "/dev/sdb1";
  fs.mounts = {"/mnt/data"};
  for (size_t i = 0; i < n; ++i) {
    Event e;
    e.seq = i + 1;
    e.journal_id = kJournalId;
    e.type = "fs.error";
    e.severity = Severity::error;
    e.source = "fanotify";
    e.time = e.first_time = e.last_time = t0 + std::chrono::microseconds(i);
    e.fs = fs;
    e.detail = {{"errno", 5},
                {"error_count", i + 1},
                {"inode", 1000 + i},
                {"path", "/mnt/data/srv/db/table-" + std::to_string(i % 97) + ".dat"},
                {"function", "ext4_find_extent"},
                {"line", 939}};
    out.push_back(make_bus_event(std::move(e)));
  }
  return out;
}

std::string fresh_dir(const std::string& parent, const std::string& name) {
  std::string d = parent + "/" + name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

// Journal: append everything (as the loop would, never waiting), then wait for journaled_seq.
Timing run_journal(const std::vector<EventPtr>& events, size_t batch, const std::string& dir) {
  auto db = StateDb::open(dir);  // creates the meta table and the seq file, as storwatchd does
  if (!db) die(db.error().message());
  JournalOptions o;
  o.batch_max = batch;
  o.buffer_events = events.size() + 1;
  auto j = Journal::open((*db)->path(), o, nullptr);
  if (!j) die(j.error().message());
  uint64_t last = events.back()->event.seq;
  double cpu0 = process_cpu();
  auto start = Clock::now();
  for (const auto& e : events) (*j)->append(e);
  while ((*j)->journaled_seq() < last) {
    if (!(*j)->flush(std::chrono::milliseconds(100)) && !(*j)->healthy()) die("the journal cannot write");
  }
  Timing t{std::chrono::duration<double>(Clock::now() - start).count(), process_cpu() - cpu0};
  j->reset();
  return t;
}

// SQLite alone: the same rows, schema, statement and pragmas; one transaction per `batch` rows.
Timing run_sqlite(const std::vector<EventPtr>& events, size_t batch, const std::string& dir) {
  sqlite3* db = nullptr;
  std::string path = dir + "/raw.db";
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK)
    die("opening " + path);
  auto exec = [&](const char* sql) {
    char* msg = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) != SQLITE_OK) die(std::string(sql) + ": " + (msg ? msg : ""));
  };
  exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
  exec("CREATE TABLE events (seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, type TEXT NOT NULL,"
       " event TEXT NOT NULL);"
       "CREATE INDEX events_time ON events (time_us);");
  sqlite3_stmt* st = nullptr;
  double cpu0 = process_cpu();
  auto start = Clock::now();
  for (size_t i = 0; i < events.size();) {
    size_t n = std::min(batch, events.size() - i);
    exec("BEGIN IMMEDIATE");
    // Prepared per transaction, as Journal::write_batch does.
    if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO events (seq, time_us, type, event) VALUES (?1, ?2, ?3, ?4)",
                           -1, &st, nullptr) != SQLITE_OK)
      die("prepare");
    for (size_t k = 0; k < n; ++k, ++i) {
      const auto& e = events[i];
      sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(e->event.seq));
      sqlite3_bind_int64(st, 2, std::chrono::duration_cast<std::chrono::microseconds>(
                                    e->event.time.time_since_epoch())
                                    .count());
      sqlite3_bind_text(st, 3, e->event.type.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 4, e->json.c_str(), static_cast<int>(e->json.size()), SQLITE_STATIC);
      if (sqlite3_step(st) != SQLITE_DONE) die(std::string("insert: ") + sqlite3_errmsg(db));
      sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec("COMMIT");
  }
  Timing t{std::chrono::duration<double>(Clock::now() - start).count(), process_cpu() - cpu0};
  sqlite3_close(db);
  return t;
}

std::string human(double v) {
  char buf[32];
  if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f M", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1f k", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  double scale = 1.0;
  int repeat = 3;
  size_t only = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--events-scale" && i + 1 < argc) {
      scale = std::atof(argv[++i]);
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--batch" && i + 1 < argc) {
      only = static_cast<size_t>(std::atol(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_journal [--events-scale X] [--repeat N] [--batch 1|16|256|4096]\n");
      return 2;
    }
  }
  std::string dir = (std::filesystem::temp_directory_path() / "storwatch-bench-journal-XXXXXX").string();
  if (!::mkdtemp(dir.data())) die("mkdtemp failed");

  struct Case {
    size_t batch, events;
  };
  size_t max_events = 0;
  std::vector<Case> cases;
  for (Case c : {Case{1, 1000}, Case{16, 10000}, Case{256, 100000}, Case{4096, 200000}}) {
    if (only && c.batch != only) continue;
    c.events = std::max<size_t>(c.batch, static_cast<size_t>(static_cast<double>(c.events) * scale));
    max_events = std::max(max_events, c.events);
    cases.push_back(c);
  }
  auto events = make_events(max_events);
  size_t bytes = 0;
  for (const auto& e : events) bytes += e->json.size();
  std::printf("bench_journal: %u CPUs, %zu-byte events on average, WAL + synchronous=FULL, database in %s's "
              "filesystem; best of %d\n\n",
              std::thread::hardware_concurrency(), bytes / events.size(),
              std::filesystem::temp_directory_path().c_str(), repeat);
  std::printf("| batch | events | Journal events/s | SQLite alone rows/s | ratio | Journal CPU per event | SQLite "
              "CPU per row | ratio |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::fflush(stdout);
  for (const Case& c : cases) {
    std::vector<EventPtr> slice(events.begin(), events.begin() + static_cast<std::ptrdiff_t>(c.events));
    double best_j = 0, best_s = 0, cpu_j = 0, cpu_s = 0;
    for (int r = 0; r < repeat; ++r) {
      // Alternate, each on a fresh database, so both see the same disk state.
      Timing tj = run_journal(slice, c.batch, fresh_dir(dir, "journal"));
      Timing ts = run_sqlite(slice, c.batch, fresh_dir(dir, "sqlite"));
      if (r == 0 || tj.seconds < best_j) best_j = tj.seconds;
      if (r == 0 || ts.seconds < best_s) best_s = ts.seconds;
      if (r == 0 || tj.cpu < cpu_j) cpu_j = tj.cpu;
      if (r == 0 || ts.cpu < cpu_s) cpu_s = ts.cpu;
    }
    double n = static_cast<double>(c.events);
    double jr = n / best_j, sr = n / best_s;
    std::printf("| %zu | %zu | %s | %s | %.2f | %.2f us | %.2f us | %.2f |\n", c.batch, c.events, human(jr).c_str(),
                human(sr).c_str(), jr / sr, cpu_j * 1e6 / n, cpu_s * 1e6 / n, cpu_j / cpu_s);
    std::fflush(stdout);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
