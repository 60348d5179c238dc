#include "daemon/state/state_db.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <cerrno>
#include <fmt/format.h>

#include "daemon/state/sqlite_util.h"

namespace storwatch::daemon {

namespace {

std::string random_id() {
  unsigned char b[16];
  if (::getrandom(b, sizeof b, 0) != sizeof b) {
    // getrandom cannot fail for 16 bytes once the pool is initialised; be safe anyway.
    for (auto& c : b) c = static_cast<unsigned char>(rand());
  }
  std::string s;
  for (unsigned char c : b) s += fmt::format("{:02x}", c);
  return s;
}

}  // namespace

StateDb::~StateDb() {
  if (db_) sqlite3_close(db_);
  if (seq_fd_ >= 0) ::close(seq_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

namespace {
// The seq file holds one fixed-size record, rewritten in place: "reserved=N clean=0|1\n" padded
// with spaces. Its blocks are allocated once, so rewriting needs no free space.
constexpr size_t kSeqRecord = 64;
}  // namespace

Result<void> StateDb::open_seq_file(const std::string& dir) {
  std::string path = dir + "/seq";
  seq_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (seq_fd_ < 0) return fail_errno(errno, "opening " + path);
  char buf[kSeqRecord + 1] = {};
  ssize_t n = ::pread(seq_fd_, buf, kSeqRecord, 0);
  if (n < 0) return fail_errno(errno, "reading " + path);
  if (n == 0) {
    // New state directory, or one from before this file existed: take the database's value.
    if (auto r = write_seq(seq_reserved_, false); !r) return r;
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    return {};
  }
  unsigned long long reserved = 0;
  int clean = 0;
  if (std::sscanf(buf, "reserved=%llu clean=%d", &reserved, &clean) != 2)
    return fail_invalid(fmt::format("{} is damaged; remove it only if the state directory is new", path));
  seq_reserved_ = std::max<uint64_t>(seq_reserved_, reserved);
  clean_at_open_ = clean == 1;
  return {};
}

Result<void> StateDb::write_seq(uint64_t reserved, bool clean) {
  std::string rec = fmt::format("reserved={} clean={}", reserved, clean ? 1 : 0);
  rec.resize(kSeqRecord - 1, ' ');
  rec.push_back('\n');
  if (::pwrite(seq_fd_, rec.data(), rec.size(), 0) != static_cast<ssize_t>(rec.size()))
    return fail_errno(errno, "writing the sequence reservation");
  if (::fdatasync(seq_fd_) < 0) return fail_errno(errno, "syncing the sequence reservation");
  return {};
}

Result<void> StateDb::mark_clean_shutdown(uint64_t last_seq) {
  if (auto r = write_seq(last_seq, true); !r) return r;
  seq_reserved_ = last_seq;
  return {};
}

Result<void> StateDb::exec(const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    auto e = sql_error(db_, "state database");
    sqlite3_free(msg);
    return fail(e);
  }
  return {};
}

Result<std::unique_ptr<StateDb>> StateDb::open(const std::string& state_dir) {
  if (::mkdir(state_dir.c_str(), 0750) < 0 && errno != EEXIST)
    return fail_errno(errno, fmt::format("creating state directory {}", state_dir));
  std::unique_ptr<StateDb> s(new StateDb());
  // Two daemons writing one journal and one numbering would break both; refuse the second.
  std::string lock = state_dir + "/lock";
  s->lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (s->lock_fd_ < 0) return fail_errno(errno, "opening " + lock);
  if (::flock(s->lock_fd_, LOCK_EX | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK)
      return fail_errno(EBUSY, fmt::format("another storwatchd uses the state directory {}", state_dir));
    return fail_errno(errno, "locking " + lock);
  }
  s->path_ = state_dir + "/storwatch.db";
  int rc = sqlite3_open_v2(s->path_.c_str(), &s->db_,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return fail(sql_error(s->db_, fmt::format("opening {}", s->path_)));
  sqlite3_busy_timeout(s->db_, 2000);
  auto r = s->init_schema();
  if (!r) return fail(r.error());
  if (auto f = s->open_seq_file(state_dir); !f) return fail(f.error());
  return s;
}

Result<void> StateDb::init_schema() {
  if (auto r = exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"); !r) return r;
  if (auto r = exec("BEGIN IMMEDIATE;"
                    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                    "CREATE TABLE IF NOT EXISTS rules (path TEXT PRIMARY KEY, rule TEXT NOT NULL);"
                    "CREATE TABLE IF NOT EXISTS crossed (fs TEXT NOT NULL, level TEXT NOT NULL,"
                    "  PRIMARY KEY (fs, level));"
                    "CREATE TABLE IF NOT EXISTS fs_error_counters (fs TEXT PRIMARY KEY,"
                    "  count INTEGER NOT NULL);"
                    "COMMIT;");
      !r) {
    (void)exec("ROLLBACK;");
    return r;
  }
  auto get = [&](const char* key) -> std::string {
    SqlStmt st(db_, "SELECT value FROM meta WHERE key = ?1");
    sqlite3_bind_text(st.get(), 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st.get()) == SQLITE_ROW)
      return reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0));
    return {};
  };
  std::string version = get("schema_version");
  if (!version.empty() && std::stoi(version) > kSchemaVersion)
    return fail_invalid(fmt::format("{} has schema version {}, newer than this storwatchd ({})", path_,
                                    version, kSchemaVersion));
  journal_id_ = get("journal_id");
  if (journal_id_.empty()) {
    journal_id_ = random_id();
    SqlStmt st(db_,
            "INSERT INTO meta (key, value) VALUES ('journal_id', ?1), ('schema_version', ?2),"
            " ('seq_reserved', '0')");
    std::string v = std::to_string(kSchemaVersion);
    sqlite3_bind_text(st.get(), 1, journal_id_.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st.get(), 2, v.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st.get()) != SQLITE_DONE) return fail(sql_error(db_, "initialising state"));
  }
  std::string reserved = get("seq_reserved");
  seq_reserved_ = reserved.empty() ? 0 : std::stoull(reserved);
  return {};
}

