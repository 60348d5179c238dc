#include "daemon/source/replay_source.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fmt/format.h>

#include "base/log.h"
#include "proto/vocabulary.h"

namespace storwatch::daemon {

namespace {
constexpr size_t kMaxLine = 64 * 1024;
// Read at most this much per loop turn, so a fast writer cannot starve the other sources.
constexpr size_t kMaxPerTurn = 1 << 20;
}  // namespace

Result<std::unique_ptr<ReplaySource>> ReplaySource::create(EventLoop& loop, const std::string& fifo,
                                                           ResolveFs resolve, std::function<void(Event)> emit) {
  struct stat st {};
  if (::stat(fifo.c_str(), &st) < 0) {
    if (errno != ENOENT) return fail_errno(errno, "replay fifo " + fifo);
    if (::mkfifo(fifo.c_str(), 0600) < 0) return fail_errno(errno, "creating replay fifo " + fifo);
  } else if (!S_ISFIFO(st.st_mode)) {
    return fail_invalid(fmt::format("replay fifo {} exists and is not a FIFO", fifo));
  }
  std::unique_ptr<ReplaySource> s(new ReplaySource(loop, std::move(resolve), std::move(emit)));
  // O_RDWR keeps a writer open ourselves, so writers coming and going never make us see EOF.
  s->fd_.reset(::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!s->fd_) return fail_errno(errno, "opening replay fifo " + fifo);
  auto* raw = s.get();
  auto r = loop.add_fd(s->fd_.get(), EPOLLIN, [raw](uint32_t) { raw->on_readable(); });
  if (!r) return fail(r.error());
  return s;
}

ReplaySource::~ReplaySource() {
  if (fd_) loop_.remove_fd(fd_.get());
}

Result<Event> ReplaySource::parse_line(std::string_view line, const ResolveFs& resolve) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail_invalid("not a JSON object");
  Event e;
  auto type = j.find("type");
  if (type == j.end() || !type->is_string()) return fail_invalid("\"type\" missing");
  e.type = type->get<std::string>();
  const EventTypeInfo* info = find_event_type(e.type);
  if (!info) return fail_invalid(fmt::format("unknown event type \"{}\"", e.type));
  e.severity = info->severity;
  if (auto s = j.find("severity"); s != j.end()) {
    auto sev = s->is_string() ? parse_severity(s->get<std::string>()) : std::nullopt;
    if (!sev) return fail_invalid("bad \"severity\"");
    e.severity = *sev;
  }
  e.source = "replay";
  if (auto c = j.find("count"); c != j.end()) {
    if (!c->is_number_unsigned() || c->get<uint64_t>() == 0) return fail_invalid("bad \"count\"");
    e.count = c->get<uint64_t>();
  }
  if (auto f = j.find("fs"); f != j.end()) {
    if (!f->is_string()) return fail_invalid("\"fs\" must be a path");
    auto ref = resolve ? resolve(f->get<std::string>()) : std::nullopt;
    if (!ref) return fail_invalid(fmt::format("no watched filesystem holds {}", f->get<std::string>()));
    e.fs = std::move(*ref);
  }
  if (auto d = j.find("detail"); d != j.end()) {
    if (!d->is_object()) return fail_invalid("\"detail\" must be an object");
    e.detail = *d;
  }
  if (auto p = j.find("process"); p != j.end()) {
    // The same form as in events: {"pid", "uid", "comm", "cgroup"}.
    if (!p->is_object()) return fail_invalid("\"process\" must be an object");
    nlohmann::json wrapper = {{"time", ""}, {"type", e.type}, {"severity", "info"}, {"process", *p}};
    auto parsed = event_from_json(wrapper);
    if (!parsed || !parsed->process) return fail_invalid("bad \"process\"");
    e.process = std::move(parsed->process);
  }
  return e;
}

void ReplaySource::on_readable() {
  char buf[65536];
  size_t total = 0;
  while (total < kMaxPerTurn) {
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    total += static_cast<size_t>(n);
    size_t start = 0;
    for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
      if (buf[i] != '\n') continue;
      if (!discarding_) partial_.append(buf + start, i - start);
      start = i + 1;
      if (discarding_ || partial_.size() > kMaxLine) {
        ++bad_;
        discarding_ = false;
      } else if (!partial_.empty()) {
        auto e = parse_line(partial_, resolve_);
        if (e)
          emit_(std::move(*e));
        else {
          ++bad_;
          log_debug("replay: skipping a line: {}", e.error().message());
        }
      }
      partial_.clear();
    }
    if (!discarding_) partial_.append(buf + start, static_cast<size_t>(n) - start);
    if (partial_.size() > kMaxLine) {
      // Too long already: skip the rest of this line and count it once, at its newline.
      discarding_ = true;
      partial_.clear();
    }
  }
}

}  // namespace storwatch::daemon
