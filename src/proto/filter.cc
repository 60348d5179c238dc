#include "proto/filter.h"

#include <fmt/format.h>
#include <fnmatch.h>

namespace storwatch::proto {

using nlohmann::json;

json filter_to_json(const Filter& f) {
  json j = json::object();
  if (!f.types.empty()) j["types"] = f.types;
  if (!f.fs.empty()) j["fs"] = f.fs;
  if (f.min_severity) j["min_severity"] = severity_name(*f.min_severity);
  if (!f.subtypes.empty()) j["subtypes"] = f.subtypes;
  return j;
}

namespace {

Result<std::vector<std::string>> string_list(const json& j, const char* key) {
  std::vector<std::string> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) return fail_invalid(fmt::format("filter.{} must be an array of strings", key));
  if (it->size() > kMaxFilterEntries)
    return fail(Error::named("io.storwatch.LimitExceeded",
                             fmt::format("filter.{} has more than {} entries", key, kMaxFilterEntries)));
  for (const auto& v : *it) {
    if (!v.is_string()) return fail_invalid(fmt::format("filter.{} must be an array of strings", key));
    const auto& s = v.get_ref<const std::string&>();
    if (s.empty() || s.size() > kMaxFilterString)
      return fail_invalid(fmt::format("filter.{} has an empty or too long entry", key));
    out.push_back(s);
  }
  return out;
}

}  // namespace

Result<Filter> filter_from_json(const json& j) {
  Filter f;
  if (j.is_null()) return f;
  if (!j.is_object()) return fail_invalid("filter must be an object");
  auto types = string_list(j, "types");
  if (!types) return fail(types.error());
  auto fs = string_list(j, "fs");
  if (!fs) return fail(fs.error());
  auto subtypes = string_list(j, "subtypes");
  if (!subtypes) return fail(subtypes.error());
  f.types = std::move(*types);
  f.fs = std::move(*fs);
  f.subtypes = std::move(*subtypes);
  if (auto it = j.find("min_severity"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return fail_invalid("filter.min_severity must be a string");
    auto s = parse_severity(it->get<std::string>());
    if (!s)
      return fail_invalid(fmt::format("filter.min_severity \"{}\" is not one of info, warning, error, critical",
                                      it->get<std::string>()));
    f.min_severity = *s;
  }
  return f;
}

bool glob_match(const std::string& pattern, const std::string& text) {
  return ::fnmatch(pattern.c_str(), text.c_str(), 0) == 0;
}

bool matches_type_severity_subtype(const Filter& f, const Event& e) {
  if (f.min_severity && e.severity < *f.min_severity) return false;
  if (!f.types.empty()) {
    bool any = false;
    for (const auto& g : f.types)
      if (glob_match(g, e.type)) {
        any = true;
        break;
      }
    if (!any) return false;
  }
  if (!f.subtypes.empty()) {
    auto it = e.detail.find("subtype");
    if (it == e.detail.end() || !it->is_string()) return false;
    const auto& sub = it->get_ref<const std::string&>();
    bool any = false;
    for (const auto& s : f.subtypes)
      if (s == sub) {
        any = true;
        break;
      }
    if (!any) return false;
  }
  return true;
}

}  // namespace storwatch::proto
