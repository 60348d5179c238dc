// bench_bus_fanout: how many events per second the bus and server deliver to 1, 10 and 100
// subscribers over a real Unix socket, against a raw socketpair write loop (the ceiling) in the
// same run.
//
// storwatch: an EventLoop + Bus + Server (the daemon's own classes, with a minimal Service) on a
//   temporary socket, the loop running in its own thread. Each subscriber is a thread with a
//   blocking socket that sends io.storwatch.Subscribe (more: true) and counts the NUL-terminated
//   replies. The main thread publishes by posting batches of events into the loop, keeping at most
//   a window of events in flight past the slowest subscriber, so queue_events (window + slack)
//   never overflows: every subscriber must receive every event, and any stream.lost fails the run.
// raw: one writer thread writes the very same reply bytes, in the same batches, into N socketpairs
//   with blocking send(), each read by a thread with the same counting loop. No JSON, no queues, no
//   epoll: the most a single writing thread gets through the kernel here.
//
// --stuck: instead, how much one subscriber that never reads slows the others: N healthy subscribers
//   with and without one more subscriber that subscribes and then never reads its socket, alternated
//   in the same run. The stuck one fills its queue and socket buffers, then only counts what it
//   loses; the run checks that it did get stream.lost and that the healthy ones got every event.
//
// Usage: bench_bus_fanout [--events-scale X] [--repeat N] [--subscribers N] [--stuck]
//   (prints a Markdown table)
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "daemon/bus/bus.h"
#include "daemon/loop/event_loop.h"
#include "daemon/server/server.h"
#include "proto/varlink.h"

namespace {

using namespace storwatch;
using namespace storwatch::daemon;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr size_t kBatch = 256;    // events per post() into the loop, and per raw write
constexpr size_t kWindow = 4096;  // events published but not yet read by the slowest subscriber
constexpr const char* kJournal = "0123456789abcdef0123456789abcdef";

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_bus_fanout: %s\n", what.c_str());
  std::exit(1);
}

// A typical event: a threshold crossing with its filesystem and detail (~700 bytes of JSON).
Event sample_event() {
  Event e;
  e.type = "space.threshold";
  e.severity = Severity::warning;
  e.source = "statfs";
  FsRef fs;
  fs.major = 8;
  fs.minor = 17;
  fs.fstype = "ext4";
  fs.source = "/dev/sdb1";
  fs.mounts = {"/mnt/data", "/srv/www"};
  e.fs = fs;
  e.detail = {{"resource", "blocks"},      {"level", "10%"},
              {"level_id", "blocks<10%"},  {"level_severity", "warning"},
              {"direction", "below"},      {"avail", 80000},
              {"total", 1000000},          {"block_size", 4096},
              {"avail_bytes", 327680000},  {"total_bytes", 4096000000},
              {"level_bytes", 409600000}};
  return e;
}

// The reply the server writes for one streamed event (see Server::pump_stream).
std::string reply_bytes(const EventPtr& e) {
  std::string s = "{\"parameters\":{\"event\":" + e->json + ",\"journal_id\":\"" + kJournal +
                  "\"},\"continues\":true}";
  s.push_back('\0');
  return s;
}

class BenchService final : public Service {
 public:
  Reply<json> call(const Peer&, const std::string& method, const json&) override {
    return reply_error(proto::errors::kMethodNotFound, {{"method", method}});
  }
  Reply<Stream> subscribe(const Peer&, const json&) override {
    Stream s;
    s.first_reply = stream_reply_fields();
    return s;
  }
  json stream_reply_fields() const override { return {{"journal_id", kJournal}}; }
};

// Counts NUL-terminated messages on a blocking socket until `expected` arrived or EOF. Also
// notices stream.lost markers (across read boundaries).
struct Reader {
  std::atomic<size_t> received{0};
  std::atomic<size_t> lost_markers{0};
  bool eof = false;

