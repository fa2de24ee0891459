// What the HTTP server holds per connection (net/http_server.hpp, "Memory"): buffers go back
// after each request, idle keep-alive connections hold none, a body that no route takes is never
// buffered. Asserted with HttpServer::stats() and, for idle connections, with the resident memory
// of the process. Raw loopback sockets.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "net/http_server.hpp"
#include "tests/support/test_support.hpp"

namespace mota::net {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t kIdleBound = 16 * 1024;  // per connection, the bound

struct Answer {
  int status = 0;
  std::string head;
  std::string body;
};

// One client connection; reads give up after 10 s.
class Client {
 public:
  explicit Client(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
        << std::strerror(errno);
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(std::size_t(n));
    }
    return true;
  }

  // One answer (head, then Content-Length bytes of body); nullopt if the connection ends first.
  std::optional<Answer> read() {
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return std::nullopt;
    }
    Answer a;
    a.head = buf_.substr(0, end + 2);
    a.status = std::atoi(a.head.substr(9, 3).c_str());
    std::size_t length = 0;
    if (auto at = a.head.find("Content-Length: "); at != std::string::npos) {
      length = std::stoul(a.head.substr(at + 16));
    }
    buf_.erase(0, end + 4);
    while (buf_.size() < length) {
      if (!fill()) return std::nullopt;
    }
    a.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return a;
  }

  bool closed_by_server() {
    char c;
    const ssize_t n = ::recv(fd_, &c, 1, 0);
    return buf_.empty() && (n == 0 || (n < 0 && errno == ECONNRESET));
  }

 private:
  bool fill() {
    char tmp[65536];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, std::size_t(n));
    return true;
  }
  int fd_;
  std::string buf_;
};

long vm_rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

class HttpMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::write_file(tmp_ / "root" / "file.bin", "static file");
    log::set_level(log::Level::warn);  // thousands of access lines say nothing here
  }
  void TearDown() override {
    if (server_) server_->stop();
    log::set_level(log::Level::info);
  }

  int start(ServerConfig cfg = {}) {
    cfg.static_root = tmp_ / "root";
    server_ = make_http_server(cfg);
    server_->route("GET", "/ping", [](const HttpRequest&) {
      HttpReply r;
      r.body = "pong";
      return r;
    });
    server_->route("POST", "/upload", [](const HttpRequest& r) {
      HttpReply reply;
      reply.body = std::to_string(r.body.size());
      return reply;
    });
    server_->route("GET", "/big", [](const HttpRequest&) {
      HttpReply reply;
      reply.body = std::string(8 << 20, 'b');
      return reply;
    });
    auto port = server_->start();
    EXPECT_TRUE(port) << port.error().message();
    return port ? *port : 0;
  }

  // Polls stats() until `ok` holds (the server updates its figures right after it writes an
  // answer, so the client may see the answer first). The last figures, for messages.
  ServerStats wait_stats(const std::function<bool(const ServerStats&)>& ok) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    ServerStats st = server_->stats();
    while (!ok(st) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
      st = server_->stats();
    }
    return st;
  }

  test::TempDir tmp_;
  std::unique_ptr<HttpServer> server_;
};

