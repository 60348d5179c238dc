// EnospcTracker: the probe's records and fold-map sweeps turned into events, with hand-made
// records in place of the kernel (the program itself is tested by tests/integration/enospc_test.py).
#include "daemon/source/enospc_source.h"

#include <cstring>

#include "daemon/config/config.h"

#include <gtest/gtest.h>

namespace storwatch::daemon {
namespace {

constexpr uint32_t kDev = (7u << 20) | 3u;  // 7:3 in the kernel's encoding

enospc_key key(uint32_t tgid, int32_t err = 28, uint32_t kind = ENOSPC_KIND_DATA, uint32_t dev = kDev) {
  enospc_key k{};
  k.dev = dev;
  k.tgid = tgid;
  k.err = err;
  k.kind = kind;
  return k;
}

enospc_value value(uint64_t count, uint32_t syscall = 1, uint32_t how = ENOSPC_HOW_FD) {
  enospc_value v{};
  v.count = count;
  v.first_ns = 1000;
  v.last_ns = 2000 + count;
  v.cgroup_id = 42;
  v.tid = 0;
  v.uid = 1000;
  v.syscall = syscall;
  v.how = how;
  std::strcpy(v.comm, "dd");
  return v;
}

enospc_record record(const enospc_key& k, const enospc_value& v, const char* path = "") {
  enospc_record r{};
  r.key = k;
  r.value = v;
  r.fd = 3;
  std::strncpy(r.path, path, sizeof r.path - 1);
  return r;
}

class EnospcTrackerTest : public ::testing::Test {
 protected:
  EnospcTrackerTest() : tracker_(hooks()) {}

  EnospcTracker::Hooks hooks() {
    EnospcTracker::Hooks h;
    h.emit = [this](Event e) { events_.push_back(std::move(e)); };
    h.by_dev = [this](uint32_t major, uint32_t minor, bool& ignored) -> std::optional<EnospcFs> {
      if (major == 7 && minor == 9) {
        ignored = true;
        return std::nullopt;
      }
      if (major != 7 || minor != 3) return std::nullopt;
      return data_fs();
    };
    h.by_path = [this](const std::string& path, bool& ignored) -> std::optional<EnospcFs> {
      if (path.rfind("/data/", 0) == 0) return data_fs();
      if (path.rfind("/proc/", 0) == 0) ignored = true;
      return std::nullopt;
    };
    h.statfs = [this](const std::string&, const std::string& path, std::function<void(std::optional<Usage>)> done) {
      statfs_paths_.push_back(path);
      statfs_.push_back(std::move(done));
    };
    h.cgroup_path = [](uint64_t id) { return id == 42 ? std::string("/system.slice/x.service") : std::string(); };
    h.mono_ns = [this] { return now_ns_; };
    h.wall_now = [] { return Event::Time{} + std::chrono::hours(24 * 365 * 50); };
    return h;
  }
  static EnospcFs data_fs() {
    EnospcFs fs;
    fs.ref.major = 7;
    fs.ref.minor = 3;
    fs.ref.fstype = "ext4";
    fs.ref.mounts = {"/data"};
    fs.probe_path = "/data";
    return fs;
  }
  void answer_statfs(std::optional<Usage> u) {
    auto pending = std::move(statfs_);
    statfs_.clear();
    for (auto& f : pending) f(u);
  }
  uint64_t total() const {
    uint64_t n = 0;
    for (const auto& e : events_) n += e.count;
    return n;
  }

