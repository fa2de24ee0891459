// libFuzzer harness for the HTTP/1.1 request parser of `mota serve` (net/platform/epoll/,
// the only code that reads bytes from any device or client on the network). The server runs for
// the whole session on a loopback port with a few routes (blocking and asynchronous, with path
// parameters) and a static root; every input is sent as is on a fresh connection (so pipelined
// requests, split heads, bodies and garbage all arrive as the fuzzer wrote them), then the
// harness half-closes and reads until the server closes. Any crash, sanitizer report, leak or
// hang (no close within 10 s) is a bug. Invariants: every answer is an HTTP/1.1 response with a
// Content-Length, no more final answers than requests sent, and the static root never serves
// what lies outside it (a canary file next to it, reachable through a symlink and "..").
// Built with -DMOTA_FUZZ=ON and clang; run with `FUZZ_TARGET=http scripts/fuzz`. With
// MOTA_FUZZ_SEEDS=<dir> set, initialisation writes typical requests there.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "common/log.hpp"
#include "net/http_server.hpp"

namespace {

namespace stdfs = std::filesystem;
using namespace mota;
using namespace mota::net;

constexpr std::string_view kCanary = "MOTA-FUZZ-CANARY-outside-the-static-root";

std::unique_ptr<HttpServer> g_server;
int g_port = 0;

[[noreturn]] void finding(const std::string& what, std::string_view input,
                          std::string_view output) {
  std::fprintf(stderr, "http: %s\ninput: %.*s\noutput: %.*s\n", what.c_str(), int(input.size()),
               input.data(), int(std::min<std::size_t>(output.size(), 4096)), output.data());
  std::abort();
}

void write_seeds(const stdfs::path& dir) {
  auto seed = [&](const char* name, std::string_view bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
  };
  seed("get", "GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n\r\n");
  seed("range",
       "GET /targets/a.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=2-5\r\n\r\n"
       "HEAD /targets/a.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-3\r\n\r\n");
  seed("pipelined",
       "POST /v1/echo/dev-1?x=1&y=%41+b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
       "Expect: 100-continue\r\n\r\nhelloPOST /v1/async/z HTTP/1.1\r\nHost: x\r\n"
       "Content-Length: 0\r\n\r\nGET /v1/echo/%2e%2e HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
       "GET /targets/../secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  seed("bad",
       "GET  / HTTP/1.1\r\n\r\nPOST /v1/echo/a HTTP/1.1\r\nHost: x\r\n"
       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  seed("headers",
       "GET /link HTTP/1.1\r\nHost: x\r\nA: 1\r\na: 2\r\nContent-Length: 0\r\n"
       "Content-Length: 0\r\n\r\n");
  // RFC 9112 edge cases: absolute-form targets, Connection token lists, refused header lines.
  seed("absolute",
       "GET http://x:8080/v1/echo/a%20b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
       "GET HTTPS://x HTTP/1.1\r\nHost: x\r\n\r\nGET http://x/targets/a.bin HTTP/1.1\r\n"
       "Host: x\r\n\r\nGET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n");
  seed("connection",
       "GET /v1/echo/a HTTP/1.0\r\nConnection: Keep-Alive, Upgrade\r\n\r\n"
       "GET /v1/echo/b HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nConnection: CLOSE\r\n\r\n");
  seed("hosts", "GET /v1/echo/a HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
  seed("nohost", "GET /v1/echo/a HTTP/1.1\r\nX: 1\r\n\r\n");
  seed("fold", "GET /v1/echo/a HTTP/1.1\r\nHost: x\r\nA: 1\r\n\tb\r\n\r\n");
  seed("ctl", std::string("GET /v1/echo/a HTTP/1.1\r\nHost: x\r\nA: 1\nB: 2\rC: \0\r\n\r\n", 52));
  seed("name", "GET /v1/echo/a HTTP/1.1\r\nHost: x\r\nA(b): 1\r\nC : 2\r\n\r\n");
  // A body on a static GET: dropped when small, refused (413) when over 64 KiB.
  seed("static-body",
       "GET /targets/a.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
       "GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n");
}

void start_server(const stdfs::path& dir) {
  const stdfs::path root = dir / "root";
  stdfs::create_directories(root / "targets");
  stdfs::create_directories(root / "metadata");
  std::ofstream(root / "targets" / "a.bin") << "0123456789";
  std::ofstream(root / "metadata" / "timestamp.json") << "{}";
  std::ofstream(root / ".hidden") << kCanary;
  std::ofstream(dir / "secret") << kCanary;
  stdfs::create_symlink(dir / "secret", root / "link");
  ServerConfig config;
  config.static_root = root;
  config.io_threads = 1;
  config.threads = 2;
  config.max_body_bytes = 1 << 20;
  config.request_timeout_s = 5;
  config.static_cache_control = [](std::string_view rel) -> std::string {
    return rel.ends_with(".json") ? "no-store" : "";
  };
  g_server = make_http_server(config);
  g_server->route("POST", "/v1/echo/:id", [](const HttpRequest& req) {
    HttpReply r;
    r.body = "id=" + req.path_params.at("id") + " " + std::to_string(req.body.size());
    return r;
  });
  g_server->route("GET", "/v1/echo/:id", [](const HttpRequest& req) {
    HttpReply r;
    r.body = "id=" + req.path_params.at("id");
    r.headers["X-Query"] = std::to_string(req.query.size());
    return r;
  });
  g_server->route_async("POST", "/v1/async/:x", [](HttpRequest&& req, Responder respond) {
    HttpReply r;
    r.status = req.body.empty() ? 204 : 200;
    if (!req.body.empty()) r.body = "ok";
    respond(std::move(r));
  });
  auto port = g_server->start();
  if (!port) {
    std::fprintf(stderr, "http: server: %s\n", port.error().message().c_str());
    std::abort();
  }
  g_port = *port;
}

// Sends everything while reading the answers, half-closes, and reads until the server closes.
bool exchange(std::string_view input, std::string& output) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(g_port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    std::abort();
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::size_t sent = 0;
  bool shut = false;
  char buf[65536];
  while (std::chrono::steady_clock::now() < deadline) {
    if (sent == input.size() && !shut) {
      ::shutdown(fd, SHUT_WR);
      shut = true;
    }
    pollfd p{fd, short(POLLIN | (shut ? 0 : POLLOUT)), 0};
    if (::poll(&p, 1, 100) < 0) continue;
    if (p.revents & POLLOUT) {
      const ssize_t n = ::send(fd, input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
      if (n > 0) sent += std::size_t(n);
      if (n < 0 && errno != EAGAIN) {
        sent = input.size();  // the server closed early (it refused the request)
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) output.append(buf, std::size_t(n));
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        ::close(fd);
        return true;
      }
    }
  }
  ::close(fd);
  return false;
}

std::size_t count(std::string_view s, std::string_view what) {
  std::size_t n = 0;
  for (std::size_t at = s.find(what); at != std::string_view::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

// Walks the answers: each "HTTP/1.1 NNN ...", with Content-Length; interim 100s have none.
void check_output(std::string_view input, std::string_view output) {
  std::size_t finals = 0;
  std::string_view rest = output;
  while (!rest.empty()) {
    if (!rest.starts_with("HTTP/1.1 ")) finding("an answer that is not HTTP/1.1", input, output);
    const std::size_t end = rest.find("\r\n\r\n");
    if (end == std::string_view::npos) finding("an answer without its head", input, output);
    const std::string_view head = rest.substr(0, end);
    rest.remove_prefix(end + 4);
    if (head.starts_with("HTTP/1.1 100 ")) continue;
    ++finals;
    const std::size_t cl = head.find("\r\nContent-Length: ");
    if (cl == std::string_view::npos) finding("an answer without Content-Length", input, output);
    const std::uint64_t length = std::strtoull(head.data() + cl + 18, nullptr, 10);
    // A HEAD answer has no body: the next bytes are the next answer, or there are none.
    if (rest.empty() || rest.starts_with("HTTP/1.1 ") || length == 0) continue;
    if (rest.size() < length) finding("an answer shorter than its Content-Length", input, output);
    rest.remove_prefix(length);
  }
  // A head over 64 KiB is refused (431) before its end arrives.
  const std::size_t heads = count(input, "\r\n\r\n") + (input.size() > 64 * 1024 ? 1 : 0);
  if (finals > heads) finding("more answers than requests", input, output);
  // The echo routes reflect their path parameter: an input that itself carries the canary text
  // may get it back legitimately.
  if (output.find(kCanary) != std::string_view::npos &&
      input.find(kCanary) == std::string_view::npos) {
    finding("served a file from outside the static root", input, output);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  log::set_level(log::Level::error);  // one info line per request otherwise
  const stdfs::path dir =
      stdfs::temp_directory_path() / ("mota-fuzz-http-" + std::to_string(::getpid()));
  stdfs::remove_all(dir);
  stdfs::create_directories(dir);
  start_server(dir);
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) write_seeds(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string output;
  if (!exchange(input, output)) finding("the server did not close within 10 s", input, output);
  check_output(input, output);
  return 0;
}
