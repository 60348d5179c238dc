// VarlinkTestClient: a raw, non-blocking Varlink client for tests that drive the daemon's loop by
// step() on the same thread. It never blocks: send() writes into the socket buffer, and
// receive() steps the loop until the expected replies arrived (or the server hung up). Replies
// are parsed JSON objects, one per NUL-terminated message. Not thread-safe.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <deque>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/fd.h"

namespace storwatch::test {

class VarlinkTestClient {
 public:
  using Step = std::function<void()>;  // one turn of the loop under test

  explicit VarlinkTestClient(const std::string& socket_path) {
    fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    // A listening Unix socket accepts the connection into its backlog at once, loop or not.
    connected_ = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }

  bool connected() const { return connected_; }
  int fd() const { return fd_.get(); }

  // Writes raw bytes (a message needs its own trailing NUL). Returns false if not all fit.
  bool send_raw(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }
  bool call(const std::string& method, const nlohmann::json& parameters = nlohmann::json::object(),
            bool more = false) {
    nlohmann::json j = {{"method", method}, {"parameters", parameters}};
    if (more) j["more"] = true;
    std::string s = j.dump();
    s.push_back('\0');
    return send_raw(s);
  }

  // Reads whatever the socket holds now, without waiting. Returns the bytes read.
  size_t read_available() {
    size_t total = 0;
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0) {
        eof_ = true;
        break;
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) eof_ = true;
        break;
      }
      total += static_cast<size_t>(n);
      bytes_ += static_cast<size_t>(n);
      partial_.append(buf, static_cast<size_t>(n));
    }
    size_t start = 0;
    for (size_t nul; (nul = partial_.find('\0', start)) != std::string::npos; start = nul + 1)
      messages_.push_back(nlohmann::json::parse(partial_.substr(start, nul - start), nullptr, false));
    partial_.erase(0, start);
    return total;
  }

  // Steps the loop and reads until `count` messages are waiting (or EOF, or `max_turns` turns).
  bool wait_for(size_t count, const Step& step, int max_turns = 200) {
    for (int i = 0; i < max_turns; ++i) {
      read_available();
      if (messages_.size() >= count || eof_) break;
      step();
    }
    read_available();
    return messages_.size() >= count;
  }
  // Steps until the server closed the connection.
  bool wait_for_eof(const Step& step, int max_turns = 200) {
    for (int i = 0; i < max_turns && !eof_; ++i) {
      step();
      read_available();
    }
    return eof_;
  }

  // The next message received (removes it); a discarded json when there is none.
  nlohmann::json next() {
    if (messages_.empty()) return nlohmann::json(nlohmann::json::value_t::discarded);
    nlohmann::json j = std::move(messages_.front());
    messages_.pop_front();
    return j;
  }
  std::deque<nlohmann::json>& messages() { return messages_; }
  bool eof() const { return eof_; }
  size_t bytes_received() const { return bytes_; }

 private:
  UniqueFd fd_;
  bool connected_ = false;
  bool eof_ = false;
  size_t bytes_ = 0;
  std::string partial_;
  std::deque<nlohmann::json> messages_;
};

}  // namespace storwatch::test
