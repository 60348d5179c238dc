#include "client/connection.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

namespace storwatch::client {

using Clock = std::chrono::steady_clock;

Deadline deadline_after(std::optional<std::chrono::milliseconds> timeout) {
  if (!timeout) return std::nullopt;
  return Clock::now() + *timeout;
}

Result<bool> wait_fd(int fd, short events, Deadline deadline) {
  for (;;) {
    int timeout_ms = -1;
    if (deadline) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<decltype(left)>(left, 0, 24 * 3600 * 1000));
    }
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n < 0) {
      // Stop/continue signals can interrupt poll even without handlers: wait for the rest.
      if (errno == EINTR) continue;
      return fail_errno(errno, "waiting for storwatchd");
    }
    if (n == 0) return false;
    // POLLHUP/POLLERR count as ready: the following read or write reports what happened.
    return true;
  }
}

Result<Connection> Connection::open(const std::string& path) {
  const std::string context = fmt::format("cannot connect to storwatchd at {}", path);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty()) return fail_errno(EINVAL, context);
  if (path.size() >= sizeof(addr.sun_path)) return fail_errno(ENAMETOOLONG, context);
  std::memcpy(addr.sun_path, path.data(), path.size());

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno(errno, context);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) < 0) {
    if (errno != EINTR) return fail_errno(errno, context);
    // An interrupted connect goes on in the background: wait for it and read its outcome.
    auto ready = wait_fd(fd.get(), POLLOUT, deadline_after(kCallTimeout));
    if (!ready) return fail(ready.error());
    if (!*ready) return fail_errno(ETIMEDOUT, context);
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) return fail_errno(errno, context);
    if (err != 0) return fail_errno(err, context);
  }
  return Connection(std::move(fd));
}

Result<void> Connection::send(std::string_view bytes, Deadline deadline) {
  while (!bytes.empty()) {
    // MSG_NOSIGNAL: a daemon that went away must be an error here, not a SIGPIPE in the caller.
    ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return fail_errno(errno, "sending to storwatchd");
    auto ready = wait_fd(fd_.get(), POLLOUT, deadline);
    if (!ready) return fail(ready.error());
    if (!*ready) return fail_errno(ETIMEDOUT, "sending to storwatchd");
  }
  return {};
}

Result<Connection::ReadStatus> Connection::read_some(size_t max_bytes) {
  char buf[64 * 1024];
  size_t total = 0;
  while (total < max_bytes) {
    ssize_t n = ::recv(fd_.get(), buf, std::min(sizeof(buf), max_bytes - total), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return fail_errno(errno, "reading from storwatchd");
    }
    if (n == 0) return total > 0 ? ReadStatus::data : ReadStatus::eof;
    if (auto r = reader_.feed(buf, static_cast<size_t>(n)); !r)
      return fail(Error(std::make_error_code(std::errc::message_size),
                        fmt::format("storwatchd sent a message larger than {} MiB", kMaxReply >> 20)));
    total += static_cast<size_t>(n);
  }
  return total > 0 ? ReadStatus::data : ReadStatus::would_block;
}

Result<proto::Reply> Connection::read_reply(Deadline deadline) {
  for (;;) {
    if (auto m = reader_.next()) {
      auto reply = proto::parse_reply(*m);
      if (!reply) return fail(malformed_reply_error(reply.error()));
      return reply;
    }
    auto status = read_some(1 << 20);
    if (!status) return fail(status.error());
    if (*status == ReadStatus::eof) return fail(closed_error(reader_.buffered()));
    if (*status == ReadStatus::data) continue;
    auto ready = wait_fd(fd_.get(), POLLIN, deadline);
    if (!ready) return fail(ready.error());
    if (!*ready) return fail_errno(ETIMEDOUT, "waiting for storwatchd's reply");
  }
}

Error closed_error(size_t partial_bytes) {
  auto code = std::make_error_code(std::errc::connection_reset);
  if (partial_bytes > 0)
    return Error(code, fmt::format("storwatchd closed the connection in the middle of a message "
                                   "({} bytes received)",
                                   partial_bytes));
  return Error(code, "storwatchd closed the connection");
}

Error malformed_reply_error(const Error& parse_error) {
  return Error(std::make_error_code(std::errc::bad_message),
               "malformed reply from storwatchd (" + parse_error.message() + ")");
}

Error reply_error(const proto::Reply& reply, std::string_view method) {
  if ((reply.error == proto::errors::kMethodNotImplemented || reply.error == proto::errors::kMethodNotFound) &&
      !reply.parameters.contains("method")) {
    // The Varlink service errors name the method; fill it in when a daemon leaves it out, so the
    // message says what is missing.
    proto::Reply named = reply;
    named.parameters["method"] = method;
    return Error::named(reply.error, proto::describe_error(named));
  }
  return Error::named(reply.error, proto::describe_error(reply));
}

}  // namespace storwatch::client
