// The JSON form of an Event (docs/events.md) and its readable line.
#include <fmt/format.h>

#include <limits>
#include <type_traits>

#include <storwatch/event.h>

#include "base/time_format.h"

namespace storwatch {

using nlohmann::json;

std::string_view severity_name(Severity s) {
  switch (s) {
    case Severity::info: return "info";
    case Severity::warning: return "warning";
    case Severity::error: return "error";
    case Severity::critical: return "critical";
  }
  return "info";
}

std::optional<Severity> parse_severity(std::string_view name) {
  if (name == "info") return Severity::info;
  if (name == "warning" || name == "warn") return Severity::warning;
  if (name == "error" || name == "err") return Severity::error;
  if (name == "critical" || name == "crit") return Severity::critical;
  return std::nullopt;
}

json event_to_json(const Event& e) {
  json j = json::object();
  j["seq"] = e.seq;
  j["journal_id"] = e.journal_id;
  j["time"] = format_time(e.time);
  j["type"] = e.type;
  j["severity"] = severity_name(e.severity);
  j["source"] = e.source;
  j["count"] = e.count;
  j["first_time"] = format_time(e.first_time);
  j["last_time"] = format_time(e.last_time);
  if (e.fs) {
    json fs = {{"dev", e.fs->dev()}, {"major", e.fs->major}, {"minor", e.fs->minor},
               {"fstype", e.fs->fstype}, {"source", e.fs->source}, {"mounts", e.fs->mounts}};
    if (!e.fs->uuid.empty()) fs["uuid"] = e.fs->uuid;
    j["fs"] = std::move(fs);
  }
  if (e.device) {
    j["device"] = {{"dev", e.device->dev()}, {"major", e.device->major},
                   {"minor", e.device->minor}, {"name", e.device->name}};
  }
  if (e.process) {
    json p = {{"pid", e.process->pid}, {"uid", e.process->uid}, {"comm", e.process->comm}};
    if (!e.process->cgroup.empty()) p["cgroup"] = e.process->cgroup;
    j["process"] = std::move(p);
  }
  j["detail"] = e.detail.is_object() ? e.detail : json::object();
  return j;
}

namespace {

// Field readers that turn a wrong type into an error naming the field instead of an exception.
template <class T>
Result<T> get(const json& j, const char* key, bool required, T fallback = T{}) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return fail_invalid(fmt::format("event: missing field \"{}\"", key));
    return fallback;
  }
  if constexpr (std::is_integral_v<T>) {
    // get<> on a float or an out-of-range integer is undefined behaviour, not an exception.
    if (!it->is_number_integer())
      return fail_invalid(fmt::format("event: field \"{}\" must be an integer", key));
    if (it->is_number_unsigned()) {
      auto v = it->get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<T>::max()))
        return fail_invalid(fmt::format("event: field \"{}\" is out of range", key));
      return static_cast<T>(v);
    }
    auto v = it->get<int64_t>();
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
      return fail_invalid(fmt::format("event: field \"{}\" is out of range", key));
    return static_cast<T>(v);
  }
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return fail_invalid(fmt::format("event: field \"{}\" has the wrong type", key));
  }
}

Result<Event::Time> get_time(const json& j, const char* key, bool required) {
  auto s = get<std::string>(j, key, required);
  if (!s) return fail(s.error());
  if (s->empty()) return Event::Time{};
  auto t = parse_time(*s);
  if (!t) return fail_invalid(fmt::format("event: field \"{}\" is not a time: \"{}\"", key, *s));
  return *t;
}

}  // namespace

#define SW_TRY_ASSIGN(lhs, expr)          \
  do {                                    \
    auto r_ = (expr);                     \
    if (!r_) return fail(r_.error());     \
    lhs = std::move(*r_);                 \
  } while (0)

