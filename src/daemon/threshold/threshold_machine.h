// ThresholdMachine: the edge-triggered state of one filesystem's levels. It is fed statfs samples
// and says which levels were crossed since the previous one, each crossing once: downward when
// free space (or free inodes) drops below the level, upward only once it is back at least the
// hysteresis above it, so jitter around a level reports nothing. Pure: no I/O, no clock; the
// caller owns the machine (one per filesystem) and persists crossed() across restarts.
// Thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "proto/rule.h"

namespace storwatch::daemon {

// One statfs sample.
struct Usage {
  uint64_t frsize = 0;  // f_frsize (bytes per block)
  uint64_t blocks = 0;  // f_blocks
  uint64_t bavail = 0;  // f_bavail: "free" as df shows it
  uint64_t files = 0;   // f_files
  uint64_t favail = 0;  // f_favail
};

struct Crossing {
  std::string level_id;  // Level::id()
  Resource resource = Resource::blocks;
  Severity severity = Severity::warning;
  bool below = true;       // true: crossed downward; false: back above (past hysteresis)
  uint64_t level = 0;      // resolved level (bytes or inodes)
  uint64_t avail = 0;      // bytes (blocks) or inodes available now
  uint64_t total = 0;      // bytes or inodes total
  std::string level_text;  // Amount::to_string() of the level, e.g. "10%"
};

// A level resolved against one sample, in bytes (blocks) or inodes. Shared with PollScheduler so
// both agree on where the edges are.
struct ResolvedLevel {
  uint64_t level = 0;  // crossed downward when avail < level
  uint64_t rearm = 0;  // back above when avail >= rearm (level + hysteresis, saturating)
  uint64_t avail = 0;
  uint64_t total = 0;
};
// nullopt when the sample has nothing to compare against: frsize or blocks is 0 (nothing at all),
// or an inode level on a filesystem that reports no inode counts (files == 0). The default
// hysteresis is 1% of the size, rounded down.
std::optional<ResolvedLevel> resolve_level(const Level& l, const Usage& u);

class ThresholdMachine {
 public:
  // Keeps the crossed state of levels whose id survives; new levels start above, so the next
  // update reports them if free space is already below. Of two levels with the same id (which
  // validate_rule refuses), the first wins.
  void set_levels(std::vector<Level> levels);
  // From persisted state: these levels are below already and won't be reported below again. May
  // come before or after set_levels; ids of no current level are dropped.
  void restore_crossed(const std::set<std::string>& ids);
  std::set<std::string> crossed() const { return crossed_; }

  // Feeds a sample; returns the crossings to report, in report order: first levels back above,
  // most severe (lowest) first, then levels now below, least severe (highest) first and most
  // severe last, so the last event describes the worst state. Blocks come before inodes in each
  // group. Levels are resolved against this sample's totals, so a resize moves percentages.
  std::vector<Crossing> update(const Usage& u);

 private:
  void prune();

  std::vector<Level> levels_;
  std::set<std::string> crossed_;
  bool have_levels_ = false;
};

}  // namespace storwatch::daemon
