#!/bin/sh
# storwatch hook: one syslog line per event. Install as e.g. /etc/storwatch/hooks.d/block-logger.
# (With journald, the journald sink already records every event; this is for plain syslog.)
set -eu
cat > /dev/null
exec logger -t storwatch-hook -- "$STORWATCH_MESSAGE"
