// The repository HTTP server on real loopback sockets. Requests are written by hand on raw
// sockets so the exact bytes of hostile paths reach the server unchanged and every response
// header can be checked.
#include "net/http_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "common/http.hpp"
#include "tests/support/test_support.hpp"

namespace mota::net {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace stdfs = std::filesystem;

struct RawResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  bool has(const std::string& h) const { return headers.count(h) > 0; }
  std::string header(const std::string& h) const {
    auto it = headers.find(h);
    return it == headers.end() ? "" : it->second;
  }
};

// Sends `head` (request line + headers, without the final blank line) plus "Connection: close"
// and `body`, and reads the whole answer.
RawResponse raw_request(int port, const std::string& head, const std::string& body = "") {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = head + "\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" + body;
  std::string_view rest = req;
  while (!rest.empty()) {
    ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (413) and close before reading everything
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  std::string raw;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  RawResponse r;
  auto end = raw.find("\r\n\r\n");
  if (end == std::string::npos) {
    ADD_FAILURE() << "no complete response to '" << head << "': " << raw;
    return r;
  }
  std::string top = raw.substr(0, end);
  r.body = raw.substr(end + 4);
  std::size_t line_end = top.find("\r\n");
  std::string status_line = top.substr(0, line_end);
  r.status = std::stoi(status_line.substr(status_line.find(' ') + 1, 3));
  while (line_end != std::string::npos) {
    std::size_t start = line_end + 2;
    line_end = top.find("\r\n", start);
    std::string line =
        top.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    r.headers[name] = value;
  }
  return r;
}

std::string random_bytes(std::size_t n) {
  std::mt19937 rng(1234);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

long vm_rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() / "root";
    data_ = random_bytes(1000);
    test::write_file(root_ / "targets" / "model.bin", data_);
    test::write_file(root_ / "metadata" / "timestamp.json", "{\"ts\":1}");
    test::write_file(root_ / "metadata" / "3.snapshot.json", "{\"s\":3}");
    test::write_file(root_ / "targets" / ".model.bin.tmp-1234", "TOPSECRET partial");
    test::write_file(root_ / ".hidden" / "file", "TOPSECRET hidden");
    test::write_file(tmp_.path() / "secret.txt", "TOPSECRET outside");
  }

  // Starts a server on root_ with the given routes already registered.
  int start(ServerConfig cfg = {}) {
    if (cfg.static_root.empty()) cfg.static_root = root_;
    server_ = make_http_server(cfg);
    for (auto& [method, pattern, handler] : routes_) server_->route(method, pattern, handler);
    auto port = server_->start();
    EXPECT_TRUE(port) << port.error().message();
    return port ? *port : 0;
  }

  test::TempDir tmp_;
  stdfs::path root_;
  std::string data_;
  std::vector<std::tuple<std::string, std::string, Handler>> routes_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ServesFilesWithLengthTypeAndCachePolicy) {
  // The server has no cache policy of its own: without static_cache_control, no header.
  {
    int plain = start();
    EXPECT_FALSE(raw_request(plain, "GET /metadata/timestamp.json HTTP/1.1").has("cache-control"));
    server_->stop();
  }
  ServerConfig cfg;
  std::vector<std::string> asked;
  std::mutex asked_mu;
  cfg.static_cache_control = [&](std::string_view rel) -> std::string {
    {
      std::lock_guard lock(asked_mu);
      asked.emplace_back(rel);
    }
    if (rel == "metadata/3.snapshot.json") return "";
    if (rel == "targets/model.bin") return "max-age=60\r\nX-Injected: 1";  // dropped
    return rel.ends_with(".json") ? "no-store" : "";
  };
  int port = start(cfg);
  auto r = raw_request(port, "GET /targets/model.bin HTTP/1.1");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body == data_);
  EXPECT_EQ(r.header("content-length"), "1000");
  EXPECT_EQ(r.header("content-type"), "application/octet-stream");
  EXPECT_EQ(r.header("accept-ranges"), "bytes");
  EXPECT_FALSE(r.has("cache-control"));
  EXPECT_FALSE(r.has("x-injected"));

  auto ts = raw_request(port, "GET /metadata/timestamp.json HTTP/1.1");
  EXPECT_EQ(ts.status, 200);
  EXPECT_EQ(ts.body, "{\"ts\":1}");
  EXPECT_EQ(ts.header("content-type"), "application/json");
  EXPECT_EQ(ts.header("cache-control"), "no-store");

  auto snap = raw_request(port, "GET /metadata/3.snapshot.json HTTP/1.1");
  EXPECT_EQ(snap.status, 200);
  EXPECT_EQ(snap.header("content-type"), "application/json");
  EXPECT_FALSE(snap.has("cache-control"));  // the hook said ""
  std::lock_guard lock(asked_mu);
  EXPECT_EQ(asked, (std::vector<std::string>{"targets/model.bin", "metadata/timestamp.json",
                                             "metadata/3.snapshot.json"}));
}

