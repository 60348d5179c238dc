#include "daemon/loop/event_loop.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "support/fake_clock.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using test::FakeClock;

struct Pipe {
  UniqueFd r, w;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    r.reset(fds[0]);
    w.reset(fds[1]);
  }
  void put(char c = 'x') { ASSERT_EQ(::write(w.get(), &c, 1), 1); }
  void drain() {
    char buf[64];
    while (::read(r.get(), buf, sizeof buf) > 0) {
    }
  }
};

class EventLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = EventLoop::create(clock_);
    ASSERT_TRUE(l) << l.error().message();
    loop_ = std::move(*l);
  }
  FakeClock clock_;
  std::unique_ptr<EventLoop> loop_;
};

TEST_F(EventLoopTest, ReadableFdRunsItsCallback) {
  Pipe p;
  int calls = 0;
  uint32_t seen = 0;
  ASSERT_TRUE(loop_->add_fd(p.r.get(), EPOLLIN, [&](uint32_t ev) {
    ++calls;
    seen = ev;
    p.drain();
  }));
  loop_->step(0ms);
  EXPECT_EQ(calls, 0);  // nothing to read yet
  p.put();
  loop_->step(0ms);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(seen & EPOLLIN);
  loop_->step(0ms);
  EXPECT_EQ(calls, 1);  // drained: level-triggered, but nothing left
}

TEST_F(EventLoopTest, ModifyFdChangesInterest) {
  Pipe p;
  int calls = 0;
  ASSERT_TRUE(loop_->add_fd(p.r.get(), EPOLLIN, [&](uint32_t) { ++calls; }));
  p.put();
  ASSERT_TRUE(loop_->modify_fd(p.r.get(), 0));
  loop_->step(0ms);
  EXPECT_EQ(calls, 0);
  ASSERT_TRUE(loop_->modify_fd(p.r.get(), EPOLLIN));
  loop_->step(0ms);
  EXPECT_EQ(calls, 1);
}

TEST_F(EventLoopTest, AddingAnFdTwiceFails) {
  Pipe p;
  ASSERT_TRUE(loop_->add_fd(p.r.get(), EPOLLIN, [](uint32_t) {}));
  EXPECT_FALSE(loop_->add_fd(p.r.get(), EPOLLIN, [](uint32_t) {}));
}

TEST_F(EventLoopTest, TimersRunOnlyWhenTheFakeClockReachesThem) {
  std::vector<int> order;
  loop_->add_timer_after(100ms, [&] { order.push_back(100); });
  loop_->add_timer_after(50ms, [&] { order.push_back(50); });
  loop_->add_timer(clock_.now() + 100ms, [&] { order.push_back(101); });

  loop_->step(0ms);
  EXPECT_TRUE(order.empty());
  clock_.advance(49ms);
  loop_->step(0ms);
  EXPECT_TRUE(order.empty()) << "a timer ran early";
  clock_.advance(1ms);
  loop_->step(0ms);
  EXPECT_EQ(order, (std::vector<int>{50}));
  clock_.advance(49ms);
  loop_->step(0ms);
  EXPECT_EQ(order, (std::vector<int>{50}));
  clock_.advance(1ms);
  loop_->step(0ms);
  // Same deadline: in the order they were added.
  EXPECT_EQ(order, (std::vector<int>{50, 100, 101}));
  clock_.advance(1h);
  loop_->step(0ms);
  EXPECT_EQ(order.size(), 3u);  // one-shot
}

