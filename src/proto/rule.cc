#include "proto/rule.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace storwatch {
namespace {

using U128 = unsigned __int128;
constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
// PATH_MAX; a longer path can't name a mount point, and it bounds what a client makes us keep.
constexpr std::size_t kMaxPathLength = 4096;
// Percentages resolve through an integer in millionths of a percent, so "0.3%" of 1000 is 3 and
// not 2 (the double nearest 0.3 is slightly below it).
constexpr uint64_t kMicroPerPercent = 1'000'000;

uint64_t saturate(U128 v) { return v > kU64Max ? kU64Max : static_cast<uint64_t>(v); }

// User text echoed in an error, cut short: messages go back to clients, and a client's input
// size should not decide theirs.
std::string shown(std::string_view s) {
  constexpr std::size_t kMaxShown = 64;
  if (s.size() <= kMaxShown) return std::string(s);
  return std::string(s.substr(0, kMaxShown)) + "...";
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
char to_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (to_lower(a[i]) != to_lower(b[i])) return false;
  }
  return true;
}

uint64_t percent_micro(double p) {
  // Clamped so that a hand-built Amount outside the validated range can't overflow llround.
  if (!(p > 0)) return 0;
  p = std::min(p, 1e9);
  return static_cast<uint64_t>(std::llround(p * static_cast<double>(kMicroPerPercent)));
}

// Below one millionth of a percent a level resolves to nothing; the floor also bounds the digits
// format_percent needs.
constexpr double kMinPercent = 1.0 / kMicroPerPercent;

bool percent_in_range(double p) { return p >= kMinPercent && p < 100; }
constexpr std::string_view kPercentRange = "a percentage must be at least 0.000001% and below 100%";

// The shortest fixed-point text that reads back as the same double: no exponent, because
// parse_amount accepts only plain decimals from users. 17 significant digits always suffice, and
// percent_in_range values have at most 6 leading zeros after the point.
std::string format_percent(double p) {
  for (int precision = 0; precision <= 30; ++precision) {
    std::string s = fmt::format("{:.{}f}", p, precision);
    double back = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), back);
    if (ec == std::errc() && ptr == s.data() + s.size() && back == p) return s;
  }
  return fmt::format("{:.30f}", p);  // only out-of-range values (nan, tiny) get here
}

constexpr std::string_view kSuffixes = "kmgtp";

uint64_t pow1024(int n) { return uint64_t{1} << (10 * n); }

std::string format_size(uint64_t v) {
  // The largest suffix that prints exactly with at most three decimals ("1.5G", "1.125K").
  for (int n = static_cast<int>(kSuffixes.size()); n >= 1; --n) {
    uint64_t mult = pow1024(n);
    if (v < mult) continue;
    U128 thousandths = static_cast<U128>(v) * 1000;
    if (thousandths % mult != 0) continue;
    auto q = static_cast<uint64_t>(thousandths / mult);
    std::string s = fmt::format("{}", q / 1000);
    if (uint64_t frac = q % 1000; frac != 0) {
      std::string digits = fmt::format("{:03}", frac);
      while (digits.back() == '0') digits.pop_back();
      s += "." + digits;
    }
    s += static_cast<char>(kSuffixes[n - 1] - 'a' + 'A');
    return s;
  }
  return fmt::format("{}", v);
}

std::string generic_amount_error(std::string_view text, Resource r) {
  if (r == Resource::blocks) {
    return fmt::format(
        "invalid amount \"{}\": expected a percentage (10%), a size (5G) or a number", text);
  }
  return fmt::format(
      "invalid amount \"{}\": expected a percentage (10%) or a number of inodes (500000, 2M)",
      text);
}

// digits ['.' digits], the number part of an amount.
struct Decimal {
  std::string_view text;
  U128 whole = 0;         // saturates past 2^64 (then too_large)
  uint64_t fraction = 0;  // the first kMaxFractionDigits digits after the point
  int fraction_digits = 0;
  bool has_point = false;
  bool too_large = false;
};
constexpr int kMaxFractionDigits = 18;

