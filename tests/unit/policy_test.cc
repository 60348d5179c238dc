// The [policy] decisions, event redaction and the per-class event views, without root: peers
// are made up, events built by hand, and the Manager runs on the fakes.
#include "daemon/server/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/config/config.h"
#include "daemon/manager.h"
#include "daemon/server/server.h"
#include "daemon/view/client_view.h"
#include "proto/varlink.h"
#include "support/fake_clock.h"
#include "support/fake_mount_table.h"
#include "support/fake_statfs_probe.h"
#include "support/temp_dir.h"

namespace storwatch::daemon {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
namespace errs = proto::errors;

const Peer kRoot{.pid = 100, .uid = 0, .gid = 0};
const Peer kUser{.pid = 101, .uid = 1000, .gid = 1000};
const Peer kNobody{.pid = 102, .uid = 65534, .gid = 65534};

Policy parse(const json& table) {
  auto p = parse_policy(table);
  EXPECT_TRUE(p) << (p ? "" : p.error().message());
  return p ? *p : Policy();
}

Event event_by(int64_t uid) {
  Event e;
  e.type = "space.enospc";
  e.seq = 7;
  e.process = ProcessRef{.pid = 4242, .uid = uid, .comm = "dd", .cgroup = "/user.slice"};
  e.detail = {{"kind", "data"}, {"errno", 28}};
  return e;
}

TEST(Policy, DefaultLetsAnyoneSubscribeAndQueryButOnlyRootChangeRules) {
  Policy p;
  for (const Peer& peer : {kRoot, kUser, kNobody}) {
    EXPECT_TRUE(p.allows(Operation::subscribe, peer));
    EXPECT_TRUE(p.allows(Operation::query, peer));
  }
  EXPECT_TRUE(p.allows(Operation::change_rules, kRoot));
  EXPECT_FALSE(p.allows(Operation::change_rules, kUser));
  EXPECT_EQ(p.denial(Operation::change_rules, kUser), "changing rules needs root; you are uid 1000");
}

TEST(Policy, DefaultGrantsOwnProcessesAndNoKernelTextToNonRoot) {
  Policy p;
  EXPECT_EQ(p.grants(kRoot), (Grants{0, true, true}));
  EXPECT_EQ(p.grants(kUser), (Grants{1000, false, false}));
}

TEST(Policy, ListsOfUidsGidsAndNames) {
  Policy p = parse({{"query", {"uid:1000", "gid:50"}}, {"rules", {"user:root", "group:root"}},
                    {"subscribe", json::array()}, {"process_fields", {"*"}}, {"kernel_text", {"gid:4"}}});
  EXPECT_TRUE(p.allows(Operation::query, kUser));
  EXPECT_FALSE(p.allows(Operation::query, kNobody));
  Peer in_group = kNobody;
  in_group.groups = {50};  // a supplementary group counts like the primary one
  EXPECT_TRUE(p.allows(Operation::query, in_group));
  Peer gid_root = kNobody;
  gid_root.gid = 0;
  EXPECT_TRUE(p.allows(Operation::change_rules, gid_root));
  EXPECT_FALSE(p.allows(Operation::subscribe, kUser));  // nobody but root
  EXPECT_TRUE(p.allows(Operation::subscribe, kRoot));   // root always
  EXPECT_TRUE(p.grants(kNobody).all_processes);
  EXPECT_FALSE(p.grants(kNobody).kernel_text);
  EXPECT_THAT(p.denial(Operation::query, kNobody),
              HasSubstr("querying is allowed to root and uid:1000, gid:50 (configuration [policy] query); "
                        "you are uid 65534, gid 65534"));
  EXPECT_EQ(p.denial(Operation::subscribe, kUser), "subscribing needs root; you are uid 1000");
}

TEST(Policy, BareNameIsAUser) {
  auto root = parse_principal("root");
  ASSERT_TRUE(root);
  EXPECT_EQ(root->kind, Principal::Kind::uid);
  EXPECT_EQ(root->id, 0u);
}

TEST(Policy, RefusesWhatItCannotUnderstand) {
  for (const char* bad : {"uid:", "uid:x", "gid:-1", "pid:3", "user:no-such-user-storwatch", "group:no-such-group-sw"})
    EXPECT_FALSE(parse_principal(bad)) << bad;
  EXPECT_FALSE(parse_policy({{"rule", {"*"}}}));           // unknown key (a typo must not pass)
  EXPECT_FALSE(parse_policy({{"rules", "uid:0"}}));        // not an array
  EXPECT_FALSE(parse_policy({{"rules", {1}}}));            // not strings
  auto e = parse_policy({{"query", {"uid:abc"}}});
  ASSERT_FALSE(e);
  EXPECT_THAT(e.error().message(), HasSubstr("policy.query: \"uid:abc\": not a number"));
}

TEST(Policy, ConfigFileSection) {
  auto c = parse_config("[policy]\nrules = [\"uid:0\", \"uid:1000\"]\nprocess_fields = [\"*\"]\n", "test.toml");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_TRUE(c->policy.allows(Operation::change_rules, kUser));
  EXPECT_TRUE(c->policy.allows(Operation::query, kNobody));  // untouched keys keep the default
  EXPECT_TRUE(c->policy.grants(kNobody).all_processes);
  auto bad = parse_config("[policy]\nquery = [\"someone\"]\n", "test.toml");
  ASSERT_FALSE(bad);
  EXPECT_THAT(bad.error().message(), HasSubstr("test.toml: policy.query: \"someone\""));
  auto defaults = parse_config("", "test.toml");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->policy, Policy());  // the embedded default says what the code defaults to
}

