# The daemon core with fakes at every kernel boundary: event loop, bus, config, state database,
# journal, folder, replay source, server and manager. Every loop is stepped by the test; nothing
# sleeps. `ctest -R daemon_core`.
storwatch_add_test(daemon_core_test
  SOURCES
    daemon/event_loop_test.cc
    daemon/bus_test.cc
    daemon/config_test.cc
    daemon/state_db_test.cc
    daemon/server_test.cc
    daemon/manager_test.cc
    daemon/journal_test.cc
    daemon/folder_test.cc
    daemon/replay_source_test.cc
    daemon/manager_journal_test.cc
  LIBS storwatch_daemon SQLite::SQLite3
  PREFIX daemon_core.)
