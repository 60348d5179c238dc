// Server: the Varlink endpoint on a Unix stream socket. It owns the connections, enforces the
// documented limits, answers org.varlink.service itself, and hands io.storwatch calls to a Service
// (the Manager). A subscription streams events from a bounded bus queue; the socket is written
// only as fast as the client reads, so a stuck client loses events (stream.lost), never memory.
// Loop-thread only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "base/fd.h"
#include "base/result.h"
#include "daemon/bus/bus.h"
#include "daemon/loop/event_loop.h"
#include "daemon/view/peer_identity.h"
#include "proto/varlink.h"

namespace storwatch::daemon {

struct Peer {
  pid_t pid = 0;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  std::vector<gid_t> groups;  // supplementary groups at connect() (SO_PEERGROUPS), for the policy
  int pidfd = -1;             // SO_PEERPIDFD, owned by the connection; -1 when the kernel has none
  MountNsId mnt_ns;           // the client's mount namespace; unknown when it cannot be read
};

struct ServerLimits {
  size_t max_clients = 1024;               // connections at once
  size_t max_clients_per_uid = 128;        // connections of one uid at once (uid 0 included)
  size_t max_message = 64 * 1024;          // bytes per request
  size_t max_subscriptions_per_process = 32;
  size_t queue_events = 4096;              // events queued per subscriber before stream.lost
  size_t max_output = 4 * 1024 * 1024;     // unread reply bytes before a client is dropped
  // Token bucket per connection: a connection may send request_burst calls at once, then
  // requests_per_second on average; beyond that it is dropped. 0 turns the limit off.
  size_t requests_per_second = 200;
  size_t request_burst = 400;
};

// An error reply as the protocol carries it: a Varlink error name and its parameters. This is the
// protocol boundary's own error type; everything below it uses Result/Error.
struct VarlinkError {
  std::string name;
  nlohmann::json parameters = nlohmann::json::object();
};
template <class T>
using Reply = tl::expected<T, VarlinkError>;
inline tl::unexpected<VarlinkError> reply_error(std::string name, nlohmann::json parameters) {
  return tl::unexpected<VarlinkError>(VarlinkError{std::move(name), std::move(parameters)});
}

class Service {
 public:
  virtual ~Service() = default;
  // An io.storwatch call other than Subscribe ("ListRules"); the reply parameters.
  [[nodiscard]] virtual Reply<nlohmann::json> call(const Peer& peer, const std::string& method,
                                                   const nlohmann::json& parameters) = 0;
  struct Stream {
    Subscriber::Filter filter;
    nlohmann::json first_reply;  // parameters of the confirming first reply
    // Replay (Subscribe with `after`): returns up to `max` events with seq > `after`, in order, or
    // an empty page once every event published so far was returned. Until then the stream is not
    // attached to the bus; it attaches on the loop thread right after the empty page, so the switch
    // from replayed to live events has no gap and no duplicate. Null: live events only.
    std::function<Result<std::vector<EventPtr>>(uint64_t after, size_t max)> fetch;
    uint64_t after = 0;
    // The client's view of each event, replayed or live (policy redaction, mount-namespace
    // paths): the same pointer when unchanged. Null: events as published.
    std::function<EventPtr(const EventPtr&)> present;
  };
  [[nodiscard]] virtual Reply<Stream> subscribe(const Peer& peer, const nlohmann::json& parameters) = 0;
  // Extra fields for every streamed event reply (journal_id, journaled_seq).
  virtual nlohmann::json stream_reply_fields() const = 0;
};

class Server {
 public:
  // Takes a listening socket (bound by us or passed by systemd).
  [[nodiscard]] static Result<std::unique_ptr<Server>> create(EventLoop& loop, Bus& bus,
                                                              Service& service, UniqueFd listener,
                                                              ServerLimits limits);
  ~Server();

  // Binds and listens on a Unix socket path (removing a stale socket file; creating the parent
  // directory 0755). Mode 0666: who may do what is decided per call from peer credentials.
  [[nodiscard]] static Result<UniqueFd> listen_unix(const std::string& path);

  void set_limits(const ServerLimits& limits) { limits_ = limits; }
  size_t connection_count() const { return conns_.size(); }
  size_t subscription_count() const;

  // What the connections hold in memory now (status output; tests of the bounds above).
  struct Stats {
    size_t connections = 0;
    size_t subscriptions = 0;
    size_t max_queued_events = 0;  // the longest subscriber queue (events not yet serialised)
    size_t max_output_bytes = 0;   // the most reply bytes waiting for one client to read
  };
  Stats stats() const;

 private:
  struct Conn;
  Server(EventLoop& loop, Bus& bus, Service& service, UniqueFd listener, ServerLimits limits);
  void on_accept();
  void on_readable(Conn& c);
  void on_writable(Conn& c);
  void handle_message(Conn& c, const std::string& msg);
  void handle_call(Conn& c, const proto::Call& call);
  void start_stream(Conn& c, const proto::Call& call);
  void send(Conn& c, std::string data);
  void send_error(Conn& c, std::string_view name, const nlohmann::json& params);
  void fail_and_close(Conn& c, std::string_view name, const nlohmann::json& params);
  void flush(Conn& c);
  void pump_stream(Conn& c);
  void attach(Conn& c);
  void mark_dirty(int fd);
  void close_conn(int fd);
  void update_interest(Conn& c);
  bool take_request_token(Conn& c);
  bool drain_calls(Conn& c);
  void pause_accepting();

  EventLoop& loop_;
  Bus& bus_;
  Service& service_;
  UniqueFd listener_;
  ServerLimits limits_;
  std::map<int, std::unique_ptr<Conn>> conns_;
  std::map<pid_t, size_t> subs_per_pid_;
  std::map<uid_t, size_t> conns_per_uid_;
  uint64_t next_conn_id_ = 1;
  bool accept_paused_ = false;
  std::set<int> dirty_;
  bool flush_posted_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace storwatch::daemon
