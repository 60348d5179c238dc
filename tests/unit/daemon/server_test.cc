#include "daemon/server/server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "proto/varlink.h"
#include "support/fake_clock.h"
#include "support/temp_dir.h"
#include "support/varlink_test_client.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::VarlinkTestClient;
namespace errs = proto::errors;

// The io.storwatch side, faked: a few methods and a subscription whose filter the test picks.
class FakeService final : public Service {
 public:
  Reply<json> call(const Peer& peer, const std::string& method, const json& p) override {
    ++calls;
    if (method == "Echo") return p;
    if (method == "WhoAmI") return json{{"uid", peer.uid}, {"pid", peer.pid}};
    if (method == "Refuse") return reply_error(errs::kPermissionDenied, {{"reason", "no"}});
    return reply_error(errs::kMethodNotFound, {{"method", "io.storwatch." + method}});
  }
  Reply<Stream> subscribe(const Peer&, const json& p) override {
    if (p.contains("refuse")) return reply_error(errs::kInvalidParameter, {{"parameter", "refuse"}});
    Stream s;
    if (p.contains("type")) {
      std::string type = p["type"];
      s.filter = [type](const Event& e) { return e.type == type; };
    }
    s.first_reply = {{"subscribed", true}};
    return s;
  }
  json stream_reply_fields() const override { return {{"journal_id", "j-test"}}; }
  int calls = 0;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { start(ServerLimits{}); }

  void start(ServerLimits limits) {
    server_.reset();
    auto l = EventLoop::create(clock_);
    ASSERT_TRUE(l);
    loop_ = std::move(*l);
    bus_ = std::make_unique<Bus>(clock_, "j-test", 0, nullptr);
    path_ = dir_.sub("io.storwatch");
    auto fd = Server::listen_unix(path_);
    ASSERT_TRUE(fd) << fd.error().message();
    auto s = Server::create(*loop_, *bus_, service_, std::move(*fd), limits);
    ASSERT_TRUE(s) << s.error().message();
    server_ = std::move(*s);
  }
  void TearDown() override { server_.reset(); }

  void step() { loop_->step(0ms); }
  VarlinkTestClient::Step stepper() {
    return [this] { step(); };
  }
  // A connected client the server has accepted.
  std::unique_ptr<VarlinkTestClient> connect() {
    auto c = std::make_unique<VarlinkTestClient>(path_);
    EXPECT_TRUE(c->connected());
    step();
    return c;
  }
  json call(VarlinkTestClient& c, const std::string& method, const json& p = json::object()) {
    EXPECT_TRUE(c.call(method, p));
    EXPECT_TRUE(c.wait_for(1, stepper())) << method << " got no reply";
    return c.next();
  }
  EventPtr publish(std::string type = "space.threshold", size_t pad = 0) {
    Event e;
    e.type = std::move(type);
    e.source = "test";
    if (pad) e.detail = {{"pad", std::string(pad, 'x')}};
    auto r = bus_->publish(std::move(e));
    EXPECT_TRUE(r);
    return r ? *r : nullptr;
  }
  // Subscribes and checks the confirming first reply.
  std::unique_ptr<VarlinkTestClient> subscriber(const json& p = json::object()) {
    auto c = connect();
    EXPECT_TRUE(c->call("io.storwatch.Subscribe", p, /*more=*/true));
    EXPECT_TRUE(c->wait_for(1, stepper()));
    json first = c->next();
    EXPECT_EQ(first["parameters"]["subscribed"], true) << first.dump();
    EXPECT_EQ(first["continues"], true);
    return c;
  }

  test::TempDir dir_;
  test::FakeClock clock_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Bus> bus_;
  FakeService service_;
  std::unique_ptr<Server> server_;
  std::string path_;
};

