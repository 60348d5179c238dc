// The Prometheus text format of /metrics (render_metrics), the listen-address parser, the
// [metrics] and [sinks.nats] keys and the NATS subjects. Serving to a real Prometheus is
// tests/integration/sink_prometheus.py.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>

#include "daemon/config/config.h"
#include "daemon/sink/metrics_server.h"
#include "daemon/sink/nats_sink.h"

namespace storwatch::daemon {
namespace {

MetricsSnapshot sample() {
  MetricsSnapshot s;
  MetricsSnapshot::Filesystem f;
  f.dev = "7:0";
  f.mount = "/mnt/a \"b\"\\c";
  f.fstype = "ext4";
  f.has_usage = true;
  f.size_bytes = 1000;
  f.free_bytes = 250;
  f.files = 64;
  f.files_free = 10;
  f.health = "ok";
  f.error_count = 3;
  f.levels = {{"blocks", "10%", "warning", false}, {"blocks", "30%", "error", true}};
  s.filesystems.push_back(f);
  MetricsSnapshot::Filesystem unpolled;
  unpolled.dev = "0:42";
  unpolled.mount = "/run/x";
  unpolled.fstype = "tmpfs";
  unpolled.health = "readonly";
  unpolled.readonly = true;
  s.filesystems.push_back(unpolled);
  s.events_by_type = {{"fs.error", 3}, {"space.threshold", 1}};
  s.last_seq = 10;
  s.journaled_seq = 7;
  s.sinks = {{"nats", false, 5}};
  return s;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(Metrics, FilesystemGaugesWithEscapedLabels) {
  std::string t = render_metrics(sample());
  const std::string l = R"({dev="7:0",mount="/mnt/a \"b\"\\c",fstype="ext4"})";
  EXPECT_TRUE(has_line(t, "storwatch_filesystem_size_bytes" + l + " 1000")) << t;
  EXPECT_TRUE(has_line(t, "storwatch_filesystem_free_bytes" + l + " 250")) << t;
  EXPECT_TRUE(has_line(t, "storwatch_filesystem_files" + l + " 64")) << t;
  EXPECT_TRUE(has_line(t, "storwatch_filesystem_files_free" + l + " 10")) << t;
  EXPECT_TRUE(has_line(t, "storwatch_filesystem_errors_total" + l + " 3")) << t;
  EXPECT_TRUE(has_line(t, "storwatch_filesystem_healthy" + l + " 1")) << t;
}

TEST(Metrics, UnsampledFilesystemHasHealthButNoUsage) {
  std::string t = render_metrics(sample());
  EXPECT_EQ(t.find("storwatch_filesystem_size_bytes{dev=\"0:42\""), std::string::npos);
  const std::string l = R"({dev="0:42",mount="/run/x",fstype="tmpfs"})";
  EXPECT_TRUE(has_line(t, "storwatch_filesystem_healthy" + l + " 0")) << t;
  EXPECT_TRUE(has_line(t, "storwatch_filesystem_readonly" + l + " 1")) << t;
  EXPECT_TRUE(has_line(t, R"(storwatch_filesystem_health{dev="0:42",mount="/run/x",fstype="tmpfs",health="readonly"} 1)"))
      << t;
}

TEST(Metrics, LevelsEventsJournalAndSinks) {
  std::string t = render_metrics(sample());
  EXPECT_TRUE(has_line(
      t, R"(storwatch_filesystem_level_crossed{dev="7:0",mount="/mnt/a \"b\"\\c",fstype="ext4",resource="blocks",below="30%",severity="error"} 1)"))
      << t;
  EXPECT_TRUE(has_line(
      t, R"(storwatch_filesystem_level_crossed{dev="7:0",mount="/mnt/a \"b\"\\c",fstype="ext4",resource="blocks",below="10%",severity="warning"} 0)"))
      << t;
  EXPECT_TRUE(has_line(t, R"(storwatch_events_total{type="fs.error"} 3)")) << t;
  EXPECT_TRUE(has_line(t, "storwatch_journal_lag_events 3")) << t;
  EXPECT_TRUE(has_line(t, "storwatch_journal_healthy 1")) << t;
  EXPECT_TRUE(has_line(t, R"(storwatch_sink_up{sink="nats"} 0)")) << t;
  EXPECT_TRUE(has_line(t, R"(storwatch_sink_lag_events{sink="nats"} 5)")) << t;
}

TEST(Metrics, EveryFamilyDeclaredOnceBeforeItsSamples) {
  std::string t = render_metrics(sample());
  std::set<std::string> typed;
  size_t pos = 0;
  while (pos < t.size()) {
    size_t end = t.find('\n', pos);
    ASSERT_NE(end, std::string::npos) << "the text ends with a newline";
    std::string line = t.substr(pos, end - pos);
    pos = end + 1;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(typed.insert(name).second) << "declared twice: " << name;
      EXPECT_EQ(name.rfind("storwatch_", 0), 0u) << name;
      continue;
    }
    if (line.rfind("#", 0) == 0) continue;
    std::string name = line.substr(0, line.find_first_of("{ "));
    EXPECT_TRUE(typed.count(name)) << "sample before its TYPE: " << line;
  }
}

