#include "daemon/mount/mountinfo.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>

#ifndef STORWATCH_FIXTURES_DIR
#define STORWATCH_FIXTURES_DIR "tests/fixtures"
#endif

namespace storwatch::daemon {
namespace {

std::string read_fixture(const std::string& name) {
  std::ifstream in(std::string(STORWATCH_FIXTURES_DIR) + "/proc/" + name);
  EXPECT_TRUE(in) << "missing fixture " << name;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<MountEntry> parse_fixture(const std::string& name) {
  auto mounts = parse_mountinfo(read_fixture(name));
  EXPECT_TRUE(mounts) << name << ": " << mounts.error().message();
  return mounts ? *mounts : std::vector<MountEntry>{};
}

const MountEntry* by_point(const std::vector<MountEntry>& mounts, std::string_view point) {
  for (const auto& m : mounts)
    if (m.mount_point == point) return &m;
  return nullptr;
}

TEST(ParseMountinfoLine, ManPageExample) {
  auto m = parse_mountinfo_line(
      "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->mnt_id, 36u);
  EXPECT_EQ(m->parent_id, 35u);
  EXPECT_EQ(m->major, 98u);
  EXPECT_EQ(m->minor, 0u);
  EXPECT_EQ(m->root, "/mnt1");
  EXPECT_EQ(m->mount_point, "/mnt/parent");
  EXPECT_EQ(m->mount_options, "rw,noatime");
  EXPECT_EQ(m->optional_fields, std::vector<std::string>{"master:1"});
  EXPECT_EQ(m->fstype, "ext3");
  EXPECT_EQ(m->source, "/dev/root");
  EXPECT_EQ(m->super_options, "rw,errors=continue");
}

TEST(ParseMountinfoLine, ZeroAndSeveralOptionalFields) {
  auto none = parse_mountinfo_line("21 20 0:19 / /proc rw,relatime - proc proc rw");
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_TRUE(none->optional_fields.empty());
  EXPECT_EQ(none->fstype, "proc");

  auto many = parse_mountinfo_line(
      "110 100 0:57 / /scratch rw shared:10 master:11 propagate_from:12 unbindable - xfs "
      "/dev/nvme1n1 rw,attr2");
  ASSERT_TRUE(many) << many.error().message();
  EXPECT_EQ(many->optional_fields, (std::vector<std::string>{"shared:10", "master:11",
                                                             "propagate_from:12", "unbindable"}));
  EXPECT_EQ(many->fstype, "xfs");
  EXPECT_EQ(many->source, "/dev/nvme1n1");
}

TEST(ParseMountinfoLine, LargeIdsAndDevices) {
  auto m =
      parse_mountinfo_line("18446744073709551615 1 4294967295:4294967295 / /x rw - ext4 /dev/x rw");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->mnt_id, UINT64_MAX);
  EXPECT_EQ(m->major, UINT32_MAX);
  EXPECT_EQ(m->minor, UINT32_MAX);
  EXPECT_FALSE(parse_mountinfo_line("18446744073709551616 1 8:1 / /x rw - ext4 /dev/x rw"));
  EXPECT_FALSE(parse_mountinfo_line("1 1 4294967296:1 / /x rw - ext4 /dev/x rw"));
}

TEST(ParseMountinfoLine, Escapes) {
  auto m = parse_mountinfo_line(
      "32 30 8:18 /dir\\011tab /mnt/a\\040b\\012c\\134d rw - vfat /dev/disk/by-label/USB\\040STICK "
      "rw");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->root, "/dir\ttab");
  EXPECT_EQ(m->mount_point, "/mnt/a b\nc\\d");
  EXPECT_EQ(m->source, "/dev/disk/by-label/USB STICK");
}

TEST(ParseMountinfoLine, UnusualEscapesDegradeToLiteralText) {
  // \101 is any octal byte ('A'); \400 does not fit a byte; \09 is not octal; a trailing
  // backslash or a short escape at the end must not read past the field.
  auto m = parse_mountinfo_line("1 0 8:1 / /a\\101\\400\\09\\04 rw - ext4 src\\ rw");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->mount_point, "/aA\\400\\09\\04");
  EXPECT_EQ(m->source, "src\\");
}

TEST(ParseMountinfoLine, OptionsStayEscaped) {
  // Unescaping \054 would turn a comma inside the lowerdir value into an option separator.
  auto m = parse_mountinfo_line(
      "36 30 0:42 / /mnt/ovl rw - overlay overlay rw,lowerdir=/lower\\054a:/b,upperdir=/u");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->super_options, "rw,lowerdir=/lower\\054a:/b,upperdir=/u");
  EXPECT_TRUE(m->has_super_option("lowerdir"));
  EXPECT_TRUE(m->has_super_option("upperdir=/u"));
}

