// statmount decoding: a hand-built reply (no root), then this kernel's statmount and listmount
// against its own /proc/self/mountinfo (every mount, every field), and FanotifyMountSource end to
// end in a private mount namespace. The kernel tests skip, with the reason, where statmount or
// mount notifications are missing or the process may not create a mount namespace.
#include <gtest/gtest.h>

#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>

#include "base/clock.h"
#include "daemon/loop/event_loop.h"
#include "daemon/mount/fanotify_mount_source.h"
#include "daemon/mount/mount_api.h"

namespace storwatch::daemon {
namespace {

struct Reply {
  std::vector<char> buf = std::vector<char>(sizeof(mntapi::Statmount));
  mntapi::Statmount* sm() { return reinterpret_cast<mntapi::Statmount*>(buf.data()); }
  uint32_t str(const std::string& s) {
    uint32_t off = static_cast<uint32_t>(buf.size() - sizeof(mntapi::Statmount));
    buf.insert(buf.end(), s.begin(), s.end());
    buf.push_back('\0');
    return off;
  }
  std::span<const char> done() {
    sm()->size = static_cast<uint32_t>(buf.size());
    return {buf.data(), buf.size()};
  }
};

TEST(Statmount, DecodesAsMountinfoShowsIt) {
  Reply r;
  r.sm()->mask = mntapi::kStatmountMountinfo;
  r.sm()->mnt_id = 0x80001060;
  r.sm()->mnt_id_old = 69;
  r.sm()->mnt_parent_id_old = 46;
  r.sm()->sb_dev_major = 0;
  r.sm()->sb_dev_minor = 41;
  r.sm()->sb_flags = 0x1 | 0x10;           // SB_RDONLY, SB_SYNCHRONOUS
  r.sm()->mnt_attr = 0x1 | 0x2 | 0x10;     // ro, nosuid, noatime
  r.sm()->mnt_propagation = (1 << 20) | (1 << 19);  // shared and slave
  r.sm()->mnt_peer_group = 7;
  r.sm()->mnt_master = 3;
  r.sm()->propagate_from = 2;
  r.sm()->mnt_root = r.str("/sub dir");
  r.sm()->mnt_point = r.str("/mnt/a");
  r.sm()->fs_type = r.str("fuse");
  r.sm()->fs_subtype = r.str("sshfs");
  r.sm()->sb_source = r.str("me@host:");
  r.sm()->mnt_opts = r.str("user_id=0,group_id=0");
  auto m = mntapi::statmount_to_entry(r.done());
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->unique_id, 0x80001060u);
  EXPECT_EQ(m->mnt_id, 69u);
  EXPECT_EQ(m->parent_id, 46u);
  EXPECT_EQ(m->minor, 41u);
  EXPECT_EQ(m->root, "/sub dir");
  EXPECT_EQ(m->mount_point, "/mnt/a");
  EXPECT_EQ(m->fstype, "fuse.sshfs");
  EXPECT_EQ(m->source, "me@host:");
  EXPECT_EQ(m->mount_options, "ro,nosuid,noatime");
  EXPECT_EQ(m->optional_fields, (std::vector<std::string>{"shared:7", "master:3", "propagate_from:2"}));
  EXPECT_EQ(m->super_options, "ro,sync,user_id=0,group_id=0");
}

TEST(Statmount, RefusesStringsOutsideTheReply) {
  Reply r;
  r.sm()->mask = mntapi::kStatmountMountinfo;
  r.sm()->mnt_root = r.str("/");
  r.sm()->mnt_point = 9999;
  r.sm()->fs_type = r.str("tmpfs");
  EXPECT_FALSE(mntapi::statmount_to_entry(r.done()));
  Reply unterminated;
  unterminated.sm()->mask = mntapi::kStatmountMountinfo;
  unterminated.buf.push_back('x');
  EXPECT_FALSE(mntapi::statmount_to_entry(unterminated.done()));
  EXPECT_FALSE(mntapi::statmount_to_entry({}));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool same_state(const MountEntry& a, const MountEntry& b) {
  return a.mnt_id == b.mnt_id && a.parent_id == b.parent_id && a.major == b.major && a.minor == b.minor &&
         a.root == b.root && a.mount_point == b.mount_point && a.mount_options == b.mount_options &&
         a.optional_fields == b.optional_fields && a.fstype == b.fstype && a.source == b.source &&
         a.super_options == b.super_options;
}

std::string show(const MountEntry& m) {
  std::string f;
  for (const auto& o : m.optional_fields) f += o + " ";
  return std::to_string(m.mnt_id) + " " + std::to_string(m.parent_id) + " " + std::to_string(m.major) + ":" +
         std::to_string(m.minor) + " " + m.root + " " + m.mount_point + " " + m.mount_options + " " + f + "- " +
         m.fstype + " " + m.source + " " + m.super_options;
}

TEST(StatmountKernel, EveryMountMatchesMountinfo) {
  mntapi::MountApi api;
  auto ids = api.list();
  if (!ids) GTEST_SKIP() << "listmount: " << ids.error().message();
  auto table = parse_mountinfo(read_file("/proc/self/mountinfo"));
  ASSERT_TRUE(table) << table.error().message();
  std::map<uint64_t, MountEntry> by_old;
  for (auto& m : *table) by_old[m.mnt_id] = m;
  size_t compared = 0;
  for (uint64_t id : *ids) {
    auto m = api.stat(id);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_GE(m->unique_id, uint64_t{1} << 31);
    auto it = by_old.find(m->mnt_id);
    if (it == by_old.end()) continue;  // mounted or unmounted between the two reads
    EXPECT_TRUE(same_state(*m, it->second)) << "statmount: " << show(*m) << "\nmountinfo: " << show(it->second);
    ++compared;
  }
  EXPECT_GT(compared, 0u);
}

// A private mount namespace for this test process (each test case runs in a process of its own).
bool enter_private_namespace(std::string& why) {
  if (::unshare(CLONE_NEWNS) != 0) {
    why = std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
    return false;
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    why = std::string("making / private: ") + std::strerror(errno);
    return false;
  }
  return true;
}

TEST(FanotifyMountSourceKernel, AttachRemountMoveDetach) {
  std::string why;
  if (!enter_private_namespace(why)) GTEST_SKIP() << why;
  if (auto p = FanotifyMountSource::probe(); !p.empty()) GTEST_SKIP() << p;
  RealClock clock;
  auto loop = EventLoop::create(clock);
  ASSERT_TRUE(loop);
  FanotifyMountSource::Options o;
  o.min_scan_gap = std::chrono::milliseconds(0);
  auto src = FanotifyMountSource::create(o);
  ASSERT_TRUE(src) << src.error().message();
  std::vector<MountChanges> got;
  ASSERT_TRUE((*src)->start(**loop, [&](Result<MountChanges> c) {
    ASSERT_TRUE(c) << c.error().message();
    got.push_back(std::move(*c));
  }));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].full);
  char dir_a[] = "/tmp/mount-api-test-XXXXXX";
  char dir_b[] = "/tmp/mount-api-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_a), nullptr);
  ASSERT_NE(::mkdtemp(dir_b), nullptr);
  // The namespace (and every mount in it) goes with this process; the directories do not.
  struct Rm {
    std::string a, b;
    ~Rm() {
      ::umount2(a.c_str(), MNT_DETACH);
      ::umount2(b.c_str(), MNT_DETACH);
      ::rmdir(a.c_str());
      ::rmdir(b.c_str());
    }
  } rm{dir_a, dir_b};