TEST(Metrics, ListenAddress) {
  auto a = parse_listen_address("127.0.0.1:9639");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->first, "127.0.0.1");
  EXPECT_EQ(a->second, 9639);
  auto v6 = parse_listen_address("[::1]:0");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->first, "::1");
  EXPECT_EQ(v6->second, 0);
  EXPECT_FALSE(parse_listen_address("9639"));
  EXPECT_FALSE(parse_listen_address(":9639"));
  EXPECT_FALSE(parse_listen_address("localhost:http"));
  EXPECT_FALSE(parse_listen_address("localhost:70000"));
}

TEST(Metrics, ConfigKeys) {
  auto off = parse_config("", "test");
  ASSERT_TRUE(off) << off.error().message();
  EXPECT_EQ(off->metrics_listen, "");
  EXPECT_EQ(off->sinks.nats_url, "");
  auto on = parse_config(
      "[metrics]\nlisten = \"127.0.0.1:9639\"\n[sinks.nats]\nurl = \"nats://n:4222\"\nhost = \"h1\"\n"
      "duplicate_window = \"1h\"\n",
      "test");
  ASSERT_TRUE(on) << on.error().message();
  EXPECT_EQ(on->metrics_listen, "127.0.0.1:9639");
  EXPECT_EQ(on->sinks.nats_url, "nats://n:4222");
  EXPECT_EQ(on->sinks.nats_host, "h1");
  EXPECT_EQ(on->sinks.nats_stream, "STORWATCH");
  EXPECT_EQ(on->sinks.nats_duplicate_window, std::chrono::hours(1));
  EXPECT_FALSE(parse_config("[metrics]\nlisten = \"9639\"\n", "test"));
  EXPECT_FALSE(parse_config("[sinks.nats]\nstream = \"a.b\"\n", "test"));
  EXPECT_FALSE(parse_config("[sinks.nats]\nsubject = \"x\"\n", "test"));
}

TEST(Metrics, NatsSubjects) {
  EXPECT_EQ(nats_subject_token("web1.example.com"), "web1_example_com");
  EXPECT_EQ(nats_subject_token("a b*>"), "a_b__");
  EXPECT_EQ(nats_subject("web1", "space.threshold"), "storwatch.web1.space.threshold");
}

TEST(Metrics, ServesTheLastUpdate) {
  auto s = MetricsServer::start("127.0.0.1:0");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_NE((*s)->address().find("127.0.0.1:"), std::string::npos);
  (*s)->update("storwatch_last_seq 1\n");
  std::string addr = (*s)->address();
  int port = std::stoi(addr.substr(addr.rfind(':') + 1));
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  std::string req = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string reply;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) reply.append(buf, static_cast<size_t>(n));
  ::close(fd);
  EXPECT_NE(reply.find("200"), std::string::npos) << reply;
  EXPECT_NE(reply.find("text/plain; version=0.0.4"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\r\n\r\nstorwatch_last_seq 1\n"), std::string::npos) << reply;
  auto again = MetricsServer::start((*s)->address());
  EXPECT_FALSE(again) << "a second server on a port in use";
}

}  // namespace
}  // namespace storwatch::daemon