// Consumes the number at the start of s; nullopt when s does not start with one.
std::optional<Decimal> scan_decimal(std::string_view s) {
  Decimal d;
  std::size_t i = 0;
  while (i < s.size() && is_digit(s[i])) {
    if (!d.too_large) {
      d.whole = d.whole * 10 + static_cast<unsigned>(s[i] - '0');
      if (d.whole > kU64Max) d.too_large = true;
    }
    ++i;
  }
  if (i == 0) return std::nullopt;
  if (i < s.size() && s[i] == '.') {
    std::size_t start = ++i;
    while (i < s.size() && is_digit(s[i])) {
      if (d.fraction_digits < kMaxFractionDigits) {
        d.fraction = d.fraction * 10 + static_cast<unsigned>(s[i] - '0');
        ++d.fraction_digits;
      }
      ++i;
    }
    if (i == start) return std::nullopt;  // "5." is a typo, not a number
    d.has_point = true;
  }
  d.text = s.substr(0, i);
  return d;
}

Result<void> check_percent(const Amount& a, std::string_view what) {
  if (a.unit == Amount::Unit::percent && !percent_in_range(a.percent)) {
    return fail_invalid(fmt::format("{}: {}", what, kPercentRange));
  }
  return {};
}

// The rank group of assign_default_severities: see rule.h.
int unit_group(Amount::Unit u) {
  switch (u) {
    case Amount::Unit::percent:
      return 0;
    case Amount::Unit::absolute:
      return 1;
    case Amount::Unit::fs_blocks:
      return 2;
  }
  return 3;
}

}  // namespace

std::string_view resource_name(Resource r) {
  switch (r) {
    case Resource::blocks:
      return "blocks";
    case Resource::inodes:
      return "inodes";
  }
  return "unknown";
}

uint64_t Amount::resolve(uint64_t total, uint64_t unit_size) const {
  switch (unit) {
    case Unit::percent: {
      uint64_t size = saturate(static_cast<U128>(total) * unit_size);
      return saturate(static_cast<U128>(size) * percent_micro(percent) / (100 * kMicroPerPercent));
    }
    case Unit::absolute:
      return value;
    case Unit::fs_blocks:
      return saturate(static_cast<U128>(value) * unit_size);
  }
  return 0;
}

std::string Amount::to_string() const {
  switch (unit) {
    case Unit::percent:
      return format_percent(percent) + "%";
    case Unit::absolute:
      return format_size(value);
    case Unit::fs_blocks:
      return fmt::format("{} blocks", value);
  }
  return "?";
}

