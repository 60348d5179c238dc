// ReplaySource: JSON lines into events. parse_line on its own, then a real FIFO in a temporary
// directory read by a stepped EventLoop: the test writes, steps the loop until the events arrive
// (the deadline only turns a hang into a failure) and never sleeps.
#include "daemon/source/replay_source.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <vector>

#include "support/fake_clock.h"
#include "support/temp_dir.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// Paths under /mnt/data are on 8:17; nothing else is watched.
std::optional<FsRef> resolve(const std::string& path) {
  if (path != "/mnt/data" && path.rfind("/mnt/data/", 0) != 0) return std::nullopt;
  FsRef f;
  f.major = 8;
  f.minor = 17;
  f.fstype = "ext4";
  f.source = "/dev/sdb1";
  f.mounts = {"/mnt/data"};
  return f;
}

Result<Event> parse(std::string_view line) { return ReplaySource::parse_line(line, resolve); }

std::string parse_error(std::string_view line) {
  auto e = parse(line);
  EXPECT_FALSE(e) << "accepted: " << line;
  return e ? std::string() : e.error().message();
}

TEST(ReplayParseLine, AFullLine) {
  auto e = parse(R"({"type":"fs.error","severity":"critical","fs":"/mnt/data/x/y","count":3,)"
                 R"("detail":{"errno":5,"inode":12}})");
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(e->type, "fs.error");
  EXPECT_EQ(e->severity, Severity::critical);
  EXPECT_EQ(e->source, "replay");
  EXPECT_EQ(e->count, 3u);
  ASSERT_TRUE(e->fs);
  EXPECT_EQ(e->fs->dev(), "8:17");
  EXPECT_EQ(e->detail, (json{{"errno", 5}, {"inode", 12}}));
  EXPECT_EQ(e->seq, 0u) << "numbered by the bus, not by the line";
  EXPECT_EQ(e->time, Event::Time{});
}

TEST(ReplayParseLine, DefaultsComeFromTheVocabulary) {
  auto e = parse(R"({"type":"fs.readonly"})");
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(e->severity, Severity::critical);  // fs.readonly's default
  EXPECT_EQ(e->count, 1u);
  EXPECT_FALSE(e->fs);
  EXPECT_TRUE(e->detail.is_object());
  EXPECT_TRUE(e->detail.empty());
  // Unknown fields are ignored; leading and trailing blanks are fine.
  e = parse(R"(  {"type":"space.threshold","severity":"warn","extra":[1,2]}  )");
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(e->severity, Severity::warning);
}

TEST(ReplayParseLine, BadLinesAreRefusedWithAReason) {
  EXPECT_EQ(parse_error("not json"), "not a JSON object");
  EXPECT_EQ(parse_error(""), "not a JSON object");
  EXPECT_EQ(parse_error(R"([{"type":"fs.error"}])"), "not a JSON object");
  EXPECT_EQ(parse_error(R"({"type":"fs.error")"), "not a JSON object");  // cut short
  EXPECT_EQ(parse_error(R"({"type":"fs.error"} {"type":"fs.error"})"), "not a JSON object");
  EXPECT_EQ(parse_error(R"({"severity":"error"})"), "\"type\" missing");
  EXPECT_EQ(parse_error(R"({"type":7})"), "\"type\" missing");
  EXPECT_EQ(parse_error(R"({"type":"fs.melted"})"), "unknown event type \"fs.melted\"");
  EXPECT_EQ(parse_error(R"({"type":"fs.error","severity":"loud"})"), "bad \"severity\"");
  EXPECT_EQ(parse_error(R"({"type":"fs.error","severity":2})"), "bad \"severity\"");
  for (const char* count : {"0", "-1", "1.5", "\"2\"", "null", "1e3"})
    EXPECT_EQ(parse_error(std::string(R"({"type":"fs.error","count":)") + count + "}"),
              "bad \"count\"")
        << count;
  EXPECT_EQ(parse_error(R"({"type":"fs.error","fs":5})"), "\"fs\" must be a path");
  EXPECT_EQ(parse_error(R"({"type":"fs.error","fs":"/mnt/other"})"),
            "no watched filesystem holds /mnt/other");
  EXPECT_EQ(parse_error(R"({"type":"fs.error","fs":"/mnt/database"})"),
            "no watched filesystem holds /mnt/database");
  EXPECT_EQ(parse_error(R"({"type":"fs.error","detail":[1]})"), "\"detail\" must be an object");
  EXPECT_EQ(parse_error(R"({"type":"fs.error","detail":"x"})"), "\"detail\" must be an object");
  EXPECT_EQ(parse_error(R"({"type":"fs.error","detail":null})"), "\"detail\" must be an object");
  // Without a resolver no path resolves.
  auto e = ReplaySource::parse_line(R"({"type":"fs.error","fs":"/mnt/data"})", nullptr);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().message(), "no watched filesystem holds /mnt/data");
}

class ReplayFifoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = EventLoop::create(clock_);
    ASSERT_TRUE(l) << l.error().message();
    loop_ = std::move(*l);
    fifo_ = dir_.sub("replay");
    auto s = ReplaySource::create(*loop_, fifo_, resolve,
                                  [this](Event e) { events_.push_back(std::move(e)); });
    ASSERT_TRUE(s) << s.error().message();
    source_ = std::move(*s);
    open_writer();
  }
  void TearDown() override {
    if (writer_ >= 0) ::close(writer_);
  }
  void open_writer() {
    if (writer_ >= 0) ::close(writer_);
    // The source holds the FIFO open for reading, so a non-blocking writer can open it.
    writer_ = ::open(fifo_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(writer_, 0) << std::strerror(errno);
  }
  // Writes all of `data`, letting the loop drain the FIFO whenever it is full.
  void write(const std::string& data) {
    size_t off = 0;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (off < data.size()) {
      ssize_t n = ::write(writer_, data.data() + off, data.size() - off);
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      ASSERT_TRUE(n < 0 && (errno == EAGAIN || errno == EINTR)) << std::strerror(errno);
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the source does not read the FIFO";
      loop_->step(50ms);
    }
  }
  // Steps until `done` (or the deadline).
  bool step_until(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      loop_->step(50ms);
    }
    return true;
  }
  // Bytes written but not yet read by the source.
  int pending_bytes() {
    int n = 0;
    return ::ioctl(writer_, FIONREAD, &n) == 0 ? n : -1;
  }
  // Steps until the source has read everything written so far.
  bool drain() {
    return step_until([&] { return pending_bytes() == 0; });
  }

  test::FakeClock clock_;
  test::TempDir dir_;
  std::string fifo_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<ReplaySource> source_;
  std::vector<Event> events_;
  int writer_ = -1;
};

TEST_F(ReplayFifoTest, LinesBecomeEventsInOrderAndBadLinesAreCounted) {
  write(R"({"type":"fs.error","fs":"/mnt/data","detail":{"inode":1}})"
        "\n"
        "garbage\n"
        "\n"  // empty lines are not events and not errors
        R"({"type":"fs.melted"})"
        "\n"
        R"({"type":"fs.error","fs":"/nowhere"})"
        "\n"
        R"({"type":"fs.shutdown","fs":"/mnt/data/sub"})"
        "\n");
  ASSERT_TRUE(step_until([&] { return events_.size() == 2; }));
  EXPECT_EQ(events_[0].type, "fs.error");
  EXPECT_EQ(events_[0].detail["inode"], 1);
  EXPECT_EQ(events_[0].fs->dev(), "8:17");
  EXPECT_EQ(events_[1].type, "fs.shutdown");
  EXPECT_EQ(source_->bad_lines(), 3u);
}

TEST_F(ReplayFifoTest, ALineSplitAcrossTwoWritesIsOneEvent) {
  std::string line = R"({"type":"fs.error","fs":"/mnt/data","detail":{"errno":5}})"
                     "\n";
  size_t half = line.size() / 2;
  write(line.substr(0, half));
  ASSERT_TRUE(drain());
  loop_->step(0ms);
  EXPECT_TRUE(events_.empty()) << "half a line is not an event";
  EXPECT_EQ(source_->bad_lines(), 0u);
  write(line.substr(half));
  ASSERT_TRUE(step_until([&] { return events_.size() == 1; }));
  EXPECT_EQ(events_[0].detail["errno"], 5);
  EXPECT_EQ(source_->bad_lines(), 0u);
}

