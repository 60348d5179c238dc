// Block-layer error merging (BlockErrorMerger, stepped with a FakeClock) and the uevent parser.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <string_view>

#include "daemon/source/block_error_merger.h"
#include "daemon/source/kmsg_parser.h"
#include "daemon/source/uevent_source.h"
#include "support/fake_clock.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using Merged = BlockErrorMerger::Merged;

BlockErrorMerger::Report read_at(uint64_t sector, std::string dev = "loop3") {
  BlockErrorMerger::Report r;
  r.device = std::move(dev);
  r.op = "READ";
  r.subtype = "io";
  r.err = 5;
  r.sector = sector;
  return r;
}

TEST(Merger, ContiguousBurstFoldedIntoOneRange) {
  test::FakeClock clock;
  BlockErrorMerger m(clock);
  for (uint64_t s = 2048; s < 2048 + 16; ++s) {
    EXPECT_TRUE(m.add(read_at(s)).empty());
    clock.advance(1ms);
  }
  EXPECT_TRUE(m.expire().empty());
  ASSERT_TRUE(m.next_deadline());
  clock.advance(BlockErrorMerger::Options{}.window);
  auto out = m.expire();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].device, "loop3");
  EXPECT_EQ(out[0].sector, 2048u);
  EXPECT_EQ(out[0].sectors, 16u);
  EXPECT_EQ(out[0].requests, 16u);
  EXPECT_EQ(out[0].count(), 16u);
  EXPECT_EQ(out[0].err, 5);
  EXPECT_EQ(m.open(), 0u);
  EXPECT_FALSE(m.next_deadline());
}

TEST(Merger, RepeatedAndFourKilobyteRequestsAreAdjacent) {
  test::FakeClock clock;
  BlockErrorMerger m(clock);
  // Retries of one sector overlap; 4 KiB requests (8 sectors apart) without a length are adjacent.
  for (uint64_t s : {100, 100, 108, 116, 116}) EXPECT_TRUE(m.add(read_at(s)).empty());
  auto out = m.flush_all();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].sector, 100u);
  EXPECT_EQ(out[0].sectors, 17u);  // up to the first sector of the last request
  EXPECT_EQ(out[0].requests, 5u);
}

TEST(Merger, KnownLengthsExtendTheRange) {
  test::FakeClock clock;
  BlockErrorMerger m(clock);
  auto r = read_at(0);
  r.sectors = 8;
  m.add(r);
  r.sector = 8;
  m.add(r);
  auto out = m.flush_all();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].sectors, 16u);
  EXPECT_TRUE(out[0].sectors_known);
}

TEST(Merger, GapsAreNotMerged) {
  test::FakeClock clock;
  BlockErrorMerger m(clock);
  EXPECT_TRUE(m.add(read_at(1000)).empty());
  auto closed = m.add(read_at(5000));  // far away: closes the first range
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].sector, 1000u);
  EXPECT_EQ(closed[0].requests, 1u);
  closed = m.add(read_at(4000));  // before the open range: not contiguous
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].sector, 5000u);
  auto out = m.flush_all();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].sector, 4000u);
}

TEST(Merger, OtherDeviceOpOrSubtypeIsAnotherRange) {
  test::FakeClock clock;
  BlockErrorMerger m(clock);
  m.add(read_at(10));
  m.add(read_at(11, "loop4"));
  auto w = read_at(12);
  w.op = "WRITE";
  m.add(w);
  auto t = read_at(13);
  t.subtype = "medium";
  m.add(t);
  EXPECT_EQ(m.open(), 4u);
  auto out = m.flush_all();
  EXPECT_EQ(out.size(), 4u);
  for (const auto& x : out) EXPECT_EQ(x.requests, 1u);
}

TEST(Merger, WindowAndMaxHold) {
  test::FakeClock clock;
  BlockErrorMerger::Options o;
  o.window = 100ms;
  o.max_hold = 1000ms;
  BlockErrorMerger m(clock, o);
  m.add(read_at(0));
  clock.advance(150ms);  // the window passed: the next contiguous report opens a new range
  auto closed = m.add(read_at(1));
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].requests, 1u);
  m.flush_all();
  // A continuing burst yields one range per max_hold.
  uint64_t total = 0;
  size_t ranges = 0;
  for (uint64_t s = 0; s < 100; ++s) {
    for (auto& x : m.add(read_at(s))) total += x.count(), ++ranges;
    for (auto& x : m.expire()) total += x.count(), ++ranges;
    clock.advance(50ms);
  }
  for (auto& x : m.flush_all()) total += x.count(), ++ranges;
  EXPECT_EQ(total, 100u);
  EXPECT_EQ(ranges, 5u);  // 5 s of reports, one range per second
}

