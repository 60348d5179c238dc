#include "daemon/server/policy.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <charconv>
#include <fmt/format.h>

#include "daemon/server/server.h"

namespace storwatch::daemon {

namespace {

Principal root_principal() { return Principal{Principal::Kind::uid, 0, "uid:0"}; }
Principal anyone() { return Principal{Principal::Kind::anyone, 0, "*"}; }

std::optional<uint32_t> parse_id(std::string_view s) {
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// Names are resolved once, when the configuration is read: a later change of /etc/passwd takes
// effect at the next reload, like any other configuration change.
std::optional<uint32_t> user_id(const std::string& name) {
  passwd pw{}, *out = nullptr;
  std::vector<char> buf(16384);
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &out) != 0 || !out) return std::nullopt;
  return out->pw_uid;
}

std::optional<uint32_t> group_id(const std::string& name) {
  group gr{}, *out = nullptr;
  std::vector<char> buf(65536);
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &out) != 0 || !out) return std::nullopt;
  return out->gr_gid;
}

bool matches(const Principal& p, const Peer& peer) {
  switch (p.kind) {
    case Principal::Kind::anyone: return true;
    case Principal::Kind::uid: return peer.uid == p.id;
    case Principal::Kind::gid:
      return peer.gid == p.id || std::find(peer.groups.begin(), peer.groups.end(), p.id) != peer.groups.end();
  }
  return false;
}

bool allowed(const std::vector<Principal>& list, const Peer& peer) {
  if (peer.uid == 0) return true;
  return std::any_of(list.begin(), list.end(), [&](const Principal& p) { return matches(p, peer); });
}

bool root_only(const std::vector<Principal>& list) {
  return std::all_of(list.begin(), list.end(), [](const Principal& p) { return p == root_principal(); });
}

}  // namespace

Result<Principal> parse_principal(const std::string& text) {
  if (text == "*") return anyone();
  auto colon = text.find(':');
  std::string kind = colon == std::string::npos ? "user" : text.substr(0, colon);
  std::string value = colon == std::string::npos ? text : text.substr(colon + 1);
  auto bad = [&](std::string why) {
    return fail_invalid(fmt::format("\"{}\": {}; expected \"*\", \"uid:N\", \"gid:N\", \"user:NAME\", "
                                    "\"group:NAME\" or a user name",
                                    text, why));
  };
  if (value.empty()) return bad("nothing after the colon");
  if (kind == "uid" || kind == "gid") {
    auto id = parse_id(value);
    if (!id) return bad("not a number");
    return Principal{kind == "uid" ? Principal::Kind::uid : Principal::Kind::gid, *id, text};
  }
  if (kind == "user") {
    auto id = user_id(value);
    if (!id) return bad(fmt::format("no user named \"{}\"", value));
    return Principal{Principal::Kind::uid, *id, text};
  }
  if (kind == "group") {
    auto id = group_id(value);
    if (!id) return bad(fmt::format("no group named \"{}\"", value));
    return Principal{Principal::Kind::gid, *id, text};
  }
  return bad(fmt::format("unknown kind \"{}\"", kind));
}

Policy::Policy()
    : subscribe{anyone()},
      query{anyone()},
      rules{root_principal()},
      process_fields{root_principal()},
      kernel_text{root_principal()} {}

bool Policy::allows(Operation op, const Peer& peer) const {
  switch (op) {
    case Operation::subscribe: return allowed(subscribe, peer);
    case Operation::query: return allowed(query, peer);
    case Operation::change_rules: return allowed(rules, peer);
  }
  return false;
}

std::string Policy::denial(Operation op, const Peer& peer) const {
  const std::vector<Principal>* list = &rules;
  std::string what = "changing rules", key = "rules";
  if (op == Operation::subscribe) list = &subscribe, what = "subscribing", key = "subscribe";
  if (op == Operation::query) list = &query, what = "querying", key = "query";
  if (root_only(*list)) return fmt::format("{} needs root; you are uid {}", what, peer.uid);
  std::string who;
  for (const auto& p : *list) who += (who.empty() ? "" : ", ") + p.text;
  return fmt::format("{} is allowed to root{}{} (configuration [policy] {}); you are uid {}, gid {}", what,
                     who.empty() ? "" : " and ", who, key, peer.uid, peer.gid);
}

Grants Policy::grants(const Peer& peer) const {
  return Grants{peer.uid, allowed(process_fields, peer), allowed(kernel_text, peer)};
}

Result<Policy> parse_policy(const nlohmann::json& table, Policy base) {
  if (!table.is_object()) return fail_invalid("policy: must be a table");
  auto list = [&](const char* key, std::vector<Principal>& out) -> Result<void> {
    auto it = table.find(key);
    if (it == table.end()) return {};
    if (!it->is_array()) return fail_invalid(fmt::format("policy.{}: must be an array of strings", key));
    std::vector<Principal> parsed;
    for (const auto& v : *it) {
      if (!v.is_string()) return fail_invalid(fmt::format("policy.{}: must be an array of strings", key));
      auto p = parse_principal(v.get<std::string>());
      if (!p) return fail_invalid(fmt::format("policy.{}: {}", key, p.error().message()));
      parsed.push_back(std::move(*p));
    }
    out = std::move(parsed);
    return {};
  };
  for (const auto& item : table.items()) {
    static const char* const kKeys[] = {"subscribe", "query", "rules", "process_fields", "kernel_text"};
    const std::string& k = item.key();  // a named reference: clang 14 can't capture a structured binding
    if (std::none_of(std::begin(kKeys), std::end(kKeys), [&](const char* x) { return k == x; }))
      return fail_invalid(fmt::format("policy: unknown key \"{}\"", k));
  }
  for (auto [key, field] : {std::pair{"subscribe", &Policy::subscribe}, std::pair{"query", &Policy::query},
                            std::pair{"rules", &Policy::rules}, std::pair{"process_fields", &Policy::process_fields},
                            std::pair{"kernel_text", &Policy::kernel_text}})
    if (auto r = list(key, base.*field); !r) return fail(r.error());
  return base;
}

bool is_kernel_text_field(std::string_view key) { return key == "message" || key == "comm"; }

namespace {
// Only the fs.* events copy lines of the kernel log (docs/events.md); quota.warning's message is
// the daemon's own fixed text.
bool carries_kernel_text(const Event& e) { return e.type.rfind("fs.", 0) == 0 && e.detail.is_object(); }
}  // namespace

bool needs_redaction(const Event& e, const Grants& g) {
  if (e.process && !g.all_processes && e.process->uid != static_cast<int64_t>(g.uid)) return true;
  if (!g.kernel_text && carries_kernel_text(e))
    for (const auto& [k, v] : e.detail.items())
      if (is_kernel_text_field(k)) return true;
  return false;
}

void redact(Event& e, const Grants& g) {
  // A uid of -1 (unknown) is never the client's own: hidden like any other user's.
  if (e.process && !g.all_processes && e.process->uid != static_cast<int64_t>(g.uid)) e.process.reset();
  if (!g.kernel_text && carries_kernel_text(e)) {
    e.detail.erase("message");
    e.detail.erase("comm");
  }
}

}  // namespace storwatch::daemon
