// The connection-level contract of the HTTP server (net/http_server.hpp): asynchronous
// replies through a Responder, many connections on few threads, blocking handlers that do not
// stall the event loop, pipelining, refusals of malformed or oversized requests, 100-continue,
// timeouts, max_connections, HTTP/1.0 keep-alive, clients that go away, slow readers and stop().
// Raw loopback sockets so each test controls the exact bytes and when they are sent. Concurrency
// is proven with flags and counts, never with "took less than X ms".
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/log.hpp"
#include "net/http_server.hpp"
#include "tests/support/test_support.hpp"

namespace mota::net {
namespace {

using namespace std::chrono_literals;

struct Response {
  std::string status_line;
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// One client connection on a raw socket. Every read gives up after 10 s (SO_RCVTIMEO), so a
// server that never answers fails the test instead of hanging it.
class Client {
 public:
  // rcvbuf > 0 shrinks the receive buffer (before connect, so the TCP window stays small).
  explicit Client(int port, int rcvbuf = 0)
      : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    EXPECT_TRUE(connected_) << "connect to port " << port << ": " << std::strerror(errno);
  }
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }

  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Reads one response: the head, then Content-Length bytes of body (1xx answers have none;
  // without Content-Length the body runs to the end of the connection). nullopt when the
  // connection ends or the read times out before a whole response. `piece` bounds each recv()
  // and `between` runs after each one (slow readers).
  std::optional<Response> read_response(std::size_t piece = 65536,
                                        const std::function<void()>& between = {}) {
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill(piece)) return std::nullopt;
      if (between) between();
    }
    Response r;
    const std::string head = buf_.substr(0, end);
    std::size_t line_end = head.find("\r\n");
    r.status_line = head.substr(0, line_end);
    if (r.status_line.rfind("HTTP/1.", 0) != 0 || r.status_line.size() < 12) {
      ADD_FAILURE() << "not an HTTP status line: " << r.status_line;
      return std::nullopt;
    }
    r.status = std::atoi(r.status_line.substr(9, 3).c_str());
    while (line_end != std::string::npos) {
      const std::size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      const std::string line =
          head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      r.headers[name] = value;
    }
    buf_.erase(0, end + 4);
    if (r.status < 200) return r;
    if (!r.headers.count("content-length")) {
      while (fill(piece)) {
      }
      r.body = std::move(buf_);
      buf_.clear();
      return r;
    }
    const std::size_t length = std::stoul(r.header("content-length"));
    while (buf_.size() < length) {
      if (!fill(piece)) return std::nullopt;
      if (between) between();
    }
    r.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return r;
  }

  // True when the server has closed the connection: end of stream (or a reset) with no byte of
  // anything else before it. Waits up to the 10 s read timeout.
  bool closed_by_server() {
    if (!buf_.empty()) return false;
    char c;
    ssize_t n = ::recv(fd_, &c, 1, 0);
    if (n > 0) buf_.push_back(c);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

  // True if something (bytes or the end of the connection) is ready to read within `wait`.
  bool readable_within(std::chrono::milliseconds wait) {
    if (!buf_.empty()) return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(wait.count())) > 0;
  }

  // Everything received so far, including what read_response() consumed.
  const std::string& received() const { return received_; }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes with a reset (SO_LINGER 0) instead of a FIN: the server's next write fails.
  void abort() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }

 private:
  bool fill(std::size_t piece) {
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, std::min(piece, sizeof tmp), 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<std::size_t>(n));
    received_.append(tmp, static_cast<std::size_t>(n));
    return true;
  }

  int fd_;
  bool connected_ = false;
  std::string buf_;
  std::string received_;
};

std::string get(const std::string& target, const std::string& extra_headers = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n";
}