Result<Event> event_from_json(const json& j) {
  if (!j.is_object()) return fail_invalid("event: not a JSON object");
  Event e;
  SW_TRY_ASSIGN(e.seq, get<uint64_t>(j, "seq", false));
  SW_TRY_ASSIGN(e.journal_id, get<std::string>(j, "journal_id", false));
  SW_TRY_ASSIGN(e.time, get_time(j, "time", true));
  SW_TRY_ASSIGN(e.type, get<std::string>(j, "type", true));
  std::string sev;
  SW_TRY_ASSIGN(sev, get<std::string>(j, "severity", true));
  auto s = parse_severity(sev);
  if (!s) return fail_invalid(fmt::format("event: unknown severity \"{}\"", sev));
  e.severity = *s;
  SW_TRY_ASSIGN(e.source, get<std::string>(j, "source", false));
  SW_TRY_ASSIGN(e.count, get<uint64_t>(j, "count", false, 1));
  SW_TRY_ASSIGN(e.first_time, get_time(j, "first_time", false));
  SW_TRY_ASSIGN(e.last_time, get_time(j, "last_time", false));
  if (auto it = j.find("fs"); it != j.end() && it->is_object()) {
    FsRef fs;
    SW_TRY_ASSIGN(fs.major, get<uint32_t>(*it, "major", true));
    SW_TRY_ASSIGN(fs.minor, get<uint32_t>(*it, "minor", true));
    SW_TRY_ASSIGN(fs.fstype, get<std::string>(*it, "fstype", false));
    SW_TRY_ASSIGN(fs.uuid, get<std::string>(*it, "uuid", false));
    SW_TRY_ASSIGN(fs.source, get<std::string>(*it, "source", false));
    SW_TRY_ASSIGN(fs.mounts, get<std::vector<std::string>>(*it, "mounts", false));
    e.fs = std::move(fs);
  }
  if (auto it = j.find("device"); it != j.end() && it->is_object()) {
    DeviceRef d;
    SW_TRY_ASSIGN(d.major, get<uint32_t>(*it, "major", true));
    SW_TRY_ASSIGN(d.minor, get<uint32_t>(*it, "minor", true));
    SW_TRY_ASSIGN(d.name, get<std::string>(*it, "name", false));
    e.device = std::move(d);
  }
  if (auto it = j.find("process"); it != j.end() && it->is_object()) {
    ProcessRef p;
    SW_TRY_ASSIGN(p.pid, get<int64_t>(*it, "pid", false));
    SW_TRY_ASSIGN(p.uid, get<int64_t>(*it, "uid", false, -1));
    SW_TRY_ASSIGN(p.comm, get<std::string>(*it, "comm", false));
    SW_TRY_ASSIGN(p.cgroup, get<std::string>(*it, "cgroup", false));
    e.process = std::move(p);
  }
  if (auto it = j.find("detail"); it != j.end() && it->is_object()) e.detail = *it;
  return e;
}

std::string event_to_line(const Event& e) {
  // "2026-11-21T23:00:00.123456Z #1042 error space.enospc /mnt/data (7:0 ext4) kind=data ..."
  std::string line = fmt::format("{} #{} {:<8} {}", format_time(e.time), e.seq,
                                 severity_name(e.severity), e.type);
  if (e.fs) {
    std::string where = e.fs->mounts.empty() ? e.fs->source : e.fs->mounts.front();
    line += fmt::format(" {} ({} {})", where, e.fs->dev(), e.fs->fstype);
  }
  if (e.device) line += fmt::format(" dev={}({})", e.device->name, e.device->dev());
  if (e.count > 1) line += fmt::format(" count={}", e.count);
  for (const auto& [k, v] : e.detail.items()) {
    if (v.is_string())
      line += fmt::format(" {}={}", k, v.get<std::string>());
    else
      line += fmt::format(" {}={}", k, v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  if (e.process) {
    line += fmt::format(" pid={} uid={} comm={}", e.process->pid, e.process->uid, e.process->comm);
  }
  return line;
}

}  // namespace storwatch
