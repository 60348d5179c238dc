// Reading a netlink socket from the event loop: the datagram loop shared by the netlink sources
// (uevents, quota warnings).
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <string_view>

namespace storwatch::daemon {

struct NetlinkDatagram {
  std::string_view data;
  uint32_t sender_port = 0;  // 0: the kernel
  bool truncated = false;    // larger than the buffer; `data` holds its start
};

// Receives datagrams from the non-blocking `fd` until none is left, at most `max_per_turn` so a
// flood cannot starve the rest of the loop (epoll wakes the caller again). Returns how many
// times the kernel reported that datagrams were dropped (ENOBUFS: the socket buffer was full).
uint64_t drain_netlink(int fd, const std::function<void(const NetlinkDatagram&)>& on_datagram,
                       int max_per_turn = 256);

}  // namespace storwatch::daemon
