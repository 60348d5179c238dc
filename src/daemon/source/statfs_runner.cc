#include "daemon/source/statfs_runner.h"

#include <sched.h>
#include <signal.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace storwatch::daemon {

namespace {

// The statfs(2) of one call, made by a child process that shares our memory (see below).
struct StatfsCall {
  const char* path = nullptr;
  struct statfs result {};
  int error = 0;
};

int statfs_child(void* arg) {
  auto* call = static_cast<StatfsCall*>(arg);
  // This process has its own copy of the descriptor table: drop it, so a child stuck in the
  // kernel keeps none of the daemon's sockets open after the daemon is gone. Raw system calls
  // only: this runs on a borrowed stack in shared memory.
  ::syscall(SYS_close_range, 0U, ~0U, 0U);
  if (::syscall(SYS_statfs, call->path, &call->result) < 0) call->error = errno;
  ::syscall(SYS_exit, 0);
  return 0;
}

// statfs(2) in a CLONE_VM|CLONE_VFORK child. A FUSE request that the filesystem's server has
// already read is waited for uninterruptibly, even by a thread that got SIGKILL, and a thread
// stuck there keeps the whole process from exiting (the main thread stays a zombie until the
// request is answered, possibly never). The calling thread here waits for the child killably
// instead, so the daemon exits at once; a stuck child lingers alone until the kernel lets it go.
// Falls back to a plain statfs if the child cannot be created.
int statfs_in_child(const char* path, struct statfs& out) {
  StatfsCall call;
  call.path = path;
  // The child runs on this part of our own (suspended) thread's stack, as posix_spawn does.
  alignas(64) char stack[64 * 1024];
  pid_t pid = ::clone(statfs_child, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &call);
  if (pid < 0) {
    if (::statfs(path, &out) < 0) return errno;
    return 0;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (call.error == 0) out = call.result;
  return call.error;
}

}  // namespace

Result<Usage> RealStatfsProbe::statfs(const std::string& path) {
  struct statfs s {};
  if (int err = statfs_in_child(path.c_str(), s); err != 0) return fail_errno(err, "statfs " + path);
  Usage u;
  u.frsize = s.f_frsize ? s.f_frsize : s.f_bsize;
  u.blocks = s.f_blocks;
  u.bavail = s.f_bavail;
  u.files = s.f_files;
  u.favail = s.f_ffree;  // what statvfs(3) reports as f_favail
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
