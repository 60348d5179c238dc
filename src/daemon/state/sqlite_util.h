// Small helpers shared by the state database and the journal: a prepared statement that finalizes
// itself, and SQLite errors mapped to errno values an operator can act on (ENOSPC for a full disk,
// EROFS, EACCES, EBUSY), so messages read naturally. Header-only; no state.
#pragma once

#include <sqlite3.h>

#include <cerrno>
#include <string_view>

#include <fmt/format.h>

#include "base/result.h"

namespace storwatch::daemon {

inline Error sql_error(sqlite3* db, std::string_view what) {
  int code = sqlite3_extended_errcode(db) & 0xff;
  int err = EIO;
  if (code == SQLITE_FULL) err = ENOSPC;
  if (code == SQLITE_READONLY) err = EROFS;
  if (code == SQLITE_CANTOPEN) err = EACCES;
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED) err = EBUSY;
  return Error::from_errno(err, fmt::format("{}: {}", what, sqlite3_errmsg(db)));
}

class SqlStmt {
 public:
  SqlStmt(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~SqlStmt() { sqlite3_finalize(s_); }
  SqlStmt(const SqlStmt&) = delete;
  SqlStmt& operator=(const SqlStmt&) = delete;
  sqlite3_stmt* get() { return s_; }
  explicit operator bool() const { return s_ != nullptr; }

 private:
  sqlite3_stmt* s_ = nullptr;
};

}  // namespace storwatch::daemon
