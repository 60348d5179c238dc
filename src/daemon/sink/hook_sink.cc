#include "daemon/sink/hook_sink.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fmt/format.h>

#include "base/log.h"
#include "daemon/sink/event_fields.h"

namespace storwatch::daemon {

namespace {

using Clock = std::chrono::steady_clock;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// One hook process for one event.
struct Run {
  std::string hook;
  uint64_t seq = 0;
  pid_t pid = -1;
  int pidfd = -1, in = -1, out = -1;
  std::string input;
  size_t written = 0;
  std::string output;
  size_t output_dropped = 0;
  Clock::time_point deadline, kill_at;
  bool termed = false, killed = false;
};

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return "ended";
}

}  // namespace

bool hook_selects(std::string_view name, std::string_view type) {
  auto dash = name.find('-');
  if (dash == std::string_view::npos || dash == 0) return false;
  std::string sel(name.substr(0, dash));
  if (sel == "all") return true;
  std::string t(type);
  if (fnmatch(sel.c_str(), t.c_str(), 0) == 0) return true;
  return t.size() > sel.size() && t.compare(0, sel.size(), sel) == 0 && t[sel.size()] == '.';
}

const std::vector<HookSink::Hook>& HookSink::hooks() const {
  auto now = Clock::now();
  if (scanned_once_ && now - scanned_ < std::chrono::seconds(1)) return hooks_;
  scanned_once_ = true;
  scanned_ = now;
  hooks_.clear();
  DIR* d = ::opendir(options_.dir.c_str());
  if (!d) return hooks_;  // no directory: no hooks
  while (dirent* de = ::readdir(d)) {
    std::string_view n = de->d_name;
    if (n.empty() || n[0] == '.' || ends_with(n, "~")) continue;
    std::string path = options_.dir + "/" + std::string(n);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ::access(path.c_str(), X_OK) != 0) continue;
    hooks_.push_back({std::string(n), std::move(path)});
  }
  ::closedir(d);
  std::sort(hooks_.begin(), hooks_.end(), [](const Hook& a, const Hook& b) { return a.name < b.name; });
  return hooks_;
}

bool HookSink::wants(const Event& e) const {
  for (const auto& h : hooks())
    if (hook_selects(h.name, e.type)) return true;
  return false;
}

namespace {

// Starts `path` with the event; on failure the Run has pid -1 and the reason is logged.
bool spawn(Run& r, const std::string& path, const Event& e, const std::string& json) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) {
    log_warning("hook {}: cannot run it for seq {}: pipe: {}", r.hook, r.seq, std::strerror(errno));
    return false;
  }
  if (::pipe2(out, O_CLOEXEC) != 0) {
    log_warning("hook {}: cannot run it for seq {}: pipe: {}", r.hook, r.seq, std::strerror(errno));
    ::close(in[0]);
    ::close(in[1]);
    return false;
  }
  std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                  "STORWATCH_HOOK=" + r.hook, "STORWATCH_MESSAGE=" + event_to_line(e)};
  for (auto& [k, v] : event_fields(e)) env.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string arg0 = path;
  char* argv[] = {arg0.data(), nullptr};

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  // A process group of its own (killed as a whole at the timeout), with default signal handling
  // and nothing blocked whatever the daemon ignores or blocks.
  posix_spawnattr_setpgroup(&at, 0);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &all);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, path.c_str(), &fa, &at, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    log_warning("hook {}: cannot run it for seq {}: {}", r.hook, r.seq, std::strerror(rc));
    return false;
  }
  r.pid = pid;
  r.in = in[1];
  r.out = out[0];
  ::fcntl(r.in, F_SETFL, O_NONBLOCK);
  ::fcntl(r.out, F_SETFL, O_NONBLOCK);
  r.pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  r.input = json;
  r.input.push_back('\n');
  return true;
}

void drain(Run& r, size_t max) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(r.out, buf, sizeof buf);
    if (n > 0) {
      size_t keep = std::min(static_cast<size_t>(n), max > r.output.size() ? max - r.output.size() : 0);
      r.output.append(buf, keep);
      r.output_dropped += static_cast<size_t>(n) - keep;
      continue;
    }
    if (n == 0) close_fd(r.out);
    return;  // EOF, EAGAIN or an error
  }
}