std::string post(const std::string& target, const std::string& body) {
  return "POST " + target +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

bool is_json_error(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  return j.is_object() && j.contains("error") && j["error"].is_string() &&
         !j["error"].get<std::string>().empty();
}

HttpReply text(std::string body, int status = 200) {
  HttpReply r;
  r.status = status;
  r.content_type = "text/plain";
  r.body = std::move(body);
  return r;
}

// A one-shot event another thread waits for (with a timeout, so a bug fails instead of hangs).
class Flag {
 public:
  void set() {
    {
      std::lock_guard lock(mu_);
      set_ = true;
    }
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return set_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

// Sets a flag when the scope ends: a blocked handler is released even when an ASSERT returns
// early, so stopping the server cannot hang on it.
struct SetOnExit {
  Flag& flag;
  ~SetOnExit() { flag.set(); }
};

// Responders of async requests that have not been answered yet, by a key the handler chose.
class Pending {
 public:
  void add(std::string key, Responder r) {
    {
      std::lock_guard lock(mu_);
      held_.emplace_back(std::move(key), std::move(r));
      ++added_;
    }
    cv_.notify_all();
  }
  // Waits until `n` requests have been added in total.
  bool wait_for_added(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return added_ >= n; });
  }
  std::optional<Responder> take(const std::string& key) {
    std::lock_guard lock(mu_);
    for (auto it = held_.begin(); it != held_.end(); ++it) {
      if (it->first == key) {
        Responder r = std::move(it->second);
        held_.erase(it);
        return r;
      }
    }
    ADD_FAILURE() << "no pending request " << key;
    return std::nullopt;
  }
  std::vector<std::pair<std::string, Responder>> take_all() {
    std::lock_guard lock(mu_);
    return std::exchange(held_, {});
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::string, Responder>> held_;
  std::size_t added_ = 0;
};

int process_threads() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

// Every test's server has: GET /ping (sync, "pong"), POST /echo (sync, the body back),
// GET /hold/:id (async, the Responder is kept in pending_ under the id) and GET /quick/:id
// (async, answered at once on the event loop). Tests add their own routes in `extra`.
class HttpConnTest : public ::testing::Test {
 protected:
  int start(ServerConfig cfg = {}, const std::function<void(HttpServer&)>& extra = {}) {
    server_ = make_http_server(cfg);
    server_->route("GET", "/ping", [](const HttpRequest&) { return text("pong"); });
    server_->route("POST", "/echo", [this](const HttpRequest& r) {
      ++echo_calls_;
      return text(r.body);
    });
    server_->route_async("GET", "/hold/:id", [this](HttpRequest&& r, Responder respond) {
      pending_.add(r.path_params.at("id"), std::move(respond));
    });
    server_->route_async("GET", "/quick/:id", [](HttpRequest&& r, Responder respond) {
      respond(text("quick-" + r.path_params.at("id")));
    });
    if (extra) extra(*server_);
    auto port = server_->start();
    EXPECT_TRUE(port) << port.error().message();
    port_ = port ? *port : 0;
    return port_;
  }

  // Waits until the server counts `n` open connections: it learns of a client's close
  // asynchronously. False after `timeout`.
  bool wait_open_connections(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (server_->stats().open_connections != n) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(1ms);  // polling the condition, not waiting for luck
    }
    return true;
  }

  // A new connection is still served.
  void expect_serves_new_connections() {
    Client c(port_);
    ASSERT_TRUE(c.send(get("/ping")));
    auto r = c.read_response();
    ASSERT_TRUE(r) << "no answer to a new connection";
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "pong");
  }

  // Stops the server when a test's scope ends: declared after the test's locals that handlers
  // capture, so no handler can run on them once they are gone (also after a failed ASSERT).
  struct StopAtExit {
    HttpConnTest& t;
    ~StopAtExit() {
      if (t.server_) t.server_->stop();
    }
  };

  // Declared before server_: handlers use them, so they outlive it.
  Pending pending_;
  std::atomic<int> echo_calls_{0};
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

// 1. An async handler hands its Responder to another thread, which answers later.
TEST_F(HttpConnTest, AsyncReplyFromAnotherThread) {
  std::mutex mu;
  std::optional<std::pair<HttpRequest, Responder>> handed;
  Flag arrived;
  start({}, [&](HttpServer& s) {
    s.route_async("POST", "/v1/reports", [&](HttpRequest&& r, Responder respond) {
      {
        std::lock_guard lock(mu);
        handed.emplace(std::move(r), std::move(respond));
      }
      arrived.set();
    });
  });
  StopAtExit stop{*this};
  Client c(port_);
  ASSERT_TRUE(c.send(post("/v1/reports", "report-body")));
  ASSERT_TRUE(arrived.wait());
  // Nothing is sent before the Responder is called.
  EXPECT_FALSE(c.readable_within(100ms)) << c.received();

  std::thread answerer([&] {
    std::lock_guard lock(mu);
    HttpReply reply;
    reply.status = 201;
    reply.content_type = "text/plain; charset=utf-8";
    reply.body = "stored " + handed->first.body;
    reply.headers["X-Commit-Seq"] = "17";
    reply.headers["Location"] = "/v1/reports/17";
    handed->second(std::move(reply));
  });
  answerer.join();

  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "stored report-body");
  EXPECT_EQ(r->header("content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(r->header("content-length"), "18");
  EXPECT_EQ(r->header("x-commit-seq"), "17");
  EXPECT_EQ(r->header("location"), "/v1/reports/17");
  // The connection is kept and serves the next request.
  ASSERT_TRUE(c.send(get("/ping")));
  auto next = c.read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "pong");
}

// 2. One event-loop thread and one worker hold 300 open requests at once: no thread per
// connection. Each connection then gets its own answer.
TEST_F(HttpConnTest, ThreeHundredPendingConnectionsOnOneThread) {
  struct QuietLog {
    QuietLog() { log::set_level(log::Level::warn); }  // 600 access log lines say nothing here
    ~QuietLog() { log::set_level(log::Level::info); }
  } quiet;
  ServerConfig cfg;
  cfg.io_threads = 1;
  cfg.threads = 1;
  start(cfg);
  constexpr int kConns = 300;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kConns; ++i) {
    clients.push_back(std::make_unique<Client>(port_));
    ASSERT_TRUE(clients.back()->send(get("/hold/" + std::to_string(i)))) << i;
  }
  ASSERT_TRUE(pending_.wait_for_added(kConns, 30s)) << "the server did not take all requests";
  // Only the server's few threads (and this one) exist while it holds 300 requests.
  const int threads = process_threads();
  EXPECT_LT(threads, 30) << "threads while holding " << kConns << " requests";

  auto held = pending_.take_all();
  ASSERT_EQ(held.size(), std::size_t(kConns));
  for (auto& [id, respond] : held) respond(text("conn-" + id));
  held.clear();
  for (int i = 0; i < kConns; ++i) {
    auto r = clients[std::size_t(i)]->read_response();
    ASSERT_TRUE(r) << "connection " << i << " got no answer";
    EXPECT_EQ(r->status, 200) << i;
    EXPECT_EQ(r->body, "conn-" + std::to_string(i));
  }
}

