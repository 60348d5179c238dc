#include "daemon/source/uevent_source.h"

#include <linux/netlink.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <fstream>

#include "base/log.h"
#include "daemon/source/netlink_datagrams.h"

namespace storwatch::daemon {

namespace {

bool parse_u32(const std::string& s, uint32_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size();
}

bool safe_name(const std::string& name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  for (char c : name)
    if (c == '/' || c == '\0') return false;
  return true;
}

}  // namespace

Result<Uevent> parse_uevent(std::string_view msg) {
  // Header up to the first NUL: "ACTION@DEVPATH".
  size_t nul = msg.find('\0');
  std::string_view head = msg.substr(0, nul);
  size_t at = head.find('@');
  if (at == std::string_view::npos || at == 0 || at + 1 >= head.size() || head[at + 1] != '/')
    return fail_errno(EINVAL, "uevent: no ACTION@DEVPATH header");
  Uevent u;
  u.action = std::string(head.substr(0, at));
  u.devpath = std::string(head.substr(at + 1));
  for (char c : u.action)
    if (!(c >= 'a' && c <= 'z') && c != '_') return fail_errno(EINVAL, "uevent: bad action");
  std::string_view rest = nul == std::string_view::npos ? std::string_view{} : msg.substr(nul + 1);
  while (!rest.empty()) {
    size_t end = rest.find('\0');
    std::string_view kv = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    if (kv.empty()) continue;
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) return fail_errno(EINVAL, "uevent: a field without KEY=");
    u.env.insert_or_assign(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  if (auto it = u.env.find("ACTION"); it != u.env.end() && it->second != u.action)
    return fail_errno(EINVAL, "uevent: ACTION does not match the header");
  return u;
}

std::optional<Event> uevent_to_event(const Uevent& u, std::optional<uint64_t> size_bytes) {
  if (u.get("SUBSYSTEM") != "block") return std::nullopt;
  uint32_t maj = 0, min = 0;
  if (!parse_u32(u.get("MAJOR"), maj) || !parse_u32(u.get("MINOR"), min)) return std::nullopt;
  std::string name = u.get("DEVNAME");
  if (name.empty()) {
    size_t slash = u.devpath.rfind('/');
    name = u.devpath.substr(slash == std::string::npos ? 0 : slash + 1);
  }
  Event e;
  e.source = "uevent";
  e.severity = Severity::info;
  e.device = DeviceRef{maj, min, name};
  e.detail["devname"] = name;
  if (auto t = u.get("DEVTYPE"); !t.empty()) e.detail["devtype"] = t;
  if (auto s = u.get("DISKSEQ"); !s.empty()) {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc{} && p == s.data() + s.size()) e.detail["diskseq"] = v;
  }
  if (u.action == "add") {
    e.type = "device.added";
    if (size_bytes) e.detail["size"] = *size_bytes;
  } else if (u.action == "remove") {
    e.type = "device.removed";
  } else if (u.action == "change") {
    if (u.get("RESIZE") == "1") {
      e.type = "device.resized";
      if (size_bytes) e.detail["size"] = *size_bytes;
    } else {
      e.type = "device.changed";
      e.detail["media_change"] = u.get("DISK_MEDIA_CHANGE") == "1";
    }
  } else {
    return std::nullopt;
  }
  return e;
}

std::optional<uint64_t> block_device_size(const std::string& name) {
  if (!safe_name(name)) return std::nullopt;
  std::ifstream in("/sys/class/block/" + name + "/size");
  uint64_t sectors = 0;
  if (!(in >> sectors)) return std::nullopt;
  return sectors * 512;
}

Result<std::unique_ptr<UeventSource>> UeventSource::create(EventLoop& loop, OnEvent on_event) {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT));
  if (!fd) return fail_errno(errno, "uevent netlink socket");
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = 1;  // the kernel's own uevents (udev re-sends on group 2)
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0)
    return fail_errno(errno, "binding the uevent netlink socket");
  // A larger buffer against bursts (many partitions at once); without CAP_NET_ADMIN the
  // unforced call is capped by net.core.rmem_max, which is fine.
  int size = 4 << 20;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  std::unique_ptr<UeventSource> s(new UeventSource(loop, std::move(on_event)));
  s->fd_ = std::move(fd);
  auto r = loop.add_fd(s->fd_.get(), EPOLLIN, [p = s.get()](uint32_t) { p->on_readable(); });
  if (!r) return fail(r.error());
  return s;
}

UeventSource::~UeventSource() {
  if (fd_) loop_.remove_fd(fd_.get());
}

void UeventSource::on_readable() {
  uint64_t dropped = drain_netlink(fd_.get(), [this](const NetlinkDatagram& d) {
    ++messages_;
    if (d.sender_port != 0 || d.truncated) {
      ++bad_;
      return;
    }
    auto u = parse_uevent(d.data);
    if (!u) {
      ++bad_;
      return;
    }
    std::optional<uint64_t> size;
    if (u->action == "add" || (u->action == "change" && u->get("RESIZE") == "1")) size = block_device_size(u->get("DEVNAME"));
    if (auto e = uevent_to_event(*u, size); e && on_event_) on_event_(std::move(*e));
  });
  if (dropped != 0) {
    overruns_ += dropped;
    log_warning("uevent: the kernel dropped device events (socket buffer full)");
  }
}

}  // namespace storwatch::daemon
