#!/bin/sh
# storwatch hook: mail the event. Install as e.g. /etc/storwatch/hooks.d/space.threshold-mail.
# Needs a working sendmail (any MTA: exim4, postfix, msmtp-mta).
set -eu
TO="root"  # change it: hooks get no environment from storwatchd but STORWATCH_* and PATH
SENDMAIL=/usr/sbin/sendmail
[ -x "$SENDMAIL" ] || { echo "no $SENDMAIL" >&2; exit 1; }
json=$(cat)
{
  printf 'To: %s\n' "$TO"
  printf 'Subject: [storwatch %s] %s %s on %s\n' "$(hostname)" "${STORWATCH_SEVERITY:-}" \
    "$STORWATCH_TYPE" "${STORWATCH_FS_MOUNT:-${STORWATCH_DEVICE:-?}}"
  printf 'Content-Type: text/plain; charset=utf-8\n\n'
  printf '%s\n\n%s\n' "$STORWATCH_MESSAGE" "$json"
} | "$SENDMAIL" -t
