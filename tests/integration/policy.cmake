# The [policy] and the mount-namespace views end to end (issue 9, and issue 6's clients in other
# namespaces), as root with a real storwatchd: clients as uid 65534 (policy_access.py), clients
# in a private mount namespace reaching the socket through a bind mount (nsview_mounts.py).
# policy_client.py is their small Varlink client. Included by tests/integration/CMakeLists.txt,
# which defines `it`.
storwatch_add_script_test(integration.policy
  COMMAND ${Python3_EXECUTABLE} ${it}/policy_access.py TIMEOUT 180)
storwatch_add_script_test(integration.nsview
  COMMAND ${Python3_EXECUTABLE} ${it}/nsview_mounts.py TIMEOUT 180)
