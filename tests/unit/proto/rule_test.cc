#include "proto/rule.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace storwatch {
namespace {

using ::testing::HasSubstr;

Amount percent(double p) { return Amount{Amount::Unit::percent, p, 0}; }
Amount absolute(uint64_t v) { return Amount{Amount::Unit::absolute, 0, v}; }
Amount fs_blocks(uint64_t v) { return Amount{Amount::Unit::fs_blocks, 0, v}; }

Level level(Resource r, Amount below, Severity s = Severity::warning) {
  Level l;
  l.resource = r;
  l.below = below;
  l.severity = s;
  return l;
}

Amount amount_ok(std::string_view text, Resource r = Resource::blocks) {
  auto a = parse_amount(text, r);
  EXPECT_TRUE(a.has_value()) << text << ": " << (a ? "" : a.error().message());
  return a.value_or(Amount{});
}

std::string amount_error(std::string_view text, Resource r = Resource::blocks) {
  auto a = parse_amount(text, r);
  EXPECT_FALSE(a.has_value()) << text << " parsed as " << (a ? a->to_string() : "");
  return a ? "" : a.error().message();
}

TEST(ParseAmount, Percentages) {
  EXPECT_EQ(amount_ok("10%"), percent(10));
  EXPECT_EQ(amount_ok("2.5%"), percent(2.5));
  EXPECT_EQ(amount_ok(" 0.01 % "), percent(0.01));
  EXPECT_EQ(amount_ok("10%", Resource::inodes), percent(10));
}

TEST(ParseAmount, SizesArePowersOf1024) {
  EXPECT_EQ(amount_ok("4096"), absolute(4096));
  EXPECT_EQ(amount_ok("4096B"), absolute(4096));
  EXPECT_EQ(amount_ok("4K"), absolute(4096));
  EXPECT_EQ(amount_ok("4k"), absolute(4096));
  EXPECT_EQ(amount_ok("4KiB"), absolute(4096));
  EXPECT_EQ(amount_ok("4Ki"), absolute(4096));
  EXPECT_EQ(amount_ok("500M"), absolute(500ULL << 20));
  EXPECT_EQ(amount_ok("5G"), absolute(5ULL << 30));
  EXPECT_EQ(amount_ok("5 GiB"), absolute(5ULL << 30));
  EXPECT_EQ(amount_ok("1T"), absolute(1ULL << 40));
  EXPECT_EQ(amount_ok("2P"), absolute(2ULL << 50));
  EXPECT_EQ(amount_ok("1.5G"), absolute(3ULL << 29));
  EXPECT_EQ(amount_ok("1.3K"), absolute(1331));  // rounds down to a whole byte
  EXPECT_EQ(amount_ok("18446744073709551615"), absolute(18446744073709551615ULL));
}

TEST(ParseAmount, FilesystemBlocks) {
  EXPECT_EQ(amount_ok("1000 blocks"), fs_blocks(1000));
  EXPECT_EQ(amount_ok("1000blocks"), fs_blocks(1000));
  EXPECT_EQ(amount_ok("1 block"), fs_blocks(1));
}

TEST(ParseAmount, Inodes) {
  EXPECT_EQ(amount_ok("500000", Resource::inodes), absolute(500000));
  EXPECT_EQ(amount_ok("2M", Resource::inodes), absolute(2 << 20));
  EXPECT_EQ(amount_ok("10k", Resource::inodes), absolute(10240));
  EXPECT_THAT(amount_error("5GiB", Resource::inodes), HasSubstr("not inodes"));
  EXPECT_THAT(amount_error("500B", Resource::inodes), HasSubstr("not inodes"));
  EXPECT_THAT(amount_error("1000 blocks", Resource::inodes), HasSubstr("not inodes"));
  EXPECT_THAT(amount_error("10x", Resource::inodes), HasSubstr("number of inodes"));
}

TEST(ParseAmount, Errors) {
  EXPECT_EQ(amount_error("10x"),
            "invalid amount \"10x\": expected a percentage (10%), a size (5G) or a number");
  EXPECT_THAT(amount_error(""), HasSubstr("invalid amount \"\""));
  EXPECT_THAT(amount_error("%"), HasSubstr("expected a percentage"));
  EXPECT_THAT(amount_error("-5G"), HasSubstr("expected a percentage"));
  EXPECT_THAT(amount_error("5."), HasSubstr("expected a percentage"));
  EXPECT_THAT(amount_error("1e3"), HasSubstr("expected a percentage"));
  EXPECT_THAT(amount_error("inf%"), HasSubstr("expected a percentage"));
  EXPECT_THAT(amount_error("5 G B"), HasSubstr("expected a percentage"));
  EXPECT_THAT(amount_error("0%"), HasSubstr("at least 0.000001% and below 100%"));
  EXPECT_THAT(amount_error("100%"), HasSubstr("at least 0.000001% and below 100%"));
  EXPECT_THAT(amount_error("150%"), HasSubstr("\"150%\""));
  EXPECT_THAT(amount_error("0.0000009%"), HasSubstr("at least 0.000001%"));
  EXPECT_EQ(amount_ok("0.000001%"), percent(1e-6));
  EXPECT_THAT(amount_error("5GB"), HasSubstr("ambiguous unit \"GB\": write G or GiB"));
  EXPECT_THAT(amount_error("1.5"), HasSubstr("a fraction needs a size suffix"));
  EXPECT_THAT(amount_error("1.5 blocks"), HasSubstr("a fraction needs a size suffix"));
  EXPECT_THAT(amount_error("18446744073709551616"), HasSubstr("too large"));
  EXPECT_THAT(amount_error("20000P"), HasSubstr("too large"));
  EXPECT_THAT(amount_error("99999999999999999999999999999999999999999K"), HasSubstr("too large"));
  // Long input is cut short in the message.
  std::string long_text(10'000, '7');
  EXPECT_EQ(amount_error(long_text + "x"),
            "invalid amount \"" + std::string(64, '7') +
                "...\": expected a percentage (10%), a size (5G) or a number");
}

TEST(Amount, ToStringRoundTrips) {
  for (std::string text : {"10%", "2.5%", "0.001%", "99.999%", "5G", "1.5G", "500M", "1T", "4K",
                           "1.125K", "1000 blocks", "1331", "7", "0.3%"}) {
    Amount a = amount_ok(text);
    EXPECT_EQ(a.to_string(), text);
    EXPECT_EQ(amount_ok(a.to_string()), a) << text;
  }
  EXPECT_EQ(amount_ok("5120M").to_string(), "5G");
  EXPECT_EQ(amount_ok("4KiB").to_string(), "4K");
  EXPECT_EQ(amount_ok("4096").to_string(), "4K");
  EXPECT_EQ(amount_ok("1000blocks").to_string(), "1000 blocks");
  EXPECT_EQ(amount_ok("2M", Resource::inodes).to_string(), "2M");
  // Any double percentage prints without an exponent and reads back exactly.
  for (double p : {1e-6, 1.5e-6, 1.0 / 3, 99.99999999999999, 33.333333333333336, 0.1 + 0.2}) {
    EXPECT_EQ(amount_ok(percent(p).to_string()), percent(p)) << percent(p).to_string();
  }
  for (uint64_t v : {1ULL, 1023ULL, 1024ULL, 1536ULL, (1ULL << 63) + 1, ~0ULL}) {
    EXPECT_EQ(amount_ok(absolute(v).to_string()), absolute(v)) << absolute(v).to_string();
  }
}

TEST(Amount, Resolve) {
  EXPECT_EQ(percent(10).resolve(1000, 4096), 409600u);
  EXPECT_EQ(percent(2.5).resolve(1000, 1), 25u);
  EXPECT_EQ(percent(0.3).resolve(1000, 1), 3u);     // not 2: see kMicroPerPercent
  EXPECT_EQ(percent(10).resolve(12345, 1), 1234u);  // rounds down
  EXPECT_EQ(absolute(5).resolve(1000, 4096), 5u);
  EXPECT_EQ(fs_blocks(100).resolve(1000, 4096), 409600u);
  EXPECT_EQ(fs_blocks(~0ULL).resolve(1000, 4096), ~0ULL);  // saturates
  EXPECT_EQ(percent(50).resolve(~0ULL, 4096), (~0ULL) / 2);
}

TEST(Level, Id) {
  EXPECT_EQ(level(Resource::blocks, percent(10)).id(), "blocks<10%");
  EXPECT_EQ(level(Resource::inodes, percent(2)).id(), "inodes<2%");
  EXPECT_EQ(level(Resource::blocks, absolute(5ULL << 30)).id(), "blocks<5G");
  EXPECT_EQ(level(Resource::blocks, fs_blocks(1000)).id(), "blocks<1000 blocks");
  // Only the resource and the level count: severity and hysteresis can change under one id.
  Level l = level(Resource::blocks, percent(10), Severity::critical);
  l.hysteresis = percent(2);
  EXPECT_EQ(l.id(), "blocks<10%");
  EXPECT_EQ(resource_name(Resource::blocks), "blocks");
  EXPECT_EQ(resource_name(Resource::inodes), "inodes");
}

Rule rule_with(std::vector<Level> levels) {
  Rule r;
  r.path = "/data";
  r.levels = std::move(levels);
  return r;
}

std::string rule_error(const Rule& r) {
  auto ok = validate_rule(r);
  EXPECT_FALSE(ok.has_value());
  return ok ? "" : ok.error().message();
}

TEST(ValidateRule, Accepts) {
  EXPECT_TRUE(validate_rule(rule_with({})).has_value());  // event toggles only
  Level h = level(Resource::blocks, percent(10));
  h.hysteresis = absolute(1 << 30);  // different units: not compared
  EXPECT_TRUE(validate_rule(rule_with({h, level(Resource::inodes, percent(10)),
                                       level(Resource::blocks, absolute(5ULL << 30)),
                                       level(Resource::blocks, fs_blocks(100))}))
                  .has_value());
}

TEST(ValidateRule, Errors) {
  Rule r = rule_with({});
  r.path = "data";
  EXPECT_EQ(rule_error(r), "rule path \"data\" is not absolute");
  r.path = "";
  EXPECT_EQ(rule_error(r), "rule path is empty");
  r.path = "/" + std::string(5000, 'a');
  EXPECT_THAT(rule_error(r), HasSubstr("too long"));

  EXPECT_EQ(rule_error(rule_with({level(Resource::blocks, percent(10)),
                                  level(Resource::blocks, percent(10), Severity::error)})),
            "duplicate level \"blocks<10%\" (levels[0] and levels[1])");
  EXPECT_THAT(rule_error(rule_with({level(Resource::blocks, absolute(5ULL << 30)),
                                    level(Resource::blocks, absolute(5120ULL << 20))})),
              HasSubstr("duplicate level \"blocks<5G\""));
  EXPECT_THAT(
      rule_error(rule_with({level(Resource::blocks, percent(0))})),
      HasSubstr("level \"blocks<0%\": a percentage must be at least 0.000001% and below 100%"));
  EXPECT_THAT(rule_error(rule_with({level(Resource::inodes, percent(100))})),
              HasSubstr("level \"inodes<100%\""));
  EXPECT_THAT(rule_error(rule_with({level(Resource::blocks, absolute(0))})),
              HasSubstr("level \"blocks<0\": must be above zero"));
  EXPECT_THAT(rule_error(rule_with({level(Resource::inodes, fs_blocks(10))})),
              HasSubstr("inode levels can't be given in filesystem blocks"));

  Level h = level(Resource::blocks, percent(10));
  h.hysteresis = percent(10);
  EXPECT_EQ(rule_error(rule_with({h})),
            "level \"blocks<10%\": hysteresis 10% must be smaller than the level");
  h = level(Resource::blocks, absolute(1 << 20));
  h.hysteresis = absolute(2 << 20);
  EXPECT_THAT(rule_error(rule_with({h})), HasSubstr("hysteresis 2M must be smaller"));
  h = level(Resource::blocks, percent(10));
  h.hysteresis = percent(0);
  EXPECT_THAT(rule_error(rule_with({h})),
              HasSubstr("level \"blocks<10%\" hysteresis: a percentage"));

  std::vector<Level> many;
  for (int i = 1; i <= 65; ++i) many.push_back(level(Resource::blocks, absolute(i)));
  EXPECT_EQ(rule_error(rule_with(many)), "too many levels (65, at most 64)");
  many.pop_back();
  EXPECT_TRUE(validate_rule(rule_with(many)).has_value());
}

TEST(DefaultSeverities, ByStrictnessPerResource) {
  Rule r = rule_with({level(Resource::blocks, percent(5)), level(Resource::blocks, percent(10)),
                      level(Resource::inodes, percent(3)), level(Resource::blocks, percent(1)),
                      level(Resource::blocks, percent(2))});
  assign_default_severities(r, {});
  EXPECT_EQ(r.levels[0].severity, Severity::error);     // blocks 5%
  EXPECT_EQ(r.levels[1].severity, Severity::warning);   // blocks 10%
  EXPECT_EQ(r.levels[2].severity, Severity::warning);   // inodes 3%: its own ranking
  EXPECT_EQ(r.levels[3].severity, Severity::critical);  // blocks 1%
  EXPECT_EQ(r.levels[4].severity, Severity::critical);  // blocks 2%
}

TEST(DefaultSeverities, PercentFirstThenSizesThenFsBlocks) {
  Rule r =
      rule_with({level(Resource::blocks, fs_blocks(1000)),
                 level(Resource::blocks, absolute(1 << 30)), level(Resource::blocks, percent(1))});
  assign_default_severities(r, {});
  EXPECT_EQ(r.levels[2].severity, Severity::warning);
  EXPECT_EQ(r.levels[1].severity, Severity::error);
  EXPECT_EQ(r.levels[0].severity, Severity::critical);
}

TEST(DefaultSeverities, ExplicitOnesKeepTheirsAndTakeNoRank) {
  Rule r = rule_with({level(Resource::blocks, percent(20), Severity::critical),
                      level(Resource::blocks, percent(10)), level(Resource::blocks, percent(5))});
  assign_default_severities(r, {true});  // shorter than levels: the rest are not explicit
  EXPECT_EQ(r.levels[0].severity, Severity::critical);
  EXPECT_EQ(r.levels[1].severity, Severity::warning);
  EXPECT_EQ(r.levels[2].severity, Severity::error);
}

TEST(RuleJson, RoundTrip) {
  Rule r = rule_with({level(Resource::blocks, percent(10)),
                      level(Resource::inodes, absolute(1000), Severity::critical)});
  r.levels[0].hysteresis = percent(2);
  r.events = false;
  nlohmann::json j = rule_to_json(r);
  EXPECT_EQ(j, nlohmann::json::parse(R"({"path": "/data", "thresholds": true, "events": false,
      "levels": [{"resource": "blocks", "below": "10%", "hysteresis": "2%", "severity": "warning"},
                 {"resource": "inodes", "below": "1000", "severity": "critical"}]})"));
  auto back = rule_from_json(j);
  ASSERT_TRUE(back.has_value()) << back.error().message();
  EXPECT_EQ(*back, r);
}

TEST(RuleJson, DefaultsAndDefaultSeverities) {
  auto r = rule_from_json(nlohmann::json::parse(R"({"path": "/data", "levels": [
      {"below": "5%"}, {"below": "10%", "hysteresis": null},
      {"below": "1%", "severity": "info"}]})"));
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_TRUE(r->thresholds);
  EXPECT_TRUE(r->events);
  ASSERT_EQ(r->levels.size(), 3u);
  EXPECT_EQ(r->levels[0].resource, Resource::blocks);
  EXPECT_EQ(r->levels[0].severity, Severity::error);
  EXPECT_EQ(r->levels[1].severity, Severity::warning);
  EXPECT_FALSE(r->levels[1].hysteresis.has_value());
  EXPECT_EQ(r->levels[2].severity, Severity::info);
}

std::string json_error(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << text;
  auto r = rule_from_json(j);
  EXPECT_FALSE(r.has_value()) << text;
  return r ? "" : r.error().message();
}

TEST(RuleJson, PreciseErrors) {
  EXPECT_EQ(json_error("[]"), "rule: expected a JSON object");
  EXPECT_EQ(json_error("{}"), "rule.path: missing");
  EXPECT_EQ(json_error(R"({"path": 5})"), "rule.path: expected a string");
  EXPECT_EQ(json_error(R"({"path": "/d", "events": "yes"})"),
            "rule.events: expected true or false");
  EXPECT_EQ(json_error(R"({"path": "/d", "levle": []})"), "rule: unknown field \"levle\"");
  EXPECT_EQ(json_error(R"({"path": "/d", "levels": {}})"), "rule.levels: expected an array");
  EXPECT_EQ(json_error(R"({"path": "/d", "levels": [5]})"), "rule.levels[0]: expected an object");
  EXPECT_EQ(json_error(R"({"path": "/d", "levels": [{}]})"), "rule.levels[0].below: missing");
  EXPECT_EQ(json_error(R"({"path": "/d", "levels": [{"below": 10}]})"),
            "rule.levels[0].below: expected a string such as \"10%\"");
  EXPECT_EQ(json_error(R"({"path": "/d", "levels": [{"below": "10%"}, {"below": "10x"}]})"),
            "rule.levels[1].below: invalid amount \"10x\": expected a percentage (10%), a size "
            "(5G) or a number");
  EXPECT_EQ(json_error(R"({"path": "/d", "levels": [{"below": "1%", "resource": "disk"}]})"),
            "rule.levels[0].resource: unknown resource \"disk\" (expected blocks or inodes)");
  EXPECT_EQ(json_error(R"({"path": "/d", "levels": [{"below": "1%", "severity": "bad"}]})"),
            "rule.levels[0].severity: unknown severity \"bad\" (expected info, warning, error or "
            "critical)");
  EXPECT_EQ(json_error(R"({"path": "/d", "levels": [{"below": "1%", "hysteresis": 1}]})"),
            "rule.levels[0].hysteresis: expected a string such as \"1%\"");
  EXPECT_EQ(json_error(R"({"path": "/d", "levels": [{"below": "1%", "x": 1}]})"),
            "rule.levels[0]: unknown field \"x\"");
  // Whole-rule checks run after parsing.
  EXPECT_EQ(json_error(R"({"path": "d"})"), "rule path \"d\" is not absolute");
  EXPECT_THAT(json_error(R"({"path": "/d", "levels": [{"below": "1%"}, {"below": "1.0%"}]})"),
              HasSubstr("duplicate level \"blocks<1%\""));
}

SeedCommand seed_ok(std::string_view line) {
  auto c = parse_seed_line(line);
  EXPECT_TRUE(c.has_value()) << line << ": " << (c ? "" : c.error().message());
  return c.value_or(SeedCommand{});
}

std::string seed_error(std::string_view line) {
  auto c = parse_seed_line(line);
  EXPECT_FALSE(c.has_value()) << line;
  return c ? "" : c.error().message();
}

TEST(SeedLine, Good) {
  SeedCommand c = seed_ok("/data G T 710000 500000");
  EXPECT_EQ(c.path, "/data");
  EXPECT_FALSE(c.remove);
  EXPECT_TRUE(c.generic);
  EXPECT_TRUE(c.threshold);
  EXPECT_EQ(c.levels, (std::vector<Amount>{fs_blocks(710000), fs_blocks(500000)}));

  c = seed_ok("  /data\tT 100 ");
  EXPECT_FALSE(c.generic);
  EXPECT_TRUE(c.threshold);
  EXPECT_EQ(c.levels, std::vector<Amount>{fs_blocks(100)});

  c = seed_ok("!/data T");
  EXPECT_TRUE(c.remove);
  EXPECT_TRUE(c.threshold);
  EXPECT_FALSE(c.generic);

  c = seed_ok("!/data G");
  EXPECT_TRUE(c.remove);
  EXPECT_TRUE(c.generic);
  EXPECT_FALSE(c.threshold);

  c = seed_ok("!/data");
  EXPECT_TRUE(c.remove);
  EXPECT_FALSE(c.generic);
  EXPECT_FALSE(c.threshold);
  EXPECT_EQ(c.path, "/data");

  c = seed_ok("/data T 100 G");
  EXPECT_TRUE(c.generic);
  EXPECT_EQ(c.levels, std::vector<Amount>{fs_blocks(100)});
}

TEST(SeedLine, Bad) {
  EXPECT_EQ(seed_error("data G"), "relative path \"data\": the mount point must be absolute");
  EXPECT_EQ(seed_error("/data T"), "T needs at least one level (L1, a number of available blocks)");
  EXPECT_EQ(seed_error("/data T 5 10"), "L1 (5) must be higher than L2 (10)");
  EXPECT_EQ(seed_error("/data T 5 5"), "L1 (5) must be higher than L2 (5)");
  EXPECT_EQ(seed_error("/data X"), "unknown event type \"X\": expected G or T");
  EXPECT_EQ(seed_error("/data g"), "unknown event type \"g\": expected G or T");
  EXPECT_EQ(seed_error("/data G 5"),
            "unexpected level \"5\": only T (thresholds) takes levels, and they follow it");
  EXPECT_EQ(seed_error("!/data T 5"), "unexpected level \"5\": \"!\" requests take no levels");
  EXPECT_EQ(seed_error(""), "empty request: expected \"MOUNT G|T [L1] [L2]\"");
  EXPECT_EQ(seed_error("   "), "empty request: expected \"MOUNT G|T [L1] [L2]\"");
  EXPECT_EQ(seed_error("/data"), "no event type for \"/data\": expected G, T or both");
  EXPECT_EQ(seed_error("/data T 3 2 1"), "extra token \"1\": T takes at most two levels");
  EXPECT_EQ(seed_error("/data T 5 G 3"),
            "unexpected level \"3\": the levels must follow T directly");
  EXPECT_EQ(seed_error("/data G G"), "event type \"G\" given twice");
  EXPECT_EQ(seed_error("/data T 5x"),
            "invalid level \"5x\": expected a number of available blocks");
  EXPECT_EQ(seed_error("/data T 0"), "level \"0\" must be above zero");
  EXPECT_EQ(seed_error("/data T 99999999999999999999"),
            "level \"99999999999999999999\" is too large");
  EXPECT_EQ(seed_error("! /data"), "expected a mount path right after \"!\"");
  EXPECT_EQ(seed_error("!data"), "relative path \"data\": the mount point must be absolute");
}

TEST(SeedLines, SplitsOnSemicolonsAndNewlines) {
  auto cmds = parse_seed_lines("/a G; /b T 10 5\n!/c\n\n ; ");
  ASSERT_TRUE(cmds.has_value()) << cmds.error().message();
  ASSERT_EQ(cmds->size(), 3u);
  EXPECT_EQ((*cmds)[0].path, "/a");
  EXPECT_EQ((*cmds)[1].levels.size(), 2u);
  EXPECT_TRUE((*cmds)[2].remove);

  auto empty = parse_seed_lines(" ;\n");
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());

