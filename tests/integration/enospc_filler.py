#!/usr/bin/env python3
"""The failing process of test_enospc_probe.py (after the seed's alloc_test): run as a non-root
uid, it fills DIR one way until a call fails with ENOSPC or EDQUOT and prints one JSON line:
{"pid", "uid", "comm", "errno", "failures", "first_failure" (wall time), "syscall"}.

    enospc_filler.py buffered|direct|files|dirs DIR
    enospc_filler.py loop DIR SECONDS    # retries a 4 KiB write for SECONDS, counting failures
"""

import ctypes
import errno
import json
import mmap
import os
import sys
import time

COMM = b"sw-enospc-fill"
FAIL = (errno.ENOSPC, errno.EDQUOT)


def set_comm():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, ctypes.c_char_p(COMM), 0, 0, 0)  # PR_SET_NAME


def write_until_full(path, flags, chunk):
    # O_DIRECT needs an aligned buffer: an anonymous mapping is page-aligned.
    buf = mmap.mmap(-1, chunk)
    buf.write(b"\xa5" * chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        while True:
            try:
                os.write(fd, buf)
            except OSError as e:
                if e.errno in FAIL:
                    return e.errno, time.time(), "write"
                if e.errno == errno.EINVAL and chunk > 4096:  # O_DIRECT past the end: smaller
                    chunk = 4096
                    buf = mmap.mmap(-1, chunk)
                    continue
                raise
    finally:
        os.close(fd)


def create_until_full(d, mkdir):
    i = 0
    while True:
        name = os.path.join(d, f"{'d' if mkdir else 'f'}{i}")
        try:
            if mkdir:
                os.mkdir(name)
            else:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError as e:
            if e.errno in FAIL:
                return e.errno, time.time(), "mkdir" if mkdir else "openat"
            raise
        i += 1


def loop(d, seconds):
    fd = os.open(os.path.join(d, "loop"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    buf = b"\x5a" * 4096
    failures, first, err = 0, None, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            os.write(fd, buf)
        except OSError as e:
            if e.errno not in FAIL:
                raise
            failures += 1
            err = e.errno
            if first is None:
                first = time.time()
    os.close(fd)
    return err, first, "write", failures


def main():
    set_comm()
    mode, d = sys.argv[1], sys.argv[2]
    failures = 1
    if mode == "buffered":
        err, when, sc = write_until_full(os.path.join(d, "buffered"), 0, 1 << 20)
    elif mode == "direct":
        err, when, sc = write_until_full(os.path.join(d, "direct"), os.O_DIRECT, 1 << 20)
    elif mode == "files":
        err, when, sc = create_until_full(d, mkdir=False)
    elif mode == "dirs":
        err, when, sc = create_until_full(d, mkdir=True)
    elif mode == "loop":
        err, when, sc, failures = loop(d, float(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {mode}")
    print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "comm": COMM.decode(), "errno": err,
                      "failures": failures, "first_failure": when, "syscall": sc}), flush=True)


if __name__ == "__main__":
    main()
