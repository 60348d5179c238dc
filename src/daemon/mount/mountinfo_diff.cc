#include "daemon/mount/mountinfo_diff.h"

#include <charconv>
#include <functional>
#include <string>

namespace storwatch::daemon {

Result<MountChanges> MountinfoDiff::update(std::string_view text) {
  MountChanges out;
  out.source = "mountinfo";
  out.full = !started_;
  ++generation_;
  last_parsed_ = 0;
  auto failed = [&](const Error& e, size_t line_no) {
    lines_.clear();
    started_ = false;
    return fail_invalid("mountinfo line " + std::to_string(line_no) + ": " + e.context());
  };
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.empty()) continue;
    uint64_t id = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), id);
    if (ec != std::errc() || end == line.data() + line.size() || *end != ' ')
      return failed(Error::invalid("bad mount id"), line_no);
    uint64_t hash = std::hash<std::string_view>{}(line);
    auto it = lines_.find(id);
    if (it != lines_.end() && it->second.hash == hash && it->second.generation != generation_) {
      it->second.generation = generation_;
      continue;
    }
    ++last_parsed_;
    auto m = parse_mountinfo_line(line);
    if (!m) return failed(m.error(), line_no);
    if (it == lines_.end()) {
      out.attached.push_back(*m);
      lines_.emplace(id, Line{hash, generation_, std::move(*m)});
      continue;
    }
    Line& l = it->second;
    const MountEntry& old_m = l.entry;
    if (l.generation == generation_) {
      // The id twice in one text (the kernel never writes that): keep the later line.
      out.attached.push_back(*m);
    } else if (old_m.mount_point == m->mount_point && old_m.major == m->major && old_m.minor == m->minor) {
      out.changed.emplace_back(old_m, *m);
    } else {
      out.detached.push_back(old_m);
      out.attached.push_back(*m);
    }
    l.hash = hash;
    l.generation = generation_;
    l.entry = std::move(*m);
  }
  for (auto it = lines_.begin(); it != lines_.end();) {
    if (it->second.generation == generation_) {
      ++it;
      continue;
    }
    out.detached.push_back(std::move(it->second.entry));
    it = lines_.erase(it);
  }
  started_ = true;
  return out;
}

}  // namespace storwatch::daemon