  auto wait_for = [&](size_t n) {
    auto deadline = clock.now() + std::chrono::seconds(5);
    while (got.size() < n && clock.now() < deadline) (*loop)->step(std::chrono::milliseconds(100));
    return got.size() >= n;
  };
  ASSERT_EQ(::mount("swt", dir_a, "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  ASSERT_TRUE(wait_for(2));
  ASSERT_EQ(got[1].attached.size(), 1u);
  EXPECT_EQ(got[1].source, "fanotify");
  const MountEntry a = got[1].attached[0];
  EXPECT_EQ(a.mount_point, dir_a);
  EXPECT_EQ(a.source, "swt");
  EXPECT_GE(a.unique_id, uint64_t{1} << 31);

  ASSERT_EQ(::mount(nullptr, dir_a, nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0) << std::strerror(errno);
  ASSERT_TRUE(wait_for(3)) << "wakes " << (*src)->stats().wakes << " scans " << (*src)->stats().scans
                           << " notifications " << (*src)->stats().notifications;
  ASSERT_EQ(got[2].changed.size(), 1u);
  EXPECT_EQ(got[2].source, "mountinfo");
  EXPECT_EQ(got[2].changed[0].second.mount_options.substr(0, 2), "ro");
  EXPECT_EQ(got[2].changed[0].second.unique_id, a.unique_id);

  ASSERT_EQ(::mount(dir_a, dir_b, nullptr, MS_MOVE, nullptr), 0) << std::strerror(errno);
  ASSERT_TRUE(wait_for(4));
  ASSERT_EQ(got[3].detached.size(), 1u);
  ASSERT_EQ(got[3].attached.size(), 1u);
  EXPECT_EQ(got[3].attached[0].mount_point, dir_b);
  EXPECT_EQ(got[3].attached[0].unique_id, a.unique_id);

  ASSERT_EQ(::umount(dir_b), 0) << std::strerror(errno);
  ASSERT_TRUE(wait_for(5));
  ASSERT_EQ(got[4].detached.size(), 1u);
  EXPECT_EQ(got[4].detached[0].unique_id, a.unique_id);  // remembered: the id cannot be asked now
  EXPECT_EQ(got.size(), 5u);
}

}  // namespace
}  // namespace storwatch::daemon
