// libmicrohttpd (0.9.75, Debian 12) behind net/http_server.hpp: the A/B contender of the epoll
// engine (issue 16; bench/README.md, "HTTP engine A/B"). Built instead of
// net/platform/epoll/ with -DMOTA_HTTP_ENGINE=mhd.
//
// MHD's own event loops (MHD_USE_EPOLL, a pool of io_threads) read, parse and write every
// connection. Every routed request is suspended (MHD_suspend_connection) once its body is in and
// resumed when its reply arrives: route() handlers run on our worker pool, route_async() ones on
// the MHD thread and answer through a Responder from any thread. Static files are MHD fd
// responses (sendfile). The listening socket is ours: one accept thread hands connections to MHD
// (MHD_add_connection) so that a connection over max_connections gets our 503 (MHD would only
// close it) and running out of descriptors pauses accepting instead of spinning.
//
// What MHD does not allow, so differs from the contract: requests MHD itself refuses (malformed
// request line or header, a head over the memory limit, a bad Content-Length) get MHD's own HTML
// answer, not a JSON {"error"}; timeouts are MHD's inactivity timeout (no 408, a dripping client
// is not cut off); HTTP/1.0 keep-alive answers say "Connection: Keep-Alive"; a "%00" in the path
// stays encoded (see unescape_cb). Chunked bodies are refused with 411 by us, as the contract says.

#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
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

constexpr std::size_t kMaxHead = 64 * 1024;  // request line + headers
// MHD reads the head into a per-connection pool of this size (mmap'ed: untouched pages cost no
// memory) and also builds the reply's head there.
constexpr std::size_t kConnectionMemory = kMaxHead + 16 * 1024;
constexpr auto kStopGrace = std::chrono::seconds(5);
constexpr auto kAcceptPause = std::chrono::milliseconds(200);

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string json_error(std::string_view message) {
  // Messages here are fixed ASCII texts without quotes or backslashes.
  return "{\"error\":\"" + std::string(message) + "\"}";
}

// Request paths are attacker-chosen: escape control characters so a "%0A" cannot forge
// log lines.
std::string printable(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f || c == '\\') {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
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

// Unversioned TUF metadata ("timestamp.json", "snapshot.json", ...) changes in place; versioned
// ("3.snapshot.json") and target files never do.
bool is_unversioned_metadata(std::string_view name) {
  if (name.size() <= 5 || name.substr(name.size() - 5) != ".json") return false;
  std::string_view prefix = name.substr(0, name.find('.'));
  bool versioned = !prefix.empty() && std::all_of(prefix.begin(), prefix.end(),
                                                  [](char c) { return c >= '0' && c <= '9'; });
  return !versioned;
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

HttpReply error_reply(int status, std::string_view message) {
  HttpReply r;
  r.status = status;
  r.body = json_error(message);
  return r;
}

std::string address_text(const sockaddr* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr == nullptr) return "";
  if (addr->sa_family == AF_UNIX) return "unix";
  if (addr->sa_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr, buf, sizeof buf);
  } else if (addr->sa_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

// The answer of one routed request, shared by the request (MHD's side) and its Responders.
// MHD allows resuming a suspended connection from any thread; everything else about the
// connection stays on MHD's thread. The mutex orders "suspend" before "resume".
struct Slot {
  std::mutex mu;
  MHD_Connection* conn = nullptr;
  bool in_handler = true;  // the dispatching call has not returned: keep the reply, no resume
  bool suspended = false;  // suspended and not resumed yet
  bool closed = false;     // the server stops: replies are dropped
  std::optional<HttpReply> reply;
};

}  // namespace

struct Responder::State {
  std::shared_ptr<Slot> slot;
  std::atomic<bool> done{false};
  explicit State(std::shared_ptr<Slot> s) : slot(std::move(s)) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (!done.load()) deliver(error_reply(500, "internal error: the request was not answered"));
  }
  void deliver(HttpReply reply) {
    std::lock_guard lock(slot->mu);
    if (slot->closed || slot->reply) return;
    slot->reply = std::move(reply);
    if (slot->suspended) {
      slot->suspended = false;
      MHD_resume_connection(slot->conn);
    }
  }
};

void Responder::operator()(HttpReply reply) const {
  if (!state_ || state_->done.exchange(true)) return;
  state_->deliver(std::move(reply));
}

