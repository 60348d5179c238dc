# Issue 8, part 2: Prometheus /metrics scraped by a real prometheus (sink_prometheus.py), and the
# NATS JetStream sink with `storwatch fleet` against a real nats-server killed mid-burst
# (sink_nats.py). Both on loopback ports chosen free at run time; exit 77 without the servers.
# Included by tests/integration/CMakeLists.txt, which defines `it`.
storwatch_add_script_test(integration.sink_prometheus
  COMMAND ${Python3_EXECUTABLE} ${it}/sink_prometheus.py TIMEOUT 180)
storwatch_add_script_test(integration.sink_nats COMMAND ${Python3_EXECUTABLE} ${it}/sink_nats.py TIMEOUT 400)
