// libstorwatch: the C++ client of storwatchd's Varlink interface io.storwatch (docs/protocol.md).
//
// A Client is one connection. Calls are synchronous request/reply; a Subscription is a separate
// connection streaming events, with a pollable fd so applications can put it in their own event
// loop. Neither is thread-safe: use one per thread. No exceptions; every call returns Result, and
// errors the daemon sent keep their Varlink name in Error::name().
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <storwatch/event.h>
#include <storwatch/result.h>

namespace storwatch {

// Where storwatchd listens unless configured otherwise.
inline constexpr std::string_view kDefaultSocketPath = "/run/storwatch/io.storwatch";

// $STORWATCH_SOCKET if set, else kDefaultSocketPath.
std::string default_socket_path();

struct EventFilter {
  std::vector<std::string> types;     // globs, e.g. "space.*"
  std::vector<std::string> fs;        // any path on each filesystem of interest; absolute, since
                                      // the daemon resolves paths in its own working directory
  std::optional<Severity> min_severity;
  std::vector<std::string> subtypes;  // detail.subtype values
};

struct SubscribeOptions {
  EventFilter filter;
  std::optional<uint64_t> after;     // replay journaled events after this seq first
  std::string journal_id;            // with after: the journal the seq belongs to
  bool mounts = false;               // mount table snapshot, then changes
};

class Subscription {
 public:
  Subscription(Subscription&&) noexcept;
  Subscription& operator=(Subscription&&) noexcept;
  ~Subscription();

  // Readable when events may be waiting; call read() then, and drain next().
  int fd() const;
  // Reads what the socket has without blocking. An error means the stream ended (daemon gone,
  // or it replied with an error such as JournalMismatch); it is returned again by every later
  // read(). Events received before the end are still returned by next(): drain them first.
  [[nodiscard]] Result<void> read();
  // The next received event, if any.
  std::optional<Event> next();
  // Blocks up to `timeout` (forever when nullopt) for the next event; nullopt on timeout.
  // Queued events come first; the error that ended the stream only after them.
  [[nodiscard]] Result<std::optional<Event>> wait(std::optional<std::chrono::milliseconds> timeout);

  // From the first reply; journaled_seq() follows later replies that carry a newer one.
  const std::string& journal_id() const;
  uint64_t journaled_seq() const;
  // With SubscribeOptions::mounts: the table as of the subscription (a JSON array of Mount).
  const nlohmann::json& mount_table() const;

 private:
  friend class Client;
  struct Impl;
  explicit Subscription(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Client {
 public:
  [[nodiscard]] static Result<Client> connect(const std::string& socket_path = default_socket_path());
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  // Any method of io.storwatch ("ListRules" or "io.storwatch.ListRules"; also fully qualified
  // org.varlink.service.* methods); the reply parameters. Waits at most 30 s for the reply. After
  // a transport failure (timeout, daemon restarted) the next call connects again.
  [[nodiscard]] Result<nlohmann::json> call(std::string_view method,
                                            const nlohmann::json& parameters = nlohmann::json::object());

  // The typed conveniences below return the reply objects of docs/protocol.md.
  [[nodiscard]] Result<nlohmann::json> list_filesystems(bool all = false);
  [[nodiscard]] Result<nlohmann::json> get_filesystem(const std::string& path);
  [[nodiscard]] Result<nlohmann::json> list_rules();
  // rule: {"path": "/data", "levels": [{"resource": "blocks", "below": "10%"}], ...}
  [[nodiscard]] Result<nlohmann::json> add_rule(const nlohmann::json& rule);
  // One line of the seed syntax: "/data G T 710000 500000", "!/data T", "!/data".
  [[nodiscard]] Result<nlohmann::json> add_rule_line(const std::string& line);
  [[nodiscard]] Result<nlohmann::json> remove_rule(const std::string& path);
  [[nodiscard]] Result<nlohmann::json> list_mounts();
  [[nodiscard]] Result<nlohmann::json> doctor();
  // Journaled events, oldest first: one page (the daemon returns at most 10000 per call).
  struct EventPage {
    std::vector<Event> events;
    // When more may follow: the `after` of the next page.
    std::optional<uint64_t> next_after;
  };
  [[nodiscard]] Result<EventPage> list_events(const EventFilter& filter,
                                                       std::optional<uint64_t> after,
                                                       std::optional<std::string> since,
                                                       std::optional<uint64_t> limit);

  // Opens a second connection for the stream; this Client stays usable for calls.
  [[nodiscard]] Result<Subscription> subscribe(const SubscribeOptions& options);

  const std::string& socket_path() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace storwatch
