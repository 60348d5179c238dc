#include "daemon/mount/mountinfo_source.h"

#include <sys/epoll.h>
#include <time.h>

namespace storwatch::daemon {

namespace {
uint64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace

MountinfoSource::~MountinfoSource() {
  if (loop_ && table_->poll_fd() >= 0) loop_->remove_fd(table_->poll_fd());
}

Result<void> MountinfoSource::start(EventLoop& loop, Sink sink) {
  sink_ = std::move(sink);
  if (int fd = table_->poll_fd(); fd >= 0) {
    auto r = loop.add_fd(fd, EPOLLPRI | EPOLLERR, [this](uint32_t) {
      ++stats_.wakes;
      refresh();
    });
    if (!r) return r;
    loop_ = &loop;
  }
  refresh();
  return {};
}

void MountinfoSource::refresh() {
  uint64_t t0 = thread_cpu_ns();
  auto text = table_->read();
  if (!text) {
    sink_(fail(text.error()));
    return;
  }
  auto changes = diff_.update(*text);
  ++stats_.scans;
  stats_.scan_cpu_ns += thread_cpu_ns() - t0;
  if (!changes) {
    sink_(fail(changes.error()));
    return;
  }
  if (!changes->empty()) sink_(std::move(*changes));
}

}  // namespace storwatch::daemon