  uint64_t now_ns_ = 10'000'000'000ull;
  std::vector<Event> events_;
  std::vector<std::function<void(std::optional<Usage>)>> statfs_;
  std::vector<std::string> statfs_paths_;
  EnospcTracker tracker_;
};

Usage usage(uint64_t bavail, uint64_t favail) {
  Usage u;
  u.frsize = 4096;
  u.blocks = 1000;
  u.bavail = bavail;
  u.files = 100;
  u.favail = favail;
  return u;
}

TEST_F(EnospcTrackerTest, FirstRecordIsSentAtOnceWithProcessAndFilesystem) {
  tracker_.on_record(record(key(4242), value(1)));
  ASSERT_EQ(statfs_paths_, std::vector<std::string>{"/data"});  // ENOSPC: is it inodes?
  EXPECT_TRUE(events_.empty());
  answer_statfs(usage(10, 50));
  ASSERT_EQ(events_.size(), 1u);
  const Event& e = events_[0];
  EXPECT_EQ(e.type, "space.enospc");
  EXPECT_EQ(e.severity, Severity::error);
  EXPECT_EQ(e.source, "ebpf");
  EXPECT_EQ(e.count, 1u);
  ASSERT_TRUE(e.fs);
  EXPECT_EQ(e.fs->dev(), "7:3");
  ASSERT_TRUE(e.process);
  EXPECT_EQ(e.process->pid, 4242);
  EXPECT_EQ(e.process->uid, 1000);
  EXPECT_EQ(e.process->comm, "dd");
  EXPECT_EQ(e.process->cgroup, "/system.slice/x.service");
  EXPECT_EQ(e.detail["kind"], "data");
  EXPECT_EQ(e.detail["syscall"], "write");
  EXPECT_EQ(e.detail["errno"], 28);
}

TEST_F(EnospcTrackerTest, InodesWhenBlocksRemainButNoInode) {
  tracker_.on_record(record(key(1, 28, ENOSPC_KIND_METADATA), value(1, 257, ENOSPC_HOW_CWD)));
  answer_statfs(usage(10, 0));
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].detail["kind"], "inodes");
  EXPECT_EQ(events_[0].detail["syscall"], "openat");
  // No block left either: the syscall's kind stands.
  tracker_.on_record(record(key(2, 28, ENOSPC_KIND_METADATA), value(1, 83, ENOSPC_HOW_CWD)));
  answer_statfs(usage(0, 0));
  ASSERT_EQ(events_.size(), 2u);
  EXPECT_EQ(events_[1].detail["kind"], "metadata");
  // statfs failed or timed out: likewise.
  tracker_.on_record(record(key(3, 28, ENOSPC_KIND_METADATA), value(1, 83, ENOSPC_HOW_CWD)));
  answer_statfs(std::nullopt);
  EXPECT_EQ(events_[2].detail["kind"], "metadata");
}

TEST_F(EnospcTrackerTest, EventsOfOneFilesystemWaitInOrderForOneStatfs) {
  tracker_.on_record(record(key(1), value(1)));
  tracker_.on_record(record(key(2), value(1)));
  tracker_.sweep({{key(1), value(5)}, {key(2), value(1)}}, std::chrono::seconds(30));
  EXPECT_EQ(statfs_.size(), 1u);
  answer_statfs(usage(0, 10));
  ASSERT_EQ(events_.size(), 3u);
  EXPECT_EQ(events_[0].process->pid, 1);
  EXPECT_EQ(events_[1].process->pid, 2);
  EXPECT_EQ(events_[2].process->pid, 1);
  EXPECT_EQ(events_[2].count, 4u);
}

TEST_F(EnospcTrackerTest, SweepsSendCountsThatAddUpToTheFailures) {
  const auto k = key(7, 122);  // EDQUOT: no statfs needed
  tracker_.on_record(record(k, value(1)));
  tracker_.sweep({{k, value(1000)}}, std::chrono::seconds(30));
  tracker_.sweep({{k, value(1000)}}, std::chrono::seconds(30));  // nothing new: no event
  tracker_.sweep({{k, value(2345)}}, std::chrono::seconds(30));
  EXPECT_TRUE(statfs_.empty());
  ASSERT_EQ(events_.size(), 3u);
  EXPECT_EQ(events_[0].count, 1u);
  EXPECT_EQ(events_[1].count, 999u);
  EXPECT_EQ(events_[2].count, 1345u);
  EXPECT_EQ(total(), 2345u);
  EXPECT_EQ(events_[1].type, "space.edquot");
  EXPECT_EQ(events_[1].severity, Severity::warning);
}

TEST_F(EnospcTrackerTest, KeyWithoutRecordIsAdoptedOnTheSecondSweepWithItsWholeCount) {
  const auto k = key(8, 122);
  // In the map, but its record is still in the ring (or was lost): not counted yet.
  tracker_.sweep({{k, value(3)}}, std::chrono::seconds(30));
  EXPECT_TRUE(events_.empty());
  tracker_.sweep({{k, value(10)}}, std::chrono::seconds(30));
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].count, 10u);
  // Had the record arrived between the sweeps, it would have been counted once.
  const auto k2 = key(9, 122);
  tracker_.sweep({{k2, value(3)}}, std::chrono::seconds(30));
  tracker_.on_record(record(k2, value(1)));
  tracker_.sweep({{k2, value(10)}}, std::chrono::seconds(30));
  EXPECT_EQ(total(), 20u);
}

