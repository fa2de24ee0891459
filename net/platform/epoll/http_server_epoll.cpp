// Our own HTTP/1.1 server behind net/http_server.hpp: a few epoll event loops own every
// connection, a small worker pool runs the blocking route() handlers.
//
// Why not a thread per connection (the previous third-party backend): a fleet keeps thousands of
// keep-alive connections open, and a report waits for its group commit; with a thread per
// connection only `threads` of them were served at once and every report cost two thread
// hand-offs. Here a report is parsed on the loop that read it, queued for the writer, and answered
// by that loop when the writer completes it (route_async); no thread waits for it.
//
// Each loop: level-triggered epoll over its own connections, the listening socket (shared by all
// loops, EPOLLEXCLUSIVE so one loop wakes per connection), and an eventfd through which replies
// from other threads (Responder) arrive. A connection handles one request at a time; pipelined
// requests wait in its buffer and are answered in order.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/log.hpp"
#include "net/http_server.hpp"

namespace mota::net {
namespace {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxHead = 64 * 1024;    // request line + headers
constexpr std::size_t kReadChunk = 64 * 1024;  // one read(), into the loop's scratch buffer
// A body on a request no route takes (a static file, a 404) is read and dropped up to this size,
// refused (413) beyond: nothing there reads it, so it is never buffered.
constexpr std::size_t kUnroutedBodyMax = 64 * 1024;
// A body buffer is reserved up to this size ahead of the bytes, then grows as they come: a client
// announcing 16 MiB and sending one byte does not get 16 MiB reserved.
constexpr std::size_t kBodyReserveMax = 64 * 1024;
constexpr std::size_t kSendfileChunk = 1 << 20;  // per sendfile(): other connections get a turn
constexpr auto kLinger = std::chrono::seconds(2);
constexpr auto kStopGrace = std::chrono::seconds(5);
constexpr auto kTick = std::chrono::milliseconds(200);  // timeout checks

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string json_error(std::string_view message) {
  // Messages are the server's own ASCII texts; quotes and backslashes escaped all the same.
  std::string out = "{\"error\":\"";
  for (char ch : message) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"}";
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding; malformed escapes stay as they are. In a query, '+' is a space.
std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += plus_is_space && s[i] == '+' ? ' ' : s[i];
  }
  return out;
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i <= path.size()) {
    std::size_t end = path.find('/', i);
    if (end == std::string_view::npos) end = path.size();
    out.push_back(path.substr(i, end - i));
    i = end + 1;
  }
  return out;
}

// A route pattern split at '/': literal segments must match exactly, ":name" segments match
// any non-empty segment. (Plain segment matching, not std::regex: no backtracking on long paths.)
struct Route {
  std::string method;
  std::string pattern;  // owns the text the segments point into
  std::vector<std::string_view> segments;
  Handler handler;             // one of the two
  AsyncHandler async_handler;  //

  bool match(std::string_view path, std::map<std::string, std::string>& params) const {
    auto parts = split_path(path);
    if (parts.size() != segments.size()) return false;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const auto& seg = segments[i];
      if (!seg.empty() && seg.front() == ':') {
        if (parts[i].empty()) return false;
        params[std::string(seg.substr(1))] = std::string(parts[i]);
      } else if (seg != parts[i]) {
        return false;
      }
    }
    return true;
  }
};

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A single byte range against `size`. nullopt: no usable Range (absent or several ranges): serve
// the whole file. `malformed`: 416 without Content-Range (as nginx). `unsatisfiable`: 416 with it.
struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t length = 0;
  bool unsatisfiable = false;
  bool malformed = false;
};

std::optional<ByteRange> parse_range(std::string_view header, std::uint64_t size) {
  header = trim(header);
  if (header.substr(0, 6) != "bytes=") return std::nullopt;
  std::string_view spec = trim(header.substr(6));
  if (spec.find(',') != std::string_view::npos) return std::nullopt;
  std::size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  std::string_view a = trim(spec.substr(0, dash)), b = trim(spec.substr(dash + 1));
  ByteRange r;
  if (a.empty()) {  // suffix: the last N bytes
    auto n = parse_u64(b);
    if (!n) return std::nullopt;
    if (*n == 0 || size == 0) return ByteRange{0, 0, true, false};
    r.length = std::min(*n, size);
    r.first = size - r.length;
    return r;
  }
  auto first = parse_u64(a);
  if (!first) return std::nullopt;
  std::uint64_t last = size == 0 ? 0 : size - 1;
  if (!b.empty()) {
    auto l = parse_u64(b);
    if (!l) return std::nullopt;
    if (*l < *first) return ByteRange{0, 0, false, true};
    last = std::min(*l, last);
  }
  if (*first >= size) return ByteRange{0, 0, true, false};
  r.first = *first;
  r.length = last - *first + 1;
  return r;
}

// RFC 9110 §5.6.2: tchar, the characters of a token (header names, methods).
bool is_tchar(unsigned char ch) {
  if (std::isalnum(ch)) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(char(ch)) != std::string_view::npos;
}

// Heap bytes a string holds (its capacity beyond the small-string buffer).
std::size_t heap_bytes(const std::string& s) {
  static const std::size_t kInline = std::string().capacity();
  return s.capacity() > kInline ? s.capacity() : 0;
}

// Gives a string's memory back when what it holds is small (idle connections keep no buffer).
void release(std::string& s) {
  if (s.empty()) {
    if (heap_bytes(s)) std::string().swap(s);
  } else if (s.capacity() > 2 * s.size() + 4096) {
    std::string(s).swap(s);
  }
}

// Only the request path decides what is served; anything suspicious is a plain 404.
bool safe_relative_path(const std::string& path, std::string& rel) {
  if (path.empty() || path.front() != '/') return false;
  if (path.find('\0') != std::string::npos || path.find('\\') != std::string::npos) return false;
  if (path.back() == '/') return false;  // a directory: no listings
  rel.clear();
  std::size_t i = 1;
  while (i <= path.size()) {
    std::size_t end = path.find('/', i);
    if (end == std::string::npos) end = path.size();
    std::string_view comp(path.data() + i, end - i);
    if (!comp.empty()) {
      if (comp.front() == '.') return false;  // ".", "..", dot-files (temp files)
      if (!rel.empty()) rel += '/';
      rel += comp;
    }
    i = end + 1;
  }
  return !rel.empty();
}

const char* reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Status";
  }
}

HttpReply error_reply(int status, std::string_view message) {
  HttpReply r;
  r.status = status;
  r.body = json_error(message);
  return r;
}

class EpollServer;
struct Loop;

