// libstorwatch's fleet component: reads the events storwatchd hosts publish to NATS.
#include <storwatch/fleet.h>

#include <fnmatch.h>
#include <nats/nats.h>

#include <cerrno>

#include <string_view>

#include "proto/nats_error.h"

namespace storwatch {

namespace {

using proto::nats_error;

Error stream_error(natsStatus s, const std::string& stream, jsErrCode jerr) {
  if (jerr == JSStreamNotFoundErr || s == NATS_NOT_FOUND)
    return Error::invalid("there is no stream " + stream + " (has any host's NATS sink published yet?)");
  return nats_error(s, "stream " + stream, jerr);
}

std::string filter_subject(const FleetFilter& f) {
  return f.host.empty() ? "storwatch.>" : "storwatch." + f.host + ".>";
}

bool type_matches(const FleetFilter& f, const std::string& type) {
  if (f.types.empty()) return true;
  for (const auto& g : f.types)
    if (::fnmatch(g.c_str(), type.c_str(), 0) == 0) return true;
  return false;
}

// storwatch.<host>.<type...>: the host is the second token.
std::optional<FleetEvent> decode(natsMsg* m) {
  std::string_view subject = natsMsg_GetSubject(m);
  auto first = subject.find('.');
  if (first == std::string_view::npos) return std::nullopt;
  auto second = subject.find('.', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  auto j = nlohmann::json::parse(natsMsg_GetData(m), natsMsg_GetData(m) + natsMsg_GetDataLength(m), nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  auto e = event_from_json(j);
  if (!e) return std::nullopt;
  FleetEvent fe;
  fe.host = std::string(subject.substr(first + 1, second - first - 1));
  fe.event = std::move(*e);
  return fe;
}

struct MsgGuard {
  natsMsg* m = nullptr;
  ~MsgGuard() {
    if (m) natsMsg_Destroy(m);
  }
};

}  // namespace

struct Fleet::Impl {
  FleetOptions options;
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  ~Impl() {
    if (js) jsCtx_Destroy(js);
    if (conn) {
      natsConnection_Close(conn);
      natsConnection_Destroy(conn);
    }
  }
};

struct FleetMonitor::Impl {
  FleetFilter filter;
  natsSubscription* sub = nullptr;
  ~Impl() {
    if (sub) {
      natsSubscription_Unsubscribe(sub);
      natsSubscription_Destroy(sub);
    }
  }
};

Fleet::Fleet(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Fleet::Fleet(Fleet&&) noexcept = default;
Fleet& Fleet::operator=(Fleet&&) noexcept = default;
Fleet::~Fleet() = default;

FleetMonitor::FleetMonitor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FleetMonitor::FleetMonitor(FleetMonitor&&) noexcept = default;
FleetMonitor& FleetMonitor::operator=(FleetMonitor&&) noexcept = default;
FleetMonitor::~FleetMonitor() = default;

Result<Fleet> Fleet::connect(const FleetOptions& options) {
  if (options.url.empty()) return fail_invalid("no NATS url");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  natsOptions* o = nullptr;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetURL(o, options.url.c_str());
  if (s == NATS_OK) s = natsOptions_SetName(o, "storwatch fleet");
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, options.timeout.count());
  // A monitor outlives server restarts: reconnect forever once connected.
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 250);
  if (s != NATS_OK) {
    natsOptions_Destroy(o);
    return fail(nats_error(s, "NATS options"));
  }
  s = natsConnection_Connect(&impl->conn, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    impl->conn = nullptr;
    return fail(nats_error(s, "connecting to " + options.url));
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = options.timeout.count();
  s = natsConnection_JetStream(&impl->js, impl->conn, &jo);
  if (s != NATS_OK) return fail(nats_error(s, "JetStream context"));
  return Fleet(std::move(impl));
}

Result<FleetMonitor> Fleet::monitor(const FleetFilter& filter) {
  auto m = std::make_unique<FleetMonitor::Impl>();
  m->filter = filter;
  std::string subject = filter_subject(filter);
  natsStatus s = natsConnection_SubscribeSync(&m->sub, impl_->conn, subject.c_str());
  if (s != NATS_OK) return fail(nats_error(s, "subscribing to " + subject));
  // The subscription is registered with the server before monitor() returns.
  s = natsConnection_FlushTimeout(impl_->conn, impl_->options.timeout.count());
  if (s != NATS_OK) return fail(nats_error(s, "subscribing to " + subject));
  return FleetMonitor(std::move(m));
}

Result<std::optional<FleetEvent>> FleetMonitor::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::optional<FleetEvent>();
    MsgGuard g;
    natsStatus s = natsSubscription_NextMsg(&g.m, impl_->sub, left.count());
    if (s == NATS_TIMEOUT) return std::optional<FleetEvent>();
    if (s != NATS_OK) return fail(nats_error(s, "receiving events"));
    auto e = decode(g.m);
    if (e && type_matches(impl_->filter, e->event.type)) return e;
  }
}

Result<uint64_t> Fleet::stream_messages() {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, impl_->js, impl_->options.stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK) return fail(stream_error(s, impl_->options.stream, jerr));
  uint64_t n = si->State.Msgs;
  jsStreamInfo_Destroy(si);
  return n;
}