TEST_F(HttpServerTest, SingleRangesInAllThreeForms) {
  int port = start();
  struct Case {
    std::string range;
    std::uint64_t first, last;
  };
  for (const auto& c : std::vector<Case>{{"bytes=10-19", 10, 19},
                                         {"bytes=990-", 990, 999},
                                         {"bytes=-5", 995, 999},
                                         {"bytes=0-", 0, 999},
                                         {"bytes=900-5000", 900, 999},  // end clamped
                                         {"bytes=-5000", 0, 999}}) {    // suffix longer than file
    auto r = raw_request(port, "GET /targets/model.bin HTTP/1.1\r\nRange: " + c.range);
    EXPECT_EQ(r.status, 206) << c.range;
    EXPECT_EQ(r.header("content-range"),
              "bytes " + std::to_string(c.first) + "-" + std::to_string(c.last) + "/1000")
        << c.range;
    EXPECT_EQ(r.header("content-length"), std::to_string(c.last - c.first + 1)) << c.range;
    EXPECT_TRUE(r.body == data_.substr(c.first, c.last - c.first + 1)) << c.range;
  }
}

TEST_F(HttpServerTest, UnsatisfiableRangeIs416AndOddRangesGetTheWholeFile) {
  int port = start();
  for (std::string range : {"bytes=1000-", "bytes=5000-6000", "bytes=-0"}) {
    auto r = raw_request(port, "GET /targets/model.bin HTTP/1.1\r\nRange: " + range);
    EXPECT_EQ(r.status, 416) << range;
    EXPECT_EQ(r.header("content-range"), "bytes */1000") << range;
  }
  // A reversed range is refused like nginx does.
  EXPECT_EQ(raw_request(port, "GET /targets/model.bin HTTP/1.1\r\nRange: bytes=5-2").status, 416);
  // Multi-range requests get the whole file.
  for (std::string range : {"bytes=0-1,5-6"}) {
    auto r = raw_request(port, "GET /targets/model.bin HTTP/1.1\r\nRange: " + range);
    EXPECT_EQ(r.status, 200) << range;
    EXPECT_TRUE(r.body == data_) << range;
  }
}

