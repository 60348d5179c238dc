// Result<T>: the one error idiom of storwatch, shared by the daemon, the client library and
// the CLI. An Error carries a std::error_code (errno values use std::system_category(); protocol
// errors a Varlink error name) and a short context string for the human reading the message.
// tl::expected stands in for std::expected (C++23); this alias keeps the choice in one place.
#pragma once

#include <string>
#include <system_error>
#include <utility>

#include <tl/expected.hpp>

namespace storwatch {

class Error {
 public:
  Error() = default;
  Error(std::error_code code, std::string context) : code_(code), context_(std::move(context)) {}

  // An error from errno, e.g. Error::from_errno(errno, "opening /proc/self/mountinfo").
  static Error from_errno(int err, std::string context) {
    return Error(std::error_code(err, std::system_category()), std::move(context));
  }
  // A protocol-level error with a Varlink error name (io.storwatch.InvalidRule, ...).
  static Error named(std::string varlink_name, std::string context) {
    Error e(std::make_error_code(std::errc::protocol_error), std::move(context));
    e.name_ = std::move(varlink_name);
    return e;
  }
  // Invalid input (bad rule, bad config): EINVAL with the reason as context.
  static Error invalid(std::string context) {
    return Error(std::make_error_code(std::errc::invalid_argument), std::move(context));
  }

  const std::error_code& code() const { return code_; }
  const std::string& context() const { return context_; }
  // The Varlink error name when the error came from (or is meant for) the protocol, else empty.
  const std::string& name() const { return name_; }
  int errno_value() const { return code_.category() == std::system_category() ? code_.value() : 0; }

  // "context: message" as printed to users.
  std::string message() const {
    if (!name_.empty()) return context_.empty() ? name_ : context_;
    if (context_.empty()) return code_.message();
    if (code_ == std::errc::invalid_argument) return context_;
    return context_ + ": " + code_.message();
  }

 private:
  std::error_code code_;
  std::string context_;
  std::string name_;
};

template <class T = void>
using Result = tl::expected<T, Error>;

inline tl::unexpected<Error> fail(Error e) { return tl::unexpected<Error>(std::move(e)); }
inline tl::unexpected<Error> fail_errno(int err, std::string context) {
  return tl::unexpected<Error>(Error::from_errno(err, std::move(context)));
}
inline tl::unexpected<Error> fail_invalid(std::string context) {
  return tl::unexpected<Error>(Error::invalid(std::move(context)));
}

}  // namespace storwatch
