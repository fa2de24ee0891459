// The HTTP server on a Unix-domain socket (ServerConfig::unix_socket), alone or next to TCP: real
// sockets in a temp directory, raw requests. What the runtime relies on: the socket's mode, "unix"
// as the remote address, a file in the way refused and left alone, the file removed by stop()
// unless someone else's socket replaced it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "common/http.hpp"
#include "net/http_server.hpp"
#include "tests/support/test_support.hpp"

namespace mota::net {
namespace {

namespace stdfs = std::filesystem;

// One request on a fresh connection (Connection: close); the whole answer, "" if none came.
std::string exchange(int fd, const std::string& path) {
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size())) return "";
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, std::size_t(n));
  ::close(fd);
  return answer;
}

int connect_unix(const stdfs::path& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int connect_tcp(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Answers with the caller's remote address.
std::unique_ptr<HttpServer> make_server(const ServerConfig& config) {
  auto server = make_http_server(config);
  server->route("GET", "/who", [](const HttpRequest& req) {
    HttpReply r;
    r.content_type = "text/plain";
    r.body = "remote=" + req.remote_addr;
    return r;
  });
  return server;
}

TEST(HttpServerUnix, ServesOnASocketOnlyWithItsModeAndRemovesItOnStop) {
  test::TempDir tmp;
  ServerConfig config;
  config.host.clear();  // no TCP
  config.unix_socket = tmp / "api.sock";
  config.unix_socket_mode = 0600;
  auto server = make_server(config);
  auto port = server->start();
  ASSERT_TRUE(port) << port.error().message();
  EXPECT_EQ(*port, 0);  // no TCP listener

  struct stat st {};
  ASSERT_EQ(::lstat(config.unix_socket.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  for (int i = 0; i < 3; ++i) {
    int fd = connect_unix(config.unix_socket);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    std::string answer = exchange(fd, "/who");
    EXPECT_EQ(answer.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << answer;
    EXPECT_NE(answer.find("\r\n\r\nremote=unix"), std::string::npos) << answer;
  }
  server->stop();
  EXPECT_FALSE(stdfs::exists(stdfs::symlink_status(config.unix_socket)));
  EXPECT_LT(connect_unix(config.unix_socket), 0);
}

TEST(HttpServerUnix, TcpAndUnixAtOnce) {
  test::TempDir tmp;
  ServerConfig config;
  config.unix_socket = tmp / "api.sock";
  auto server = make_server(config);
  auto port = server->start();
  ASSERT_TRUE(port) << port.error().message();
  ASSERT_GT(*port, 0);
  EXPECT_EQ(stdfs::status(config.unix_socket).permissions() & stdfs::perms::all,
            stdfs::perms::owner_read | stdfs::perms::owner_write | stdfs::perms::group_read |
                stdfs::perms::group_write);  // the default 0660

  int u = connect_unix(config.unix_socket);
  ASSERT_GE(u, 0);
  EXPECT_NE(exchange(u, "/who").find("remote=unix"), std::string::npos);
  int t = connect_tcp(*port);
  ASSERT_GE(t, 0);
  EXPECT_NE(exchange(t, "/who").find("remote=127.0.0.1"), std::string::npos);
  server->stop();
  EXPECT_FALSE(stdfs::exists(config.unix_socket));
}

TEST(HttpServerUnix, BadListenersAreRefusedAndLeaveFilesAlone) {
  test::TempDir tmp;
  {
    ServerConfig config;
    config.host.clear();
    auto r = make_server(config)->start();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    EXPECT_NE(r.error().message().find("no listener"), std::string::npos) << r.error().message();
  }
  {
    ServerConfig config;
    config.port = -1;  // also no TCP
    auto r = make_server(config)->start();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  }
  {
    ServerConfig config;
    config.host.clear();
    config.unix_socket = tmp / std::string(120, 's');
    auto r = make_server(config)->start();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    EXPECT_NE(r.error().message().find("socket path too long"), std::string::npos)
        << r.error().message();
  }
  {
    // A regular file in the way: refused, and the file is still there with its content.
    test::write_file(tmp / "taken.sock", "mine");
    ServerConfig config;
    config.host.clear();
    config.unix_socket = tmp / "taken.sock";
    auto r = make_server(config)->start();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::io);
    EXPECT_NE(r.error().message().find("a file is in the way"), std::string::npos)
        << r.error().message();
    EXPECT_EQ(test::read_file(tmp / "taken.sock"), "mine");
  }
  {
    // The Unix socket is bound but TCP fails: nothing is left listening or on disk.
    auto holder = make_http_server(ServerConfig{});
    auto held = holder->start();
    ASSERT_TRUE(held);
    ServerConfig config;
    config.port = *held;
    config.unix_socket = tmp / "half.sock";
    auto r = make_server(config)->start();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::io);
    EXPECT_FALSE(stdfs::exists(stdfs::symlink_status(config.unix_socket)));
  }
}

TEST(HttpServerUnix, StopLeavesASocketThatReplacedOurs) {
  // Another server took the path over (after removing ours): stopping the first must not remove
  // the second one's socket.
  test::TempDir tmp;
  ServerConfig config;
  config.host.clear();
  config.unix_socket = tmp / "api.sock";
  auto first = make_server(config);
  ASSERT_TRUE(first->start());
  ASSERT_TRUE(stdfs::remove(config.unix_socket));
  auto second = make_server(config);
  ASSERT_TRUE(second->start());
  first->stop();
  int fd = connect_unix(config.unix_socket);
  ASSERT_GE(fd, 0) << "the second server's socket is gone";
  EXPECT_NE(exchange(fd, "/who").find("remote=unix"), std::string::npos);
  second->stop();
  EXPECT_FALSE(stdfs::exists(config.unix_socket));
}

TEST(HttpServerUnix, CommonClientSpeaksToItOverTheSocket) {
  // common/http.hpp's client with ClientConfig::unix_socket and request(): what mota-runtime's
  // client is built on. A body from the caller's buffer, response headers, non-2xx as a status.
  test::TempDir tmp;
  ServerConfig config;
  config.host.clear();
  config.unix_socket = tmp / "api.sock";
  auto server = make_http_server(config);
  server->route("POST", "/echo/:name", [](const HttpRequest& req) {
    HttpReply r;
    r.content_type = "application/octet-stream";
    r.body = req.body;
    r.headers["X-Echo-Name"] = req.path_params.at("name");
    r.headers["X-Echo-Type"] =
        req.headers.count("content-type") ? req.headers.at("content-type") : "";
    r.headers["X-Echo-Expect"] = req.headers.count("expect") ? req.headers.at("expect") : "none";
    return r;
  });
  ASSERT_TRUE(server->start());

  http::ClientConfig cc;
  cc.unix_socket = config.unix_socket.string();
  auto client = http::make_http_client(cc);
  const std::string body(3u << 20, 'b');  // big enough for curl to think of 100-continue
  http::Request req;
  req.method = "POST";
  req.url = "http://localhost/echo/a%20b";
  req.body = body;
  req.headers = {{"Content-Type", "application/x-test"}};
  req.max_response_bytes = 4u << 20;
  for (int i = 0; i < 2; ++i) {  // the second on the kept-alive connection
    auto r = client->request(req);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, body);
    EXPECT_EQ(r->headers["x-echo-name"], "a b");
    EXPECT_EQ(r->headers["x-echo-type"], "application/x-test");
    EXPECT_EQ(r->headers["x-echo-expect"], "none");
    EXPECT_EQ(r->headers["content-length"], std::to_string(body.size()));
  }
  // Non-2xx is a status, not an error; an answer over the limit is Errc::too_large.
  http::Request missing;
  missing.url = "http://localhost/nothing";
  auto r = client->request(missing);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, 404);
  req.max_response_bytes = 1000;
  auto big = client->request(req);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), Errc::too_large);
  http::Request bad_method = missing;
  bad_method.method = "BREW";
  auto brew = client->request(bad_method);
  ASSERT_FALSE(brew);
  EXPECT_EQ(brew.error().code(), Errc::invalid_argument);

  // Nobody on the socket: a network error.
  server->stop();
  auto gone = client->request(missing);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), Errc::network);
}

}  // namespace
}  // namespace mota::net
