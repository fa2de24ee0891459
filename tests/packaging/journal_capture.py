#!/usr/bin/env python3
"""A stand-in for journald's native socket, for tests/packaging/test.sh.

    journal_capture.py SOCKET_PATH OUT_JSONL

Binds a datagram socket at SOCKET_PATH (where sd_journal_sendv() writes: the test mounts a private
/run first), decodes each datagram of the native protocol (KEY=value lines, or KEY, a 64-bit
little-endian length and the raw value for values with newlines; large entries arrive as a memfd)
and appends it to OUT_JSONL as one JSON object per line. Runs until SIGTERM.
"""
import array
import json
import os
import signal
import socket
import struct
import sys


def decode(data):
    fields = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            (n,) = struct.unpack_from("<Q", data, nl + 1)
            v = data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode(errors="replace")
    return fields


def main():
    path, out = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if os.path.exists(path):
        os.unlink(path)
    s.bind(path)
    os.chmod(path, 0o666)
    with open(out, "a", encoding="utf-8") as f:
        while True:
            fds = array.array("i")
            data, anc, _, _ = s.recvmsg(1 << 20, socket.CMSG_SPACE(4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % 4])
            for fd in fds:
                with os.fdopen(fd, "rb") as m:
                    data = m.read()
            f.write(json.dumps(decode(data)) + "\n")
            f.flush()


if __name__ == "__main__":
    main()
