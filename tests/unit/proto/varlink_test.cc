#include "proto/varlink.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace storwatch::proto {
namespace {

using nlohmann::json;
using namespace std::string_literals;

std::vector<std::string> drain(MessageReader& r) {
  std::vector<std::string> out;
  while (auto m = r.next()) out.push_back(*m);
  return out;
}

TEST(MessageReader, MessageSplitAcrossFeeds) {
  MessageReader r;
  std::string msg = R"({"method":"io.storwatch.ListRules"})"s + '\0';
  for (char c : msg) {
    EXPECT_FALSE(r.next().has_value());
    ASSERT_TRUE(r.feed(&c, 1));
  }
  auto all = drain(r);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], R"({"method":"io.storwatch.ListRules"})");
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(MessageReader, ManyMessagesInOneFeedAndATail) {
  MessageReader r;
  std::string bytes = "{\"a\":1}\0{\"b\":2}\0\0{\"c\""s;
  ASSERT_TRUE(r.feed(bytes.data(), bytes.size()));
  auto all = drain(r);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0], R"({"a":1})");
  EXPECT_EQ(all[1], R"({"b":2})");
  EXPECT_EQ(all[2], "");  // an empty message is a message; parse_* refuses it
  EXPECT_EQ(r.buffered(), 4u);
  std::string rest = ":3}\0"s;
  ASSERT_TRUE(r.feed(rest.data(), rest.size()));
  all = drain(r);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], R"({"c":3})");
}

TEST(MessageReader, LimitExceededInOneFeed) {
  MessageReader r(8);
  std::string bytes = "123456789";
  auto res = r.feed(bytes.data(), bytes.size());
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().name(), errors::kLimitExceeded);
}

TEST(MessageReader, LimitExceededAcrossFeeds) {
  MessageReader r(8);
  ASSERT_TRUE(r.feed("12345", 5));
  auto res = r.feed("6789", 4);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().name(), errors::kLimitExceeded);
}

TEST(MessageReader, MessageOfExactlyTheLimitIsAccepted) {
  MessageReader r(8);
  std::string bytes = "12345678\0"s;
  ASSERT_TRUE(r.feed(bytes.data(), bytes.size()));
  EXPECT_EQ(r.next(), "12345678");
}

TEST(MessageReader, CompleteMessagesBeforeAnOversizedOneAreKept) {
  MessageReader r(8);
  std::string bytes = "{}"s + '\0' + "123456789";
  EXPECT_FALSE(r.feed(bytes.data(), bytes.size()));
  EXPECT_EQ(r.next(), "{}");
}

TEST(ParseCall, Good) {
  auto c = parse_call(R"({"method":"io.storwatch.Subscribe","parameters":{"after":5},"more":true})");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->method, "io.storwatch.Subscribe");
  EXPECT_EQ(c->parameters, json({{"after", 5}}));
  EXPECT_TRUE(c->more);
  EXPECT_FALSE(c->oneway);
  EXPECT_FALSE(c->upgrade);
}

TEST(ParseCall, MissingAndNullParametersAreAnEmptyObject) {
  auto a = parse_call(R"({"method":"io.storwatch.ListRules"})");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->parameters, json::object());
  auto b = parse_call(R"({"method":"io.storwatch.ListRules","parameters":null,"more":null})");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->parameters, json::object());
  EXPECT_FALSE(b->more);
}

TEST(ParseCall, Bad) {
  for (const char* bad : {
           "",                                              // empty
           "not json",                                      // not JSON
           "{\"method\":",                                  // truncated
           "[1,2]",                                         // not an object
           "\"io.storwatch.ListRules\"",                    // not an object
           "{}",                                            // no method
           R"({"method":7})",                               // method not a string
           R"({"method":"m","parameters":[]})",             // parameters not an object
           R"({"method":"m","parameters":"x"})",            // parameters not an object
           R"({"method":"m","more":"yes"})",                // more not a boolean
           R"({"method":"m","oneway":1})",                  // oneway not a boolean
           R"({"method":"m","upgrade":{}})",                // upgrade not a boolean
       }) {
    auto c = parse_call(bad);
    EXPECT_FALSE(c) << bad;
    if (!c) {
      EXPECT_FALSE(c.error().message().empty());
    }
  }
}

TEST(ParseReply, Good) {
  auto r = parse_reply(R"({"parameters":{"rules":[]},"continues":true})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->parameters, json({{"rules", json::array()}}));
  EXPECT_TRUE(r->continues);
  EXPECT_TRUE(r->error.empty());

  auto e = parse_reply(R"({"error":"io.storwatch.InvalidRule","parameters":{"reason":"no"}})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, "io.storwatch.InvalidRule");
  EXPECT_FALSE(e->continues);

  auto bare = parse_reply("{}");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->parameters, json::object());
}

TEST(ParseReply, Bad) {
  for (const char* bad : {
           "",
           "nope",
           "null",
           "42",
           R"({"parameters":[]})",
           R"({"parameters":1})",
           R"({"continues":"true"})",
           R"({"error":5})",
           R"({"error":{"name":"x"}})",
       }) {
    EXPECT_FALSE(parse_reply(bad)) << bad;
  }
}

std::string strip_nul(std::string s) {
  EXPECT_FALSE(s.empty());
  EXPECT_EQ(s.back(), '\0');
  s.pop_back();
  EXPECT_EQ(s.find('\0'), std::string::npos);
  return s;
}

TEST(Encode, CallRoundTrip) {
  Call c;
  c.method = "io.storwatch.Subscribe";
  c.parameters = {{"filter", {{"types", {"space.*"}}}}, {"after", 42}, {"path", "/mnt/\xc3\xa9t\xc3\xa9"}};
  c.more = true;
  auto wire = encode_call(c);
  auto back = parse_call(strip_nul(wire));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->method, c.method);
  EXPECT_EQ(back->parameters, c.parameters);
  EXPECT_TRUE(back->more);
  EXPECT_FALSE(back->oneway);

  Call plain;
  plain.method = "io.storwatch.ListRules";
  auto j = json::parse(strip_nul(encode_call(plain)));
  // Defaults stay off the wire.
  EXPECT_EQ(j, json({{"method", "io.storwatch.ListRules"}}));
}

