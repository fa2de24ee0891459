#pragma once
// The repository's HTTP server (`mota serve`): API routes plus static files of the TUF repository.
// Core code depends on this header only; the backend (net/platform/epoll/, our own epoll
// HTTP/1.1 server) is created with make_http_server().
//
// Connections are served by a few event-loop threads (ServerConfig::io_threads), not by a thread
// each: a fleet's thousands of keep-alive connections cost a socket and a buffer apiece, and an
// idle one costs nothing. Handlers registered with route() may block and run on a separate pool
// of worker threads (ServerConfig::threads); handlers registered with route_async() run on the
// event loop itself, must not block, and answer later through a Responder (the report ingest:
// the request waits for its group commit without holding any thread).
//
// Static files (ServerConfig::static_root) are streamed from disk with sendfile(), never read
// whole into memory (packages are GiB). GET and HEAD; a single byte range ("bytes=N-",
// "bytes=N-M", "bytes=-N") gets 206 with Content-Range, an unsatisfiable one 416 with
// "Content-Range: bytes */<size>"; multi-range requests get the whole file (200); a malformed
// Range header (e.g. "bytes=5-2") gets 416 without Content-Range, as from nginx. Every answer
// carries Content-Length and Accept-Ranges: bytes. 404 for: directories (no listings), paths with
// "..", NUL, backslash or any component starting with "." (temp files of atomic writes are
// dot-files), non-regular files, and symlinks that resolve outside static_root. Content-Type is
// application/json for *.json, else application/octet-stream. Cache-Control is what
// ServerConfig::static_cache_control says (the caller's policy: `mota serve` passes the TUF rule).
//
// HTTP/1.1 (RFC 9112) with keep-alive (HTTP/1.0 clients get keep-alive when they ask for it),
// pipelined requests answered in order. Request targets in origin form ("/path?query") and in
// absolute form ("http://host/path?query", whose path and query are used); the Connection header
// is a case-insensitive token list ("close" wins over "keep-alive"). Refused with a JSON
// {"error": "<what>"} body and the connection closed:
// - 400: a malformed request line (not "METHOD target HTTP/x.y" with single spaces, a target in
//   another form, control characters in it); a header line that is obs-fold (starts with SP or
//   HTAB), has no colon, whitespace before the colon, or a name that is not a token (RFC 9110
//   tchar); a header value with CR, LF or NUL; an HTTP/1.1 request without Host or with more than
//   one Host; a malformed or conflicting Content-Length;
// - 505: a version other than HTTP/1.1 and HTTP/1.0; 431: a request head over 64 KiB;
// - 411: a body with Transfer-Encoding (send Content-Length);
// - 413: a body over max_body_bytes, and a body over 64 KiB on a request no route takes (static
//   files, 404s), both before the body is read (a "100 Continue" only for bodies that are read);
//   a smaller body on such a request is read and dropped as it streams, never buffered;
// - 408: a request that does not arrive whole within request_timeout_s;
// - 503: more than max_connections open connections; a routed body that would take the bodies
//   in flight past max_bodies_bytes (the connection closed, the body not read).
//
// Memory: a connection holds only what it has read and not yet used (the head being received,
// pipelined bytes, the body of a routed request) and the reply being written; both are released
// once the request is answered, so an idle keep-alive connection costs its small bookkeeping and
// no buffer. Reads go through one 64 KiB buffer per event loop. A request head is parsed once,
// when its end arrives; its body is then appended as it streams in.
//
// Every request is logged through common/log.hpp at info level: method, path, status, body bytes
// sent, duration.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mota::net {

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

// The answer of an asynchronous request (route_async). Call it once, from any thread, at any time
// — also after the server stopped or the client went away: the reply is then dropped. Copies
// share one answer; calls after the first are ignored. If every copy is destroyed without a call,
// the client gets 500 (a handler that lost its request cannot hang a connection).
class Responder {
 public:
  struct State;
  explicit Responder(std::shared_ptr<State> state) : state_(std::move(state)) {}
  void operator()(HttpReply reply) const;

 private:
  std::shared_ptr<State> state_;
};

// Called on an event-loop thread: must not block (no disk, no locks held for long, no waiting for
// other threads); hand slow work elsewhere and answer through the Responder. The request is the
// handler's to keep (moved in). Exceptions escaping it become a 500, as for Handler.
using AsyncHandler = std::function<void(HttpRequest&&, Responder)>;

