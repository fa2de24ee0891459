#!/usr/bin/env python3
# Server-side cost of mota-runtime's request-body path, without inference: POSTs of a 0.9 MB body
# to an unknown model (404 after the whole body is read) vs an empty-body request, over one
# keep-alive Unix-socket connection from a raw-socket client (the same client for both runtimes).
# Prints p50/p10 round trip and the runtime's CPU time per request (utime+stime from /proc).
# Usage: bench/runtime_body_path.py BUILD/runtime/mota-runtime [REQUESTS_PER_ROUND]
# (bench/README.md, "mota-runtime on net/ and libcurl").
import os, socket, subprocess, sys, tempfile, time, statistics
binary, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300
d = tempfile.mkdtemp(prefix="mota-bodypath.")
sock = os.path.join(d, "rt.sock")
open(os.path.join(d, "rt.toml"), "w").write('socket = "%s"\nlog_level = "error"\n' % sock)
p = subprocess.Popen([binary, "serve", "--config", os.path.join(d, "rt.toml")])
for _ in range(500):
    if os.path.exists(sock): break
    time.sleep(0.01)
time.sleep(0.2)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sock)
buf = b""
def request(body):
    global buf
    head = ("POST /v1/models/none/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\n\r\n" % len(body)).encode()
    s.sendall(head + body)
    while b"\r\n\r\n" not in buf: buf += s.recv(65536)
    h, _, rest = buf.partition(b"\r\n\r\n")
    cl = 0
    for line in h.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"): cl = int(line.split(b":")[1])
    while len(rest) < cl: rest += s.recv(65536)
    buf = rest[cl:]
    assert h.startswith(b"HTTP/1.1 404"), h[:40]
def cpu():
    f = open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
def run(body):
    for _ in range(20): request(body)
    c0 = cpu(); times = []
    for _ in range(n):
        t = time.perf_counter(); request(body); times.append((time.perf_counter() - t) * 1000)
    c = (cpu() - c0) / n * 1000
    times.sort()
    return times[len(times)//2], times[len(times)//10], c
big = bytes(921600)
rows = {"body": [], "empty": []}
for r in range(5):
    rows["body"].append(run(big)); rows["empty"].append(run(b""))
for k, v in rows.items():
    print("%s %-5s p50 %.3f ms  p10 %.3f ms  runtime CPU %.3f ms/request" % (
        binary, k,
        statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), statistics.median(x[2] for x in v)))
p.terminate(); p.wait()
