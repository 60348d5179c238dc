#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "daemon/threshold/poll_interval.h"
#include "daemon/threshold/threshold_machine.h"

namespace storwatch::daemon {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr uint64_t kFrsize = 4096;
constexpr uint64_t kBlocks = 1'000'000;  // 4096e6 bytes; 1 permille = 1000 blocks
constexpr uint64_t kSize = kFrsize * kBlocks;

// A sample with `permille` thousandths of the blocks free and plenty of inodes.
Usage at(uint64_t permille, uint64_t files = 100'000, uint64_t favail = 90'000) {
  return Usage{kFrsize, kBlocks, permille * 1000, files, favail};
}

Amount percent(double p) { return Amount{Amount::Unit::percent, p, 0}; }
Amount absolute(uint64_t v) { return Amount{Amount::Unit::absolute, 0, v}; }
Amount fs_blocks(uint64_t v) { return Amount{Amount::Unit::fs_blocks, 0, v}; }

Level level(Resource r, Amount below, Severity s) {
  Level l;
  l.resource = r;
  l.below = below;
  l.severity = s;
  return l;
}

std::vector<Level> ten_and_five() {
  return {level(Resource::blocks, percent(10), Severity::warning),
          level(Resource::blocks, percent(5), Severity::error)};
}

// "below blocks<10%" / "above blocks<5%": enough to check what was reported and in which order.
std::vector<std::string> names(const std::vector<Crossing>& cs) {
  std::vector<std::string> out;
  for (const Crossing& c : cs) out.push_back((c.below ? "below " : "above ") + c.level_id);
  return out;
}

TEST(ThresholdMachine, FillingGraduallyReportsEachLevelOnce) {
  ThresholdMachine m;
  m.set_levels(ten_and_five());
  std::vector<Crossing> all;
  for (int pm = 500; pm >= 0; pm -= 3) {
    auto cs = m.update(at(pm));
    if (pm == 98) {  // the first sample under 100 permille
      EXPECT_THAT(names(cs), ElementsAre("below blocks<10%"));
    }
    all.insert(all.end(), cs.begin(), cs.end());
  }
  EXPECT_THAT(m.update(at(0)), IsEmpty());
  ASSERT_THAT(names(all), ElementsAre("below blocks<10%", "below blocks<5%"));
  const Crossing& c = all[0];
  EXPECT_EQ(c.resource, Resource::blocks);
  EXPECT_EQ(c.severity, Severity::warning);
  EXPECT_TRUE(c.below);
  EXPECT_EQ(c.level, kSize / 10);
  EXPECT_EQ(c.avail, 98'000 * kFrsize);
  EXPECT_EQ(c.total, kSize);
  EXPECT_EQ(c.level_text, "10%");
  EXPECT_EQ(all[1].severity, Severity::error);
  EXPECT_EQ(m.crossed(), (std::set<std::string>{"blocks<10%", "blocks<5%"}));
}

TEST(ThresholdMachine, ExactlyAtTheLevelIsNotBelow) {
  ThresholdMachine m;
  m.set_levels(ten_and_five());
  EXPECT_THAT(m.update(at(100)), IsEmpty());
  EXPECT_THAT(names(m.update(at(99))), ElementsAre("below blocks<10%"));
}

TEST(ThresholdMachine, FreeingReportsAboveOnlyPastHysteresisAndJitterIsSilent) {
  ThresholdMachine m;
  m.set_levels(ten_and_five());
  EXPECT_EQ(m.update(at(30)).size(), 2u);
  // Jitter around 5%: still below until 6% (5% + the default 1% hysteresis).
  for (uint64_t pm : {55, 49, 59, 48, 59, 50, 51}) EXPECT_THAT(m.update(at(pm)), IsEmpty()) << pm;
  EXPECT_THAT(names(m.update(at(60))), ElementsAre("above blocks<5%"));
  // Jitter between the level and the re-arm point: nothing either way.
  for (uint64_t pm : {55, 60, 52, 59}) EXPECT_THAT(m.update(at(pm)), IsEmpty()) << pm;
  EXPECT_THAT(names(m.update(at(49))), ElementsAre("below blocks<5%"));
  for (uint64_t pm : {60, 95, 105, 99, 109}) m.update(at(pm));
  EXPECT_EQ(m.crossed(), std::set<std::string>{"blocks<10%"});
  EXPECT_THAT(names(m.update(at(110))), ElementsAre("above blocks<10%"));
  for (uint64_t pm : {105, 101, 100, 110, 120}) EXPECT_THAT(m.update(at(pm)), IsEmpty()) << pm;
  EXPECT_THAT(names(m.update(at(99))), ElementsAre("below blocks<10%"));
}

TEST(ThresholdMachine, JumpsReportEveryLevelInSeverityOrder) {
  ThresholdMachine m;
  m.set_levels(ten_and_five());
  EXPECT_THAT(m.update(at(500)), IsEmpty());
  auto down = m.update(at(30));
  EXPECT_THAT(names(down), ElementsAre("below blocks<10%", "below blocks<5%"));  // worst last
  EXPECT_EQ(down.back().severity, Severity::error);
  EXPECT_THAT(names(m.update(at(500))), ElementsAre("above blocks<5%", "above blocks<10%"));
  EXPECT_THAT(m.update(at(500)), IsEmpty());
}

TEST(ThresholdMachine, OrderFollowsTheLevelNotTheRuleOrder) {
  ThresholdMachine m;
  m.set_levels({level(Resource::blocks, percent(2), Severity::critical),
                level(Resource::blocks, percent(5), Severity::error),
                level(Resource::blocks, percent(10), Severity::warning)});
  EXPECT_THAT(names(m.update(at(10))),
              ElementsAre("below blocks<10%", "below blocks<5%", "below blocks<2%"));
  EXPECT_THAT(names(m.update(at(900))),
              ElementsAre("above blocks<2%", "above blocks<5%", "above blocks<10%"));
}

TEST(ThresholdMachine, FirstUpdateReportsLevelsAlreadyBelow) {
  ThresholdMachine m;
  m.set_levels(ten_and_five());
  EXPECT_THAT(names(m.update(at(70))), ElementsAre("below blocks<10%"));
}

TEST(ThresholdMachine, RestoredCrossedLevelsAreNotReportedAgain) {
  ThresholdMachine m;
  m.set_levels(ten_and_five());
  m.restore_crossed({"blocks<10%"});
  EXPECT_THAT(m.update(at(70)), IsEmpty());
  EXPECT_THAT(names(m.update(at(40))), ElementsAre("below blocks<5%"));
}

TEST(ThresholdMachine, RestoredButRecoveredIsReportedAbove) {
  ThresholdMachine m;
  m.set_levels(ten_and_five());
  m.restore_crossed({"blocks<10%", "blocks<5%"});
  EXPECT_THAT(names(m.update(at(500))), ElementsAre("above blocks<5%", "above blocks<10%"));
  EXPECT_THAT(m.crossed(), IsEmpty());
}

TEST(ThresholdMachine, RestoredWithinHysteresisStaysCrossed) {
  ThresholdMachine m;
  m.set_levels(ten_and_five());
  m.restore_crossed({"blocks<10%"});
  EXPECT_THAT(m.update(at(105)), IsEmpty());
  EXPECT_EQ(m.crossed(), std::set<std::string>{"blocks<10%"});
}

TEST(ThresholdMachine, RestoreBeforeSetLevelsAndUnknownIdsDropped) {
  ThresholdMachine m;
  m.restore_crossed({"blocks<10%", "blocks<3%", "inodes<1%"});
  m.set_levels(ten_and_five());
  EXPECT_EQ(m.crossed(), std::set<std::string>{"blocks<10%"});
  m.restore_crossed({"blocks<5%", "gone"});
  EXPECT_EQ(m.crossed(), std::set<std::string>{"blocks<5%"});
}

TEST(ThresholdMachine, SetLevelsKeepsStateOfSurvivingIds) {
  ThresholdMachine m;
  m.set_levels(ten_and_five());
  EXPECT_THAT(names(m.update(at(70))), ElementsAre("below blocks<10%"));
  // A new severity and hysteresis under the same id: still crossed, not re-reported.
  auto changed = ten_and_five();
  changed[0].severity = Severity::critical;
  changed[0].hysteresis = percent(3);
  changed.push_back(level(Resource::blocks, percent(20), Severity::info));
  m.set_levels(changed);
  EXPECT_EQ(m.crossed(), std::set<std::string>{"blocks<10%"});
  auto cs = m.update(at(70));
  EXPECT_THAT(names(cs), ElementsAre("below blocks<20%"));
  // The new hysteresis applies: 12% is not enough, 13% is.
  EXPECT_THAT(m.update(at(120)), IsEmpty());
  cs = m.update(at(130));
  ASSERT_THAT(names(cs), ElementsAre("above blocks<10%"));
  EXPECT_EQ(cs[0].severity, Severity::critical);

  // A dropped level forgets its state; re-adding it starts fresh.
  m.update(at(70));
  m.set_levels({level(Resource::blocks, percent(5), Severity::error)});
  EXPECT_THAT(m.crossed(), IsEmpty());
  m.set_levels(ten_and_five());
  EXPECT_THAT(names(m.update(at(70))), ElementsAre("below blocks<10%"));
}

TEST(ThresholdMachine, InodeLevels) {
  ThresholdMachine m;
  m.set_levels({level(Resource::inodes, percent(10), Severity::warning),
                level(Resource::inodes, absolute(500), Severity::critical),
                level(Resource::blocks, percent(10), Severity::warning)});
  EXPECT_THAT(m.update(at(500, 100'000, 50'000)), IsEmpty());
  auto cs = m.update(at(500, 100'000, 9'999));
  ASSERT_THAT(names(cs), ElementsAre("below inodes<10%"));
  EXPECT_EQ(cs[0].resource, Resource::inodes);
  EXPECT_EQ(cs[0].level, 10'000u);
  EXPECT_EQ(cs[0].avail, 9'999u);
  EXPECT_EQ(cs[0].total, 100'000u);
  // Both resources at once: blocks first, then inodes, worst inode level last.
  EXPECT_THAT(names(m.update(at(50, 100'000, 100))),
              ElementsAre("below blocks<10%", "below inodes<500"));
  // Back above 500 + 1% of 100000 inodes.
  EXPECT_THAT(m.update(at(50, 100'000, 1'499)), IsEmpty());
  EXPECT_THAT(names(m.update(at(50, 100'000, 1'500))), ElementsAre("above inodes<500"));
}

TEST(ThresholdMachine, AbsoluteAndFsBlockLevels) {
  ThresholdMachine m;
  Level gig = level(Resource::blocks, absolute(1ULL << 30), Severity::warning);
  gig.hysteresis = absolute(100ULL << 20);
  m.set_levels({level(Resource::blocks, fs_blocks(50'000), Severity::critical), gig,
                level(Resource::blocks, percent(10), Severity::error)});
  // 1 GiB is 262144 blocks of 4096, 26.2%.
  EXPECT_THAT(m.update(at(263)), IsEmpty());
  auto cs = m.update(at(262));
  ASSERT_THAT(names(cs), ElementsAre("below blocks<1G"));
  EXPECT_EQ(cs[0].level, 1ULL << 30);
  EXPECT_EQ(cs[0].level_text, "1G");
  cs = m.update(at(10));
  ASSERT_THAT(names(cs), ElementsAre("below blocks<10%", "below blocks<50000 blocks"));
  EXPECT_EQ(cs[1].level, 50'000 * kFrsize);
  // 1 GiB + 100 MiB = 1178599424 bytes = 287744 blocks.
  Usage u = at(0);
  u.bavail = 287'743;
  m.update(u);
  EXPECT_EQ(m.crossed(), std::set<std::string>{"blocks<1G"});
  u.bavail = 287'744;
  EXPECT_THAT(names(m.update(u)), ElementsAre("above blocks<1G"));
}

TEST(ThresholdMachine, NoInodeCountsIgnoresInodeLevels) {
  ThresholdMachine m;
  m.set_levels({level(Resource::inodes, percent(10), Severity::warning),
                level(Resource::blocks, percent(10), Severity::warning)});
  EXPECT_THAT(names(m.update(at(50, 0, 0))), ElementsAre("below blocks<10%"));
  EXPECT_EQ(m.crossed(), std::set<std::string>{"blocks<10%"});
}

TEST(ThresholdMachine, ZeroSizeFilesystemReportsNothing) {
  ThresholdMachine m;
  m.set_levels({level(Resource::inodes, percent(10), Severity::warning),
                level(Resource::blocks, percent(10), Severity::warning)});
  EXPECT_THAT(m.update(Usage{4096, 0, 0, 100, 0}), IsEmpty());
  EXPECT_THAT(m.update(Usage{}), IsEmpty());
  EXPECT_THAT(m.crossed(), IsEmpty());
}

TEST(ThresholdMachine, NoLevelsNoCrossings) {
  ThresholdMachine m;
  EXPECT_THAT(m.update(at(0)), IsEmpty());
  m.set_levels({});
  EXPECT_THAT(m.update(at(0)), IsEmpty());
}

TEST(ResolveLevel, DefaultHysteresisIsOnePercent) {
  auto r = resolve_level(level(Resource::blocks, percent(10), Severity::warning), at(70));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->level, kSize / 10);
  EXPECT_EQ(r->rearm, kSize / 10 + kSize / 100);
  EXPECT_EQ(r->avail, 70'000 * kFrsize);
  EXPECT_EQ(r->total, kSize);
  EXPECT_FALSE(resolve_level(level(Resource::inodes, percent(1), Severity::warning), at(1, 0, 0)));
}

// PollScheduler

const MonoTime kT0{};

milliseconds first_interval(uint64_t permille, const std::vector<Level>& levels) {
  PollScheduler s(PollScheduler::Config{});
  return s.next(kT0, at(permille, 0, 0), levels);
}

TEST(PollScheduler, ShrinksAsFreeSpaceNearsALevel) {
  auto levels = ten_and_five();
  milliseconds far = first_interval(500, levels);
  milliseconds mid = first_interval(250, levels);
  milliseconds near = first_interval(150, levels);
  milliseconds close = first_interval(110, levels);
  EXPECT_EQ(far, milliseconds(20000));  // 40% away: 1 s per 2%
  EXPECT_LT(mid, far);
  EXPECT_LT(near, mid);
  EXPECT_LT(close, near);
  EXPECT_LE(close, seconds(1));                                 // within 2% of the size
  EXPECT_EQ(first_interval(900, levels), milliseconds(30000));  // clamped to max
  EXPECT_EQ(first_interval(900, {}), milliseconds(30000));
  // Just below a crossed level the re-arm point is near too.
  EXPECT_LE(first_interval(95, levels), seconds(1));
  // Near full with no levels: the zero-free point.
  EXPECT_LE(first_interval(10, {}), milliseconds(500));
}

milliseconds after_drop(uint64_t from_permille, uint64_t to_permille, seconds dt,
                        const std::vector<Level>& levels, PollScheduler::Config c = {}) {
  PollScheduler s(c);
  s.next(kT0, at(from_permille, 0, 0), levels);
  return s.next(kT0 + dt, at(to_permille, 0, 0), levels);
}

TEST(PollScheduler, ShrinksAsTheRateRises) {
  auto levels = ten_and_five();
  milliseconds idle = first_interval(500, levels);
  milliseconds slow = after_drop(510, 500, seconds(10), levels);  // 0.1%/s: 400 s to 10%
  milliseconds fast = after_drop(600, 500, seconds(10), levels);  // 1%/s: 40 s to 10%
  milliseconds faster = after_drop(900, 500, seconds(10), levels);
  EXPECT_EQ(slow, idle);                // a quarter of 400 s is more than the space-based 20 s
  EXPECT_NEAR(fast.count(), 10000, 1);  // a quarter of 40 s
  EXPECT_LT(faster, fast);
  EXPECT_EQ(after_drop(900, 110, seconds(1), levels), milliseconds(100));  // clamped to min
}

TEST(PollScheduler, RateIsSmoothed) {
  PollScheduler s(PollScheduler::Config{});
  auto levels = ten_and_five();
  s.next(kT0, at(600, 0, 0), levels);
  s.next(kT0 + seconds(10), at(500, 0, 0), levels);
  EXPECT_DOUBLE_EQ(s.rate(Resource::blocks), 10'000.0 * kFrsize);  // first rate taken as is
  s.next(kT0 + seconds(20), at(500, 0, 0), levels);                // a pause pulls it down
  double r = s.rate(Resource::blocks);
  EXPECT_GT(r, 0);
  EXPECT_LT(r, 10'000.0 * kFrsize);
  EXPECT_EQ(s.rate(Resource::inodes), 0);  // no inode counts
  // A sample at the same time changes nothing.
  s.next(kT0 + seconds(20), at(100, 0, 0), levels);
  EXPECT_EQ(s.rate(Resource::blocks), r);
}

TEST(PollScheduler, FreeingTowardsTheRearmPoint) {
  // At 3% and freeing 2%/s: the 5% level re-arms at 6%, 1.5 s away; poll at a quarter of it.
  milliseconds m = after_drop(10, 30, seconds(1), ten_and_five());
  EXPECT_NEAR(m.count(), 375, 1);
}

TEST(PollScheduler, InodeLevelsCount) {
  PollScheduler s(PollScheduler::Config{});
  std::vector<Level> levels{level(Resource::inodes, percent(10), Severity::warning)};
  // Blocks are far from anything; inodes are 1% above their level.
  EXPECT_LE(s.next(kT0, at(900, 100'000, 10'900), levels), milliseconds(500));
}

TEST(PollScheduler, ZeroSizeAndConfigClamp) {
  PollScheduler s(PollScheduler::Config{});
  EXPECT_EQ(s.next(kT0, Usage{}, ten_and_five()), milliseconds(30000));
  PollScheduler odd(PollScheduler::Config{milliseconds(500), milliseconds(200)});
  EXPECT_EQ(odd.next(kT0, at(900, 0, 0), {}), milliseconds(500));
  PollScheduler tight(PollScheduler::Config{milliseconds(1000), milliseconds(5000)});
  EXPECT_EQ(tight.next(kT0, at(900, 0, 0), {}), milliseconds(5000));
  EXPECT_EQ(tight.next(kT0, at(101, 0, 0), ten_and_five()), milliseconds(1000));
}

}  // namespace
}  // namespace storwatch::daemon
