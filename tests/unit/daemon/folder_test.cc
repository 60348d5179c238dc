// Folder: floods of equal events folded per window with exact counts, driven by a FakeClock and
// a stepped EventLoop (the windows are loop timers), so nothing sleeps.
#include "daemon/bus/folder.h"

#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <vector>

#include "support/fake_clock.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

FsRef fs(uint32_t minor) {
  FsRef f;
  f.major = 8;
  f.minor = minor;
  f.fstype = "ext4";
  f.mounts = {"/mnt/" + std::to_string(minor)};
  return f;
}

// An fs.error, whose fold key is "fs, detail.errno, detail.inode".
Event fs_error(uint32_t minor = 17, int err = 5, uint64_t inode = 12) {
  Event e;
  e.type = "fs.error";
  e.severity = Severity::error;
  e.source = "test";
  e.fs = fs(minor);
  e.detail = {{"errno", err}, {"inode", inode}, {"function", "ext4_lookup"}};
  return e;
}

uint64_t total(const std::vector<Event>& es) {
  return std::accumulate(es.begin(), es.end(), uint64_t{0},
                         [](uint64_t n, const Event& e) { return n + e.count; });
}

class FolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = EventLoop::create(clock_);
    ASSERT_TRUE(l) << l.error().message();
    loop_ = std::move(*l);
    make({.window = 1000ms, .max_keys = 4096});
  }
  void make(Folder::Options o) {
    folder_.reset();
    folder_ = std::make_unique<Folder>(
        *loop_, [this](Event e) { out_.push_back(std::move(e)); }, o);
  }
  // Moves time on and runs what became due (the window timers).
  void advance(std::chrono::milliseconds d) {
    clock_.advance(d);
    loop_->step(0ms);
  }
  std::vector<Event> take() {
    std::vector<Event> r;
    r.swap(out_);
    return r;
  }

  test::FakeClock clock_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Folder> folder_;
  std::vector<Event> out_;
};

TEST_F(FolderTest, FirstOccurrenceGoesOutAtOnce) {
  Event::Time t0 = clock_.wall_now();
  folder_->offer(fs_error());
  auto es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].count, 1u);
  EXPECT_EQ(es[0].first_time, t0);
  EXPECT_EQ(es[0].last_time, t0);
  EXPECT_EQ(folder_->open_windows(), 1u);
  // The window closes with nothing in it: no event, and the key is forgotten.
  advance(1000ms);
  EXPECT_TRUE(take().empty());
  EXPECT_EQ(folder_->open_windows(), 0u);
  // The next one is a first occurrence again.
  folder_->offer(fs_error());
  EXPECT_EQ(take().size(), 1u);
}

TEST_F(FolderTest, EqualEventsInTheWindowBecomeOneEventWithExactCountAndTimes) {
  folder_->offer(fs_error());
  ASSERT_EQ(take().size(), 1u);
  advance(100ms);
  Event::Time first = clock_.wall_now();
  folder_->offer(fs_error());
  advance(300ms);
  Event second = fs_error();
  second.count = 5;  // a source may itself report several occurrences
  folder_->offer(second);
  advance(400ms);
  Event::Time last = clock_.wall_now();
  Event third = fs_error();
  third.detail["function"] = "ext4_find_entry";  // not part of the fold key
  folder_->offer(third);
  EXPECT_TRUE(take().empty()) << "folded events wait for the window to close";

  advance(199ms);  // 999 ms after the first occurrence
  EXPECT_TRUE(take().empty());
  advance(1ms);
  auto es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].type, "fs.error");
  EXPECT_EQ(es[0].count, 7u);
  EXPECT_EQ(es[0].first_time, first);
  EXPECT_EQ(es[0].last_time, last);
  EXPECT_EQ(es[0].time, Event::Time{}) << "stamped by the bus when published";
  EXPECT_EQ(es[0].detail["function"], "ext4_find_entry") << "the last occurrence is the template";
  ASSERT_TRUE(es[0].fs);
  EXPECT_EQ(es[0].fs->dev(), "8:17");
}

