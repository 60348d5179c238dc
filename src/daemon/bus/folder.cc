#include "daemon/bus/folder.h"

#include "proto/vocabulary.h"

namespace storwatch::daemon {

Folder::Folder(EventLoop& loop, std::function<void(Event)> publish, Options options)
    : loop_(loop), publish_(std::move(publish)), options_(options) {}

Folder::~Folder() {
  for (auto& [k, w] : windows_) loop_.cancel_timer(w.timer);
}

std::string Folder::fold_key(const Event& e) {
  const EventTypeInfo* t = find_event_type(e.type);
  if (!t || t->fold_key.find("never") != std::string_view::npos) return {};
  std::string key = e.type;
  key += '|';
  if (e.fs) key += e.fs->dev();
  key += '|';
  if (e.device) key += e.device->dev();
  // The fold key lists fields as "fs, detail.kind, process.pid".
  std::string_view spec = t->fold_key;
  while (!spec.empty()) {
    size_t comma = spec.find(',');
    std::string_view f = spec.substr(0, comma);
    while (!f.empty() && f.front() == ' ') f.remove_prefix(1);
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    key += '|';
    if (f.rfind("detail.", 0) == 0) {
      auto it = e.detail.find(std::string(f.substr(7)));
      if (it != e.detail.end()) key += it->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else if (f == "process.pid") {
      if (e.process) key += std::to_string(e.process->pid);
    } else if (f == "process.uid") {
      if (e.process) key += std::to_string(e.process->uid);
    }
  }
  return key;
}

void Folder::offer(Event e) {
  std::string key = fold_key(e);
  if (key.empty() || options_.window.count() <= 0) {
    publish_(std::move(e));
    return;
  }
  if (e.first_time == Event::Time{}) e.first_time = e.time != Event::Time{} ? e.time : loop_.clock().wall_now();
  if (e.last_time == Event::Time{}) e.last_time = e.first_time;
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    if (windows_.size() >= options_.max_keys) {
      publish_(std::move(e));
      return;
    }
    // First occurrence: out at once, and a window opens for the ones that follow.
    Window& w = windows_[key];
    w.timer = loop_.add_timer_after(options_.window, [this, key] { close(key); });
    publish_(std::move(e));
    return;
  }
  Window& w = it->second;
  if (w.count == 0) w.first = e.first_time;
  w.count += e.count;
  w.last = e.last_time;
  w.pending = std::move(e);
}

void Folder::close(const std::string& key) {
  auto it = windows_.find(key);
  if (it == windows_.end()) return;
  Window& w = it->second;
  if (w.count == 0) {
    windows_.erase(it);
    return;
  }
  Event e = std::move(w.pending);
  e.count = w.count;
  e.first_time = w.first;
  e.last_time = w.last;
  e.time = Event::Time{};  // stamped when published
  w.count = 0;
  w.pending = Event{};
  // The flood may go on: keep folding into a new window.
  w.timer = loop_.add_timer_after(options_.window, [this, key] { close(key); });
  publish_(std::move(e));
}

void Folder::flush_all() {
  std::vector<std::string> keys;
  for (auto& [k, w] : windows_) keys.push_back(k);
  for (const auto& k : keys) {
    auto it = windows_.find(k);
    if (it == windows_.end()) continue;
    loop_.cancel_timer(it->second.timer);
    if (it->second.count > 0) {
      Event e = std::move(it->second.pending);
      e.count = it->second.count;
      e.first_time = it->second.first;
      e.last_time = it->second.last;
      e.time = Event::Time{};
      windows_.erase(it);
      publish_(std::move(e));
    } else {
      windows_.erase(it);
    }
  }
}

}  // namespace storwatch::daemon