  void run(int fd, size_t expected, std::mutex& mu, std::condition_variable& cv) {
    std::vector<char> buf(256 * 1024);
    static constexpr std::string_view kLost = "\"stream.lost\"";
    std::string carry;  // the tail of the previous read, for markers split across reads
    size_t count = 0, next_notify = kBatch;
    while (count < expected) {
      ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        eof = true;
        break;
      }
      const char* p = buf.data();
      const char* end = p + n;
      for (const char* q = p; (q = static_cast<const char*>(std::memchr(q, '\0', end - q))); ++q) ++count;
      std::string_view chunk(p, static_cast<size_t>(n));
      std::string edge = carry + std::string(chunk.substr(0, kLost.size()));
      if (::memmem(p, chunk.size(), kLost.data(), kLost.size()) || edge.find(kLost) != std::string::npos)
        ++lost_markers;
      carry.assign(chunk.substr(chunk.size() > kLost.size() ? chunk.size() - kLost.size() : 0));
      received.store(count, std::memory_order_release);
      if (count >= next_notify || count >= expected) {
        next_notify = count + kBatch;
        std::lock_guard lock(mu);
        cv.notify_all();
      }
    }
    std::lock_guard lock(mu);
    cv.notify_all();
  }
};

void send_all(int fd, std::string_view data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      die(std::string("send: ") + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
}

struct Run {
  double seconds = 0;
  size_t per_subscriber = 0;
  size_t subscribers = 0;
  double loop_cpu_seconds = 0;  // CPU time of the loop thread during the run (storwatch runs only)
  double events_per_s() const { return static_cast<double>(per_subscriber) / seconds; }
  double deliveries_per_s() const { return events_per_s() * static_cast<double>(subscribers); }
};

// Connects to the server and subscribes (waiting for the confirming first reply).
UniqueFd subscribe_fd(const std::string& socket_path) {
  static const std::string subscribe = proto::encode_call({"io.storwatch.Subscribe", json::object(), true});
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    die(std::string("connect: ") + std::strerror(errno));
  send_all(fd.get(), subscribe);
  std::string first;
  char c;
  while (::recv(fd.get(), &c, 1, 0) == 1 && c != '\0') first.push_back(c);
  auto reply = proto::parse_reply(first);
  if (!reply || !reply->error.empty() || !reply->continues) die("Subscribe failed: " + first);
  return fd;
}

// Reads a stuck subscriber's socket until its stream.lost arrives (proof that it overflowed).
void expect_stream_lost(int fd) {
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::vector<char> buf(256 * 1024);
  std::string tail;
  for (;;) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) die("the stuck subscriber never got stream.lost");
    tail.append(buf.data(), static_cast<size_t>(n));
    if (tail.find("\"stream.lost\"") != std::string::npos) return;
    if (tail.size() > 64) tail.erase(0, tail.size() - 64);
  }
}

Run run_storwatch(size_t subscribers, size_t events, const std::string& socket_path, size_t stuck = 0) {
  RealClock clock;
  auto loop_r = EventLoop::create(clock);
  if (!loop_r) die(loop_r.error().message());
  EventLoop& loop = **loop_r;
  Bus bus(clock, kJournal, 0, nullptr);
  BenchService service;
  ServerLimits limits;
  limits.max_clients = subscribers + stuck + 8;
  limits.max_subscriptions_per_process = subscribers + stuck + 8;
  limits.queue_events = kWindow + 4 * kBatch;  // the window can never overflow it
  ::unlink(socket_path.c_str());
  auto listener = Server::listen_unix(socket_path);
  if (!listener) die(listener.error().message());
  auto server_r = Server::create(loop, bus, service, std::move(*listener), limits);
  if (!server_r) die(server_r.error().message());
  std::unique_ptr<Server> server = std::move(*server_r);
  std::thread loop_thread([&] { loop.run(); });

  // Subscribers: connect, subscribe, wait for the confirming first reply.
  std::vector<UniqueFd> fds;
  for (size_t i = 0; i < subscribers; ++i) fds.push_back(subscribe_fd(socket_path));
  // Stuck subscribers: subscribed like the others, never read (until the end, to check them).
  std::vector<UniqueFd> stuck_fds;
  for (size_t i = 0; i < stuck; ++i) stuck_fds.push_back(subscribe_fd(socket_path));

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<Reader>> readers;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < subscribers; ++i) readers.push_back(std::make_unique<Reader>());
  for (size_t i = 0; i < subscribers; ++i)
    threads.emplace_back([&, i] { readers[i]->run(fds[i].get(), events, mu, cv); });
  auto slowest = [&] {
    size_t m = events;
    for (auto& r : readers) m = std::min(m, r->received.load(std::memory_order_acquire));
    return m;
  };

  Event proto_event = sample_event();
  // The loop thread's CPU time: unlike wall time, hardly disturbed by other load on the machine.
  clockid_t loop_clock;
  if (::pthread_getcpuclockid(loop_thread.native_handle(), &loop_clock) != 0) die("pthread_getcpuclockid");
  auto cpu_now = [&] {
    timespec ts{};
    ::clock_gettime(loop_clock, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  };
  double cpu_start = cpu_now();
  auto start = Clock::now();
  for (size_t published = 0; published < events;) {
    size_t n = std::min(kBatch, events - published);
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return published + n <= slowest() + kWindow; });
    }
    loop.post([&bus, &proto_event, n] {
      for (size_t k = 0; k < n; ++k)
        if (!bus.publish(proto_event)) die("publish failed");
    });
    published += n;
  }
  for (auto& t : threads) t.join();
  auto seconds = std::chrono::duration<double>(Clock::now() - start).count();
  double loop_cpu = cpu_now() - cpu_start;

  for (size_t i = 0; i < subscribers; ++i) {
    if (readers[i]->received != events || readers[i]->lost_markers != 0)
      die("subscriber " + std::to_string(i) + " got " + std::to_string(readers[i]->received.load()) +
          " of " + std::to_string(events) + " events and " + std::to_string(readers[i]->lost_markers.load()) +
          " stream.lost");
  }
  for (auto& fd : stuck_fds) expect_stream_lost(fd.get());
  loop.post([&] { loop.stop(); });
  loop_thread.join();
  fds.clear();
  stuck_fds.clear();
  server.reset();
  ::unlink(socket_path.c_str());
  return {seconds, events, subscribers, loop_cpu};
}

