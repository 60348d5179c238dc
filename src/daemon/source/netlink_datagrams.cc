#include "daemon/source/netlink_datagrams.h"

#include <sys/socket.h>

#include <cerrno>

namespace storwatch::daemon {

uint64_t drain_netlink(int fd, const std::function<void(const NetlinkDatagram&)>& on_datagram, int max_per_turn) {
  uint64_t overruns = 0;
  char buf[8192];
  for (int i = 0; i < max_per_turn; ++i) {
    sockaddr_nl from{};
    iovec iov{buf, sizeof buf};
    msghdr mh{};
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    ssize_t n = ::recvmsg(fd, &mh, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        ++overruns;
        continue;
      }
      break;  // EAGAIN or an unexpected error
    }
    size_t len = static_cast<size_t>(n) < sizeof buf ? static_cast<size_t>(n) : sizeof buf;
    on_datagram({std::string_view(buf, len), from.nl_pid, (mh.msg_flags & MSG_TRUNC) != 0});
  }
  return overruns;
}

}  // namespace storwatch::daemon
