#include "daemon/loop/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>

namespace storwatch::daemon {

EventLoop::EventLoop(const Clock& clock) : clock_(clock) {}
EventLoop::~EventLoop() = default;

Result<std::unique_ptr<EventLoop>> EventLoop::create(const Clock& clock) {
  std::unique_ptr<EventLoop> loop(new EventLoop(clock));
  loop->epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!loop->epoll_) return fail_errno(errno, "epoll_create1");
  loop->wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!loop->wake_) return fail_errno(errno, "eventfd");
  int wfd = loop->wake_.get();
  auto r = loop->add_fd(wfd, EPOLLIN, [wfd](uint32_t) {
    uint64_t v;
    while (::read(wfd, &v, sizeof v) > 0) {
    }
  });
  if (!r) return fail(r.error());
  return loop;
}

Result<void> EventLoop::add_fd(int fd, uint32_t events, FdCallback cb) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) return fail_errno(errno, "epoll_ctl add");
  fds_[fd] = std::make_shared<FdCallback>(std::move(cb));
  return {};
}

Result<void> EventLoop::modify_fd(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) < 0) return fail_errno(errno, "epoll_ctl mod");
  return {};
}

void EventLoop::remove_fd(int fd) {
  if (fds_.erase(fd)) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

EventLoop::TimerId EventLoop::add_timer(MonoTime when, Callback cb) {
  TimerId id = next_timer_++;
  timers_.emplace(when, std::make_pair(id, std::move(cb)));
  timer_index_[id] = when;
  return id;
}

EventLoop::TimerId EventLoop::add_timer_after(std::chrono::milliseconds delay, Callback cb) {
  return add_timer(clock_.now() + delay, std::move(cb));
}

void EventLoop::cancel_timer(TimerId id) {
  auto it = timer_index_.find(id);
  if (it == timer_index_.end()) return;
  auto range = timers_.equal_range(it->second);
  for (auto t = range.first; t != range.second; ++t) {
    if (t->second.first == id) {
      timers_.erase(t);
      break;
    }
  }
  timer_index_.erase(it);
}

void EventLoop::post(Callback cb) {
  {
    std::lock_guard lock(posted_mu_);
    posted_.push_back(std::move(cb));
  }
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_.get(), &one, sizeof one);
  (void)ignored;
}

size_t EventLoop::run_due_timers() {
  size_t n = 0;
  MonoTime now = clock_.now();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_index_.erase(node.mapped().first);
    node.mapped().second();
    ++n;
  }
  return n;
}

size_t EventLoop::run_posted() {
  std::vector<Callback> batch;
  {
    std::lock_guard lock(posted_mu_);
    batch.swap(posted_);
  }
  for (auto& cb : batch) cb();
  return batch.size();
}

size_t EventLoop::step(std::chrono::milliseconds max_wait) {
  using namespace std::chrono;
  int timeout = static_cast<int>(std::max<int64_t>(0, max_wait.count()));
  {
    std::lock_guard lock(posted_mu_);
    if (!posted_.empty()) timeout = 0;
  }
  if (!timers_.empty()) {
    auto until = duration_cast<milliseconds>(timers_.begin()->first - clock_.now());
    // Round up so we don't wake a millisecond early and spin.
    int64_t ms = std::max<int64_t>(0, until.count() + 1);
    timeout = static_cast<int>(std::min<int64_t>(timeout, ms));
  }
  epoll_event events[64];
  int n = ::epoll_wait(epoll_.get(), events, 64, timeout);
  size_t ran = 0;
  for (int i = 0; i < n; ++i) {
    auto it = fds_.find(events[i].data.fd);
    if (it == fds_.end()) continue;  // removed by an earlier callback in this turn
    auto cb = it->second;            // keep alive even if the callback removes itself
    (*cb)(events[i].events);
    ++ran;
  }
  ran += run_due_timers();
  ran += run_posted();
  return ran;
}

void EventLoop::run() {
  while (!stopped_) step(std::chrono::milliseconds(60000));
}

void EventLoop::stop() {
  stopped_ = true;
  post([] {});
}

}  // namespace storwatch::daemon
