#!/bin/sh
# storwatch hook: POST the event JSON to a webhook. Install as e.g.
# /etc/storwatch/hooks.d/all-webhook. curl's own timeout stays below the hook timeout.
set -eu
URL="https://hooks.example.invalid/storwatch"  # change it
exec curl --silent --show-error --fail --max-time 10 \
  -H 'Content-Type: application/json' \
  -H "X-Storwatch-Type: $STORWATCH_TYPE" \
  --data-binary @- "$URL"