Run run_raw(size_t subscribers, size_t events) {
  RealClock clock;
  Bus bus(clock, kJournal, 0, nullptr);
  auto e = bus.publish(sample_event());
  if (!e) die("publish failed");
  std::string one = reply_bytes(*e);
  std::string batch;
  for (size_t i = 0; i < kBatch; ++i) batch += one;

  std::vector<UniqueFd> writers, reads;
  for (size_t i = 0; i < subscribers; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
      die(std::string("socketpair: ") + std::strerror(errno));
    writers.emplace_back(sv[0]);
    reads.emplace_back(sv[1]);
  }
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<Reader>> readers;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < subscribers; ++i) readers.push_back(std::make_unique<Reader>());
  for (size_t i = 0; i < subscribers; ++i)
    threads.emplace_back([&, i] { readers[i]->run(reads[i].get(), events, mu, cv); });

  auto start = Clock::now();
  std::thread writer([&] {
    for (size_t sent = 0; sent < events; sent += kBatch) {
      size_t n = std::min(kBatch, events - sent);
      std::string_view data(batch.data(), n * one.size());
      for (auto& w : writers) send_all(w.get(), data);
    }
  });
  writer.join();
  for (auto& t : threads) t.join();
  auto seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (size_t i = 0; i < subscribers; ++i)
    if (readers[i]->received != events) die("raw reader got fewer messages than sent");
  return {seconds, events, subscribers};
}

// The loop's fixed cost per event, whatever the number of subscribers: stamping and serialising it.
double publish_microseconds() {
  RealClock clock;
  Bus bus(clock, kJournal, 0, nullptr);
  Event e = sample_event();
  constexpr int kEvents = 100000;
  auto start = Clock::now();
  for (int i = 0; i < kEvents; ++i)
    if (!bus.publish(e)) die("publish failed");
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / kEvents;
}

