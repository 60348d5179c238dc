#include "daemon/state/state_db.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

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

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

TEST(StateDb, SeqFileIsOneFixedRecordRewrittenInPlace) {
  test::TempDir tmp;
  auto db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  EXPECT_FALSE(db->clean_at_open()) << "a new state directory has no clean shutdown behind it";
  std::string path = tmp.sub("seq");
  std::string rec = read_file(path);
  ASSERT_EQ(rec.size(), 64u);
  EXPECT_EQ(rec.rfind("reserved=0 clean=0 ", 0), 0u) << rec;
  EXPECT_EQ(rec.back(), '\n');
  ASSERT_TRUE(db->reserve_seq(18446744073709551615ull));  // the widest number still fits
  rec = read_file(path);
  EXPECT_EQ(rec.size(), 64u);
  EXPECT_EQ(rec.rfind("reserved=18446744073709551615 clean=0 ", 0), 0u) << rec;
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0027, 0u);  // 0640 at most
}

TEST(StateDb, CleanShutdownMarkIsReadBackOnceAndClearedByTheNextReservation) {
  test::TempDir tmp;
  {
    auto db = open_ok(tmp.path());
    ASSERT_TRUE(db);
    ASSERT_TRUE(db->reserve_seq(65536));
    ASSERT_TRUE(db->mark_clean_shutdown(42));
    EXPECT_EQ(db->seq_reserved(), 42u);
  }
  {
    auto db = open_ok(tmp.path());
    ASSERT_TRUE(db);
    EXPECT_TRUE(db->clean_at_open());
    EXPECT_EQ(db->seq_reserved(), 42u) << "numbering continues right after the last number used";
    // The next run reserves before using numbers: from then on a crash is not clean.
    ASSERT_TRUE(db->reserve_seq(42 + 65536));
  }
  auto db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  EXPECT_FALSE(db->clean_at_open());
  EXPECT_EQ(db->seq_reserved(), 42u + 65536);
}

TEST(StateDb, ACrashAfterAReservationIsNotClean) {
  test::TempDir tmp;
  {
    auto db = open_ok(tmp.path());
    ASSERT_TRUE(db->mark_clean_shutdown(0));
  }
  {
    auto db = open_ok(tmp.path());
    EXPECT_TRUE(db->clean_at_open());
    ASSERT_TRUE(db->reserve_seq(65536));
  }  // no mark: a crash
  auto db = open_ok(tmp.path());
  EXPECT_FALSE(db->clean_at_open());
  EXPECT_EQ(db->seq_reserved(), 65536u);
}

TEST(StateDb, ADamagedSeqFileIsRefused) {
  for (const char* bad :
       {"garbage\n", "reserved=12\n", "reserved=x clean=1\n", "clean=1 reserved=5\n"}) {
    test::TempDir tmp;
    ASSERT_TRUE(open_ok(tmp.path()));
    write_file(tmp.sub("seq"), bad);
    auto db = StateDb::open(tmp.path());
    ASSERT_FALSE(db) << bad;
    EXPECT_NE(db.error().message().find(tmp.sub("seq")), std::string::npos) << db.error().message();
    EXPECT_NE(db.error().message().find("damaged"), std::string::npos) << db.error().message();
  }
}

TEST(StateDb, AnEmptySeqFileStartsFromTheDatabase) {
  // An empty file is what a crash right after creating it leaves: treated as new.
  test::TempDir tmp;
  ASSERT_TRUE(open_ok(tmp.path()));
  write_file(tmp.sub("seq"), "");
  auto db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  EXPECT_EQ(db->seq_reserved(), 0u);
  EXPECT_FALSE(db->clean_at_open());
  EXPECT_EQ(read_file(tmp.sub("seq")).size(), 64u);
}

TEST(StateDb, AHandWrittenSeqRecordIsAccepted) {
  test::TempDir tmp;
  ASSERT_TRUE(open_ok(tmp.path()));
  write_file(tmp.sub("seq"), "reserved=1000 clean=1\n");
  auto db = open_ok(tmp.path());
  ASSERT_TRUE(db);
  EXPECT_EQ(db->seq_reserved(), 1000u);
  EXPECT_TRUE(db->clean_at_open());
  // Rewritten in place: the longer record replaces the shorter one whole.
  ASSERT_TRUE(db->reserve_seq(2000));
  db.reset();
  db = open_ok(tmp.path());
  EXPECT_EQ(db->seq_reserved(), 2000u);
  EXPECT_FALSE(db->clean_at_open());
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