TEST_F(ServerTest, CallGetsItsReply) {
  auto c = connect();
  json r = call(*c, "io.storwatch.Echo", {{"x", 1}, {"s", "hi"}});
  EXPECT_EQ(r["parameters"], (json{{"x", 1}, {"s", "hi"}}));
  EXPECT_FALSE(r.contains("error"));
  EXPECT_FALSE(r.contains("continues"));
  EXPECT_EQ(server_->connection_count(), 1u);
}

TEST_F(ServerTest, ServiceSeesThePeerCredentials) {
  auto c = connect();
  json r = call(*c, "io.storwatch.WhoAmI");
  EXPECT_EQ(r["parameters"]["uid"], ::getuid());
  EXPECT_EQ(r["parameters"]["pid"], ::getpid());
}

TEST_F(ServerTest, PipelinedCallsAreAnsweredInOrderAndOnewayGetsNothing) {
  auto c = connect();
  std::string batch;
  for (int i = 0; i < 3; ++i) batch += proto::encode_call({"io.storwatch.Echo", {{"i", i}}});
  proto::Call oneway{"io.storwatch.Echo", {{"i", 99}}};
  oneway.oneway = true;
  batch += proto::encode_call(oneway);
  batch += proto::encode_call({"io.storwatch.Echo", {{"i", 3}}});
  ASSERT_TRUE(c->send_raw(batch));
  ASSERT_TRUE(c->wait_for(4, stepper()));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(c->next()["parameters"]["i"], i);
  for (int i = 0; i < 3; ++i) step();
  c->read_available();
  EXPECT_TRUE(c->messages().empty());
  EXPECT_EQ(service_.calls, 5);  // the oneway call ran, silently
}

TEST_F(ServerTest, ServiceErrorsAreRepliedAndTheConnectionStays) {
  auto c = connect();
  json r = call(*c, "io.storwatch.Refuse");
  EXPECT_EQ(r["error"], errs::kPermissionDenied);
  EXPECT_EQ(r["parameters"]["reason"], "no");
  EXPECT_EQ(call(*c, "io.storwatch.Echo", {{"ok", true}})["parameters"]["ok"], true);
}

TEST_F(ServerTest, GarbageGetsInvalidParameterAndIsClosed) {
  for (const std::string& garbage : {std::string("this is not json"), std::string("[1,2]"),
                                    std::string(R"({"parameters":{}})"), std::string(R"({"method":"x","more":"yes"})")}) {
    auto c = connect();
    ASSERT_TRUE(c->send_raw(garbage + '\0'));
    ASSERT_TRUE(c->wait_for(1, stepper())) << garbage;
    json r = c->next();
    EXPECT_EQ(r["error"], errs::kInvalidParameter) << garbage;
    EXPECT_TRUE(r["parameters"].contains("reason")) << r.dump();
    EXPECT_TRUE(c->wait_for_eof(stepper())) << garbage;
  }
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(server_->connection_count(), 0u);
  EXPECT_EQ(service_.calls, 0);
}

TEST_F(ServerTest, OversizedMessageGetsLimitExceededAndIsClosed) {
  ServerLimits limits;
  limits.max_message = 1024;
  start(limits);
  // Exactly at the limit is fine.
  auto ok = connect();
  std::string msg = proto::encode_call({"io.storwatch.Echo", {{"pad", ""}}});
  size_t pad = 1024 - (msg.size() - 1);
  msg = proto::encode_call({"io.storwatch.Echo", {{"pad", std::string(pad, 'p')}}});
  ASSERT_EQ(msg.size() - 1, 1024u);
  ASSERT_TRUE(ok->send_raw(msg));
  ASSERT_TRUE(ok->wait_for(1, stepper()));
  EXPECT_FALSE(ok->next().contains("error"));

  // One byte more, without even finishing the message: refused as soon as it is too long.
  auto big = connect();
  ASSERT_TRUE(big->send_raw(std::string(1025, 'a')));
  ASSERT_TRUE(big->wait_for(1, stepper()));
  json r = big->next();
  EXPECT_EQ(r["error"], errs::kLimitExceeded);
  EXPECT_EQ(r["parameters"]["limit"], "message_bytes");
  EXPECT_EQ(r["parameters"]["max"], 1024);
  EXPECT_TRUE(big->wait_for_eof(stepper()));
  // The other client is unaffected.
  EXPECT_FALSE(call(*ok, "io.storwatch.Echo")["parameters"].is_null());
}