TEST_F(EnospcTrackerTest, IdleKeysAreRemovedAndTheirLastCountsSent) {
  const auto k = key(5, 122);
  tracker_.on_record(record(k, value(1)));
  EXPECT_TRUE(tracker_.sweep({{k, value(4)}}, std::chrono::seconds(30)).empty());
  now_ns_ += 31'000'000'000ull;
  auto idle = tracker_.sweep({{k, value(4)}}, std::chrono::seconds(30));
  ASSERT_EQ(idle.size(), 1u);
  tracker_.removed(k, value(6));  // two more came in just before the delete
  EXPECT_EQ(total(), 6u);
  EXPECT_EQ(tracker_.tracked(), 0u);
}

TEST_F(EnospcTrackerTest, UnfoldedRecordCountsOnce) {
  auto r = record(key(3, 122), value(1));
  r.flags = ENOSPC_REC_UNFOLDED;
  tracker_.on_record(r);
  tracker_.on_record(r);
  EXPECT_EQ(total(), 2u);
  EXPECT_EQ(tracker_.tracked(), 0u);
}

TEST_F(EnospcTrackerTest, AbsolutePathsAreResolvedInUserSpace) {
  tracker_.on_record(record(key(1, 122, ENOSPC_KIND_METADATA, 0), value(1, 83, ENOSPC_HOW_PATH), "/data/x/y"));
  ASSERT_EQ(events_.size(), 1u);
  ASSERT_TRUE(events_[0].fs);
  EXPECT_EQ(events_[0].fs->dev(), "7:3");
  EXPECT_EQ(events_[0].detail["path"], "/data/x/y");
  EXPECT_EQ(events_[0].detail["syscall"], "mkdir");
  // Not under any mount we know: said so, still sent.
  tracker_.on_record(record(key(2, 122, ENOSPC_KIND_METADATA, 0), value(1, 83, ENOSPC_HOW_PATH), "/gone/z"));
  ASSERT_EQ(events_.size(), 2u);
  EXPECT_FALSE(events_[1].fs);
  EXPECT_TRUE(events_[1].detail.contains("fs_unresolved"));
  // On a filesystem the configuration does not watch: dropped.
  tracker_.on_record(record(key(4, 122, ENOSPC_KIND_METADATA, 0), value(1, 83, ENOSPC_HOW_PATH), "/proc/x"));
  ASSERT_EQ(events_.size(), 2u);
  // close(): the descriptor is gone.
  tracker_.on_record(record(key(3, 122, ENOSPC_KIND_DATA, 0), value(1, 3, ENOSPC_HOW_CLOSED)));
  ASSERT_EQ(events_.size(), 3u);
  EXPECT_EQ(events_[2].detail["syscall"], "close");
  EXPECT_TRUE(events_[2].detail.contains("fs_unresolved"));
}

TEST_F(EnospcTrackerTest, UnwatchedFilesystemsAreDroppedUnknownOnesNamed) {
  tracker_.on_record(record(key(1, 122, ENOSPC_KIND_DATA, (7u << 20) | 9u), value(1)));
  EXPECT_TRUE(events_.empty());
  tracker_.on_record(record(key(1, 122, ENOSPC_KIND_DATA, (8u << 20) | 1u), value(1)));
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_FALSE(events_[0].fs);
  EXPECT_EQ(events_[0].detail["dev"], "8:1");
}

TEST(EnospcConfig, OnByDefaultAndTurnedOffInSources) {
  auto def = parse_config("", "test");
  ASSERT_TRUE(def) << def.error().message();
  EXPECT_TRUE(def->ebpf_enospc);
  auto off = parse_config("[sources]\nebpf_enospc = false\n", "test");
  ASSERT_TRUE(off) << off.error().message();
  EXPECT_FALSE(off->ebpf_enospc);
  EXPECT_FALSE(parse_config("[sources]\nebpf_enospc = \"no\"\n", "test"));
  EXPECT_FALSE(parse_config("[sources]\nebpf_enospcc = false\n", "test"));  // a typo is an error
}

TEST(EnospcSyscallNames, KnownUnknownAndIoUring) {
  EXPECT_EQ(enospc_syscall_name(1), "write");
  EXPECT_EQ(enospc_syscall_name(285), "fallocate");
  EXPECT_EQ(enospc_syscall_name(326), "copy_file_range");
  EXPECT_EQ(enospc_syscall_name(ENOSPC_IO_URING | 23), "io_uring:write");
  EXPECT_EQ(enospc_syscall_name(ENOSPC_IO_URING | 200), "io_uring:op200");
  EXPECT_EQ(enospc_syscall_name(9999), "syscall 9999");
}

}  // namespace
}  // namespace storwatch::daemon
