#include "daemon/source/quota_netlink.h"

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>

#include "base/log.h"
#include "daemon/source/netlink_datagrams.h"

namespace storwatch::daemon {

namespace {

constexpr const char* kFamily = "VFS_DQUOT";
constexpr const char* kGroup = "events";

Result<UniqueFd> open_genl() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_GENERIC));
  if (!fd) return fail_errno(errno, "generic netlink socket");
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0)
    return fail_errno(errno, "binding a generic netlink socket");
  return fd;
}

// The controller handles the request inside sendmsg(), so its reply is queued when send()
// returns: a non-blocking read gets it without waiting.
Result<QuotaFamily> resolve_on(int fd) {
  std::string req = genl_getfamily_request(kFamily, 1);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return fail_errno(errno, "asking the generic netlink controller for VFS_DQUOT");
  char buf[8192];
  ssize_t n;
  do {
    n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail_errno(errno, "reading the generic netlink controller's reply");
  auto msgs = split_netlink_messages(std::string_view(buf, static_cast<size_t>(n)));
  if (!msgs) return fail(msgs.error());
  if (msgs->empty()) return fail_errno(EINVAL, "genetlink: an empty reply");
  auto f = parse_genl_family(msgs->front(), kGroup);
  if (!f) {
    if (f.error().errno_value() == ENOENT)
      return fail_errno(ENOENT,
                        "the kernel has no VFS_DQUOT generic netlink family (CONFIG_QUOTA_NETLINK_INTERFACE unset, "
                        "or storwatchd runs outside the initial network namespace)");
    return fail(f.error());
  }
  if (!f->group) return fail_errno(ENOENT, "the VFS_DQUOT family has no \"events\" multicast group");
  return QuotaFamily{f->id, *f->group};
}

}  // namespace

Result<QuotaFamily> resolve_quota_family() {
  auto fd = open_genl();
  if (!fd) return fail(fd.error());
  return resolve_on(fd->get());
}

Result<std::unique_ptr<QuotaNetlinkSource>> QuotaNetlinkSource::create(EventLoop& loop, OnWarning on_warning) {
  auto fd = open_genl();
  if (!fd) return fail(fd.error());
  auto family = resolve_on(fd->get());
  if (!family) return fail(family.error());
  // NETLINK_ADD_MEMBERSHIP, not bind()'s nl_groups bitmask, which reaches only groups 1..32.
  uint32_t group = family->group_id;
  if (::setsockopt(fd->get(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0)
    return fail_errno(errno, "joining the VFS_DQUOT \"events\" multicast group");
  std::unique_ptr<QuotaNetlinkSource> s(new QuotaNetlinkSource(loop, std::move(on_warning)));
  s->fd_ = std::move(*fd);
  s->family_ = *family;
  auto r = loop.add_fd(s->fd_.get(), EPOLLIN, [p = s.get()](uint32_t) { p->on_readable(); });
  if (!r) return fail(r.error());
  return s;
}

QuotaNetlinkSource::~QuotaNetlinkSource() {
  if (fd_) loop_.remove_fd(fd_.get());
}

void QuotaNetlinkSource::on_readable() {
  uint64_t dropped = drain_netlink(fd_.get(), [this](const NetlinkDatagram& d) {
    if (d.truncated) {
      ++malformed_;
      last_error_ = "a datagram larger than 8 KiB";
      return;
    }
    auto msgs = split_netlink_messages(d.data);
    if (!msgs) {
      ++malformed_;
      last_error_ = msgs.error().message();
      log_debug("{}", last_error_);
      return;
    }
    for (std::string_view m : *msgs) {
      auto w = parse_quota_message(m, family_.family_id);
      if (!w) {
        ++malformed_;
        last_error_ = w.error().message();
        log_debug("{}", last_error_);
        continue;
      }
      ++warnings_;
      if (d.sender_port != 0) ++user_;
      if (on_warning_) on_warning_(*w);
    }
  });
  if (dropped != 0) {
    overruns_ += dropped;
    log_warning("quota netlink: the kernel dropped quota warnings (socket buffer full)");
  }
}

}  // namespace storwatch::daemon
