// Keep-alive and worker options of the HTTP server (ServerConfig): how many requests one
// connection carries, and that `threads` idle keep-alive connections are all served at once.
// Raw loopback sockets, several requests written one after another on the same connection.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "net/http_server.hpp"

namespace mota::net {
namespace {

class Conn {
 public:
  explicit Conn(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Conn() { ::close(fd_); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Sends one keep-alive GET and reads its answer (head and Content-Length body). Returns the
  // head, or "" when the server closed the connection instead of answering.
  std::string get(const std::string& path) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size())) return "";
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return "";
    }
    std::string head = buf_.substr(0, end + 4);
    std::size_t length = 0;
    if (auto at = head.find("Content-Length: "); at != std::string::npos) {
      length = std::stoul(head.substr(at + 16));
    }
    while (buf_.size() < end + 4 + length) {
      if (!fill()) return "";
    }
    buf_.erase(0, end + 4 + length);
    return head;
  }

  // True when the server has closed the connection (EOF with nothing more to read).
  bool closed_by_server() {
    char c;
    return buf_.empty() && ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  bool fill() {
    char tmp[4096];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, std::size_t(n));
    return true;
  }
  int fd_;
  std::string buf_;
};

std::unique_ptr<HttpServer> start(ServerConfig config, int& port) {
  auto server = make_http_server(config);
  server->route("GET", "/ping", [](const HttpRequest&) {
    HttpReply r;
    r.body = "{\"ok\":true}";
    return r;
  });
  auto bound = server->start();
  EXPECT_TRUE(bound) << bound.error().message();
  port = bound ? *bound : 0;
  return server;
}

TEST(HttpServerKeepAlive, DefaultCarriesManyRequestsPerConnection) {
  int port = 0;
  auto server = start(ServerConfig{}, port);
  {
    Conn c(port);
    // Agents and the load test reuse connections for many requests (some servers close after 5).
    for (int i = 0; i < 50; ++i) {
      const std::string head = c.get("/ping");
      ASSERT_NE(head.find("HTTP/1.1 200"), std::string::npos) << "request " << i << ": " << head;
      EXPECT_EQ(head.find("Connection: close"), std::string::npos) << "request " << i;
    }
  }  // closed first: stop() lets open keep-alive connections run out their idle timeout
  server->stop();
}

TEST(HttpServerKeepAlive, ClosesAfterMaxCount) {
  ServerConfig config;
  config.keep_alive_max_count = 3;
  int port = 0;
  auto server = start(config, port);
  Conn c(port);
  EXPECT_EQ(c.get("/ping").find("Connection: close"), std::string::npos);
  EXPECT_EQ(c.get("/ping").find("Connection: close"), std::string::npos);
  const std::string third = c.get("/ping");
  EXPECT_NE(third.find("HTTP/1.1 200"), std::string::npos) << third;
  EXPECT_NE(third.find("Connection: close"), std::string::npos) << third;
  EXPECT_TRUE(c.closed_by_server());
  server->stop();
}

TEST(HttpServerKeepAlive, ServesAsManyOpenConnectionsAsThreads) {
  ServerConfig config;
  config.threads = 6;
  int port = 0;
  auto server = start(config, port);
  // Each open keep-alive connection holds a worker: with 6 workers, 6 connections opened and
  // kept open are all answered, in any order (with fewer workers the last ones would wait
  // for the keep-alive timeout of the first).
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < 6; ++i) {
    conns.push_back(std::make_unique<Conn>(port));
    ASSERT_NE(conns.back()->get("/ping").find("HTTP/1.1 200"), std::string::npos) << i;
  }
  for (int i = 5; i >= 0; --i) {
    ASSERT_NE(conns[std::size_t(i)]->get("/ping").find("HTTP/1.1 200"), std::string::npos) << i;
  }
  conns.clear();
  server->stop();
}

TEST(HttpServerKeepAlive, IdleConnectionClosedAfterTimeout) {
  ServerConfig config;
  config.keep_alive_timeout_s = 1;
  int port = 0;
  auto server = start(config, port);
  Conn c(port);
  ASSERT_NE(c.get("/ping").find("HTTP/1.1 200"), std::string::npos);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.closed_by_server());  // blocks until the server gives up on the idle connection
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(800));
  EXPECT_LT(waited, std::chrono::seconds(5));
  server->stop();
}

}  // namespace
}  // namespace mota::net
