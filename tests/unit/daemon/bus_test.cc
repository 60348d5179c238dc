#include "daemon/bus/bus.h"

#include <gtest/gtest.h>

#include <vector>

#include "support/fake_clock.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using test::FakeClock;

Event make(std::string type = "space.threshold", Severity sev = Severity::warning) {
  Event e;
  e.type = std::move(type);
  e.severity = sev;
  e.source = "test";
  return e;
}

class BusTest : public ::testing::Test {
 protected:
  // A bus that records its reservations.
  std::unique_ptr<Bus> make_bus(uint64_t reserved = 0) {
    return std::make_unique<Bus>(clock_, "journal-1", reserved, [this](uint64_t upto) -> Result<void> {
      if (fail_reserve_) return fail_errno(ENOSPC, "reserving");
      reservations_.push_back(upto);
      return {};
    });
  }
  // Everything a subscriber has, in order.
  static std::vector<EventPtr> drain(Subscriber& s) {
    std::vector<EventPtr> out;
    while (auto e = s.pop()) out.push_back(e);
    return out;
  }
  FakeClock clock_;
  std::vector<uint64_t> reservations_;
  bool fail_reserve_ = false;
};

TEST_F(BusTest, StampsStrictlyIncreasingSequenceNumbersAndJournalId) {
  auto bus = make_bus();
  uint64_t prev = 0;
  for (int i = 0; i < 100; ++i) {
    auto e = bus->publish(make());
    ASSERT_TRUE(e) << e.error().message();
    EXPECT_GT((*e)->event.seq, prev);
    EXPECT_EQ((*e)->event.seq, prev + 1);
    EXPECT_EQ((*e)->event.journal_id, "journal-1");
    prev = (*e)->event.seq;
  }
  EXPECT_EQ(prev, 100u);
  EXPECT_EQ(bus->last_seq(), 100u);
}

TEST_F(BusTest, StampsTimesFromTheClockAndSerialisesOnce) {
  auto bus = make_bus();
  auto e = bus->publish(make());
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)->event.time, clock_.wall_now());
  EXPECT_EQ((*e)->event.first_time, clock_.wall_now());
  EXPECT_EQ((*e)->event.last_time, clock_.wall_now());
  auto j = nlohmann::json::parse((*e)->json);
  EXPECT_EQ(j["seq"], 1);
  EXPECT_EQ(j["type"], "space.threshold");

  Event given = make();
  given.time = clock_.wall_now() - 1h;
  auto g = bus->publish(given);
  ASSERT_TRUE(g);
  EXPECT_EQ((*g)->event.time, clock_.wall_now() - 1h);  // a source's own time is kept
}

TEST_F(BusTest, ReservesOneBlockAtATime) {
  auto bus = make_bus();
  ASSERT_TRUE(bus->publish(make()));
  EXPECT_EQ(reservations_, (std::vector<uint64_t>{Bus::kReserveBlock}));
  for (uint64_t i = 2; i <= Bus::kReserveBlock; ++i) ASSERT_TRUE(bus->publish(make()));
  EXPECT_EQ(reservations_.size(), 1u);  // the whole first block needed one reservation
  auto e = bus->publish(make());
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)->event.seq, Bus::kReserveBlock + 1);
  EXPECT_EQ(reservations_, (std::vector<uint64_t>{Bus::kReserveBlock, 2 * Bus::kReserveBlock}));
}

TEST_F(BusTest, PublishFailsWhenReservationFailsAndNothingIsDelivered) {
  auto bus = make_bus();
  auto sub = bus->subscribe(16, nullptr, nullptr);
  int observed = 0;
  bus->add_observer([&](const EventPtr&) { ++observed; });
  fail_reserve_ = true;
  auto e = bus->publish(make());
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().errno_value(), ENOSPC);
  EXPECT_EQ(observed, 0);
  EXPECT_TRUE(sub->empty());
  EXPECT_EQ(bus->last_seq(), 0u);
  // Once the disk has room again, numbering goes on without a hole.
  fail_reserve_ = false;
  auto ok = bus->publish(make());
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)->event.seq, 1u);
  EXPECT_EQ(observed, 1);
}

