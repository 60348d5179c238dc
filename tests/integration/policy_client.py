#!/usr/bin/env python3
"""A minimal io.storwatch Varlink client for the policy and namespace-view tests: it runs as
another uid or inside another mount namespace, where the test's own modules may not be
reachable, so it uses nothing but the standard library and is copied next to the socket.

    policy_client.py SOCKET call METHOD [JSON]       one reply (or error) as a JSON line
    policy_client.py SOCKET subscribe [JSON]         the first reply, then one line per event

Each output line is {"parameters": ...} or {"error": NAME, "parameters": ...}.
"""

import json
import socket
import sys


def messages(sock):
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk
        while b"\0" in buf:
            msg, buf = buf.split(b"\0", 1)
            yield json.loads(msg)


def out(reply):
    line = {"parameters": reply.get("parameters", {})}
    if "error" in reply:
        line["error"] = reply["error"]
    print(json.dumps(line), flush=True)


def main():
    path, mode = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    if mode == "call":
        params = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
        call = {"method": "io.storwatch." + sys.argv[3], "parameters": params}
    else:
        params = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
        call = {"method": "io.storwatch.Subscribe", "parameters": params, "more": True}
    sock.sendall(json.dumps(call).encode() + b"\0")
    for reply in messages(sock):
        out(reply)
        if mode == "call" or "error" in reply or not reply.get("continues"):
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