struct ServerConfig {
  // TCP listener. Empty host or port -1: no TCP (a Unix socket only).
  std::string host = "127.0.0.1";
  int port = 0;  // 0: pick a free port (start() returns it)
  // Unix-domain listener, as well as or instead of TCP; empty: none. The server binds it (the
  // directory must exist and no file may be at the path: stale sockets are the caller's to
  // judge), sets unix_socket_mode on it, and removes it in stop() if it is still the file it
  // bound. Requests from it have remote_addr "unix".
  std::filesystem::path unix_socket;
  unsigned unix_socket_mode = 0660;
  std::filesystem::path static_root;  // served at "/" if non-empty; must be a directory
  std::size_t max_body_bytes = 16 << 20;
  // Event-loop threads that read, parse and write every connection (and run async handlers and
  // static downloads); 0: one per core, at most 4.
  int io_threads = 0;
  // Worker threads for route() handlers: how many blocking handlers run at once (requests
  // beyond wait in a queue; their connections stay open and cost no thread).
  int threads = 8;
  // Open connections; beyond, a new connection gets 503 and is closed.
  std::size_t max_connections = 20000;
  // Request bodies in flight, all connections together: the Content-Length of every routed
  // request from its head until its answer starts. A head that would pass it gets 503 ("retry
  // later") and the connection is closed, its body never read. 0: no budget (each body is still
  // bounded by max_body_bytes).
  std::size_t max_bodies_bytes = 0;
  // Requests one keep-alive connection may carry before the server closes it, and how long an
  // idle keep-alive connection stays open.
  std::size_t keep_alive_max_count = 100;
  int keep_alive_timeout_s = 5;
  // How long a request may take to arrive whole (head and body) once its first byte came, and
  // how long a reply may wait for the client to read it: slow clients are cut off (408, or
  // closed), never hold anything but their own socket.
  int request_timeout_s = 30;
  int write_timeout_s = 60;  // devices on slow links with curl's rate limit may not read for long
  // The Cache-Control value for a static file, given its path relative to static_root with '/'
  // separators ("metadata/timestamp.json"); "" (or no function): no Cache-Control header. Called
  // on an event-loop thread for every static answer: must be cheap, must not block, must be
  // thread-safe. A value with CR or LF, or an exception, is logged and sends no header.
  std::function<std::string(std::string_view rel_path)> static_cache_control;
};

// What the server holds right now, for tests and metrics (issue 19 exports it). Read from any
// thread; each figure is exact for its event loop at some recent moment, not one snapshot.
struct ServerStats {
  std::size_t open_connections = 0;
  // Heap bytes of the request and reply buffers held by open connections (allocated capacity,
  // not just contents): the head being received, pipelined bytes, bodies being received, replies
  // being written. Idle keep-alive connections hold none. Requests handed to a handler are the
  // handler's and are not counted.
  std::size_t buffered_bytes = 0;
  // Answers started: handlers', static files and refusals (not the 503 of a connection over
  // max_connections, which never gets a request read).
  std::uint64_t requests_served = 0;
  // Request heads parsed: one per request however its bytes arrive (a head is parsed once, when
  // it is complete; never again while its body trickles in), refused heads included.
  std::uint64_t heads_parsed = 0;
  // Of max_bodies_bytes: the announced bodies of routed requests not answered yet.
  std::size_t bodies_reserved = 0;
};

class HttpServer {
 public:
  virtual ~HttpServer() = default;  // stops the server if running

  // Registers a handler. Methods: GET (also answers HEAD), POST, PUT, PATCH, DELETE. Pattern
  // segments starting with ':' match one non-empty path segment and are passed in path_params
  // ("/v1/devices/:id/events"). Routes win over static files; the first registered match wins.
  // Must be called before start() (routes are not guarded against concurrent readers).
  virtual void route(std::string method, std::string pattern, Handler handler) = 0;
  // The same for a handler that answers later (see AsyncHandler).
  virtual void route_async(std::string method, std::string pattern, AsyncHandler handler) = 0;

  // Binds and serves on background threads; returns the bound TCP port (0 without TCP). Errors:
  // Errc::not_found if static_root is set but is not a directory, Errc::io if an address cannot
  // be bound (for the Unix socket also: a file is in the way), Errc::invalid_argument if already
  // started, with neither TCP nor a Unix socket, or for a socket path too long for sun_path.
  // Call at most once.
  virtual Result<int> start() = 0;

  // Stops accepting connections (and removes the Unix socket file), cuts off static downloads in
  // progress, lets running handlers finish (and sends their replies; async replies still missing
  // after 5 s are dropped), closes every connection, and returns once every thread has stopped.
  // Safe to call from any thread (not from a handler), more than once, or before start().
  virtual void stop() = 0;

  // Blocks until the server has stopped (via stop() from another thread). Returns at once if the
  // server was never started.
  virtual void wait() = 0;

  // See ServerStats. Safe from any thread (but not while start() runs), also before start() and
  // after stop() (then all zero but requests_served).
  [[nodiscard]] virtual ServerStats stats() const = 0;
};

std::unique_ptr<HttpServer> make_http_server(const ServerConfig& config);

}  // namespace mota::net
