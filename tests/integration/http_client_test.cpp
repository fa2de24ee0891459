// The libcurl client against real loopback servers: mota's own HttpServer, a real nginx, and tiny
// raw-socket servers for misbehaviour no proper server produces (ignored ranges, endless bodies,
// dropped connections, silence).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <random>
#include <thread>

#include "common/http.hpp"
#include "net/http_server.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string random_bytes(std::size_t n, unsigned seed = 42) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

http::GetRequest get_req(std::string url, std::uint64_t max_bytes,
                         std::chrono::milliseconds timeout = {}) {
  http::GetRequest r;
  r.url = std::move(url);
  r.max_bytes = max_bytes;
  r.timeout = timeout;
  return r;
}

template <class F>
http::ClientConfig config(F edit) {
  http::ClientConfig c;
  edit(c);
  return c;
}

net::HttpReply redirect_to(std::string location) {
  net::HttpReply r;
  r.status = 302;
  r.headers["Location"] = std::move(location);
  return r;
}

// Collects what the client delivers.
struct Collect {
  std::string data;
  int calls = 0;
  http::Sink sink() {
    return [this](std::span<const std::byte> b) -> Status {
      data.append(reinterpret_cast<const char*>(b.data()), b.size());
      ++calls;
      return {};
    };
  }
};

// A one-behaviour TCP server on 127.0.0.1: reads each request's header block, then hands the
// connection to `serve`. Connections are handled one at a time on a background thread.
class RawServer {
 public:
  using Serve =
      std::function<void(int fd, const std::string& request, const std::atomic<bool>& stop)>;

  explicit RawServer(Serve serve) : serve_(std::move(serve)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 16), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~RawServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  std::string url(const std::string& path = "/x") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int requests() const { return requests_; }

  // Writes everything unless the peer goes away; false then.
  static bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        pollfd q{fd, POLLIN, 0};
        if (::poll(&q, 1, 2000) <= 0) break;
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
      }
      ++requests_;
      serve_(fd, req, stop_);
      ::close(fd);
    }
  }

  Serve serve_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

// ---- against real servers: mota's HttpServer and nginx ------------------------------------------

class RealServerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    data_ = random_bytes(1 << 20);
    test::write_file(root_.path() / "pkg" / "model.bin", data_);
    test::write_file(root_.path() / "empty.bin", "");
    if (GetParam() == "nginx") {
      if (!test::Nginx::available()) GTEST_SKIP() << test::Nginx::kBinary << " not installed";
      nginx_ = std::make_unique<test::Nginx>(root_.path(), work_.path());
      ASSERT_NE(nginx_->port(), 0);
      base_ = nginx_->url("");
    } else {
      net::ServerConfig cfg;
      cfg.static_root = root_.path();
      server_ = net::make_http_server(cfg);
      auto port = server_->start();
      ASSERT_TRUE(port) << port.error().message();
      base_ = "http://127.0.0.1:" + std::to_string(*port);
    }
  }

  std::string data_;
  test::TempDir root_, work_;
  std::unique_ptr<test::Nginx> nginx_;
  std::unique_ptr<net::HttpServer> server_;
  std::string base_;
};

TEST_P(RealServerTest, FullGetDeliversEveryByteInOrder) {
  auto client = http::make_http_client();
  Collect c;
  http::GetRequest req = get_req(base_ + "/pkg/model.bin", data_.size());
  auto info = client->get(req, c.sink());
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->status, 200);
  EXPECT_FALSE(info->partial);
  EXPECT_EQ(info->content_length, data_.size());
  EXPECT_EQ(info->bytes_received, data_.size());
  EXPECT_TRUE(c.data == data_);

  // The handle is reused: a second request on the same client works too.
  auto body = client->get_body(base_ + "/empty.bin", 10);
  ASSERT_TRUE(body) << body.error().message();
  EXPECT_EQ(*body, "");
}