TEST_F(HttpServerTest, HeadGivesHeadersOnly) {
  int port = start();
  auto r = raw_request(port, "HEAD /targets/model.bin HTTP/1.1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), "1000");
  EXPECT_EQ(r.header("accept-ranges"), "bytes");
  EXPECT_EQ(r.body, "");
  auto ranged = raw_request(port, "HEAD /targets/model.bin HTTP/1.1\r\nRange: bytes=100-199");
  EXPECT_EQ(ranged.status, 206);
  EXPECT_EQ(ranged.header("content-length"), "100");
  EXPECT_EQ(ranged.header("content-range"), "bytes 100-199/1000");
  EXPECT_EQ(ranged.body, "");
}

TEST_F(HttpServerTest, TraversalDotFilesDirectoriesAndEscapingSymlinksAre404) {
  stdfs::create_symlink(tmp_.path() / "secret.txt", root_ / "targets" / "escape.bin");
  stdfs::create_symlink(tmp_.path(), root_ / "targets" / "up");
  stdfs::create_symlink(root_ / "targets" / "model.bin", root_ / "targets" / "alias.bin");
  ASSERT_EQ(::mkfifo((root_ / "targets" / "fifo").c_str(), 0644), 0);
  int port = start();
  for (std::string path :
       {"/../secret.txt", "/targets/../../secret.txt", "/targets/%2e%2e/model.bin",
        "/%2E%2E/secret.txt", "/targets/.model.bin.tmp-1234", "/.hidden/file",
        "/targets/./model.bin", "/targets%5cmodel.bin", "/targets\\model.bin",
        "/targets/model.bin%00.json", "/targets/escape.bin", "/targets/up/secret.txt", "/",
        "/targets", "/targets/", "/targets/fifo", "/nothing-here"}) {
    auto r = raw_request(port, "GET " + path + " HTTP/1.1");
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_EQ(r.body.find("TOPSECRET"), std::string::npos) << path;
    EXPECT_EQ(r.body.find("{\"error\""), 0u) << path << ": " << r.body;
  }
  // A symlink that stays inside the root is fine.
  auto ok = raw_request(port, "GET /targets/alias.bin HTTP/1.1");
  EXPECT_EQ(ok.status, 200);
  EXPECT_TRUE(ok.body == data_);
}

TEST_F(HttpServerTest, HugeFileIsStreamedNotLoaded) {
  const std::uint64_t size = 200ull << 20;
  {
    std::ofstream f(root_ / "targets" / "huge.bin", std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size - 1));
    f.put('\x7f');
  }
  int port = start();
  long before = vm_rss_kib();
  ASSERT_GT(before, 0);
  auto client = http::make_http_client();
  http::GetRequest req;
  req.url = "http://127.0.0.1:" + std::to_string(port) + "/targets/huge.bin";
  req.max_bytes = size;
  char last = 0;
  auto info = client->get(req, [&](std::span<const std::byte> b) -> Status {
    last = static_cast<char>(b.back());
    return {};
  });
  long after = vm_rss_kib();
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->bytes_received, size);
  EXPECT_EQ(last, '\x7f');
  EXPECT_LT(after - before, 50 * 1024) << "RSS grew from " << before << " to " << after << " KiB";
}

// Clients that go away in the middle of a download (an agent that found the announced length
// wrong, a device that lost its link) must not take the server with them: writing to their
// socket raises SIGPIPE, whose default action ends the process.
TEST_F(HttpServerTest, ClientsLeavingMidDownloadDoNotStopTheServer) {
  {
    std::ofstream f(root_ / "targets" / "big.bin", std::ios::binary);
    f << std::string(32 << 20, 'b');
  }
  int port = start();
  for (int i = 0; i < 20; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string req = "GET /targets/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), ssize_t(req.size()));
    char buf[4096];
    ASSERT_GT(::recv(fd, buf, sizeof buf, 0), 0);  // the download has started
    // Leave with unread data: the kernel answers the server's next segments with a reset
    // (half the clients abort, half only stop reading first).
    if (i % 2) ::shutdown(fd, SHUT_RD);
    ::close(fd);
  }
  auto r = raw_request(port, "GET /targets/big.bin HTTP/1.1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.size(), std::size_t(32) << 20);
}

// Out of file descriptors (EMFILE): a connection the server cannot accept stays in the backlog
// and the server does not spin on its still-readable listening socket; once descriptors are free
// again it is accepted and served.
TEST_F(HttpServerTest, OutOfDescriptorsPausesAcceptingAndRecovers) {
  ServerConfig cfg;
  cfg.io_threads = 1;
  const int port = start(cfg);
  std::vector<int> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int highest = 0;
  for (const auto& e : stdfs::directory_iterator("/proc/self/fd")) {
    highest = std::max(highest, std::stoi(e.path().filename().string()));
  }
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = rlim_t(highest) + 1;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> fillers;  // the free numbers below the limit: no descriptor left for accept()
  for (int f; (f = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(f);
  ASSERT_EQ(errno, EMFILE);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const std::string req = "GET /targets/model.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (int fd : clients) {
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), ssize_t(req.size()));
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  auto cpu_s = [] {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  };
  const double cpu0 = cpu_s();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double busy = cpu_s() - cpu0;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);
  for (int f : fillers) ::close(f);
  EXPECT_LT(busy, 0.5) << "the server spun on the listening socket while out of descriptors";
  for (int fd : clients) {
    std::string got;
    char buf[4096];
    ssize_t n;
    while (got.find("\r\n\r\n") == std::string::npos || got.size() < data_.size()) {
      n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, std::size_t(n));
    }
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 200") << got.substr(0, 200);
    EXPECT_NE(got.find(data_), std::string::npos);
    ::close(fd);
  }
}

