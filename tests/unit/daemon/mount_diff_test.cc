// The mountinfo fallback's incremental diff and the Inventory fed incrementally: both must agree
// with a full re-parse (Inventory::update), which is what they replace.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "daemon/mount/inventory.h"
#include "daemon/mount/mountinfo_diff.h"

namespace storwatch::daemon {
namespace {

constexpr std::string_view kBase =
    "20 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro\n"
    "21 20 0:19 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
    "22 20 8:3 / /srv rw,relatime - ext4 /dev/sda3 rw\n";

std::vector<std::string> points(const std::vector<MountEntry>& ms) {
  std::vector<std::string> out;
  for (const auto& m : ms) out.push_back(m.mount_point);
  return out;
}

TEST(MountinfoDiff, FirstTextIsTheWholeTable) {
  MountinfoDiff d;
  auto c = d.update(kBase);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_TRUE(c->full);
  EXPECT_EQ(points(c->attached), (std::vector<std::string>{"/", "/proc", "/srv"}));
  EXPECT_EQ(c->source, "mountinfo");
  EXPECT_EQ(d.size(), 3u);
}

TEST(MountinfoDiff, UnchangedLinesAreHashedNotParsed) {
  MountinfoDiff d;
  ASSERT_TRUE(d.update(kBase));
  auto c = d.update(kBase);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->empty());
  EXPECT_EQ(d.last_parsed(), 0u);

  std::string more = std::string(kBase) + "23 22 0:40 / /srv/tmp rw - tmpfs t rw\n";
  c = d.update(more);
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->full);
  EXPECT_EQ(points(c->attached), (std::vector<std::string>{"/srv/tmp"}));
  EXPECT_TRUE(c->detached.empty());
  EXPECT_EQ(d.last_parsed(), 1u);
}