Result<Amount> parse_amount(std::string_view raw, Resource r) {
  std::string_view text = trim(raw);
  std::string quoted = shown(text);
  auto number = scan_decimal(text);
  if (!number) return fail_invalid(generic_amount_error(quoted, r));
  std::string_view suffix = trim(text.substr(number->text.size()));

  if (suffix == "%") {
    Amount a;
    a.unit = Amount::Unit::percent;
    const char* end = number->text.data() + number->text.size();
    auto [ptr, ec] = std::from_chars(number->text.data(), end, a.percent);
    if (ec != std::errc() || ptr != end || !percent_in_range(a.percent)) {
      return fail_invalid(fmt::format("invalid amount \"{}\": {}", quoted, kPercentRange));
    }
    return a;
  }

  Amount a;
  a.unit = Amount::Unit::absolute;
  uint64_t mult = 1;
  bool byte_form = false;  // only meaningful for blocks
  if (suffix.empty()) {
    // a plain number: bytes or inodes
  } else if (iequals(suffix, "b")) {
    byte_form = true;
  } else if (iequals(suffix, "block") || iequals(suffix, "blocks")) {
    a.unit = Amount::Unit::fs_blocks;
    byte_form = true;
  } else if (auto pos = kSuffixes.find(to_lower(suffix.front())); pos != std::string_view::npos) {
    mult = pow1024(static_cast<int>(pos) + 1);
    std::string_view tail = suffix.substr(1);
    if (iequals(tail, "ib")) {
      byte_form = true;
    } else if (iequals(tail, "b")) {
      return fail_invalid(fmt::format(
          "invalid amount \"{}\": ambiguous unit \"{}\": write {} or {}iB (powers of 1024)", quoted,
          suffix, static_cast<char>(kSuffixes[pos] - 'a' + 'A'),
          static_cast<char>(kSuffixes[pos] - 'a' + 'A')));
    } else if (!tail.empty() && !iequals(tail, "i")) {
      return fail_invalid(generic_amount_error(quoted, r));
    }
  } else {
    return fail_invalid(generic_amount_error(quoted, r));
  }

  if (r == Resource::inodes && byte_form) {
    return fail_invalid(fmt::format(
        "invalid amount \"{}\": bytes and filesystem blocks apply to blocks, not inodes", quoted));
  }
  if (number->has_point && mult == 1) {
    return fail_invalid(
        fmt::format("invalid amount \"{}\": a fraction needs a size suffix (1.5G)", quoted));
  }
  if (number->too_large)
    return fail_invalid(fmt::format("invalid amount \"{}\": too large", quoted));
  U128 scale = 1;
  for (int i = 0; i < number->fraction_digits; ++i) scale *= 10;
  U128 v = number->whole * mult + static_cast<U128>(number->fraction) * mult / scale;
  if (v > kU64Max) return fail_invalid(fmt::format("invalid amount \"{}\": too large", quoted));
  a.value = static_cast<uint64_t>(v);
  return a;
}

std::string Level::id() const {
  return fmt::format("{}<{}", resource_name(resource), below.to_string());
}

Result<void> validate_rule(const Rule& r) {
  if (r.path.empty()) return fail_invalid("rule path is empty");
  if (r.path.front() != '/') {
    return fail_invalid(fmt::format("rule path \"{}\" is not absolute", shown(r.path)));
  }
  if (r.path.size() > kMaxPathLength) {
    return fail_invalid(
        fmt::format("rule path is too long ({} bytes, at most {})", r.path.size(), kMaxPathLength));
  }
  if (r.path.find('\0') != std::string::npos) return fail_invalid("rule path contains a NUL byte");
  if (r.levels.size() > kMaxLevels) {
    return fail_invalid(
        fmt::format("too many levels ({}, at most {})", r.levels.size(), kMaxLevels));
  }
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < r.levels.size(); ++i) {
    const Level& l = r.levels[i];
    ids.push_back(l.id());
    std::string what = fmt::format("level \"{}\"", ids.back());
    if (auto ok = check_percent(l.below, what); !ok) return ok;
    if (l.below.unit != Amount::Unit::percent && l.below.value == 0) {
      return fail_invalid(
          fmt::format("{}: must be above zero (free space is never below 0)", what));
    }
    if (l.resource == Resource::inodes && l.below.unit == Amount::Unit::fs_blocks) {
      return fail_invalid(
          fmt::format("{}: inode levels can't be given in filesystem blocks", what));
    }
    if (l.hysteresis) {
      const Amount& h = *l.hysteresis;
      if (auto ok = check_percent(h, what + " hysteresis"); !ok) return ok;
      if (l.resource == Resource::inodes && h.unit == Amount::Unit::fs_blocks) {
        return fail_invalid(
            fmt::format("{}: inode hysteresis can't be given in filesystem blocks", what));
      }
      bool not_smaller =
          h.unit == Amount::Unit::percent ? h.percent >= l.below.percent : h.value >= l.below.value;
      if (h.unit == l.below.unit && not_smaller) {
        return fail_invalid(
            fmt::format("{}: hysteresis {} must be smaller than the level", what, h.to_string()));
      }
    }
    // By id, not by Amount: "5G" and "5120M" are the same level and would share crossed state.
    for (std::size_t j = 0; j < i; ++j) {
      if (ids[j] == ids[i]) {
        return fail_invalid(
            fmt::format("duplicate level \"{}\" (levels[{}] and levels[{}])", ids[i], j, i));
      }
    }
  }
  return {};
}

