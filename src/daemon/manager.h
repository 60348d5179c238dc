// Manager: owns the daemon's parts and wires them (no static registries: every source and sink is
// listed here). It implements the io.storwatch Service for the server. step() runs one loop turn
// so tests drive the whole daemon without sleeping.
// Loop-thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "base/clock.h"
#include "base/result.h"
#include "daemon/bus/bus.h"
#include "daemon/bus/folder.h"
#include "daemon/journal/journal.h"
#include "daemon/source/replay_source.h"
#include "daemon/config/config.h"
#include "daemon/loop/event_loop.h"
#include "daemon/mount/inventory.h"
#include "daemon/mount/mount_source.h"
#include "daemon/mount/mount_table.h"
#include "daemon/mount/mount_tracker.h"
#include "daemon/server/server.h"
#include "daemon/sink/metrics_server.h"
#include "daemon/sink/sink_runner.h"
#include "daemon/source/block_error_merger.h"
#include "daemon/source/bpf_block_errors.h"
#include "daemon/source/enospc_source.h"
#include "daemon/source/fanotify_errors.h"
#include "daemon/source/fs_error_correlator.h"
#include "daemon/source/kmsg_source.h"
#include "daemon/source/quota_netlink.h"
#include "daemon/source/space_monitor.h"
#include "daemon/source/statfs_runner.h"
#include "daemon/source/sysfs_errors.h"
#include "daemon/source/uevent_source.h"
#include "daemon/state/state_db.h"
#include "daemon/view/client_view.h"
#include "daemon/view/mount_ns_view.h"

namespace storwatch::daemon {

class Manager final : public Service {
 public:
  struct Deps {
    const Clock* clock = nullptr;                 // default: a RealClock
    std::shared_ptr<StatfsProbe> statfs;          // default: RealStatfsProbe
    std::unique_ptr<MountTable> mount_table;      // default: /proc/self/mountinfo
    std::optional<UniqueFd> listener;             // default: bind config.socket
    // The filesystem-error sources (fanotify FAN_FS_ERROR, sysfs counters, /dev/kmsg). Default:
    // on with the real mount table, off with a given one (its mount points are not on this machine).
    std::optional<bool> fs_error_sources;
  };
  struct Options {
    bool print = false;  // print each event as a line on stdout
  };

  [[nodiscard]] static Result<std::unique_ptr<Manager>> create(Config config, Options options, Deps deps);
  ~Manager() override;

  EventLoop& loop() { return *loop_; }
  Bus& bus() { return *bus_; }
  size_t step(std::chrono::milliseconds max_wait) { return loop_->step(max_wait); }
  // Applies a new configuration (SIGHUP). The socket and state directory stay as they are.
  void reload(Config config);
  // Hands an event from a source to folding and then the bus. Never fails the caller; a failure to
  // reserve sequence numbers is logged and the event dropped and counted.
  void emit(Event e);
  // Clean exit: sends pending folds, waits (bounded) for the journal, and records that no number
  // was lost, so the next start reports no gap.
  void shutdown();
  Journal& journal() { return *journal_; }
  // Each configured sink's state (Doctor, metrics).
  std::vector<SinkStatus> sink_status() const;
  // Asks the mount source to look now (normally the kernel wakes it).
  void refresh_mounts();
  const MountSource& mount_source() const { return *mount_source_; }

  // Service
  Reply<nlohmann::json> call(const Peer& peer, const std::string& method,
                             const nlohmann::json& parameters) override;
  Reply<Stream> subscribe(const Peer& peer, const nlohmann::json& parameters) override;
  nlohmann::json stream_reply_fields() const override;

 private:
  Manager(Config config, Options options);
  [[nodiscard]] Result<void> start(Deps deps);
  void apply_policy();
  void on_mount_changes(Result<MountChanges> changes);
  void sync_space();
  SpaceMonitor::Plan plan_for(const Filesystem& fs) const;
  std::vector<const Rule*> rules_for(const Filesystem& fs) const;
  const Filesystem* resolve_path(const std::string& path) const;
  bool is_watched(const MountEntry& m) const;
  void start_fs_errors();
  void sync_fs_errors();
  bool error_watched(const Filesystem& fs) const;
  std::optional<std::string> resolve_device(const std::string& name) const;
  // Block-layer errors (eBPF block_rq_error, else the kmsg fallback) and device events (uevents).
  void start_block_sources();
  void start_bpf_block_errors();
  void on_block_line(const BlockErrorLine& b);
  void on_block_report(const BlockErrorMerger::Report& r);
  void emit_block_errors(std::vector<BlockErrorMerger::Merged> ranges);
  void arm_block_timer();
  std::optional<FsRef> block_fs(const std::string& name, uint64_t sector) const;
  const Filesystem* find_dev(const std::string& dev) const;
  // ENOSPC/EDQUOT from the eBPF syscall-exit probe ([sources] ebpf_enospc).
  void start_enospc();
  // Quota warnings (generic netlink VFS_DQUOT).
  void start_quota();
  void on_quota_warning(const QuotaWarning& w);
  // The filesystem on a kernel block device name ("loop1", "sda2"), among those `accept` allows
  // (all when null).
  const Filesystem* filesystem_on_device(const std::string& name,
                                         bool (Manager::*accept)(const Filesystem&) const) const;
  void report_unavailable(const std::string& source, const std::string& name, const std::string& reason);