std::string human(double v) {
  char buf[32];
  if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f M", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1f k", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  double scale = 1.0;
  int repeat = 3;
  size_t only = 0;  // run just this subscriber count
  bool stuck_mode = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--events-scale" && i + 1 < argc) {
      scale = std::atof(argv[++i]);
    } else if (a == "--subscribers" && i + 1 < argc) {
      only = static_cast<size_t>(std::atol(argv[++i]));
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--stuck") {
      stuck_mode = true;
    } else {
      std::fprintf(stderr,
                   "usage: bench_bus_fanout [--events-scale X] [--repeat N] [--subscribers 1|10|100] [--stuck]\n");
      return 2;
    }
  }
  // A private directory for the socket, under $TMPDIR.
  std::string dir = (std::filesystem::temp_directory_path() / "storwatch-bench-XXXXXX").string();
  if (!::mkdtemp(dir.data())) die("mkdtemp failed");
  std::string socket_path = dir + "/io.storwatch";

  std::string cpu = "unknown CPU";
  if (FILE* f = std::fopen("/proc/cpuinfo", "r")) {
    char line[512];
    while (std::fgets(line, sizeof line, f)) {
      if (std::strncmp(line, "model name", 10) == 0) {
        if (const char* colon = std::strchr(line, ':')) {
          cpu = colon + 2;
          if (!cpu.empty() && cpu.back() == '\n') cpu.pop_back();
        }
        break;
      }
    }
    std::fclose(f);
  }
  EventPtr sample = make_bus_event(sample_event());
  std::printf("bench_bus_fanout: %s, %u CPUs, reply %zu bytes per event, batches of %zu, window %zu events; best of %d\n\n",
              cpu.c_str(), std::thread::hardware_concurrency(), reply_bytes(sample).size(), kBatch, kWindow, repeat);
  struct Case {
    size_t subscribers, events;
  };
  if (stuck_mode) {
    std::printf("| healthy subscribers | events each | events/s each, no stuck subscriber | events/s each, 1 stuck "
                "subscriber | change | loop CPU per event, no stuck | loop CPU per event, 1 stuck | change |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    std::fflush(stdout);
    // More events than the stuck subscriber's queue and socket buffers hold, in every case.
    for (Case c : {Case{1, 200000}, Case{10, 40000}, Case{100, 20000}}) {
      if (only && c.subscribers != only) continue;
      size_t events = std::max<size_t>(4 * kWindow, static_cast<size_t>(static_cast<double>(c.events) * scale));
      Run best_free, best_stuck;
      double cpu_free = 0, cpu_stuck = 0;  // least loop CPU time seen
      for (int r = 0; r < repeat; ++r) {
        // Alternated, so both see the same machine.
        Run f = run_storwatch(c.subscribers, events, socket_path, 0);
        Run st = run_storwatch(c.subscribers, events, socket_path, 1);
        if (r == 0 || f.seconds < best_free.seconds) best_free = f;
        if (r == 0 || st.seconds < best_stuck.seconds) best_stuck = st;
        if (r == 0 || f.loop_cpu_seconds < cpu_free) cpu_free = f.loop_cpu_seconds;
        if (r == 0 || st.loop_cpu_seconds < cpu_stuck) cpu_stuck = st.loop_cpu_seconds;
      }
      double per_free = cpu_free * 1e6 / static_cast<double>(events);
      double per_stuck = cpu_stuck * 1e6 / static_cast<double>(events);
      std::printf("| %zu | %zu | %s | %s | %+.1f %% | %.2f us | %.2f us | %+.1f %% |\n", c.subscribers, events,
                  human(best_free.events_per_s()).c_str(), human(best_stuck.events_per_s()).c_str(),
                  (best_stuck.events_per_s() / best_free.events_per_s() - 1.0) * 100.0, per_free, per_stuck,
                  (per_stuck / per_free - 1.0) * 100.0);
      std::fflush(stdout);
    }
    std::filesystem::remove_all(dir);
    return 0;
  }
  std::printf("Bus::publish alone (no subscribers): %.2f us per event\n\n", publish_microseconds());
  std::printf("| subscribers | events each | storwatch events/s per subscriber | storwatch deliveries/s | raw deliveries/s | ratio |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|\n");
  std::fflush(stdout);
  for (Case c : {Case{1, 200000}, Case{10, 40000}, Case{100, 5000}}) {
    if (only && c.subscribers != only) continue;
    size_t events = std::max<size_t>(kBatch, static_cast<size_t>(static_cast<double>(c.events) * scale));
    Run best_sw, best_raw;
    for (int r = 0; r < repeat; ++r) {
      Run sw = run_storwatch(c.subscribers, events, socket_path);
      Run raw = run_raw(c.subscribers, events);
      if (r == 0 || sw.seconds < best_sw.seconds) best_sw = sw;
      if (r == 0 || raw.seconds < best_raw.seconds) best_raw = raw;
    }
    std::printf("| %zu | %zu | %s | %s | %s | %.2f |\n", c.subscribers, events,
                human(best_sw.events_per_s()).c_str(), human(best_sw.deliveries_per_s()).c_str(),
                human(best_raw.deliveries_per_s()).c_str(),
                best_sw.deliveries_per_s() / best_raw.deliveries_per_s());
    std::fflush(stdout);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