TEST_F(FolderTest, ExplicitEventTimesAreKept) {
  Event::Time t = clock_.wall_now() - 10s;
  folder_->offer(fs_error());
  Event a = fs_error();
  a.time = t;
  folder_->offer(a);
  Event b = fs_error();
  b.first_time = t + 1s;
  b.last_time = t + 2s;
  b.count = 3;
  folder_->offer(b);
  take();
  advance(1s);
  auto es = take();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].count, 4u);
  EXPECT_EQ(es[0].first_time, t);
  EXPECT_EQ(es[0].last_time, t + 2s);
}

TEST_F(FolderTest, AContinuingFloodYieldsOneEventPerWindowAndCountsSumExactly) {
  // 10 events a second for 5.5 s: 55 in all.
  std::vector<Event> published;
  for (int i = 0; i < 55; ++i) {
    folder_->offer(fs_error());
    advance(100ms);
    for (auto& e : take()) published.push_back(std::move(e));
  }
  // The first at once, then one per elapsed window (at 1 s, 2 s, ... 5 s): the first window holds
  // the 9 after the first occurrence, the others 10 each.
  ASSERT_EQ(published.size(), 6u);
  EXPECT_EQ(published[0].count, 1u);
  EXPECT_EQ(published[1].count, 9u);
  for (size_t i = 2; i < published.size(); ++i) EXPECT_EQ(published[i].count, 10u) << i;
  // The rest comes when the flood's last window closes; then the window closes empty.
  advance(1s);
  auto tail = take();
  ASSERT_EQ(tail.size(), 1u);
  EXPECT_EQ(tail[0].count, 5u);  // 5.0 s .. 5.4 s
  published.push_back(tail[0]);
  EXPECT_EQ(total(published), 55u);
  advance(1s);
  EXPECT_TRUE(take().empty());
  EXPECT_EQ(folder_->open_windows(), 0u);
  // Windows follow one another without overlap: each folded event's times lie in its window.
  for (size_t i = 2; i < published.size(); ++i)
    EXPECT_GT(published[i].first_time, published[i - 1].last_time);
}

TEST_F(FolderTest, DifferentFoldKeysAreNotMerged) {
  folder_->offer(fs_error(17, 5, 12));
  folder_->offer(fs_error(18, 5, 12));   // another filesystem
  folder_->offer(fs_error(17, 28, 12));  // another errno
  folder_->offer(fs_error(17, 5, 13));   // another inode
  Event other_type = fs_error();
  other_type.type = "fs.shutdown";  // fold key "fs": another type
  folder_->offer(other_type);
  EXPECT_EQ(take().size(), 5u) << "each is a first occurrence";
  EXPECT_EQ(folder_->open_windows(), 5u);
  // One more of each of two keys, two of a third.
  folder_->offer(fs_error(18, 5, 12));
  folder_->offer(fs_error(17, 5, 13));
  folder_->offer(fs_error(17, 5, 13));
  advance(1s);
  auto es = take();
  ASSERT_EQ(es.size(), 2u);
  std::map<std::string, uint64_t> counts;
  for (const auto& e : es) counts[e.fs->dev() + " " + e.detail["inode"].dump()] = e.count;
  EXPECT_EQ(counts, (std::map<std::string, uint64_t>{{"8:18 12", 1}, {"8:17 13", 2}}));
}

TEST_F(FolderTest, KeysDifferByProcessWhereTheTypeSaysSo) {
  // space.enospc folds by "fs, detail.kind, process.pid".
  auto enospc = [](int64_t pid) {
    Event e;
    e.type = "space.enospc";
    e.fs = fs(17);
    e.detail = {{"kind", "data"}};
    e.process = ProcessRef{.pid = pid, .uid = 0, .comm = "dd"};
    return e;
  };
  EXPECT_NE(Folder::fold_key(enospc(1)), Folder::fold_key(enospc(2)));
  EXPECT_EQ(Folder::fold_key(enospc(1)), Folder::fold_key(enospc(1)));
  EXPECT_EQ(Folder::fold_key(fs_error(17, 5, 12)), Folder::fold_key(fs_error(17, 5, 12)));
  EXPECT_NE(Folder::fold_key(fs_error(17, 5, 12)), Folder::fold_key(fs_error(17, 5, 13)));
}