TEST_F(BusTest, NumberingContinuesAfterTheReservedBlockAfterACrash) {
  // The previous run reserved up to 65536 and may have used any of those numbers before dying.
  auto bus = make_bus(Bus::kReserveBlock);
  EXPECT_EQ(bus->last_seq(), Bus::kReserveBlock);
  auto e = bus->publish(make());
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)->event.seq, Bus::kReserveBlock + 1);
  EXPECT_EQ(reservations_, (std::vector<uint64_t>{2 * Bus::kReserveBlock}));
}

TEST_F(BusTest, ObserversSeeEveryEventInOrder) {
  auto bus = make_bus();
  std::vector<uint64_t> a, b;
  bus->add_observer([&](const EventPtr& e) { a.push_back(e->event.seq); });
  bus->add_observer([&](const EventPtr& e) { b.push_back(e->event.seq); });
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(bus->publish(make()));
  EXPECT_EQ(a, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(a, b);
}

TEST_F(BusTest, FilterSelectsWhatASubscriberGets) {
  auto bus = make_bus();
  auto errors = bus->subscribe(16, [](const Event& e) { return e.severity >= Severity::error; }, nullptr);
  auto all = bus->subscribe(16, nullptr, nullptr);
  ASSERT_TRUE(bus->publish(make("a", Severity::info)));
  ASSERT_TRUE(bus->publish(make("b", Severity::error)));
  ASSERT_TRUE(bus->publish(make("c", Severity::critical)));
  auto got = drain(*errors);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]->event.type, "b");
  EXPECT_EQ(got[1]->event.type, "c");
  EXPECT_EQ(drain(*all).size(), 3u);
}

TEST_F(BusTest, NotifiesOnlyWhenTheQueueBecomesNonEmpty) {
  auto bus = make_bus();
  int notified = 0;
  auto sub = bus->subscribe(16, nullptr, [&] { ++notified; });
  ASSERT_TRUE(bus->publish(make()));
  ASSERT_TRUE(bus->publish(make()));
  EXPECT_EQ(notified, 1);
  drain(*sub);
  ASSERT_TRUE(bus->publish(make()));
  EXPECT_EQ(notified, 2);
}

TEST_F(BusTest, SlowSubscriberGetsOneStreamLostWithTheExactGap) {
  constexpr size_t kCap = 8;
  constexpr uint64_t kEvents = 100;
  auto bus = make_bus();
  auto slow = bus->subscribe(kCap, nullptr, nullptr);
  auto fast = bus->subscribe(kCap, nullptr, nullptr);
  std::vector<uint64_t> fast_seqs;
  for (uint64_t i = 0; i < kEvents; ++i) {
    ASSERT_TRUE(bus->publish(make()));
    for (auto& e : drain(*fast)) fast_seqs.push_back(e->event.seq);  // keeps up
  }
  // The fast one got every event, no stream.lost.
  ASSERT_EQ(fast_seqs.size(), kEvents);
  for (uint64_t i = 0; i < kEvents; ++i) EXPECT_EQ(fast_seqs[i], i + 1);
  EXPECT_EQ(fast->lost_total(), 0u);

  EXPECT_LE(slow->queued(), kCap);
  auto got = drain(*slow);
  ASSERT_EQ(got.size(), kCap + 1);
  for (size_t i = 0; i < kCap; ++i) EXPECT_EQ(got[i]->event.seq, i + 1);
  const Event& lost = got[kCap]->event;
  EXPECT_EQ(lost.type, "stream.lost");
  EXPECT_EQ(lost.seq, 0u);  // per subscriber, not a bus event
  EXPECT_EQ(lost.count, kEvents - kCap);
  EXPECT_EQ(lost.detail["count"], kEvents - kCap);
  EXPECT_EQ(lost.detail["first_seq"], kCap + 1);
  EXPECT_EQ(lost.detail["last_seq"], kEvents);
  EXPECT_EQ(lost.time, clock_.wall_now());  // stamped by the bus's clock, like every event
  EXPECT_EQ(slow->lost_total(), kEvents - kCap);
  EXPECT_TRUE(slow->empty());
  EXPECT_EQ(slow->pop(), nullptr);
}