TEST_F(ServerTest, UnknownMethodsAndInterfaces) {
  auto c = connect();
  json r = call(*c, "io.storwatch.NoSuchMethod");
  EXPECT_EQ(r["error"], errs::kMethodNotFound);
  EXPECT_EQ(r["parameters"]["method"], "io.storwatch.NoSuchMethod");
  r = call(*c, "org.example.thing.Do");
  EXPECT_EQ(r["error"], errs::kInterfaceNotFound);
  EXPECT_EQ(r["parameters"]["interface"], "org.example.thing");
  r = call(*c, "org.varlink.service.Frobnicate");
  EXPECT_EQ(r["error"], errs::kMethodNotFound);
  r = call(*c, "io.storwatchx.Echo");  // a prefix of the name is not the interface
  EXPECT_EQ(r["error"], errs::kInterfaceNotFound);
  r = call(*c, "NoDots");
  EXPECT_EQ(r["error"], errs::kInterfaceNotFound);
  EXPECT_EQ(server_->connection_count(), 1u);  // errors in calls don't close the connection
  EXPECT_EQ(service_.calls, 1);
}

TEST_F(ServerTest, VarlinkServiceGetInfo) {
  auto c = connect();
  json r = call(*c, "org.varlink.service.GetInfo");
  ASSERT_FALSE(r.contains("error")) << r.dump();
  const json& p = r["parameters"];
  EXPECT_EQ(p["product"], "storwatchd");
  EXPECT_TRUE(p["version"].is_string());
  EXPECT_EQ(p["interfaces"], (json{"org.varlink.service", "io.storwatch"}));
}

TEST_F(ServerTest, VarlinkServiceGetInterfaceDescription) {
  auto c = connect();
  json r = call(*c, "org.varlink.service.GetInterfaceDescription", {{"interface", "io.storwatch"}});
  ASSERT_FALSE(r.contains("error")) << r.dump();
  EXPECT_EQ(r["parameters"]["description"], std::string(proto::interface_description()));
  EXPECT_NE(r["parameters"]["description"].get<std::string>().find("interface io.storwatch"), std::string::npos);
  r = call(*c, "org.varlink.service.GetInterfaceDescription", {{"interface", "org.varlink.service"}});
  EXPECT_NE(r["parameters"]["description"].get<std::string>().find("interface org.varlink.service"),
            std::string::npos);
  r = call(*c, "org.varlink.service.GetInterfaceDescription", {{"interface", "com.example"}});
  EXPECT_EQ(r["error"], errs::kInterfaceNotFound);
  EXPECT_EQ(r["parameters"]["interface"], "com.example");
}

TEST_F(ServerTest, SubscribeWithoutMoreIsExpectedMore) {
  auto c = connect();
  json r = call(*c, "io.storwatch.Subscribe");
  EXPECT_EQ(r["error"], errs::kExpectedMore);
  EXPECT_EQ(server_->subscription_count(), 0u);
  EXPECT_FALSE(call(*c, "io.storwatch.Echo").contains("error"));  // still usable
}