// 3. A blocking route() handler holding the only worker does not stall the event loop.
TEST_F(HttpConnTest, BlockedWorkerDoesNotStallTheEventLoop) {
  test::TempDir tmp;
  test::write_file(tmp / "file.txt", "static");
  Flag entered, release;
  std::atomic<int> block_calls{0}, queued_calls{0};
  ServerConfig cfg;
  cfg.io_threads = 1;
  cfg.threads = 1;
  cfg.static_root = tmp.path();
  start(cfg, [&](HttpServer& s) {
    s.route("GET", "/block", [&](const HttpRequest&) {
      ++block_calls;
      entered.set();
      release.wait();  // bounded: 10 s
      return text("released");
    });
    s.route("GET", "/queued", [&](const HttpRequest&) {
      ++queued_calls;
      return text("queued");
    });
  });
  StopAtExit stop{*this};
  SetOnExit unblock{release};  // destroyed first

  Client a(port_);
  ASSERT_TRUE(a.send(get("/block")));
  ASSERT_TRUE(entered.wait()) << "the blocking handler never ran";

  // A sync request on another connection waits for the only worker...
  Client q(port_);
  ASSERT_TRUE(q.send(get("/queued")));
  // ...while async routes and static files keep being served, on several connections.
  Client b(port_);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(b.send(get("/quick/" + std::to_string(i))));
    auto r = b.read_response();
    ASSERT_TRUE(r) << "async request " << i << " stalled behind a blocked worker";
    EXPECT_EQ(r->body, "quick-" + std::to_string(i));
  }
  ASSERT_TRUE(b.send(get("/file.txt")));
  auto f = b.read_response();
  ASSERT_TRUE(f) << "static file stalled behind a blocked worker";
  EXPECT_EQ(f->status, 200);
  EXPECT_EQ(f->body, "static");
  Client c(port_);
  ASSERT_TRUE(c.send(get("/quick/c")));
  auto rc = c.read_response();
  ASSERT_TRUE(rc);
  EXPECT_EQ(rc->body, "quick-c");
  EXPECT_EQ(queued_calls, 0);  // the worker is still blocked

  release.set();
  auto ra = a.read_response();
  ASSERT_TRUE(ra);
  EXPECT_EQ(ra->status, 200);
  EXPECT_EQ(ra->body, "released");
  auto rq = q.read_response();
  ASSERT_TRUE(rq) << "the queued request was lost";
  EXPECT_EQ(rq->body, "queued");
  EXPECT_EQ(block_calls, 1);
}

// 4a. A Responder dropped without a call answers 500, whether it is dropped inside the handler
// or later on another thread.
TEST_F(HttpConnTest, DroppedResponderAnswers500) {
  start({},
        [](HttpServer& s) { s.route_async("GET", "/drop-now", [](HttpRequest&&, Responder) {}); });
  Client c(port_);
  ASSERT_TRUE(c.send(get("/drop-now")));
  auto r = c.read_response();
  ASSERT_TRUE(r) << "a request whose Responder was dropped hangs";
  EXPECT_EQ(r->status, 500);

  Client d(port_);
  ASSERT_TRUE(d.send(get("/hold/later")));
  ASSERT_TRUE(pending_.wait_for_added(1));
  EXPECT_FALSE(d.readable_within(100ms));
  std::thread([respond = pending_.take("later")]() mutable { respond.reset(); }).join();
  auto later = d.read_response();
  ASSERT_TRUE(later) << "a request whose Responder was dropped on another thread hangs";
  EXPECT_EQ(later->status, 500);
  expect_serves_new_connections();
}

// 4b. Only the first call of a Responder (or of any of its copies) is sent.
TEST_F(HttpConnTest, SecondResponderCallIsIgnored) {
  start({}, [this](HttpServer& s) {
    s.route_async("GET", "/twice", [this](HttpRequest&&, Responder respond) {
      Responder copy = respond;
      respond(text("first"));
      copy(text("second"));
      respond(text("third"));
      pending_.add("copy", copy);
    });
  });
  Client c(port_);
  ASSERT_TRUE(c.send(get("/twice")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "first");
  // A call from another thread after the answer went out is ignored as well.
  ASSERT_TRUE(pending_.wait_for_added(1));
  std::thread([respond = pending_.take("copy")] { (*respond)(text("fourth")); }).join();
  // The next request on the connection gets its own answer, not a late duplicate.
  ASSERT_TRUE(c.send(get("/ping")));
  auto next = c.read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "pong");
  ASSERT_TRUE(c.send(get("/quick/x")));
  auto last = c.read_response();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->body, "quick-x");
}

