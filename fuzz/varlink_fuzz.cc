// libFuzzer target for everything storwatch parses from a socket peer: arbitrary bytes go through
// MessageReader (split at fuzzer-chosen points), each message through parse_call/parse_reply, and
// the JSON inside through event_from_json and filter_from_json. Whatever parses must survive a
// round trip through the encoders. Crashes, sanitizer reports and exceptions are bugs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <storwatch/event.h>

#include "proto/filter.h"
#include "proto/varlink.h"

namespace {

using nlohmann::json;
using namespace storwatch;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

std::string_view without_nul(const std::string& wire) {
  check(!wire.empty() && wire.back() == '\0');
  return std::string_view(wire).substr(0, wire.size() - 1);
}

void fuzz_event(const json& j) {
  auto e = event_from_json(j);
  if (!e) return;
  json once = event_to_json(*e);
  (void)event_to_line(*e);
  // What we accepted, we must be able to send and read back unchanged.
  auto again = event_from_json(json::parse(once.dump(-1, ' ', false, json::error_handler_t::replace)));
  check(again.has_value());
  check(event_to_json(*again) == once);
}

void fuzz_filter(const json& j) {
  auto f = proto::filter_from_json(j);
  if (!f) return;
  auto back = proto::filter_from_json(proto::filter_to_json(*f));
  check(back.has_value());
  check(back->types == f->types && back->fs == f->fs && back->subtypes == f->subtypes &&
        back->min_severity == f->min_severity);
  Event e;
  e.type = "space.enospc";
  e.detail = {{"subtype", "medium"}};
  (void)proto::matches_type_severity_subtype(*f, e);
}

void fuzz_message(const std::string& m) {
  if (auto c = proto::parse_call(m)) {
    // Encoding is stable after one pass (not exact: JSON cannot carry an overflowed 1e999).
    std::string wire = proto::encode_call(*c);
    auto back = proto::parse_call(without_nul(wire));
    check(back.has_value());
    check(proto::encode_call(*back) == wire);
    check(back->method == c->method && back->more == c->more && back->oneway == c->oneway &&
          back->upgrade == c->upgrade);
    fuzz_filter(c->parameters.contains("filter") ? c->parameters["filter"] : c->parameters);
    fuzz_event(c->parameters);
  }
  if (auto r = proto::parse_reply(m)) {
    std::string wire = proto::encode_reply(*r);
    auto back = proto::parse_reply(without_nul(wire));
    check(back.has_value());
    check(proto::encode_reply(*back) == wire);
    check(back->continues == r->continues && back->error == r->error);
    if (!r->error.empty()) (void)proto::describe_error(*r);
    if (auto it = r->parameters.find("event"); it != r->parameters.end()) fuzz_event(*it);
    fuzz_event(r->parameters);
    fuzz_filter(r->parameters);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the feed size, so messages split across feeds at every offset get tried.
  size_t chunk = static_cast<size_t>(data[0]) + 1;
  const char* p = reinterpret_cast<const char*>(data) + 1;
  size_t n = size - 1;
  proto::MessageReader reader(4096);
  while (n > 0) {
    size_t take = chunk < n ? chunk : n;
    if (!reader.feed(p, take)) break;  // over the limit: a real peer would be dropped here
    p += take;
    n -= take;
    while (auto m = reader.next()) fuzz_message(*m);
  }
  return 0;
}
