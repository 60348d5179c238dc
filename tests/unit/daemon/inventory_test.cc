#include "daemon/mount/inventory.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>

#ifndef STORWATCH_FIXTURES_DIR
#define STORWATCH_FIXTURES_DIR "tests/fixtures"
#endif

namespace storwatch::daemon {
namespace {

std::vector<MountEntry> parse(std::string_view text) {
  auto mounts = parse_mountinfo(text);
  EXPECT_TRUE(mounts) << mounts.error().message();
  return mounts ? *mounts : std::vector<MountEntry>{};
}

std::vector<MountEntry> fixture(const std::string& name) {
  std::ifstream in(std::string(STORWATCH_FIXTURES_DIR) + "/proc/" + name);
  EXPECT_TRUE(in) << "missing fixture " << name;
  return parse(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
}

std::vector<std::string> devs(const std::vector<Filesystem>& list) {
  std::vector<std::string> out;
  for (const auto& fs : list) out.push_back(fs.dev());
  return out;
}

std::vector<std::string> points(const std::vector<MountEntry>& list) {
  std::vector<std::string> out;
  for (const auto& m : list) out.push_back(m.mount_point);
  return out;
}

std::string dev_at(const Inventory& inv, std::string_view path) {
  const Filesystem* fs = inv.find_by_mount_prefix(path);
  return fs ? fs->dev() : "none";
}

constexpr std::string_view kBase =
    "20 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw,errors=remount-ro\n"
    "21 20 0:19 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
    "22 20 8:3 / /srv rw,relatime - ext4 /dev/sda3 rw,errors=remount-ro\n";

TEST(Inventory, GroupsBindMountsBySuperblock) {
  Inventory inv;
  inv.update(fixture("mountinfo-bind.txt"));
  std::vector<std::string> all;
  for (const Filesystem* fs : inv.all()) all.push_back(fs->dev());
  EXPECT_EQ(all, (std::vector<std::string>{"0:19", "8:2", "8:3", "8:17", "8:33"}));

  const Filesystem* srv = inv.find(8, 3);
  ASSERT_NE(srv, nullptr);
  EXPECT_EQ(srv->mounts, (std::vector<std::string>{"/srv", "/var/www", "/var/www-static"}));
  EXPECT_EQ(srv->fstype, "ext4");
  EXPECT_EQ(srv->source, "/dev/sda3");
  EXPECT_EQ(srv->probe_path, "/srv");
  // One read-only bind does not make the filesystem read-only or hide it from the policy.
  EXPECT_FALSE(srv->read_only);
  EXPECT_TRUE(srv->watched);

  const Filesystem* archive = inv.find(8, 17);
  ASSERT_NE(archive, nullptr);
  EXPECT_TRUE(archive->read_only);  // the superblock is ro
  EXPECT_FALSE(archive->watched);

  const Filesystem* exports = inv.find(8, 33);
  ASSERT_NE(exports, nullptr);
  EXPECT_TRUE(exports->read_only);  // every mount is ro, the superblock is not
  EXPECT_FALSE(exports->watched);
  EXPECT_EQ(exports->super_options, "rw");
  EXPECT_EQ(exports->probe_path, "/mnt/exports");  // no mount of its root: the first

  EXPECT_FALSE(inv.find(0, 19)->watched);
  EXPECT_EQ(inv.find(8, 4), nullptr);
  EXPECT_EQ(inv.mounts().size(), 8u);
}

TEST(Inventory, BtrfsSubvolumesAreOneFilesystem) {
  Inventory inv;
  inv.update(fixture("mountinfo-desktop.txt"));
  const Filesystem* btrfs = inv.find(0, 26);
  ASSERT_NE(btrfs, nullptr);
  EXPECT_EQ(btrfs->fstype, "btrfs");
  EXPECT_EQ(btrfs->source, "/dev/nvme0n1p2");
  EXPECT_EQ(btrfs->mounts, (std::vector<std::string>{"/", "/home"}));
  EXPECT_EQ(btrfs->probe_path, "/");
  EXPECT_TRUE(btrfs->watched);
  EXPECT_EQ(dev_at(inv, "/home/alice/docs"), "0:26");
  EXPECT_EQ(dev_at(inv, "/home/alice/remote/src"), "0:47");
  EXPECT_EQ(dev_at(inv, "/boot/efi/EFI"), "259:1");
  // binfmt_misc is mounted over its autofs trigger at the same mount point.
  EXPECT_EQ(dev_at(inv, "/proc/sys/fs/binfmt_misc/status"), "0:48");

  size_t watched = 0;
  for (const Filesystem* fs : inv.all()) watched += fs->watched;
  // btrfs, vfat, the three tmpfs (/run, /dev/shm, /run/user/1000), gvfs, sshfs, overlay.
  EXPECT_EQ(watched, 8u);
}

TEST(Inventory, ProbePathPrefersTheMountOfTheRoot) {
  Inventory inv;
  inv.update(
      parse("30 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
            "31 30 8:5 /sub /a rw - ext4 /dev/sda5 rw\n"
            "32 30 8:5 / /z rw - ext4 /dev/sda5 rw\n"));
  EXPECT_EQ(inv.find(8, 5)->probe_path, "/z");
  EXPECT_EQ(inv.find(8, 5)->mounts, (std::vector<std::string>{"/a", "/z"}));
}

TEST(Inventory, OvermountsCountAndTheTopmostAnswersLookups) {
  auto mounts = fixture("mountinfo-host.txt");
  Inventory inv;
  inv.update(mounts);
  // /dev/shm and /dev/pts are each mounted twice; the lower ones are shadowed but still present.
  EXPECT_NE(inv.find(0, 23), nullptr);
  EXPECT_NE(inv.find(0, 24), nullptr);
  EXPECT_EQ(dev_at(inv, "/dev/shm/x"), "0:27");
  EXPECT_EQ(dev_at(inv, "/dev/pts/0"), "0:26");
  EXPECT_EQ(dev_at(inv, "/etc/passwd"), "254:0");
  EXPECT_EQ(dev_at(inv, "/opt/tools/bin"), "0:25");

  // The answer does not depend on the order the kernel listed the mounts in.
  std::reverse(mounts.begin(), mounts.end());
  Inventory reversed;
  reversed.update(mounts);
  EXPECT_EQ(dev_at(reversed, "/dev/shm/x"), "0:27");
  EXPECT_EQ(dev_at(reversed, "/dev/pts/0"), "0:26");
}

TEST(Inventory, FindByMountPrefixIsComponentWise) {
  Inventory inv;
  EXPECT_EQ(inv.find_by_mount_prefix("/"), nullptr);
  inv.update(
      parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
            "2 1 8:2 / /mnt/a rw - ext4 /dev/sda2 rw\n"
            "3 1 8:3 / /mnt/ab rw - ext4 /dev/sda3 rw\n"
            "4 2 8:4 / /mnt/a/b/c rw - ext4 /dev/sda4 rw\n"));
  EXPECT_EQ(dev_at(inv, "/mnt/ab/x"), "8:3");
  EXPECT_EQ(dev_at(inv, "/mnt/ab"), "8:3");
  EXPECT_EQ(dev_at(inv, "/mnt/a"), "8:2");
  EXPECT_EQ(dev_at(inv, "/mnt/a/"), "8:2");
  EXPECT_EQ(dev_at(inv, "/mnt/a/b"), "8:2");
  EXPECT_EQ(dev_at(inv, "/mnt/a/b/cd"), "8:2");
  EXPECT_EQ(dev_at(inv, "/mnt/a/b/c/d"), "8:4");
  EXPECT_EQ(dev_at(inv, "/mnt/abc"), "8:1");
  EXPECT_EQ(dev_at(inv, "/mnt"), "8:1");
  EXPECT_EQ(dev_at(inv, "/"), "8:1");
  EXPECT_EQ(dev_at(inv, "mnt/a"), "none");
  EXPECT_EQ(dev_at(inv, ""), "none");

  Inventory no_root;
  no_root.update(parse("2 1 8:2 / /mnt/a rw - ext4 /dev/sda2 rw\n"));
  EXPECT_EQ(dev_at(no_root, "/mnt/b"), "none");
  EXPECT_EQ(dev_at(no_root, "/"), "none");
  EXPECT_EQ(dev_at(no_root, "/mnt/a/x"), "8:2");
}

TEST(Inventory, FirstUpdateAddsEverything) {
  Inventory inv;
  auto diff = inv.update(parse(kBase));
  EXPECT_EQ(devs(diff.added), (std::vector<std::string>{"0:19", "8:2", "8:3"}));
  EXPECT_TRUE(diff.removed.empty());
  EXPECT_TRUE(diff.changed.empty());
  EXPECT_EQ(diff.mounts_attached.size(), 3u);
  EXPECT_TRUE(diff.mounts_detached.empty());
  EXPECT_TRUE(diff.mounts_changed.empty());
  EXPECT_FALSE(diff.empty());
}

TEST(Inventory, SameOrReorderedTableIsNoChange) {
  Inventory inv;
  auto mounts = parse(kBase);
  inv.update(mounts);
  EXPECT_TRUE(inv.update(mounts).empty());
  std::reverse(mounts.begin(), mounts.end());
  EXPECT_TRUE(inv.update(mounts).empty());
}

TEST(Inventory, AddAndRemoveFilesystem) {
  Inventory inv;
  inv.update(parse(kBase));
  std::string more(kBase);
  more += "23 20 8:17 / /mnt/usb rw,nosuid - vfat /dev/sdb1 rw,fmask=0022\n";
  auto added = inv.update(parse(more));
  EXPECT_EQ(devs(added.added), std::vector<std::string>{"8:17"});
  EXPECT_TRUE(added.removed.empty());
  EXPECT_TRUE(added.changed.empty());
  EXPECT_EQ(points(added.mounts_attached), std::vector<std::string>{"/mnt/usb"});
  EXPECT_TRUE(added.mounts_detached.empty());

  auto removed = inv.update(parse(kBase));
  EXPECT_EQ(devs(removed.removed), std::vector<std::string>{"8:17"});
  ASSERT_EQ(removed.removed.size(), 1u);
  EXPECT_EQ(removed.removed[0].mounts, std::vector<std::string>{"/mnt/usb"});
  EXPECT_TRUE(removed.added.empty());
  EXPECT_EQ(points(removed.mounts_detached), std::vector<std::string>{"/mnt/usb"});
  EXPECT_EQ(inv.find(8, 17), nullptr);
}

TEST(Inventory, SecondBindMountChangesTheFilesystem) {
  Inventory inv;
  inv.update(parse(kBase));
  std::string bind(kBase);
  bind += "23 20 8:3 /www /var/www rw,relatime - ext4 /dev/sda3 rw,errors=remount-ro\n";
  auto diff = inv.update(parse(bind));
  EXPECT_TRUE(diff.added.empty());
  EXPECT_TRUE(diff.removed.empty());
  ASSERT_EQ(devs(diff.changed), std::vector<std::string>{"8:3"});
  EXPECT_EQ(diff.changed[0].mounts, (std::vector<std::string>{"/srv", "/var/www"}));
  EXPECT_EQ(diff.changed[0].probe_path, "/srv");
  EXPECT_EQ(points(diff.mounts_attached), std::vector<std::string>{"/var/www"});
  EXPECT_EQ(diff.mounts_attached[0].mnt_id, 23u);
  EXPECT_TRUE(diff.mounts_detached.empty());
  EXPECT_TRUE(diff.mounts_changed.empty());
}

TEST(Inventory, RemountReadOnly) {
  Inventory inv;
  inv.update(parse(kBase));
  std::string ro(kBase);
  ro.replace(ro.find("/srv rw,relatime"), 16, "/srv ro,relatime");
  auto diff = inv.update(parse(ro));
  ASSERT_EQ(devs(diff.changed), std::vector<std::string>{"8:3"});
  EXPECT_TRUE(diff.changed[0].read_only);
  EXPECT_FALSE(diff.changed[0].watched);  // the default policy skips read-only mounts
  ASSERT_EQ(diff.mounts_changed.size(), 1u);
  EXPECT_EQ(diff.mounts_changed[0].first.mount_options, "rw,relatime");
  EXPECT_EQ(diff.mounts_changed[0].second.mount_options, "ro,relatime");
  EXPECT_TRUE(diff.mounts_attached.empty());
  EXPECT_TRUE(diff.mounts_detached.empty());

  // The kernel turning the superblock read-only (errors=remount-ro) shows in super options.
  Inventory sb;
  sb.update(parse(kBase));
  std::string sb_ro(kBase);
  sb_ro.replace(sb_ro.rfind("rw,errors=remount-ro"), 2, "ro");
  auto sb_diff = sb.update(parse(sb_ro));
  ASSERT_EQ(devs(sb_diff.changed), std::vector<std::string>{"8:3"});
  EXPECT_TRUE(sb_diff.changed[0].read_only);
  EXPECT_EQ(sb_diff.mounts_changed.size(), 1u);
}

TEST(Inventory, ReadOnlyRemountOfOneBindOnlyChangesTheMount) {
  Inventory inv;
  inv.update(fixture("mountinfo-bind.txt"));
  auto mounts = fixture("mountinfo-bind.txt");
  for (auto& m : mounts)
    if (m.mount_point == "/var/www") m.mount_options = "ro,relatime";
  auto diff = inv.update(mounts);
  EXPECT_TRUE(diff.changed.empty());  // /srv is still writable, so nothing about 8:3 changed
  ASSERT_EQ(diff.mounts_changed.size(), 1u);
  EXPECT_EQ(diff.mounts_changed[0].second.mount_point, "/var/www");
}

TEST(Inventory, EmergencyReadOnly) {
  Inventory inv;
  inv.update(
      parse("20 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw,errors=remount-ro\n"
            "22 20 8:3 / /srv rw,relatime - ext4 /dev/sda3 rw,errors=remount-ro\n"
            "23 20 8:3 /www /var/www rw,relatime - ext4 /dev/sda3 rw,errors=remount-ro\n"));
  EXPECT_FALSE(inv.find(8, 3)->emergency_ro);
  auto diff = inv.update(fixture("mountinfo-emergency-ro.txt"));
  ASSERT_EQ(devs(diff.changed), std::vector<std::string>{"8:3"});
  const Filesystem& fs = diff.changed[0];
  EXPECT_TRUE(fs.emergency_ro);
  EXPECT_TRUE(fs.read_only);
  // Still watched: the filesystem's own state changed, not its mounts, and the daemon must see
  // it come back.
  EXPECT_TRUE(fs.watched);
  EXPECT_EQ(diff.mounts_changed.size(), 2u);
  EXPECT_FALSE(inv.find(8, 2)->emergency_ro);
}

TEST(Inventory, ReusedMountIdElsewhereIsDetachAndAttach) {
  Inventory inv;
  inv.update(parse(kBase));
  std::string moved(kBase);
  moved.replace(moved.find("/srv"), 4, "/data");
  auto diff = inv.update(parse(moved));
  EXPECT_EQ(points(diff.mounts_detached), std::vector<std::string>{"/srv"});
  EXPECT_EQ(points(diff.mounts_attached), std::vector<std::string>{"/data"});
  EXPECT_TRUE(diff.mounts_changed.empty());
  ASSERT_EQ(devs(diff.changed), std::vector<std::string>{"8:3"});
  EXPECT_EQ(diff.changed[0].mounts, std::vector<std::string>{"/data"});
}

TEST(Inventory, PropagationChangeIsAMountChange) {
  Inventory inv;
  inv.update(parse(kBase));
  std::string shared(kBase);
  shared.replace(shared.find("/srv rw,relatime -"), 18, "/srv rw,relatime shared:5 -");
  auto diff = inv.update(parse(shared));
  EXPECT_TRUE(diff.changed.empty());
  ASSERT_EQ(diff.mounts_changed.size(), 1u);
  EXPECT_EQ(diff.mounts_changed[0].second.optional_fields, std::vector<std::string>{"shared:5"});
}

TEST(Inventory, CustomPolicy) {
  Inventory inv([](const MountEntry& m) { return m.mount_point == "/var/www-static"; });
  inv.update(fixture("mountinfo-bind.txt"));
  EXPECT_TRUE(inv.find(8, 3)->watched);
  EXPECT_FALSE(inv.find(8, 2)->watched);
  EXPECT_FALSE(inv.find(8, 17)->watched);

  Inventory fallback{Inventory::Policy{}};
  fallback.update(fixture("mountinfo-bind.txt"));
  EXPECT_TRUE(fallback.find(8, 2)->watched);
  EXPECT_FALSE(fallback.find(0, 19)->watched);
}

TEST(Inventory, EscapedAndEmptySourceMounts) {
  Inventory inv;
  inv.update(fixture("mountinfo-escapes.txt"));
  EXPECT_EQ(dev_at(inv, "/mnt/My Disk/file"), "8:17");
  EXPECT_EQ(dev_at(inv, "/mnt/line\nbreak"), "8:18");
  EXPECT_EQ(dev_at(inv, "/mnt/My"), "8:1");
  const Filesystem* empty = inv.find(0, 40);
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->source, "");
  EXPECT_TRUE(empty->watched);
}

TEST(Inventory, DuplicateIdentitiesDoNotConfuseTheDiff) {
  // The kernel never lists one mount twice; make sure a garbled table still diffs sanely.
  std::string dup(kBase);
  dup += "22 20 8:3 / /srv ro,relatime - ext4 /dev/sda3 rw,errors=remount-ro\n";
  Inventory inv;
  auto first = inv.update(parse(dup));
  EXPECT_EQ(first.mounts_attached.size(), 4u);
  auto second = inv.update(parse(kBase));
  EXPECT_EQ(second.mounts_detached.size(), 1u);
  EXPECT_TRUE(inv.update(parse(kBase)).empty());
}

// 10,000 mounts: 2,500 filesystems with four binds each, plus a 2,000-deep overmount stack. A
// quadratic step would take minutes here; n log n takes milliseconds.
TEST(Inventory, ScalesToTenThousandMounts) {
  std::vector<MountEntry> mounts;
  MountEntry root;
  root.mnt_id = 1;
  root.major = 8;
  root.minor = 1;
  root.root = root.mount_point = "/";
  root.mount_options = root.super_options = "rw";
  root.fstype = "ext4";
  mounts.push_back(root);
  uint64_t id = 2;
  for (uint32_t fs = 0; fs < 2000; ++fs) {
    for (int bind = 0; bind < 4; ++bind) {
      MountEntry m = root;
      m.mnt_id = id++;
      m.parent_id = 1;
      m.major = 9;
      m.minor = fs;
      m.root = bind == 0 ? "/" : "/sub" + std::to_string(bind);
      m.mount_point = "/srv/fs" + std::to_string(fs) + "/b" + std::to_string(bind);
      mounts.push_back(m);
    }
  }
  for (int k = 0; k < 2000; ++k) {
    MountEntry m = root;
    m.mnt_id = id;
    m.parent_id = k == 0 ? 1 : id - 1;
    ++id;
    m.major = 10;
    m.minor = static_cast<uint32_t>(k);
    m.mount_point = "/stack";
    mounts.push_back(m);
  }
  Inventory inv;
  auto first = inv.update(mounts);
  EXPECT_EQ(first.added.size(), 1u + 2000u + 2000u);
  EXPECT_EQ(first.mounts_attached.size(), mounts.size());
  EXPECT_EQ(inv.find(9, 1999)->mounts.size(), 4u);
  EXPECT_EQ(inv.find(9, 7)->probe_path, "/srv/fs7/b0");
  EXPECT_EQ(dev_at(inv, "/stack/x"), "10:1999");
  EXPECT_EQ(dev_at(inv, "/srv/fs12/b3/deep/er"), "9:12");

  mounts.erase(mounts.begin() + 5);  // fs1's first mount
  auto second = inv.update(mounts);
  EXPECT_EQ(devs(second.changed), std::vector<std::string>{"9:1"});
  EXPECT_EQ(second.mounts_detached.size(), 1u);
  EXPECT_EQ(inv.find(9, 1)->probe_path, "/srv/fs1/b1");
}

}  // namespace
}  // namespace storwatch::daemon