  auto bad = parse_seed_lines("/a G;/b X");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message(),
            "request 2 (\"/b X\"): unknown event type \"X\": expected G or T");
  // A single request reads like parse_seed_line's error.
  EXPECT_EQ(parse_seed_lines("/b X\n").error().message(),
            "unknown event type \"X\": expected G or T");
}

Rule apply_ok(const std::optional<Rule>& current, std::string_view line) {
  auto r = apply_seed_command(current, seed_ok(line));
  EXPECT_TRUE(r.has_value()) << line << ": " << (r ? "" : r.error().message());
  EXPECT_TRUE(r.has_value() && r->has_value()) << line;
  return r && *r ? **r : Rule{};
}

TEST(ApplySeed, NewRuleHasOnlyWhatIsNamed) {
  Rule r = apply_ok(std::nullopt, "/data G T 710000 500000");
  EXPECT_EQ(r.path, "/data");
  EXPECT_TRUE(r.events);
  EXPECT_TRUE(r.thresholds);
  ASSERT_EQ(r.levels.size(), 2u);
  EXPECT_EQ(r.levels[0], level(Resource::blocks, fs_blocks(710000), Severity::warning));
  EXPECT_EQ(r.levels[1], level(Resource::blocks, fs_blocks(500000), Severity::error));

  r = apply_ok(std::nullopt, "/data T 100");
  EXPECT_FALSE(r.events);
  EXPECT_TRUE(r.thresholds);

  r = apply_ok(std::nullopt, "/data G");
  EXPECT_TRUE(r.events);
  EXPECT_FALSE(r.thresholds);
  EXPECT_TRUE(r.levels.empty());
}

