#include "daemon/source/statfs_runner.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace storwatch::daemon {

Result<Usage> RealStatfsProbe::statfs(const std::string& path) {
  struct statvfs s {};
  if (::statvfs(path.c_str(), &s) < 0) return fail_errno(errno, "statfs " + path);
  Usage u;
  u.frsize = s.f_frsize ? s.f_frsize : s.f_bsize;
  u.blocks = s.f_blocks;
  u.bavail = s.f_bavail;
  u.files = s.f_files;
  u.favail = s.f_favail;
  return u;
}

struct StatfsRunner::Mailbox {
  std::mutex mu;
  EventLoop* loop = nullptr;  // null once the runner is gone
  void post(std::function<void()> cb) {
    std::lock_guard lock(mu);
    if (loop) loop->post(std::move(cb));
  }
};

struct StatfsRunner::Worker {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<std::pair<std::string, Done>> job;
  bool quit = false;
  bool running = false;  // a job is queued or in progress
};

StatfsRunner::StatfsRunner(EventLoop& loop, std::shared_ptr<StatfsProbe> probe)
    : loop_(loop), probe_(std::move(probe)), mailbox_(std::make_shared<Mailbox>()) {
  mailbox_->loop = &loop_;
}

StatfsRunner::~StatfsRunner() {
  {
    std::lock_guard lock(mailbox_->mu);
    mailbox_->loop = nullptr;
  }
  for (auto& [key, w] : workers_) {
    std::lock_guard lock(w->mu);
    w->quit = true;
    w->cv.notify_all();
  }
}

bool StatfsRunner::busy(const std::string& key) const {
  auto it = workers_.find(key);
  if (it == workers_.end()) return false;
  std::lock_guard lock(it->second->mu);
  return it->second->running;
}

bool StatfsRunner::request(const std::string& key, const std::string& path, Done done) {
  auto& w = workers_[key];
  if (!w) {
    w = std::make_shared<Worker>();
    std::thread([w = w, probe = probe_, mailbox = mailbox_] {
      for (;;) {
        std::pair<std::string, Done> job;
        {
          std::unique_lock lock(w->mu);
          w->cv.wait(lock, [&] { return w->quit || w->job; });
          if (w->quit) return;
          job = std::move(*w->job);
          w->job.reset();
        }
        auto result = probe->statfs(job.first);
        mailbox->post([w, done = std::move(job.second), result = std::move(result)]() mutable {
          {
            std::lock_guard lock(w->mu);
            w->running = false;
          }
          done(std::move(result));
        });
      }
    }).detach();
  }
  std::lock_guard lock(w->mu);
  if (w->running) return false;
  w->running = true;
  w->job.emplace(path, std::move(done));
  w->cv.notify_one();
  return true;
}

void StatfsRunner::forget(const std::string& key) {
  auto it = workers_.find(key);
  if (it == workers_.end()) return;
  {
    std::lock_guard lock(it->second->mu);
    it->second->quit = true;
    it->second->cv.notify_all();
  }
  workers_.erase(it);
}

}  // namespace storwatch::daemon
