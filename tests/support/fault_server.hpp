#pragma once
// A deliberately misbehaving HTTP/1.1 server on a free loopback port, for fault-injection tests
// of HTTP clients (real sockets, real libcurl; only the server's behaviour is scripted).
//
// Every GET, whatever its path, is answered from `body`, one connection at a time, each answer
// with "Connection: close". A Range header "bytes=N-" is honoured with 206 unless ignore_range.
// Counters let tests prove what went over the wire (e.g. that a resume did not refetch).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mota::test {

struct FaultConfig {
  std::string body;
  // drop_after[i]: the i-th response that carries a body is cut (connection closed) after this
  // many body bytes; later responses are complete.
  std::vector<std::uint64_t> drop_after;
  bool ignore_range = false;  // always 200 with the whole body
  // Sends the body over and over without Content-Length (200, or 206 to a Range request) until
  // the client hangs up.
  bool endless = false;
  // The first fail_times requests are answered with fail_status and an empty body.
  int fail_status = 0;
  unsigned fail_times = 0;
  // Each response goes silent (sends nothing more, keeps the connection open) after this many
  // body bytes, until the client hangs up.
  std::uint64_t stall_after = UINT64_MAX;
  // Added to the Content-Length header (a server announcing more than it has).
  std::uint64_t announce_extra = 0;
  // Added to the first byte position of a 206's Content-Range (a server answering another range).
  std::uint64_t content_range_skew = 0;
  // Pause after every chunk_size body bytes (slow servers, for cancellation tests).
  std::size_t chunk_size = 64 * 1024;
  std::chrono::milliseconds chunk_delay{0};
};

class FaultServer {
 public:
  explicit FaultServer(FaultConfig config);  // binds and starts serving; aborts the test on error
  ~FaultServer();                            // stops and joins
  FaultServer(const FaultServer&) = delete;
  FaultServer& operator=(const FaultServer&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& path = "/file") const;

  std::uint64_t body_bytes_sent() const { return body_bytes_sent_.load(); }
  unsigned requests() const { return requests_.load(); }
  // The Range header of every request so far ("" when absent), in order.
  std::vector<std::string> ranges() const;

 private:
  void serve();
  void handle(int fd);
  bool send_all(int fd, const char* data, std::size_t n, bool body);
  void pause(std::chrono::milliseconds d);
  void wait_for_hangup(int fd);

  FaultConfig config_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> body_bytes_sent_{0};
  std::atomic<unsigned> requests_{0};
  unsigned bodies_ = 0;  // responses with a body so far (server thread only)
  mutable std::mutex mu_;
  std::vector<std::string> ranges_;
  std::thread thread_;
};

// A forwarding HTTP/1.1 proxy on a free loopback port in front of a real server (upstream), that
// cuts chosen responses short: the first `cut_times` responses to a GET whose path ends with
// `cut_suffix` are closed (both connections) after `cut_after` body bytes; and drips chosen ones:
// the body of every GET whose path ends with `slow_suffix` is forwarded at `slow_rate` bytes per
// second (a server that is slow but never silent). Everything else is forwarded unchanged,
// keep-alive included (requests are parsed one at a time per connection, each client connection
// has its own upstream connection; responses need a Content-Length or end with the upstream
// connection). Every request is recorded with the body bytes the proxy forwarded, and client
// connections are counted, so tests can prove what the client received and how.
//
// Thread-safety: the accessors may be called from any thread while the proxy runs.
struct DropProxyConfig {
  int upstream_port = 0;  // on 127.0.0.1
  std::string cut_suffix = ".mota";
  std::uint64_t cut_after = UINT64_MAX;
  unsigned cut_times = 1;
  std::string slow_suffix;  // "" = none
  std::uint64_t slow_rate = 2;
};

struct ProxiedRequest {
  std::string method;
  std::string path;              // as in the request line (no query parsing)
  std::string range;             // the Range header, "" when absent
  int status = 0;                // of the upstream response, 0 if none arrived
  std::uint64_t body_bytes = 0;  // body bytes forwarded to the client
  bool cut = false;              // this response was cut short by the proxy
};

class DropProxy {
 public:
  explicit DropProxy(DropProxyConfig config);  // binds and starts; aborts the test on error
  ~DropProxy();                                // stops, closes every connection and joins
  DropProxy(const DropProxy&) = delete;
  DropProxy& operator=(const DropProxy&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& path = "") const;
  // Every request whose response has ended (or was cut), in completion order.
  std::vector<ProxiedRequest> requests() const;
  // Sum of body_bytes over the requests whose path ends with `suffix`.
  std::uint64_t body_bytes(const std::string& suffix) const;
  // TCP connections clients opened to the proxy so far.
  unsigned connections() const { return connections_.load(); }

 private:
  void serve();
  void relay(int client);

  DropProxyConfig config_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<unsigned> connections_{0};
  mutable std::mutex mu_;
  unsigned cuts_ = 0;  // guarded by mu_
  std::vector<ProxiedRequest> requests_;
  std::vector<std::thread> workers_;  // accept thread only, joined on destruction
  std::thread thread_;
};

}  // namespace mota::test
