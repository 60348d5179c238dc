// Connection: one Varlink connection from libstorwatch to storwatchd (a Unix stream socket).
// Every read and write is non-blocking and waits with poll() up to a deadline, so a stuck daemon
// costs the caller a timeout, never a hang; the same code serves the blocking calls of Client and
// the pollable stream of Subscription. Private to the client library. Move-only; not thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <storwatch/result.h>

#include "base/fd.h"
#include "proto/varlink.h"

namespace storwatch::client {

// Replies can be large (ListMounts with 100,000 mounts, ListEvents pages), unlike the requests
// the daemon accepts; 16 MiB still bounds what a broken daemon can make us buffer.
inline constexpr size_t kMaxReply = 16 * 1024 * 1024;
// Generous: the daemon answers from memory, but a loaded machine or a big journal query is slow.
inline constexpr std::chrono::milliseconds kCallTimeout{30'000};

using Deadline = std::optional<std::chrono::steady_clock::time_point>;  // nullopt: forever
Deadline deadline_after(std::optional<std::chrono::milliseconds> timeout);

// Waits until fd is ready for `events` (POLLIN, POLLOUT) or the deadline passes: false on timeout.
[[nodiscard]] Result<bool> wait_fd(int fd, short events, Deadline deadline);

class Connection {
 public:
  // Connects to the socket at path. The error names the path; ENOENT/ECONNREFUSED keep their errno
  // so callers can add a hint (the CLI suggests --socket).
  [[nodiscard]] static Result<Connection> open(const std::string& path);

  int fd() const { return fd_.get(); }

  // Writes all of bytes (a NUL-terminated message), waiting for buffer space up to the deadline.
  [[nodiscard]] Result<void> send(std::string_view bytes, Deadline deadline);

  enum class ReadStatus { data, would_block, eof };
  // Reads what the socket has, at most max_bytes, without blocking; complete messages then come
  // from next_message(). Fails when the daemon sends a message over kMaxReply.
  [[nodiscard]] Result<ReadStatus> read_some(size_t max_bytes);
  std::optional<std::string> next_message() { return reader_.next(); }
  // Bytes of an incomplete message (to tell a clean close from one mid-message).
  size_t partial_bytes() const { return reader_.buffered(); }

  // Blocks until one complete reply has arrived and returns it parsed (errors included as
  // Reply::error, for the caller to interpret). EOF and malformed replies are errors.
  [[nodiscard]] Result<proto::Reply> read_reply(Deadline deadline);

 private:
  explicit Connection(UniqueFd fd) : fd_(std::move(fd)) {}

  UniqueFd fd_;
  proto::MessageReader reader_{kMaxReply};
};

// The Error for "the daemon closed the connection" (with a note when it did so mid-message).
Error closed_error(size_t partial_bytes);
// The Error for a reply that is not valid Varlink.
Error malformed_reply_error(const Error& parse_error);
// The Error a Varlink error reply to `method` stands for; the name is kept in Error::name().
Error reply_error(const proto::Reply& reply, std::string_view method);

}  // namespace storwatch::client