TEST(Redaction, OwnProcessStaysOthersGo) {
  Grants user{1000, false, false};
  Event own = event_by(1000);
  EXPECT_FALSE(needs_redaction(own, user));
  Event other = event_by(0);
  ASSERT_TRUE(needs_redaction(other, user));
  redact(other, user);
  EXPECT_FALSE(other.process);
  EXPECT_EQ(other.detail["errno"], 28);  // the rest stays
  Event unknown = event_by(-1);
  redact(unknown, user);
  EXPECT_FALSE(unknown.process);  // an unknown uid is never the client's own
  Event seen = event_by(0);
  EXPECT_FALSE(needs_redaction(seen, Grants{1000, true, true}));
}

TEST(Redaction, KernelTextOnlyWithTheGrant) {
  Event e;
  e.type = "fs.error";
  e.detail = {{"errno", 117}, {"function", "ext4_lookup"}, {"message", "EXT4-fs error ..."}, {"comm", "ls"}};
  EXPECT_FALSE(needs_redaction(e, Grants{0, true, true}));
  Grants user{1000, false, false};
  ASSERT_TRUE(needs_redaction(e, user));
  redact(e, user);
  EXPECT_EQ(e.detail, (json{{"errno", 117}, {"function", "ext4_lookup"}}));
  // quota.warning's message is the daemon's own text, not the kernel log's.
  Event q;
  q.type = "quota.warning";
  q.detail = {{"warning", "bhard"}, {"message", "block hard limit reached"}};
  EXPECT_FALSE(needs_redaction(q, user));
}

TEST(ClientViewTest, NothingToHideIsTheSameObject) {
  ClientView root(Grants{0, true, true}, nullptr);
  EventPtr e = make_bus_event(event_by(1000));
  EXPECT_EQ(root.present(e), e);
  ClientView user(Grants{1000, false, false}, nullptr);
  EXPECT_EQ(user.present(e), e);  // its own process
}

TEST(ClientViewTest, ARedactedCopyIsMadeOncePerEvent) {
  ClientView user(Grants{1000, false, false}, nullptr);
  EventPtr e = make_bus_event(event_by(0));
  EventPtr a = user.present(e);
  EventPtr b = user.present(e);
  EXPECT_NE(a, e);
  EXPECT_EQ(a, b);  // the second subscriber of the class gets the same copy
  EXPECT_EQ(a->json.find("\"process\""), std::string::npos);
  EXPECT_EQ(a->event.seq, 7u);  // numbers and times are the published ones
  EXPECT_EQ(json::parse(a->json)["seq"], 7);
}

TEST(ClientViewTest, OtherNamespacesMountEventsAreNotTheHosts) {
  ClientView host(Grants{0, true, true}, nullptr);
  Event m;
  m.type = "mount.attached";
  m.detail = {{"path", "/mnt"}};
  EXPECT_TRUE(host.accepts(m));
  m.detail["mnt_ns"] = 4026532187u;
  EXPECT_FALSE(host.accepts(m));
  Event other;
  other.type = "fs.error";
  other.detail = {{"mnt_ns", 1}};  // only mount.* carry the namespace
  EXPECT_TRUE(host.accepts(other));
}