TEST(Encode, CallFlagsRoundTrip) {
  Call c;
  c.method = "m";
  c.oneway = true;
  c.upgrade = true;
  auto back = parse_call(strip_nul(encode_call(c)));
  ASSERT_TRUE(back);
  EXPECT_TRUE(back->oneway);
  EXPECT_TRUE(back->upgrade);
  EXPECT_FALSE(back->more);
}

TEST(Encode, ReplyRoundTrip) {
  Reply r;
  r.parameters = {{"journal_id", "abc"}, {"journaled_seq", 18446744073709551615ull}};
  r.continues = true;
  auto back = parse_reply(strip_nul(encode_reply(r)));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->parameters, r.parameters);
  EXPECT_EQ(back->parameters["journaled_seq"].get<uint64_t>(), 18446744073709551615ull);
  EXPECT_TRUE(back->continues);
  EXPECT_TRUE(back->error.empty());
}

TEST(Encode, ReplyWithNonObjectParametersSendsAnEmptyObject) {
  Reply r;
  r.parameters = json::array();
  auto j = json::parse(strip_nul(encode_reply(r)));
  EXPECT_EQ(j["parameters"], json::object());
}

TEST(Encode, InvalidUtf8IsReplacedNotThrown) {
  Call c;
  c.method = "io.storwatch.GetFilesystem";
  c.parameters = {{"path", "/mnt/\xff\xfe"}};
  std::string wire;
  EXPECT_NO_THROW(wire = encode_call(c));
  EXPECT_TRUE(parse_call(strip_nul(wire)));
}

TEST(Encode, ErrorRoundTrip) {
  auto back = parse_reply(strip_nul(encode_error(errors::kNoSuchFilesystem, {{"path", "/x"}})));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->error, errors::kNoSuchFilesystem);
  EXPECT_EQ(back->parameters, json({{"path", "/x"}}));
  EXPECT_FALSE(back->continues);
}

TEST(DescribeError, KnownErrors) {
  auto d = [](const char* name, json p) {
    Reply r;
    r.error = name;
    r.parameters = std::move(p);
    return describe_error(r);
  };
  EXPECT_EQ(d(errors::kPermissionDenied, {{"reason", "changing rules needs root"}}),
            "permission denied: changing rules needs root");
  EXPECT_EQ(d(errors::kInvalidRule, {{"reason", "level 0%"}}), "invalid rule: level 0%");
  EXPECT_EQ(d(errors::kNoSuchFilesystem, {{"path", "/nope"}}), "no watched filesystem holds /nope");
  EXPECT_EQ(d(errors::kLimitExceeded, {{"limit", "clients"}, {"max", 256}}), "limit exceeded: clients (max 256)");
  EXPECT_EQ(d(errors::kJournalMismatch, {{"expected", "a"}, {"actual", "b"}}),
            "journal mismatch: the daemon's journal is b, not a");
  EXPECT_EQ(d(errors::kInvalidParameter, {{"parameter", "since"}, {"reason", "not a time"}}),
            "invalid parameter since: not a time");
  EXPECT_EQ(d(errors::kMethodNotImplemented, {{"method", "io.storwatch.ListEvents"}}),
            "not supported by this daemon yet: io.storwatch.ListEvents");
  EXPECT_EQ(d(errors::kMethodNotFound, {{"method", "io.storwatch.Nope"}}), "unknown method: io.storwatch.Nope");
}

TEST(DescribeError, UnknownErrorsKeepNameAndParameters) {
  Reply r;
  r.error = "com.example.Weird";
  EXPECT_EQ(describe_error(r), "com.example.Weird");
  r.parameters = {{"x", 1}};
  EXPECT_EQ(describe_error(r), R"(com.example.Weird {"x":1})");
}

TEST(DescribeError, WrongParameterTypesDoNotThrow) {
  Reply r;
  r.error = errors::kPermissionDenied;
  r.parameters = {{"reason", 42}};
  std::string s;
  EXPECT_NO_THROW(s = describe_error(r));
  EXPECT_EQ(s, "permission denied: 42");
}

TEST(InterfaceDescription, IsTheInterfaceFile) {
  auto d = interface_description();
  EXPECT_NE(d.find("interface io.storwatch"), std::string_view::npos);
  EXPECT_NE(d.find("method Subscribe("), std::string_view::npos);
  EXPECT_NE(d.find("error JournalMismatch"), std::string_view::npos);
}

}  // namespace
}  // namespace storwatch::proto
