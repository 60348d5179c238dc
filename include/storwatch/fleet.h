// Fleet: the events of many storwatchd hosts, read from NATS (docs/fleet.md). Each host's NATS
// sink publishes its events on subject storwatch.<host>.<type> into a JetStream stream
// (STORWATCH by default); a Fleet reads them live (monitor) or from the stream (history).
//
// A Fleet is one NATS connection; neither it nor a FleetMonitor is thread-safe (use one per
// thread). No exceptions; every call returns Result. Needs libnats (the NATS C client).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <storwatch/event.h>
#include <storwatch/result.h>

namespace storwatch {

struct FleetEvent {
  std::string host;         // the subject's host token
  Event event;              // as the host's storwatchd published it (its seq and journal_id)
  uint64_t stream_seq = 0;  // the message's sequence number in the stream (0 when read live)
};

struct FleetOptions {
  std::string url;                   // nats://host:4222; several separated by commas
  std::string stream = "STORWATCH";  // the JetStream stream the hosts publish to
  std::chrono::milliseconds timeout{5000};
};

struct FleetFilter {
  std::string host;                // only this host's events (empty: every host)
  std::vector<std::string> types;  // globs, e.g. "space.*" (empty: every type)
};

// Live events, from the moment monitor() returned.
class FleetMonitor {
 public:
  FleetMonitor(FleetMonitor&&) noexcept;
  FleetMonitor& operator=(FleetMonitor&&) noexcept;
  ~FleetMonitor();
  // Blocks up to `timeout` for the next matching event; nullopt on timeout. An error means the
  // connection is closed for good (the client reconnects on its own before that).
  [[nodiscard]] Result<std::optional<FleetEvent>> wait(std::chrono::milliseconds timeout);

 private:
  friend class Fleet;
  struct Impl;
  explicit FleetMonitor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct FleetHistoryOptions {
  FleetFilter filter;
  std::optional<std::chrono::system_clock::time_point> since;  // by the stream's receive time
  size_t limit = 0;                                             // at most this many (0: all)
};

class Fleet {
 public:
  [[nodiscard]] static Result<Fleet> connect(const FleetOptions& options);
  Fleet(Fleet&&) noexcept;
  Fleet& operator=(Fleet&&) noexcept;
  ~Fleet();

  // Subscribes to the hosts' events as they are published (core NATS: no stream needed).
  [[nodiscard]] Result<FleetMonitor> monitor(const FleetFilter& filter);
  // Calls `on_event` for the stream's events, oldest first, up to those stored when history()
  // began. Returns how many were passed to `on_event`.
  [[nodiscard]] Result<size_t> history(const FleetHistoryOptions& options,
                                       const std::function<void(const FleetEvent&)>& on_event);
  // The number of messages the stream holds.
  [[nodiscard]] Result<uint64_t> stream_messages();

 private:
  struct Impl;
  explicit Fleet(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace storwatch