TEST(ApplySeed, CumulativeOnExistingRule) {
  Rule current = rule_with(
      {level(Resource::blocks, percent(10)), level(Resource::inodes, percent(5), Severity::error)});
  Rule r = apply_ok(current, "/data T 100");
  EXPECT_TRUE(r.events);  // untouched
  ASSERT_EQ(r.levels.size(), 2u);
  EXPECT_EQ(r.levels[0], level(Resource::inodes, percent(5), Severity::error));  // kept
  EXPECT_EQ(r.levels[1], level(Resource::blocks, fs_blocks(100), Severity::warning));

  r = apply_ok(current, "!/data T");
  EXPECT_FALSE(r.thresholds);
  EXPECT_TRUE(r.events);
  EXPECT_EQ(r.levels, current.levels);

  r = apply_ok(current, "!/data G");
  EXPECT_FALSE(r.events);
  EXPECT_TRUE(r.thresholds);

  auto removed = apply_seed_command(current, seed_ok("!/data"));
  ASSERT_TRUE(removed.has_value());
  EXPECT_FALSE(removed->has_value());
  removed = apply_seed_command(std::nullopt, seed_ok("!/data"));
  ASSERT_TRUE(removed.has_value());
  EXPECT_FALSE(removed->has_value());
}

TEST(ApplySeed, WrongPath) {
  auto r = apply_seed_command(rule_with({}), seed_ok("/other G"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "request for \"/other\" applied to the rule of \"/data\"");
}

}  // namespace
}  // namespace storwatch