TEST_F(ServerTest, SubscriptionStreamsMatchingEvents) {
  auto all = subscriber();
  auto some = subscriber({{"type", "fs.unresponsive"}});
  EXPECT_EQ(server_->subscription_count(), 2u);
  publish("space.threshold");
  publish("fs.unresponsive");
  publish("space.threshold");
  ASSERT_TRUE(all->wait_for(3, stepper()));
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    json r = all->next();
    EXPECT_EQ(r["continues"], true);
    EXPECT_EQ(r["parameters"]["event"]["seq"], seq);
    EXPECT_EQ(r["parameters"]["journal_id"], "j-test");  // the service's extra fields
  }
  ASSERT_TRUE(some->wait_for(1, stepper()));
  json r = some->next();
  EXPECT_EQ(r["parameters"]["event"]["type"], "fs.unresponsive");
  EXPECT_EQ(r["parameters"]["event"]["seq"], 2);
  step();
  some->read_available();
  EXPECT_TRUE(some->messages().empty());
}

TEST_F(ServerTest, SubscriptionRefusedByTheServiceIsAnError) {
  auto c = connect();
  ASSERT_TRUE(c->call("io.storwatch.Subscribe", {{"refuse", true}}, true));
  ASSERT_TRUE(c->wait_for(1, stepper()));
  EXPECT_EQ(c->next()["error"], errs::kInvalidParameter);
  EXPECT_EQ(server_->subscription_count(), 0u);
}

TEST_F(ServerTest, CallOnAStreamingConnectionIsRefusedAndClosed) {
  auto s = subscriber();
  ASSERT_TRUE(s->call("io.storwatch.Echo"));
  ASSERT_TRUE(s->wait_for(1, stepper()));
  EXPECT_EQ(s->next()["error"], errs::kInvalidParameter);
  EXPECT_TRUE(s->wait_for_eof(stepper()));
  EXPECT_EQ(server_->subscription_count(), 0u);
}

TEST_F(ServerTest, MaxClientsExceededIsLimitExceeded) {
  ServerLimits limits;
  limits.max_clients = 2;
  start(limits);
  auto a = connect();
  auto b = connect();
  EXPECT_EQ(server_->connection_count(), 2u);
  auto c = connect();
  ASSERT_TRUE(c->wait_for(1, stepper()));
  json r = c->next();
  EXPECT_EQ(r["error"], errs::kLimitExceeded);
  EXPECT_EQ(r["parameters"]["limit"], "clients");
  EXPECT_EQ(r["parameters"]["max"], 2);
  EXPECT_TRUE(c->wait_for_eof(stepper()));
  EXPECT_EQ(server_->connection_count(), 2u);
  // The others are served; once one leaves, a new client gets in.
  EXPECT_FALSE(call(*a, "io.storwatch.Echo").contains("error"));
  a.reset();
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(server_->connection_count(), 1u);
  auto d = connect();
  EXPECT_FALSE(call(*d, "io.storwatch.Echo").contains("error"));
}

TEST_F(ServerTest, ClientsPerUidAreLimited) {
  ServerLimits limits;
  limits.max_clients_per_uid = 2;
  start(limits);
  auto a = connect();  // every client here is this uid
  auto b = connect();
  auto c = connect();
  ASSERT_TRUE(c->wait_for(1, stepper()));
  json r = c->next();
  EXPECT_EQ(r["error"], errs::kLimitExceeded);
  EXPECT_EQ(r["parameters"]["limit"], "clients_per_uid");
  EXPECT_EQ(r["parameters"]["max"], 2);
  EXPECT_TRUE(c->wait_for_eof(stepper()));
  EXPECT_EQ(server_->connection_count(), 2u);
  a.reset();
  for (int i = 0; i < 3; ++i) step();
  auto d = connect();
  EXPECT_FALSE(call(*d, "io.storwatch.Echo").contains("error"));
}

