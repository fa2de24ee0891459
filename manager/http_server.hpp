#pragma once
// The repository's HTTP server (`mota serve`): API routes plus static files of the TUF repository.
// Core code depends on this header only; the cpp-httplib backend lives in
// manager/platform/httplib/ and is created with make_http_server().
//
// Static files (ServerConfig::static_root) are streamed from disk in 64 KiB pieces, never read
// whole into memory (packages are GiB). GET and HEAD; a single byte range ("bytes=N-",
// "bytes=N-M", "bytes=-N") gets 206 with Content-Range, an unsatisfiable one 416 with
// "Content-Range: bytes */<size>"; multi-range requests get the whole file (200); a malformed
// Range header (e.g. "bytes=5-2") gets 416 without Content-Range, as from nginx. Every answer
// carries Content-Length and Accept-Ranges: bytes. 404 for: directories (no listings), paths with
// "..", NUL, backslash or any component starting with "." (temp files of atomic writes are
// dot-files), non-regular files, and symlinks that resolve outside static_root. Content-Type is
// application/json for *.json, else application/octet-stream. Metadata without a version prefix
// ("timestamp.json", and "snapshot.json"/"targets.json"/"root.json" when consistent snapshots are
// off) is sent with "Cache-Control: no-store": TUF clients must always see the newest.
//
// Every request is logged through common/log.hpp at info level: method, path, status, body bytes
// sent, duration. Request bodies over max_body_bytes are refused with 413 (before the body is
// read when the client sends "Expect: 100-continue").

#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/result.hpp"

namespace mota::manager {

struct HttpRequest {
  std::string method;  // "GET", "HEAD", "POST", ...
  std::string path;    // percent-decoded, without the query string
  // Header names are lower-cased; repeated headers are joined with ", ".
  std::map<std::string, std::string> headers;
  std::map<std::string, std::string> query;  // first value of each query parameter
  std::string body;
  std::map<std::string, std::string> path_params;  // ":id" in the route pattern -> "id"
  std::string remote_addr;
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::map<std::string, std::string> headers;  // extra response headers
};

// Called on one of the server's worker threads, possibly several at once: handlers must be
// thread-safe. An exception escaping a handler becomes a 500 (and is logged), never a crash.
using Handler = std::function<HttpReply(const HttpRequest&)>;

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 0;                       // 0: pick a free port (start() returns it)
  std::filesystem::path static_root;  // served at "/" if non-empty; must be a directory
  std::size_t max_body_bytes = 16 << 20;
  // Worker threads = connections served at once: httplib gives each connection a worker for
  // its whole keep-alive life, so more connections than workers wait in a queue, and only
  // `threads` requests can be in flight (for `mota serve`, the most reports one group commit can
  // gather). Idle workers only wait in poll().
  int threads = 8;
  // Requests one keep-alive connection may carry before the server closes it (httplib's own
  // default is 5, which makes every agent reconnect after 5 reports), and how long an idle
  // keep-alive connection may hold its worker.
  std::size_t keep_alive_max_count = 100;
  int keep_alive_timeout_s = 5;
};

class HttpServer {
 public:
  virtual ~HttpServer() = default;  // stops the server if running

  // Registers a handler. Methods: GET (also answers HEAD), POST, PUT, PATCH, DELETE. Pattern
  // segments starting with ':' match one non-empty path segment and are passed in path_params
  // ("/v1/devices/:id/events"). Routes win over static files; the first registered match wins.
  // Must be called before start() (routes are not guarded against concurrent readers).
  virtual void route(std::string method, std::string pattern, Handler handler) = 0;

  // Binds and serves on background threads; returns the bound port. Errors: Errc::not_found if
  // static_root is set but is not a directory, Errc::io if the address cannot be bound,
  // Errc::invalid_argument if already started. Call at most once.
  virtual Result<int> start() = 0;

  // Stops accepting connections, cuts off static downloads in progress, lets running handlers
  // finish, and returns once every worker has stopped. Safe to call from any thread (not from a
  // handler), more than once, or before start().
  virtual void stop() = 0;

  // Blocks until the server has stopped (via stop() from another thread). Returns at once if the
  // server was never started.
  virtual void wait() = 0;
};

std::unique_ptr<HttpServer> make_http_server(const ServerConfig& config);

}  // namespace mota::manager
