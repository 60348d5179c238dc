#include "daemon/sink/event_fields.h"

#include <fmt/format.h>

namespace storwatch::daemon {

namespace {

std::string field_key(std::string_view k) {
  std::string out;
  for (char c : k) {
    if (c >= 'a' && c <= 'z') out.push_back(static_cast<char>(c - 'a' + 'A'));
    else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) out.push_back(c);
    else out.push_back('_');
  }
  return out;
}

std::string scalar(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> event_fields(const Event& e) {
  std::vector<std::pair<std::string, std::string>> f;
  nlohmann::json j = event_to_json(e);
  f.emplace_back("STORWATCH_TYPE", e.type);
  f.emplace_back("STORWATCH_SEQ", std::to_string(e.seq));
  f.emplace_back("STORWATCH_JOURNAL_ID", e.journal_id);
  f.emplace_back("STORWATCH_SEVERITY", std::string(severity_name(e.severity)));
  f.emplace_back("STORWATCH_SOURCE", e.source);
  if (j.contains("time") && j["time"].is_string()) f.emplace_back("STORWATCH_TIME", j["time"].get<std::string>());
  f.emplace_back("STORWATCH_COUNT", std::to_string(e.count));
  if (e.fs) {
    f.emplace_back("STORWATCH_FS_DEV", e.fs->dev());
    if (!e.fs->fstype.empty()) f.emplace_back("STORWATCH_FS_TYPE", e.fs->fstype);
    if (!e.fs->source.empty()) f.emplace_back("STORWATCH_FS_SOURCE", e.fs->source);
    if (!e.fs->uuid.empty()) f.emplace_back("STORWATCH_FS_UUID", e.fs->uuid);
    if (!e.fs->mounts.empty()) f.emplace_back("STORWATCH_FS_MOUNT", e.fs->mounts.front());
  }
  if (e.device) {
    if (!e.device->name.empty()) f.emplace_back("STORWATCH_DEVICE", e.device->name);
    f.emplace_back("STORWATCH_DEVICE_DEV", e.device->dev());
  }
  if (e.process) {
    f.emplace_back("STORWATCH_PID", std::to_string(e.process->pid));
    if (e.process->uid >= 0) f.emplace_back("STORWATCH_UID", std::to_string(e.process->uid));
    if (!e.process->comm.empty()) f.emplace_back("STORWATCH_COMM", e.process->comm);
    if (!e.process->cgroup.empty()) f.emplace_back("STORWATCH_CGROUP", e.process->cgroup);
  }
  if (e.detail.is_object())
    for (const auto& [k, v] : e.detail.items())
      if (v.is_primitive() && !v.is_null()) f.emplace_back("STORWATCH_DETAIL_" + field_key(k), scalar(v));
  return f;
}

std::string message_id(std::string_view type) {
  using u128 = unsigned __int128;
  const u128 prime = (u128(1) << 88) | 0x13b;
  u128 h = (u128(0x6c62272e07bb0142ull) << 64) | 0x62b821756295c58dull;
  auto mix = [&](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= prime;
    }
  };
  mix("storwatch:");
  mix(type);
  return fmt::format("{:016x}{:016x}", static_cast<uint64_t>(h >> 64), static_cast<uint64_t>(h));
}

}  // namespace storwatch::daemon
