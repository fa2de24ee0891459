#pragma once
// mota-runtime's HTTP API, served on a Unix socket and optionally on loopback TCP, by the project's
// HTTP server (net/http_server.hpp).
//
//   GET  /v1/health               {"status": "ok"|"empty", "uptime_s", "instance", "models":
//   [status...]}
//                                 "instance" is random per runtime process; each status carries
//                                 "generation" (per load) and the load's counters: "inferences",
//                                 "errors", "latency_ms" {p50, p99} over the last 1024 runs and
//                                 "latency_histogram" [[bucket, count], ...] since the load
//                                 (common/latency_histogram.hpp)
//   GET  /v1/models               {"models": [status + inputs/outputs...]}
//   GET  /v1/models/{name}        one model's status, 404 if none is loaded under that name
//   POST /v1/models/{name}/load   body {"slot": "/abs/path"}: load and swap; 200 with the new
//                                 status, 422 {"error": reason} when the load fails (the old
//                                 model keeps serving), 400 for a malformed request
//   POST /v1/models/{name}/infer  raw (application/octet-stream; X-Mota-Inputs optional: without
//                                 it the body is the model's inputs in declared order) or JSON
//                                 ({"inputs": [...]}, see runtime/tensor.hpp); the answer uses the
//                                 request's encoding. 404 unknown model, 400 bad input, 413 body
//                                 too large, 415 other content types, 500 engine failure.
//                                 Raw inputs may instead be read from a registered shared-memory
//                                 region: X-Mota-Input-Region: NAME (empty body), optional
//                                 X-Mota-Input-Offset (default 0) and X-Mota-Input-Bytes (default:
//                                 the inputs' size); 404 unknown region, 400 range outside it,
//                                 body not empty, JSON, or a truncated file.
//   GET  /v1/shm                  {"regions": [{"name", "path", "offset", "byte_size", "mapped"}]}
//   POST /v1/shm/{name}/register  body {"path": "/dev/shm/x", "offset": N, "byte_size": N} (both
//                                 optional): 200 with the region, 400 bad request or file (not
//                                 tmpfs, not regular, missing, range outside it, 64 regions
//                                 already), 409 name taken. See runtime/shm.hpp.
//   POST /v1/shm/{name}/unregister  200, 404 unknown region
//
// Every inference answer names the model that produced it, so a client can attribute each
// response to exactly one load: X-Mota-Model, X-Mota-Version, X-Mota-Slot, X-Mota-Generation
// (and the same fields in a JSON answer). Raw answers carry X-Mota-Outputs
// ("name:dtype:shape;...") and X-Mota-Infer-Ms. Errors are {"error": "message"}.

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>

#include "common/result.hpp"
#include "runtime/store.hpp"

namespace mota::runtime {

struct ServerOptions {
  std::filesystem::path socket = "/run/mota/runtime.sock";  // empty: no Unix socket
  mode_t socket_mode = 0660;
  std::string tcp_host;  // empty: no TCP. Must be a loopback address (127.x.x.x, ::1, localhost)
  int tcp_port = 0;      // 0 with tcp_host set: pick a free port (tcp_port() says which)
  // Worker threads = requests handled at once (inferences, loads). Connections are not counted:
  // the HTTP server's event loop holds them, so slow or idle clients never take a worker.
  int threads = 8;
  std::size_t max_body_bytes = 64u << 20;
};

class Server {
 public:
  // Binds and starts serving on background threads. The socket's parent directory is created if
  // missing; a stale socket file (nothing accepting on it) is replaced, a live one is refused
  // (Errc::already_exists: another runtime is running). Errc::io when binding fails,
  // Errc::invalid_argument for a non-loopback TCP host or no listener at all.
  static Result<std::unique_ptr<Server>> start(ModelStore& store, const ServerOptions& options);
  virtual ~Server() = default;  // stops; removes the socket file
  // Stops accepting, lets running requests finish. Idempotent; not from a handler.
  virtual void stop() = 0;
  virtual int tcp_port() const = 0;
};

}  // namespace mota::runtime
