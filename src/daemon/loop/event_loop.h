// EventLoop: the daemon's single epoll loop. Everything that touches daemon state runs on it;
// other threads (statfs workers, later sinks and journal) hand results back with post().
// step() runs one turn so tests drive the loop deterministically without sleeping.
// Thread-safety: post() and wake() are safe from any thread; everything else is loop-thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "base/clock.h"
#include "base/fd.h"
#include "base/result.h"

namespace storwatch::daemon {

class EventLoop {
 public:
  using FdCallback = std::function<void(uint32_t events)>;
  using Callback = std::function<void()>;
  using TimerId = uint64_t;

  [[nodiscard]] static Result<std::unique_ptr<EventLoop>> create(const Clock& clock);
  ~EventLoop();

  // Watch fd for epoll `events` (EPOLLIN...). The callback may remove or re-add fds.
  [[nodiscard]] Result<void> add_fd(int fd, uint32_t events, FdCallback cb);
  [[nodiscard]] Result<void> modify_fd(int fd, uint32_t events);
  void remove_fd(int fd);

  // One-shot timer at a monotonic deadline (per the Clock). Returns an id for cancel_timer.
  TimerId add_timer(MonoTime when, Callback cb);
  TimerId add_timer_after(std::chrono::milliseconds delay, Callback cb);
  void cancel_timer(TimerId id);

  // Runs cb on the loop thread at its next turn. Safe from any thread.
  void post(Callback cb);

  // One turn: wait up to `max_wait` for fds (0: don't wait), then run ready fd callbacks, due
  // timers and posted callbacks. Returns the number of callbacks run.
  size_t step(std::chrono::milliseconds max_wait);
  // Steps until stop() is called.
  void run();
  void stop();
  bool stopped() const { return stopped_; }

  const Clock& clock() const { return clock_; }

 private:
  explicit EventLoop(const Clock& clock);
  size_t run_due_timers();
  size_t run_posted();

  const Clock& clock_;
  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd for post()
  std::map<int, std::shared_ptr<FdCallback>> fds_;
  std::multimap<MonoTime, std::pair<TimerId, Callback>> timers_;
  std::map<TimerId, MonoTime> timer_index_;
  TimerId next_timer_ = 1;
  std::mutex posted_mu_;
  std::vector<Callback> posted_;
  bool stopped_ = false;
};

}  // namespace storwatch::daemon
