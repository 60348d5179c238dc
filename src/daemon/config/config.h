// Config: storwatchd's configuration, from TOML (docs/configuration.md). The embedded default
// (kDefaultConfig) is what runs when /etc/storwatch/storwatch.toml is absent; a config file
// overrides only what it names. Unknown keys are errors, so a typo never silently does nothing.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "daemon/server/server.h"
#include "proto/rule.h"

namespace storwatch::daemon {

inline constexpr const char* kDefaultConfigPath = "/etc/storwatch/storwatch.toml";
inline constexpr const char* kDefaultSocketPath = "/run/storwatch/io.storwatch";
inline constexpr const char* kDefaultStateDir = "/var/lib/storwatch";

// The embedded default configuration, also printed by `storwatchd --print-default-config`.
extern const std::string_view kDefaultConfig;

struct Config {
  std::string socket = kDefaultSocketPath;
  std::string state_dir = kDefaultStateDir;

  std::vector<std::string> skip_fstypes;   // in addition to the built-in pseudo filesystems
  std::vector<std::string> watch_fstypes;  // watched although built in as pseudo
  std::vector<std::string> skip_paths;     // mount points (and below) not watched
  bool watch_readonly = false;

  std::chrono::milliseconds statfs_timeout{5000};
  std::chrono::milliseconds poll_min{100};
  std::chrono::milliseconds poll_max{5000};
  std::vector<Level> default_levels;  // for watched filesystems without a rule of their own
  std::vector<Rule> rules;            // rules from the config file (not changeable at runtime)

  ServerLimits limits;

  // [journal]: the event history in the state database.
  std::chrono::seconds journal_max_age{30 * 24 * 3600};
  uint64_t journal_max_bytes = 256ull << 20;
  size_t journal_buffer_events = 100000;  // waiting in memory while the disk is full

  // [fold]: floods of equal events become one event with a count per window.
  std::chrono::milliseconds fold_window{1000};
  size_t fold_max_keys = 4096;

  // [replay]: a FIFO whose JSON lines are emitted as events (off when empty).
  std::string replay_fifo;
};

// Parses TOML text on top of the embedded defaults. `origin` names the file in messages.
[[nodiscard]] Result<Config> parse_config(std::string_view toml_text, std::string_view origin);
// Reads `path`; a missing file is fine only when `missing_ok` (the default path), giving defaults.
[[nodiscard]] Result<Config> load_config(const std::string& path, bool missing_ok);

// "5s", "100ms", "2m", "1h", "30d", or a plain number of seconds.
[[nodiscard]] Result<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace storwatch::daemon