TEST_F(ServerTest, RequestRateIsLimitedPerConnection) {
  ServerLimits limits;
  limits.requests_per_second = 10;
  limits.request_burst = 5;
  start(limits);
  auto calm = connect();
  auto flood = connect();
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(call(*flood, "io.storwatch.Echo").contains("error")) << i;
  json r = call(*flood, "io.storwatch.Echo");
  EXPECT_EQ(r["error"], errs::kLimitExceeded) << r.dump();
  EXPECT_EQ(r["parameters"]["limit"], "requests_per_second");
  EXPECT_EQ(r["parameters"]["max"], 10);
  EXPECT_TRUE(flood->wait_for_eof(stepper()));
  // The bucket is per connection and refills with time.
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(call(*calm, "io.storwatch.Echo").contains("error")) << i;
  clock_.advance(100ms);
  EXPECT_FALSE(call(*calm, "io.storwatch.Echo").contains("error"));
  EXPECT_EQ(server_->connection_count(), 1u);
}

// Regression: a client's whole pipelined burst was handled in one loop turn, and a well-behaved
// client waited seconds behind 400 expensive calls (tests/integration/hostile_clients.py).
TEST_F(ServerTest, PipelinedCallsDoNotHoldTheLoopFromOthers) {
  auto a = connect();
  auto b = connect();
  std::string burst;
  for (int i = 0; i < 100; ++i) burst += proto::encode_call({"io.storwatch.Echo", {{"i", i}}});
  ASSERT_TRUE(a->send_raw(burst));
  ASSERT_TRUE(b->call("io.storwatch.Echo", {{"b", true}}));
  ASSERT_TRUE(b->wait_for(1, stepper()));
  EXPECT_EQ(b->next()["parameters"]["b"], true);
  EXPECT_LT(service_.calls, 100) << "the other client waited for the whole burst";
  ASSERT_TRUE(a->wait_for(100, stepper(), 1000));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a->next()["parameters"]["i"], i);
}