Result<size_t> Fleet::history(const FleetHistoryOptions& options,
                              const std::function<void(const FleetEvent&)>& on_event) {
  const std::string& stream = impl_->options.stream;
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, impl_->js, stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK) return fail(stream_error(s, stream, jerr));
  uint64_t msgs = si->State.Msgs, end_seq = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  if (msgs == 0) return size_t{0};

  // An ordered consumer: an ephemeral push consumer without acks, recreated by the library on a
  // gap, so the messages arrive once each and in stream order.
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Ordered = true;
  if (options.since) {
    so.Config.DeliverPolicy = js_DeliverByStartTime;
    so.Config.OptStartTime =
        std::chrono::duration_cast<std::chrono::nanoseconds>(options.since->time_since_epoch()).count();
  } else {
    so.Config.DeliverPolicy = js_DeliverAll;
  }
  std::string subject = filter_subject(options.filter);
  natsSubscription* sub = nullptr;
  s = js_SubscribeSync(&sub, impl_->js, subject.c_str(), nullptr, &so, &jerr);
  if (s != NATS_OK) return fail(nats_error(s, "reading stream " + stream, jerr));
  struct SubGuard {
    natsSubscription* sub;
    ~SubGuard() {
      natsSubscription_Unsubscribe(sub);
      natsSubscription_Destroy(sub);
    }
  } guard{sub};

  // What the consumer has to deliver in all (delivered so far plus pending): nothing at all when
  // the filter or the start time matches no message, so there is nothing to wait for.
  std::optional<uint64_t> total;
  jsConsumerInfo* ci = nullptr;
  if (natsSubscription_GetConsumerInfo(&ci, sub, nullptr, &jerr) == NATS_OK) {
    total = ci->NumPending + ci->Delivered.Consumer;
    jsConsumerInfo_Destroy(ci);
  }
  size_t passed = 0;
  uint64_t received = 0;
  while (!total || received < *total) {
    MsgGuard g;
    s = natsSubscription_NextMsg(&g.m, sub, impl_->options.timeout.count());
    if (s != NATS_OK) return fail(nats_error(s, "reading stream " + stream));
    ++received;
    jsMsgMetaData* meta = nullptr;
    uint64_t seq = 0, pending = 0;
    if (natsMsg_GetMetaData(&meta, g.m) == NATS_OK) {
      seq = meta->Sequence.Stream;
      pending = meta->NumPending;
      jsMsgMetaData_Destroy(meta);
    }
    if (auto e = decode(g.m); e && type_matches(options.filter, e->event.type)) {
      e->stream_seq = seq;
      on_event(*e);
      ++passed;
      if (options.limit && passed >= options.limit) break;
    }
    if (pending == 0 || seq >= end_seq) break;
  }
  return passed;
}

}  // namespace storwatch
