# The [policy] decisions, event redaction, per-class event views, the path translation of mount-
# namespace views, and the Manager applying them
# (docs/security.md), with fakes and made-up peers: no root. `ctest -R policy`.
storwatch_add_test(policy_test SOURCES policy_test.cc LIBS storwatch_daemon PREFIX "policy.")