TEST_P(RealServerTest, RangeResumeGetsTheTail) {
  auto client = http::make_http_client();
  for (std::uint64_t start : {std::uint64_t{0}, std::uint64_t{300'001}, data_.size() - 1}) {
    Collect c;
    http::GetRequest req = get_req(base_ + "/pkg/model.bin", data_.size());
    req.range_start = start;
    auto info = client->get(req, c.sink());
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_EQ(info->status, 206);
    EXPECT_TRUE(info->partial);
    EXPECT_EQ(info->content_length, data_.size() - start);
    EXPECT_EQ(info->bytes_received, data_.size() - start);
    EXPECT_TRUE(c.data == data_.substr(start)) << "start " << start;
  }
}

TEST_P(RealServerTest, RangeStartAtTheEndIsRefusedByTheServer) {
  // What a resumed download sees when its .part file is already complete.
  auto client = http::make_http_client();
  Collect c;
  http::GetRequest req = get_req(base_ + "/pkg/model.bin", data_.size());
  req.range_start = data_.size();
  auto info = client->get(req, c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::http);
  EXPECT_EQ(info.error().message(), "GET " + req.url + ": HTTP 416");
  EXPECT_EQ(c.calls, 0);
}

TEST_P(RealServerTest, NotFoundIsAnHttpErrorAndNothingReachesTheSink) {
  auto client = http::make_http_client();
  Collect c;
  http::GetRequest req = get_req(base_ + "/missing.json", 1 << 20);
  auto info = client->get(req, c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::http);
  EXPECT_EQ(info.error().message(), "GET " + req.url + ": HTTP 404");
  EXPECT_EQ(c.calls, 0);
}

TEST_P(RealServerTest, AnnouncedLengthOverTheLimitIsRefusedBeforeDelivery) {
  auto client = http::make_http_client();
  Collect c;
  http::GetRequest req = get_req(base_ + "/pkg/model.bin", data_.size() - 1);
  auto info = client->get(req, c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::too_large);
  EXPECT_NE(info.error().message().find(std::to_string(data_.size() - 1)), std::string::npos)
      << info.error().message();
  EXPECT_EQ(c.calls, 0);
}

TEST_P(RealServerTest, SinkErrorAbortsAndIsReturnedAsIs) {
  auto client = http::make_http_client();
  int calls = 0;
  http::GetRequest req = get_req(base_ + "/pkg/model.bin", data_.size());
  auto info = client->get(req, [&](std::span<const std::byte>) -> Status {
    ++calls;
    return fail(Errc::no_space, "write model.bin.part: No space left on device");
  });
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::no_space);
  EXPECT_EQ(info.error().message(), "write model.bin.part: No space left on device");
  EXPECT_EQ(calls, 1);
}

INSTANTIATE_TEST_SUITE_P(Servers, RealServerTest, ::testing::Values("mota", "nginx"),
                         [](const auto& info) { return info.param; });

// ---- misbehaving servers ------------------------------------------------------------------------

TEST(HttpClient, ServerIgnoringRangeGivesTheWholeBodyNotPartial) {
  const std::string body = random_bytes(100'000, 7);
  std::string seen_request;
  RawServer srv([&](int fd, const std::string& request, const std::atomic<bool>&) {
    seen_request = request;
    RawServer::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                                "\r\nConnection: close\r\n\r\n" + body);
  });
  auto client = http::make_http_client();
  Collect c;
  http::GetRequest req = get_req(srv.url(), body.size());
  req.range_start = 5000;
  auto info = client->get(req, c.sink());
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_NE(seen_request.find("Range: bytes=5000-"), std::string::npos) << seen_request;
  EXPECT_EQ(info->status, 200);
  EXPECT_FALSE(info->partial);
  EXPECT_EQ(info->bytes_received, body.size());
  EXPECT_TRUE(c.data == body);
}

TEST(HttpClient, PartialAnswerForADifferentRangeIsRejected) {
  RawServer srv([&](int fd, const std::string&, const std::atomic<bool>&) {
    RawServer::send_all(fd,
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n"
                        "Content-Length: 10\r\nConnection: close\r\n\r\n0123456789");
  });
  auto client = http::make_http_client();
  Collect c;
  http::GetRequest req = get_req(srv.url(), 100);
  req.range_start = 50;
  auto info = client->get(req, c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::http);
  EXPECT_NE(info.error().message().find("bytes 0-9/100"), std::string::npos)
      << info.error().message();
  EXPECT_EQ(c.calls, 0);
}

TEST(HttpClient, EndlessBodyIsCutOffAtTheLimit) {
  RawServer srv([](int fd, const std::string&, const std::atomic<bool>& stop) {
    if (!RawServer::send_all(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")) return;
    const std::string chunk(64 * 1024, 'x');
    while (!stop && RawServer::send_all(fd, chunk)) {
    }
  });
  auto client = http::make_http_client();
  Collect c;
  const std::uint64_t limit = 1'000'000;
  auto t0 = Clock::now();
  auto info = client->get(get_req(srv.url(), limit), c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::too_large);
  EXPECT_NE(info.error().message().find("server sent more than 1000000 bytes"), std::string::npos)
      << info.error().message();
  EXPECT_LE(c.data.size(), limit);
  EXPECT_LT(seconds_since(t0), 3.0);
}

TEST(HttpClient, ConnectionDroppedMidBodyIsANetworkError) {
  RawServer srv([](int fd, const std::string&, const std::atomic<bool>&) {
    RawServer::send_all(
        fd, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + std::string(40'000, 'a'));
  });
  auto client = http::make_http_client();
  Collect c;
  auto info = client->get(get_req(srv.url(), 1 << 20), c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::network);
  EXPECT_NE(info.error().message().find("GET " + srv.url() + ": "), std::string::npos);
  EXPECT_LE(c.data.size(), 40'000u);
}

TEST(HttpClient, ConnectionRefusedIsANetworkErrorWithCurlsText) {
  auto client = http::make_http_client();
  Collect c;
  std::string url = "http://127.0.0.1:" + std::to_string(test::free_port()) + "/x";
  auto info = client->get(get_req(url, 10), c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::network);
  EXPECT_NE(info.error().message().find("onnect"), std::string::npos) << info.error().message();
}

// A server that sends headers and `body_start`, then says nothing until the test ends.
RawServer::Serve silent_after_headers(std::string body_start = "") {
  return [body_start](int fd, const std::string&, const std::atomic<bool>& stop) {
    RawServer::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + body_start);
    while (!stop) std::this_thread::sleep_for(10ms);
  };
}

TEST(HttpClient, CancelFlagStopsAStalledTransferPromptly) {
  RawServer srv(silent_after_headers("abc"));
  std::atomic<bool> cancel{false};
  auto client = http::make_http_client(config([&](auto& c) { c.cancel = &cancel; }));
  Collect c;
  Clock::time_point cancelled_at;
  std::thread canceller([&] {
    std::this_thread::sleep_for(300ms);
    cancelled_at = Clock::now();
    cancel = true;
  });
  auto info = client->get(get_req(srv.url(), 1 << 20), c.sink());
  canceller.join();
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::cancelled);
  EXPECT_LT(seconds_since(cancelled_at), 1.0);

  // Already cancelled: nothing is even sent.
  int before = srv.requests();
  auto again = client->get(get_req(srv.url(), 1 << 20), c.sink());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), Errc::cancelled);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(srv.requests(), before);
}

TEST(HttpClient, SilentServerIsCutOffByTheMinimumRate) {
  RawServer srv(silent_after_headers());
  auto client = http::make_http_client(config([](auto& c) { c.min_rate_window = 1000ms; }));
  Collect c;
  auto t0 = Clock::now();
  auto info = client->get(get_req(srv.url(), 1 << 20), c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::network);
  EXPECT_NE(info.error().message().find("stalled: "), std::string::npos) << info.error().message();
  EXPECT_GE(seconds_since(t0), 0.9);
  EXPECT_LT(seconds_since(t0), 5.0);
}

// A server dripping 2 bytes a second passes curl's own low-speed guard (1 byte/s) for ever; the
// minimum average rate cuts it off after one window and says by how much it missed.
TEST(HttpClient, DrippingServerIsCutOffWithinTheWindow) {
  RawServer srv([](int fd, const std::string&, const std::atomic<bool>& stop) {
    if (!RawServer::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")) return;
    while (!stop && RawServer::send_all(fd, "x")) {
      for (int i = 0; i < 25 && !stop; ++i) std::this_thread::sleep_for(20ms);  // 2 bytes/s
    }
  });
  auto client = http::make_http_client(config([](auto& c) {
    c.min_rate = 1000;
    c.min_rate_window = 2000ms;
  }));
  Collect c;
  auto t0 = Clock::now();
  auto info = client->get(get_req(srv.url(), 1 << 20), c.sink());
  const double took = seconds_since(t0);
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::network);
  const std::string& msg = info.error().message();
  EXPECT_NE(msg.find("GET " + srv.url() + ": stalled: "), std::string::npos) << msg;
  EXPECT_NE(msg.find(" bytes in 2."), std::string::npos) << msg;
  EXPECT_NE(msg.find("below the minimum 1 KB/s"), std::string::npos) << msg;
  EXPECT_GE(took, 1.9);
  EXPECT_LT(took, 4.0);
  EXPECT_GT(c.data.size(), 0u);  // bytes did arrive: it was slow, not silent
}

TEST(HttpClient, TransferAboveTheMinimumRateIsNotCutOff) {
  // 4 KB/s for 3 s against a minimum of 1 KB/s over 1 s.
  RawServer srv([](int fd, const std::string&, const std::atomic<bool>& stop) {
    if (!RawServer::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 12000\r\n\r\n")) return;
    for (int i = 0; i < 30 && !stop; ++i) {
      if (!RawServer::send_all(fd, std::string(400, 'y'))) return;
      std::this_thread::sleep_for(100ms);
    }
  });
  auto client = http::make_http_client(config([](auto& c) {
    c.min_rate = 1000;
    c.min_rate_window = 1000ms;
  }));
  Collect c;
  auto info = client->get(get_req(srv.url(), 1 << 20), c.sink());
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(c.data, std::string(12000, 'y'));
}

TEST(HttpClient, WholeRequestTimeout) {
  RawServer srv(silent_after_headers());
  auto client = http::make_http_client();
  Collect c;
  auto t0 = Clock::now();
  auto info = client->get(get_req(srv.url(), 1 << 20, 300ms), c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::network);
  EXPECT_NE(info.error().message().find("timed out"), std::string::npos) << info.error().message();
  EXPECT_LT(seconds_since(t0), 2.0);
}

// Reads one request head from a kept-alive connection; false when the client closed it.
bool read_request(int fd, std::string& buf) {
  char tmp[4096];
  while (buf.find("\r\n\r\n") == std::string::npos) {
    pollfd q{fd, POLLIN, 0};
    if (::poll(&q, 1, 2000) <= 0) return false;
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<std::size_t>(n));
  }
  buf.erase(0, buf.find("\r\n\r\n") + 4);
  return true;
}

// A 404 with a small body, then whatever comes next on the same connection is answered 200: a
// TUF client's root probe followed by timestamp.json. The body of the 404 is read (not delivered),
// so the second request reuses the connection.
TEST(HttpClient, ErrorBodyIsDrainedSoTheConnectionIsReused) {
  std::atomic<int> answered{0};
  RawServer srv([&](int fd, const std::string&, const std::atomic<bool>&) {
    // Counted before each answer is sent: the client may check the count as soon as it has
    // the answer, before this thread would run again.
    const std::string not_found = R"({"error":"not found"})";
    ++answered;
    if (!RawServer::send_all(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: " +
                                     std::to_string(not_found.size()) + "\r\n\r\n" + not_found))
      return;
    std::string buf;
    while (read_request(fd, buf)) {
      ++answered;
      if (!RawServer::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) return;
    }
  });
  auto client = http::make_http_client();
  Collect c;
  auto missing = client->get(get_req(srv.url("/2.root.json"), 1000), c.sink());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::http);
  EXPECT_EQ(missing.error().http_status(), 404);
  EXPECT_EQ(c.calls, 0) << "an error body is never delivered";
  auto body = client->get_body(srv.url("/timestamp.json"), 1000);
  ASSERT_TRUE(body) << body.error().message();
  EXPECT_EQ(*body, "ok");
  EXPECT_EQ(answered.load(), 2);
  EXPECT_EQ(srv.requests(), 1) << "both requests on one connection";
}

TEST(HttpClient, HugeErrorBodyIsNotRead) {
  RawServer srv([](int fd, const std::string&, const std::atomic<bool>& stop) {
    if (!RawServer::send_all(fd, "HTTP/1.1 500 Oops\r\nContent-Length: 100000000\r\n\r\n")) return;
    const std::string chunk(64 * 1024, 'e');
    while (!stop && RawServer::send_all(fd, chunk)) {
    }
  });
  auto client = http::make_http_client();
  Collect c;
  auto t0 = Clock::now();
  auto info = client->get(get_req(srv.url(), 1000), c.sink());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::http);
  EXPECT_EQ(info.error().http_status(), 500);
  EXPECT_EQ(c.calls, 0);
  EXPECT_LT(seconds_since(t0), 3.0);
}