// 4c. Responders called (or dropped) after the client went away, after stop() and after the
// server is destroyed: nothing happens, no crash (ASan checks the memory).
TEST_F(HttpConnTest, ResponderOutlivesClientStopAndServer) {
  start();
  {
    Client gone(port_);
    ASSERT_TRUE(gone.send(get("/hold/gone")));
    ASSERT_TRUE(pending_.wait_for_added(1));
    gone.abort();
  }
  ASSERT_TRUE(wait_open_connections(0)) << "the server never saw the reset";
  (*pending_.take("gone"))(text("to nobody"));
  expect_serves_new_connections();
  // A client that closed (FIN) may only have half-closed and still wait: the server keeps the
  // connection until the answer, then lets it go.
  {
    Client half(port_);
    ASSERT_TRUE(half.send(get("/hold/half")));
    ASSERT_TRUE(pending_.wait_for_added(2));
  }
  (*pending_.take("half"))(text("to a closed socket"));
  ASSERT_TRUE(wait_open_connections(0)) << "a closed client's connection was kept after the answer";

  {
    std::vector<std::unique_ptr<Client>> clients;
    for (const std::string id : {"after-stop", "after-destroy", "dropped-after-destroy"}) {
      clients.push_back(std::make_unique<Client>(port_));
      ASSERT_TRUE(clients.back()->send(get("/hold/" + id)));
    }
    ASSERT_TRUE(pending_.wait_for_added(5));
    // Reset, not closed: a half-closed client may still wait for its answer, and stop() would
    // give it the 5 s grace.
    for (auto& c : clients) c->abort();
  }
  ASSERT_TRUE(wait_open_connections(0)) << "the server never saw the resets";
  auto after_stop = pending_.take("after-stop");
  auto after_destroy = pending_.take("after-destroy");
  auto dropped = pending_.take("dropped-after-destroy");
  server_->stop();
  (*after_stop)(text("after stop"));
  server_.reset();
  (*after_destroy)(text("after destroy"));
  std::thread([&] { dropped.reset(); }).join();
  after_stop.reset();
  after_destroy.reset();
}

