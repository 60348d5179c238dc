// Rules: which levels of free space and free inodes matter on a filesystem, and which events are
// enabled there. Shared by the daemon (evaluation, persistence), the client library and the CLI
// (parsing user input). Plain data plus pure functions; thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <storwatch/event.h>
#include <storwatch/result.h>

namespace storwatch {

enum class Resource { blocks, inodes };
std::string_view resource_name(Resource r);

// An amount of free space or free inodes: a percentage of the total, an absolute number (bytes for
// blocks, a count for inodes), or a number of filesystem blocks (the seed's syntax; f_frsize each).
struct Amount {
  enum class Unit { percent, absolute, fs_blocks };
  Unit unit = Unit::percent;
  double percent = 0;  // 0..100, when unit == percent
  uint64_t value = 0;  // bytes / inodes / blocks, otherwise

  // The amount in bytes (blocks) or inodes for a filesystem of `total` units of `unit_size` bytes
  // (for inodes unit_size is 1). Percentages round down.
  uint64_t resolve(uint64_t total, uint64_t unit_size) const;
  // "10%", "5G", "500000", "1000 blocks": parses what to_string prints.
  std::string to_string() const;
  bool operator==(const Amount&) const = default;
};

// "10%", "2.5%", "500M", "5G", "1T", "4096": bytes for blocks, a count for inodes. K, M, G, T, P
// (also Ki, KiB, MiB...) are powers of 1024, as df -h and df -hi print them, for inodes too:
// Amount::to_string() does not know the resource, so one meaning per suffix keeps round trips
// exact. "KB"/"GB" are refused rather than guessed (GNU tools read them as powers of 1000).
// Byte forms ("4096B", "4KiB") and "1000 blocks" (fs_blocks) are for blocks only. A fraction
// ("1.5G") is allowed with a suffix and rounds down to a whole byte or inode. Percentages are
// plain decimals from 0.000001% (resolve works in millionths of a percent) to below 100%.
[[nodiscard]] Result<Amount> parse_amount(std::string_view text, Resource r);

struct Level {
  Resource resource = Resource::blocks;
  Amount below;                      // the level: "free below this"
  std::optional<Amount> hysteresis;  // default: 1% of the size
  Severity severity = Severity::warning;

  // Stable identity within a rule, e.g. "blocks<10%": keys the persisted crossed state.
  std::string id() const;
  bool operator==(const Level&) const = default;
};

struct Rule {
  std::string path;           // the mount point (or any path) the user named
  std::vector<Level> levels;  // any number, for blocks and inodes
  bool thresholds = true;     // seed "T": level events on/off
  bool events = true;         // seed "G": the other events (errors, read-only, ENOSPC...) on/off

  bool operator==(const Rule&) const = default;
};

// Bounds what one client can make the daemon evaluate per filesystem.
inline constexpr std::size_t kMaxLevels = 64;

// Checks a rule as a whole: path absolute, at most kMaxLevels levels, levels distinct (by id),
// percentages in [0.000001, 100), levels above zero, no fs_blocks for inodes, hysteresis smaller
// than the level when both have the same unit (a percentage and a size can't be compared without
// the filesystem). A rule may have no levels at all (only event toggles). The message names the
// offending level.
[[nodiscard]] Result<void> validate_rule(const Rule& r);
// Default severities by position for the levels whose severity the user did not give
// (explicit_severity[i] false, or i past its end): per resource, the level with the most free
// space is warning, the next error, the rest critical. A percentage and an absolute amount can't
// be ordered without a filesystem size, so percentages rank first (least severe) among themselves,
// then byte/inode amounts, then fs_blocks amounts, each group from most to least free. Levels with
// an explicit severity neither move nor take a rank.
void assign_default_severities(Rule& r, const std::vector<bool>& explicit_severity);

nlohmann::json rule_to_json(const Rule& r);
[[nodiscard]] Result<Rule> rule_from_json(const nlohmann::json& j);

// The seed's one-line syntax (Documentation/filesystems/events.txt of the fs events RFC):
//   "MOUNT G T L1 L2"  enable generic events and thresholds with levels L1 > L2 (free blocks)
//   "MOUNT T L1"       thresholds with one level;  "MOUNT G"  generic events only
//   "!MOUNT T"         disable thresholds;  "!MOUNT G"  disable generic events
//   "!MOUNT"           remove the rule
struct SeedCommand {
  std::string path;
  bool remove = false;      // leading '!'
  bool generic = false;     // G named
  bool threshold = false;   // T named
  std::vector<Amount> levels;  // fs_blocks amounts, L1 then L2
};
// One request; L1, L2 are positive whole numbers of available blocks, L1 > L2, only after T.
[[nodiscard]] Result<SeedCommand> parse_seed_line(std::string_view line);
// Several requests separated by ';' or newlines (the seed's write(2) form); empty requests are
// skipped. The first bad request fails the whole text, and the error says which one.
[[nodiscard]] Result<std::vector<SeedCommand>> parse_seed_lines(std::string_view text);
// Applies a command to the current rule for its path (nullopt: none yet). Returns the new rule,
// or nullopt when the rule is removed. Registration is cumulative, as in the seed: G and T switch
// their event kind on and leave the other as it was; a new rule starts with both off. T replaces
// the rule's block levels with L1 (warning) and L2 (error) and keeps its inode levels. "!MOUNT T"
// switches thresholds off but keeps the levels, so a later "MOUNT T L1" is the only way back on.
// Fails when cmd.path differs from current->path.
[[nodiscard]] Result<std::optional<Rule>> apply_seed_command(const std::optional<Rule>& current,
                                                             const SeedCommand& cmd);

}  // namespace storwatch
