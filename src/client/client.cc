#include <storwatch/client.h>

#include <poll.h>

#include <cstdlib>
#include <utility>

#include <fmt/format.h>

#include "client/connection.h"
#include "proto/filter.h"
#include "proto/varlink.h"

namespace storwatch {

using nlohmann::json;
using client::Connection;

std::string default_socket_path() {
  // secure_getenv: a library must not take a socket path from the environment of a setuid caller.
  const char* env = ::secure_getenv("STORWATCH_SOCKET");
  if (env && *env) return env;
  return std::string(kDefaultSocketPath);
}

namespace {

std::string qualify(std::string_view method) {
  // Unqualified names belong to io.storwatch; anything with a dot (org.varlink.service.GetInfo)
  // is sent as given.
  if (method.find('.') != std::string_view::npos) return std::string(method);
  return fmt::format("{}.{}", proto::kInterface, method);
}

json filter_json(const EventFilter& f) {
  proto::Filter pf;
  pf.types = f.types;
  pf.fs = f.fs;
  pf.min_severity = f.min_severity;
  pf.subtypes = f.subtypes;
  return proto::filter_to_json(pf);
}

Error bad_reply(std::string_view method, std::string_view what) {
  return Error(std::make_error_code(std::errc::bad_message),
               fmt::format("unexpected reply from storwatchd to {}: {}", method, what));
}

}  // namespace

// ---- Subscription ----

struct Subscription::Impl {
  Connection conn;
  std::deque<Event> events;
  std::string journal_id;
  uint64_t journaled_seq = 0;
  json mount_table = json::array();
  std::optional<Error> ended;  // sticky: the stream is over, and why

  explicit Impl(Connection c) : conn(std::move(c)) {}

  // Interprets one reply of the stream; sets `ended` when it ends the stream.
  void handle(const proto::Reply& reply) {
    if (!reply.error.empty()) {
      ended = client::reply_error(reply, "io.storwatch.Subscribe");
      return;
    }
    const json& p = reply.parameters;
    // Every reply carries the journal position; keep the newest for resuming.
    if (auto it = p.find("journaled_seq"); it != p.end() && it->is_number_unsigned())
      journaled_seq = it->get<uint64_t>();
    if (auto it = p.find("journal_id"); it != p.end() && it->is_string())
      journal_id = it->get<std::string>();
    if (auto it = p.find("mount_table"); it != p.end() && it->is_array()) mount_table = *it;
    if (auto it = p.find("event"); it != p.end() && !it->is_null()) {
      auto e = event_from_json(*it);
      if (!e) {
        // Dropping it would lose an event silently; end the stream and say why instead.
        ended = bad_reply("Subscribe", "an event this client cannot read: " + e.error().message());
        return;
      }
      events.push_back(std::move(*e));
    }
    if (!reply.continues)
      ended = Error(std::make_error_code(std::errc::connection_aborted),
                    "storwatchd ended the subscription");
  }

  // Interprets every complete message the reader holds, so none waits unseen while wait()
  // polls the socket.
  void drain() {
    while (!ended) {
      auto m = conn.next_message();
      if (!m) return;
      auto reply = proto::parse_reply(*m);
      if (!reply) {
        ended = client::malformed_reply_error(reply.error());
        return;
      }
      handle(*reply);
    }
  }

