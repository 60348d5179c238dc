// storwatch status, rules and doctor: the request/reply commands about filesystems and rules.
#include <cctype>

#include <sys/stat.h>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/format.h"

namespace storwatch::cli {

using nlohmann::json;

namespace {

// Prints a reply that carries a rule set (ListRules, AddRule, RemoveRule).
int print_rules(const GlobalOptions& g, const Result<json>& reply) {
  if (!reply) return report(reply.error());
  if (g.json) {
    print_json(*reply);
  } else {
    auto it = reply->find("rules");
    print_text(format_rules(it != reply->end() ? *it : json::array()));
  }
  return kExitOk;
}

// `rules add TARGET`: a seed line ("/data G T 710000 500000", "!/data") rather than a path when it
// starts with '!' or holds white space and names no existing file ("/mnt/my disk" is a path).
bool looks_like_seed_line(const std::string& target) {
  if (!target.empty() && target.front() == '!') return true;
  bool space = false;
  for (unsigned char c : target) space |= std::isspace(c) != 0;
  if (!space) return false;
  struct stat st;
  return ::stat(target.c_str(), &st) != 0;
}

// Level objects of the AddRule request from "AMOUNT[:SEVERITY]" options; nullopt after a usage
// error. The amounts themselves are the daemon's to validate.
bool add_levels(json& levels, const char* resource, const std::vector<std::string>& specs, const char* option,
                const std::string& hysteresis) {
  for (const auto& spec : specs) {
    auto [amount, severity] = split_level(spec);
    if (amount.empty()) {
      usage_error(fmt::format("{} {}: no amount (e.g. 10%, 5G, 500000)", option, spec));
      return false;
    }
    json level = {{"resource", resource}, {"below", amount}};
    if (spec.find(':') != std::string::npos) {
      if (!severity_from_name(severity)) {
        usage_error(fmt::format("{} {}: severity \"{}\" is not one of info, warning, error, critical", option,
                                spec, severity));
        return false;
      }
      level["severity"] = severity;
    }
    if (!hysteresis.empty()) level["hysteresis"] = hysteresis;
    levels.push_back(std::move(level));
  }
  return true;
}

}  // namespace

int run_status(const GlobalOptions& g, const StatusArgs& a) {
  std::string path;
  if (!a.path.empty()) {
    auto abs = existing_path(a.path, "PATH");
    if (!abs) return kExitUsage;
    path = std::move(*abs);
  }
  auto client = connect(g);
  if (!client) return kExitError;
  auto reply = path.empty() ? client->list_filesystems(a.all) : client->get_filesystem(path);
  if (!reply) return report(reply.error());
  if (g.json) {
    print_json(*reply);
    return kExitOk;
  }
  json filesystems = json::array();
  if (auto it = reply->find("filesystems"); it != reply->end() && it->is_array())
    filesystems = *it;
  else if (auto one = reply->find("filesystem"); one != reply->end() && one->is_object())
    filesystems.push_back(*one);
  if (filesystems.empty()) {
    print_text(a.all ? "no filesystems\n" : "no filesystems are watched (storwatch status --all lists every one)\n");
    return kExitOk;
  }
  std::string out;
  for (size_t i = 0; i < filesystems.size(); ++i) {
    if (i > 0) out += "\n";
    out += format_filesystem(filesystems[i]);
  }
  // Where events go, after what is watched; a daemon that cannot say (older) shows nothing.
  if (path.empty())
    if (auto d = client->doctor(); d)
      if (auto sinks = format_sinks(*d); !sinks.empty()) out += "\n" + sinks;
  print_text(out);
  return kExitOk;
}

int run_rules_list(const GlobalOptions& g) {
  auto client = connect(g);
  if (!client) return kExitError;
  return print_rules(g, client->list_rules());
}

int run_rules_add(const GlobalOptions& g, const RuleAddArgs& a) {
  if (looks_like_seed_line(a.target)) {
    if (!a.free_below.empty() || !a.inodes_below.empty() || !a.hysteresis.empty() || a.no_thresholds ||
        a.no_events)
      return usage_error("a seed line (\"" + a.target + "\") takes no options; give a PATH to use them");
    return run_rules_line(g, a.target);
  }
  if (!a.hysteresis.empty() && a.free_below.empty() && a.inodes_below.empty())
    return usage_error("--hysteresis applies to --free-below/--inodes-below levels; none given");
  json levels = json::array();
  if (!add_levels(levels, "blocks", a.free_below, "--free-below", a.hysteresis)) return kExitUsage;
  if (!add_levels(levels, "inodes", a.inodes_below, "--inodes-below", a.hysteresis)) return kExitUsage;
  json rule = {{"path", absolute_path(a.target)},
               {"levels", std::move(levels)},
               {"thresholds", !a.no_thresholds},
               {"events", !a.no_events}};
  auto client = connect(g);
  if (!client) return kExitError;
  return print_rules(g, client->add_rule(rule));
}

int run_rules_line(const GlobalOptions& g, const std::string& line) {
  auto client = connect(g);
  if (!client) return kExitError;
  return print_rules(g, client->add_rule_line(line));
}

int run_rules_remove(const GlobalOptions& g, const std::string& path) {
  auto client = connect(g);
  if (!client) return kExitError;
  return print_rules(g, client->remove_rule(absolute_path(path)));
}

int run_doctor(const GlobalOptions& g) {
  auto client = connect(g);
  if (!client) return kExitError;
  auto reply = client->doctor();
  if (!reply) return report(reply.error());
  if (g.json)
    print_json(*reply);
  else
    print_text(format_doctor(*reply));
  return kExitOk;
}

}  // namespace storwatch::cli
