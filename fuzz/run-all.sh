#!/bin/sh
# run-all.sh BUILD_FUZZ_DIR SECONDS: runs every libFuzzer target (each executable *_fuzz in
# BUILD_FUZZ_DIR, so targets added to fuzz/CMakeLists.txt are picked up without a list here) for
# SECONDS each, seeded from fuzz/corpus/NAME and the test fixtures when present.
# Every target runs even after one fails; the exit status is non-zero if any crashed, leaked,
# timed out or failed to start, and the failing targets are named at the end with their
# reproducer files (BUILD_FUZZ_DIR/artifacts/NAME-crash-...; rerun with `BINARY FILE`).
set -eu
dir=$1
secs=$2
root=$(cd "$(dirname "$0")/.." && pwd)
artifacts="$dir/artifacts"
mkdir -p "$artifacts"

targets=$(find "$dir" -maxdepth 1 -type f -name '*_fuzz' -perm -u+x | sort)
if [ -z "$targets" ]; then
    echo "fuzz: no *_fuzz targets in $dir (build them first: cmake --build DIR --target fuzz_all)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
failed=""
for bin in $targets; do
    t=$(basename "$bin")
    corpus="$work/$t"
    mkdir -p "$corpus"
    seeds=""
    [ -d "$root/fuzz/corpus/$t" ] && seeds="$root/fuzz/corpus/$t"
    [ "$t" = mountinfo_fuzz ] && seeds="$seeds $root/tests/fixtures/proc"
    [ "$t" = kmsg_fuzz ] && seeds="$seeds $root/tests/fixtures/kmsg"
    echo "fuzz: $t for ${secs}s"
    # shellcheck disable=SC2086
    if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$artifacts/$t-" "$corpus" $seeds; then
        echo "fuzz: $t FAILED" >&2
        failed="$failed $t"
    fi
    rm -rf "$corpus"
done
if [ -n "$failed" ]; then
    echo "fuzz: failing targets:$failed" >&2
    for t in $failed; do
        ls "$artifacts/$t-"* 2>/dev/null | sed 's/^/fuzz:   reproducer: /' >&2 || true
    done
    exit 1
fi
echo "fuzz: every target ran ${secs}s without a finding"
