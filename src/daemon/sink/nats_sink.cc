#include "daemon/sink/nats_sink.h"

#include <fmt/format.h>
#include <nats/nats.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>

#include "proto/nats_error.h"

namespace storwatch::daemon {

namespace {

using proto::nats_error;

std::string short_hostname() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  std::string h(buf);
  if (auto dot = h.find('.'); dot != std::string::npos) h.resize(dot);
  return h.empty() ? "localhost" : h;
}

}  // namespace

std::string nats_subject_token(std::string_view text) {
  std::string out;
  for (char c : text)
    out += (c == '.' || c == '*' || c == '>' || std::isspace(static_cast<unsigned char>(c))) ? '_' : c;
  return out.empty() ? "_" : out;
}

std::string nats_subject(std::string_view host, std::string_view type) {
  return fmt::format("storwatch.{}.{}", host, type);
}

struct NatsSink::Impl {
  NatsSinkOptions options;
  std::string host;  // subject token
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  bool stream_ready = false;

  ~Impl() { disconnect(); }

  void disconnect() {
    if (js) jsCtx_Destroy(js);
    js = nullptr;
    if (conn) {
      natsConnection_Close(conn);
      natsConnection_Destroy(conn);
    }
    conn = nullptr;
    stream_ready = false;
  }

  Result<void> connect() {
    if (conn && natsConnection_Status(conn) == NATS_CONN_STATUS_CLOSED) disconnect();
    if (conn) return {};
    natsOptions* o = nullptr;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) s = natsOptions_SetURL(o, options.url.c_str());
    if (s == NATS_OK) s = natsOptions_SetName(o, fmt::format("storwatchd@{}", host).c_str());
    if (s == NATS_OK) s = natsOptions_SetTimeout(o, options.timeout.count());
    // Once connected, the client reconnects on its own (forever, every 250 ms); publishes made
    // meanwhile wait in its buffer and time out at `timeout` if no server returns by then.
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o, true);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 250);
    if (s != NATS_OK) {
      natsOptions_Destroy(o);
      return fail(nats_error(s, "NATS options"));
    }
    s = natsConnection_Connect(&conn, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
      conn = nullptr;
      return fail(nats_error(s, fmt::format("connecting to {}", options.url)));
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = options.timeout.count();
    s = natsConnection_JetStream(&js, conn, &jo);
    if (s != NATS_OK) {
      Error e = nats_error(s, "JetStream context");
      disconnect();
      return fail(e);
    }
    return {};
  }

  Result<void> ensure_stream() {
    if (stream_ready || !options.create_stream) return {};
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&si, js, options.stream.c_str(), nullptr, &jerr);
    if (s == NATS_OK) {
      jsStreamInfo_Destroy(si);
      stream_ready = true;
      return {};
    }
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
      return fail(nats_error(s, fmt::format("looking up stream {}", options.stream), jerr));
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char* subjects[] = {"storwatch.>"};
    cfg.Name = options.stream.c_str();
    cfg.Description = "storage events of storwatchd hosts";
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = std::chrono::duration_cast<std::chrono::nanoseconds>(options.duplicate_window).count();
    jerr = static_cast<jsErrCode>(0);
    s = js_AddStream(&si, js, &cfg, nullptr, &jerr);
    if (s != NATS_OK) return fail(nats_error(s, fmt::format("creating stream {}", options.stream), jerr));
    jsStreamInfo_Destroy(si);
    stream_ready = true;
    return {};
  }

  Result<void> publish(const BusEvent& b) {
    const Event& e = b.event;
    // A type's dots ("space.threshold") stay token separators: storwatch.h.space.threshold.
    std::string subject = nats_subject(host, e.type);
    std::string id = fmt::format("{}:{}", e.journal_id, e.seq);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id.c_str();
    po.MaxWait = options.timeout.count();
    jsPubAck* ack = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_Publish(&ack, js, subject.c_str(), b.json.data(), static_cast<int>(b.json.size()), &po, &jerr);
    if (s != NATS_OK) {
      // No stream takes the subject (deleted meanwhile): look it up, or create it, next time.
      if (s == NATS_NO_RESPONDERS) stream_ready = false;
      return fail(nats_error(s, fmt::format("publishing event {} to {}", e.seq, subject), jerr));
    }
    jsPubAck_Destroy(ack);  // ack->Duplicate: the stream held it already, which is what we want
    return {};
  }
};

NatsSink::NatsSink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NatsSink::~NatsSink() = default;

Result<std::unique_ptr<NatsSink>> NatsSink::create(NatsSinkOptions options) {
  if (options.url.empty()) return fail_invalid("NATS sink: no url");
  if (options.stream.empty()) return fail_invalid("NATS sink: no stream name");
  auto impl = std::make_unique<Impl>();
  impl->host = nats_subject_token(options.host.empty() ? short_hostname() : options.host);
  impl->options = std::move(options);
  return std::unique_ptr<NatsSink>(new NatsSink(std::move(impl)));
}

Result<size_t> NatsSink::deliver(std::span<const EventPtr> events) {
  if (auto r = impl_->connect(); !r) return fail(r.error());
  if (auto r = impl_->ensure_stream(); !r) return fail(r.error());
  size_t done = 0;
  for (const auto& e : events) {
    auto r = impl_->publish(*e);
    if (!r) {
      if (done > 0) return done;  // the rest is offered again; its error shows on that attempt
      return fail(r.error());
    }
    ++done;
  }
  return done;
}

}  // namespace storwatch::daemon
