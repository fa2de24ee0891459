#pragma once
// HTTP client interface. Core code depends on this header only; the libcurl backend lives in
// common/platform/curl/ and is created with make_http_client(). Tests can substitute a fake for
// fault injection; everything else uses the real client against real loopback servers.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mota::http {

struct ClientConfig {
  std::string user_agent;               // empty: "mota/<version>"
  std::string ca_file;                  // PEM bundle for HTTPS; empty: system default
  std::uint64_t max_bytes_per_sec = 0;  // receive rate limit; 0 = unlimited
  std::chrono::milliseconds connect_timeout{10'000};
  // The minimum average rate of every request: one that moves fewer than
  // min_rate * min_rate_window bytes (received, plus sent for a POST body) within any
  // min_rate_window stops with Errc::network ("stalled: 12 bytes in 60 s, below the minimum
  // 1 KB/s"). The window counts from the start of the request, so a server that never answers
  // is cut off too. A slow server cannot hold a request for ever by dripping bytes. 0: no
  // minimum. Keep it well below max_bytes_per_sec when both are set.
  std::uint64_t min_rate = 1;  // bytes per second
  std::chrono::milliseconds min_rate_window{30'000};
  // Checked while transferring: when it becomes true the request stops with Errc::cancelled
  // within about 100 ms. May be null. The pointee must outlive the client.
  const std::atomic<bool>* cancel = nullptr;
  // Connect to this Unix-domain socket instead of the URL's host and port (the URL still gives
  // the path and the Host header: "http://localhost/v1/health"). Empty: TCP as the URL says.
  std::string unix_socket;
  // libcurl's upload buffer: a request body goes out in pieces of this size, one event-loop turn
  // each, copied from the caller's buffer. 0: libcurl's default (64 KiB). A client that posts
  // big bodies back to back (mota-runtime's inputs) sets it near the body size; the buffer is
  // allocated once, at the first upload, and kept. At most 2 MiB (libcurl's ceiling).
  std::size_t upload_buffer_bytes = 0;
  // Proxies come from the environment (http_proxy, https_proxy, no_proxy) as with curl(1).
};

struct ResponseInfo {
  long status = 0;
  bool partial = false;                         // 206 Partial Content honoured the range
  std::optional<std::uint64_t> content_length;  // as announced by the server
  std::uint64_t bytes_received = 0;             // body bytes passed to the sink
};

// Optional GetRequest hook, called once with the final 2xx response's status, `partial` and
// content_length just before its first body byte reaches the sink (not at all for an empty body).
// A resuming caller learns here whether the body starts at range_start (206) or at 0 (200).
// Returning an error aborts the transfer with that error.
using HeadersHook = std::function<Status(const ResponseInfo&)>;

struct GetRequest {
  std::string url;
  // Hard ceiling on body bytes: a server sending more is cut off with Errc::too_large.
  std::uint64_t max_bytes = 0;
  // If set, ask for bytes [range_start, end) with a Range header. The server may ignore it
  // (status 200): the sink then receives the whole body from offset 0 and `partial` is false.
  std::optional<std::uint64_t> range_start;
  // Whole-request limit (connect, headers and body); past it the request stops with
  // Errc::network ("timed out: no complete answer within 30 s (12 bytes received)").
  // 0 = none (the client's min_rate still applies).
  std::chrono::milliseconds timeout{0};
  std::map<std::string, std::string> headers;
  // Checked like ClientConfig::cancel (either stops the request with Errc::cancelled within about
  // 100 ms), for callers that cancel one job rather than the whole client. May be null; the
  // pointee must outlive the call.
  const std::atomic<bool>* cancel = nullptr;
  HeadersHook on_headers;  // may be empty
};

// Receives body bytes in order. Returning an error aborts the transfer with that error.
using Sink = std::function<Status(std::span<const std::byte>)>;

struct Response {
  long status = 0;
  std::string body;
  // Response headers, names lower-cased (repeated ones joined with ", "). Filled by request()
  // only.
  std::map<std::string, std::string> headers;
};

// A request for Client::request(): any method, a body sent from the caller's buffer.
struct Request {
  std::string method = "GET";  // GET, HEAD, POST, PUT, PATCH, DELETE
  std::string url;
  std::string_view body;  // sent as is (with Content-Length) when non-empty or method is POST/PUT
  std::map<std::string, std::string> headers;
  std::uint64_t max_response_bytes = 1 << 20;  // a longer body is Errc::too_large
  // Whole-request limit as GetRequest::timeout (Errc::network); 0 = none.
  std::chrono::milliseconds timeout{0};
};

// A client is used by one thread at a time; create one per thread.
class Client {
 public:
  virtual ~Client() = default;

  // Streams a GET. Non-2xx statuses are returned as Errc::http errors whose message includes the
  // status and whose http_status() is it (the body is not passed to the sink; a small one, up to
  // 64 KiB, is read and dropped so the connection stays open for the next request). Transport
  // failures, stalls and timeouts are Errc::network.
  virtual Result<ResponseInfo> get(const GetRequest& req, const Sink& sink) = 0;

  // Convenience: the whole body of a GET, at most max_bytes.
  Result<std::string> get_body(const std::string& url, std::uint64_t max_bytes);

  // POST with a body; returns status and body (body at most max_response_bytes). Non-2xx is NOT
  // an error here: API callers inspect the status themselves.
  virtual Result<Response> post(const std::string& url, const std::string& body,
                                const std::map<std::string, std::string>& headers,
                                std::uint64_t max_response_bytes = 1 << 20) = 0;

  // One request of any method; returns status, headers and body. As post(): non-2xx is NOT an
  // error. Transport failures, stalls and timeouts are Errc::network, an answer over
  // max_response_bytes Errc::too_large. The body is sent without "Expect: 100-continue" (API
  // requests to a server that takes them: no extra round trip). Clients that only know get() and
  // post() (fakes) answer Errc::unsupported.
  virtual Result<Response> request(const Request& req);
};

std::unique_ptr<Client> make_http_client(const ClientConfig& config = {});

// "2 B/s", "1 KB/s", "1.5 MB/s": a rate in the decimal units agent.toml's rates are written in.
std::string format_rate(std::uint64_t bytes_per_sec);

// Percent-encodes every byte outside RFC 3986's unreserved set (for role names in TUF URLs).
std::string percent_encode(std::string_view s);

}  // namespace mota::http