TEST(ParseMountinfoLine, EmptyAndNoneSource) {
  auto empty = parse_mountinfo_line("34 30 0:40 / /mnt/e rw,relatime - tmpfs  rw,size=1024k");
  ASSERT_TRUE(empty) << empty.error().message();
  EXPECT_EQ(empty->fstype, "tmpfs");
  EXPECT_EQ(empty->source, "");
  EXPECT_EQ(empty->super_options, "rw,size=1024k");

  auto none = parse_mountinfo_line("35 30 0:41 / /mnt/n rw - tmpfs none rw");
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_EQ(none->source, "none");
}

TEST(ParseMountinfoLine, Malformed) {
  struct Case {
    const char* line;
    const char* message;
  };
  const Case cases[] = {
      {"", "too few fields"},
      {"36 35 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root", "too few fields"},
      {"36 35 98:0 /mnt1 /mnt/parent rw master:1 shared:2 ext3 /dev/root rw", "no ' - ' separator"},
      {"36 35 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root rw extra",
       "want 3 fields after ' - ', got 4"},
      {"36 35 98:0 /mnt1 /mnt/parent rw x y - ext3 /dev/root", "want 3 fields after ' - ', got 2"},
      {"x 35 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root rw", "bad mount id 'x'"},
      {"-1 35 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root rw", "bad mount id '-1'"},
      {"36 35x 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root rw", "bad parent id '35x'"},
      {"36 35 980 /mnt1 /mnt/parent rw - ext3 /dev/root rw", "bad device '980'"},
      {"36 35 98: /mnt1 /mnt/parent rw - ext3 /dev/root rw", "bad device '98:'"},
      {"36 35 98:0:1 /mnt1 /mnt/parent rw - ext3 /dev/root rw", "bad device '98:0:1'"},
      {"36 35 98:0  /mnt/parent rw - ext3 /dev/root rw", "empty root"},
      {"36 35 98:0 /mnt1 /mnt/parent rw  - ext3 /dev/root rw", "empty optional field"},
      {"36 35 98:0 /mnt1 /mnt/parent rw -  /dev/root rw", "empty filesystem type"},
  };
  for (const Case& c : cases) {
    auto m = parse_mountinfo_line(c.line);
    ASSERT_FALSE(m) << c.line;
    EXPECT_EQ(m.error().code(), std::errc::invalid_argument);
    EXPECT_NE(m.error().message().find(c.message), std::string::npos)
        << c.line << " -> " << m.error().message();
  }
}

TEST(ParseMountinfoLine, ErrorQuotesAreBoundedAndPrintable) {
  std::string line = std::string(1000, 'x') + "\x01 1 8:1 / /x rw - ext4 /dev/x rw";
  auto m = parse_mountinfo_line(line);
  ASSERT_FALSE(m);
  EXPECT_LT(m.error().message().size(), 120u);
  auto ctl = parse_mountinfo_line("1\x01 1 8:1 / /x rw - ext4 /dev/x rw");
  ASSERT_FALSE(ctl);
  EXPECT_NE(ctl.error().message().find("'1\\x01'"), std::string::npos) << ctl.error().message();
}

TEST(ParseMountinfo, LineNumbersInErrors) {
  auto r = parse_mountinfo(
      "21 20 0:19 / /proc rw - proc proc rw\n"
      "22 20 0:20 / /sys rw - sysfs sysfs rw\n"
      "23 20 0:21 / /dev rw devtmpfs udev rw\n");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message().rfind("mountinfo line 3: ", 0), 0u) << r.error().message();

  auto single = parse_mountinfo_line("23 20");
  ASSERT_FALSE(single);
  EXPECT_EQ(single.error().message().rfind("mountinfo line: too few fields", 0), 0u)
      << single.error().message();
}

