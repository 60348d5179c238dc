# Sinks (src/daemon/sink): the runner that feeds each sink from the journal on its own thread,
# and the sinks' pure parts (journald fields, hook selection, Alertmanager alerts). A real
# journal in a temporary state database; no sleeping. `ctest -R sinks`.
storwatch_add_test(sinks_test
  SOURCES
    sink_runner_test.cc
    sinks_test.cc
  LIBS storwatch_daemon SQLite::SQLite3
  PREFIX sinks.)