// Where a loop's replies from other threads arrive. Shared with every Responder::State (weakly),
// so a reply after the loop is gone is dropped instead of touching freed memory.
struct Mailbox {
  struct Item {
    std::uint64_t conn;
    HttpReply reply;
  };
  struct NewConn {
    int fd;
    std::string remote;
  };
  std::mutex mu;
  std::vector<Item> items;
  std::vector<NewConn> adopt;  // accepted by another loop, handed to this one
  bool closed = false;
  int efd = -1;
  ~Mailbox() {
    for (auto& c : adopt) ::close(c.fd);
    if (efd >= 0) ::close(efd);
  }
  void post(std::uint64_t conn, HttpReply reply) {
    bool wake;
    {
      std::lock_guard lock(mu);
      if (closed) return;
      wake = items.empty() && adopt.empty();
      items.push_back(Item{conn, std::move(reply)});
    }
    if (wake) notify();
  }
  void post(NewConn c) {
    bool wake;
    {
      std::lock_guard lock(mu);
      if (closed) {
        ::close(c.fd);
        return;
      }
      wake = items.empty() && adopt.empty();
      adopt.push_back(std::move(c));
    }
    if (wake) notify();
  }
  void notify() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(efd, &one, sizeof one);
  }
};

}  // namespace

struct Responder::State {
  std::weak_ptr<Mailbox> mailbox;
  std::uint64_t conn = 0;
  std::atomic<bool> done{false};
  State(std::weak_ptr<Mailbox> m, std::uint64_t c) : mailbox(std::move(m)), conn(c) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (!done.load()) deliver(error_reply(500, "internal error: the request was not answered"));
  }
  void deliver(HttpReply reply) {
    if (auto m = mailbox.lock()) m->post(conn, std::move(reply));
  }
};

void Responder::operator()(HttpReply reply) const {
  if (!state_ || state_->done.exchange(true)) return;
  state_->deliver(std::move(reply));
}

namespace {

struct Conn {
  std::uint64_t id = 0;
  int fd = -1;
  std::string remote;
  std::string in;           // bytes read, not yet consumed by a request
  std::size_t scanned = 0;  // bytes of `in` already searched for the end of the head
  // The request whose head has been parsed (once) while its body arrives: body bytes go straight
  // into req->body (or are dropped), never through `in`.
  std::unique_ptr<HttpRequest> req;
  const Route* route = nullptr;  // matched when the head was parsed; null: static file or 404
  std::uint64_t body_left = 0;   // body bytes of `req` still to come
  bool discard_body = false;     // no route takes the body: read and drop it
  bool expect_continue = false;
  std::size_t accounted = 0;  // buffer bytes counted in Loop::buffered
  // Of ServerConfig::max_bodies_bytes: this request's announced body, from its head until its
  // answer starts (or the connection closes).
  std::uint64_t body_reserved = 0;
  enum class State { reading, pending, writing, lingering } state = State::reading;
  bool peer_eof = false;
  bool dead = false;  // closed; freed at the end of the loop iteration (see close_conn)
  bool sent_continue = false;
  bool close_after = false;  // close once the current reply is written
  bool persistent = true;    // the request being answered allows keep-alive
  std::size_t requests = 0;
  std::uint32_t events = 0;  // current epoll interest
  Clock::time_point deadline;
  bool request_started = false;  // some bytes of the next request arrived
  // The request being answered.
  std::string method, path;
  bool head_only = false;
  bool http10 = false;
  Clock::time_point started;
  // The reply being written: `out` from `out_pos`, then `file_left` bytes of `file` from
  // `file_off`.
  std::string out;
  std::size_t out_pos = 0;
  int file = -1;
  off_t file_off = 0;
  std::uint64_t file_left = 0;
  bool streaming_file = false;

  ~Conn() {
    if (file >= 0) ::close(file);
    if (fd >= 0) ::close(fd);
  }
};

struct WorkerTask {
  const Route* route;
  HttpRequest request;
  Responder responder;
};

class EpollServer;

struct Loop {
  EpollServer* server = nullptr;
  int index = 0;
  int ep = -1;
  std::shared_ptr<Mailbox> mailbox = std::make_shared<Mailbox>();
  std::unordered_map<std::uint64_t, std::unique_ptr<Conn>> conns;
  // Closed connections, freed once the current event is handled: code deep in a call chain may
  // close the connection its callers still refer to (they check Conn::dead).
  std::vector<std::unique_ptr<Conn>> graveyard;
  std::thread thread;
  std::atomic<bool> stop_requested{false};
  // Connections this loop owns or is being handed: new connections go to the least busy loop.
  std::atomic<std::size_t> active{0};
  std::atomic<std::size_t> buffered{0};  // Conn::accounted summed (ServerStats)
  std::vector<char> scratch = std::vector<char>(kReadChunk);  // every read() lands here first
  bool accept_paused = false;  // out of file descriptors: the listening socket is off until a tick
  ~Loop() {
    if (ep >= 0) ::close(ep);
  }
};

class EpollServer final : public HttpServer {
 public:
  explicit EpollServer(ServerConfig config) : config_(std::move(config)) {}
  ~EpollServer() override { stop(); }

  void route(std::string method, std::string pattern, Handler handler) override {
    auto r = make_route(std::move(method), std::move(pattern));
    r->handler = std::move(handler);
    routes_.push_back(std::move(r));
  }

  void route_async(std::string method, std::string pattern, AsyncHandler handler) override {
    auto r = make_route(std::move(method), std::move(pattern));
    r->async_handler = std::move(handler);
    routes_.push_back(std::move(r));
  }