TEST_F(ServerTest, DroppedClientThatNeverReadsIsClosedAfterTheLinger) {
  ServerLimits limits;
  limits.max_message = 1024;
  limits.requests_per_second = 0;
  start(limits);
  auto c = connect();
  // Fill the client's receive buffer (it never reads), then overflow a message: the error reply
  // cannot be written, and the connection must not stay open waiting for it.
  std::string req = proto::encode_call({"io.storwatch.Echo", {{"pad", std::string(900, 'p')}}});
  for (int i = 0; i < 3000; ++i) {
    (void)::send(c->fd(), req.data(), req.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    step();
    if (server_->stats().max_output_bytes > 0) break;
  }
  ASSERT_GT(server_->stats().max_output_bytes, 0u) << "the socket buffer never filled";
  ASSERT_TRUE(c->send_raw(std::string(2000, 'a')));
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(server_->connection_count(), 1u);
  clock_.advance(2s);
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(ServerTest, SubscriptionsPerProcessAreLimited) {
  ServerLimits limits;
  limits.max_subscriptions_per_process = 2;
  start(limits);
  auto s1 = subscriber();
  auto s2 = subscriber();
  auto c = connect();  // every client here is this process
  ASSERT_TRUE(c->call("io.storwatch.Subscribe", json::object(), true));
  ASSERT_TRUE(c->wait_for(1, stepper()));
  json r = c->next();
  EXPECT_EQ(r["error"], errs::kLimitExceeded);
  EXPECT_EQ(r["parameters"]["limit"], "subscriptions_per_process");
  EXPECT_EQ(r["parameters"]["max"], 2);
  EXPECT_EQ(server_->subscription_count(), 2u);
  // Ending a subscription frees its slot.
  s1.reset();
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(server_->subscription_count(), 1u);
  auto s3 = subscriber();
  EXPECT_EQ(server_->subscription_count(), 2u);
}

TEST_F(ServerTest, SubscriberHangingUpIsCleanedUp) {
  auto s = subscriber();
  EXPECT_EQ(bus_->subscriber_count(), 1u);
  s.reset();
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(server_->connection_count(), 0u);
  EXPECT_EQ(server_->subscription_count(), 0u);
  EXPECT_EQ(bus_->subscriber_count(), 0u);
  publish();  // nobody to deliver to; must not touch the closed connection
  step();
}

TEST_F(ServerTest, SubscribeFromAClientThatAlreadyHungUp) {
  // The first reply then fails with EPIPE and the connection is dropped inside the call that
  // set up the stream; nothing may touch it afterwards.
  {
    VarlinkTestClient c(path_);
    ASSERT_TRUE(c.call("io.storwatch.Subscribe", json::object(), true));
    ::shutdown(c.fd(), SHUT_RDWR);
  }
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(server_->connection_count(), 0u);
  EXPECT_EQ(server_->subscription_count(), 0u);
  publish();
  step();
  // The per-process count was given back: a new subscription is allowed.
  auto s = subscriber();
  EXPECT_EQ(server_->subscription_count(), 1u);
}

// A client that subscribes and never reads must cost bounded memory: the socket fills, then the
// server's output buffer up to its low-water mark, then the bounded queue; after that events are
// counted as lost. When it reads at last it gets everything that was kept plus one stream.lost
// with the exact gap. Meanwhile the daemon serves everyone else.
TEST_F(ServerTest, StuckSubscriberCostsBoundedMemoryAndLearnsExactlyWhatItLost) {
  ServerLimits limits;
  limits.queue_events = 16;
  start(limits);
  auto stuck = subscriber();
  auto fast = subscriber();
  auto other = connect();

  constexpr uint64_t kEvents = 2000;
  constexpr size_t kBatch = 10;   // below queue_events, so a reader that keeps up loses nothing
  constexpr size_t kPad = 1000;   // about 1.2 KB per reply
  std::vector<uint64_t> fast_seqs;
  size_t max_queued = 0, max_output = 0;
  for (uint64_t published = 0; published < kEvents;) {
    for (size_t i = 0; i < kBatch; ++i, ++published) publish("space.threshold", kPad);
    step();
    auto st = server_->stats();
    max_queued = std::max(max_queued, st.max_queued_events);
    max_output = std::max(max_output, st.max_output_bytes);
    fast->read_available();
    while (!fast->messages().empty()) fast_seqs.push_back(fast->next()["parameters"]["event"]["seq"]);
    if (published % 500 == 0) {
      json r = call(*other, "io.storwatch.Echo", {{"n", published}});
      EXPECT_EQ(r["parameters"]["n"], published);
    }
  }
  EXPECT_LE(max_queued, limits.queue_events);
  // The low-water mark of the stream buffer (256 KiB) plus one reply.
  EXPECT_LE(max_output, 256u * 1024 + 4096);
  EXPECT_GT(max_output, 0u);

  // The reader that kept up got every event, in order, and no stream.lost.
  ASSERT_TRUE(fast->wait_for(kEvents - fast_seqs.size(), stepper()));
  while (!fast->messages().empty()) fast_seqs.push_back(fast->next()["parameters"]["event"]["seq"]);
  ASSERT_EQ(fast_seqs.size(), kEvents);
  for (uint64_t i = 0; i < kEvents; ++i) ASSERT_EQ(fast_seqs[i], i + 1);

  // The stuck one reads now: consecutive events from 1, then one stream.lost for the rest.
  std::vector<json> got;
  for (int turn = 0; turn < 1000; ++turn) {
    stuck->read_available();
    while (!stuck->messages().empty()) got.push_back(stuck->next()["parameters"]["event"]);
    if (!got.empty() && got.back()["type"] == "stream.lost") break;
    step();
  }
  ASSERT_FALSE(got.empty());
  ASSERT_EQ(got.back()["type"], "stream.lost");
  size_t delivered = got.size() - 1;
  for (size_t i = 0; i < delivered; ++i) ASSERT_EQ(got[i]["seq"], i + 1) << "at " << i;
  const json& lost = got.back();
  EXPECT_EQ(lost["count"], kEvents - delivered);
  EXPECT_EQ(lost["detail"]["count"], kEvents - delivered);
  EXPECT_EQ(lost["detail"]["first_seq"], delivered + 1);
  EXPECT_EQ(lost["detail"]["last_seq"], kEvents);
  EXPECT_GT(delivered, limits.queue_events);  // the socket and buffer held some
  EXPECT_LT(delivered, kEvents / 2);          // but not everything: the bound is real

  // The stream goes on after the gap.
  publish();
  ASSERT_TRUE(stuck->wait_for(1, stepper()));
  EXPECT_EQ(stuck->next()["parameters"]["event"]["seq"], kEvents + 1);
  EXPECT_EQ(server_->connection_count(), 3u);
}

// A real client reads on its own thread while the loop writes. Then one flush can hand the socket
// everything the stream buffer held while events still wait in the queue; the stream must go on
// without waiting for a notification that will not come (the queue never became empty).
TEST_F(ServerTest, SubscriberReadingConcurrentlyGetsEveryEvent) {
  ServerLimits limits;
  limits.queue_events = 8192;
  start(limits);
  auto s = subscriber();
  constexpr size_t kEvents = 6000;
  int fd = s->fd();
  ASSERT_EQ(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK), 0);
  std::atomic<size_t> received{0};
  std::thread reader([&] {
    std::vector<char> buf(1 << 16);
    while (received < kEvents) {
      ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      received += static_cast<size_t>(std::count(buf.data(), buf.data() + n, '\0'));
    }
  });
  for (size_t i = 0; i < kEvents; ++i) publish("space.threshold", 1000);
  // The real-time bound turns a stalled stream into a failure instead of a hang.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (received < kEvents && std::chrono::steady_clock::now() < deadline) loop_->step(20ms);
  size_t got = received;
  ::shutdown(fd, SHUT_RDWR);  // unblocks the reader if it is still waiting
  reader.join();
  EXPECT_EQ(got, kEvents);
}

// A streaming client that sends a call is refused and closed once it has read the error. Until
// it reads, the connection waits with output pending; more input from it must not make the loop
// spin (level-triggered EPOLLIN on bytes the server no longer reads).
TEST_F(ServerTest, ClosingConnectionDoesNotSpinOnUnreadInput) {
  auto s = subscriber();
  for (int i = 0; i < 2000; ++i) publish("space.threshold", 1000);  // fills its socket
  for (int i = 0; i < 5; ++i) step();
  ASSERT_TRUE(s->call("io.storwatch.Echo"));  // not allowed while streaming
  for (int i = 0; i < 5; ++i) step();
  ASSERT_TRUE(s->call("io.storwatch.Echo"));  // sits unread in the server's receive buffer
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(loop_->step(0ms), 0u) << "the loop keeps running callbacks for an idle connection";
  EXPECT_EQ(server_->connection_count(), 1u);
  // When the client reads, it gets the events, the error, and then the end of the stream.
  EXPECT_TRUE(s->wait_for_eof(stepper(), 10000));
  ASSERT_FALSE(s->messages().empty());
  EXPECT_EQ(s->messages().back()["error"], errs::kInvalidParameter);
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(ServerTest, ClientThatNeverReadsRepliesIsDroppedAtMaxOutput) {
  ServerLimits limits;
  limits.max_output = 64 * 1024;
  start(limits);
  auto greedy = connect();
  auto other = connect();
  std::string req = proto::encode_call({"io.storwatch.Echo", {{"pad", std::string(2000, 'p')}}});
  for (int i = 0; i < 2000 && !greedy->eof(); ++i) {
    // Write what fits without blocking; never read.
    (void)::send(greedy->fd(), req.data(), req.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    step();
    auto st = server_->stats();
    ASSERT_LE(st.max_output_bytes, limits.max_output);
    if (server_->connection_count() == 1) break;
  }
  EXPECT_EQ(server_->connection_count(), 1u);  // the greedy client was dropped
  EXPECT_FALSE(call(*other, "io.storwatch.Echo").contains("error"));
}

}  // namespace
}  // namespace storwatch::daemon