Result<void> StateDb::reserve_seq(uint64_t upto) {
  if (auto r = write_seq(upto, false); !r) return r;
  seq_reserved_ = upto;
  return {};
}

Result<std::map<std::string, std::string>> StateDb::load_rules() {
  std::map<std::string, std::string> out;
  SqlStmt st(db_, "SELECT path, rule FROM rules");
  if (!st) return fail(sql_error(db_, "loading rules"));
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW)
    out[reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0))] =
        reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 1));
  if (rc != SQLITE_DONE) return fail(sql_error(db_, "loading rules"));
  return out;
}

Result<void> StateDb::save_rule(const std::string& path, const std::string& json) {
  SqlStmt st(db_, "INSERT OR REPLACE INTO rules (path, rule) VALUES (?1, ?2)");
  sqlite3_bind_text(st.get(), 1, path.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.get(), 2, json.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return fail(sql_error(db_, "saving rule"));
  return {};
}

Result<void> StateDb::delete_rule(const std::string& path) {
  SqlStmt st(db_, "DELETE FROM rules WHERE path = ?1");
  sqlite3_bind_text(st.get(), 1, path.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return fail(sql_error(db_, "removing rule"));
  return {};
}

Result<std::set<std::pair<std::string, std::string>>> StateDb::load_crossed() {
  std::set<std::pair<std::string, std::string>> out;
  SqlStmt st(db_, "SELECT fs, level FROM crossed");
  if (!st) return fail(sql_error(db_, "loading crossed levels"));
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW)
    out.emplace(reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0)),
                reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 1)));
  if (rc != SQLITE_DONE) return fail(sql_error(db_, "loading crossed levels"));
  return out;
}

Result<void> StateDb::set_crossed(const std::string& fs_key, const std::string& level_id, bool crossed) {
  SqlStmt st(db_, crossed ? "INSERT OR IGNORE INTO crossed (fs, level) VALUES (?1, ?2)"
                       : "DELETE FROM crossed WHERE fs = ?1 AND level = ?2");
  sqlite3_bind_text(st.get(), 1, fs_key.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.get(), 2, level_id.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return fail(sql_error(db_, "saving crossed level"));
  return {};
}

Result<std::map<std::string, uint64_t>> StateDb::load_error_counters() {
  std::map<std::string, uint64_t> out;
  SqlStmt st(db_, "SELECT fs, count FROM fs_error_counters");
  if (!st) return fail(sql_error(db_, "loading error counters"));
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW)
    out[reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0))] =
        static_cast<uint64_t>(sqlite3_column_int64(st.get(), 1));
  if (rc != SQLITE_DONE) return fail(sql_error(db_, "loading error counters"));
  return out;
}

Result<void> StateDb::save_error_counter(const std::string& fs_key, uint64_t count) {
  SqlStmt st(db_, "INSERT OR REPLACE INTO fs_error_counters (fs, count) VALUES (?1, ?2)");
  sqlite3_bind_text(st.get(), 1, fs_key.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st.get(), 2, static_cast<sqlite3_int64>(count));
  if (sqlite3_step(st.get()) != SQLITE_DONE) return fail(sql_error(db_, "saving an error counter"));
  return {};
}

}  // namespace storwatch::daemon