TEST(Merger, SuppressedCountsGoToTheNextReportOfTheDevice) {
  test::FakeClock clock;
  BlockErrorMerger m(clock);
  m.suppressed("loop3", 15);
  m.suppressed("loop9", 2);  // no report of loop9 follows: dropped at flush
  m.add(read_at(16384));
  m.add(read_at(16385));
  auto out = m.flush_all();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].requests, 2u);
  EXPECT_EQ(out[0].suppressed, 15u);
  EXPECT_EQ(out[0].count(), 17u);
  m.add(read_at(1));
  out = m.flush_all();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].suppressed, 0u);
}

TEST(Merger, FromKmsgLines) {
  // The captured lines of a rate-limited burst (tests/fixtures/kmsg/block.txt) as the manager
  // feeds them: 10 printed, "15 callbacks suppressed", then one more.
  test::FakeClock clock;
  BlockErrorMerger m(clock);
  auto feed = [&](std::string_view raw) {
    auto rec = parse_kmsg_record(raw);
    ASSERT_TRUE(rec);
    auto b = parse_block_line(*rec);
    ASSERT_TRUE(b);
    if (b->subtype == "suppressed") {
      m.suppressed("loop1", b->count);  // KmsgSource names the device from the next line
      return;
    }
    BlockErrorMerger::Report r;
    r.device = b->device;
    r.op = b->op;
    r.subtype = b->subtype;
    r.err = b->err;
    r.sector = b->sector.value_or(0);
    m.add(r);
  };
  for (int i = 0; i < 10; ++i)
    feed("3,4546,3719706940,-;I/O error, dev loop1, sector 16384 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2");
  auto out = m.expire();
  EXPECT_TRUE(out.empty());
  clock.advance(5s);
  out = m.expire();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].count(), 10u);
  EXPECT_EQ(out[0].sector, 16384u);
  EXPECT_EQ(out[0].sectors, 1u);
  EXPECT_EQ(out[0].op, "READ");
  EXPECT_EQ(out[0].subtype, "io");
  EXPECT_EQ(out[0].err, 5);
  feed("4,4556,3725223522,-;blk_print_req_error: 15 callbacks suppressed");
  feed("3,4557,3725223528,-;I/O error, dev loop1, sector 16384 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2");
  out = m.flush_all();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].count(), 16u);
  EXPECT_EQ(out[0].suppressed, 15u);
}

// --- uevents

std::string msg(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (auto p : parts) {
    s += p;
    s.push_back('\0');
  }
  return s;
}

TEST(Uevent, ParsesLoopResize) {
  auto u = parse_uevent(msg({"change@/devices/virtual/block/loop3", "ACTION=change",
                             "DEVPATH=/devices/virtual/block/loop3", "SUBSYSTEM=block", "RESIZE=1", "MAJOR=7",
                             "MINOR=3", "DEVNAME=loop3", "DEVTYPE=disk", "DISKSEQ=42", "SEQNUM=5000"}));
  ASSERT_TRUE(u) << u.error().message();
  EXPECT_EQ(u->action, "change");
  EXPECT_EQ(u->devpath, "/devices/virtual/block/loop3");
  EXPECT_EQ(u->get("MAJOR"), "7");
  auto e = uevent_to_event(*u, uint64_t{8 << 20});
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type, "device.resized");
  EXPECT_EQ(e->source, "uevent");
  ASSERT_TRUE(e->device);
  EXPECT_EQ(e->device->major, 7u);
  EXPECT_EQ(e->device->minor, 3u);
  EXPECT_EQ(e->device->name, "loop3");
  EXPECT_EQ(e->detail["size"], 8u << 20);
  EXPECT_EQ(e->detail["diskseq"], 42);
}

