#include "cli/format.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <vector>

#include <fmt/format.h>

namespace storwatch::cli {

using nlohmann::json;

namespace {

// Typed field readers that never throw (json::value() would, on a field of the wrong type).
std::optional<uint64_t> u64(const json& j, const char* key) {
  if (!j.is_object()) return std::nullopt;
  auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer() && it->get<int64_t>() >= 0) return static_cast<uint64_t>(it->get<int64_t>());
  return std::nullopt;
}

std::optional<int64_t> i64(const json& j, const char* key) {
  if (!j.is_object()) return std::nullopt;
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

// Mount paths and device names come from the kernel and may hold any byte but NUL; keep control
// characters from breaking lines or driving the terminal.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out.push_back(static_cast<char>(c));
  }
  return out;
}

std::string str(const json& j, const char* key, std::string_view fallback = "") {
  if (!j.is_object()) return std::string(fallback);
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::string(fallback);
  return printable(it->get_ref<const std::string&>());
}

std::optional<bool> flag(const json& j, const char* key) {
  if (!j.is_object()) return std::nullopt;
  auto it = j.find(key);
  if (it == j.end() || !it->is_boolean()) return std::nullopt;
  return it->get<bool>();
}

std::vector<std::string> strings(const json& j, const char* key) {
  std::vector<std::string> out;
  if (!j.is_object()) return out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return out;
  for (const auto& v : *it)
    if (v.is_string()) out.push_back(printable(v.get_ref<const std::string&>()));
  return out;
}

const json& array_at(const json& j, const char* key) {
  static const json empty = json::array();
  if (!j.is_object()) return empty;
  auto it = j.find(key);
  return it != j.end() && it->is_array() ? *it : empty;
}

std::string join(const std::vector<std::string>& v, std::string_view sep, size_t from = 0) {
  std::string out;
  for (size_t i = from; i < v.size(); ++i) {
    if (i > from) out += sep;
    out += v[i];
  }
  return out;
}

uint64_t mul_saturating(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return UINT64_MAX;
  return r;
}

std::string scaled(uint64_t n, double base, const std::array<const char*, 7>& units) {
  double v = static_cast<double>(n);
  size_t i = 0;
  // Move up a unit before rounding would print "1024K".
  while (v >= base - 0.5 && i + 1 < units.size()) {
    v /= base;
    ++i;
  }
  if (i == 0) return fmt::format("{}{}", n, units[0]);
  return v < 9.95 ? fmt::format("{:.1f}{}", v, units[i]) : fmt::format("{:.0f}{}", v, units[i]);
}

// "  blocks  [###.....]  48.2% used   1.2G free of 2.0G"; `unit` is the block size (1 for inodes).
std::string resource_line(const json& fs, const char* name, const char* total_key, const char* avail_key,
                          const char* free_key, std::optional<uint64_t> unit) {
  auto total = u64(fs, total_key);
  auto avail = u64(fs, avail_key);
  bool bytes = unit.has_value();
  if (!total || !avail || (bytes && *unit == 0)) {
    std::string why = str(fs, "health") == "stale" ? " (statfs does not answer)" : "";
    return fmt::format("  {:<6}  unknown{}\n", name, why);
  }
  if (*total == 0) {
    // btrfs, vfat and others report no inode counts at all.
    return fmt::format("  {:<6}  not counted by this filesystem\n", name);
  }
  uint64_t free = u64(fs, free_key).value_or(*avail);
  uint64_t used = *total > free ? *total - free : 0;
  // As df computes Use%: the root-reserved blocks count neither as used nor as available.
  double denom = static_cast<double>(used) + static_cast<double>(*avail);
  double pct = denom > 0 ? 100.0 * static_cast<double>(used) / denom : 0.0;
  std::string amounts =
      bytes ? fmt::format("{} free of {}", human_bytes(mul_saturating(*avail, *unit)),
                          human_bytes(mul_saturating(*total, *unit)))
            : fmt::format("{} free of {}", human_count(*avail), human_count(*total));
  return fmt::format("  {:<6}  {}  {:4.1f}% used   {}\n", name, usage_bar(pct), pct, amounts);
}

}  // namespace

