// Folder: folds floods of equal events into one event with an exact count, as fanotify does for
// FS_ERROR. Two events are equal when they have the same type, filesystem, device and the values of
// the type's fold-key fields (proto/vocabulary.cc). The first occurrence goes out at once; equal
// ones inside the window that follows are counted and sent as one event (count, first_time,
// last_time) when the window closes, and a continuing flood yields one event per window. Counts are
// never lost: past max_keys open windows, events pass through unfolded. Loop-thread only.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>

#include <storwatch/event.h>

#include "daemon/loop/event_loop.h"

namespace storwatch::daemon {

class Folder {
 public:
  struct Options {
    std::chrono::milliseconds window{1000};
    size_t max_keys = 4096;
  };
  Folder(EventLoop& loop, std::function<void(Event)> publish, Options options);
  ~Folder();

  void offer(Event e);
  // Sends every pending fold now (shutdown).
  void flush_all();
  void set_options(const Options& o) { options_ = o; }
  size_t open_windows() const { return windows_.size(); }

  // The fold key of an event ("" when its type is never folded).
  static std::string fold_key(const Event& e);

 private:
  struct Window {
    Event pending;  // the last occurrence, as template for the folded event
    uint64_t count = 0;  // occurrences since the last event sent
    Event::Time first{}, last{};
    EventLoop::TimerId timer = 0;
  };
  void close(const std::string& key);

  EventLoop& loop_;
  std::function<void(Event)> publish_;
  Options options_;
  std::map<std::string, Window> windows_;
};

}  // namespace storwatch::daemon