TEST(Uevent, ActionsMapToTypes) {
  auto ev = [](std::string action, std::string extra = {}) {
    std::string m = action + "@/devices/virtual/block/loop5";
    m.push_back('\0');
    for (std::string kv : {"ACTION=" + action, std::string("SUBSYSTEM=block"), std::string("MAJOR=7"),
                           std::string("MINOR=5"), std::string("DEVNAME=loop5"), extra}) {
      if (kv.empty()) continue;
      m += kv;
      m.push_back('\0');
    }
    auto u = parse_uevent(m);
    EXPECT_TRUE(u);
    return u ? uevent_to_event(*u, uint64_t{4096}) : std::nullopt;
  };
  EXPECT_EQ(ev("add")->type, "device.added");
  EXPECT_EQ(ev("add")->detail["size"], 4096);
  EXPECT_EQ(ev("remove")->type, "device.removed");
  auto c = ev("change");
  EXPECT_EQ(c->type, "device.changed");
  EXPECT_EQ(c->detail["media_change"], false);
  auto mc = ev("change", "DISK_MEDIA_CHANGE=1");
  EXPECT_EQ(mc->type, "device.changed");
  EXPECT_EQ(mc->detail["media_change"], true);
  EXPECT_FALSE(ev("bind"));
  EXPECT_FALSE(ev("move"));
}

TEST(Uevent, OtherSubsystemsAndIncompleteAreIgnored) {
  auto u = parse_uevent(msg({"add@/devices/virtual/net/veth0", "ACTION=add", "SUBSYSTEM=net", "INTERFACE=veth0"}));
  ASSERT_TRUE(u);
  EXPECT_FALSE(uevent_to_event(*u, std::nullopt));
  u = parse_uevent(msg({"add@/devices/virtual/block/loop5", "SUBSYSTEM=block", "MAJOR=7", "MINOR=x"}));
  ASSERT_TRUE(u);
  EXPECT_FALSE(uevent_to_event(*u, std::nullopt));
  u = parse_uevent(msg({"add@/devices/virtual/block/loop5", "SUBSYSTEM=block", "MINOR=5"}));
  ASSERT_TRUE(u);
  EXPECT_FALSE(uevent_to_event(*u, std::nullopt));
}

TEST(Uevent, BadMessagesFail) {
  EXPECT_FALSE(parse_uevent(""));
  EXPECT_FALSE(parse_uevent(std::string_view("\0\0", 2)));
  EXPECT_FALSE(parse_uevent("add"));
  EXPECT_FALSE(parse_uevent("@/devices/x"));
  EXPECT_FALSE(parse_uevent("add@"));
  EXPECT_FALSE(parse_uevent("add@devices"));
  EXPECT_FALSE(parse_uevent(msg({"ADD!@/devices/x"})));
  // udev's re-broadcast (group 2) starts with "libudev" and a binary header.
  EXPECT_FALSE(parse_uevent(std::string("libudev\0\xfe\xed\xca\xfe", 12)));
  EXPECT_FALSE(parse_uevent(msg({"add@/devices/x", "NOEQUALS"})));
  EXPECT_FALSE(parse_uevent(msg({"add@/devices/x", "=value"})));
  EXPECT_FALSE(parse_uevent(msg({"add@/devices/x", "ACTION=remove"})));
  // No trailing NUL, empty fields: fine.
  auto u = parse_uevent(std::string_view("remove@/devices/x\0\0SUBSYSTEM=block", 35));
  ASSERT_TRUE(u);
  EXPECT_EQ(u->get("SUBSYSTEM"), "block");
}

TEST(Uevent, ArbitraryBytesNeverCrash) {
  // A cheap stand-in for the fuzzer: every prefix and byte flip of a real message.
  std::string base = msg({"change@/devices/virtual/block/loop0", "ACTION=change", "SUBSYSTEM=block", "MAJOR=7",
                          "MINOR=0", "DEVNAME=loop0", "DISK_MEDIA_CHANGE=1"});
  for (size_t i = 0; i <= base.size(); ++i) {
    auto u = parse_uevent(std::string_view(base).substr(0, i));
    if (u) (void)uevent_to_event(*u, std::nullopt);
  }
  for (size_t i = 0; i < base.size(); ++i)
    for (int b : {0, int('='), int('@'), int('/'), 0xff}) {
      std::string s = base;
      s[i] = static_cast<char>(b);
      auto u = parse_uevent(s);
      if (u) (void)uevent_to_event(*u, std::nullopt);
    }
}

}  // namespace
}  // namespace storwatch::daemon
