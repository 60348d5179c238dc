// libstorwatch against a scripted fake daemon: a thread serving a temporary Unix socket. The test
// and the script synchronise through the sockets themselves and a "gate" pipe, never by sleeping.
#include <storwatch/client.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "base/fd.h"
#include "proto/varlink.h"

namespace storwatch {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Generous: only reached when the code under test is broken; a passing test never waits on it.
constexpr auto kWait = std::chrono::milliseconds(10'000);

// Polls fd and `stop` (a pipe whose writer the test closes when it ends): false when stopping.
bool wait_readable(int fd, int stop) {
  pollfd p[2] = {{fd, POLLIN, 0}, {stop, POLLIN, 0}};
  for (;;) {
    int n = ::poll(p, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (p[1].revents != 0) return false;
    return true;
  }
}

// One accepted connection, seen from the daemon's side.
class ServerConn {
 public:
  ServerConn(UniqueFd fd, int stop) : fd_(std::move(fd)), stop_(stop) {}

  // The next call, or nullopt when the client closed (or the test ended).
  std::optional<proto::Call> read_call() {
    for (;;) {
      if (auto m = reader_.next()) {
        auto c = proto::parse_call(*m);
        EXPECT_TRUE(c) << *m;
        if (!c) return std::nullopt;
        return *c;
      }
      if (!wait_readable(fd_.get(), stop_)) return std::nullopt;
      char buf[4096];
      ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
      if (n <= 0) return std::nullopt;
      EXPECT_TRUE(reader_.feed(buf, static_cast<size_t>(n)));
    }
  }

  // Sends raw bytes; false when the client has gone (which some tests expect).
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  bool reply(const json& parameters, bool continues = false) {
    proto::Reply r;
    r.parameters = parameters;
    r.continues = continues;
    return send(proto::encode_reply(r));
  }
  bool error(const char* name, const json& parameters) { return send(proto::encode_error(name, parameters)); }

  void close() { fd_.reset(); }

 private:
  UniqueFd fd_;
  int stop_;
  proto::MessageReader reader_{1 << 20};
};

class FakeDaemon {
 public:
  FakeDaemon() {
    const char* tmp = ::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/storwatch-client-test.XXXXXX";
    if (!::mkdtemp(templ.data())) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    dir_ = templ;
    path_ = dir_ + "/io.storwatch";

    listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
    EXPECT_EQ(::listen(listener_.get(), 8), 0);

    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    stop_read_.reset(p[0]);
    stop_write_.reset(p[1]);
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    gate_read_.reset(p[0]);
    gate_write_.reset(p[1]);
  }

  // Ends the script: every wait of the script returns "stop", then the thread is joined.
  ~FakeDaemon() {
    stop_write_.reset();
    gate_write_.reset();
    if (thread_.joinable()) thread_.join();
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }

  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }

  void run(std::function<void(FakeDaemon&)> script) {
    thread_ = std::thread([this, script = std::move(script)] { script(*this); });
  }

  // ---- for the script ----
  std::optional<ServerConn> accept() {
    if (!wait_readable(listener_.get(), stop_read_.get())) return std::nullopt;
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) return std::nullopt;
    return ServerConn(std::move(fd), stop_read_.get());
  }
  // Blocks until the test calls open_gate(); false when the test ended instead.
  bool wait_gate() {
    char c;
    return ::read(gate_read_.get(), &c, 1) == 1;
  }

  // ---- for the test ----
  void open_gate() { ASSERT_EQ(::write(gate_write_.get(), "g", 1), 1); }

 private:
  std::string dir_;
  std::string path_;
  UniqueFd listener_;
  UniqueFd stop_read_, stop_write_;
  UniqueFd gate_read_, gate_write_;
  std::thread thread_;
};

Event make_event(uint64_t seq, const char* type) {
  Event e;
  e.seq = seq;
  e.journal_id = "j1";
  e.type = type;
  e.severity = Severity::warning;
  e.source = "statfs";
  e.time = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000 + seq));
  e.first_time = e.last_time = e.time;
  e.fs = FsRef{7, 0, "ext4", "", "/dev/loop0", {"/mnt/data"}};
  e.detail = {{"resource", "blocks"}};
  return e;
}

std::string event_reply(uint64_t seq, const char* type = "space.threshold") {
  proto::Reply r;
  r.parameters = {{"event", event_to_json(make_event(seq, type))}, {"journal_id", "j1"}, {"journaled_seq", seq}};
  r.continues = true;
  return proto::encode_reply(r);
}

