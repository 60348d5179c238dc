// storwatchd: parse arguments -> load config -> Manager::create -> READY=1 -> loop -> STOPPING=1.
// Runs in the foreground and logs to stderr (systemd Type=notify); never daemonizes.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <iostream>

#include "base/log.h"
#include "daemon/config/config.h"
#include "daemon/manager.h"
#include "daemon/server/server.h"
#include "daemon/sink/metrics_server.h"

using namespace storwatch;
using namespace storwatch::daemon;

namespace {

struct Args {
  std::string config = kDefaultConfigPath;
  bool config_given = false;
  std::string socket;
  std::string state_dir;
  std::string metrics;
  bool print = false;
  bool print_default = false;
  bool check = false;
  std::string log_level = "info";
};

Result<Config> load(const Args& a) {
  auto c = load_config(a.config, !a.config_given);
  if (!c) return c;
  if (!a.socket.empty()) c->socket = a.socket;
  if (!a.state_dir.empty()) c->state_dir = a.state_dir;
  if (!a.metrics.empty()) {
    if (auto m = parse_listen_address(a.metrics); !m) return fail(m.error());
    c->metrics_listen = a.metrics;
  }
  return c;
}

// Each client holds a socket. Raises the soft RLIMIT_NOFILE to what limits.clients needs, and the
// hard limit too when allowed (CAP_SYS_RESOURCE); never lowers either. Without the capability the
// soft limit stops at the hard one, and the log says how many clients that leaves room for.
void raise_fd_limit(size_t max_clients) {
  constexpr rlim_t kOwnFds = 256;  // sources, journal, sinks, statfs workers
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t need = 2 * static_cast<rlim_t>(max_clients) + kOwnFds;  // a socket and a pidfd each
  if (rl.rlim_cur >= need) return;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    rlimit more{need, need};
    if (setrlimit(RLIMIT_NOFILE, &more) == 0) return;
  }
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? need : std::min(need, rl.rlim_max);
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    log_warning("raising the file descriptor limit to {}: {}", rl.rlim_cur, std::strerror(errno));
    return;
  }
  if (rl.rlim_cur < need)
    log_warning("file descriptor limit {} (hard) is too low for limits.clients = {}: about {} clients fit; "
                "raise LimitNOFILE= or lower limits.clients",
                rl.rlim_max, max_clients, rl.rlim_cur > kOwnFds ? (rl.rlim_cur - kOwnFds) / 2 : 0);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{
      "storwatchd: tells applications and administrators what happens to their storage the moment it\n"
      "happens. Runs in the foreground; serves the Varlink interface io.storwatch on a Unix socket.",
      "storwatchd"};
  app.add_option("--config", a.config,
                 "configuration file (TOML); without this option " + std::string(kDefaultConfigPath) +
                     " is read if it exists, else the embedded default applies")
      ->each([&](const std::string&) { a.config_given = true; });
  app.add_option("--socket", a.socket, "Varlink socket path (default: from the config, " +
                                           std::string(kDefaultSocketPath) + ")");
  app.add_option("--state-dir", a.state_dir,
                 "state directory: rules set at runtime, levels crossed, sequence numbers (default: from "
                 "the config, " + std::string(kDefaultStateDir) + ")");
  app.add_option("--metrics", a.metrics,
                 "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9639 (default: from the "
                 "config, [metrics] listen; off when empty)")
      ->type_name("ADDR");
  app.add_flag("--print", a.print, "also print each event as a readable line on stdout");
  app.add_flag("--print-default-config", a.print_default, "print the embedded default configuration and exit");
  app.add_flag("--check-config", a.check, "check the configuration and exit (status 0 when valid)");
  app.add_option("--log-level", a.log_level, "debug, info, warning or error (default: info)")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  app.set_version_flag("--version", std::string("storwatchd ") + STORWATCH_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (a.print_default) {
    std::fwrite(kDefaultConfig.data(), 1, kDefaultConfig.size(), stdout);
    return 0;
  }
  set_log_level(a.log_level == "debug"     ? LogLevel::debug
                : a.log_level == "warning" ? LogLevel::warning
                : a.log_level == "error"   ? LogLevel::error
                                           : LogLevel::info);

  auto config = load(a);
  if (!config) {
    log_error("{}", config.error().message());
    return 1;
  }
  if (a.check) {
    std::printf("configuration ok\n");
    return 0;
  }

  // Signals arrive through a signalfd on the loop, so handlers never race the loop.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  UniqueFd sigfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd) {
    log_error("signalfd: {}", std::strerror(errno));
    return 1;
  }

  raise_fd_limit(config->limits.max_clients);

  Manager::Deps deps;
  int n = sd_listen_fds(1);
  if (n > 1) {
    log_error("expected one socket from systemd, got {}", n);
    return 1;
  }
  if (n == 1) {
    deps.listener = UniqueFd(SD_LISTEN_FDS_START);
  } else {
    // Claim the socket before the state directory is opened: a second storwatchd must be turned
    // away before it touches the journal of the one already running (it would record that one's
    // reserved sequence numbers as lost, under a number that one is about to use).
    auto l = Server::listen_unix(config->socket);
    if (!l) {
      log_error("starting: {}", l.error().message());
      return 1;
    }
    deps.listener = std::move(*l);
  }

  auto manager = Manager::create(*config, Manager::Options{a.print}, std::move(deps));
  if (!manager) {
    log_error("starting: {}", manager.error().message());
    return 1;
  }
  Manager& m = **manager;
  int sfd = sigfd.get();
  auto r = m.loop().add_fd(sfd, EPOLLIN, [&](uint32_t) {
    signalfd_siginfo si{};
    while (::read(sfd, &si, sizeof si) == sizeof si) {
      if (si.ssi_signo == SIGHUP) {
        sd_notify(0, "RELOADING=1");
        auto c = load(a);
        if (c) {
          raise_fd_limit(c->limits.max_clients);
          m.reload(std::move(*c));
          log_info("configuration reloaded");
        } else {
          log_error("reload: {} (keeping the previous configuration)", c.error().message());
        }
        sd_notify(0, "READY=1");
      } else {
        m.loop().stop();
      }
    }
  });
  if (!r) {
    log_error("{}", r.error().message());
    return 1;
  }
  log_info("storwatchd {} listening on {} (state in {})", STORWATCH_VERSION, config->socket, config->state_dir);
  sd_notify(0, "READY=1\nSTATUS=watching storage");
  m.loop().run();
  sd_notify(0, "STOPPING=1");
  log_info("storwatchd stopping");
  m.shutdown();
  // Statfs workers stuck in a hung filesystem are not waited for: they end with the process.
  manager->reset();
  std::fflush(stdout);
  return 0;
}