TEST_F(HttpServerTest, RoutesWithPathParamsQueryAndHead) {
  std::atomic<int> calls{0};
  routes_.emplace_back("GET", "/v1/devices/:id/events/:seq", [&](const HttpRequest& r) {
    ++calls;
    HttpReply reply;
    reply.body = "{\"id\":\"" + r.path_params.at("id") + "\",\"seq\":\"" + r.path_params.at("seq") +
                 "\",\"since\":\"" + (r.query.count("since") ? r.query.at("since") : "") +
                 "\",\"m\":\"" + r.method + "\",\"tok\":\"" +
                 (r.headers.count("x-token") ? r.headers.at("x-token") : "") + "\",\"from\":\"" +
                 r.remote_addr + "\"}";
    reply.headers["X-Served-By"] = "route";
    return reply;
  });
  routes_.emplace_back("POST", "/v1/devices/:id/events", [&](const HttpRequest& r) {
    HttpReply reply;
    reply.status = 202;
    reply.content_type = "text/plain";
    reply.body = r.path_params.at("id") + "<-" + r.body;
    return reply;
  });
  // A route shadows a static file at the same path.
  routes_.emplace_back("GET", "/metadata/timestamp.json", [](const HttpRequest&) {
    HttpReply reply;
    reply.body = "{\"from\":\"route\"}";
    return reply;
  });
  routes_.emplace_back("GET", "/boom", [](const HttpRequest&) -> HttpReply {
    throw std::runtime_error("handler bug");
  });
  int port = start();

  auto r = raw_request(port, "GET /v1/devices/dev-1/events/42?since=7 HTTP/1.1\r\nX-Token: abc");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("x-served-by"), "route");
  EXPECT_EQ(r.body,
            "{\"id\":\"dev-1\",\"seq\":\"42\",\"since\":\"7\",\"m\":\"GET\",\"tok\":\"abc\","
            "\"from\":\"127.0.0.1\"}");

  auto head = raw_request(port, "HEAD /v1/devices/dev-1/events/42 HTTP/1.1");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");
  EXPECT_EQ(calls, 2);

  auto post =
      raw_request(port, "POST /v1/devices/dev-9/events HTTP/1.1\r\nContent-Length: 5", "hello");
  EXPECT_EQ(post.status, 202);
  EXPECT_EQ(post.body, "dev-9<-hello");

  // Segments must match exactly: no empty parameters, no extra segments.
  EXPECT_EQ(raw_request(port, "GET /v1/devices//events/1 HTTP/1.1").status, 404);
  EXPECT_EQ(raw_request(port, "GET /v1/devices/a/events/1/x HTTP/1.1").status, 404);
  EXPECT_EQ(raw_request(port, "DELETE /v1/devices/a/events HTTP/1.1").status, 404);
  EXPECT_EQ(calls, 2);

  EXPECT_EQ(raw_request(port, "GET /metadata/timestamp.json HTTP/1.1").body,
            "{\"from\":\"route\"}");

  auto boom = raw_request(port, "GET /boom HTTP/1.1");
  EXPECT_EQ(boom.status, 500);
  EXPECT_EQ(boom.body.find("handler bug"), std::string::npos);  // no internals leak out
}

