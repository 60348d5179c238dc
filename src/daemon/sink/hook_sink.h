// HookSink: executables in a hooks directory, in the spirit of ZED's zedlets, run for each event
// whose type their name selects. A hook gets the event as JSON on stdin and as STORWATCH_*
// environment variables (event_fields.h), runs in a process group of its own, and is killed
// (SIGTERM to the group, SIGKILL after a grace period) when it outlives the timeout. At most
// `concurrency` hooks run at once; their exit status and the start of their output are logged.
// A hook that fails is not run again for that event (like ZED): its failure is in the log.
//
// Selection by file name (docs/sinks.md): the part before the first '-' is a selector; "all"
// selects every event, otherwise an fnmatch glob on the type ("space.threshold", "fs.*"), and a
// plain prefix selects its family ("fs" selects fs.error, fs.readonly, ...). Files that are not
// executable regular files, or whose name starts with '.' or ends with '~', are ignored. The
// directory is read again at most once a second, so hooks added or removed take effect without a
// restart.
//
// Runs on its SinkRunner's thread; the processes are spawned there (posix_spawn), never on the
// loop.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/sink/sink.h"

namespace storwatch::daemon {

struct HookOptions {
  std::string dir;
  size_t concurrency = 4;
  std::chrono::milliseconds timeout{30000};
  std::chrono::milliseconds kill_grace{2000};  // after SIGTERM, before SIGKILL
  size_t output_max = 4096;                    // bytes of a hook's output logged
};

class HookSink final : public Sink {
 public:
  explicit HookSink(HookOptions o) : options_(std::move(o)) {}
  std::string name() const override { return "hooks"; }
  bool wants(const Event& e) const override;
  [[nodiscard]] Result<size_t> deliver(std::span<const EventPtr> events) override;

 private:
  struct Hook {
    std::string name, path;
  };
  const std::vector<Hook>& hooks() const;

  HookOptions options_;
  mutable std::vector<Hook> hooks_;
  mutable std::chrono::steady_clock::time_point scanned_{};
  mutable bool scanned_once_ = false;
};

// Whether the hook file `name` runs for events of type `type` (the rule above).
bool hook_selects(std::string_view name, std::string_view type);

}  // namespace storwatch::daemon
