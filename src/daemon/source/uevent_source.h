// UeventSource: the kernel's device events (NETLINK_KOBJECT_UEVENT, multicast group 1) turned into
// device.* events for block devices:
//   add -> device.added, remove -> device.removed,
//   change with RESIZE=1 -> device.resized (detail.size in bytes, /sys/class/block/NAME/size * 512),
//   change with DISK_MEDIA_CHANGE=1 -> device.changed {media_change: true},
//   other change -> device.changed {media_change: false}.
// Other subsystems and actions (bind, move, online...) are ignored. Only messages sent by the
// kernel (netlink port 0) count: root could send anything to the group.
//
// What a loop device gives (kernel 6.18): attach `change`, resize (`losetup -c`) `change` RESIZE=1,
// detach `change` then `change` DISK_MEDIA_CHANGE=1; add/remove only when a loop device is created
// or deleted (/dev/loop-control).
//
// Owned by the manager; callbacks run on the loop thread. Loop-thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <storwatch/event.h>

#include "base/fd.h"
#include "base/result.h"
#include "daemon/loop/event_loop.h"

namespace storwatch::daemon {

// One kernel uevent: "ACTION@DEVPATH\0KEY=VALUE\0...".
struct Uevent {
  std::string action;
  std::string devpath;
  std::map<std::string, std::string> env;
  std::string get(const std::string& key) const {
    auto it = env.find(key);
    return it == env.end() ? std::string{} : it->second;
  }
};

// Parses one message. Fails (EINVAL with the reason) on anything that is not a kernel uevent
// (udev's "libudev" messages included). Pure, safe on any input (fuzzed).
[[nodiscard]] Result<Uevent> parse_uevent(std::string_view msg);

// The device event a uevent stands for, or nullopt (not a block device, an action we do not
// report, no MAJOR/MINOR). `size_bytes` is the device's size when known (the caller reads sysfs);
// it is reported for added and resized devices.
std::optional<Event> uevent_to_event(const Uevent& u, std::optional<uint64_t> size_bytes);

class UeventSource {
 public:
  using OnEvent = std::function<void(Event)>;
  // Opens and binds the socket. Fails with the errno of socket() or bind(); the caller reports
  // source.unavailable with the reason.
  [[nodiscard]] static Result<std::unique_ptr<UeventSource>> create(EventLoop& loop, OnEvent on_event);
  ~UeventSource();
  UeventSource(const UeventSource&) = delete;
  UeventSource& operator=(const UeventSource&) = delete;

  uint64_t messages() const { return messages_; }
  uint64_t bad_messages() const { return bad_; }
  // Times the socket's buffer overflowed (ENOBUFS): events were lost.
  uint64_t overruns() const { return overruns_; }

 private:
  UeventSource(EventLoop& loop, OnEvent on_event) : loop_(loop), on_event_(std::move(on_event)) {}
  void on_readable();

  EventLoop& loop_;
  OnEvent on_event_;
  UniqueFd fd_;
  uint64_t messages_ = 0, bad_ = 0, overruns_ = 0;
};

// /sys/class/block/NAME/size * 512, or nullopt.
std::optional<uint64_t> block_device_size(const std::string& name);

}  // namespace storwatch::daemon