std::string post(const std::string& path, const std::string& body) {
  return "POST " + path + " HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

// A 16 MiB body and an 8 MiB reply on a keep-alive connection: once answered, the connection
// drops back to the idle size (it used to keep the 16 MiB buffer for as long as it stayed open).
TEST_F(HttpMemoryTest, BigBodyAndReplyBuffersAreReleasedAfterTheRequest) {
  ServerConfig cfg;
  cfg.max_body_bytes = 16 << 20;
  const int port = start(cfg);
  Client c(port);
  // While the body arrives it is buffered, and counted.
  const std::string body(16 << 20, 'x');
  const std::string request = post("/upload", body);
  ASSERT_TRUE(c.send(std::string_view(request).substr(0, request.size() / 2)));
  auto mid = wait_stats([](const ServerStats& s) { return s.buffered_bytes >= (4 << 20); });
  EXPECT_GE(mid.buffered_bytes, std::size_t(4) << 20) << "a body being received is not counted";
  ASSERT_TRUE(c.send(std::string_view(request).substr(request.size() / 2)));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, std::to_string(16 << 20));
  auto after = wait_stats([](const ServerStats& s) { return s.buffered_bytes <= kIdleBound; });
  EXPECT_LE(after.buffered_bytes, kIdleBound) << "the 16 MiB body is still held";
  EXPECT_EQ(after.open_connections, 1u);

  ASSERT_TRUE(c.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n"));
  auto big = c.read();
  ASSERT_TRUE(big);
  EXPECT_EQ(big->body.size(), std::size_t(8) << 20);
  after = wait_stats([](const ServerStats& s) { return s.buffered_bytes <= kIdleBound; });
  EXPECT_LE(after.buffered_bytes, kIdleBound) << "the 8 MiB reply is still held";

  // Still a working keep-alive connection.
  ASSERT_TRUE(c.send("GET /ping HTTP/1.1\r\nHost: h\r\n\r\n"));
  auto ping = c.read();
  ASSERT_TRUE(ping);
  EXPECT_EQ(ping->body, "pong");
  EXPECT_EQ(server_->stats().requests_served, 3u);
}

// Idle keep-alive connections (after a request) and connections that sent one byte hold no
// buffer: N of them cost at most N * 16 KiB, counted by the server and in resident memory
// (each used to cost a 64 KiB read buffer).
// Bodies in flight have one budget for all connections (ServerConfig::max_bodies_bytes): a head
// whose body would pass it is refused with 503 before any of the body is read; the budget frees
// when an answer starts, or when a connection with a body pending goes away.
TEST_F(HttpMemoryTest, BodiesInFlightStayWithinTheBudget) {
  ServerConfig cfg;
  cfg.io_threads = 1;
  cfg.request_timeout_s = 60;
  cfg.max_bodies_bytes = 1 << 20;
  const int port = start(cfg);
  const std::string head = "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 400000\r\n\r\n";
  auto a = std::make_unique<Client>(port);
  auto b = std::make_unique<Client>(port);
  ASSERT_TRUE(a->send(head + std::string(1000, 'a')));
  ASSERT_TRUE(b->send(head + std::string(1000, 'b')));
  auto st = wait_stats([](const ServerStats& s) { return s.bodies_reserved == 800000; });
  ASSERT_EQ(st.bodies_reserved, 800000u);
  Client c(port);
  ASSERT_TRUE(c.send(head));
  auto refused = c.read();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  EXPECT_NE(refused->body.find("at the server's budget (max_bodies_bytes 1048576)"),
            std::string::npos)
      << refused->body;
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_EQ(server_->stats().bodies_reserved, 800000u);
  // A body that fits is taken.
  Client small(port);
  ASSERT_TRUE(small.send(post("/upload", std::string(200000, 's'))));
  auto ok = small.read();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->body, "200000");
  // Answered: its part is free again; gone: so is the other's.
  ASSERT_TRUE(a->send(std::string(399000, 'a')));
  ok = a->read();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->body, "400000");
  EXPECT_EQ(
      wait_stats([](const ServerStats& s) { return s.bodies_reserved == 400000; }).bodies_reserved,
      400000u);
  b.reset();
  EXPECT_EQ(wait_stats([](const ServerStats& s) { return s.bodies_reserved == 0; }).bodies_reserved,
            0u);
  Client d(port);
  ASSERT_TRUE(d.send(post("/upload", std::string(1 << 20, 'd'))));
  ok = d.read();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->body, std::to_string(1 << 20));
}

TEST_F(HttpMemoryTest, IdleConnectionsCostAtMost16KiBEach) {
  ServerConfig cfg;
  cfg.io_threads = 1;
  cfg.keep_alive_timeout_s = 60;
  cfg.request_timeout_s = 60;
  const int port = start(cfg);
  constexpr std::size_t kEach = 500;
  const long rss_before = vm_rss_kib();
  ASSERT_GT(rss_before, 0);
  std::vector<std::unique_ptr<Client>> served, one_byte;
  for (std::size_t i = 0; i < kEach; ++i) {
    served.push_back(std::make_unique<Client>(port));
    ASSERT_TRUE(served.back()->send("GET /ping HTTP/1.1\r\nHost: h\r\n\r\n"));
    one_byte.push_back(std::make_unique<Client>(port));
    ASSERT_TRUE(one_byte.back()->send("G"));
  }
  for (auto& c : served) {
    auto r = c->read();
    ASSERT_TRUE(r);
    ASSERT_EQ(r->body, "pong");
  }
  auto st = wait_stats([&](const ServerStats& s) {
    return s.open_connections == 2 * kEach && s.requests_served == kEach;
  });
  ASSERT_EQ(st.open_connections, 2 * kEach);
  const long rss_after = vm_rss_kib();
  EXPECT_LE(st.buffered_bytes, 2 * kEach * kIdleBound);
  EXPECT_LE(st.buffered_bytes, 2 * kEach) << "idle connections should hold (almost) nothing";
  const long per_conn_bytes = (rss_after - rss_before) * 1024 / long(2 * kEach);
  EXPECT_LE(per_conn_bytes, long(kIdleBound))
      << "resident memory grew from " << rss_before << " to " << rss_after << " KiB";
  // They are all still usable.
  for (auto* group : {&served, &one_byte}) {
    auto& c = *group->front();
    ASSERT_TRUE(c.send(group == &served ? "GET /ping HTTP/1.1\r\nHost: h\r\n\r\n"
                                        : "ET /ping HTTP/1.1\r\nHost: h\r\n\r\n"));
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "pong");
  }
}