// 5. Pipelined requests written in one send() are answered in request order, even when the
// first one is answered last.
TEST_F(HttpConnTest, PipelinedAnswersKeepRequestOrder) {
  std::atomic<int> fast_calls{0};
  start({}, [&](HttpServer& s) {
    s.route("GET", "/fast/:id", [&](const HttpRequest& r) {
      ++fast_calls;
      return text("fast-" + r.path_params.at("id"));
    });
  });
  StopAtExit stop{*this};
  // Gives the server every chance to answer the later requests first (if it runs them ahead,
  // waits until it has), then answers the first one.
  auto answer_slow_late = [&](const std::string& id, std::size_t added,
                              const std::function<bool()>& later_ran) {
    ASSERT_TRUE(pending_.wait_for_added(added));
    for (int i = 0; i < 10 && !later_ran(); ++i) std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(20ms);
    (*pending_.take(id))(text("slow-" + id));
  };

  Client c(port_);
  ASSERT_TRUE(c.send(get("/hold/1") + get("/fast/2")));
  answer_slow_late("1", 1, [&] { return fast_calls > 0; });
  for (const std::string want : {"slow-1", "fast-2"}) {
    auto r = c.read_response();
    ASSERT_TRUE(r) << want;
    EXPECT_EQ(r->body, want);
  }

  // Three: a held async request, a POST with a body (sync) and an async one answered at once.
  ASSERT_TRUE(c.send(get("/hold/3") + post("/echo", "echo-4") + get("/quick/5")));
  answer_slow_late("3", 2, [&] { return echo_calls_ > 0; });
  for (const std::string want : {"slow-3", "echo-4", "quick-5"}) {
    auto r = c.read_response();
    ASSERT_TRUE(r) << want;
    EXPECT_EQ(r->body, want);
  }
  ASSERT_TRUE(c.send(get("/ping")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "pong");
}

// 6. Requests refused with a JSON {"error"} body and the connection closed; the server goes on
// serving new connections.
struct Refusal {
  std::string name;
  std::string bytes;
  int status;
  std::string says = "";  // a part of the {"error"} message
};

std::string big_header_line() {
  return "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(70000, 'a');
}
std::string many_headers() {
  std::string s = "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (int i = 0; i < 700; ++i)
    s += "X-H" + std::to_string(i) + ": " + std::string(100, 'v') + "\r\n";
  return s + "\r\n";
}
std::string post_with_length(const std::string& length, const std::string& body = "") {
  return "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length + "\r\n\r\n" + body;
}

void PrintTo(const Refusal& r, std::ostream* os) {
  *os << r.name;
}

class HttpConnRefusalTest : public HttpConnTest, public ::testing::WithParamInterface<Refusal> {};

TEST_P(HttpConnRefusalTest, RefusedWithJsonErrorAndClosed) {
  ServerConfig cfg;
  cfg.max_body_bytes = 1024;
  start(cfg);
  const Refusal& p = GetParam();
  {
    Client c(port_);
    c.send(p.bytes);  // may fail part way: the server can refuse and close before reading all
    auto r = c.read_response();
    ASSERT_TRUE(r) << "no answer";
    EXPECT_EQ(r->status, p.status) << r->status_line;
    EXPECT_EQ(r->header("content-type"), "application/json");
    EXPECT_TRUE(is_json_error(r->body)) << r->body;
    EXPECT_NE(r->body.find(p.says), std::string::npos) << r->body;
    EXPECT_TRUE(c.closed_by_server()) << "connection left open after " << r->status;
  }
  EXPECT_EQ(echo_calls_, 0) << "a refused request reached the handler";
  expect_serves_new_connections();
}

INSTANTIATE_TEST_SUITE_P(
    Requests, HttpConnRefusalTest,
    ::testing::Values(
        Refusal{"GarbageRequestLine", "GARBAGE\r\nHost: 127.0.0.1\r\n\r\n", 400},
        Refusal{"RequestLineWithoutVersion", "GET /ping\r\nHost: 127.0.0.1\r\n\r\n", 400},
        Refusal{"HeaderWithoutColon", "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nNoColon\r\n\r\n",
                400},
        Refusal{"HeadOver64KiBInOneLine", big_header_line(), 431},
        Refusal{"HeadOver64KiBInManyLines", many_headers(), 431},
        Refusal{"TransferEncodingChunked",
                "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n0\r\n\r\n",
                411},
        Refusal{"ContentLengthNotNumeric", post_with_length("abc"), 400},
        Refusal{"ContentLengthNegative", post_with_length("-5", "hello"), 400},
        Refusal{"ContentLengthTrailingJunk", post_with_length("5x", "hello"), 400},
        // Over max_body_bytes: answered without waiting for (or reading) the body.
        Refusal{"BodyOverLimit", post_with_length("1048576"), 413},
        // RFC 9112 §3.2: Host is mandatory in HTTP/1.1 and must not be repeated.
        Refusal{"MissingHostInHttp11", "GET /ping HTTP/1.1\r\n\r\n", 400, "missing Host"},
        Refusal{"TwoHosts", "GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
                "more than one Host"},
        Refusal{"TwoHostsInHttp10", "GET /ping HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400,
                "more than one Host"},
        // RFC 9110 §5.5: CR, LF or NUL inside a field value.
        Refusal{"BareLfInHeaderValue",
                "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\nX-Injected: 1\r\n\r\n", 400,
                "CR, LF or NUL in the value of header x-a"},
        Refusal{"BareCrInHeaderValue", "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\rb\r\n\r\n",
                400, "CR, LF or NUL"},
        Refusal{"NulInHeaderValue",
                std::string("GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a") + '\0' + "b\r\n\r\n",
                400, "CR, LF or NUL"},
        Refusal{"BareLfInHost", "GET /ping HTTP/1.1\r\nHost: a\nHost: b\r\n\r\n", 400,
                "value of header host"},
        // RFC 9112 §5.1 / RFC 9110 §5.1: names are tokens, no whitespace before the colon.
        Refusal{"HeaderNameNotAToken", "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX[A]: 1\r\n\r\n",
                400, "not a token"},
        Refusal{"HeaderNameWithQuote", "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX\"A: 1\r\n\r\n",
                400, "not a token"},
        Refusal{"HeaderNameWithNonAscii",
                "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-\xc3\xa9: 1\r\n\r\n", 400,
                "not a token"},
        Refusal{"WhitespaceBeforeColon",
                "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length : 0\r\n\r\n", 400,
                "whitespace between a header name and its colon"},
        Refusal{"ObsFold", "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n  folded\r\n\r\n",
                400, "obs-fold"},
        Refusal{"ObsFoldWithTab",
                "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n\tfolded\r\n\r\n", 400,
                "obs-fold"},
        // Control characters in the request line (a bare LF must not end it).
        Refusal{"BareLfInRequestLine", "GET /ping HTTP/1.1\nHost: 127.0.0.1\r\n\r\n", 400,
                "control character"},
        Refusal{"ControlCharacterInTarget", "GET /pi\x01ng HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                400, "control character"},
        // Targets in neither origin nor absolute form.
        Refusal{"AuthorityFormTarget", "GET 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400,
                "neither /path nor http://host/path"},
        Refusal{"OtherSchemeTarget", "GET ftp://h/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400,
                "neither /path nor http://host/path"},
        Refusal{"AbsoluteFormWithoutHost", "GET http:///ping HTTP/1.1\r\nHost: h\r\n\r\n", 400,
                "neither /path nor http://host/path"},
        Refusal{"AbsoluteFormStillNeedsHostHeader", "GET http://h/ping HTTP/1.1\r\n\r\n", 400,
                "missing Host"}),
    [](const ::testing::TestParamInfo<Refusal>& info) { return info.param.name; });

// 7. Expect: 100-continue gets an interim 100 only for a body within the limit.
TEST_F(HttpConnTest, ExpectContinue) {
  ServerConfig cfg;
  cfg.max_body_bytes = 1024;
  start(cfg);
  Client c(port_);
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
             "Expect: 100-continue\r\n\r\n"));
  auto interim = c.read_response();
  ASSERT_TRUE(interim) << "no 100 Continue before the body was sent";
  EXPECT_EQ(interim->status_line, "HTTP/1.1 100 Continue");
  ASSERT_TRUE(c.send("hello"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
  ASSERT_TRUE(c.send(get("/ping")));
  auto next = c.read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "pong");

  Client big(port_);
  ASSERT_TRUE(
      big.send("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000\r\n"
               "Expect: 100-continue\r\n\r\n"));
  auto refused = big.read_response();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 413);
  EXPECT_TRUE(is_json_error(refused->body)) << refused->body;
  EXPECT_TRUE(big.closed_by_server());
  EXPECT_EQ(big.received().find("100 Continue"), std::string::npos) << big.received();
  EXPECT_EQ(echo_calls_, 1);
}