TEST_F(ReplayFifoTest, ManyLinesInOneWriteAndLinesSpanningReads) {
  // 3000 lines of about 100 bytes: several reads of 64 KiB, with lines cut at read boundaries.
  std::string data;
  for (int i = 0; i < 3000; ++i)
    data +=
        R"({"type":"fs.error","fs":"/mnt/data","detail":{"inode":)" + std::to_string(i) + "}}\n";
  write(data);
  ASSERT_TRUE(step_until([&] { return events_.size() == 3000; }));
  for (int i = 0; i < 3000; ++i) ASSERT_EQ(events_[i].detail["inode"], i);
  EXPECT_EQ(source_->bad_lines(), 0u);
}

TEST_F(ReplayFifoTest, AnOverLongLineIsOneBadLineAndNeverAnEvent) {
  // Valid JSON, but longer than a line may be (64 KiB): blanks and then an object, so a reader
  // that dropped only part of it would find an event in the rest.
  std::string huge = std::string(200000, ' ') + R"({"type":"fs.error","detail":{"inode":666}})"
                                                "\n";
  write(huge);
  write(R"({"type":"fs.error","detail":{"inode":1}})"
        "\n");
  ASSERT_TRUE(step_until([&] { return !events_.empty(); }));
  ASSERT_TRUE(drain());
  loop_->step(0ms);
  ASSERT_EQ(events_.size(), 1u) << "part of the over-long line became an event";
  EXPECT_EQ(events_[0].detail["inode"], 1);
  EXPECT_EQ(source_->bad_lines(), 1u);

  // Just under the limit is still fine.
  std::string big = std::string(60000, ' ') + R"({"type":"fs.error","detail":{"inode":2}})"
                                              "\n";
  write(big);
  ASSERT_TRUE(step_until([&] { return events_.size() == 2; }));
  EXPECT_EQ(events_[1].detail["inode"], 2);
  EXPECT_EQ(source_->bad_lines(), 1u);
}

TEST_F(ReplayFifoTest, AnOverLongLineEndingRightAtAReadBoundaryIsStillCounted) {
  // Whatever the sizes of the reads, one over-long line counts once.
  for (size_t len : {131072u, 131073u, 196608u, 262144u}) {
    uint64_t before = source_->bad_lines();
    write(std::string(len, 'x'));
    ASSERT_TRUE(drain());
    write("\n");
    ASSERT_TRUE(drain());
    loop_->step(0ms);
    EXPECT_EQ(source_->bad_lines(), before + 1) << len;
  }
  EXPECT_TRUE(events_.empty());
}

TEST_F(ReplayFifoTest, WritersMayComeAndGo) {
  write(R"({"type":"fs.error","detail":{"inode":1}})"
        "\n");
  ASSERT_TRUE(step_until([&] { return events_.size() == 1; }));
  ::close(writer_);
  writer_ = -1;
  for (int i = 0; i < 5; ++i) loop_->step(0ms);  // no EOF, no busy loop on a hung-up FIFO
  open_writer();
  write(R"({"type":"fs.error","detail":{"inode":2}})"
        "\n");
  ASSERT_TRUE(step_until([&] { return events_.size() == 2; }));
}

TEST(ReplaySourceCreate, MakesTheFifoAndRefusesOtherFiles) {
  test::FakeClock clock;
  auto loop = EventLoop::create(clock);
  ASSERT_TRUE(loop);
  test::TempDir dir;
  {
    auto s = ReplaySource::create(**loop, dir.sub("new"), resolve, [](Event) {});
    ASSERT_TRUE(s) << s.error().message();
    struct stat st {};
    ASSERT_EQ(::stat(dir.sub("new").c_str(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777 & ~0600u, 0u);
  }
  {
    std::ofstream(dir.sub("file")) << "x";
    auto s = ReplaySource::create(**loop, dir.sub("file"), resolve, [](Event) {});
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message().find("is not a FIFO"), std::string::npos) << s.error().message();
  }
  {
    auto s = ReplaySource::create(**loop, dir.sub("missing/dir/fifo"), resolve, [](Event) {});
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().errno_value(), ENOENT);
  }
}

}  // namespace
}  // namespace storwatch::daemon