TEST_F(HttpServerTest, OversizedBodyIs413AndNeverReachesTheHandler) {
  std::atomic<int> calls{0};
  routes_.emplace_back("POST", "/v1/upload", [&](const HttpRequest& r) {
    ++calls;
    HttpReply reply;
    reply.body = std::to_string(r.body.size());
    return reply;
  });
  ServerConfig cfg;
  cfg.max_body_bytes = 1024;
  int port = start(cfg);

  auto fits =
      raw_request(port, "POST /v1/upload HTTP/1.1\r\nContent-Length: 1024", std::string(1024, 'a'));
  EXPECT_EQ(fits.status, 200);
  EXPECT_EQ(fits.body, "1024");
  EXPECT_EQ(calls, 1);

  auto big =
      raw_request(port, "POST /v1/upload HTTP/1.1\r\nContent-Length: 4096", std::string(4096, 'a'));
  EXPECT_EQ(big.status, 413);

  // With "Expect: 100-continue" (curl sends it for big bodies) the 413 comes before the body.
  auto expect = raw_request(port,
                            "POST /v1/upload HTTP/1.1\r\nContent-Length: 100000000\r\n"
                            "Expect: 100-continue");
  EXPECT_EQ(expect.status, 413);

  auto client = http::make_http_client();
  auto resp = client->post("http://127.0.0.1:" + std::to_string(port) + "/v1/upload",
                           std::string(2 << 20, 'b'), {});
  ASSERT_TRUE(resp) << resp.error().message();
  EXPECT_EQ(resp->status, 413);
  EXPECT_EQ(calls, 1);
}

TEST_F(HttpServerTest, StartErrors) {
  ServerConfig missing;
  missing.static_root = tmp_.path() / "no-such-dir";
  auto s1 = make_http_server(missing);
  auto r1 = s1->start();
  ASSERT_FALSE(r1);
  EXPECT_EQ(r1.error().code(), Errc::not_found);
  EXPECT_NE(r1.error().message().find("no-such-dir"), std::string::npos);

  int port = start();
  ServerConfig same;
  same.port = port;
  auto s2 = make_http_server(same);
  auto r2 = s2->start();
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().code(), Errc::io);
  EXPECT_NE(r2.error().message().find(std::to_string(port)), std::string::npos);

  auto again = server_->start();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), Errc::invalid_argument);
  // The first server still serves.
  EXPECT_EQ(raw_request(port, "GET /targets/model.bin HTTP/1.1").status, 200);
}

TEST_F(HttpServerTest, StopCutsOffDownloadsAndReleasesWait) {
  {
    std::ofstream f(root_ / "targets" / "huge.bin", std::ios::binary);
    f.seekp((200 << 20) - 1);
    f.put('x');
  }
  int port = start();
  std::atomic<bool> waited{false};
  std::thread waiter([&] {
    server_->wait();
    waited = true;
  });
  Result<http::ResponseInfo> info = fail(Errc::internal, "not run");
  std::mutex mu;
  std::condition_variable cv;
  bool downloading = false;
  std::thread downloader([&] {
    http::ClientConfig cc;
    cc.max_bytes_per_sec = 4 << 20;  // 50 s for the whole file
    auto client = http::make_http_client(cc);
    http::GetRequest req;
    req.url = "http://127.0.0.1:" + std::to_string(port) + "/targets/huge.bin";
    req.max_bytes = 200 << 20;
    info = client->get(req, [&](std::span<const std::byte>) -> Status {
      {
        std::lock_guard lock(mu);
        downloading = true;
      }
      cv.notify_all();
      return {};
    });
  });
  {
    std::unique_lock lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, 10s, [&] { return downloading; }))
        << "the download never started";
  }
  EXPECT_FALSE(waited);
  auto t0 = Clock::now();
  server_->stop();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 3.0);
  downloader.join();  // drains what the kernel had buffered, then sees the connection cut
  waiter.join();
  EXPECT_TRUE(waited);
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::network) << info.error().message();
  server_->stop();  // idempotent
}

TEST_F(HttpServerTest, AccessLogLine) {
  int port = start();
  ::testing::internal::CaptureStderr();
  raw_request(port, "GET /targets/model.bin HTTP/1.1\r\nRange: bytes=0-9");
  raw_request(port, "GET /no%0Aforged HTTP/1.1");
  // No wait needed: the server writes (and flushes) a request's log line before it sends the
  // answer, and raw_request has read the whole answer.
  std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("METHOD=GET PATH=/targets/model.bin STATUS=206 BYTES=10 DURATION_MS="),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("PATH=/no\\nforged STATUS=404"), std::string::npos) << log;
}

}  // namespace
}  // namespace mota::net
