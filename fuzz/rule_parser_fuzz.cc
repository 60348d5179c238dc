// libFuzzer target for everything that parses rules from untrusted text: the seed's one-line
// syntax, amounts and the rule JSON of AddRule. None of them may crash, and whatever they accept
// must survive the round trips the daemon relies on (persisting rules, keying crossed state).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "proto/rule.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void fuzz_amount(std::string_view text, storwatch::Resource r) {
  auto a = storwatch::parse_amount(text, r);
  if (!a) return;
  auto back = storwatch::parse_amount(a->to_string(), r);
  check(back.has_value() && *back == *a);
  (void)a->resolve(UINT64_MAX, 4096);
  (void)a->resolve(0, 0);
}

void fuzz_seed(std::string_view text) {
  auto cmds = storwatch::parse_seed_lines(text);
  if (!cmds) return;
  std::optional<storwatch::Rule> rule;
  for (const auto& cmd : *cmds) {
    if (rule && rule->path != cmd.path) rule.reset();
    auto next = storwatch::apply_seed_command(rule, cmd);
    if (!next) continue;
    rule = *next;
    if (rule) check(storwatch::validate_rule(*rule).has_value());
  }
}

void fuzz_json(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return;
  auto rule = storwatch::rule_from_json(j);
  if (!rule) return;
  auto back = storwatch::rule_from_json(storwatch::rule_to_json(*rule));
  check(back.has_value() && *back == *rule);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz_seed(text);
  fuzz_amount(text, storwatch::Resource::blocks);
  fuzz_amount(text, storwatch::Resource::inodes);
  fuzz_json(text);
  return 0;
}