  // Reads and interprets what the socket has, without blocking.
  void pump() {
    if (ended) return;
    // Bounded per call so a fast daemon cannot make one read() buffer without limit; the fd
    // stays readable and the caller comes back.
    auto status = conn.read_some(1 << 20);
    drain();
    if (ended) return;
    if (!status)
      ended = status.error();
    else if (*status == Connection::ReadStatus::eof)
      ended = client::closed_error(conn.partial_bytes());
  }
};

Subscription::Subscription(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Subscription::Subscription(Subscription&&) noexcept = default;
Subscription& Subscription::operator=(Subscription&&) noexcept = default;
Subscription::~Subscription() = default;

int Subscription::fd() const { return impl_->conn.fd(); }

Result<void> Subscription::read() {
  impl_->pump();
  if (impl_->ended) return fail(*impl_->ended);
  return {};
}

std::optional<Event> Subscription::next() {
  if (impl_->events.empty()) return std::nullopt;
  Event e = std::move(impl_->events.front());
  impl_->events.pop_front();
  return e;
}

Result<std::optional<Event>> Subscription::wait(std::optional<std::chrono::milliseconds> timeout) {
  auto deadline = client::deadline_after(timeout);
  for (;;) {
    // Events that arrived before the end are delivered before the end is reported.
    if (auto e = next()) return std::optional<Event>(std::move(*e));
    if (impl_->ended) return fail(*impl_->ended);
    auto ready = client::wait_fd(fd(), POLLIN, deadline);
    if (!ready) return fail(ready.error());
    if (!*ready) return std::optional<Event>();
    impl_->pump();
  }
}

const std::string& Subscription::journal_id() const { return impl_->journal_id; }
uint64_t Subscription::journaled_seq() const { return impl_->journaled_seq; }
const json& Subscription::mount_table() const { return impl_->mount_table; }

// ---- Client ----

struct Client::Impl {
  std::string path;
  // Empty after a transport failure: a reply may still be in flight, so the next call starts
  // over on a fresh connection rather than read a stale answer.
  std::optional<Connection> conn;

  Result<Connection*> connection() {
    if (!conn) {
      auto c = Connection::open(path);
      if (!c) return fail(c.error());
      conn.emplace(std::move(*c));
    }
    return &*conn;
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

Result<Client> Client::connect(const std::string& socket_path) {
  auto impl = std::make_unique<Impl>();
  impl->path = socket_path;
  auto c = impl->connection();
  if (!c) return fail(c.error());
  return Client(std::move(impl));
}

const std::string& Client::socket_path() const { return impl_->path; }

Result<json> Client::call(std::string_view method, const json& parameters) {
  if (method.empty()) return fail_invalid("empty method name");
  if (!parameters.is_object()) return fail_invalid("call parameters must be a JSON object");
  proto::Call c;
  c.method = qualify(method);
  c.parameters = parameters;

  auto conn = impl_->connection();
  if (!conn) return fail(conn.error());
  auto deadline = client::deadline_after(client::kCallTimeout);
  auto sent = (*conn)->send(proto::encode_call(c), deadline);
  if (!sent) {
    impl_->conn.reset();
    return fail(sent.error());
  }
  auto reply = (*conn)->read_reply(deadline);
  if (!reply) {
    impl_->conn.reset();
    return fail(reply.error());
  }
  if (!reply->error.empty()) return fail(client::reply_error(*reply, c.method));
  if (reply->continues) {
    // We did not ask for more; the rest of the stream would be read as the next call's reply.
    impl_->conn.reset();
    return fail(bad_reply(c.method, "a streaming reply to a plain call"));
  }
  return std::move(reply->parameters);
}

Result<json> Client::list_filesystems(bool all) {
  json p = json::object();
  if (all) p["all"] = true;
  return call("ListFilesystems", p);
}

Result<json> Client::get_filesystem(const std::string& path) { return call("GetFilesystem", {{"path", path}}); }

Result<json> Client::list_rules() { return call("ListRules"); }

Result<json> Client::add_rule(const json& rule) { return call("AddRule", {{"rule", rule}}); }

Result<json> Client::add_rule_line(const std::string& line) { return call("AddRule", {{"line", line}}); }

Result<json> Client::remove_rule(const std::string& path) { return call("RemoveRule", {{"path", path}}); }

Result<json> Client::list_mounts() { return call("ListMounts"); }

Result<json> Client::doctor() { return call("Doctor"); }

Result<Client::EventPage> Client::list_events(const EventFilter& filter, std::optional<uint64_t> after,
                                               std::optional<std::string> since,
                                               std::optional<uint64_t> limit) {
  json p = json::object();
  if (json f = filter_json(filter); !f.empty()) p["filter"] = std::move(f);
  if (after) p["after"] = *after;
  if (since) p["since"] = *since;
  if (limit) p["limit"] = *limit;
  auto reply = call("ListEvents", p);
  if (!reply) return fail(reply.error());
  auto it = reply->find("events");
  if (it == reply->end() || !it->is_array()) return fail(bad_reply("ListEvents", "no \"events\" array"));
  EventPage out;
  out.events.reserve(it->size());
  for (const auto& j : *it) {
    auto e = event_from_json(j);
    if (!e) return fail(bad_reply("ListEvents", e.error().message()));
    out.events.push_back(std::move(*e));
  }
  if (auto n = reply->find("next_after"); n != reply->end() && !n->is_null()) {
    if (!n->is_number_unsigned()) return fail(bad_reply("ListEvents", "\"next_after\" is not a sequence number"));
    out.next_after = n->get<uint64_t>();
  }
  return out;
}

Result<Subscription> Client::subscribe(const SubscribeOptions& options) {
  auto conn = Connection::open(impl_->path);
  if (!conn) return fail(conn.error());

  proto::Call c;
  c.method = qualify("Subscribe");
  c.more = true;
  if (json f = filter_json(options.filter); !f.empty()) c.parameters["filter"] = std::move(f);
  if (options.after) c.parameters["after"] = *options.after;
  if (!options.journal_id.empty()) c.parameters["journal_id"] = options.journal_id;
  if (options.mounts) c.parameters["mounts"] = true;

  auto deadline = client::deadline_after(client::kCallTimeout);
  if (auto sent = conn->send(proto::encode_call(c), deadline); !sent) return fail(sent.error());
  // The first reply confirms the subscription (or refuses it: bad filter, JournalMismatch), so
  // callers learn about those here rather than from their first read().
  auto first = conn->read_reply(deadline);
  if (!first) return fail(first.error());
  if (!first->error.empty()) return fail(client::reply_error(*first, c.method));

  auto impl = std::make_unique<Subscription::Impl>(std::move(*conn));
  impl->handle(*first);
  // Replies that arrived together with the first one are in the reader already.
  impl->drain();
  return Subscription(std::move(impl));
}

}  // namespace storwatch