std::string human_bytes(uint64_t bytes) {
  static constexpr std::array<const char*, 7> kUnits = {"B", "K", "M", "G", "T", "P", "E"};
  return scaled(bytes, 1024, kUnits);
}

std::string human_count(uint64_t n) {
  static constexpr std::array<const char*, 7> kUnits = {"", "k", "M", "G", "T", "P", "E"};
  return scaled(n, 1000, kUnits);
}

std::string usage_bar(double percent_used) {
  constexpr int kWidth = 20;
  int filled = 0;
  if (percent_used > 0) filled = std::clamp(static_cast<int>(std::ceil(percent_used * kWidth / 100.0)), 1, kWidth);
  std::string bar(kWidth + 2, '.');
  bar.front() = '[';
  bar.back() = ']';
  bar.replace(1, static_cast<size_t>(filled), static_cast<size_t>(filled), '#');
  return bar;
}

std::string format_filesystem(const json& fs) {
  std::string out;
  auto mounts = strings(fs, "mounts");
  std::vector<std::string> head = {mounts.empty() ? std::string("(not mounted)") : mounts.front()};
  for (const char* key : {"fstype", "source", "dev"})
    if (auto v = str(fs, key); !v.empty()) head.push_back(v);
  if (mounts.size() > 1) head.push_back("[also " + join(mounts, " ", 1) + "]");
  if (flag(fs, "watched") == false) head.push_back("(not watched)");
  out += join(head, "  ") + "\n";

  out += resource_line(fs, "blocks", "blocks_total", "blocks_avail", "blocks_free", u64(fs, "block_size").value_or(0));
  out += resource_line(fs, "inodes", "inodes_total", "inodes_avail", "inodes_free", std::nullopt);

  std::vector<std::string> levels;
  for (const auto& l : array_at(fs, "levels")) {
    std::string id = str(l, "id");
    if (id.empty()) id = str(l, "resource", "?") + "<" + str(l, "below", "?");
    std::string s = id + " " + str(l, "severity", "warning");
    if (flag(l, "crossed") == true) s += " (crossed)";
    levels.push_back(std::move(s));
  }
  bool thresholds_off = false, events_off = false;
  for (const auto& r : array_at(fs, "rules")) {
    thresholds_off |= flag(r, "thresholds") == false;
    events_off |= flag(r, "events") == false;
  }
  if (levels.empty()) levels.push_back("none");
  if (thresholds_off) levels.push_back("(thresholds off)");
  if (events_off) levels.push_back("(events off)");
  out += "  levels  " + join(levels, "  ") + "\n";

  std::string health = str(fs, "health", "unknown");
  out += fmt::format("  health  {}   errors {}", health, i64(fs, "error_count").value_or(0));
  if (flag(fs, "read_only") == true && health != "readonly") out += "   read-only";
  if (health == "stale")
    if (auto s = str(fs, "sampled"); !s.empty()) out += "   last sample " + s;
  out += "\n";
  return out;
}

std::string format_rules(const json& rules) {
  if (!rules.is_array() || rules.empty()) return "no rules\n";
  std::string out;
  for (const auto& r : rules) {
    out += fmt::format("{}  thresholds {}  events {}\n", str(r, "path", "?"),
                       flag(r, "thresholds").value_or(true) ? "on" : "off",
                       flag(r, "events").value_or(true) ? "on" : "off");
    for (const auto& l : array_at(r, "levels")) {
      out += fmt::format("  {} below {}", str(l, "resource", "?"), str(l, "below", "?"));
      if (auto s = str(l, "severity"); !s.empty()) out += "  " + s;
      if (auto h = str(l, "hysteresis"); !h.empty()) out += "  hysteresis " + h;
      out += "\n";
    }
  }
  return out;
}