TEST_F(FolderTest, NeverFoldedAndUnknownTypesPassThrough) {
  Event lost;
  lost.type = "stream.lost";
  lost.count = 3;
  lost.detail = {{"count", 3}};
  EXPECT_EQ(Folder::fold_key(lost), "");
  Event unknown = fs_error();
  unknown.type = "no.such.type";
  EXPECT_EQ(Folder::fold_key(unknown), "");
  for (int i = 0; i < 4; ++i) {
    folder_->offer(lost);
    folder_->offer(unknown);
  }
  auto es = take();
  ASSERT_EQ(es.size(), 8u);
  EXPECT_EQ(es[0].count, 3u);
  EXPECT_EQ(folder_->open_windows(), 0u);
  advance(1s);
  EXPECT_TRUE(take().empty());
}

TEST_F(FolderTest, PastMaxKeysEventsPassThroughAndCountsStayExact) {
  make({.window = 1000ms, .max_keys = 2});
  folder_->offer(fs_error(17, 5, 1));
  folder_->offer(fs_error(17, 5, 2));
  EXPECT_EQ(folder_->open_windows(), 2u);
  // A third key finds no room: every one of its events goes out unfolded.
  for (int i = 0; i < 3; ++i) folder_->offer(fs_error(17, 5, 3));
  // The two open keys still fold.
  for (int i = 0; i < 4; ++i) folder_->offer(fs_error(17, 5, 1));
  EXPECT_EQ(folder_->open_windows(), 2u);
  auto es = take();
  ASSERT_EQ(es.size(), 5u);
  for (const auto& e : es) EXPECT_EQ(e.count, 1u);
  advance(1s);
  auto folded = take();
  ASSERT_EQ(folded.size(), 1u);
  EXPECT_EQ(folded[0].count, 4u);
  EXPECT_EQ(total(es) + total(folded), 2u + 3u + 4u + 0u);
  // Key 2's window closed empty, so there is room again.
  advance(1s);  // key 1's follow-up window closes empty too
  EXPECT_EQ(folder_->open_windows(), 0u);
  folder_->offer(fs_error(17, 5, 3));
  folder_->offer(fs_error(17, 5, 3));
  EXPECT_EQ(take().size(), 1u);
  EXPECT_EQ(folder_->open_windows(), 1u);
}

TEST_F(FolderTest, FlushAllSendsEveryPendingFoldNow) {
  folder_->offer(fs_error(17, 5, 1));
  folder_->offer(fs_error(17, 5, 2));
  folder_->offer(fs_error(17, 5, 1));
  folder_->offer(fs_error(17, 5, 1));
  take();
  folder_->flush_all();
  auto es = take();
  ASSERT_EQ(es.size(), 1u);  // key 2 had nothing pending
  EXPECT_EQ(es[0].count, 2u);
  EXPECT_EQ(es[0].detail["inode"], 1);
  EXPECT_EQ(folder_->open_windows(), 0u);
  // The timers are gone with the windows: nothing later.
  advance(5s);
  EXPECT_TRUE(take().empty());
}

TEST_F(FolderTest, WindowZeroTurnsFoldingOff) {
  make({.window = 0ms, .max_keys = 4096});
  for (int i = 0; i < 5; ++i) folder_->offer(fs_error());
  auto es = take();
  ASSERT_EQ(es.size(), 5u);
  for (const auto& e : es) EXPECT_EQ(e.count, 1u);
  EXPECT_EQ(folder_->open_windows(), 0u);
}

TEST_F(FolderTest, ReloadToWindowZeroStillDeliversWhatWasPending) {
  folder_->offer(fs_error());
  folder_->offer(fs_error());
  take();
  folder_->set_options({.window = 0ms, .max_keys = 4096});
  folder_->offer(fs_error());  // unfolded from now on
  EXPECT_EQ(take().size(), 1u);
  advance(1s);
  auto es = take();
  ASSERT_EQ(es.size(), 1u) << "the fold pending at the change is not lost";
  EXPECT_EQ(es[0].count, 1u);
}

TEST_F(FolderTest, DestroyingTheFolderCancelsItsTimers) {
  folder_->offer(fs_error());
  folder_->offer(fs_error());
  folder_.reset();
  advance(2s);  // a timer left behind would run with a dangling Folder
  SUCCEED();
}

}  // namespace
}  // namespace storwatch::daemon
