#include "daemon/server/server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <fmt/format.h>

#include "base/log.h"

namespace storwatch::daemon {

using nlohmann::json;

namespace {

constexpr size_t kReadChunk = 64 * 1024;
constexpr int kReadsPerWake = 4;
// Calls handled per connection per loop turn: a client that pipelines hundreds of calls waits
// between batches while the other clients are served, instead of holding the loop for all of them.
constexpr int kCallsPerTurn = 8;
// Stop reading a client's requests while this many reply bytes wait for it to read.
constexpr size_t kReadPauseOutput = 1024 * 1024;
// A subscription is refilled from its queue only while less than this is waiting in the socket
// buffer of ours, so a slow reader leaves events in the bounded queue (and loses them there).
constexpr size_t kStreamOutputLow = 256 * 1024;
// A client being dropped gets this long to read its error reply; one that does not read is not
// allowed to keep its connection (and its slot) by never reading.
constexpr std::chrono::milliseconds kCloseLinger{1000};
// Out of descriptors: stop accepting for this long instead of spinning on a listener that stays
// readable; the clients wait in the backlog meanwhile.
constexpr std::chrono::milliseconds kAcceptPause{100};

constexpr const char* kVarlinkServiceDescription = R"(# The Varlink Service Interface is provided by every varlink service. It
# describes the service and the interfaces it implements.
interface org.varlink.service

# Get a list of all the interfaces a service provides and information
# about the implementation.
method GetInfo() -> (
  vendor: string,
  product: string,
  version: string,
  url: string,
  interfaces: []string
)

# Get the description of an interface that is implemented by this service.
method GetInterfaceDescription(interface: string) -> (description: string)

# The requested interface was not found.
error InterfaceNotFound (interface: string)

# The requested method was not found
error MethodNotFound (method: string)

# The interface defines the requested method, but the service does not
# implement it.
error MethodNotImplemented (method: string)

# One of the passed parameters is invalid.
error InvalidParameter (parameter: string)

# Client is denied access
error PermissionDenied ()

# Method is expected to be called with 'more' set to true, but wasn't
error ExpectedMore ()
)";

}  // namespace

struct Server::Conn {
  UniqueFd fd;
  uint64_t id = 0;  // fds are reused; timers name a connection by id
  Peer peer;
  UniqueFd pidfd;  // peer.pidfd
  double tokens = 0;  // request_burst at accept, refilled at requests_per_second
  MonoTime refilled{};
  proto::MessageReader reader;
  std::string out;
  size_t out_off = 0;
  bool closing = false;  // close once `out` is written
  bool streaming = false;
  std::shared_ptr<Subscriber> sub;  // null while catching up from the journal
  Subscriber::Filter filter;
  std::function<EventPtr(const EventPtr&)> present;  // the client's view of each event, or null
  std::function<Result<std::vector<EventPtr>>(uint64_t, size_t)> fetch;
  uint64_t cursor = 0;  // the last seq replayed
  uint32_t interest = 0;
  std::deque<std::string> calls;  // read but not handled yet: the socket is not read meanwhile
  bool drain_posted = false;
  explicit Conn(size_t max_message) : reader(max_message) {}
  size_t pending() const { return out.size() - out_off; }
};

Server::Server(EventLoop& loop, Bus& bus, Service& service, UniqueFd listener, ServerLimits limits)
    : loop_(loop), bus_(bus), service_(service), listener_(std::move(listener)), limits_(limits) {}

Server::~Server() {
  *alive_ = false;
  for (auto& [fd, c] : conns_) loop_.remove_fd(fd);
  if (listener_) loop_.remove_fd(listener_.get());
}

Result<UniqueFd> Server::listen_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    return fail_invalid(fmt::format("socket path \"{}\" is empty or longer than {} bytes", path,
                                    sizeof addr.sun_path - 1));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST)
      return fail_errno(errno, fmt::format("creating {}", dir));
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fail_errno(errno, "socket");
  // A socket file left by a crashed daemon is stale if nobody accepts on it; a live one is not ours.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return fail_errno(EEXIST, fmt::format("{} exists and is not a socket", path));
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
      return fail_errno(EADDRINUSE, fmt::format("another storwatchd is listening on {}", path));
    ::unlink(path.c_str());
  }
  mode_t old = ::umask(0);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc < 0) return fail_errno(errno, fmt::format("binding {}", path));
  ::chmod(path.c_str(), 0666);
  if (::listen(fd.get(), 128) < 0) return fail_errno(errno, fmt::format("listening on {}", path));
  return fd;
}

