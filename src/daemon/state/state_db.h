// StateDb: the daemon's durable state under the state directory. In SQLite (WAL, storwatch.db): the
// journal id, rules set at runtime, the levels currently crossed and the filesystem error counters
// last seen; the journal keeps its events in the same database. The sequence-number reservation lives in a small preallocated file (`seq`)
// rewritten in place, so numbers can still be reserved when the disk is full (SQLite then cannot
// write) and live delivery goes on. Loop-thread only; every write is durable when the call returns.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "base/result.h"

struct sqlite3;

namespace storwatch::daemon {

class StateDb {
 public:
  static constexpr int kSchemaVersion = 1;

  // Creates the directory (0750) and the database when missing. Fails with EBUSY when another
  // storwatchd holds the directory.
  [[nodiscard]] static Result<std::unique_ptr<StateDb>> open(const std::string& state_dir);
  ~StateDb();

  const std::string& journal_id() const { return journal_id_; }
  const std::string& path() const { return path_; }

  // The highest sequence number reserved so far (0 for a new database).
  uint64_t seq_reserved() const { return seq_reserved_; }
  // Durably records that numbers up to `upto` may be in use.
  [[nodiscard]] Result<void> reserve_seq(uint64_t upto);
  // Whether the previous run ended cleanly with every number up to seq_reserved() journaled.
  bool clean_at_open() const { return clean_at_open_; }
  // At a clean exit, after the journal was flushed: the last number used becomes the reservation,
  // so the next run continues right after it and knows no event was lost.
  [[nodiscard]] Result<void> mark_clean_shutdown(uint64_t last_seq);

  // Rules set at runtime: path -> rule JSON text.
  [[nodiscard]] Result<std::map<std::string, std::string>> load_rules();
  [[nodiscard]] Result<void> save_rule(const std::string& path, const std::string& json);
  [[nodiscard]] Result<void> delete_rule(const std::string& path);

  // Levels crossed: (filesystem key, level id). The key is the filesystem's first mount point.
  [[nodiscard]] Result<std::set<std::pair<std::string, std::string>>> load_crossed();
  [[nodiscard]] Result<void> set_crossed(const std::string& fs_key, const std::string& level_id,
                                         bool crossed);

  // Filesystem error counters last seen (ext4 errors_count, btrfs device error statistics), by
  // filesystem key ("ext4:<uuid>", "btrfs:<fsid>"): errors counted while storwatchd was not
  // running are the difference at the next start, reported once.
  [[nodiscard]] Result<std::map<std::string, uint64_t>> load_error_counters();
  [[nodiscard]] Result<void> save_error_counter(const std::string& fs_key, uint64_t count);

 private:
  StateDb() = default;
  [[nodiscard]] Result<void> exec(const char* sql);
  [[nodiscard]] Result<void> init_schema();
  [[nodiscard]] Result<void> open_seq_file(const std::string& dir);
  [[nodiscard]] Result<void> write_seq(uint64_t reserved, bool clean);

  sqlite3* db_ = nullptr;
  std::string path_;
  std::string journal_id_;
  uint64_t seq_reserved_ = 0;
  bool clean_at_open_ = false;
  int seq_fd_ = -1;
  int lock_fd_ = -1;  // flock on state_dir/lock: one daemon per state directory
};

}  // namespace storwatch::daemon