TEST(MountinfoDiff, RemountIsAChangeDetachIsADetach) {
  MountinfoDiff d;
  ASSERT_TRUE(d.update(kBase));
  std::string ro = std::string(kBase);
  ro.replace(ro.find("/srv rw,relatime"), 16, "/srv ro,relatime");
  auto c = d.update(ro);
  ASSERT_TRUE(c);
  ASSERT_EQ(c->changed.size(), 1u);
  EXPECT_EQ(c->changed[0].first.mount_options, "rw,relatime");
  EXPECT_EQ(c->changed[0].second.mount_options, "ro,relatime");
  EXPECT_TRUE(c->attached.empty());

  c = d.update("20 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(points(c->detached).size(), 2u);
  EXPECT_TRUE(c->changed.empty());
}

TEST(MountinfoDiff, ReusedIdElsewhereIsDetachAndAttach) {
  MountinfoDiff d;
  ASSERT_TRUE(d.update(kBase));
  std::string moved = std::string(kBase);
  moved.replace(moved.find(" /srv "), 6, " /data ");
  auto c = d.update(moved);
  ASSERT_TRUE(c);
  EXPECT_EQ(points(c->detached), (std::vector<std::string>{"/srv"}));
  EXPECT_EQ(points(c->attached), (std::vector<std::string>{"/data"}));
  EXPECT_TRUE(c->changed.empty());
}

TEST(MountinfoDiff, BadLineFailsAndTheNextGoodTextStartsAfresh) {
  MountinfoDiff d;
  ASSERT_TRUE(d.update(kBase));
  auto bad = d.update(std::string(kBase) + "garbage\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().context().find("line 4"), std::string::npos) << bad.error().context();
  auto c = d.update(kBase);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->full);
  EXPECT_EQ(c->attached.size(), 3u);
}

// Random tables and random edits: the incremental path (MountinfoDiff -> Inventory::apply) ends
// in the same inventory, and reports the same mount changes, as a full re-parse.
std::string random_table(std::mt19937& rng, int generation) {
  std::string out = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n";
  std::uniform_int_distribution<int> coin(0, 3);
  for (int id = 2; id < 40; ++id) {
    if (coin(rng) == 0) continue;  // not mounted this time
    int dev = 10 + id % 7;         // several mounts per superblock: binds
    std::string opts = coin(rng) == 0 ? "ro" : "rw";
    std::string point = "/m" + std::to_string(id);
    if (coin(rng) == 0) point += "-moved";
    std::string prop = coin(rng) == 0 ? " shared:" + std::to_string(generation % 3 + 1) : "";
    out += std::to_string(id) + " 1 0:" + std::to_string(dev) + " / " + point + " " + opts + prop +
           " - tmpfs src" + std::to_string(dev) + " rw\n";
  }
  return out;
}

TEST(MountinfoDiff, IncrementalInventoryMatchesFullReparse) {
  std::mt19937 rng(42);
  MountinfoDiff d;
  Inventory incremental, full;
  for (int gen = 0; gen < 200; ++gen) {
    std::string text = random_table(rng, gen);
    auto c = d.update(text);
    ASSERT_TRUE(c) << c.error().message();
    auto parsed = parse_mountinfo(text);
    ASSERT_TRUE(parsed);
    auto di = incremental.apply(std::move(*c));
    auto df = full.update(std::move(*parsed));
    auto ids = [](const std::vector<MountEntry>& ms) {
      std::multiset<std::pair<uint64_t, std::string>> s;
      for (const auto& m : ms) s.emplace(m.mnt_id, m.mount_point);
      return s;
    };
    EXPECT_EQ(ids(di.mounts_attached), ids(df.mounts_attached)) << "generation " << gen;
    EXPECT_EQ(ids(di.mounts_detached), ids(df.mounts_detached)) << "generation " << gen;
    EXPECT_EQ(di.mounts_changed.size(), df.mounts_changed.size()) << "generation " << gen;
    EXPECT_EQ(di.added.size(), df.added.size()) << "generation " << gen;
    EXPECT_EQ(di.removed.size(), df.removed.size()) << "generation " << gen;
    EXPECT_EQ(di.changed.size(), df.changed.size()) << "generation " << gen;
    auto a = incremental.all();
    auto b = full.all();
    ASSERT_EQ(a.size(), b.size()) << "generation " << gen;
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(*a[i], *b[i]) << "generation " << gen;
    EXPECT_EQ(incremental.mount_count(), full.mount_count());
    for (int id = 2; id < 40; ++id) {
      std::string p = "/m" + std::to_string(id) + "/x";
      const Filesystem* x = incremental.find_by_mount_prefix(p);
      const Filesystem* y = full.find_by_mount_prefix(p);
      EXPECT_EQ(x ? x->dev() : "none", y ? y->dev() : "none") << p;
    }
  }
}

TEST(InventoryApply, TouchesOnlyTheFilesystemsThatChanged) {
  Inventory inv;
  auto base = parse_mountinfo(kBase);
  ASSERT_TRUE(base);
  inv.update(*base);
  MountChanges c;
  auto tmp = parse_mountinfo_line("23 22 0:40 / /srv/tmp rw - tmpfs t rw");
  ASSERT_TRUE(tmp);
  c.attached.push_back(*tmp);
  auto d = inv.apply(c);
  ASSERT_EQ(d.added.size(), 1u);
  EXPECT_EQ(d.added[0].dev(), "0:40");
  EXPECT_TRUE(d.changed.empty());
  EXPECT_EQ(inv.find_by_mount_prefix("/srv/tmp/a")->dev(), "0:40");
  EXPECT_EQ(inv.find_by_mount_prefix("/srv/a")->dev(), "8:3");

  MountChanges gone;
  gone.detached.push_back(*tmp);
  d = inv.apply(gone);
  ASSERT_EQ(d.removed.size(), 1u);
  EXPECT_EQ(d.removed[0].mounts, (std::vector<std::string>{"/srv/tmp"}));  // as it was
  EXPECT_EQ(inv.find(0, 40), nullptr);
  // Detaching what is not there changes nothing.
  EXPECT_TRUE(inv.apply(gone).empty());
}

}  // namespace
}  // namespace storwatch::daemon