Result<std::unique_ptr<Server>> Server::create(EventLoop& loop, Bus& bus, Service& service,
                                               UniqueFd listener, ServerLimits limits) {
  int lfd = listener.get();
  int flags = ::fcntl(lfd, F_GETFL);
  if (flags >= 0) ::fcntl(lfd, F_SETFL, flags | O_NONBLOCK);
  std::unique_ptr<Server> s(new Server(loop, bus, service, std::move(listener), limits));
  Server* raw = s.get();
  auto r = loop.add_fd(lfd, EPOLLIN, [raw](uint32_t) { raw->on_accept(); });
  if (!r) return fail(r.error());
  return s;
}

Server::Stats Server::stats() const {
  Stats s;
  for (const auto& [fd, c] : conns_) {
    ++s.connections;
    if (c->streaming) ++s.subscriptions;
    if (c->sub) s.max_queued_events = std::max(s.max_queued_events, c->sub->queued());
    s.max_output_bytes = std::max(s.max_output_bytes, c->pending());
  }
  return s;
}

size_t Server::subscription_count() const {
  size_t n = 0;
  for (const auto& [fd, c] : conns_) n += c->streaming ? 1 : 0;
  return n;
}

void Server::on_accept() {
  // Best effort: tell the client why before closing; never block on it.
  auto refuse = [](int fd, std::string_view limit, size_t max) {
    std::string e = proto::encode_error(proto::errors::kLimitExceeded, {{"limit", limit}, {"max", max}});
    ssize_t ignored = ::send(fd, e.data(), e.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)ignored;
  };
  for (;;) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        log_warning("accept: {}: not accepting clients for {} ms (clients: {}; see RLIMIT_NOFILE)",
                    std::strerror(errno), kAcceptPause.count(), conns_.size());
        pause_accepting();
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        log_warning("accept: {}", std::strerror(errno));
      }
      return;
    }
    if (conns_.size() >= limits_.max_clients) {
      refuse(fd.get(), "clients", limits_.max_clients);
      continue;
    }
    auto c = std::make_unique<Conn>(limits_.max_message);
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      c->peer.pid = cred.pid;
      c->peer.uid = cred.uid;
      c->peer.gid = cred.gid;
    }
    // One uid must not take every slot from the others (a container sharing the socket); checked
    // before the costlier look at the peer below.
    if (auto it = conns_per_uid_.find(c->peer.uid);
        it != conns_per_uid_.end() && it->second >= limits_.max_clients_per_uid) {
      refuse(fd.get(), "clients_per_uid", limits_.max_clients_per_uid);
      continue;
    }
    // Beyond the ids: groups for the policy; a pidfd and the mount namespace for namespace views.
    c->peer.groups = peer_groups(fd.get());
    c->pidfd = peer_pidfd(fd.get());
    c->peer.pidfd = c->pidfd.get();
    if (auto ns = mount_ns_of(c->peer.pidfd, c->peer.pid)) c->peer.mnt_ns = *ns;
    c->id = next_conn_id_++;
    c->tokens = static_cast<double>(limits_.request_burst);
    c->refilled = loop_.clock().now();
    int cfd = fd.get();
    c->fd = std::move(fd);
    c->interest = EPOLLIN;
    auto r = loop_.add_fd(cfd, EPOLLIN, [this, cfd](uint32_t ev) {
      auto it = conns_.find(cfd);
      if (it == conns_.end()) return;
      Conn& conn = *it->second;
      if (ev & EPOLLOUT) on_writable(conn);
      if (conns_.count(cfd) && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(*conns_[cfd]);
    });
    if (!r) {
      log_warning("watching client socket: {}", r.error().message());
      continue;
    }
    ++conns_per_uid_[c->peer.uid];
    conns_[cfd] = std::move(c);
  }
}

void Server::pause_accepting() {
  if (accept_paused_) return;
  accept_paused_ = true;
  (void)loop_.modify_fd(listener_.get(), 0);
  std::weak_ptr<bool> alive = alive_;
  loop_.add_timer_after(kAcceptPause, [this, alive] {
    if (!alive.lock()) return;
    accept_paused_ = false;
    (void)loop_.modify_fd(listener_.get(), EPOLLIN);
  });
}

