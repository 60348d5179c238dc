// libFuzzer target for the quota netlink parsers: the input is one datagram as QuotaNetlinkSource
// receives it. It is split into messages (split_netlink_messages); each goes through
// parse_quota_message (family id 17, as resolved on the test kernel) and, as the reply read at
// start, parse_genl_family. What parses goes on as the source sends it: quota_warning_event, the
// fold key, the --print line and the bus's JSON, which must read back. The parser's promises are
// checked: a parsed warning has a known quota type and warning kind, and the event says which.
// Nothing here may crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <storwatch/event.h>

#include "daemon/bus/bus.h"
#include "daemon/bus/folder.h"
#include "daemon/source/quota_message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace storwatch::daemon;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto msgs = split_netlink_messages(input);
  if (!msgs) {
    (void)parse_quota_message(input, 17);  // the parser alone must cope with any bytes too
    return 0;
  }
  for (std::string_view m : *msgs) {
    (void)parse_genl_family(m, "events");
    auto w = parse_quota_message(m, 17);
    if (!w) continue;
    if (!quota_type_name(w->qtype) || !quota_warning_name(w->warning)) std::abort();
    auto e = quota_warning_event(*w);
    if (e.type != "quota.warning" || e.detail["warning"] != quota_warning_name(w->warning) ||
        e.detail["quota_type"] != quota_type_name(w->qtype) || !e.process)
      std::abort();
    (void)Folder::fold_key(e);
    (void)storwatch::event_to_line(e);
    auto bus = make_bus_event(e);
    auto back = storwatch::event_from_json(nlohmann::json::parse(bus->json, nullptr, false));
    if (!back) std::abort();  // the daemon's own JSON must read back
  }
  return 0;
}
