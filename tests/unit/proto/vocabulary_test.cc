// docs/events.md is the vocabulary's documentation: every type must be there, with its severity,
// and the doc must not describe types that do not exist.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "proto/vocabulary.h"

namespace storwatch {
namespace {

std::string read_doc() {
  std::ifstream in(std::string(STORWATCH_DOCS_DIR) + "/events.md");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Vocabulary, EveryTypeIsDocumentedWithItsSeverity) {
  std::string doc = read_doc();
  ASSERT_FALSE(doc.empty());
  for (const auto& t : vocabulary()) {
    std::string row = "| `" + std::string(t.name) + "` | ";
    auto pos = doc.find(row);
    ASSERT_NE(pos, std::string::npos) << t.name << " is missing from docs/events.md";
    std::string rest = doc.substr(pos + row.size(), 40);
    EXPECT_EQ(rest.find(severity_name(t.severity)), 0u)
        << t.name << ": docs/events.md gives another severity than " << severity_name(t.severity);
  }
}

TEST(Vocabulary, DocumentsNoUnknownType) {
  std::string doc = read_doc();
  std::regex row(R"(\n\| `([a-z_]+\.[a-z_]+)` \|)");
  std::set<std::string> seen;
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), row); it != std::sregex_iterator(); ++it)
    seen.insert((*it)[1]);
  EXPECT_EQ(seen.size(), vocabulary().size());
  for (const auto& name : seen) EXPECT_NE(find_event_type(name), nullptr) << name;
}

TEST(Vocabulary, NamesAreUniqueAndLookupWorks) {
  std::set<std::string_view> names;
  for (const auto& t : vocabulary()) EXPECT_TRUE(names.insert(t.name).second) << t.name;
  EXPECT_EQ(find_event_type("nope.nope"), nullptr);
  ASSERT_NE(find_event_type("space.threshold"), nullptr);
}

}  // namespace
}  // namespace storwatch