bool Server::take_request_token(Conn& c) {
  if (limits_.requests_per_second == 0) return true;
  MonoTime now = loop_.clock().now();
  double elapsed = std::chrono::duration<double>(now - c.refilled).count();
  c.refilled = now;
  c.tokens = std::min(static_cast<double>(std::max<size_t>(limits_.request_burst, 1)),
                      c.tokens + elapsed * static_cast<double>(limits_.requests_per_second));
  if (c.tokens < 1) return false;
  c.tokens -= 1;
  return true;
}

void Server::on_readable(Conn& c) {
  int fd = c.fd.get();
  char buf[kReadChunk];
  // A few reads per wake-up, not "until EAGAIN": a client that writes as fast as we read must
  // not keep the loop from everyone else (epoll is level-triggered: the rest comes next turn).
  if (!c.calls.empty()) return;  // the posted drain_calls() handles those first
  for (int reads = 0; reads < kReadsPerWake; ++reads) {
    if (c.closing) return;
    if (c.pending() > kReadPauseOutput) break;  // backpressure: read again once the client reads
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) {
      close_conn(fd);
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close_conn(fd);
      return;
    }
    if (auto r = c.reader.feed(buf, static_cast<size_t>(n)); !r) {
      fail_and_close(c, proto::errors::kLimitExceeded,
                     {{"limit", "message_bytes"}, {"max", limits_.max_message}});
      return;
    }
    while (auto msg = c.reader.next()) c.calls.push_back(std::move(*msg));
    if (!drain_calls(c)) return;
  }
  update_interest(c);
}

bool Server::drain_calls(Conn& c) {
  int fd = c.fd.get();
  for (int i = 0; i < kCallsPerTurn && !c.calls.empty(); ++i) {
    std::string msg = std::move(c.calls.front());
    c.calls.pop_front();
    handle_message(c, msg);
    if (!conns_.count(fd) || c.closing) return false;
  }
  if (c.calls.empty()) return true;
  if (!c.drain_posted) {
    c.drain_posted = true;
    uint64_t id = c.id;
    std::weak_ptr<bool> alive = alive_;
    loop_.post([this, alive, fd, id] {
      if (!alive.lock()) return;
      auto it = conns_.find(fd);
      if (it == conns_.end() || it->second->id != id) return;
      Conn& conn = *it->second;
      conn.drain_posted = false;
      if (!conn.closing && drain_calls(conn)) update_interest(conn);
    });
  }
  update_interest(c);
  return false;
}

void Server::handle_message(Conn& c, const std::string& msg) {
  if (!take_request_token(c)) {
    log_debug("client pid {} uid {} sends more than {} requests/s; dropping it", c.peer.pid, c.peer.uid,
              limits_.requests_per_second);
    fail_and_close(c, proto::errors::kLimitExceeded,
                   {{"limit", "requests_per_second"}, {"max", limits_.requests_per_second}});
    return;
  }
  if (c.streaming) {
    fail_and_close(c, proto::errors::kInvalidParameter,
                   {{"parameter", "method"}, {"reason", "this connection is streaming a subscription"}});
    return;
  }
  auto call = proto::parse_call(msg);
  if (!call) {
    fail_and_close(c, proto::errors::kInvalidParameter,
                   {{"parameter", "message"}, {"reason", call.error().message()}});
    return;
  }
  handle_call(c, *call);
}

