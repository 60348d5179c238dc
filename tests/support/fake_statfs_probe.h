// FakeStatfsProbe: the statfs(2) boundary with answers the test sets per path. A path can be made
// to block, like a hung NFS or FUSE mount, until the test releases it. statfs() runs on the
// StatfsRunner's worker threads, everything else on the test thread; all of it is thread-safe.
#pragma once

#include <cerrno>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "daemon/source/statfs_runner.h"

namespace storwatch::test {

class FakeStatfsProbe final : public daemon::StatfsProbe {
 public:
  // The answer for `path` from now on (the default for unknown paths is ENOENT).
  void set(const std::string& path, const daemon::Usage& u) {
    std::lock_guard lock(mu_);
    usage_[path] = u;
    errors_.erase(path);
  }
  void set_error(const std::string& path, int err) {
    std::lock_guard lock(mu_);
    errors_[path] = err;
  }
  // Calls for `path` block from now on until release(path).
  void block(const std::string& path) {
    std::lock_guard lock(mu_);
    blocked_.insert(path);
  }
  void release(const std::string& path) {
    std::lock_guard lock(mu_);
    blocked_.erase(path);
    cv_.notify_all();
  }
  void release_all() {
    std::lock_guard lock(mu_);
    blocked_.clear();
    cv_.notify_all();
  }
  // How many calls for `path` have started, and how many are stuck in block() right now.
  int calls(const std::string& path) const {
    std::lock_guard lock(mu_);
    auto it = calls_.find(path);
    return it == calls_.end() ? 0 : it->second;
  }
  int waiting() const {
    std::lock_guard lock(mu_);
    return waiting_;
  }

  Result<daemon::Usage> statfs(const std::string& path) override {
    std::unique_lock lock(mu_);
    ++calls_[path];
    ++waiting_;
    cv_.wait(lock, [&] { return !blocked_.count(path); });
    --waiting_;
    if (auto e = errors_.find(path); e != errors_.end()) return fail_errno(e->second, "statfs " + path);
    auto it = usage_.find(path);
    if (it == usage_.end()) return fail_errno(ENOENT, "statfs " + path);
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, daemon::Usage> usage_;
  std::map<std::string, int> errors_;
  std::set<std::string> blocked_;
  std::map<std::string, int> calls_;
  int waiting_ = 0;
};

}  // namespace storwatch::test
