// Config: storwatchd's configuration, from TOML (docs/configuration.md). The embedded default
// (kDefaultConfig) is what runs when /etc/storwatch/storwatch.toml is absent; a config file
// overrides only what it names. Unknown keys are errors, so a typo never silently does nothing.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "daemon/server/policy.h"
#include "daemon/server/server.h"
#include "proto/rule.h"

namespace storwatch::daemon {

inline constexpr const char* kDefaultConfigPath = "/etc/storwatch/storwatch.toml";
inline constexpr const char* kDefaultSocketPath = "/run/storwatch/io.storwatch";
inline constexpr const char* kDefaultStateDir = "/var/lib/storwatch";

// The embedded default configuration, also printed by `storwatchd --print-default-config`.
extern const std::string_view kDefaultConfig;

// automatic: fanotify mount notifications when the kernel has them, else mountinfo.
enum class MountsBackend { automatic, fanotify, mountinfo };

// [sinks.*]: destinations fed from the journal, each on its own cursor (docs/sinks.md).
struct SinksConfig {
  std::optional<bool> journald;  // [sinks.journald] enabled; unset ("auto"): on when journald runs
  std::string hooks_dir = "/etc/storwatch/hooks.d";  // [sinks.hooks] dir; "" turns hooks off
  size_t hooks_concurrency = 4;
  std::chrono::milliseconds hooks_timeout{30000};
  std::string alertmanager_url;  // [sinks.alertmanager] url; off when empty
  std::chrono::milliseconds alertmanager_timeout{10000};
  std::chrono::milliseconds alertmanager_resend{60000};
  std::chrono::milliseconds alertmanager_io_error_hold{300000};
  // [sinks.nats]: JetStream for fleets (docs/fleet.md); off when the url is empty.
  std::string nats_url;
  std::string nats_stream = "STORWATCH";
  std::string nats_host;  // the subject's host token; empty: the short hostname
  bool nats_create_stream = true;
  std::chrono::milliseconds nats_timeout{5000};
  std::chrono::milliseconds nats_duplicate_window{600000};
};

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

  // [sources]: optional event sources that cost something while running.
  bool ebpf_enospc = true;  // syscall-exit probe for ENOSPC/EDQUOT
  bool ebpf_block = true;   // block_rq_error program for block.io_error (else the kernel log)
  bool quota_netlink = true;  // VFS_DQUOT generic netlink listener for quota.warning

  // [mounts]: where mount changes come from (docs/configuration.md).
  MountsBackend mounts_backend = MountsBackend::automatic;

  // [replay]: a FIFO whose JSON lines are emitted as events (off when empty).
  std::string replay_fifo;

  // [policy]: who may subscribe, query, change rules, see other users' process fields and the
  // kernel's text (docs/security.md).
  Policy policy;

  // [metrics]: the Prometheus /metrics endpoint, HOST:PORT (off when empty; --metrics overrides).
  std::string metrics_listen;

  SinksConfig sinks;
};

// Parses TOML text on top of the embedded defaults. `origin` names the file in messages.
[[nodiscard]] Result<Config> parse_config(std::string_view toml_text, std::string_view origin);
// Reads `path`; a missing file is fine only when `missing_ok` (the default path), giving defaults.
[[nodiscard]] Result<Config> load_config(const std::string& path, bool missing_ok);

// "5s", "100ms", "2m", "1h", "30d", or a plain number of seconds.
[[nodiscard]] Result<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace storwatch::daemon