void Server::handle_call(Conn& c, const proto::Call& call) {
  const std::string& m = call.method;
  auto reply = [&](json params) {
    if (call.oneway) return;
    proto::Reply r;
    r.parameters = std::move(params);
    send(c, proto::encode_reply(r));
  };
  // A oneway call gets no reply at all, not even an error: one would be read as the reply to the
  // client's next call.
  auto error = [&](std::string_view name, const json& params) {
    if (!call.oneway) send_error(c, name, params);
  };
  if (m == "org.varlink.service.GetInfo") {
    reply({{"vendor", "storwatch"}, {"product", "storwatchd"}, {"version", STORWATCH_VERSION},
           {"url", "https://storwatch.invalid/"},
           {"interfaces", {"org.varlink.service", std::string(proto::kInterface)}}});
    return;
  }
  if (m == "org.varlink.service.GetInterfaceDescription") {
    auto it = call.parameters.find("interface");
    std::string iface = it != call.parameters.end() && it->is_string() ? it->get<std::string>() : "";
    if (iface == proto::kInterface)
      reply({{"description", std::string(proto::interface_description())}});
    else if (iface == "org.varlink.service")
      reply({{"description", kVarlinkServiceDescription}});
    else
      error(proto::errors::kInterfaceNotFound, {{"interface", iface}});
    return;
  }
  std::string prefix = std::string(proto::kInterface) + ".";
  if (m.rfind("org.varlink.service.", 0) == 0) {
    error(proto::errors::kMethodNotFound, {{"method", m}});
    return;
  }
  if (m.rfind(prefix, 0) != 0) {
    auto dot = m.rfind('.');
    error(proto::errors::kInterfaceNotFound,
          {{"interface", dot == std::string::npos ? m : m.substr(0, dot)}});
    return;
  }
  std::string name = m.substr(prefix.size());
  if (name == "Subscribe") {
    if (call.oneway) return;  // a stream nobody may answer is no stream
    if (!call.more) {
      send_error(c, proto::errors::kExpectedMore, json::object());
      return;
    }
    start_stream(c, call);
    return;
  }
  auto r = service_.call(c.peer, name, call.parameters);
  if (!r) {
    error(r.error().name, r.error().parameters);
    return;
  }
  reply(std::move(*r));
}

void Server::start_stream(Conn& c, const proto::Call& call) {
  size_t& n = subs_per_pid_[c.peer.pid];
  if (n >= limits_.max_subscriptions_per_process) {
    // Not dropped: a refused Subscribe holds nothing, and the client may retry on this connection
    // once one of its streams ends.
    send_error(c, proto::errors::kLimitExceeded,
               {{"limit", "subscriptions_per_process"}, {"max", limits_.max_subscriptions_per_process}});
    return;
  }
  auto stream = service_.subscribe(c.peer, call.parameters);
  if (!stream) {
    send_error(c, stream.error().name, stream.error().parameters);
    return;
  }
  ++n;
  c.streaming = true;
  int fd = c.fd.get();
  c.filter = std::move(stream->filter);
  c.present = std::move(stream->present);
  if (stream->fetch) {
    c.fetch = std::move(stream->fetch);
    c.cursor = stream->after;
  } else {
    attach(c);
  }
  proto::Reply first;
  first.parameters = std::move(stream->first_reply);
  first.continues = true;
  send(c, proto::encode_reply(first));
  if (!conns_.count(fd)) return;  // send() dropped the client (hung up, or over max_output)
  pump_stream(c);
}

void Server::attach(Conn& c) {
  int fd = c.fd.get();
  std::weak_ptr<bool> alive = alive_;
  c.fetch = nullptr;
  c.sub = bus_.subscribe(limits_.queue_events, c.filter, [this, fd, alive] {
    if (alive.lock()) mark_dirty(fd);
  });
}

void Server::mark_dirty(int fd) {
  dirty_.insert(fd);
  if (flush_posted_) return;
  flush_posted_ = true;
  // Batch: one write per client per loop turn, however many events were published in it.
  std::weak_ptr<bool> alive = alive_;
  loop_.post([this, alive] {
    if (!alive.lock()) return;
    flush_posted_ = false;
    std::set<int> batch;
    batch.swap(dirty_);
    for (int dirty_fd : batch) {
      auto it = conns_.find(dirty_fd);
      if (it != conns_.end()) pump_stream(*it->second);
    }
  });
}