// ---- calls ----

TEST(Client, CallReturnsTheReplyParameters) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto c = srv.accept();
    if (!c) return;
    auto call = c->read_call();
    if (!call) return;
    EXPECT_EQ(call->method, "io.storwatch.ListRules");
    EXPECT_EQ(call->parameters, json::object());
    EXPECT_FALSE(call->more);
    c->reply({{"rules", {{{"path", "/data"}}}}});
    call = c->read_call();
    if (!call) return;
    EXPECT_EQ(call->method, "org.varlink.service.GetInfo");
    c->reply({{"vendor", "storwatch"}});
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client) << client.error().message();
  EXPECT_EQ(client->socket_path(), d.path());
  auto rules = client->call("ListRules");
  ASSERT_TRUE(rules) << rules.error().message();
  EXPECT_EQ((*rules)["rules"][0]["path"], "/data");
  auto info = client->call("org.varlink.service.GetInfo");
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ((*info)["vendor"], "storwatch");
}

TEST(Client, TypedCallsSendTheDocumentedRequests) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto c = srv.accept();
    if (!c) return;
    // Echo: the reply says what was asked.
    while (auto call = c->read_call()) c->reply({{"method", call->method}, {"parameters", call->parameters}});
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client) << client.error().message();
  auto expect = [](const Result<json>& r, const char* method, const json& parameters) {
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ((*r)["method"], method);
    EXPECT_EQ((*r)["parameters"], parameters) << method;
  };
  expect(client->list_filesystems(), "io.storwatch.ListFilesystems", json::object());
  expect(client->list_filesystems(true), "io.storwatch.ListFilesystems", {{"all", true}});
  expect(client->get_filesystem("/mnt/data"), "io.storwatch.GetFilesystem", {{"path", "/mnt/data"}});
  expect(client->list_rules(), "io.storwatch.ListRules", json::object());
  json rule = {{"path", "/data"}, {"levels", {{{"resource", "blocks"}, {"below", "10%"}}}}};
  expect(client->add_rule(rule), "io.storwatch.AddRule", {{"rule", rule}});
  expect(client->add_rule_line("/data G T 710000 500000"), "io.storwatch.AddRule",
         {{"line", "/data G T 710000 500000"}});
  expect(client->remove_rule("/data"), "io.storwatch.RemoveRule", {{"path", "/data"}});
  expect(client->list_mounts(), "io.storwatch.ListMounts", json::object());
  expect(client->doctor(), "io.storwatch.Doctor", json::object());
  expect(client->call("io.storwatch.ListRules", {{"x", 1}}), "io.storwatch.ListRules", {{"x", 1}});
}

TEST(Client, ErrorReplyKeepsItsNameAndTheConnection) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto c = srv.accept();
    if (!c) return;
    if (!c->read_call()) return;
    c->error(proto::errors::kInvalidRule, {{"reason", "level 0% is not above zero"}});
    if (!c->read_call()) return;
    c->error(proto::errors::kPermissionDenied, {{"reason", "changing rules needs root"}});
    if (!c->read_call()) return;
    c->reply({{"rules", json::array()}});
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto r = client->add_rule_line("/data T 0");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name(), "io.storwatch.InvalidRule");
  EXPECT_EQ(r.error().message(), "invalid rule: level 0% is not above zero");
  r = client->remove_rule("/data");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name(), "io.storwatch.PermissionDenied");
  EXPECT_EQ(r.error().message(), "permission denied: changing rules needs root");
  // An error reply is an answer, not a broken connection: the same connection serves on.
  r = client->list_rules();
  ASSERT_TRUE(r) << r.error().message();
}

TEST(Client, MethodNotImplementedNamesTheMethod) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    c->error(proto::errors::kMethodNotImplemented, json::object());  // no "method": a lax daemon
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto r = client->list_events({}, std::nullopt, std::nullopt, std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name(), "org.varlink.service.MethodNotImplemented");
  EXPECT_EQ(r.error().message(), "not supported by this daemon yet: io.storwatch.ListEvents");
}

TEST(Client, ConnectFailureNamesThePathAndKeepsErrno) {
  FakeDaemon d;  // only for its temporary directory
  std::string missing = d.dir() + "/nothing-here";
  auto client = Client::connect(missing);
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().errno_value(), ENOENT);
  EXPECT_EQ(client.error().message(), "cannot connect to storwatchd at " + missing + ": No such file or directory");

  auto too_long = Client::connect("/" + std::string(200, 'x'));
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().errno_value(), ENAMETOOLONG);
}

