// ReplaySource: events written as JSON lines into a FIFO (config `replay.fifo`), emitted as if a
// kernel source had seen them. For demonstrations, for feeding sinks and clients with recorded
// streams, and for tests that need thousands of events on demand. Off unless configured.
//
// One JSON object per line: {"type": "fs.error", "severity": "error", "fs": "/mnt/data",
// "detail": {...}, "count": 1, "process": {"pid": 1, "uid": 0, "comm": "dd"}}. `type` must be in
// the vocabulary; `fs` is a path resolved to the filesystem holding it. Bad lines are counted and
// skipped. Loop-thread only.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <storwatch/event.h>

#include "base/fd.h"
#include "base/result.h"
#include "daemon/loop/event_loop.h"

namespace storwatch::daemon {

class ReplaySource {
 public:
  using ResolveFs = std::function<std::optional<FsRef>(const std::string& path)>;
  [[nodiscard]] static Result<std::unique_ptr<ReplaySource>> create(EventLoop& loop, const std::string& fifo,
                                                                    ResolveFs resolve,
                                                                    std::function<void(Event)> emit);
  ~ReplaySource();
  uint64_t bad_lines() const { return bad_; }
  // Parses one line into an event (exposed for tests and fuzzing).
  [[nodiscard]] static Result<Event> parse_line(std::string_view line, const ResolveFs& resolve);

 private:
  ReplaySource(EventLoop& loop, ResolveFs resolve, std::function<void(Event)> emit)
      : loop_(loop), resolve_(std::move(resolve)), emit_(std::move(emit)) {}
  void on_readable();

  EventLoop& loop_;
  ResolveFs resolve_;
  std::function<void(Event)> emit_;
  UniqueFd fd_;
  std::string partial_;
  bool discarding_ = false;  // inside a line longer than the limit: skipped up to its newline
  uint64_t bad_ = 0;
};

}  // namespace storwatch::daemon
