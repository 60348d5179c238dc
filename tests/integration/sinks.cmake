# Sinks end to end (docs/sinks.md): Alertmanager (a real prometheus-alertmanager on loopback),
# journald (a datagram socket at journald's path in a private mount namespace) and hooks (a
# recording hook, a hanging one killed at its timeout). Included by CMakeLists.txt (defines `it`).
storwatch_add_script_test(integration.sink_alertmanager
  COMMAND ${Python3_EXECUTABLE} ${it}/sink_alertmanager.py TIMEOUT 300)
storwatch_add_script_test(integration.sink_journald
  COMMAND ${Python3_EXECUTABLE} ${it}/sink_journald.py TIMEOUT 120)
storwatch_add_script_test(integration.sink_hooks
  COMMAND ${Python3_EXECUTABLE} ${it}/sink_hooks.py TIMEOUT 120)