TEST(HttpClient, FormatRate) {
  EXPECT_EQ(http::format_rate(0), "0 B/s");
  EXPECT_EQ(http::format_rate(2), "2 B/s");
  EXPECT_EQ(http::format_rate(1000), "1 KB/s");
  EXPECT_EQ(http::format_rate(1500), "1.5 KB/s");
  EXPECT_EQ(http::format_rate(2'000'000), "2 MB/s");
  EXPECT_EQ(http::format_rate(12'345'678), "12 MB/s");
}

// ---- against mota's HttpServer with routes ------------------------------------------------------

class MotaServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    net::ServerConfig cfg;
    cfg.static_root = root_.path();
    server_ = net::make_http_server(cfg);
    server_->route("POST", "/v1/echo/:id", [](const net::HttpRequest& r) {
      net::HttpReply reply;
      reply.status = 201;
      reply.content_type = "text/plain";
      reply.body = r.path_params.at("id") + ":" + r.body + ":" +
                   (r.headers.count("x-token") ? r.headers.at("x-token") : "");
      return reply;
    });
    server_->route("GET", "/redirect",
                   [](const net::HttpRequest&) { return redirect_to("/data.bin"); });
    server_->route("GET", "/loop", [](const net::HttpRequest&) { return redirect_to("/loop"); });
    server_->route("POST", "/v1/big", [](const net::HttpRequest&) {
      net::HttpReply r;
      r.body = std::string(5000, 'z');
      return r;
    });
    auto port = server_->start();
    ASSERT_TRUE(port) << port.error().message();
    base_ = "http://127.0.0.1:" + std::to_string(*port);
  }

  test::TempDir root_;
  std::unique_ptr<net::HttpServer> server_;
  std::string base_;
};