// 8. Slow or stalled clients get 408 and are closed; idle keep-alive connections are closed.
TEST_F(HttpConnTest, TimeoutsCutOffStalledAndIdleClients) {
  ServerConfig cfg;
  cfg.request_timeout_s = 1;
  cfg.keep_alive_timeout_s = 1;
  start(cfg);
  // All connections time out in parallel.
  Client half_head(port_);
  ASSERT_TRUE(half_head.send("GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
  Client half_body(port_);
  ASSERT_TRUE(half_body.send(post_with_length("100", "abc")));
  Client idle(port_);
  ASSERT_TRUE(idle.send(get("/ping")));
  auto first = idle.read_response();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->body, "pong");

  // A client that keeps dripping bytes of a head that never ends is cut off all the same: the
  // timeout counts from the request's first byte, not from the last byte received.
  Client drip(port_);
  ASSERT_TRUE(drip.send("GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "));
  bool answered = false;
  for (int i = 0; i < 40 && !answered; ++i) {
    answered = drip.readable_within(200ms);
    if (!answered) drip.send("a");
  }
  ASSERT_TRUE(answered) << "a client dripping a head for 8 s was never cut off";
  auto dripped = drip.read_response();
  ASSERT_TRUE(dripped);
  EXPECT_EQ(dripped->status, 408);
  EXPECT_TRUE(drip.closed_by_server());

  for (Client* c : {&half_head, &half_body}) {
    auto r = c->read_response();
    ASSERT_TRUE(r) << "no 408";
    EXPECT_EQ(r->status, 408);
    EXPECT_TRUE(is_json_error(r->body)) << r->body;
    EXPECT_TRUE(c->closed_by_server());
  }
  EXPECT_EQ(echo_calls_, 0);
  EXPECT_TRUE(idle.closed_by_server())
      << "idle keep-alive connection not closed: " << idle.received();
  expect_serves_new_connections();
}

// 9. Beyond max_connections a new connection gets 503 and is closed; a freed slot is reused.
TEST_F(HttpConnTest, MaxConnections) {
  ServerConfig cfg;
  cfg.max_connections = 3;
  start(cfg);
  std::vector<std::unique_ptr<Client>> open;
  for (int i = 0; i < 3; ++i) {
    open.push_back(std::make_unique<Client>(port_));
    ASSERT_TRUE(open.back()->send(get("/ping")));
    auto r = open.back()->read_response();  // the server has surely accepted it
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  {
    Client fourth(port_);
    fourth.send(get("/ping"));  // may fail: the server can close before reading it
    auto r = fourth.read_response();
    ASSERT_TRUE(r) << "no 503 for a connection over the limit";
    EXPECT_EQ(r->status, 503);
    EXPECT_TRUE(is_json_error(r->body)) << r->body;
    EXPECT_TRUE(fourth.closed_by_server());
  }
  // The three are still served.
  for (auto& c : open) {
    ASSERT_TRUE(c->send(get("/ping")));
    auto r = c->read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  open.pop_back();
  // The server learns of the close asynchronously: the slot is free once it has.
  ASSERT_TRUE(wait_open_connections(2)) << "the slot of a closed connection was never freed";
  Client c(port_);
  ASSERT_TRUE(c.send(get("/ping")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// 10. HTTP/1.0 keep-alive only on request; HTTP/1.1 "Connection: close" closes.
TEST_F(HttpConnTest, ConnectionPersistenceByVersionAndHeader) {
  start();
  {
    Client c(port_);
    ASSERT_TRUE(c.send("GET /ping HTTP/1.0\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "pong");
    EXPECT_TRUE(c.closed_by_server()) << "HTTP/1.0 without keep-alive left open";
  }
  {
    Client c(port_);
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(c.send("GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
      auto r = c.read_response();
      ASSERT_TRUE(r) << "HTTP/1.0 keep-alive request " << i;
      EXPECT_EQ(r->body, "pong");
      // An HTTP/1.0 client only keeps the connection when the answer says so.
      EXPECT_EQ(r->header("connection"), "keep-alive") << i;
    }
  }
  {
    Client c(port_);
    ASSERT_TRUE(c.send(get("/ping", "Connection: close\r\n")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "pong");
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_TRUE(c.closed_by_server()) << "HTTP/1.1 Connection: close left open";
  }
}

// 10b. Connection options are case-insensitive tokens in a list (RFC 9110 §7.6.1, RFC 9112 §9.3):
// "close" anywhere closes, "keep-alive" anywhere keeps an HTTP/1.0 connection.
TEST_F(HttpConnTest, ConnectionOptionsAreCaseInsensitiveTokenLists) {
  start();
  for (const std::string value :
       {"CLOSE", "Close", "keep-alive, close", "Upgrade,CLOSE", " upgrade ,  close "}) {
    Client c(port_);
    ASSERT_TRUE(c.send(get("/ping", "Connection: " + value + "\r\n")));
    auto r = c.read_response();
    ASSERT_TRUE(r) << value;
    EXPECT_EQ(r->body, "pong") << value;
    EXPECT_EQ(r->header("connection"), "close") << value;
    EXPECT_TRUE(c.closed_by_server()) << "'Connection: " << value << "' left the connection open";
  }
  // Not "close": a token that merely contains it, and a second Connection line joined in.
  {
    Client c(port_);
    ASSERT_TRUE(c.send(get("/ping", "Connection: x-closed-caption\r\n")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("connection"), "");
    ASSERT_TRUE(c.send(get("/ping", "Connection: upgrade\r\nConnection: Close\r\n")));
    auto second = c.read_response();
    ASSERT_TRUE(second);
    EXPECT_EQ(second->header("connection"), "close");
    EXPECT_TRUE(c.closed_by_server());
  }
  for (const std::string value :
       {"Keep-Alive", "KEEP-ALIVE", "keep-alive, Upgrade", "Upgrade, Keep-Alive"}) {
    Client c(port_);
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(c.send("GET /ping HTTP/1.0\r\nConnection: " + value + "\r\n\r\n"));
      auto r = c.read_response();
      ASSERT_TRUE(r) << value << ": HTTP/1.0 request " << i << " got no answer";
      EXPECT_EQ(r->body, "pong");
      EXPECT_EQ(r->header("connection"), "keep-alive") << value;
    }
  }
}

// 11. Clients that go away mid-body or while their async request is pending (with a FIN or a
// reset) do not disturb the server, also when the late answer is then written.
TEST_F(HttpConnTest, ClientsThatGoAway) {
  start();
  {
    Client mid_body(port_);
    ASSERT_TRUE(mid_body.send(post_with_length("1000", std::string(10, 'x'))));
  }
  {
    Client closed(port_);
    ASSERT_TRUE(closed.send(get("/hold/closed")));
    Client reset(port_);
    ASSERT_TRUE(reset.send(get("/hold/reset")));
    ASSERT_TRUE(pending_.wait_for_added(2));
    closed.close();
    reset.abort();
  }
  // The reset one and the one closed mid-body are gone; the closed one is kept for its answer
  // (the client may only have half-closed).
  ASSERT_TRUE(wait_open_connections(1)) << "the server never saw the clients go";
  // Big enough that writing it to a reset connection fails (EPIPE: no SIGPIPE may kill us).
  (*pending_.take("closed"))(text(std::string(1 << 20, 'c')));
  (*pending_.take("reset"))(text(std::string(1 << 20, 'r')));
  expect_serves_new_connections();
  Client c(port_);
  ASSERT_TRUE(c.send(get("/hold/next")));
  ASSERT_TRUE(pending_.wait_for_added(3));
  (*pending_.take("next"))(text("next"));
  EXPECT_TRUE(wait_open_connections(1)) << "connections of gone clients were kept";
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "next");
  EXPECT_EQ(echo_calls_, 0);
}

// 12. An 8 MiB reply read slowly through a small receive window arrives whole.
TEST_F(HttpConnTest, LargeReplyToASlowReader) {
  std::string big(8 << 20, '\0');
  std::mt19937 rng(42);
  for (auto& ch : big) ch = static_cast<char>(rng());
  start({}, [&](HttpServer& s) {
    s.route("GET", "/big", [&](const HttpRequest&) {
      HttpReply r;
      r.content_type = "application/octet-stream";
      r.body = big;
      return r;
    });
  });
  StopAtExit stop{*this};
  Client c(port_, /*rcvbuf=*/4096);
  ASSERT_TRUE(c.send(get("/big") + get("/ping")));  // pipelined: the stream must stay in step
  std::this_thread::sleep_for(100ms);               // let the server fill the window and wait
  std::size_t reads = 0;
  auto r = c.read_response(4096, [&] {
    if (++reads % 16 == 0) std::this_thread::sleep_for(1ms);
  });
  ASSERT_TRUE(r) << "reply cut off";
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.size(), big.size());
  EXPECT_TRUE(r->body == big) << "reply bytes differ";
  auto next = c.read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "pong");
}

// 13. stop() while an async request is pending: its late answer still reaches the client, and
// stop() returns.
TEST_F(HttpConnTest, StopWaitsForPendingAsyncReply) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send(get("/hold/late")));
  ASSERT_TRUE(pending_.wait_for_added(1));
  std::thread answerer([respond = pending_.take("late")] {
    std::this_thread::sleep_for(200ms);
    (*respond)(text("answered during stop"));
  });
  // The client reads while stop() runs, and closes once the server has closed (so stop() need
  // not wait out the server's lingering close).
  std::optional<Response> r;
  bool closed = false;
  std::thread reader([&] {
    r = c.read_response();
    closed = c.closed_by_server();
    c.close();
  });
  server_->stop();
  answerer.join();
  reader.join();
  ASSERT_TRUE(r) << "the reply of a request pending at stop() was lost";
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "answered during stop");
  EXPECT_TRUE(closed);
  // Stopped means no longer accepting.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port_));
  EXPECT_NE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
}

// 14b. A target in absolute form (RFC 9112 §3.2.2, what a client talking to a proxy sends) is
// served: its path and query are the request's; the scheme is case-insensitive.
TEST_F(HttpConnTest, AbsoluteFormTarget) {
  test::TempDir tmp;
  test::write_file(tmp / "targets" / "a.bin", "static-a");
  ServerConfig cfg;
  cfg.static_root = tmp.path();
  start(cfg, [&](HttpServer& s) {
    s.route("GET", "/p/:x", [](const HttpRequest& r) {
      nlohmann::json j;
      j["path"] = r.path;
      j["x"] = r.path_params.at("x");
      j["query"] = r.query;
      j["host"] = r.headers.count("host") ? r.headers.at("host") : "";
      return text(j.dump());
    });
  });
  Client c(port_);
  ASSERT_TRUE(c.send("GET http://repo.example:8080/p/a%20b?q=1&r=%2F HTTP/1.1\r\nHost: h\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r->body;
  EXPECT_EQ(j["path"], "/p/a b");
  EXPECT_EQ(j["x"], "a b");
  EXPECT_EQ(j["query"]["q"], "1");
  EXPECT_EQ(j["query"]["r"], "/");
  ASSERT_TRUE(c.send("GET HTTP://127.0.0.1/targets/a.bin HTTP/1.1\r\nHost: h\r\n\r\n"));
  auto f = c.read_response();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->status, 200);
  EXPECT_EQ(f->body, "static-a");
  ASSERT_TRUE(c.send("GET https://127.0.0.1:1?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"));
  auto root = c.read_response();  // path "/": a directory, no listing
  ASSERT_TRUE(root);
  EXPECT_EQ(root->status, 404);
  ASSERT_TRUE(c.send("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n"));
  auto bare = c.read_response();
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->status, 404);
}

// 14. Handlers see the path and query decoded, and repeated headers joined with ", ".
TEST_F(HttpConnTest, DecodedPathQueryAndJoinedHeaders) {
  auto describe = [](const HttpRequest& r) {
    nlohmann::json j;
    j["path"] = r.path;
    j["query"] = r.query;
    j["headers"] = r.headers;
    j["params"] = r.path_params;
    return j.dump();
  };
  start({}, [&](HttpServer& s) {
    s.route("GET", "/a b", [describe](const HttpRequest& r) { return text(describe(r)); });
    s.route_async("GET", "/p/:x",
                  [describe](HttpRequest&& r, Responder respond) { respond(text(describe(r))); });
  });
  Client c(port_);
  ASSERT_TRUE(c.send(get("/a%20b?x=1&y=a+b%21&k=first&k=second",
                         "X-Multi: one\r\nx-multi: two\r\nX-Single: s\r\n")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r->body;
  EXPECT_EQ(j["path"], "/a b");
  EXPECT_EQ(j["query"]["x"], "1");
  EXPECT_EQ(j["query"]["y"], "a b!");
  EXPECT_EQ(j["query"]["k"], "first");
  EXPECT_EQ(j["headers"]["x-multi"], "one, two");
  EXPECT_EQ(j["headers"]["x-single"], "s");

  ASSERT_TRUE(c.send(get("/p/caf%C3%A9%20x?q=%2Fetc%26more")));
  auto p = c.read_response();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->status, 200) << p->body;
  auto jp = nlohmann::json::parse(p->body, nullptr, false);
  ASSERT_TRUE(jp.is_object()) << p->body;
  EXPECT_EQ(jp["path"], "/p/caf\xC3\xA9 x");
  EXPECT_EQ(jp["params"]["x"], "caf\xC3\xA9 x");
  EXPECT_EQ(jp["query"]["q"], "/etc&more");
}

}  // namespace
}  // namespace mota::net