TEST(Client, DefaultSocketPathFollowsTheEnvironment) {
  const char* old = ::getenv("STORWATCH_SOCKET");
  std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;
  ::setenv("STORWATCH_SOCKET", "/tmp/elsewhere", 1);
  EXPECT_EQ(default_socket_path(), "/tmp/elsewhere");
  ::setenv("STORWATCH_SOCKET", "", 1);
  EXPECT_EQ(default_socket_path(), kDefaultSocketPath);
  ::unsetenv("STORWATCH_SOCKET");
  EXPECT_EQ(default_socket_path(), "/run/storwatch/io.storwatch");
  if (saved) ::setenv("STORWATCH_SOCKET", saved->c_str(), 1);
}

TEST(Client, DaemonClosingBeforeTheReplyIsAnErrorAndTheNextCallReconnects) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto first = srv.accept();
    if (!first || !first->read_call()) return;
    first->close();
    auto second = srv.accept();
    if (!second || !second->read_call()) return;
    second->reply({{"mounts", json::array()}});
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto r = client->list_mounts();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), std::errc::connection_reset);
  EXPECT_EQ(r.error().context(), "storwatchd closed the connection");
  r = client->list_mounts();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, json({{"mounts", json::array()}}));
}

TEST(Client, MalformedAndStreamingRepliesAreErrors) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto a = srv.accept();
    if (!a || !a->read_call()) return;
    a->send(std::string("this is not json") + '\0');
    auto b = srv.accept();
    if (!b || !b->read_call()) return;
    b->reply({{"rules", json::array()}}, /*continues=*/true);
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto r = client->list_rules();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), std::errc::bad_message);
  EXPECT_NE(r.error().message().find("malformed reply"), std::string::npos) << r.error().message();
  r = client->list_rules();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("streaming reply"), std::string::npos) << r.error().message();
}

TEST(Client, LargeRepliesArriveWhole) {
  json mounts = json::array();
  for (int i = 0; i < 20'000; ++i)
    mounts.push_back({{"mnt_id", i}, {"path", "/mnt/" + std::to_string(i)}, {"fstype", "tmpfs"}});
  FakeDaemon d;
  d.run([&mounts](FakeDaemon& srv) {
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    c->reply({{"mounts", mounts}});
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto r = client->list_mounts();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["mounts"], mounts);
}

TEST(Client, ReplyOverTheLimitIsRefused) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    // 17 MiB without a NUL; the client stops reading and closes, so this send may fail.
    c->send(std::string(17u << 20, ' '));
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto r = client->list_mounts();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), std::errc::message_size);
}

TEST(Client, ListEventsSendsTheFilterAndParsesEvents) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto c = srv.accept();
    if (!c) return;
    auto call = c->read_call();
    if (!call) return;
    EXPECT_EQ(call->method, "io.storwatch.ListEvents");
    EXPECT_EQ(call->parameters, json({{"filter", {{"types", {"fs.*"}}, {"min_severity", "error"}}},
                                      {"after", 3},
                                      {"since", "@0"},
                                      {"limit", 2}}));
    c->reply({{"events", {event_to_json(make_event(4, "fs.error")), event_to_json(make_event(5, "fs.readonly"))}},
              {"journal_id", "j1"},
              {"journaled_seq", 5},
              {"next_after", 9}});
    call = c->read_call();
    if (!call) return;
    EXPECT_EQ(call->parameters, json::object());
    c->reply({{"events", {{{"type", "fs.error"}}}}});  // no time, no severity
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  EventFilter f;
  f.types = {"fs.*"};
  f.min_severity = Severity::error;
  auto page = client->list_events(f, 3, "@0", 2);
  ASSERT_TRUE(page) << page.error().message();
  const auto& events = page->events;
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].seq, 4u);
  EXPECT_EQ(events[0].type, "fs.error");
  EXPECT_EQ(events[1].type, "fs.readonly");
  ASSERT_TRUE(events[1].fs);
  EXPECT_EQ(events[1].fs->mounts.front(), "/mnt/data");
  EXPECT_EQ(page->next_after, 9u);

  auto bad = client->list_events({}, std::nullopt, std::nullopt, std::nullopt);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), std::errc::bad_message);
}

// ---- subscriptions ----

