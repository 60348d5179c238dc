// NatsSink: publishes every event to a NATS JetStream stream, for fleets (docs/fleet.md). The
// subject is storwatch.<host>.<type> and the message id (header Nats-Msg-Id) is
// "<journal_id>:<seq>", so the server drops a message it already holds: an event whose PubAck was
// lost (server killed, connection cut) is published again by the SinkRunner and stored once.
// An event counts as delivered only when its PubAck arrived, so the runner's cursor never passes
// an event the stream does not hold.
//
// Connects lazily, on the runner's thread, and again after the connection is lost; every call
// is bounded by `timeout`. Not thread-safe: the SinkRunner calls deliver() from one thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "daemon/sink/sink.h"

namespace storwatch::daemon {

struct NatsSinkOptions {
  std::string url;                  // nats://host:4222; several separated by commas
  std::string stream = "STORWATCH";  // the JetStream stream holding subjects storwatch.>
  std::string host;                 // the subject's host token; empty: this machine's short hostname
  bool create_stream = true;        // create the stream (file storage) when it does not exist
  std::chrono::milliseconds duplicate_window{std::chrono::minutes(10)};  // for a stream it creates
  std::chrono::milliseconds timeout{5000};  // connect, and wait for each PubAck
};

// A subject token from a hostname: '.', '*', '>' and white space (which would change the
// subject's structure) become '_'.
std::string nats_subject_token(std::string_view text);
// The subject of `type` published by `host` (already a token).
std::string nats_subject(std::string_view host, std::string_view type);

class NatsSink final : public Sink {
 public:
  [[nodiscard]] static Result<std::unique_ptr<NatsSink>> create(NatsSinkOptions options);
  ~NatsSink() override;

  std::string name() const override { return "nats"; }
  [[nodiscard]] Result<size_t> deliver(std::span<const EventPtr> events) override;

 private:
  struct Impl;
  explicit NatsSink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace storwatch::daemon