// A body on a request that no route takes (a GET of a static file) is not buffered: over 64 KiB
// it is refused before it is read, smaller it is read and dropped, and the connection goes on.
TEST_F(HttpMemoryTest, BodyOnAStaticGetIsRefusedOrDropped) {
  ServerConfig cfg;
  cfg.max_body_bytes = 16 << 20;
  const int port = start(cfg);
  {
    Client c(port);
    // Only the head: the refusal must not wait for the 16 MiB.
    ASSERT_TRUE(c.send("GET /file.bin HTTP/1.1\r\nHost: h\r\nContent-Length: 16777216\r\n\r\n"));
    auto r = c.read();
    ASSERT_TRUE(r) << "no answer before the body";
    EXPECT_EQ(r->status, 413);
    EXPECT_NE(r->body.find("takes no body"), std::string::npos) << r->body;
    EXPECT_TRUE(c.closed_by_server());
  }
  {
    Client c(port);  // a small body is dropped as it streams; pipelined requests stay in step
    ASSERT_TRUE(c.send("GET /file.bin HTTP/1.1\r\nHost: h\r\nContent-Length: 60000\r\n\r\n" +
                       std::string(60000, 'z') + "GET /ping HTTP/1.1\r\nHost: h\r\n\r\n" +
                       "POST /nowhere HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" +
                       "GET /ping HTTP/1.1\r\nHost: h\r\n\r\n"));
    auto file = c.read();
    ASSERT_TRUE(file);
    EXPECT_EQ(file->status, 200);
    EXPECT_EQ(file->body, "static file");
    auto ping = c.read();
    ASSERT_TRUE(ping);
    EXPECT_EQ(ping->body, "pong");
    auto nowhere = c.read();
    ASSERT_TRUE(nowhere);
    EXPECT_EQ(nowhere->status, 404);
    auto again = c.read();
    ASSERT_TRUE(again);
    EXPECT_EQ(again->body, "pong");
  }
}

// A client that announces a big body and sends a trickle holds what it sent, not what it
// announced.
TEST_F(HttpMemoryTest, AnnouncedBodyIsNotReservedAhead) {
  ServerConfig cfg;
  cfg.max_body_bytes = 16 << 20;
  const int port = start(cfg);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<Client>(port));
    ASSERT_TRUE(clients.back()->send(
        "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 16777216\r\n\r\nab"));
  }
  auto st = wait_stats([](const ServerStats& s) { return s.open_connections == 20; });
  ASSERT_EQ(st.open_connections, 20u);
  EXPECT_LE(st.buffered_bytes, 20 * 128 * 1024) << "announced bodies reserved ahead";
}

// A body that trickles in after its head: the head is parsed once. (The server used to parse the
// head again on every read while the body arrived: two slow clients took 79% of a core.) The
// body is sent only once the head has been parsed, so it is necessarily another read: a server
// that parses per read counts two heads or more.
TEST_F(HttpMemoryTest, HeadIsParsedOnceWhileItsBodyTrickles) {
  const int port = start();
  Client c(port);
  ASSERT_TRUE(c.send("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 3000\r\n\r\n"));
  auto st = wait_stats([](const ServerStats& s) { return s.heads_parsed >= 1; });
  ASSERT_EQ(st.heads_parsed, 1u);
  for (int part = 0; part < 3; ++part) ASSERT_TRUE(c.send(std::string(1000, 'x')));
  auto answer = c.read();
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(answer->body, "3000");
  EXPECT_EQ(server_->stats().heads_parsed, 1u);
  // A second request on the connection is a second head.
  ASSERT_TRUE(c.send("GET /ping HTTP/1.1\r\nHost: h\r\n\r\n"));
  ASSERT_TRUE(c.read());
  EXPECT_EQ(server_->stats().heads_parsed, 2u);
}

}  // namespace
}  // namespace mota::net