TEST(Subscription, FirstReplyThenEventsThenAnErrorEndsTheStream) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto idle = srv.accept();  // the Client's own connection; subscribe() opens another
    auto c = srv.accept();
    if (!c) return;
    auto call = c->read_call();
    if (!call) return;
    EXPECT_EQ(call->method, "io.storwatch.Subscribe");
    EXPECT_TRUE(call->more);
    EXPECT_EQ(call->parameters,
              json({{"filter", {{"types", {"space.*"}}, {"fs", {"/mnt/data"}}, {"min_severity", "warning"}}},
                    {"after", 5},
                    {"journal_id", "j1"},
                    {"mounts", true}}));
    c->reply({{"journal_id", "j1"}, {"journaled_seq", 5}, {"mount_table", {{{"mnt_id", 1}, {"path", "/"}}}}},
             /*continues=*/true);
    if (!srv.wait_gate()) return;
    // Two events and the end in one write: the client must split them.
    c->send(event_reply(6) + event_reply(7) +
            proto::encode_error(proto::errors::kJournalMismatch, {{"expected", "j1"}, {"actual", "j2"}}));
    c->read_call();  // until the client closes
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  SubscribeOptions o;
  o.filter.types = {"space.*"};
  o.filter.fs = {"/mnt/data"};
  o.filter.min_severity = Severity::warning;
  o.after = 5;
  o.journal_id = "j1";
  o.mounts = true;
  auto sub = client->subscribe(o);
  ASSERT_TRUE(sub) << sub.error().message();
  EXPECT_EQ(sub->journal_id(), "j1");
  EXPECT_EQ(sub->journaled_seq(), 5u);
  ASSERT_TRUE(sub->mount_table().is_array());
  EXPECT_EQ(sub->mount_table().size(), 1u);
  EXPECT_GE(sub->fd(), 0);

  // Nothing sent yet: read() returns at once, with nothing to show.
  ASSERT_TRUE(sub->read());
  EXPECT_FALSE(sub->next());
  auto none = sub->wait(0ms);
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);

  d.open_gate();
  auto e6 = sub->wait(kWait);
  ASSERT_TRUE(e6) << e6.error().message();
  ASSERT_TRUE(*e6);
  EXPECT_EQ((*e6)->seq, 6u);
  EXPECT_EQ((*e6)->type, "space.threshold");
  ASSERT_TRUE((*e6)->fs);
  EXPECT_EQ((*e6)->fs->dev(), "7:0");
  auto e7 = sub->wait(kWait);
  ASSERT_TRUE(e7 && *e7);
  EXPECT_EQ((*e7)->seq, 7u);
  EXPECT_EQ(sub->journaled_seq(), 7u);

  auto end = sub->wait(kWait);
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error().name(), "io.storwatch.JournalMismatch");
  EXPECT_EQ(end.error().message(), "journal mismatch: the daemon's journal is j2, not j1");
  // The end is sticky.
  auto again = sub->read();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().name(), "io.storwatch.JournalMismatch");
  // The client's own connection is independent of the stream.
  EXPECT_FALSE(client->socket_path().empty());
}

TEST(Subscription, ReadDeliversEverythingBeforeTheEnd) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto idle = srv.accept();  // the Client's own connection; subscribe() opens another
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    c->reply({{"journal_id", "j1"}, {"journaled_seq", 0}}, true);
    if (!srv.wait_gate()) return;
    c->send(event_reply(1) + event_reply(2) + proto::encode_error(proto::errors::kLimitExceeded,
                                                                  {{"limit", "subscriptions"}, {"max", 32}}));
    c->read_call();
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto sub = client->subscribe({});
  ASSERT_TRUE(sub) << sub.error().message();
  d.open_gate();
  // Application style: poll the fd, read(), drain next().
  std::vector<uint64_t> seqs;
  Result<void> r;
  while (r) {
    pollfd p{sub->fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, static_cast<int>(kWait.count())), 1);
    r = sub->read();
    while (auto e = sub->next()) seqs.push_back(e->seq);
  }
  EXPECT_EQ(seqs, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(r.error().name(), "io.storwatch.LimitExceeded");
}

TEST(Subscription, EventsSentWithTheFirstReplyAreNotLost) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto idle = srv.accept();  // the Client's own connection; subscribe() opens another
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    proto::Reply first;
    first.parameters = {{"journal_id", "j1"}, {"journaled_seq", 1}};
    first.continues = true;
    c->send(proto::encode_reply(first) + event_reply(1));
    c->read_call();
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto sub = client->subscribe({});
  ASSERT_TRUE(sub);
  // Already received with the first reply: no poll would report it, so it must be queued.
  auto e = sub->next();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->seq, 1u);
  EXPECT_EQ(sub->mount_table(), json::array());
}