namespace {

// Per connection (MHD's socket context).
struct ConnCtx {
  std::size_t requests = 0;
  std::string remote;
};

// Per request (MHD's request context), from the head's arrival to MHD's completion notice.
struct Request {
  HttpRequest req;
  std::string method, path, remote;  // for the access log (req is moved to the handler)
  Clock::time_point started;
  std::shared_ptr<Slot> slot;  // routed requests only
  bool dispatched = false;
  bool answered = false;  // a reply was queued
  bool head_only = false;
  bool close_after = false;
};

struct WorkerTask {
  const Route* route;
  HttpRequest request;
  Responder responder;
};

class MhdServer final : public HttpServer {
 public:
  explicit MhdServer(ServerConfig config) : config_(std::move(config)) {}
  ~MhdServer() override {
    stop();
    if (stop_efd_ >= 0) ::close(stop_efd_);
  }

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
    stop_efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_efd_ < 0) {
      return fail(Errc::io, std::string("http server: eventfd: ") + std::strerror(errno));
    }
    int n = config_.io_threads;
    if (n <= 0) n = std::clamp(int(std::thread::hardware_concurrency()), 1, 4);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_NO_LISTEN_SOCKET;
    std::vector<MHD_OptionItem> options{
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, intptr_t(kConnectionMemory), nullptr},
        // Ours is the limit (the accept thread); MHD's only must not be the lower one.
        {MHD_OPTION_CONNECTION_LIMIT,
         intptr_t(std::min<std::size_t>(config_.max_connections + 64, 1u << 30)), nullptr},
        {MHD_OPTION_CONNECTION_TIMEOUT, intptr_t(keep_alive_timeout_s()), nullptr},
        {MHD_OPTION_NOTIFY_COMPLETED, intptr_t(&MhdServer::on_completed_cb), this},
        {MHD_OPTION_NOTIFY_CONNECTION, intptr_t(&MhdServer::on_connection_cb), this},
        {MHD_OPTION_UNESCAPE_CALLBACK, intptr_t(&MhdServer::unescape_cb), nullptr},
    };
    if (n > 1) options.push_back({MHD_OPTION_THREAD_POOL_SIZE, intptr_t(n), nullptr});
    options.push_back({MHD_OPTION_END, 0, nullptr});
    daemon_ = MHD_start_daemon(flags, 0, nullptr, nullptr, &MhdServer::on_request_cb, this,
                               MHD_OPTION_ARRAY, options.data(), MHD_OPTION_END);
    if (daemon_ == nullptr) {
      if (listen_fd_ >= 0) ::close(listen_fd_);
      listen_fd_ = -1;
      close_unix();
      return fail(Errc::io, "http server: libmicrohttpd did not start");
    }
    started_ = true;
    for (int i = 0; i < std::max(1, config_.threads); ++i) {
      workers_.emplace_back([this] { run_worker(); });
    }
    acceptor_ = std::thread([this] { run_acceptor(); });
    log::info(
        "http server listening",
        {{"ADDRESS", (tcp ? config_.host + ":" + std::to_string(port) : std::string()) +
                         (config_.unix_socket.empty() ? "" : " " + config_.unix_socket.string())},
         {"ENGINE", "libmicrohttpd " + std::string(MHD_get_version())},
         {"IO_THREADS", std::to_string(n)},
         {"WORKERS", std::to_string(std::max(1, config_.threads))}});
    return port;
  }

  void stop() override {
    std::lock_guard stop_lock(stop_mutex_);
    if (!started_ || stopped_) return;
    // No new connections.
    std::uint64_t one = 1;
    [[maybe_unused]] auto w = ::write(stop_efd_, &one, sizeof one);
    if (acceptor_.joinable()) acceptor_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    close_unix();
    stopping_ = true;  // replies from now on close their connection
    // Running handlers finish and post their replies, queued ones get 503.
    {
      std::lock_guard lock(work_mu_);
      stopping_workers_ = true;
    }
    work_cv_.notify_all();
    for (auto& w2 : workers_) w2.join();
    // Routed requests still pending or being written get the grace period.
    std::vector<std::shared_ptr<Slot>> left;
    {
      std::unique_lock lock(busy_mu_);
      busy_cv_.wait_for(lock, kStopGrace, [&] { return busy_.empty(); });
      for (auto& [raw, slot] : busy_) left.push_back(slot);
      closing_ = true;  // no request suspends from now on
    }
    // MHD must not be stopped with suspended connections: resume them without a reply (the
    // handler then closes them); later Responder calls are dropped. (Not under busy_mu_: MHD's
    // threads take it in on_completed_cb.)
    for (auto& slot : left) {
      std::lock_guard slot_lock(slot->mu);
      slot->closed = true;
      if (slot->suspended) {
        slot->suspended = false;
        MHD_resume_connection(slot->conn);
      }
    }
    MHD_stop_daemon(daemon_);  // closes every connection, static downloads included
    daemon_ = nullptr;
    std::lock_guard lock(done_mu_);
    stopped_ = true;
    done_cv_.notify_all();
  }

  void wait() override {
    std::unique_lock lock(done_mu_);
    if (!started_) return;
    done_cv_.wait(lock, [this] { return stopped_; });
  }

  // buffered_bytes: MHD's per-connection pools are not visible; each open connection holds one.
  ServerStats stats() const override {
    ServerStats st;
    st.open_connections = open_conns_.load();
    st.buffered_bytes = st.open_connections * kConnectionMemory;
    st.requests_served = requests_served_.load();
    return st;
  }

 private:
  static std::unique_ptr<Route> make_route(std::string method, std::string pattern) {
    auto r = std::make_unique<Route>();
    r->method = std::move(method);
    r->pattern = std::move(pattern);
    r->segments = split_path(r->pattern);
    return r;
  }

  unsigned keep_alive_timeout_s() const {
    return unsigned(std::max(1, config_.keep_alive_timeout_s));
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
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
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

  // The Unix-domain listener, as the epoll engine's (this engine is kept only for the A/B).
  Status listen_unix() {
    const std::string& path = config_.unix_socket.native();
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) {
      return fail(Errc::invalid_argument, "http server: " + path + ": socket path too long");
    }
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(Errc::io, "http server: socket " + path + ": " + std::strerror(errno));
    struct stat st {};
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::chmod(path.c_str(), static_cast<mode_t>(config_.unix_socket_mode)) != 0 ||
        ::listen(fd, SOMAXCONN) != 0 || ::stat(path.c_str(), &st) != 0) {
      const int err = errno;
      ::close(fd);
      return fail(Errc::io, "http server: cannot listen on " + path + ": " + std::strerror(err));
    }
    unix_fd_ = fd;
    unix_dev_ = st.st_dev;
    unix_ino_ = st.st_ino;
    return {};
  }

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

  // ---- accepting (ours: MHD would close a connection over the limit without an answer) ----

  void run_acceptor() {
    ::pthread_setname_np(::pthread_self(), "mota-http-acc");
    while (true) {
      pollfd p[3] = {{stop_efd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}, {unix_fd_, POLLIN, 0}};
      if (::poll(p, 3, -1) < 0 && errno != EINTR) return;
      if (p[0].revents != 0) return;
      for (int k = 1; k < 3; ++k) {
        if (p[k].fd >= 0 && p[k].revents != 0) accept_from(p[k].fd);
      }
    }
  }

  void accept_from(int listen_fd) {
    {
      for (int i = 0; i < 64; ++i) {
        sockaddr_storage addr{};
        socklen_t len = sizeof addr;
        int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if (errno != EAGAIN && errno != EWOULDBLOCK) {
            // EMFILE and friends: the connection stays in the backlog; try again later instead
            // of spinning on the still-readable socket.
            log::warn(std::string("http server: accept: ") + std::strerror(errno) +
                      "; accepting again in " + std::to_string(kAcceptPause.count()) + " ms");
            pollfd s{stop_efd_, POLLIN, 0};
            if (::poll(&s, 1, int(kAcceptPause.count())) > 0) return;
          }
          break;
        }
        if (open_conns_.fetch_add(1) >= config_.max_connections) {
          open_conns_.fetch_sub(1);
          const std::string body = json_error("too many connections");
          const std::string busy =
              "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
              "Content-Length: " +
              std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
          [[maybe_unused]] auto n = ::send(fd, busy.data(), busy.size(), MSG_NOSIGNAL);
          ::close(fd);
          log::warn("http server: connection refused, too many open",
                    {{"MAX_CONNECTIONS", std::to_string(config_.max_connections)}});
          continue;
        }
        // MHD closes the socket itself when it cannot take it.
        if (MHD_add_connection(daemon_, fd, reinterpret_cast<sockaddr*>(&addr), len) != MHD_YES) {
          open_conns_.fetch_sub(1);
        }
      }
    }
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
      log::error("http handler failed", {{"PATH", printable(req.path)}, {"ERROR", e.what()}});
    } catch (...) {
      log::error("http handler failed",
                 {{"PATH", printable(req.path)}, {"ERROR", "unknown exception"}});
    }
    return error_reply(500, "internal error");
  }

  // ---- MHD callbacks ----

  // Percent-decoding of the path and query (MHD has already turned '+' into ' ' in the query).
  // MHD hands the result on as a C string, so a decoded NUL would cut the path short
  // ("/a.bin%00.json" would serve /a.bin): "%00" stays as it is, and matches no file.
  static size_t unescape_cb(void*, MHD_Connection*, char* s) {
    char* out = s;
    for (char* in = s; *in != '\0'; ++in) {
      if (in[0] == '%' && hex(in[1]) >= 0 && hex(in[2]) >= 0) {
        const int c = hex(in[1]) * 16 + hex(in[2]);
        if (c != 0) {
          *out++ = char(c);
          in += 2;
          continue;
        }
      }
      *out++ = *in;
    }
    *out = '\0';
    return size_t(out - s);
  }

  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  static void on_connection_cb(void* cls, MHD_Connection*, void** socket_context,
                               MHD_ConnectionNotificationCode code) {
    auto* self = static_cast<MhdServer*>(cls);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
      auto* ctx = new ConnCtx;
      *socket_context = ctx;
    } else {
      delete static_cast<ConnCtx*>(*socket_context);
      *socket_context = nullptr;
      self->open_conns_.fetch_sub(1);
    }
  }

  static void on_completed_cb(void* cls, MHD_Connection* conn, void** con_cls,
                              MHD_RequestTerminationCode) {
    auto* self = static_cast<MhdServer*>(cls);
    auto* r = static_cast<Request*>(*con_cls);
    *con_cls = nullptr;
    if (r == nullptr) return;
    // Back to waiting for the next request of a keep-alive connection.
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, self->keep_alive_timeout_s());
    if (r->slot) {
      std::lock_guard lock(self->busy_mu_);
      self->busy_.erase(r->slot.get());
      if (self->busy_.empty()) self->busy_cv_.notify_all();
    }
    delete r;
  }

  static MHD_Result on_request_cb(void* cls, MHD_Connection* conn, const char* url,
                                  const char* method, const char*, const char* upload,
                                  size_t* upload_size, void** con_cls) {
    auto* self = static_cast<MhdServer*>(cls);
    auto* r = static_cast<Request*>(*con_cls);
    if (r == nullptr) {
      r = new Request;
      *con_cls = r;
      return self->on_head(conn, *r, url, method);
    }
    if (*upload_size > 0) {
      if (!r->answered) r->req.body.append(upload, *upload_size);
      *upload_size = 0;
      return MHD_YES;
    }
    if (r->answered) return MHD_YES;
    if (!r->dispatched) return self->dispatch(conn, *r);
    // Resumed: the reply is in, or the server stops without it.
    std::optional<HttpReply> reply;
    {
      std::lock_guard lock(r->slot->mu);
      if (!r->slot->closed && r->slot->reply) reply = std::move(r->slot->reply);
    }
    if (!reply) return MHD_NO;
    return self->send(conn, *r, std::move(*reply));
  }

  // The head is in (the body, if any, not yet): collect the request, refuse what the limits
  // refuse before the body is read.
  MHD_Result on_head(MHD_Connection* conn, Request& r, const char* url, const char* method) {
    r.started = Clock::now();
    r.req.method = method;
    r.req.path = url;
    r.method = r.req.method;
    r.path = r.req.path;
    r.head_only = r.req.method == "HEAD";
    MHD_get_connection_values(
        conn, MHD_HEADER_KIND,
        [](void* cls, MHD_ValueKind, const char* key, const char* value) {
          auto& headers = *static_cast<std::map<std::string, std::string>*>(cls);
          auto [it, inserted] = headers.emplace(lower(key), value ? value : "");
          if (!inserted) {
            it->second += ", ";
            it->second += value ? value : "";
          }
          return MHD_YES;
        },
        &r.req.headers);
    MHD_get_connection_values(
        conn, MHD_GET_ARGUMENT_KIND,
        [](void* cls, MHD_ValueKind, const char* key, const char* value) {
          static_cast<std::map<std::string, std::string>*>(cls)->emplace(key, value ? value : "");
          return MHD_YES;
        },
        &r.req.query);
    const MHD_ConnectionInfo* info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    auto* ctx = info != nullptr ? static_cast<ConnCtx*>(info->socket_context) : nullptr;
    if (ctx != nullptr) {
      if (ctx->remote.empty()) {
        // Once per connection, from the socket.
        const MHD_ConnectionInfo* fd_info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        sockaddr_storage addr{};
        socklen_t len = sizeof addr;
        if (fd_info != nullptr &&
            ::getpeername(fd_info->connect_fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
          ctx->remote = address_text(reinterpret_cast<const sockaddr*>(&addr));
        }
      }
      r.req.remote_addr = ctx->remote;
      r.remote = ctx->remote;
      if (++ctx->requests >= std::max<std::size_t>(1, config_.keep_alive_max_count)) {
        r.close_after = true;
      }
    }
    if (r.req.headers.count("transfer-encoding") != 0) {
      return refuse(conn, r, 411, "Transfer-Encoding is not supported; send Content-Length");
    }
    std::uint64_t length = 0;
    if (auto it = r.req.headers.find("content-length"); it != r.req.headers.end()) {
      auto v = parse_u64(trim(it->second));
      if (!v) return refuse(conn, r, 400, "malformed Content-Length");
      length = *v;
    }
    if (length > config_.max_body_bytes) return refuse(conn, r, 413, "request body too large");
    if (length > 0) {
      r.req.body.reserve(std::size_t(length));
      // MHD's timeout counts inactivity; while a body arrives, the request's bound applies.
      MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                unsigned(std::max(1, config_.request_timeout_s)));
    }
    return MHD_YES;
  }

  MHD_Result refuse(MHD_Connection* conn, Request& r, int status, std::string_view why) {
    r.close_after = true;
    return send(conn, r, error_reply(status, why));
  }

  MHD_Result dispatch(MHD_Connection* conn, Request& r) {
    r.dispatched = true;
    const std::string method = r.head_only ? "GET" : r.req.method;
    for (const auto& route : routes_) {
      if (route->method != method || !route->match(r.req.path, r.req.path_params)) {
        r.req.path_params.clear();
        continue;
      }
      auto slot = std::make_shared<Slot>();
      slot->conn = conn;
      bool closing;
      {
        std::lock_guard lock(busy_mu_);
        closing = closing_;
        if (!closing) busy_.emplace(slot.get(), slot);
      }
      if (closing) return send(conn, r, error_reply(503, "server is stopping"));
      r.slot = slot;
      {
        Responder responder(std::make_shared<Responder::State>(slot));
        if (route->async_handler) {
          try {
            route->async_handler(std::move(r.req), responder);
          } catch (const std::exception& e) {
            log::error("http handler failed", {{"PATH", printable(r.path)}, {"ERROR", e.what()}});
            responder(error_reply(500, "internal error"));
          } catch (...) {
            log::error("http handler failed",
                       {{"PATH", printable(r.path)}, {"ERROR", "unknown exception"}});
            responder(error_reply(500, "internal error"));
          }
        } else {
          std::unique_lock lock(work_mu_);
          if (stopping_workers_) {
            lock.unlock();
            responder(error_reply(503, "server is stopping"));
          } else {
            work_.push_back(std::make_unique<WorkerTask>(
                WorkerTask{route.get(), std::move(r.req), std::move(responder)}));
            lock.unlock();
            work_cv_.notify_one();
          }
        }
      }  // our copy of the Responder goes; a dropped one has answered 500 by now
      std::optional<HttpReply> reply;
      {
        std::lock_guard lock(slot->mu);
        slot->in_handler = false;
        if (!slot->reply) {
          slot->suspended = true;
          MHD_suspend_connection(conn);
          return MHD_YES;
        }
        reply = std::move(slot->reply);
      }
      return send(conn, r, std::move(*reply));
    }
    if (!root_.empty() && method == "GET") return serve_static(conn, r);
    return send(conn, r, error_reply(404, "not found"));
  }

  void log_request(const Request& r, int status, std::uint64_t bytes) {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - r.started).count();
    log::info("http", {{"METHOD", r.method.empty() ? std::string("-") : r.method},
                       {"PATH", printable(r.path)},
                       {"STATUS", std::to_string(status)},
                       {"BYTES", std::to_string(r.head_only ? 0 : bytes)},
                       {"DURATION_MS", std::to_string(ms)},
                       {"REMOTE", r.remote}});
  }

  MHD_Result queue(MHD_Connection* conn, Request& r, int status, MHD_Response* resp,
                   const std::string& type, const std::map<std::string, std::string>& extra) {
    if (resp == nullptr) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type.c_str());
    for (const auto& [k, v] : extra) MHD_add_response_header(resp, k.c_str(), v.c_str());
    if (r.close_after || stopping_) {
      MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    r.answered = true;
    // MHD has one (inactivity) timeout per connection: set per phase, write_timeout_s while the
    // reply goes out, back to the keep-alive timeout when it is done (on_completed_cb).
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              unsigned(std::max(1, config_.write_timeout_s)));
    requests_served_.fetch_add(1, std::memory_order_relaxed);
    const MHD_Result ok = MHD_queue_response(conn, unsigned(status), resp);
    MHD_destroy_response(resp);
    return ok;
  }

  MHD_Result send(MHD_Connection* conn, Request& r, HttpReply reply) {
    log_request(r, reply.status, reply.body.size());
    auto* body = new std::string(std::move(reply.body));
    MHD_Response* resp = MHD_create_response_from_buffer_with_free_callback_cls(
        body->size(), body->data(), [](void* p) { delete static_cast<std::string*>(p); }, body);
    if (resp == nullptr) delete body;
    return queue(conn, r, reply.status, resp, reply.content_type, reply.headers);
  }

  MHD_Result serve_static(MHD_Connection* conn, Request& r) {
    const HttpRequest& req = r.req;
    auto not_found = [&] { return send(conn, r, error_reply(404, "not found")); };
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
    // Symlinks may point anywhere; what was actually opened must lie inside the root.
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
        log::warn("http: refusing a file outside the static root", {{"PATH", printable(req.path)}});
      }
      return not_found();
    }
    const std::uint64_t size = std::uint64_t(st.st_size);
    const std::string name = stdfs::path(rel).filename().string();
    const bool json = name.size() > 5 && name.substr(name.size() - 5) == ".json";
    const std::string type = json ? "application/json" : "application/octet-stream";
    std::map<std::string, std::string> extra{{"Accept-Ranges", "bytes"}};
    if (is_unversioned_metadata(name)) extra.emplace("Cache-Control", "no-store");

    std::uint64_t first = 0, length = size;
    int status = 200;
    auto range_header = req.headers.find("range");
    if (range_header != req.headers.end() && size > 0) {
      if (auto rg = parse_range(range_header->second, size)) {
        if (rg->unsatisfiable || rg->malformed) {
          ::close(fd);
          HttpReply e = error_reply(416, "range not satisfiable");
          e.headers = extra;
          if (rg->unsatisfiable) e.headers["Content-Range"] = "bytes */" + std::to_string(size);
          return send(conn, r, std::move(e));
        }
        first = rg->first;
        length = rg->length;
        status = 206;
        extra["Content-Range"] = "bytes " + std::to_string(first) + "-" +
                                 std::to_string(first + length - 1) + "/" + std::to_string(size);
      }
    }
    log_request(r, status, length);
    MHD_Response* resp = nullptr;
    if (length == 0) {
      ::close(fd);
      resp = MHD_create_response_from_buffer(0, const_cast<char*>(""), MHD_RESPMEM_PERSISTENT);
    } else {
      // MHD owns fd from here (closed with the response) and sends it with sendfile().
      resp = MHD_create_response_from_fd_at_offset64(length, fd, first);
      if (resp == nullptr) ::close(fd);
    }
    return queue(conn, r, status, resp, type, extra);
  }

  ServerConfig config_;
  stdfs::path root_;
  std::vector<std::unique_ptr<Route>> routes_;  // stable addresses: segments view pattern
  int listen_fd_ = -1;
  int unix_fd_ = -1;
  std::atomic<std::uint64_t> requests_served_{0};
  dev_t unix_dev_ = 0;
  ino_t unix_ino_ = 0;
  int stop_efd_ = -1;
  MHD_Daemon* daemon_ = nullptr;
  std::thread acceptor_;
  std::atomic<std::size_t> open_conns_{0};
  std::atomic<bool> stopping_{false};

  // Routed requests from dispatch to MHD's completion notice (stop() waits for them).
  std::mutex busy_mu_;
  std::condition_variable busy_cv_;
  std::unordered_map<Slot*, std::shared_ptr<Slot>> busy_;
  bool closing_ = false;  // stop() has given up waiting: MHD stops next

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
  return std::make_unique<MhdServer>(config);
}

}  // namespace mota::net
