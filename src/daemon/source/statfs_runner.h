// StatfsRunner: statfs(2) off the event loop. A statfs of a hung network or FUSE filesystem can
// block for minutes, so each filesystem gets its own worker thread: a stuck one stalls only its own
// filesystem, and the loop never waits. Results come back to the loop with EventLoop::post().
// The runner never joins workers: a worker stuck in the kernel is abandoned (detached) and dies
// with the process, so shutdown is never delayed by it. For that, RealStatfsProbe makes the call
// in a child process sharing its memory: a thread stuck in a FUSE request cannot die, and would
// keep the whole process from exiting; a worker waiting for its child can.
// Loop-thread only (the workers are internal).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/result.h"
#include "daemon/loop/event_loop.h"
#include "daemon/threshold/threshold_machine.h"

namespace storwatch::daemon {

// The kernel boundary, faked in tests.
class StatfsProbe {
 public:
  virtual ~StatfsProbe() = default;
  [[nodiscard]] virtual Result<Usage> statfs(const std::string& path) = 0;
};

class RealStatfsProbe final : public StatfsProbe {
 public:
  [[nodiscard]] Result<Usage> statfs(const std::string& path) override;
};

class StatfsRunner {
 public:
  using Done = std::function<void(Result<Usage>)>;
  StatfsRunner(EventLoop& loop, std::shared_ptr<StatfsProbe> probe);
  ~StatfsRunner();

  // Queues a statfs of `path` for filesystem `key`; `done` runs on the loop. Returns false (and
  // does nothing) while the previous request for this key has not finished.
  bool request(const std::string& key, const std::string& path, Done done);
  bool busy(const std::string& key) const;
  // Stops the worker for `key` (after its current call returns, if it ever does).
  void forget(const std::string& key);

 private:
  struct Worker;
  struct Mailbox;  // how workers reach the loop; invalidated when the runner goes away
  EventLoop& loop_;
  std::shared_ptr<StatfsProbe> probe_;
  std::shared_ptr<Mailbox> mailbox_;
  std::map<std::string, std::shared_ptr<Worker>> workers_;
};

}  // namespace storwatch::daemon
