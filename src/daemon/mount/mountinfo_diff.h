// MountinfoDiff: the incremental diff of successive /proc/<pid>/mountinfo texts. Each line is
// keyed by its mount id (field 1) and remembered with a hash of its text, so a line that did not
// change costs a hash, not a parse; only new or different lines are parsed. A line whose id is
// the same but whose place or device differs (the id was reused, or the mount moved) is a detach
// and an attach, as Inventory::update would see it.
//
// Pure (text in, changes out): unit tests feed it strings. Not thread-safe.
#pragma once

#include <cstdint>
#include <string_view>
#include <unordered_map>

#include "base/result.h"
#include "daemon/mount/mount_changes.h"

namespace storwatch::daemon {

class MountinfoDiff {
 public:
  // The first call, and the first after a failed one, returns the whole table (full).
  // A malformed line fails the call and forgets the table, so the next good text starts afresh.
  [[nodiscard]] Result<MountChanges> update(std::string_view text);

  size_t size() const { return lines_.size(); }
  // Lines parsed by the last update (the others were unchanged and only hashed).
  size_t last_parsed() const { return last_parsed_; }

 private:
  struct Line {
    uint64_t hash = 0;
    uint64_t generation = 0;
    MountEntry entry;
  };
  std::unordered_map<uint64_t, Line> lines_;
  uint64_t generation_ = 0;
  bool started_ = false;
  size_t last_parsed_ = 0;
};

}  // namespace storwatch::daemon