void Server::pump_stream(Conn& c) {
  if (!c.streaming || c.closing) return;
  json extra = service_.stream_reply_fields();
  std::string tail = extra.dump(-1, ' ', false, json::error_handler_t::replace);
  // tail is "{...}"; each reply is {"parameters":{"event":EVENT,<extra fields>},"continues":true}
  std::string extra_fields = tail.size() > 2 ? "," + tail.substr(1, tail.size() - 2) : "";
  auto append = [&](const EventPtr& published) {
    EventPtr e = c.present ? c.present(published) : published;
    if (!e) return;
    c.out.append("{\"parameters\":{\"event\":");
    c.out.append(e->json);
    c.out.append(extra_fields);
    c.out.append("},\"continues\":true}");
    c.out.push_back('\0');
  };
  int fd = c.fd.get();
  for (;;) {
    while (!c.sub && c.pending() < kStreamOutputLow) {
      auto page = c.fetch(c.cursor, 256);
      if (!page) {
        fail_and_close(c, proto::errors::kInvalidParameter,
                       {{"parameter", "after"}, {"reason", "reading the journal: " + page.error().message()}});
        return;
      }
      if (page->empty()) {
        attach(c);  // everything published so far was replayed: live from here, on this turn
        break;
      }
      for (const auto& e : *page) {
        c.cursor = std::max(c.cursor, e->event.seq);
        // A gap in the journal concerns every subscriber, whatever its filter.
        if (e->event.type == "stream.lost" || !c.filter || c.filter(e->event)) append(e);
      }
    }
    while (c.sub && c.pending() < kStreamOutputLow) {
      EventPtr e = c.sub->pop();
      if (!e) break;
      append(e);
    }
    flush(c);
    if (!conns_.count(fd)) return;
    // Events are left only if the buffer reached kStreamOutputLow. If the socket then took it
    // all, no EPOLLOUT and no notify (the queue is not empty) would ever come: refill now.
    if (c.pending() >= kStreamOutputLow || (c.sub && c.sub->empty())) return;
  }
}

void Server::send(Conn& c, std::string data) {
  if (c.pending() + data.size() > limits_.max_output) {
    log_debug("client pid {} does not read its replies; dropping it", c.peer.pid);
    close_conn(c.fd.get());
    return;
  }
  c.out.append(data);
  flush(c);
}

void Server::send_error(Conn& c, std::string_view name, const json& params) {
  send(c, proto::encode_error(name, params));
}

void Server::fail_and_close(Conn& c, std::string_view name, const json& params) {
  int fd = c.fd.get();
  uint64_t id = c.id;
  send_error(c, name, params);
  if (!conns_.count(fd)) return;
  c.closing = true;
  flush(c);
  if (!conns_.count(fd)) return;
  std::weak_ptr<bool> alive = alive_;
  loop_.add_timer_after(kCloseLinger, [this, alive, fd, id] {
    if (!alive.lock()) return;
    auto it = conns_.find(fd);
    if (it != conns_.end() && it->second->id == id) close_conn(fd);
  });
}

void Server::flush(Conn& c) {
  int fd = c.fd.get();
  while (c.pending() > 0) {
    ssize_t n = ::send(fd, c.out.data() + c.out_off, c.pending(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close_conn(fd);
      return;
    }
    c.out_off += static_cast<size_t>(n);
  }
  if (c.out_off == c.out.size()) {
    c.out.clear();
    c.out_off = 0;
  } else if (c.out_off > (1u << 20)) {
    c.out.erase(0, c.out_off);
    c.out_off = 0;
  }
  if (c.closing && c.pending() == 0) {
    close_conn(fd);
    return;
  }
  update_interest(c);
}

void Server::on_writable(Conn& c) {
  int fd = c.fd.get();
  flush(c);
  if (!conns_.count(fd)) return;
  if (c.streaming && c.pending() < kStreamOutputLow) pump_stream(c);
}

void Server::update_interest(Conn& c) {
  uint32_t want = 0;
  if (!c.closing && c.pending() <= kReadPauseOutput && c.calls.empty()) want |= EPOLLIN;
  if (c.pending() > 0) want |= EPOLLOUT;
  // A streaming client that sends nothing must still be noticed when it hangs up. Not while
  // closing: on_readable() reads nothing then, so level-triggered EPOLLIN would spin.
  // (EPOLLHUP and EPOLLERR are reported whatever the interest.)
  if (c.streaming && !c.closing) want |= EPOLLIN;
  if (want != c.interest) {
    c.interest = want;
    (void)loop_.modify_fd(c.fd.get(), want);
  }
}

void Server::close_conn(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  if (it->second->streaming) {
    auto p = subs_per_pid_.find(it->second->peer.pid);
    if (p != subs_per_pid_.end() && --p->second == 0) subs_per_pid_.erase(p);
  }
  if (auto u = conns_per_uid_.find(it->second->peer.uid); u != conns_per_uid_.end() && --u->second == 0)
    conns_per_uid_.erase(u);
  loop_.remove_fd(fd);
  dirty_.erase(fd);
  conns_.erase(it);
}

}  // namespace storwatch::daemon