TEST(TranslatePath, ThroughBindMountsOfSubdirectories) {
  // The host mounts the whole filesystem at /srv/data; a container sees its "www" directory at
  // /var/www and the whole of it, read-only, at /mnt/all.
  std::vector<MountPlace> host = {{"/", "/srv/data"}};
  std::vector<MountPlace> there = {{"/www", "/var/www"}, {"/", "/mnt/all"}};
  EXPECT_EQ(translate_path(host, there, "/srv/data/www/index.html"), "/var/www/index.html");
  EXPECT_EQ(translate_path(host, there, "/srv/data/www"), "/var/www");
  EXPECT_EQ(translate_path(host, there, "/srv/data/db/x"), "/mnt/all/db/x");
  EXPECT_EQ(translate_path(host, there, "/srv/data"), "/mnt/all");
  EXPECT_EQ(translate_path(host, there, "/srv/database/x"), std::nullopt);  // not below /srv/data
  // Only the www directory there: the rest of the filesystem has no path in that namespace.
  std::vector<MountPlace> www_only = {{"/www", "/var/www"}};
  EXPECT_EQ(translate_path(host, www_only, "/srv/data/db/x"), std::nullopt);
  EXPECT_EQ(translate_path(host, www_only, "/srv/data/wwwx/y"), std::nullopt);
  // The host's deepest mount point decides (a bind of a subdirectory over the whole).
  std::vector<MountPlace> host2 = {{"/", "/data"}, {"/a/b", "/data/x"}};
  EXPECT_EQ(translate_path(host2, there, "/data/x/f"), "/mnt/all/a/b/f");
  EXPECT_EQ(translate_path({{"/", "/"}}, {{"/", "/"}}, "/etc/passwd"), "/etc/passwd");
}

// The policy applied by the Manager to real calls.
class ManagerPolicyTest : public ::testing::Test {
 protected:
  void start(const std::string& policy_toml) {
    auto c = parse_config(policy_toml, "test");
    ASSERT_TRUE(c) << c.error().message();
    c->state_dir = dir_.sub("state");
    c->socket = dir_.sub("io.storwatch");
    Manager::Deps deps;
    deps.clock = &clock_;
    deps.statfs = probe_;
    auto mounts = std::make_shared<test::FakeMountTable::State>();
    mounts->text = "30 1 8:17 / /mnt/data rw,relatime - ext4 /dev/sdb1 rw\n";
    deps.mount_table = std::make_unique<test::FakeMountTable>(mounts);
    auto l = Server::listen_unix(c->socket);
    ASSERT_TRUE(l) << l.error().message();
    deps.listener = std::move(*l);
    auto m = Manager::create(std::move(*c), Manager::Options{}, std::move(deps));
    ASSERT_TRUE(m) << m.error().message();
    manager_ = std::move(*m);
  }
  void TearDown() override {
    probe_->release_all();
    manager_.reset();
  }

  test::TempDir dir_;
  test::FakeClock clock_;
  std::shared_ptr<test::FakeStatfsProbe> probe_ = std::make_shared<test::FakeStatfsProbe>();
  std::unique_ptr<Manager> manager_;
};

TEST_F(ManagerPolicyTest, QueriesAndSubscriptionsFollowThePolicy) {
  start("[policy]\nquery = [\"uid:1000\"]\nsubscribe = [\"gid:1000\"]\n");
  EXPECT_TRUE(manager_->call(kUser, "ListFilesystems", json::object()));
  EXPECT_TRUE(manager_->call(kRoot, "ListMounts", json::object()));
  for (const char* method : {"ListFilesystems", "GetFilesystem", "ListMounts", "ListRules", "ListEvents", "Doctor"}) {
    auto r = manager_->call(kNobody, method, {{"path", "/mnt/data"}});
    ASSERT_FALSE(r) << method;
    EXPECT_EQ(r.error().name, errs::kPermissionDenied) << method;
    EXPECT_THAT(r.error().parameters["reason"].get<std::string>(), HasSubstr("querying is allowed to root and uid:1000"));
  }
  EXPECT_TRUE(manager_->subscribe(kUser, json::object()));
  auto s = manager_->subscribe(kNobody, json::object());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().name, errs::kPermissionDenied);
  // An unknown method is still an unknown method, not a refusal.
  auto unknown = manager_->call(kNobody, "Frobnicate", json::object());
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().name, errs::kMethodNotFound);
}

TEST_F(ManagerPolicyTest, RuleChangersFromThePolicy) {
  start("[policy]\nrules = [\"uid:1000\"]\n");
  json rule = {{"path", "/mnt/data"}, {"levels", {{{"resource", "blocks"}, {"below", "10%"}}}}};
  auto added = manager_->call(kUser, "AddRule", {{"rule", rule}});
  ASSERT_TRUE(added) << added.error().parameters.dump();
  auto r = manager_->call(kNobody, "RemoveRule", {{"path", "/mnt/data"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, errs::kPermissionDenied);
  EXPECT_TRUE(manager_->call(kUser, "RemoveRule", {{"path", "/mnt/data"}}));
}

TEST_F(ManagerPolicyTest, SubscriptionsOfNonRootGetTheRedactedView) {
  start("");
  auto root = manager_->subscribe(kRoot, json::object());
  auto user = manager_->subscribe(kUser, json::object());
  ASSERT_TRUE(root && user);
  EXPECT_FALSE(root->present);  // nothing to change: the published objects as they are
  ASSERT_TRUE(user->present);
  EventPtr e = make_bus_event(event_by(0));
  EXPECT_EQ(user->present(e)->event.process, std::nullopt);
}

}  // namespace
}  // namespace storwatch::daemon