  nlohmann::json filesystem_json(const Filesystem& fs) const;
  nlohmann::json rules_json() const;
  // The policy ([policy]) and what clients in other mount namespaces see (docs/security.md).
  std::optional<VarlinkError> deny(Operation op, const Peer& peer) const;
  // The view of the client's mount namespace; null for the daemon's own.
  Reply<std::shared_ptr<MountNsView>> ns_view(const Peer& peer);
  std::shared_ptr<ClientView> client_view(const Peer& peer, std::shared_ptr<MountNsView> ns);
  nlohmann::json filesystem_json(const Filesystem& fs, const MountNsView& ns) const;
  static nlohmann::json unwatched_filesystem_json(const Filesystem& here);
  nlohmann::json rules_json(const MountNsView& ns) const;
  Reply<nlohmann::json> list_filesystems(const nlohmann::json& p, const MountNsView* ns);
  Reply<nlohmann::json> get_filesystem(const nlohmann::json& p, const MountNsView* ns);
  Reply<nlohmann::json> add_rule(const Peer& peer, const nlohmann::json& p);
  Reply<nlohmann::json> remove_rule(const Peer& peer, const nlohmann::json& p);
  Reply<nlohmann::json> doctor(const Peer& peer);
  Reply<nlohmann::json> list_events(const nlohmann::json& p, const std::shared_ptr<ClientView>& view);
  Reply<Subscriber::Filter> make_filter(const nlohmann::json& p, const std::shared_ptr<ClientView>& view);
  void publish(Event e);
  void on_journal_status(bool ok, const std::string& reason);

  static constexpr size_t kListEventsDefault = 1000;
  static constexpr size_t kListEventsMax = 10000;
  static constexpr size_t kListEventsScan = 200000;

  Config config_;
  Options options_;
  std::unique_ptr<Clock> own_clock_;
  const Clock* clock_ = nullptr;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<StateDb> db_;
  std::unique_ptr<Bus> bus_;
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<Folder> folder_;
  std::unique_ptr<ReplaySource> replay_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::unique_ptr<MountSource> mount_source_;  // fanotify fast path or the mountinfo fallback
  Inventory inventory_;
  MountTracker mount_tracker_;  // mount.* events and the Mount table (ListMounts, Subscribe mounts)
  std::unique_ptr<StatfsRunner> statfs_;
  std::unique_ptr<SpaceMonitor> space_;
  // Filesystem errors: the sources report to the correlator, which emits the events.
  std::unique_ptr<FsErrorCorrelator> fs_errors_;
  std::unique_ptr<FanotifyErrorSource> fanotify_errors_;
  std::unique_ptr<SysfsErrorSource> sysfs_errors_;
  std::unique_ptr<KmsgSource> kmsg_;
  std::unique_ptr<BlockErrorMerger> block_merger_;
  // When loaded, the source of block.io_error; the kernel log's block lines are then ignored.
  std::unique_ptr<BpfBlockErrorSource> bpf_block_;
  std::string bpf_block_unavailable_;  // why bpf_block_ is not running (doctor)
  std::optional<EventLoop::TimerId> block_timer_;
  std::unique_ptr<UeventSource> uevent_;
  std::unique_ptr<EnospcSource> enospc_;
  std::string enospc_unavailable_;  // why enospc_ is not running (doctor)
  std::unique_ptr<CgroupResolver> cgroups_;
  std::unique_ptr<QuotaNetlinkSource> quota_;
  std::string quota_unavailable_;  // why quota_ is not running (doctor)
  struct RoState {
    bool read_only = false, emergency_ro = false;
  };
  std::map<std::string, RoState> error_watched_;  // dev -> read-only state, as last synced
  std::unique_ptr<Server> server_;
  // Sinks ([sinks.*]): every one is built in make_sinks() and fed from the journal by a runner.
  std::vector<std::unique_ptr<Sink>> make_sinks() const;
  void start_sinks();
  std::vector<std::unique_ptr<SinkRunner>> sinks_;
  // Prometheus /metrics ([metrics] listen, --metrics): the loop renders the text on a timer and
  // the server's own thread serves it.
  [[nodiscard]] Result<void> start_metrics();
  void refresh_metrics();
  std::unique_ptr<MetricsServer> metrics_;
  std::map<std::string, uint64_t> events_by_type_;  // counted only while metrics are on
  std::optional<EventLoop::TimerId> metrics_timer_;
  std::map<std::string, Rule> runtime_rules_;  // set with AddRule, persisted in the state db
  // Held by the clients' streams; shared by every client of a namespace, or of a policy class.
  std::map<MountNsId, std::weak_ptr<MountNsView>> ns_views_;
  std::map<std::tuple<uid_t, bool, bool, uint64_t>, std::weak_ptr<ClientView>> client_views_;
  uint64_t dropped_ = 0;                        // events lost because seq numbers could not be reserved
};

}  // namespace storwatch::daemon
