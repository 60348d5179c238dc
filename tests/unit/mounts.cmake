# The mount table's sources (issue 6): the mountinfo fallback's incremental diff, the Inventory
# fed incrementally, the fanotify mount-record parser and statmount decoding (no root), and
# statmount/listmount checked against /proc/self/mountinfo on this kernel (skips where the kernel
# lacks them). `ctest -R mounts.`
storwatch_add_test(mounts_test
  SOURCES daemon/mount_diff_test.cc daemon/mount_fanotify_test.cc daemon/mount_api_test.cc
  LIBS storwatch_daemon
  PREFIX mounts.)
