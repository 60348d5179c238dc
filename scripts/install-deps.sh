#!/bin/sh
# Installs, from Debian's packages, everything storwatch needs to build, test and run.
# Idempotent: does nothing (and needs no network) when every package is already there.
set -eu

# Why each package is here: docs/dependencies.md.
PACKAGES="
build-essential cmake ninja-build pkg-config clang
libbpf-dev bpftool libelf-dev zlib1g-dev
libexpected-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev libfmt-dev
libsystemd-dev libsqlite3-dev libfuse3-dev fuse3
libcpp-httplib-dev libnats-dev nats-server prometheus prometheus-alertmanager
libgtest-dev libgmock-dev libbenchmark-dev
e2fsprogs xfsprogs btrfs-progs util-linux mount systemd python3 procps strace
"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages:$missing" >&2
    echo "install-deps: run as root (or: sudo $0)" >&2
    exit 1
fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
