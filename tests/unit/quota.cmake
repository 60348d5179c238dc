# The quota netlink parsers (issue 5): kernel-format VFS_DQUOT warnings and the generic netlink
# controller's reply. `ctest -R quota`.
storwatch_add_test(quota_test SOURCES quota_test.cc LIBS storwatch_daemon PREFIX "quota.")