TEST(ParseMountinfo, EmptyInputAndTrailingNewline) {
  auto empty = parse_mountinfo("");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());

  auto r = parse_mountinfo("21 20 0:19 / /proc rw - proc proc rw\n\n");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->size(), 1u);

  auto no_newline = parse_mountinfo("21 20 0:19 / /proc rw - proc proc rw");
  ASSERT_TRUE(no_newline) << no_newline.error().message();
  EXPECT_EQ(no_newline->size(), 1u);
}

TEST(ParseMountinfo, HostFixture) {
  auto mounts = parse_fixture("mountinfo-host.txt");
  ASSERT_FALSE(mounts.empty());
  const MountEntry* root = by_point(mounts, "/");
  ASSERT_NE(root, nullptr);
  EXPECT_FALSE(root->read_only());
  EXPECT_TRUE(watched_by_default(*root));
  const MountEntry* proc = by_point(mounts, "/proc");
  ASSERT_NE(proc, nullptr);
  EXPECT_EQ(proc->fstype, "proc");
  EXPECT_FALSE(watched_by_default(*proc));
}

TEST(ParseMountinfo, EscapesFixture) {
  auto mounts = parse_fixture("mountinfo-escapes.txt");
  ASSERT_EQ(mounts.size(), 7u);
  EXPECT_NE(by_point(mounts, "/mnt/My Disk"), nullptr);
  const MountEntry* nl = by_point(mounts, "/mnt/line\nbreak");
  ASSERT_NE(nl, nullptr);
  EXPECT_EQ(nl->root, "/dir\ttab");
  const MountEntry* bs = by_point(mounts, "/mnt/back\\slash");
  ASSERT_NE(bs, nullptr);
  EXPECT_EQ(bs->source, "/dev/disk/by-label/USB STICK");
  const MountEntry* empty = by_point(mounts, "/mnt/empty source");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->source, "");
  EXPECT_EQ(empty->super_options, "rw,size=1024k");
}

TEST(ParseMountinfo, OptionalFieldsFixture) {
  auto mounts = parse_fixture("mountinfo-optional.txt");
  ASSERT_EQ(mounts.size(), 11u);
  const MountEntry* slave = by_point(mounts, "/data-slave");
  ASSERT_NE(slave, nullptr);
  EXPECT_EQ(slave->optional_fields, (std::vector<std::string>{"master:3", "propagate_from:2"}));
  EXPECT_EQ(by_point(mounts, "/etc/hosts")->optional_fields,
            std::vector<std::string>{"unbindable"});
  EXPECT_TRUE(by_point(mounts, "/proc")->optional_fields.empty());
  EXPECT_EQ(by_point(mounts, "/sys/fs/cgroup")->source, "cgroup");
}

TEST(ParseMountinfo, DesktopFixture) {
  auto mounts = parse_fixture("mountinfo-desktop.txt");
  ASSERT_EQ(mounts.size(), 29u);
  const MountEntry* home = by_point(mounts, "/home");
  ASSERT_NE(home, nullptr);
  EXPECT_EQ(home->root, "/@home");
  EXPECT_EQ(home->fstype, "btrfs");
  EXPECT_TRUE(home->has_super_option("subvol"));
  EXPECT_TRUE(home->has_super_option("subvol=/@home"));
  EXPECT_FALSE(home->has_super_option("subvol=/@"));
  const MountEntry* ns = by_point(mounts, "/run/netns/ns1");
  ASSERT_NE(ns, nullptr);
  EXPECT_EQ(ns->root, "net:[4026532281]");
  EXPECT_EQ(by_point(mounts, "/home/alice/remote")->fstype, "fuse.sshfs");
  EXPECT_EQ(by_point(mounts, "/home/alice/remote")->source, "alice@build.example.org:/srv");
}

