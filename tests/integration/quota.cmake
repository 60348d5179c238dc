# quota.warning from the VFS_DQUOT generic netlink family (issue 5). Needs root to send
# kernel-format messages to the multicast group; skipped (77) without root or without the family.
storwatch_add_script_test(integration.quota COMMAND ${Python3_EXECUTABLE} ${it}/test_quota.py TIMEOUT 120)