TEST(Subscription, AnErrorAsTheFirstReplyFailsSubscribe) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto idle = srv.accept();  // the Client's own connection; subscribe() opens another
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    c->error(proto::errors::kInvalidParameter, {{"parameter", "filter.min_severity"}, {"reason", "unknown"}});
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto sub = client->subscribe({});
  ASSERT_FALSE(sub);
  EXPECT_EQ(sub.error().name(), "io.storwatch.InvalidParameter");
  EXPECT_EQ(sub.error().message(), "invalid parameter filter.min_severity: unknown");
}

TEST(Subscription, DaemonClosingMidStreamEndsItWithAnError) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto idle = srv.accept();  // the Client's own connection; subscribe() opens another
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    c->reply({{"journal_id", "j1"}, {"journaled_seq", 0}}, true);
    if (!srv.wait_gate()) return;
    c->send(event_reply(1) + "{\"parameters\":{\"eve");  // then dies mid-message
    c->close();
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto sub = client->subscribe({});
  ASSERT_TRUE(sub);
  d.open_gate();
  auto e = sub->wait(kWait);
  ASSERT_TRUE(e && *e);
  EXPECT_EQ((*e)->seq, 1u);
  auto end = sub->wait(kWait);
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error().code(), std::errc::connection_reset);
  EXPECT_NE(end.error().message().find("storwatchd closed the connection"), std::string::npos);
  EXPECT_NE(end.error().message().find("in the middle of a message"), std::string::npos);
}

TEST(Subscription, CleanCloseSaysTheDaemonClosedTheConnection) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto idle = srv.accept();  // the Client's own connection; subscribe() opens another
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    c->reply({{"journal_id", "j1"}, {"journaled_seq", 0}}, true);
    if (!srv.wait_gate()) return;
    c->close();
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto sub = client->subscribe({});
  ASSERT_TRUE(sub);
  d.open_gate();
  auto end = sub->wait(kWait);
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error().context(), "storwatchd closed the connection");
}

TEST(Subscription, AFinalReplyWithoutContinuesEndsTheStream) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto idle = srv.accept();  // the Client's own connection; subscribe() opens another
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    c->reply({{"journal_id", "j1"}, {"journaled_seq", 0}}, true);
    proto::Reply last;
    last.parameters = {{"event", event_to_json(make_event(9, "fs.shutdown"))}, {"journal_id", "j1"},
                       {"journaled_seq", 9}};
    c->send(proto::encode_reply(last));
    c->read_call();
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto sub = client->subscribe({});
  ASSERT_TRUE(sub);
  auto e = sub->wait(kWait);
  ASSERT_TRUE(e && *e);
  EXPECT_EQ((*e)->type, "fs.shutdown");
  auto end = sub->wait(kWait);
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error().context(), "storwatchd ended the subscription");
}

TEST(Subscription, AnUnreadableEventEndsTheStreamInsteadOfVanishing) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto idle = srv.accept();  // the Client's own connection; subscribe() opens another
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    c->reply({{"journal_id", "j1"}, {"journaled_seq", 0}}, true);
    c->reply({{"event", {{"type", "fs.error"}, {"severity", "apocalyptic"}, {"time", "2026-01-01T00:00:00Z"}}},
              {"journal_id", "j1"},
              {"journaled_seq", 1}},
             true);
    c->read_call();
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto sub = client->subscribe({});
  ASSERT_TRUE(sub);
  auto end = sub->wait(kWait);
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error().code(), std::errc::bad_message);
  EXPECT_NE(end.error().message().find("apocalyptic"), std::string::npos) << end.error().message();
}

TEST(Subscription, MovedSubscriptionKeepsWorking) {
  FakeDaemon d;
  d.run([](FakeDaemon& srv) {
    auto idle = srv.accept();  // the Client's own connection; subscribe() opens another
    auto c = srv.accept();
    if (!c || !c->read_call()) return;
    c->reply({{"journal_id", "j1"}, {"journaled_seq", 0}}, true);
    c->send(event_reply(3));
    c->read_call();
  });
  auto client = Client::connect(d.path());
  ASSERT_TRUE(client);
  auto sub = client->subscribe({});
  ASSERT_TRUE(sub);
  Subscription moved = std::move(*sub);
  auto e = moved.wait(kWait);
  ASSERT_TRUE(e && *e);
  EXPECT_EQ((*e)->seq, 3u);
}

}  // namespace
}  // namespace storwatch
