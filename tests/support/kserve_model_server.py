#!/usr/bin/env python3
"""A small real model server for the hand-over tests (tests/integration/agent_handover_test.cpp).

It speaks the part of the KServe v2 model repository extension that Triton serves and that
docs/examples/handover/triton-load calls: POST /v2/repository/models/<name>/load loads
<repo>/<name>/1/model.onnx (following symlinks, as Triton does with a repository entry that links
to mota's `current`), and GET /v2/models/<name> says what is loaded: the sha256 of the bytes it
read, the path they came from, and how many loads it did. Usage: kserve_model_server.py PORT REPO
"""
import hashlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
REPO = sys.argv[2]
loaded = {}


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if len(parts) != 5 or parts[:3] != ["v2", "repository", "models"] or parts[4] != "load":
            return self.reply(404, {"error": "no such route: " + self.path})
        name = parts[3]
        path = os.path.join(REPO, name, "1", "model.onnx")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            return self.reply(400, {"error": "load %s: %s" % (name, e)})
        entry = loaded.get(name, {"loads": 0})
        entry.update(sha256=hashlib.sha256(data).hexdigest(), path=os.path.realpath(path))
        entry["loads"] += 1
        loaded[name] = entry
        self.reply(200, {})

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v2", "models"] and parts[2] in loaded:
            return self.reply(200, dict(name=parts[2], **loaded[parts[2]]))
        self.reply(404, {"error": "not loaded: " + self.path})

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
