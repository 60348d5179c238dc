#include "daemon/state/state_db.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "support/temp_dir.h"

namespace storwatch::daemon {
namespace {

using Crossed = std::set<std::pair<std::string, std::string>>;

std::unique_ptr<StateDb> open_ok(const std::string& dir) {
  auto db = StateDb::open(dir);
  EXPECT_TRUE(db) << db.error().message();
  return db ? std::move(*db) : nullptr;
}

TEST(StateDb, CreatesTheDirectoryAndDatabase) {
  test::TempDir tmp;
  std::string dir = tmp.sub("state");
  auto db = open_ok(dir);
  ASSERT_TRUE(db);
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0007, 0u);  // 0750 (less under a strict umask)
  EXPECT_EQ(db->path(), dir + "/storwatch.db");
  EXPECT_EQ(::stat(db->path().c_str(), &st), 0);
}

TEST(StateDb, JournalIdIsStableAcrossReopen) {
  test::TempDir tmp;
  std::string id;
  {
    auto db = open_ok(tmp.path());
    ASSERT_TRUE(db);
    id = db->journal_id();
    EXPECT_EQ(id.size(), 32u);
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
  }
  auto again = open_ok(tmp.path());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->journal_id(), id);

  test::TempDir other;
  auto fresh = open_ok(other.path());
  ASSERT_TRUE(fresh);
  EXPECT_NE(fresh->journal_id(), id);  // a new state directory is a new journal
}

TEST(StateDb, SequenceReservationIsDurable) {
  test::TempDir tmp;
  {
    auto db = open_ok(tmp.path());
    ASSERT_TRUE(db);
    EXPECT_EQ(db->seq_reserved(), 0u);
    ASSERT_TRUE(db->reserve_seq(65536));
    EXPECT_EQ(db->seq_reserved(), 65536u);
    ASSERT_TRUE(db->reserve_seq(131072));
    EXPECT_EQ(db->seq_reserved(), 131072u);
  }  // closed as if the daemon died right after the call returned
  auto db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  EXPECT_EQ(db->seq_reserved(), 131072u);
}

TEST(StateDb, RulesAreSavedReplacedAndRemoved) {
  test::TempDir tmp;
  {
    auto db = open_ok(tmp.path());
    ASSERT_TRUE(db);
    auto none = db->load_rules();
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
    ASSERT_TRUE(db->save_rule("/data", R"({"path":"/data"})"));
    ASSERT_TRUE(db->save_rule("/srv", R"({"path":"/srv","levels":[]})"));
    ASSERT_TRUE(db->save_rule("/data", R"({"path":"/data","thresholds":false})"));  // replaces
  }
  auto db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  auto rules = db->load_rules();
  ASSERT_TRUE(rules) << rules.error().message();
  EXPECT_EQ(*rules, (std::map<std::string, std::string>{{"/data", R"({"path":"/data","thresholds":false})"},
                                                        {"/srv", R"({"path":"/srv","levels":[]})"}}));
  ASSERT_TRUE(db->delete_rule("/data"));
  ASSERT_TRUE(db->delete_rule("/nonexistent"));  // removing nothing is not an error
  db.reset();
  db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  rules = db->load_rules();
  ASSERT_TRUE(rules);
  EXPECT_EQ(rules->size(), 1u);
  EXPECT_EQ(rules->count("/srv"), 1u);
}

TEST(StateDb, CrossedLevelsAreSavedAndRemoved) {
  test::TempDir tmp;
  {
    auto db = open_ok(tmp.path());
    ASSERT_TRUE(db);
    ASSERT_TRUE(db->set_crossed("/mnt/data", "blocks<10%", true));
    ASSERT_TRUE(db->set_crossed("/mnt/data", "blocks<5%", true));
    ASSERT_TRUE(db->set_crossed("/mnt/data", "blocks<5%", true));  // idempotent
    ASSERT_TRUE(db->set_crossed("/", "inodes<1%", true));
  }
  auto db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  auto crossed = db->load_crossed();
  ASSERT_TRUE(crossed) << crossed.error().message();
  EXPECT_EQ(*crossed, (Crossed{{"/", "inodes<1%"}, {"/mnt/data", "blocks<10%"}, {"/mnt/data", "blocks<5%"}}));
  ASSERT_TRUE(db->set_crossed("/mnt/data", "blocks<5%", false));
  ASSERT_TRUE(db->set_crossed("/mnt/data", "blocks<1%", false));  // never set: fine
  db.reset();
  db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  crossed = db->load_crossed();
  ASSERT_TRUE(crossed);
  EXPECT_EQ(*crossed, (Crossed{{"/", "inodes<1%"}, {"/mnt/data", "blocks<10%"}}));
}

TEST(StateDb, ReservationSurvivesAlongsideOtherState) {
  test::TempDir tmp;
  std::string id;
  {
    auto db = open_ok(tmp.path());
    ASSERT_TRUE(db);
    id = db->journal_id();
    ASSERT_TRUE(db->reserve_seq(10));
    ASSERT_TRUE(db->save_rule("/data", "{}"));
  }
  auto db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  EXPECT_EQ(db->journal_id(), id);
  EXPECT_EQ(db->seq_reserved(), 10u);
}

TEST(StateDb, UnusableDirectoryFailsWithAMessage) {
  test::TempDir tmp;
  // A regular file where the directory should be.
  std::string file = tmp.sub("file");
  FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  auto db = StateDb::open(file + "/state");
  ASSERT_FALSE(db);
  EXPECT_NE(db.error().message().find(file), std::string::npos) << db.error().message();
}

}  // namespace
}  // namespace storwatch::daemon