TEST_F(MotaServerTest, RateLimitIsHonoured) {
  const std::string data = random_bytes(256 * 1024);
  test::write_file(root_.path() / "data.bin", data);
  auto client = http::make_http_client(config([](auto& c) { c.max_bytes_per_sec = 512 * 1024; }));
  auto t0 = Clock::now();
  auto body = client->get_body(base_ + "/data.bin", data.size());
  ASSERT_TRUE(body) << body.error().message();
  EXPECT_TRUE(*body == data);
  EXPECT_GE(seconds_since(t0), 0.3);
}

TEST_F(MotaServerTest, RedirectsAreFollowedUpToALimit) {
  test::write_file(root_.path() / "data.bin", "payload");
  auto client = http::make_http_client();
  auto body = client->get_body(base_ + "/redirect", 100);
  ASSERT_TRUE(body) << body.error().message();
  EXPECT_EQ(*body, "payload");

  auto loop = client->get_body(base_ + "/loop", 100);
  ASSERT_FALSE(loop);
  EXPECT_EQ(loop.error().code(), Errc::network);
  EXPECT_NE(loop.error().message().find("edirects"), std::string::npos) << loop.error().message();
}

TEST_F(MotaServerTest, PostReturnsStatusAndBody) {
  auto client = http::make_http_client();
  auto resp = client->post(base_ + "/v1/echo/dev-7", "hello", {{"X-Token", "t0k"}});
  ASSERT_TRUE(resp) << resp.error().message();
  EXPECT_EQ(resp->status, 201);
  EXPECT_EQ(resp->body, "dev-7:hello:t0k");

  // A non-2xx answer is not an error for post(): the caller reads the status.
  auto missing = client->post(base_ + "/v1/nothing", "{}", {});
  ASSERT_TRUE(missing) << missing.error().message();
  EXPECT_EQ(missing->status, 404);
}

TEST_F(MotaServerTest, PostResponseOverTheCapIsTooLarge) {
  auto client = http::make_http_client();
  auto big = client->post(base_ + "/v1/big", "", {}, 1000);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), Errc::too_large);
  EXPECT_NE(big.error().message().find("more than the limit of 1000"), std::string::npos)
      << big.error().message();
  auto fits = client->post(base_ + "/v1/big", "", {}, 5000);
  ASSERT_TRUE(fits) << fits.error().message();
  EXPECT_EQ(fits->body.size(), 5000u);
}

TEST_F(MotaServerTest, InvalidHeaderIsRejectedBeforeSending) {
  auto client = http::make_http_client();
  http::GetRequest req = get_req(base_ + "/data.bin", 10);
  req.headers["X-Evil"] = "a\r\nInjected: yes";
  auto info = client->get(req, [](std::span<const std::byte>) -> Status { return {}; });
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::invalid_argument);
}

}  // namespace
}  // namespace mota