void assign_default_severities(Rule& r, const std::vector<bool>& explicit_severity) {
  for (Resource res : {Resource::blocks, Resource::inodes}) {
    std::vector<Level*> ranked;
    for (std::size_t i = 0; i < r.levels.size(); ++i) {
      bool is_explicit = i < explicit_severity.size() && explicit_severity[i];
      if (r.levels[i].resource == res && !is_explicit) ranked.push_back(&r.levels[i]);
    }
    std::stable_sort(ranked.begin(), ranked.end(), [](const Level* a, const Level* b) {
      int ga = unit_group(a->below.unit);
      int gb = unit_group(b->below.unit);
      if (ga != gb) return ga < gb;
      if (a->below.unit == Amount::Unit::percent) return a->below.percent > b->below.percent;
      return a->below.value > b->below.value;
    });
    for (std::size_t rank = 0; rank < ranked.size(); ++rank) {
      ranked[rank]->severity = rank == 0   ? Severity::warning
                               : rank == 1 ? Severity::error
                                           : Severity::critical;
    }
  }
}

nlohmann::json rule_to_json(const Rule& r) {
  nlohmann::json levels = nlohmann::json::array();
  for (const Level& l : r.levels) {
    nlohmann::json jl = {{"resource", std::string(resource_name(l.resource))},
                         {"below", l.below.to_string()},
                         {"severity", std::string(severity_name(l.severity))}};
    if (l.hysteresis) jl["hysteresis"] = l.hysteresis->to_string();
    levels.push_back(std::move(jl));
  }
  return {{"path", r.path},
          {"thresholds", r.thresholds},
          {"events", r.events},
          {"levels", std::move(levels)}};
}

namespace {

Result<Level> level_from_json(const nlohmann::json& j, const std::string& where,
                              bool& explicit_severity) {
  if (!j.is_object()) return fail_invalid(fmt::format("{}: expected an object", where));
  for (const auto& [key, value] : j.items()) {
    if (key != "resource" && key != "below" && key != "hysteresis" && key != "severity") {
      return fail_invalid(fmt::format("{}: unknown field \"{}\"", where, key));
    }
  }
  Level l;
  if (auto it = j.find("resource"); it != j.end()) {
    if (!it->is_string()) return fail_invalid(fmt::format("{}.resource: expected a string", where));
    const auto& name = it->get_ref<const std::string&>();
    if (name == "blocks") {
      l.resource = Resource::blocks;
    } else if (name == "inodes") {
      l.resource = Resource::inodes;
    } else {
      return fail_invalid(fmt::format(
          "{}.resource: unknown resource \"{}\" (expected blocks or inodes)", where, name));
    }
  }
  auto below = j.find("below");
  if (below == j.end()) return fail_invalid(fmt::format("{}.below: missing", where));
  if (!below->is_string()) {
    return fail_invalid(fmt::format("{}.below: expected a string such as \"10%\"", where));
  }
  auto amount = parse_amount(below->get_ref<const std::string&>(), l.resource);
  if (!amount) return fail_invalid(fmt::format("{}.below: {}", where, amount.error().context()));
  l.below = *amount;
  if (auto it = j.find("hysteresis"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) {
      return fail_invalid(fmt::format("{}.hysteresis: expected a string such as \"1%\"", where));
    }
    auto h = parse_amount(it->get_ref<const std::string&>(), l.resource);
    if (!h) return fail_invalid(fmt::format("{}.hysteresis: {}", where, h.error().context()));
    l.hysteresis = *h;
  }
  explicit_severity = false;
  if (auto it = j.find("severity"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return fail_invalid(fmt::format("{}.severity: expected a string", where));
    const auto& name = it->get_ref<const std::string&>();
    auto s = parse_severity(name);
    if (!s) {
      return fail_invalid(fmt::format(
          "{}.severity: unknown severity \"{}\" (expected info, warning, error or critical)", where,
          name));
    }
    l.severity = *s;
    explicit_severity = true;
  }
  return l;
}

Result<Rule> rule_from_json_unchecked(const nlohmann::json& j) {
  if (!j.is_object()) return fail_invalid("rule: expected a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (key != "path" && key != "thresholds" && key != "events" && key != "levels") {
      return fail_invalid(fmt::format("rule: unknown field \"{}\"", key));
    }
  }
  Rule r;
  auto path = j.find("path");
  if (path == j.end()) return fail_invalid("rule.path: missing");
  if (!path->is_string()) return fail_invalid("rule.path: expected a string");
  r.path = path->get<std::string>();
  for (auto [name, field] : {std::pair<const char*, bool*>{"thresholds", &r.thresholds},
                             std::pair<const char*, bool*>{"events", &r.events}}) {
    if (auto it = j.find(name); it != j.end()) {
      if (!it->is_boolean()) {
        return fail_invalid(fmt::format("rule.{}: expected true or false", name));
      }
      *field = it->get<bool>();
    }
  }
  std::vector<bool> explicit_severity;
  if (auto levels = j.find("levels"); levels != j.end()) {
    if (!levels->is_array()) return fail_invalid("rule.levels: expected an array");
    if (levels->size() > kMaxLevels) {
      return fail_invalid(
          fmt::format("rule.levels: too many levels ({}, at most {})", levels->size(), kMaxLevels));
    }
    for (std::size_t i = 0; i < levels->size(); ++i) {
      bool is_explicit = false;
      auto l = level_from_json((*levels)[i], fmt::format("rule.levels[{}]", i), is_explicit);
      if (!l) return fail(l.error());
      r.levels.push_back(*l);
      explicit_severity.push_back(is_explicit);
    }
  }
  assign_default_severities(r, explicit_severity);
  if (auto ok = validate_rule(r); !ok) return fail(ok.error());
  return r;
}

}  // namespace

