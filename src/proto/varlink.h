// The Varlink wire format (varlink.org): each message is one JSON object followed by a NUL byte,
// over a Unix stream socket. MessageReader splits a byte stream into messages with a size bound;
// the parse/encode functions turn messages into calls and replies. Pure; thread-compatible.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <storwatch/result.h>

namespace storwatch::proto {

inline constexpr std::string_view kInterface = "io.storwatch";
inline constexpr size_t kDefaultMaxMessage = 64 * 1024;

// The interface description (src/proto/io.storwatch.varlink), for GetInterfaceDescription.
std::string_view interface_description();

struct Call {
  std::string method;  // fully qualified: "io.storwatch.Subscribe"
  nlohmann::json parameters = nlohmann::json::object();
  bool more = false;
  bool oneway = false;
  bool upgrade = false;
};

struct Reply {
  nlohmann::json parameters = nlohmann::json::object();
  bool continues = false;
  std::string error;  // Varlink error name; empty on success
};

// Accumulates bytes and yields complete messages (without the NUL). A message longer than
// max_message fails feed() with LimitExceeded: the peer is then dropped, never buffered forever.
class MessageReader {
 public:
  explicit MessageReader(size_t max_message = kDefaultMaxMessage) : max_(max_message) {}
  [[nodiscard]] Result<void> feed(const char* data, size_t n);
  std::optional<std::string> next();
  size_t buffered() const { return partial_.size(); }

 private:
  size_t max_;
  std::string partial_;
  std::deque<std::string> ready_;
};

[[nodiscard]] Result<Call> parse_call(std::string_view message);
[[nodiscard]] Result<Reply> parse_reply(std::string_view message);
std::string encode_call(const Call& c);    // with the trailing NUL
std::string encode_reply(const Reply& r);  // with the trailing NUL
std::string encode_error(std::string_view name, const nlohmann::json& parameters);

// Error names of the interface (io.storwatch.*) and the Varlink service (org.varlink.service.*).
namespace errors {
inline constexpr const char* kPermissionDenied = "io.storwatch.PermissionDenied";
inline constexpr const char* kInvalidRule = "io.storwatch.InvalidRule";
inline constexpr const char* kNoSuchFilesystem = "io.storwatch.NoSuchFilesystem";
inline constexpr const char* kLimitExceeded = "io.storwatch.LimitExceeded";
inline constexpr const char* kJournalMismatch = "io.storwatch.JournalMismatch";
inline constexpr const char* kInvalidParameter = "io.storwatch.InvalidParameter";
inline constexpr const char* kInterfaceNotFound = "org.varlink.service.InterfaceNotFound";
inline constexpr const char* kMethodNotFound = "org.varlink.service.MethodNotFound";
inline constexpr const char* kMethodNotImplemented = "org.varlink.service.MethodNotImplemented";
inline constexpr const char* kServiceInvalidParameter = "org.varlink.service.InvalidParameter";
inline constexpr const char* kExpectedMore = "org.varlink.service.ExpectedMore";
}  // namespace errors

// A readable message for a Varlink error reply ("permission denied: changing rules needs root").
std::string describe_error(const Reply& r);

}  // namespace storwatch::proto
