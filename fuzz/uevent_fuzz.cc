// libFuzzer target for the uevent parser: the input is one netlink datagram as UeventSource
// receives it (parse_uevent), and what parses goes on as the source sends it: uevent_to_event
// (with and without a size), and the event through what the daemon does with it: fold key, the
// --print line, the bus's JSON, which must read back. The parser's promises are
// checked: a parsed uevent has a lowercase action and a devpath starting with '/', and its
// ACTION=, when present, matches the header. Nothing here may crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

#include <storwatch/event.h>

#include "daemon/bus/bus.h"
#include "daemon/bus/folder.h"
#include "daemon/source/uevent_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto u = storwatch::daemon::parse_uevent(input);
  if (!u) return 0;
  if (u->action.empty() || u->devpath.empty() || u->devpath.front() != '/') std::abort();
  for (char c : u->action)
    if (!(c >= 'a' && c <= 'z') && c != '_') std::abort();
  if (auto it = u->env.find("ACTION"); it != u->env.end() && it->second != u->action) std::abort();
  for (auto size_bytes : {std::optional<uint64_t>{}, std::optional<uint64_t>{uint64_t{1} << 40}}) {
    auto e = storwatch::daemon::uevent_to_event(*u, size_bytes);
    if (!e) continue;
    if (!e->device || e->type.rfind("device.", 0) != 0) std::abort();
    (void)storwatch::daemon::Folder::fold_key(*e);
    (void)storwatch::event_to_line(*e);
    auto bus = storwatch::daemon::make_bus_event(*e);
    auto back = storwatch::event_from_json(nlohmann::json::parse(bus->json, nullptr, false));
    if (!back) std::abort();  // the daemon's own JSON must read back
  }
  return 0;
}