Result<Rule> rule_from_json(const nlohmann::json& j) {
  // Every access above checks the type first; this only keeps a missed case from escaping.
  try {
    return rule_from_json_unchecked(j);
  } catch (const nlohmann::json::exception& e) {
    return fail_invalid(fmt::format("rule: {}", e.what()));
  }
}

namespace {

std::vector<std::string_view> split_tokens(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    std::size_t start = i;
    while (i < s.size() && !is_space(s[i])) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

Result<uint64_t> parse_seed_level(std::string_view token) {
  uint64_t v = 0;
  const char* end = token.data() + token.size();
  auto [ptr, ec] = std::from_chars(token.data(), end, v);
  if (ec == std::errc::result_out_of_range) {
    return fail_invalid(fmt::format("level \"{}\" is too large", shown(token)));
  }
  if (ec != std::errc() || ptr != end) {
    return fail_invalid(
        fmt::format("invalid level \"{}\": expected a number of available blocks", shown(token)));
  }
  if (v == 0) return fail_invalid(fmt::format("level \"{}\" must be above zero", shown(token)));
  return v;
}

}  // namespace

Result<SeedCommand> parse_seed_line(std::string_view line) {
  auto tokens = split_tokens(line);
  if (tokens.empty()) return fail_invalid("empty request: expected \"MOUNT G|T [L1] [L2]\"");
  SeedCommand cmd;
  std::string_view path = tokens[0];
  std::size_t next = 1;
  if (path.front() == '!') {
    cmd.remove = true;
    path.remove_prefix(1);
    if (path.empty()) return fail_invalid("expected a mount path right after \"!\"");
  }
  if (path.front() != '/') {
    return fail_invalid(
        fmt::format("relative path \"{}\": the mount point must be absolute", shown(path)));
  }
  cmd.path = std::string(path);
  bool levels_open = false;  // right after T, before another event type
  for (; next < tokens.size(); ++next) {
    std::string_view t = tokens[next];
    if (t == "G" || t == "T") {
      bool& named = t == "G" ? cmd.generic : cmd.threshold;
      if (named) return fail_invalid(fmt::format("event type \"{}\" given twice", shown(t)));
      named = true;
      levels_open = t == "T" && !cmd.remove;
      continue;
    }
    if (is_digit(t.front())) {
      if (cmd.remove) {
        return fail_invalid(
            fmt::format("unexpected level \"{}\": \"!\" requests take no levels", shown(t)));
      }
      if (!cmd.threshold) {
        return fail_invalid(fmt::format(
            "unexpected level \"{}\": only T (thresholds) takes levels, and they follow it",
            shown(t)));
      }
      if (!levels_open) {
        return fail_invalid(
            fmt::format("unexpected level \"{}\": the levels must follow T directly", shown(t)));
      }
      if (cmd.levels.size() == 2) {
        return fail_invalid(
            fmt::format("extra token \"{}\": T takes at most two levels", shown(t)));
      }
      auto v = parse_seed_level(t);
      if (!v) return fail(v.error());
      cmd.levels.push_back(Amount{Amount::Unit::fs_blocks, 0, *v});
      continue;
    }
    return fail_invalid(fmt::format("unknown event type \"{}\": expected G or T", shown(t)));
  }
  if (!cmd.remove && !cmd.generic && !cmd.threshold) {
    return fail_invalid(
        fmt::format("no event type for \"{}\": expected G, T or both", shown(cmd.path)));
  }
  if (cmd.threshold && !cmd.remove && cmd.levels.empty()) {
    return fail_invalid("T needs at least one level (L1, a number of available blocks)");
  }
  if (cmd.levels.size() == 2 && cmd.levels[0].value <= cmd.levels[1].value) {
    return fail_invalid(fmt::format("L1 ({}) must be higher than L2 ({})", cmd.levels[0].value,
                                    cmd.levels[1].value));
  }
  return cmd;
}

Result<std::vector<SeedCommand>> parse_seed_lines(std::string_view text) {
  std::vector<std::string_view> requests;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == ';' || text[i] == '\n') {
      std::string_view r = trim(text.substr(start, i - start));
      if (!r.empty()) requests.push_back(r);
      start = i + 1;
    }
  }
  std::vector<SeedCommand> out;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    auto cmd = parse_seed_line(requests[i]);
    if (!cmd) {
      if (requests.size() == 1) return fail(cmd.error());
      return fail_invalid(
          fmt::format("request {} (\"{}\"): {}", i + 1, shown(requests[i]), cmd.error().context()));
    }
    out.push_back(std::move(*cmd));
  }
  return out;
}