std::string format_mounts(const json& mounts) {
  std::vector<std::array<std::string, 7>> rows;
  rows.push_back({"ID", "DEV", "FSTYPE", "SOURCE", "PATH", "OPTIONS", "PROPAGATION"});
  if (mounts.is_array()) {
    rows.reserve(mounts.size() + 1);
    for (const auto& m : mounts) {
      auto id = u64(m, "mnt_id");
      std::string propagation;
      if (auto p = m.find("propagation"); p != m.end() && p->is_array())
        for (const auto& f : *p)
          if (f.is_string()) propagation += (propagation.empty() ? "" : ",") + f.get<std::string>();
      rows.push_back({id ? std::to_string(*id) : "?", str(m, "dev"), str(m, "fstype"), str(m, "source"),
                      str(m, "path"), str(m, "options"), propagation.empty() ? "private" : propagation});
    }
  }
  std::array<size_t, 7> width{};
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c + 1 < row.size(); ++c) line += fmt::format("{:<{}}  ", row[c], width[c]);
    line += row.back();
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string format_doctor(const json& d) {
  std::string out;
  out += fmt::format("storwatchd    {}\n", str(d, "version", "unknown"));
  out += fmt::format("journal       {}", str(d, "journal_id", "unknown"));
  if (auto s = u64(d, "journaled_seq")) out += fmt::format("  journaled up to seq {}", *s);
  if (auto s = u64(d, "last_seq")) out += fmt::format("  last seq {}", *s);
  out += "\n";
  auto uid = i64(d, "uid");
  out += fmt::format("uid           {}\n", uid ? std::to_string(*uid) : std::string("unknown"));
  auto caps = strings(d, "capabilities");
  out += fmt::format("capabilities  {}\n", caps.empty() ? std::string("none") : join(caps, " "));
  const json& sources = array_at(d, "sources");
  out += "sources\n";
  size_t w = 0;
  for (const auto& s : sources) w = std::max(w, str(s, "name", "?").size());
  for (const auto& s : sources) {
    std::string state = flag(s, "available") == true ? "available" : "unavailable";
    if (state == "unavailable")
      if (auto reason = str(s, "reason"); !reason.empty()) state += ": " + reason;
    std::string line = fmt::format("  {:<{}}  {}", str(s, "name", "?"), w, state);
    if (auto types = strings(s, "types"); !types.empty() && flag(s, "available") == true)
      line += "  (" + join(types, " ") + ")";
    if (auto c = s.find("counters"); c != s.end() && c->is_object() && !c->empty()) {
      std::vector<std::string> parts;
      for (const auto& [k, v] : c->items()) parts.push_back(k + " " + v.dump());
      line += "  [" + join(parts, ", ") + "]";
    }
    // What running the source costs the machine (the eBPF syscall probe says).
    if (auto cost = str(s, "cost"); !cost.empty()) line += fmt::format("\n  {:<{}}  cost: {}", "", w, cost);
    out += line + "\n";
  }
  if (sources.empty()) out += "  none reported\n";
  if (const json& missing = array_at(d, "missing_capabilities"); !missing.empty()) {
    out += "missing capabilities\n";
    size_t cw = 0;
    for (const auto& m : missing) cw = std::max(cw, str(m, "name", "?").size());
    for (const auto& m : missing)
      out += fmt::format("  {:<{}}  disables {}\n", str(m, "name", "?"), cw, str(m, "disables", "?"));
  }
  out += format_sinks(d);
  return out;
}

std::string format_sinks(const json& d) {
  const json& sinks = array_at(d, "sinks");
  if (sinks.empty()) return "";
  std::string out = "sinks\n";
  size_t w = 0;
  for (const auto& s : sinks) w = std::max(w, str(s, "name", "?").size());
  for (const auto& s : sinks) {
    std::string line = fmt::format("  {:<{}}  {}  delivered {}  up to seq {}  lag {}", str(s, "name", "?"), w,
                                   str(s, "state", "?"), u64(s, "delivered").value_or(0),
                                   u64(s, "cursor").value_or(0), u64(s, "lag").value_or(0));
    if (auto f = u64(s, "failures"); f && *f) line += fmt::format("  failures {}", *f);
    if (auto e = str(s, "last_error"); !e.empty()) line += "  last error: " + e;
    out += line + "\n";
  }
  return out;
}

}  // namespace storwatch::cli
