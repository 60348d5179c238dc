// Sink: a destination for events (journald, hooks, Alertmanager, NATS JetStream). Every sink is fed
// from the journal by its own SinkRunner thread, from its own cursor (the last seq it delivered,
// kept in the state database), so a sink that is slow, down or hung never delays the event loop,
// the subscribers or the other sinks, and a sink that was down catches up when it returns.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "base/result.h"
#include "daemon/bus/bus.h"

namespace storwatch::daemon {

class Sink {
 public:
  virtual ~Sink() = default;

  // Short and stable ("journald", "hooks", "alertmanager", "nats"): the key of the sink's
  // cursor and its name in Doctor and the metrics.
  virtual std::string name() const = 0;

  // Events this sink wants at all; the rest advance the cursor without a delivery.
  virtual bool wants(const Event&) const { return true; }

  // Delivers `events` (in seq order, all wanted). Returns how many from the front were delivered
  // (as far as the destination acknowledges); the runner advances the cursor past those and offers
  // the rest again later. An error means nothing more could be delivered now: the runner retries
  // with backoff and reports the error as the sink's state. Runs on the runner's thread.
  [[nodiscard]] virtual Result<size_t> deliver(std::span<const EventPtr> events) = 0;
};

}  // namespace storwatch::daemon
