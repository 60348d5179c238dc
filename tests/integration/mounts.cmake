# Mount table events (mount.attached, mount.detached, mount.changed, mount.resync), ListMounts and
# Subscribe `mounts` end to end (issue 6), as root with a real storwatchd in a private mount
# namespace of its own (test_mounts.py), once per backend ([mounts] backend). Included by
# tests/integration/CMakeLists.txt, which defines `it`.
storwatch_add_script_test(integration.mounts.fanotify
  COMMAND ${Python3_EXECUTABLE} ${it}/test_mounts.py --backend fanotify TIMEOUT 300)
storwatch_add_script_test(integration.mounts.mountinfo
  COMMAND ${Python3_EXECUTABLE} ${it}/test_mounts.py --backend mountinfo TIMEOUT 300)
