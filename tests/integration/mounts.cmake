# Mount table events (mount.attached, mount.detached, mount.changed), ListMounts and Subscribe
# `mounts` end to end (issue 6, the mountinfo fallback), as root with a real storwatchd in a private
# mount namespace of its own (test_mounts.py). Included by tests/integration/CMakeLists.txt, which
# defines `it`.
storwatch_add_script_test(integration.mounts
  COMMAND ${Python3_EXECUTABLE} ${it}/test_mounts.py TIMEOUT 240)
