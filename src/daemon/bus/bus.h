// Bus: stamps each event with the next sequence number and hands it to observers (print, journal,
// sinks) and to every subscriber whose filter matches. Producers never wait for consumers: each
// subscriber has a bounded queue and, when it overflows, later gets one stream.lost event with the
// exact number and range it missed.
//
// Sequence numbers are reserved durably in blocks before use (reserve callback), so after a crash
// numbering continues past the reserved block and a number is never handed out twice.
// Loop-thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <storwatch/event.h>

#include "base/clock.h"
#include "base/result.h"

namespace storwatch::daemon {

// An event as published: immutable, shared by every queue, serialised to JSON once.
struct BusEvent {
  Event event;
  std::string json;  // event_to_json(event).dump()
};
using EventPtr = std::shared_ptr<const BusEvent>;

EventPtr make_bus_event(Event e);

class Subscriber {
 public:
  using Filter = std::function<bool(const Event&)>;
  // `clock` stamps stream.lost events (the system clock when null).
  Subscriber(size_t capacity, Filter filter, std::function<void()> notify,
             const Clock* clock = nullptr);

  // Bus side: queue the event if it matches; count it as lost if the queue is full.
  void offer(const EventPtr& e);
  // Consumer side: the next event, with a stream.lost event where a gap fell.
  EventPtr pop();
  bool empty() const { return queue_.empty() && lost_ == 0; }
  size_t queued() const { return queue_.size(); }
  uint64_t lost_total() const { return lost_total_; }

 private:
  EventPtr take_lost();

  size_t capacity_;
  const Clock* clock_;
  Filter filter_;
  std::function<void()> notify_;
  std::deque<EventPtr> queue_;
  uint64_t lost_ = 0, lost_first_ = 0, lost_last_ = 0, lost_total_ = 0;
};

class Bus {
 public:
  using Reserve = std::function<Result<void>(uint64_t upto)>;
  static constexpr uint64_t kReserveBlock = 65536;

  // `reserved`: the highest number reserved before (numbering continues after it).
  Bus(const Clock& clock, std::string journal_id, uint64_t reserved, Reserve reserve);

  // Stamps seq, journal_id and times (when unset) and delivers. Fails only when sequence numbers
  // cannot be reserved durably; the event is then not published.
  [[nodiscard]] Result<EventPtr> publish(Event e);

  // The subscriber lives as long as the caller holds it; the bus keeps only a weak reference.
  std::shared_ptr<Subscriber> subscribe(size_t capacity, Subscriber::Filter filter,
                                        std::function<void()> notify);
  // Observers see every event, in order (printing, journal, sinks).
  void add_observer(std::function<void(const EventPtr&)> observer);

  const std::string& journal_id() const { return journal_id_; }
  uint64_t last_seq() const { return next_seq_ - 1; }
  size_t subscriber_count() const;

 private:
  const Clock& clock_;
  std::string journal_id_;
  uint64_t next_seq_;
  uint64_t reserved_;
  Reserve reserve_;
  std::vector<std::weak_ptr<Subscriber>> subscribers_;
  std::vector<std::function<void(const EventPtr&)>> observers_;
};

}  // namespace storwatch::daemon
