#include "daemon/bus/bus.h"

#include <algorithm>

namespace storwatch::daemon {

EventPtr make_bus_event(Event e) {
  auto b = std::make_shared<BusEvent>();
  b->json = event_to_json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  b->event = std::move(e);
  return b;
}

Subscriber::Subscriber(size_t capacity, Filter filter, std::function<void()> notify, const Clock* clock)
    : capacity_(std::max<size_t>(1, capacity)),
      clock_(clock),
      filter_(std::move(filter)),
      notify_(std::move(notify)) {}

void Subscriber::offer(const EventPtr& e) {
  if (filter_ && !filter_(e->event)) return;
  bool was_empty = empty();
  // After a gap the stream.lost marker goes in first and takes a slot of its own, so the queue
  // never holds more than capacity_ entries. (With no room for both, the gap grows; pop() hands
  // out the marker once the queue has drained.)
  size_t needed = lost_ > 0 ? 2 : 1;
  if (queue_.size() + needed > capacity_) {
    if (lost_ == 0) lost_first_ = e->event.seq;
    lost_last_ = e->event.seq;
    ++lost_;
    ++lost_total_;
    return;
  }
  if (lost_ > 0) queue_.push_back(take_lost());  // the gap goes where it happened
  queue_.push_back(e);
  if (was_empty && notify_) notify_();
}

EventPtr Subscriber::take_lost() {
  Event l;
  l.type = "stream.lost";
  l.severity = Severity::warning;
  l.source = "bus";
  l.count = lost_;
  l.time = l.first_time = l.last_time = clock_ ? clock_->wall_now() : std::chrono::system_clock::now();
  // Per-subscriber and never journaled: it has no sequence number of its own (seq 0).
  l.detail = {{"count", lost_}, {"first_seq", lost_first_}, {"last_seq", lost_last_},
              {"reason", "subscriber queue full"}};
  lost_ = 0;
  return make_bus_event(std::move(l));
}

EventPtr Subscriber::pop() {
  if (!queue_.empty()) {
    EventPtr e = std::move(queue_.front());
    queue_.pop_front();
    return e;
  }
  if (lost_ > 0) return take_lost();
  return nullptr;
}

Bus::Bus(const Clock& clock, std::string journal_id, uint64_t reserved, Reserve reserve)
    : clock_(clock),
      journal_id_(std::move(journal_id)),
      next_seq_(reserved + 1),
      reserved_(reserved),
      reserve_(std::move(reserve)) {}

Result<EventPtr> Bus::publish(Event e) {
  if (next_seq_ > reserved_) {
    uint64_t upto = next_seq_ + kReserveBlock - 1;
    if (reserve_) {
      auto r = reserve_(upto);
      if (!r) return fail(r.error());
    }
    reserved_ = upto;
  }
  e.seq = next_seq_++;
  e.journal_id = journal_id_;
  if (e.time == Event::Time{}) e.time = clock_.wall_now();
  if (e.first_time == Event::Time{}) e.first_time = e.time;
  if (e.last_time == Event::Time{}) e.last_time = e.time;
  EventPtr p = make_bus_event(std::move(e));
  for (auto& o : observers_) o(p);
  bool dead = false;
  for (auto& w : subscribers_) {
    if (auto s = w.lock())
      s->offer(p);
    else
      dead = true;
  }
  if (dead)
    std::erase_if(subscribers_, [](const std::weak_ptr<Subscriber>& w) { return w.expired(); });
  return p;
}

std::shared_ptr<Subscriber> Bus::subscribe(size_t capacity, Subscriber::Filter filter,
                                           std::function<void()> notify) {
  auto s = std::make_shared<Subscriber>(capacity, std::move(filter), std::move(notify), &clock_);
  subscribers_.push_back(s);
  return s;
}

void Bus::add_observer(std::function<void(const EventPtr&)> observer) {
  observers_.push_back(std::move(observer));
}

size_t Bus::subscriber_count() const {
  return std::count_if(subscribers_.begin(), subscribers_.end(),
                       [](const std::weak_ptr<Subscriber>& w) { return !w.expired(); });
}

}  // namespace storwatch::daemon
