#!/bin/sh
# run-all.sh BUILD_FUZZ_DIR SECONDS: runs each fuzz target for SECONDS, seeded from fuzz/corpus/NAME
# and tests/fixtures when present. Exits non-zero on the first crash.
set -eu
dir=$1
secs=$2
root=$(cd "$(dirname "$0")/.." && pwd)
for t in varlink_fuzz rule_parser_fuzz mountinfo_fuzz config_fuzz replay_fuzz kmsg_fuzz; do
    corpus=$(mktemp -d)
    trap 'rm -rf "$corpus"' EXIT
    seeds=""
    [ -d "$root/fuzz/corpus/$t" ] && seeds="$root/fuzz/corpus/$t"
    [ "$t" = mountinfo_fuzz ] && seeds="$seeds $root/tests/fixtures/proc"
    [ "$t" = kmsg_fuzz ] && seeds="$seeds $root/tests/fixtures/kmsg"
    echo "fuzz: $t for ${secs}s"
    # shellcheck disable=SC2086
    "$dir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$corpus" $seeds
    rm -rf "$corpus"
done