TEST_F(EventLoopTest, StepDoesNotWaitForAFakeTimerInRealTime) {
  // max_wait is real time; a fake deadline far away must not make step(0) block.
  loop_->add_timer_after(1h, [] {});
  auto start = std::chrono::steady_clock::now();
  loop_->step(0ms);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

TEST_F(EventLoopTest, CancelledTimerNeverRuns) {
  int a = 0, b = 0;
  auto id = loop_->add_timer_after(10ms, [&] { ++a; });
  loop_->add_timer_after(10ms, [&] { ++b; });
  loop_->cancel_timer(id);
  loop_->cancel_timer(id);     // twice is harmless
  loop_->cancel_timer(12345);  // unknown too
  clock_.advance(10ms);
  loop_->step(0ms);
  EXPECT_EQ(a, 0);
  EXPECT_EQ(b, 1);
}

TEST_F(EventLoopTest, TimerMayCancelAnotherDueTimer) {
  int b = 0;
  EventLoop::TimerId second = 0;
  loop_->add_timer_after(5ms, [&] { loop_->cancel_timer(second); });
  second = loop_->add_timer_after(5ms, [&] { ++b; });
  clock_.advance(5ms);
  loop_->step(0ms);
  EXPECT_EQ(b, 0);
}

TEST_F(EventLoopTest, PostFromTheLoopRunsInTheSameTurn) {
  int n = 0;
  loop_->post([&] { ++n; });
  loop_->step(0ms);
  EXPECT_EQ(n, 1);
}

TEST_F(EventLoopTest, PostFromAnotherThreadWakesABlockedStep) {
  std::atomic<int> ran{0};
  std::thread t([&] { loop_->post([&] { ran = 1; }); });
  // A long max_wait: if post() did not wake epoll this step would block for a minute (and the
  // ctest timeout would fail the test). No fake timer limits the wait.
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3 && !ran; ++i) loop_->step(60s);
  t.join();
  EXPECT_EQ(ran, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
}

TEST_F(EventLoopTest, ManyPostsFromManyThreadsAllRunOnce) {
  constexpr int kThreads = 4, kEach = 1000;
  int total = 0;  // touched only on the loop thread
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) loop_->post([&] { ++total; });
    });
  for (auto& t : threads) t.join();
  loop_->step(0ms);
  EXPECT_EQ(total, kThreads * kEach);
}

TEST_F(EventLoopTest, CallbackMayRemoveItsOwnFd) {
  Pipe p;
  int calls = 0;
  int fd = p.r.get();
  ASSERT_TRUE(loop_->add_fd(fd, EPOLLIN, [&](uint32_t) {
    ++calls;
    loop_->remove_fd(fd);  // destroys this std::function's slot; it must stay alive till return
  }));
  p.put();
  loop_->step(0ms);
  loop_->step(0ms);
  EXPECT_EQ(calls, 1);
  // It can be watched again afterwards.
  ASSERT_TRUE(loop_->add_fd(fd, EPOLLIN, [&](uint32_t) { calls += 10; }));
  loop_->step(0ms);
  EXPECT_EQ(calls, 11);
}

TEST_F(EventLoopTest, CallbackMayRemoveAnotherReadyFd) {
  Pipe a, b;
  int a_calls = 0, b_calls = 0;
  ASSERT_TRUE(loop_->add_fd(a.r.get(), EPOLLIN, [&](uint32_t) {
    ++a_calls;
    a.drain();
    loop_->remove_fd(b.r.get());
  }));
  ASSERT_TRUE(loop_->add_fd(b.r.get(), EPOLLIN, [&](uint32_t) {
    ++b_calls;
    b.drain();
    loop_->remove_fd(a.r.get());
  }));
  a.put();
  b.put();
  loop_->step(0ms);
  // Both were ready in the same turn; whichever ran first removed the other, which must not run.
  EXPECT_EQ(a_calls + b_calls, 1);
  a.put();
  b.put();
  loop_->step(0ms);
  EXPECT_EQ(a_calls + b_calls, 2);
}

TEST_F(EventLoopTest, RemoveUnknownFdIsHarmless) {
  loop_->remove_fd(12345);
  loop_->step(0ms);
}

TEST_F(EventLoopTest, StopEndsRun) {
  int n = 0;
  loop_->post([&] {
    ++n;
    loop_->stop();
  });
  loop_->run();  // returns because the posted callback stops it
  EXPECT_EQ(n, 1);
  EXPECT_TRUE(loop_->stopped());
}

}  // namespace
}  // namespace storwatch::daemon
