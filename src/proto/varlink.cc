#include "proto/varlink.h"

#include <fmt/format.h>

#include <cstring>

namespace storwatch::proto {

using nlohmann::json;

namespace {
// Generated at build time from io.storwatch.varlink (see src/proto/CMakeLists.txt).
#include "io.storwatch.varlink.inc"
}  // namespace

std::string_view interface_description() { return kInterfaceText; }

Result<void> MessageReader::feed(const char* data, size_t n) {
  while (n > 0) {
    const void* nul = std::memchr(data, '\0', n);
    size_t take = nul ? static_cast<size_t>(static_cast<const char*>(nul) - data) : n;
    if (partial_.size() + take > max_)
      return fail(Error::named(errors::kLimitExceeded,
                               fmt::format("message larger than {} bytes", max_)));
    partial_.append(data, take);
    if (!nul) break;
    ready_.push_back(std::move(partial_));
    partial_.clear();
    data += take + 1;
    n -= take + 1;
  }
  return {};
}

std::optional<std::string> MessageReader::next() {
  if (ready_.empty()) return std::nullopt;
  std::string m = std::move(ready_.front());
  ready_.pop_front();
  return m;
}

namespace {

Result<json> parse_object(std::string_view message) {
  json j = json::parse(message, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return fail_invalid("message is not valid JSON");
  if (!j.is_object()) return fail_invalid("message is not a JSON object");
  return j;
}

Result<bool> opt_bool(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  if (!it->is_boolean()) return fail_invalid(fmt::format("\"{}\" must be a boolean", key));
  return it->get<bool>();
}

}  // namespace

Result<Call> parse_call(std::string_view message) {
  auto j = parse_object(message);
  if (!j) return fail(j.error());
  Call c;
  auto m = j->find("method");
  if (m == j->end() || !m->is_string()) return fail_invalid("call without a \"method\" string");
  c.method = m->get<std::string>();
  if (auto p = j->find("parameters"); p != j->end() && !p->is_null()) {
    if (!p->is_object()) return fail_invalid("\"parameters\" must be an object");
    c.parameters = std::move(*p);
  }
  auto more = opt_bool(*j, "more");
  auto oneway = opt_bool(*j, "oneway");
  auto upgrade = opt_bool(*j, "upgrade");
  if (!more) return fail(more.error());
  if (!oneway) return fail(oneway.error());
  if (!upgrade) return fail(upgrade.error());
  c.more = *more;
  c.oneway = *oneway;
  c.upgrade = *upgrade;
  return c;
}

Result<Reply> parse_reply(std::string_view message) {
  auto j = parse_object(message);
  if (!j) return fail(j.error());
  Reply r;
  if (auto p = j->find("parameters"); p != j->end() && !p->is_null()) {
    if (!p->is_object()) return fail_invalid("\"parameters\" must be an object");
    r.parameters = std::move(*p);
  }
  auto cont = opt_bool(*j, "continues");
  if (!cont) return fail(cont.error());
  r.continues = *cont;
  if (auto e = j->find("error"); e != j->end() && !e->is_null()) {
    if (!e->is_string()) return fail_invalid("\"error\" must be a string");
    r.error = e->get<std::string>();
  }
  return r;
}

std::string encode_call(const Call& c) {
  json j = {{"method", c.method}};
  if (!c.parameters.empty()) j["parameters"] = c.parameters;
  if (c.more) j["more"] = true;
  if (c.oneway) j["oneway"] = true;
  if (c.upgrade) j["upgrade"] = true;
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  s.push_back('\0');
  return s;
}

std::string encode_reply(const Reply& r) {
  json j = json::object();
  j["parameters"] = r.parameters.is_object() ? r.parameters : json::object();
  if (r.continues) j["continues"] = true;
  if (!r.error.empty()) j["error"] = r.error;
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  s.push_back('\0');
  return s;
}

std::string encode_error(std::string_view name, const json& parameters) {
  Reply r;
  r.error = std::string(name);
  r.parameters = parameters.is_object() ? parameters : json::object();
  return encode_reply(r);
}

std::string describe_error(const Reply& r) {
  auto str = [&](const char* k) -> std::string {
    auto it = r.parameters.find(k);
    if (it == r.parameters.end()) return {};
    return it->is_string() ? it->get<std::string>() : it->dump();
  };
  const std::string& n = r.error;
  if (n == errors::kPermissionDenied) return "permission denied: " + str("reason");
  if (n == errors::kInvalidRule) return "invalid rule: " + str("reason");
  if (n == errors::kNoSuchFilesystem) return "no watched filesystem holds " + str("path");
  if (n == errors::kLimitExceeded) return fmt::format("limit exceeded: {} (max {})", str("limit"), str("max"));
  if (n == errors::kJournalMismatch)
    return fmt::format("journal mismatch: the daemon's journal is {}, not {}", str("actual"), str("expected"));
  if (n == errors::kInvalidParameter) return fmt::format("invalid parameter {}: {}", str("parameter"), str("reason"));
  if (n == errors::kMethodNotImplemented) return "not supported by this daemon yet: " + str("method");
  if (n == errors::kMethodNotFound) return "unknown method: " + str("method");
  return n + (r.parameters.empty() ? "" : " " + r.parameters.dump());
}

}  // namespace storwatch::proto