TEST_F(BusTest, StreamLostSitsWhereTheGapHappened) {
  auto bus = make_bus();
  auto sub = bus->subscribe(4, nullptr, nullptr);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(bus->publish(make()));  // 1-4 queued, 5-6 lost
  EXPECT_EQ(sub->pop()->event.seq, 1u);
  EXPECT_EQ(sub->pop()->event.seq, 2u);
  ASSERT_TRUE(bus->publish(make()));  // 7 fits again: after the gap marker
  EXPECT_LE(sub->queued(), 4u);
  auto got = drain(*sub);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0]->event.seq, 3u);
  EXPECT_EQ(got[1]->event.seq, 4u);
  EXPECT_EQ(got[2]->event.type, "stream.lost");
  EXPECT_EQ(got[2]->event.count, 2u);
  EXPECT_EQ(got[2]->event.detail["first_seq"], 5);
  EXPECT_EQ(got[2]->event.detail["last_seq"], 6);
  EXPECT_EQ(got[3]->event.seq, 7u);
}

TEST_F(BusTest, QueueNeverHoldsMoreThanItsCapacity) {
  auto bus = make_bus();
  constexpr size_t kCap = 4;
  auto sub = bus->subscribe(kCap, nullptr, nullptr);
  std::vector<EventPtr> got;
  // Alternate bursts and partial reads, checking the bound after every step.
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < round % 7; ++i) {
      ASSERT_TRUE(bus->publish(make()));
      ASSERT_LE(sub->queued(), kCap);
    }
    for (int i = 0; i < round % 3; ++i)
      if (auto e = sub->pop()) got.push_back(e);
  }
  for (auto& e : drain(*sub)) got.push_back(e);
  // Every event is accounted for exactly once: delivered, or counted in a stream.lost whose
  // range is exactly the delivered gap.
  uint64_t next = 1;
  for (const auto& e : got) {
    if (e->event.type == "stream.lost") {
      EXPECT_EQ(e->event.detail["first_seq"], next);
      next += e->event.count;
      EXPECT_EQ(e->event.detail["last_seq"], next - 1);
    } else {
      EXPECT_EQ(e->event.seq, next);
      ++next;
    }
  }
  EXPECT_EQ(next - 1, bus->last_seq());
}

TEST_F(BusTest, CapacityOneStillReportsTheGap) {
  auto bus = make_bus();
  auto sub = bus->subscribe(1, nullptr, nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(bus->publish(make()));
  auto got = drain(*sub);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]->event.seq, 1u);
  EXPECT_EQ(got[1]->event.type, "stream.lost");
  EXPECT_EQ(got[1]->event.count, 2u);
  ASSERT_TRUE(bus->publish(make()));
  EXPECT_EQ(sub->pop()->event.seq, 4u);
}

TEST_F(BusTest, ReleasedSubscribersAreDropped) {
  auto bus = make_bus();
  auto a = bus->subscribe(4, nullptr, nullptr);
  auto b = bus->subscribe(4, nullptr, nullptr);
  EXPECT_EQ(bus->subscriber_count(), 2u);
  std::weak_ptr<Subscriber> weak = a;
  a.reset();
  EXPECT_TRUE(weak.expired());  // the bus holds no strong reference
  EXPECT_EQ(bus->subscriber_count(), 1u);
  ASSERT_TRUE(bus->publish(make()));
  EXPECT_EQ(bus->subscriber_count(), 1u);
  EXPECT_EQ(b->pop()->event.seq, 1u);
}

}  // namespace
}  // namespace storwatch::daemon