  Result<int> start() override {
    if (started_) return fail(Errc::invalid_argument, "http server: already started");
    if (!config_.static_root.empty()) {
      std::error_code ec;
      root_ = stdfs::canonical(config_.static_root, ec);
      if (ec || !stdfs::is_directory(root_, ec)) {
        return fail(Errc::not_found, "http server: static root " + config_.static_root.string() +
                                         " is not a directory" +
                                         (ec ? ": " + ec.message() : std::string()));
      }
    }
    const bool tcp = !config_.host.empty() && config_.port >= 0;
    if (!tcp && config_.unix_socket.empty()) {
      return fail(Errc::invalid_argument,
                  "http server: no listener (set a TCP address, a Unix socket, or both)");
    }
    int port = 0;
    if (!config_.unix_socket.empty()) MOTA_TRY(listen_unix());
    if (tcp) {
      auto bound = listen_socket();
      if (!bound) {
        close_unix();
        return fail(bound.error());
      }
      port = *bound;
    }
    int n = config_.io_threads;
    if (n <= 0) n = std::clamp(int(std::thread::hardware_concurrency()), 1, 4);
    for (int i = 0; i < n; ++i) {
      auto loop = std::make_unique<Loop>();
      loop->server = this;
      loop->index = i;
      loop->ep = ::epoll_create1(EPOLL_CLOEXEC);
      loop->mailbox->efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (loop->ep < 0 || loop->mailbox->efd < 0) {
        return fail(Errc::io, std::string("http server: epoll/eventfd: ") + std::strerror(errno));
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kMailboxTag;
      ::epoll_ctl(loop->ep, EPOLL_CTL_ADD, loop->mailbox->efd, &ev);
      if (!watch_listeners(*loop, true)) {
        return fail(Errc::io, std::string("http server: epoll_ctl: ") + std::strerror(errno));
      }
      loops_.push_back(std::move(loop));
    }
    started_ = true;
    for (int i = 0; i < std::max(1, config_.threads); ++i) {
      workers_.emplace_back([this] { run_worker(); });
    }
    for (auto& loop : loops_) {
      loop->thread = std::thread([this, l = loop.get()] { run_loop(*l); });
    }
    std::string where = tcp ? config_.host + ":" + std::to_string(port) : std::string();
    if (!config_.unix_socket.empty()) {
      where += (where.empty() ? "" : " and ") + config_.unix_socket.string();
    }
    log::info("http server listening", {{"ADDRESS", where},
                                        {"IO_THREADS", std::to_string(n)},
                                        {"WORKERS", std::to_string(std::max(1, config_.threads))}});
    return port;
  }

  void stop() override {
    std::lock_guard stop_lock(stop_mutex_);
    if (!started_ || stopped_) return;
    // Workers first: running handlers finish and post their replies, queued ones get 503, while
    // the loops still run to send them.
    {
      std::lock_guard lock(work_mu_);
      stopping_workers_ = true;
    }
    work_cv_.notify_all();
    for (auto& w : workers_) w.join();
    for (auto& loop : loops_) {
      loop->stop_requested = true;
      std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(loop->mailbox->efd, &one, sizeof one);
    }
    for (auto& loop : loops_) {
      if (loop->thread.joinable()) loop->thread.join();
      std::lock_guard lock(loop->mailbox->mu);
      loop->mailbox->closed = true;
      loop->mailbox->items.clear();
    }
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    close_unix();
    std::lock_guard lock(done_mu_);
    stopped_ = true;
    done_cv_.notify_all();
  }

  void wait() override {
    std::unique_lock lock(done_mu_);
    if (!started_) return;
    done_cv_.wait(lock, [this] { return stopped_; });
  }

  ServerStats stats() const override {
    ServerStats st;
    st.open_connections = open_conns_.load();
    // loops_ is filled by start() (stats() is not called concurrently with it) and never shrinks.
    for (const auto& loop : loops_) st.buffered_bytes += loop->buffered.load();
    st.requests_served = requests_served_.load();
    st.heads_parsed = heads_parsed_.load();
    st.bodies_reserved = bodies_reserved_.load();
    return st;
  }

 private:
  static constexpr std::uint64_t kListenTag = ~std::uint64_t{0};
  static constexpr std::uint64_t kMailboxTag = ~std::uint64_t{0} - 1;
  static constexpr std::uint64_t kListenUnixTag = ~std::uint64_t{0} - 2;

  // Adds (or removes) the listening sockets to (from) a loop's epoll set. False if adding failed.
  bool watch_listeners(Loop& loop, bool on) {
    bool ok = true;
    for (auto [fd, tag] :
         {std::pair{listen_fd_, kListenTag}, std::pair{unix_fd_, kListenUnixTag}}) {
      if (fd < 0) continue;
      if (!on) {
        ::epoll_ctl(loop.ep, EPOLL_CTL_DEL, fd, nullptr);
        continue;
      }
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLEXCLUSIVE;
      ev.data.u64 = tag;
      ok = ::epoll_ctl(loop.ep, EPOLL_CTL_ADD, fd, &ev) == 0 && ok;
    }
    return ok;
  }

  // The Unix-domain listener (ServerConfig::unix_socket). Nothing is removed here: a file at the
  // path makes bind fail (EADDRINUSE), and whether an old socket is stale is the caller's call.
  Status listen_unix() {
    const std::string& path = config_.unix_socket.native();
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) {
      return fail(Errc::invalid_argument, "http server: " + path + ": socket path too long (" +
                                              std::to_string(sizeof addr.sun_path - 1) +
                                              " bytes at most)");
    }
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return fail(Errc::io, "http server: socket " + path + ": " + std::strerror(errno));
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      const int err = errno;
      ::close(fd);
      return fail(Errc::io, "http server: cannot listen on " + path + ": " + std::strerror(err) +
                                (err == EADDRINUSE ? " (a file is in the way)" : ""));
    }
    struct stat st {};
    if (::chmod(path.c_str(), static_cast<mode_t>(config_.unix_socket_mode)) != 0 ||
        ::listen(fd, SOMAXCONN) != 0 || ::stat(path.c_str(), &st) != 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return fail(Errc::io, "http server: cannot listen on " + path + ": " + std::strerror(err));
    }
    unix_fd_ = fd;
    unix_dev_ = st.st_dev;
    unix_ino_ = st.st_ino;
    return {};
  }

  // Closes the Unix listener and removes its file, unless another process has replaced it since.
  void close_unix() {
    if (unix_fd_ < 0) return;
    ::close(unix_fd_);
    unix_fd_ = -1;
    struct stat st {};
    if (::lstat(config_.unix_socket.c_str(), &st) == 0 && st.st_dev == unix_dev_ &&
        st.st_ino == unix_ino_) {
      ::unlink(config_.unix_socket.c_str());
    }
  }

  static std::unique_ptr<Route> make_route(std::string method, std::string pattern) {
    auto r = std::make_unique<Route>();
    r->method = std::move(method);
    r->pattern = std::move(pattern);
    r->segments = split_path(r->pattern);
    return r;
  }