TEST(MountEntry, ReadOnlyFromMountOrSuperOptions) {
  MountEntry m;
  m.mount_options = "rw,relatime";
  m.super_options = "rw,errors=remount-ro";
  EXPECT_FALSE(m.read_only());
  m.mount_options = "ro,relatime";
  EXPECT_TRUE(m.read_only());
  m.mount_options = "rw,relatime";
  m.super_options = "ro,errors=continue";
  EXPECT_TRUE(m.read_only());
  // Option names match whole, not by prefix.
  m.super_options = "rw,root=/x,rofs";
  EXPECT_FALSE(m.read_only());
}

TEST(MountEntry, HasSuperOption) {
  MountEntry m;
  m.super_options = "rw,errors=remount-ro,emergency_ro";
  EXPECT_TRUE(m.has_super_option("emergency_ro"));
  EXPECT_TRUE(m.has_super_option("errors"));
  EXPECT_TRUE(m.has_super_option("errors=remount-ro"));
  EXPECT_FALSE(m.has_super_option("errors=continue"));
  EXPECT_FALSE(m.has_super_option("error"));
  EXPECT_FALSE(m.has_super_option("emergency"));
  EXPECT_FALSE(m.has_super_option(""));
  m.super_options = "";
  EXPECT_FALSE(m.has_super_option("rw"));
}

TEST(Policy, PseudoFstypes) {
  for (const char* t :
       {"proc",      "sysfs",      "cgroup",      "cgroup2",  "devpts",     "devtmpfs", "debugfs",
        "tracefs",   "securityfs", "pstore",      "bpf",      "configfs",   "fusectl",  "mqueue",
        "hugetlbfs", "autofs",     "binfmt_misc", "efivarfs", "rpc_pipefs", "nsfs",     "selinuxfs",
        "squashfs",  "erofs",      "iso9660",     "udf",      "cgroup3"})
    EXPECT_TRUE(is_pseudo_fstype(t)) << t;
  for (const char* t : {"ext4", "xfs", "btrfs", "vfat", "tmpfs", "ramfs", "overlay", "fuse.sshfs",
                        "fuse", "nfs4", "zfs", "", "proc2", "sys"})
    EXPECT_FALSE(is_pseudo_fstype(t)) << t;
}

TEST(Policy, WatchedByDefault) {
  auto mounts = parse_fixture("mountinfo-desktop.txt");
  auto watched = [&](std::string_view point) {
    const MountEntry* m = by_point(mounts, point);
    EXPECT_NE(m, nullptr) << point;
    return m && watched_by_default(*m);
  };
  EXPECT_TRUE(watched("/"));
  EXPECT_TRUE(watched("/home"));
  EXPECT_TRUE(watched("/boot/efi"));
  EXPECT_TRUE(watched("/run"));
  EXPECT_TRUE(watched("/dev/shm"));
  EXPECT_TRUE(watched("/home/alice/remote"));
  EXPECT_TRUE(watched("/var/lib/docker/overlay2/3f1c/merged"));
  EXPECT_FALSE(watched("/proc"));
  EXPECT_FALSE(watched("/sys/fs/cgroup"));
  EXPECT_FALSE(watched("/dev"));
  EXPECT_FALSE(watched("/snap/core22/1380"));
  EXPECT_FALSE(watched("/media/alice/UBUNTU_22_04"));
  EXPECT_FALSE(watched("/run/netns/ns1"));
  EXPECT_FALSE(watched("/proc/sys/fs/binfmt_misc"));

  auto bind = parse_fixture("mountinfo-bind.txt");
  EXPECT_FALSE(watched_by_default(*by_point(bind, "/var/www-static")));  // ro bind
  EXPECT_FALSE(watched_by_default(*by_point(bind, "/mnt/archive")));     // ro superblock
}

// A cheap, deterministic cousin of the fuzz target so plain test runs also cover garbage input.
TEST(ParseMountinfo, GarbageNeverCrashes) {
  const std::string alphabet = " -:\\0123456789/\nabrwo";
  std::mt19937 rng(1234);
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    size_t len = rng() % 80;
    for (size_t i = 0; i < len; ++i) text += alphabet[rng() % alphabet.size()];
    auto r = parse_mountinfo(text);
    if (!r) {
      EXPECT_EQ(r.error().message().rfind("mountinfo line ", 0), 0u) << r.error().message();
    }
  }
}

}  // namespace
}  // namespace storwatch::daemon
