#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <system_error>

#include <fmt/format.h>

#include "cli/commands.h"

namespace storwatch::cli {

int report(const Error& e) {
  fmt::print(stderr, "storwatch: {}\n", e.message());
  return kExitError;
}

int usage_error(std::string_view message) {
  fmt::print(stderr, "storwatch: {}\nRun with --help for more information.\n", message);
  return kExitUsage;
}

std::optional<Client> connect(const GlobalOptions& g) {
  std::string path = g.socket.empty() ? default_socket_path() : g.socket;
  auto c = Client::connect(path);
  if (c) return std::move(*c);
  const Error& e = c.error();
  if (e.errno_value() == ENOENT || e.errno_value() == ECONNREFUSED) {
    fmt::print(stderr, "storwatch: {} (is storwatchd running? set --socket or STORWATCH_SOCKET)\n",
               e.message());
  } else {
    report(e);
  }
  return std::nullopt;
}

std::optional<std::string> existing_path(const std::string& path, std::string_view option) {
  std::unique_ptr<char, decltype(&::free)> resolved(::realpath(path.c_str(), nullptr), &::free);
  if (!resolved) {
    int err = errno;
    usage_error(fmt::format("{} {}: {}", option, path, std::system_category().message(err)));
    return std::nullopt;
  }
  return std::string(resolved.get());
}

std::string absolute_path(const std::string& path) {
  std::unique_ptr<char, decltype(&::free)> resolved(::realpath(path.c_str(), nullptr), &::free);
  if (resolved) return resolved.get();
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  if (ec) return path;  // no working directory: let the daemon refuse the relative path
  return abs.lexically_normal().string();
}

std::optional<Severity> severity_from_name(std::string_view name) {
  for (Severity s : {Severity::info, Severity::warning, Severity::error, Severity::critical})
    if (severity_name(s) == name) return s;
  return std::nullopt;
}

std::pair<std::string, std::string> split_level(const std::string& spec) {
  auto colon = spec.rfind(':');
  if (colon == std::string::npos) return {spec, ""};
  return {spec.substr(0, colon), spec.substr(colon + 1)};
}

void print_json_line(const nlohmann::json& j) {
  // replace: a daemon bug sending invalid UTF-8 must not abort the stream with an exception.
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  s.push_back('\n');
  print_text(s);
}

void print_json(const nlohmann::json& j) {
  std::string s = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  s.push_back('\n');
  print_text(s);
}

void print_text(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  // Flushed per record so `storwatch monitor | consumer` sees each event as it happens.
  std::fflush(stdout);
}

namespace {

class SignalFd {
 public:
  // Blocks SIGINT and SIGTERM and makes them readable on a descriptor, so the event loop stops
  // between two events instead of in the middle of printing one.
  SignalFd() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigprocmask(SIG_BLOCK, &set_, nullptr);
    fd_ = ::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK);
  }
  ~SignalFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  SignalFd(const SignalFd&) = delete;
  SignalFd& operator=(const SignalFd&) = delete;
  int fd() const { return fd_; }

 private:
  sigset_t set_;
  int fd_ = -1;
};

void print_event(const Event& e, bool json) {
  if (json)
    print_json_line(event_to_json(e));
  else
    print_text(event_to_line(e) + "\n");
}

}  // namespace

int print_stream(Subscription& sub, bool json) {
  SignalFd signals;
  if (signals.fd() < 0) return report(Error::from_errno(errno, "signalfd"));
  for (;;) {
    // read() first: events (or the end) may have arrived with the first reply already.
    auto r = sub.read();
    while (auto e = sub.next()) print_event(*e, json);
    if (!r) return report(r.error());

    pollfd fds[2] = {{sub.fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return report(Error::from_errno(errno, "poll"));
    }
    if (fds[1].revents != 0) return kExitOk;
  }
}

}  // namespace storwatch::cli