  Result<int> listen_socket() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    const std::string port_text = std::to_string(config_.port);
    const std::string where = config_.host + ":" + port_text;
    if (int rc = ::getaddrinfo(config_.host.c_str(), port_text.c_str(), &hints, &res); rc != 0) {
      return fail(Errc::io, "http server: cannot listen on " + where + ": " + gai_strerror(rc));
    }
    std::string why = "no address";
    int fd = -1;
    for (addrinfo* ai = res; ai && fd < 0; ai = ai->ai_next) {
      fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      // SO_REUSEADDR allows a quick restart; no SO_REUSEPORT, which would let a second
      // `mota serve` bind the same port and silently split the traffic.
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      // Replies go out in one write usually, but a static file's head and body are two: without
      // TCP_NODELAY the second waits for the client's delayed ACK. Inherited by accepted sockets.
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
        why = std::strerror(errno);
        ::close(fd);
        fd = -1;
      }
    }
    ::freeaddrinfo(res);
    if (fd < 0) {
      return fail(Errc::io, "http server: cannot listen on " + where + ": " + why +
                                " (address in use, not local, or not permitted)");
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    listen_fd_ = fd;
    if (bound.ss_family == AF_INET6) {
      return int(ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port));
    }
    return int(ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port));
  }

  // ---- worker pool (route() handlers) ----

  void run_worker() {
    ::pthread_setname_np(::pthread_self(), "mota-http-work");
    while (true) {
      std::unique_ptr<WorkerTask> task;
      {
        std::unique_lock lock(work_mu_);
        work_cv_.wait(lock, [&] { return stopping_workers_ || !work_.empty(); });
        if (work_.empty()) return;
        task = std::move(work_.front());
        work_.pop_front();
        if (stopping_workers_) {
          // Not started: the server is going away.
          lock.unlock();
          task->responder(error_reply(503, "server is stopping"));
          continue;
        }
      }
      task->responder(call(*task->route, task->request));
    }
  }

  static HttpReply call(const Route& r, const HttpRequest& req) {
    try {
      return r.handler(req);
    } catch (const std::exception& e) {
      log::error("http handler failed", {{"PATH", req.path}, {"ERROR", e.what()}});
    } catch (...) {
      log::error("http handler failed", {{"PATH", req.path}, {"ERROR", "unknown exception"}});
    }
    return error_reply(500, "internal error");
  }

  // ---- event loop ----

  void run_loop(Loop& loop) {
    ::pthread_setname_np(::pthread_self(), "mota-http-io");
    // sendfile() to a client that went away raises SIGPIPE (it has no MSG_NOSIGNAL); blocked
    // on this thread it stays pending and harmless, without changing the process's handlers.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    std::vector<epoll_event> events(256);
    auto next_tick = Clock::now() + kTick;
    std::optional<Clock::time_point> stop_deadline;
    bool listening = true;
    while (true) {
      if (loop.stop_requested && !stop_deadline) {
        stop_deadline = Clock::now() + kStopGrace;
        if (listening) {
          if (!loop.accept_paused) watch_listeners(loop, false);
          listening = false;
        }
        begin_stop(loop);
      }
      if (stop_deadline && (loop.conns.empty() || Clock::now() >= *stop_deadline)) break;
      const auto now = Clock::now();
      const int wait_ms = int(std::max<long long>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - now).count() + 1));
      int n = ::epoll_wait(loop.ep, events.data(), int(events.size()), wait_ms);
      if (n < 0 && errno != EINTR) {
        log::error(std::string("http server: epoll_wait: ") + std::strerror(errno));
        break;
      }
      for (int i = 0; i < n; ++i) {
        const std::uint64_t tag = events[std::size_t(i)].data.u64;
        if (tag == kListenTag || tag == kListenUnixTag) {
          if (listening) accept_all(loop, tag == kListenTag ? listen_fd_ : unix_fd_);
        } else if (tag == kMailboxTag) {
          drain_mailbox(loop);
        } else {
          auto it = loop.conns.find(tag);
          if (it == loop.conns.end()) continue;
          on_event(loop, *it->second, events[std::size_t(i)].events);
        }
      }
      if (Clock::now() >= next_tick) {
        if (loop.accept_paused && listening) {
          watch_listeners(loop, true);
          loop.accept_paused = false;
        }
        expire(loop, Clock::now());
        next_tick = Clock::now() + kTick;
      }
      loop.graveyard.clear();
    }
    loop.conns.clear();
    loop.buffered = 0;
  }

  // Stopping: idle connections go now, static downloads are cut off; requests being handled
  // and replies being written get until the grace deadline.
  void begin_stop(Loop& loop) {
    std::vector<std::uint64_t> gone;
    for (auto& [id, c] : loop.conns) {
      if (c->state == Conn::State::reading || c->state == Conn::State::lingering ||
          c->streaming_file) {
        gone.push_back(id);
      } else {
        c->close_after = true;
      }
    }
    for (auto id : gone) close_conn(loop, id);
    loop.graveyard.clear();
  }

  // Accepts what is pending and spreads it over the loops (EPOLLEXCLUSIVE wakes one loop, which
  // would otherwise keep every connection of a burst to itself).
  void accept_all(Loop& loop, int listen_fd) {
    for (int i = 0; i < 64; ++i) {
      sockaddr_storage addr{};
      socklen_t len = sizeof addr;
      int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          // EMFILE and friends: the pending connection stays in the backlog and the socket stays
          // readable; stop listening on this loop until the next tick instead of spinning.
          log::warn(std::string("http server: accept: ") + std::strerror(errno) +
                    "; accepting again in " + std::to_string(kTick.count()) + " ms");
          watch_listeners(loop, false);
          loop.accept_paused = true;
        }
        return;
      }
      if (open_conns_.fetch_add(1) >= config_.max_connections) {
        open_conns_.fetch_sub(1);
        const std::string busy = head_text(503, "application/json",
                                           json_error("too many connections").size(), true, {}) +
                                 json_error("too many connections");
        [[maybe_unused]] auto n = ::send(fd, busy.data(), busy.size(), MSG_NOSIGNAL);
        ::close(fd);
        log::warn("http server: connection refused, too many open",
                  {{"MAX_CONNECTIONS", std::to_string(config_.max_connections)}});
        continue;
      }
      Loop* target = &loop;
      for (auto& l : loops_) {
        if (l->active.load() < target->active.load()) target = l.get();
      }
      target->active.fetch_add(1);
      if (target == &loop) {
        add_conn(loop, fd, address_text(addr));
      } else {
        target->mailbox->post(Mailbox::NewConn{fd, address_text(addr)});
      }
    }
  }

  void add_conn(Loop& loop, int fd, std::string remote) {
    auto c = std::make_unique<Conn>();
    c->id = next_conn_id_.fetch_add(1);
    c->fd = fd;
    c->remote = std::move(remote);
    c->deadline = Clock::now() + keep_alive_timeout();
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = c->id;
    c->events = EPOLLIN;
    if (::epoll_ctl(loop.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
      open_conns_.fetch_sub(1);
      loop.active.fetch_sub(1);
      return;  // ~Conn closes fd
    }
    loop.conns.emplace(c->id, std::move(c));
  }

  static std::string address_text(const sockaddr_storage& addr) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (addr.ss_family == AF_UNIX) return "unix";
    if (addr.ss_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&addr)->sin_addr, buf, sizeof buf);
    } else if (addr.ss_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr, buf,
                  sizeof buf);
    }
    return buf;
  }

  std::chrono::seconds keep_alive_timeout() const {
    return std::chrono::seconds(std::max(1, config_.keep_alive_timeout_s));
  }

  void close_conn(Loop& loop, std::uint64_t id) {
    auto it = loop.conns.find(id);
    if (it == loop.conns.end()) return;
    Conn& c = *it->second;
    ::epoll_ctl(loop.ep, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.fd = -1;
    c.dead = true;
    loop.buffered.fetch_sub(std::exchange(c.accounted, 0));
    bodies_reserved_.fetch_sub(std::exchange(c.body_reserved, 0));
    loop.graveyard.push_back(std::move(it->second));
    loop.conns.erase(it);
    open_conns_.fetch_sub(1);
    loop.active.fetch_sub(1);
  }

  void set_interest(Loop& loop, Conn& c, std::uint32_t want) {
    if (c.events == want) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = c.id;
    ::epoll_ctl(loop.ep, EPOLL_CTL_MOD, c.fd, &ev);
    c.events = want;
  }

  void expire(Loop& loop, Clock::time_point now) {
    std::vector<std::uint64_t> late;
    for (auto& [id, c] : loop.conns) {
      if (c->state != Conn::State::pending && now >= c->deadline) late.push_back(id);
    }
    for (auto id : late) {
      auto it = loop.conns.find(id);
      Conn& c = *it->second;
      if (c.state == Conn::State::reading && c.request_started) {
        // A request that did not arrive whole in time (slow or stalled client): 408, close.
        c.method.clear();
        c.path.clear();
        refuse(loop, c, 408, "request not received in time");
        account(loop, c);
      } else {
        close_conn(loop, id);  // idle keep-alive, stalled reader, or the end of a linger
      }
    }
  }

  void drain_mailbox(Loop& loop) {
    std::uint64_t count;
    [[maybe_unused]] auto n = ::read(loop.mailbox->efd, &count, sizeof count);
    std::vector<Mailbox::Item> items;
    std::vector<Mailbox::NewConn> adopt;
    {
      std::lock_guard lock(loop.mailbox->mu);
      items.swap(loop.mailbox->items);
      adopt.swap(loop.mailbox->adopt);
    }
    for (auto& c : adopt) {
      if (loop.stop_requested) {
        ::close(c.fd);
        open_conns_.fetch_sub(1);
        loop.active.fetch_sub(1);
      } else {
        add_conn(loop, c.fd, std::move(c.remote));
      }
    }
    for (auto& item : items) {
      auto it = loop.conns.find(item.conn);
      if (it == loop.conns.end()) continue;  // the client went away meanwhile
      Conn& c = *it->second;
      if (c.state != Conn::State::pending) continue;
      start_reply(loop, c, std::move(item.reply));
      if (!c.dead && c.state == Conn::State::reading) process(loop, c);
      account(loop, c);
    }
  }

  void on_event(Loop& loop, Conn& c, std::uint32_t ev) {
    const std::uint64_t id = c.id;
    if (ev & (EPOLLERR)) {
      close_conn(loop, id);
      return;
    }
    if (ev & (EPOLLIN | EPOLLHUP)) read_some(loop, c);
    if (!c.dead && (ev & EPOLLOUT)) write_some(loop, c);
    if (!c.dead && c.state == Conn::State::reading) process(loop, c);
    account(loop, c);
  }

  // Brings Loop::buffered up to date with what `c` holds now (ServerStats::buffered_bytes).
  static void account(Loop& loop, Conn& c) {
    if (c.dead) return;  // close_conn took its share off
    const std::size_t now =
        heap_bytes(c.in) + heap_bytes(c.out) + (c.req ? heap_bytes(c.req->body) : 0);
    if (now >= c.accounted) {
      loop.buffered.fetch_add(now - c.accounted);
    } else {
      loop.buffered.fetch_sub(c.accounted - now);
    }
    c.accounted = now;
  }

  // Puts bytes just read where they belong: the body being received first (straight into the
  // request, or dropped), the rest into `in`.
  static void take(Conn& c, const char* data, std::size_t n) {
    if (c.req && c.body_left > 0 && c.in.empty() && n > 0) {
      const std::size_t k = std::size_t(std::min<std::uint64_t>(n, c.body_left));
      if (!c.discard_body) c.req->body.append(data, k);
      c.body_left -= k;
      c.expect_continue = false;  // the body is coming: no 100 Continue any more
      data += k;
      n -= k;
    }
    c.in.append(data, n);
  }

  // Reads what is there. False when the connection was closed.
  bool read_some(Loop& loop, Conn& c) {
    while (true) {
      if (c.state == Conn::State::lingering) {
        ssize_t n = ::read(c.fd, loop.scratch.data(), loop.scratch.size());
        if (n > 0) continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
        close_conn(loop, c.id);
        return false;
      }
      // Bounded buffering: beyond one head's worth, bytes wait in the socket until process()
      // has used the buffered ones (or refused an over-long head), or while a request is
      // handled. A body being received goes straight into its request, so it is not bounded here.
      const bool to_body = c.req && c.body_left > 0 && c.in.empty();
      if (!to_body && c.in.size() >= kMaxHead) {
        update_interest(loop, c);
        return true;
      }
      ssize_t n = ::read(c.fd, loop.scratch.data(), loop.scratch.size());
      if (n > 0) {
        take(c, loop.scratch.data(), std::size_t(n));
        if (c.state == Conn::State::reading && !c.request_started) {
          c.request_started = true;
          c.deadline = Clock::now() + std::chrono::seconds(std::max(1, config_.request_timeout_s));
        }
        if (std::size_t(n) < loop.scratch.size()) return true;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      // EOF or error. A client may half-close after its request and still wait for the answer.
      if (n == 0 && c.state != Conn::State::reading) {
        c.peer_eof = true;
        c.close_after = true;
        update_interest(loop, c);
        return true;
      }
      if (n == 0 && c.state == Conn::State::reading && (!c.in.empty() || c.req)) {
        c.peer_eof = true;
        c.close_after = true;
        update_interest(loop, c);
        return true;  // what is buffered may still be a whole request
      }
      close_conn(loop, c.id);
      return false;
    }
  }

  void update_interest(Loop& loop, Conn& c) {
    std::uint32_t want = 0;
    if (c.state == Conn::State::writing) want |= EPOLLOUT;
    if (!c.peer_eof && (c.state == Conn::State::reading || c.state == Conn::State::lingering ||
                        c.in.size() < kMaxHead)) {
      want |= EPOLLIN;
    }
    set_interest(loop, c, want);
  }

  // Parses and dispatches the buffered requests, one at a time.
  void process(Loop& loop, Conn& c) {
    while (!c.dead && c.state == Conn::State::reading) {
      if (c.req) {
        // The head is parsed: only the body is awaited (pipelined bytes may follow it in `in`).
        if (c.body_left > 0 && !c.in.empty()) {
          const std::size_t k = std::size_t(std::min<std::uint64_t>(c.in.size(), c.body_left));
          if (!c.discard_body) c.req->body.append(c.in, 0, k);
          c.in.erase(0, k);
          c.body_left -= k;
          c.expect_continue = false;
        }
        if (c.body_left > 0) {
          if (c.expect_continue && !c.sent_continue) {
            static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
            [[maybe_unused]] auto n =
                ::send(c.fd, kContinue.data(), kContinue.size(), MSG_NOSIGNAL);
            c.sent_continue = true;
          }
          if (c.peer_eof) close_conn(loop, c.id);
          return;
        }
        finish_request(loop, c);
        continue;
      }
      const std::size_t from = c.scanned >= 3 ? c.scanned - 3 : 0;
      const std::size_t end = c.in.find("\r\n\r\n", from);
      if (end == std::string::npos) {
        c.scanned = c.in.size();
        if (c.in.size() >= kMaxHead) {  // read_some stops here: the head cannot fit
          refuse(loop, c, 431, "request head over 64 KiB");
        } else if (c.peer_eof) {
          close_conn(loop, c.id);
        }
        return;
      }
      if (end + 4 > kMaxHead) {
        refuse(loop, c, 431, "request head over 64 KiB");
        return;
      }
      if (!parse_head(loop, c, end)) return;
    }
  }

  void refuse(Loop& loop, Conn& c, int status, std::string_view why) {
    c.req.reset();
    c.route = nullptr;
    c.body_left = 0;
    c.discard_body = false;
    c.expect_continue = false;
    c.close_after = true;
    c.started = Clock::now();
    if (c.method.empty()) c.method = "-";
    start_reply(loop, c, error_reply(status, why));
  }

  const Route* match_route(HttpRequest& req) const {
    const std::string_view method =
        req.method == "HEAD" ? std::string_view("GET") : std::string_view(req.method);
    for (const auto& r : routes_) {
      if (r->method == method && r->match(req.path, req.path_params)) return r.get();
      req.path_params.clear();
    }
    return nullptr;
  }

  // Parses the head ending at `end` (the "\r\n\r\n"), once: the request then waits in `c.req`
  // for its body. False when the request was refused.
  bool parse_head(Loop& loop, Conn& c, std::size_t end) {
    heads_parsed_.fetch_add(1, std::memory_order_relaxed);
    const std::string_view head(c.in.data(), end);
    auto req = std::make_unique<HttpRequest>();
    c.method.clear();
    c.path.clear();
    const std::size_t line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    if (std::any_of(line.begin(), line.end(),
                    [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f; })) {
      refuse(loop, c, 400, "malformed request line: control character (CR, LF, NUL, ...)");
      return false;
    }
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
      refuse(loop, c, 400, "malformed request line: want METHOD TARGET VERSION, one space apart");
      return false;
    }
    const std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    const bool method_ok =
        !method.empty() &&
        std::all_of(method.begin(), method.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; });
    if (!method_ok) {
      refuse(loop, c, 400, "malformed request line: the method is not upper-case letters");
      return false;
    }
    // Absolute form (RFC 9112 §3.2.2): a server must accept it; its path and query are the
    // request's (the authority is not checked: this server answers for any host name).
    std::string absolute_rest;
    if (!target.empty() && target.front() != '/') {
      const std::size_t sep = target.find("://");
      const bool http_scheme =
          sep != std::string_view::npos &&
          (iequals(target.substr(0, sep), "http") || iequals(target.substr(0, sep), "https"));
      const std::string_view rest = http_scheme ? target.substr(sep + 3) : std::string_view();
      const std::size_t authority_end = rest.find_first_of("/?#");
      if (!http_scheme || authority_end == 0 || rest.empty()) {
        refuse(loop, c, 400,
               "malformed request line: the target is neither /path nor http://host/path");
        return false;
      }
      absolute_rest =
          authority_end == std::string_view::npos ? std::string() : rest.substr(authority_end);
      if (absolute_rest.empty() || absolute_rest.front() != '/') absolute_rest.insert(0, "/");
      target = absolute_rest;
    }
    if (target.empty()) {
      refuse(loop, c, 400, "malformed request line: empty target");
      return false;
    }
    if (version != "HTTP/1.1" && version != "HTTP/1.0") {
      refuse(loop, c, 505, "HTTP version not supported (HTTP/1.1 or HTTP/1.0)");
      return false;
    }
    c.http10 = version == "HTTP/1.0";
    c.method = std::string(method);
    req->method = c.method;
    target = target.substr(0, target.find('#'));  // a fragment is never sent; ignore one if it is
    const std::size_t q = target.find('?');
    req->path = percent_decode(target.substr(0, q), false);
    c.path = req->path;
    if (q != std::string_view::npos) {
      std::string_view query = target.substr(q + 1);
      while (!query.empty()) {
        const std::size_t amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        if (!pair.empty()) {
          const std::size_t eq = pair.find('=');
          req->query.emplace(percent_decode(pair.substr(0, eq), true),
                             eq == std::string_view::npos
                                 ? std::string()
                                 : percent_decode(pair.substr(eq + 1), true));
        }
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
      }
    }
    std::optional<std::uint64_t> content_length;
    bool chunked = false, expect_continue = false, saw_close = false, saw_keep_alive = false;
    std::size_t hosts = 0;
    std::size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      std::size_t eol = head.find("\r\n", pos);
      if (eol == std::string_view::npos) eol = head.size();
      const std::string_view h = head.substr(pos, eol - pos);
      pos = eol + 2;
      // RFC 9112 §5.2: obs-fold is refused (a server may not guess how a proxy joined it).
      if (!h.empty() && (h.front() == ' ' || h.front() == '\t')) {
        refuse(loop, c, 400, "header line starting with whitespace (obs-fold is not accepted)");
        return false;
      }
      const std::size_t colon = h.find(':');
      if (colon == std::string_view::npos || colon == 0) {
        refuse(loop, c, 400, "malformed header line: want NAME: VALUE");
        return false;
      }
      const std::string_view raw_name = h.substr(0, colon);
      // RFC 9112 §5.1: whitespace before the colon is a 400 (request smuggling through proxies
      // that read the name differently).
      if (raw_name.back() == ' ' || raw_name.back() == '\t') {
        refuse(loop, c, 400, "whitespace between a header name and its colon");
        return false;
      }
      if (!std::all_of(raw_name.begin(), raw_name.end(),
                       [](char ch) { return is_tchar(static_cast<unsigned char>(ch)); })) {
        refuse(loop, c, 400, "header name is not a token (RFC 9110 tchar)");
        return false;
      }
      std::string name = lower(raw_name);
      const std::string_view raw_value = h.substr(colon + 1);
      // RFC 9110 §5.5: CR, LF and NUL in a value must be refused (a bare LF ends a line for
      // some parsers: header injection).
      if (raw_value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
        refuse(loop, c, 400, "CR, LF or NUL in the value of header " + name);
        return false;
      }
      const std::string_view value = trim(raw_value);
      if (name == "content-length") {
        auto v = parse_u64(value);
        if (!v || (content_length && *content_length != *v)) {
          refuse(loop, c, 400, "malformed Content-Length");
          return false;
        }
        content_length = v;
      } else if (name == "transfer-encoding") {
        chunked = true;
      } else if (name == "expect") {
        expect_continue = iequals(value, "100-continue");
      } else if (name == "host") {
        ++hosts;
      } else if (name == "connection") {
        // A list of case-insensitive tokens (RFC 9110 §7.6.1): "keep-alive, Upgrade", "CLOSE".
        std::string_view list = value;
        while (!list.empty()) {
          const std::size_t comma = list.find(',');
          const std::string_view token = trim(list.substr(0, comma));
          if (iequals(token, "close")) saw_close = true;
          if (iequals(token, "keep-alive")) saw_keep_alive = true;
          if (comma == std::string_view::npos) break;
          list.remove_prefix(comma + 1);
        }
      }
      auto [it, inserted] = req->headers.emplace(std::move(name), std::string(value));
      if (!inserted) {
        it->second += ", ";
        it->second += value;
      }
    }
    c.started = Clock::now();
    // RFC 9112 §3.2: Host is mandatory in HTTP/1.1, and never twice.
    if (hosts == 0 && !c.http10) {
      refuse(loop, c, 400, "missing Host header (required in HTTP/1.1)");
      return false;
    }
    if (hosts > 1) {
      refuse(loop, c, 400, "more than one Host header");
      return false;
    }
    if (chunked) {
      refuse(loop, c, 411, "Transfer-Encoding is not supported; send Content-Length");
      return false;
    }
    const std::uint64_t body_len = content_length.value_or(0);
    if (body_len > config_.max_body_bytes) {
      refuse(loop, c, 413,
             "request body over max_body_bytes (" + std::to_string(config_.max_body_bytes) +
                 " bytes)");
      return false;
    }
    const Route* route = match_route(*req);
    if (!route && body_len > kUnroutedBodyMax) {
      refuse(loop, c, 413, "request body too large: this resource takes no body");
      return false;
    }
    if (route && body_len > 0 && config_.max_bodies_bytes > 0) {
      // Reserved whole from the head on: the bodies of many connections that trickle in must not
      // add up past the budget, whatever each one's size.
      std::uint64_t held = bodies_reserved_.load();
      do {
        if (held + body_len > config_.max_bodies_bytes) {
          refuse(loop, c, 503,
                 "request bodies being received are at the server's budget (max_bodies_bytes " +
                     std::to_string(config_.max_bodies_bytes) + "); retry later");
          return false;
        }
      } while (!bodies_reserved_.compare_exchange_weak(held, held + body_len));
      c.body_reserved = body_len;
    }
    c.in.erase(0, end + 4);
    c.scanned = 0;
    c.persistent = saw_close ? false : saw_keep_alive || !c.http10;
    c.route = route;
    c.body_left = body_len;
    c.discard_body = !route;
    c.expect_continue = expect_continue && body_len > 0;
    if (route && body_len > 0) {
      req->body.reserve(std::size_t(std::min<std::uint64_t>(body_len, kBodyReserveMax)));
    }
    c.req = std::move(req);
    return true;
  }

  // The request in `c.req` is whole: hands it to its route (or the static files).
  void finish_request(Loop& loop, Conn& c) {
    std::unique_ptr<HttpRequest> req = std::move(c.req);
    const Route* route = std::exchange(c.route, nullptr);
    c.sent_continue = false;
    c.expect_continue = false;
    c.discard_body = false;
    release(c.in);
    c.request_started = !c.in.empty();
    ++c.requests;
    if (!c.persistent || c.requests >= std::max<std::size_t>(1, config_.keep_alive_max_count)) {
      c.close_after = true;
    }
    c.head_only = req->method == "HEAD";
    req->remote_addr = c.remote;
    dispatch(loop, c, std::move(*req), route);
  }

  void dispatch(Loop& loop, Conn& c, HttpRequest&& req, const Route* r) {
    if (r) {
      c.state = Conn::State::pending;
      update_interest(loop, c);
      auto state = std::make_shared<Responder::State>(loop.mailbox, c.id);
      Responder responder(state);
      if (r->async_handler) {
        try {
          r->async_handler(std::move(req), responder);
        } catch (const std::exception& e) {
          log::error("http handler failed", {{"PATH", c.path}, {"ERROR", e.what()}});
          responder(error_reply(500, "internal error"));
        } catch (...) {
          log::error("http handler failed", {{"PATH", c.path}, {"ERROR", "unknown exception"}});
          responder(error_reply(500, "internal error"));
        }
      } else {
        std::unique_lock lock(work_mu_);
        if (stopping_workers_) {
          lock.unlock();
          responder(error_reply(503, "server is stopping"));
          return;
        }
        work_.push_back(std::make_unique<WorkerTask>(WorkerTask{r, std::move(req), responder}));
        lock.unlock();
        work_cv_.notify_one();
      }
      return;
    }
    if (!root_.empty() && (req.method == "GET" || req.method == "HEAD")) {
      c.state = Conn::State::pending;
      serve_static(loop, c, req);
      return;
    }
    c.state = Conn::State::pending;
    start_reply(loop, c, error_reply(404, "not found"));
  }

  static std::string head_text(int status, std::string_view type, std::uint64_t length, bool close,
                               const std::map<std::string, std::string>& extra,
                               bool http10 = false) {
    std::string h;
    h.reserve(160);
    h += "HTTP/1.1 ";
    h += std::to_string(status);
    h += ' ';
    h += reason(status);
    h += "\r\nContent-Type: ";
    h += type;
    h += "\r\nContent-Length: ";
    h += std::to_string(length);
    h += "\r\n";
    for (const auto& [k, v] : extra) {
      h += k;
      h += ": ";
      h += v;
      h += "\r\n";
    }
    if (close) {
      h += "Connection: close\r\n";
    } else if (http10) {
      h += "Connection: keep-alive\r\n";
    }
    h += "\r\n";
    return h;
  }

  // The caller's Cache-Control for a static file (ServerConfig::static_cache_control).
  std::string cache_control(const std::string& rel) const {
    if (!config_.static_cache_control) return {};
    try {
      std::string value = config_.static_cache_control(rel);
      if (value.find_first_of("\r\n") == std::string::npos) return value;
      log::error("http server: static_cache_control gave a value with CR or LF; sent none",
                 {{"PATH", rel}});
    } catch (const std::exception& e) {
      log::error("http server: static_cache_control failed; sent none",
                 {{"PATH", rel}, {"ERROR", e.what()}});
    } catch (...) {
      log::error("http server: static_cache_control failed; sent none", {{"PATH", rel}});
    }
    return {};
  }

  void log_request(const Conn& c, int status, std::uint64_t bytes) {
    requests_served_.fetch_add(1);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - c.started).count();
    // METHOD and PATH are the client's bytes: log::write escapes them (common/text.hpp), so a
    // "%0A" in a path cannot forge a line.
    log::info("http", {{"METHOD", c.method.empty() ? std::string("-") : c.method},
                       {"PATH", c.path},
                       {"STATUS", std::to_string(status)},
                       {"BYTES", std::to_string(c.head_only ? 0 : bytes)},
                       {"DURATION_MS", std::to_string(ms)},
                       {"REMOTE", c.remote}});
  }

  // Starts writing `reply` (a handler's, or the server's own refusal).
  void start_reply(Loop& loop, Conn& c, HttpReply reply) {
    // The request's body is the handler's now, or dropped: the budget is free again.
    bodies_reserved_.fetch_sub(std::exchange(c.body_reserved, 0));
    if (loop.stop_requested) c.close_after = true;
    log_request(c, reply.status, reply.body.size());
    c.out = head_text(reply.status, reply.content_type, reply.body.size(), c.close_after,
                      reply.headers, c.http10);
    if (!c.head_only) c.out += reply.body;
    c.out_pos = 0;
    begin_write(loop, c);
  }

  // The caller goes on with process() if the reply went out whole (pipelined requests).
  void begin_write(Loop& loop, Conn& c) {
    c.state = Conn::State::writing;
    c.deadline = Clock::now() + std::chrono::seconds(std::max(1, config_.write_timeout_s));
    write_some(loop, c);
  }

  // Writes what the socket takes. False when the connection was closed.
  bool write_some(Loop& loop, Conn& c) {
    if (c.state != Conn::State::writing) return true;
    while (c.out_pos < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_pos += std::size_t(n);
        c.deadline = Clock::now() + std::chrono::seconds(std::max(1, config_.write_timeout_s));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        update_interest(loop, c);
        return true;
      }
      close_conn(loop, c.id);
      return false;
    }
    while (c.file_left > 0) {
      const std::size_t want = std::size_t(std::min<std::uint64_t>(c.file_left, kSendfileChunk));
      ssize_t n = ::sendfile(c.fd, c.file, &c.file_off, want);
      if (n > 0) {
        c.file_left -= std::uint64_t(n);
        c.deadline = Clock::now() + std::chrono::seconds(std::max(1, config_.write_timeout_s));
        if (std::size_t(n) == want && c.file_left > 0) {
          // A full chunk: let the loop serve others before the next one.
          update_interest(loop, c);
          return true;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        update_interest(loop, c);
        return true;
      }
      // An error, or the file shrank under us (n == 0): the client sees a short body.
      close_conn(loop, c.id);
      return false;
    }
    // The reply is out: its buffer goes (an idle connection keeps none).
    std::string().swap(c.out);
    c.out_pos = 0;
    if (c.file >= 0) {
      ::close(c.file);
      c.file = -1;
    }
    c.streaming_file = false;
    if (c.close_after) {
      // Lingering close: stop sending, keep reading (and dropping) for a moment so a client
      // still sending a refused body gets our answer instead of a reset.
      ::shutdown(c.fd, SHUT_WR);
      if (c.peer_eof || loop.stop_requested) {  // nothing to wait for, or no time to
        close_conn(loop, c.id);
        return false;
      }
      c.state = Conn::State::lingering;
      std::string().swap(c.in);
      c.deadline = Clock::now() + kLinger;
      update_interest(loop, c);
      return true;
    }
    c.state = Conn::State::reading;
    c.method.clear();
    c.path.clear();
    c.head_only = false;
    release(c.in);
    if (c.in.empty()) {
      c.request_started = false;
      c.deadline = Clock::now() + keep_alive_timeout();
    } else {
      c.request_started = true;
      c.deadline = Clock::now() + std::chrono::seconds(std::max(1, config_.request_timeout_s));
    }
    update_interest(loop, c);
    return true;
  }

  void serve_static(Loop& loop, Conn& c, const HttpRequest& req) {
    auto not_found = [&] { start_reply(loop, c, error_reply(404, "not found")); };
    std::string rel;
    if (!safe_relative_path(req.path, rel)) return not_found();
    stdfs::path full = root_ / rel;
    // O_NONBLOCK: opening a FIFO must not hang the loop; regular files ignore it.
    int fd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return not_found();
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return not_found();
    }
    // Symlinks may point anywhere; what was actually opened must lie inside the root. Checking
    // the open descriptor (not the path) leaves no window for a swapped link.
    char target[PATH_MAX + 1];
    const std::string fd_link = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(fd_link.c_str(), target, PATH_MAX);
    const std::string& root = root_.native();
    std::string_view resolved(target, n > 0 ? std::size_t(n) : 0);
    const bool inside = n > 0 && resolved.size() > root.size() &&
                        resolved.substr(0, root.size()) == root &&
                        (root == "/" || resolved[root.size()] == '/');
    if (!inside) {
      ::close(fd);
      if (n > 0) {
        log::warn("http: refusing a file outside the static root", {{"PATH", req.path}});
      }
      return not_found();
    }
    const std::uint64_t size = std::uint64_t(st.st_size);
    const std::string name = stdfs::path(rel).filename().string();
    const bool json = name.size() > 5 && name.substr(name.size() - 5) == ".json";
    const std::string type = json ? "application/json" : "application/octet-stream";
    std::map<std::string, std::string> extra{{"Accept-Ranges", "bytes"}};
    if (std::string cc = cache_control(rel); !cc.empty()) extra.emplace("Cache-Control", cc);

    std::uint64_t first = 0, length = size;
    int status = 200;
    auto range_header = req.headers.find("range");
    if (range_header != req.headers.end() && size > 0) {
      if (auto r = parse_range(range_header->second, size)) {
        if (r->unsatisfiable || r->malformed) {
          ::close(fd);
          HttpReply e = error_reply(416, "range not satisfiable");
          e.headers = extra;
          if (r->unsatisfiable) e.headers["Content-Range"] = "bytes */" + std::to_string(size);
          return start_reply(loop, c, std::move(e));
        }
        first = r->first;
        length = r->length;
        status = 206;
        extra["Content-Range"] = "bytes " + std::to_string(first) + "-" +
                                 std::to_string(first + length - 1) + "/" + std::to_string(size);
      }
    }
    if (loop.stop_requested) c.close_after = true;
    log_request(c, status, length);
    c.out = head_text(status, type, length, c.close_after, extra, c.http10);
    c.out_pos = 0;
    if (c.head_only || length == 0) {
      ::close(fd);
    } else {
      c.file = fd;
      c.file_off = off_t(first);
      c.file_left = length;
      c.streaming_file = true;
    }
    begin_write(loop, c);
  }

  ServerConfig config_;
  stdfs::path root_;
  std::vector<std::unique_ptr<Route>> routes_;  // stable addresses: segments view pattern
  int listen_fd_ = -1;
  int unix_fd_ = -1;
  dev_t unix_dev_ = 0;
  ino_t unix_ino_ = 0;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::atomic<std::uint64_t> next_conn_id_{1};
  std::atomic<std::size_t> open_conns_{0};
  std::atomic<std::uint64_t> requests_served_{0};
  std::atomic<std::uint64_t> heads_parsed_{0};
  std::atomic<std::uint64_t> bodies_reserved_{0};  // ServerConfig::max_bodies_bytes

  std::mutex work_mu_;
  std::condition_variable work_cv_;
  std::deque<std::unique_ptr<WorkerTask>> work_;
  bool stopping_workers_ = false;
  std::vector<std::thread> workers_;

  bool started_ = false;
  std::mutex stop_mutex_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  bool stopped_ = false;
};

}  // namespace

std::unique_ptr<HttpServer> make_http_server(const ServerConfig& config) {
  return std::make_unique<EpollServer>(config);
}

}  // namespace mota::net