Result<std::optional<Rule>> apply_seed_command(const std::optional<Rule>& current,
                                               const SeedCommand& cmd) {
  if (current && current->path != cmd.path) {
    return fail_invalid(fmt::format("request for \"{}\" applied to the rule of \"{}\"",
                                    shown(cmd.path), shown(current->path)));
  }
  if (cmd.remove && !cmd.generic && !cmd.threshold) return std::optional<Rule>();
  Rule r;
  if (current) {
    r = *current;
  } else {
    r.path = cmd.path;
    r.thresholds = false;
    r.events = false;
  }
  if (cmd.remove) {
    if (cmd.generic) r.events = false;
    if (cmd.threshold) r.thresholds = false;
  } else {
    if (cmd.generic) r.events = true;
    if (cmd.threshold) {
      r.thresholds = true;
      std::erase_if(r.levels, [](const Level& l) { return l.resource == Resource::blocks; });
      for (std::size_t i = 0; i < cmd.levels.size(); ++i) {
        Level l;
        l.resource = Resource::blocks;
        l.below = cmd.levels[i];
        l.severity = i == 0 ? Severity::warning : Severity::error;
        r.levels.push_back(l);
      }
    }
  }
  if (auto ok = validate_rule(r); !ok) return fail(ok.error());
  return std::optional<Rule>(std::move(r));
}

}  // namespace storwatch