void finish(Run& r, int status, std::chrono::milliseconds timeout) {
  while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == ' ')) r.output.pop_back();
  std::string out = r.output.empty() ? "" : ": " + r.output;
  if (r.output_dropped) out += fmt::format(" [{} more bytes]", r.output_dropped);
  if (r.termed)
    log_warning("hook {}: seq {}: timed out after {} ms; {} ({}){}", r.hook, r.seq, timeout.count(),
                r.killed ? "killed with SIGKILL" : "stopped with SIGTERM", describe(status), out);
  else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    log_info("hook {}: seq {}: {}{}", r.hook, r.seq, describe(status), out);
  else
    log_warning("hook {}: seq {}: {}{}", r.hook, r.seq, describe(status), out);
  close_fd(r.in);
  close_fd(r.out);
  close_fd(r.pidfd);
}

}  // namespace

Result<size_t> HookSink::deliver(std::span<const EventPtr> events) {
  std::deque<std::pair<const Hook*, const BusEvent*>> pending;
  std::vector<Hook> hs = hooks();  // a copy: a rescan during this delivery must not move them
  for (const auto& e : events)
    for (const auto& h : hs)
      if (hook_selects(h.name, e->event.type)) pending.emplace_back(&h, e.get());
  std::vector<Run> running;
  const size_t slots = std::max<size_t>(options_.concurrency, 1);

  while (!pending.empty() || !running.empty()) {
    while (!pending.empty() && running.size() < slots) {
      auto [h, e] = pending.front();
      pending.pop_front();
      Run r;
      r.hook = h->name;
      r.seq = e->event.seq;
      if (!spawn(r, h->path, e->event, e->json)) continue;
      r.deadline = Clock::now() + options_.timeout;
      running.push_back(std::move(r));
    }
    if (running.empty()) continue;

    std::vector<pollfd> fds;
    std::vector<std::pair<size_t, int>> owner;  // (run index, which: 0 pidfd, 1 out, 2 in)
    auto now = Clock::now();
    Clock::time_point wake = Clock::time_point::max();
    for (size_t i = 0; i < running.size(); ++i) {
      Run& r = running[i];
      if (r.pidfd >= 0) fds.push_back({r.pidfd, POLLIN, 0}), owner.emplace_back(i, 0);
      if (r.out >= 0) fds.push_back({r.out, POLLIN, 0}), owner.emplace_back(i, 1);
      if (r.in >= 0) fds.push_back({r.in, POLLOUT, 0}), owner.emplace_back(i, 2);
      wake = std::min(wake, r.termed ? r.kill_at : r.deadline);
      // Without a pidfd (kernels before 5.3) the exit is checked at least every 100 ms.
      if (r.pidfd < 0) wake = std::min(wake, now + std::chrono::milliseconds(100));
    }
    auto ms = wake == Clock::time_point::max()
                  ? -1
                  : static_cast<int>(std::max<int64_t>(
                        0, std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1));
    int n = ::poll(fds.data(), fds.size(), ms);
    if (n < 0 && errno != EINTR) return fail_errno(errno, "hooks: poll");
    for (size_t k = 0; n > 0 && k < fds.size(); ++k) {
      if (!fds[k].revents) continue;
      Run& r = running[owner[k].first];
      if (owner[k].second == 1) {
        drain(r, options_.output_max);
      } else if (owner[k].second == 2) {
        if (fds[k].revents & (POLLERR | POLLHUP)) {
          close_fd(r.in);  // the hook closed its stdin: it does not want the event there
          continue;
        }
        ssize_t w = ::write(r.in, r.input.data() + r.written, r.input.size() - r.written);
        if (w > 0) r.written += static_cast<size_t>(w);
        if (r.written >= r.input.size() || (w < 0 && errno != EAGAIN && errno != EINTR)) close_fd(r.in);
      }
    }
    now = Clock::now();
    for (size_t i = 0; i < running.size();) {
      Run& r = running[i];
      int status = 0;
      pid_t w = ::waitpid(r.pid, &status, WNOHANG);
      if (w == r.pid) {
        if (r.out >= 0) drain(r, options_.output_max);
        finish(r, status, options_.timeout);
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      if (!r.termed && now >= r.deadline) {
        ::kill(-r.pid, SIGTERM);
        r.termed = true;
        r.kill_at = now + options_.kill_grace;
      } else if (r.termed && !r.killed && now >= r.kill_at) {
        ::kill(-r.pid, SIGKILL);
        r.killed = true;
        r.kill_at = Clock::time_point::max();
      }
      ++i;
    }
  }
  return events.size();
}

}  // namespace storwatch::daemon
