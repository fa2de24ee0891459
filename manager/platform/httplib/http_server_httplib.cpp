// cpp-httplib (0.11.4) backend of manager/http_server.hpp.
//
// Routing is ours, not httplib's: one catch-all httplib handler per method dispatches to the
// registered routes (httplib 0.11 has no ":param" patterns) and falls back to static files.
// Static files are served by our own code rather than set_mount_point(), which reads the whole
// file into memory and has no 416 for unsatisfiable ranges.

#include <fcntl.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "manager/http_server.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kChunk = 64 * 1024;

// Per worker thread: when the current request started and how many body bytes a content
// provider wrote. httplib runs routing, content providers and the logger for one request on the
// same worker thread, one request at a time, so thread-locals carry this to the logger.
thread_local std::optional<Clock::time_point> t_request_start;
thread_local std::uint64_t t_provider_bytes = 0;

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
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

void set_error(httplib::Response& res, int status, std::string_view message) {
  res.status = status;
  res.set_content(json_error(message), "application/json");
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
  Handler handler;

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

// Parses a single byte range against `size`. nullopt: no usable Range (absent, malformed or
// several ranges): serve the whole file. {0,0} with unsatisfiable=true: 416.
struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t length = 0;
  bool unsatisfiable = false;
};

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<ByteRange> parse_range(std::string_view header, std::uint64_t size) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
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
    if (*n == 0 || size == 0) return ByteRange{0, 0, true};
    r.length = std::min(*n, size);
    r.first = size - r.length;
    return r;
  }
  auto first = parse_u64(a);
  if (!first) return std::nullopt;
  std::uint64_t last = size == 0 ? 0 : size - 1;
  if (!b.empty()) {
    auto l = parse_u64(b);
    if (!l || *l < *first) return std::nullopt;  // syntactically invalid: ignored (RFC 9110)
    last = std::min(*l, last);
  }
  if (*first >= size) return ByteRange{0, 0, true};
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

struct OpenFile {
  int fd = -1;
  std::vector<char> buffer;
  ~OpenFile() {
    if (fd >= 0) ::close(fd);
  }
};

class HttplibServer final : public HttpServer {
 public:
  explicit HttplibServer(ServerConfig config) : config_(std::move(config)) {}
  ~HttplibServer() override { stop(); }

  void route(std::string method, std::string pattern, Handler handler) override {
    auto r = std::make_unique<Route>();
    r->method = std::move(method);
    r->pattern = std::move(pattern);
    r->segments = split_path(r->pattern);
    r->handler = std::move(handler);
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
    configure();
    int port = config_.port;
    if (port == 0) {
      port = server_.bind_to_any_port(config_.host);
      if (port < 0) port = 0;
    } else if (!server_.bind_to_port(config_.host, port)) {
      port = 0;
    }
    if (port <= 0) {
      return fail(Errc::io, "http server: cannot listen on " + config_.host + ":" +
                                std::to_string(config_.port) +
                                " (address in use, not local, or not permitted)");
    }
    started_ = true;
    thread_ = std::thread([this] {
      server_.listen_after_bind();
      std::lock_guard lock(mutex_);
      done_ = true;
      done_cv_.notify_all();
    });
    // httplib's stop() is a no-op until the accept loop runs; wait for it so stop() right after
    // start() cannot be lost.
    for (int i = 0; i < 5000 && !server_.is_running(); ++i) {
      std::lock_guard lock(mutex_);
      if (done_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    log::info("http server listening", {{"ADDRESS", config_.host + ":" + std::to_string(port)}});
    return port;
  }

  void stop() override {
    std::lock_guard stop_lock(stop_mutex_);
    if (!started_) return;
    stopping_ = true;
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  void wait() override {
    std::unique_lock lock(mutex_);
    if (!started_) return;
    done_cv_.wait(lock, [this] { return done_; });
  }

 private:
  void configure() {
    int threads = std::max(1, config_.threads);
    server_.new_task_queue = [threads] {
      return new httplib::ThreadPool(static_cast<std::size_t>(threads));
    };
    server_.set_payload_max_length(config_.max_body_bytes);
    server_.set_keep_alive_max_count(std::max<std::size_t>(1, config_.keep_alive_max_count));
    server_.set_keep_alive_timeout(std::max(1, config_.keep_alive_timeout_s));
    // httplib's default also sets SO_REUSEPORT, which would let a second `mota serve` bind the
    // same port and silently split the traffic. SO_REUSEADDR alone allows a quick restart.
    server_.set_socket_options([](socket_t sock) {
      int one = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    });
    // Replies go out in several writes (headers, body); with Nagle on, the last one waits for
    // the client's delayed ACK (40 ms on Linux) on every keep-alive request. Accepted sockets
    // inherit TCP_NODELAY from the listening socket.
    server_.set_tcp_nodelay(true);
    // Devices on slow links with curl's rate limit may not read for many seconds.
    server_.set_write_timeout(60, 0);
    server_.set_expect_100_continue_handler(
        [this](const httplib::Request& req, httplib::Response& res) {
          std::uint64_t len = 0;
          auto v = parse_u64(req.get_header_value("Content-Length"));
          if (v) len = *v;
          if (len > config_.max_body_bytes) {
            set_error(res, 413, "request body too large");
            return 413;
          }
          return 100;
        });
    server_.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      t_request_start = Clock::now();
      t_provider_bytes = 0;
      return httplib::Server::HandlerResponse::Unhandled;
    });
    server_.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.status == 413 && res.body.empty()) set_error(res, 413, "request body too large");
    });
    server_.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          log::error("http handler failed", {{"PATH", printable(req.path)}, {"ERROR", what}});
          set_error(res, 500, "internal error");
        });
    server_.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      std::uint64_t bytes = req.method == "HEAD" ? 0 : res.body.size() + t_provider_bytes;
      long long ms = t_request_start ? std::chrono::duration_cast<std::chrono::milliseconds>(
                                           Clock::now() - *t_request_start)
                                           .count()
                                     : 0;
      t_request_start.reset();
      t_provider_bytes = 0;
      log::info("http", {{"METHOD", req.method},
                         {"PATH", printable(req.path)},
                         {"STATUS", std::to_string(res.status)},
                         {"BYTES", std::to_string(bytes)},
                         {"DURATION_MS", std::to_string(ms)},
                         {"REMOTE", req.remote_addr}});
    });
    auto dispatch = [this](const httplib::Request& req, httplib::Response& res) {
      this->dispatch(req, res);
    };
    server_.Get(".*", dispatch);
    server_.Post(".*", dispatch);
    server_.Put(".*", dispatch);
    server_.Patch(".*", dispatch);
    server_.Delete(".*", dispatch);
  }

  void dispatch(const httplib::Request& req, httplib::Response& res) {
    // We answer Range ourselves; an empty range list stops httplib from applying it a second
    // time to our already-cut content. The Request is a mutable local of httplib's connection
    // loop handed to us as const, so this const_cast is well-defined.
    auto& ranges = const_cast<httplib::Request&>(req).ranges;
    ranges.clear();

    const std::string method = req.method == "HEAD" ? "GET" : req.method;
    for (const auto& r : routes_) {
      HttpRequest hr;
      if (r->method != method || !r->match(req.path, hr.path_params)) continue;
      hr.method = req.method;
      hr.path = req.path;
      for (const auto& [k, v] : req.headers) {
        auto [it, inserted] = hr.headers.emplace(lower(k), v);
        if (!inserted) it->second += ", " + v;
      }
      for (const auto& [k, v] : req.params) hr.query.emplace(k, v);
      hr.body = req.body;
      hr.remote_addr = req.remote_addr;
      HttpReply reply;
      try {
        reply = r->handler(hr);
      } catch (const std::exception& e) {
        log::error("http handler failed", {{"PATH", printable(req.path)}, {"ERROR", e.what()}});
        return set_error(res, 500, "internal error");
      } catch (...) {
        log::error("http handler failed",
                   {{"PATH", printable(req.path)}, {"ERROR", "unknown exception"}});
        return set_error(res, 500, "internal error");
      }
      res.status = reply.status;
      for (const auto& [k, v] : reply.headers) res.set_header(k, v);
      res.set_content(std::move(reply.body), reply.content_type);
      return;
    }
    if (!root_.empty() && method == "GET") {
      serve_static(req, res);
      return;
    }
    set_error(res, 404, "not found");
  }

  void serve_static(const httplib::Request& req, httplib::Response& res) {
    std::string rel;
    if (!safe_relative_path(req.path, rel)) return set_error(res, 404, "not found");
    stdfs::path full = root_ / rel;
    // O_NONBLOCK: opening a FIFO must not hang a worker; regular files ignore it.
    auto file = std::make_shared<OpenFile>();
    file->fd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (file->fd < 0) return set_error(res, 404, "not found");
    struct stat st {};
    if (::fstat(file->fd, &st) != 0 || !S_ISREG(st.st_mode))
      return set_error(res, 404, "not found");
    // Symlinks may point anywhere; what was actually opened must lie inside the root. Checking
    // the open descriptor (not the path) leaves no window for a swapped link.
    char target[PATH_MAX + 1];
    std::string fd_link = "/proc/self/fd/" + std::to_string(file->fd);
    ssize_t n = ::readlink(fd_link.c_str(), target, PATH_MAX);
    if (n <= 0) return set_error(res, 404, "not found");
    std::string_view resolved(target, static_cast<std::size_t>(n));
    const std::string& root = root_.native();
    bool inside = resolved.size() > root.size() && resolved.substr(0, root.size()) == root &&
                  (root == "/" || resolved[root.size()] == '/');
    if (!inside) {
      log::warn("http: refusing a file outside the static root", {{"PATH", printable(req.path)}});
      return set_error(res, 404, "not found");
    }

    const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
    std::string name = stdfs::path(rel).filename().string();
    const bool json = name.size() > 5 && name.substr(name.size() - 5) == ".json";
    const std::string type = json ? "application/json" : "application/octet-stream";
    res.set_header("Accept-Ranges", "bytes");
    if (is_unversioned_metadata(name)) res.set_header("Cache-Control", "no-store");

    std::uint64_t first = 0, length = size;
    res.status = 200;
    std::string range_header = req.get_header_value("Range");
    if (!range_header.empty() && size > 0) {
      if (auto r = parse_range(range_header, size)) {
        if (r->unsatisfiable) {
          res.set_header("Content-Range", "bytes */" + std::to_string(size));
          return set_error(res, 416, "range not satisfiable");
        }
        first = r->first;
        length = r->length;
        res.status = 206;
        res.set_header("Content-Range", "bytes " + std::to_string(first) + "-" +
                                            std::to_string(first + length - 1) + "/" +
                                            std::to_string(size));
      }
    }
    if (length == 0) {  // httplib's length provider requires length > 0
      res.set_content("", type);
      return;
    }
    file->buffer.resize(kChunk);
    res.set_content_provider(
        static_cast<std::size_t>(length), type,
        [this, file, first](std::size_t offset, std::size_t len, httplib::DataSink& sink) {
          if (stopping_) return false;  // cut off downloads so stop() does not wait for them
          std::size_t want = std::min(len, file->buffer.size());
          ssize_t got;
          do {
            got = ::pread(file->fd, file->buffer.data(), want, static_cast<off_t>(first + offset));
          } while (got < 0 && errno == EINTR);
          if (got <= 0) return false;  // read error or the file shrank: abort the connection
          if (!sink.write(file->buffer.data(), static_cast<std::size_t>(got))) return false;
          t_provider_bytes += static_cast<std::uint64_t>(got);
          return true;
        });
  }

  ServerConfig config_;
  stdfs::path root_;
  std::vector<std::unique_ptr<Route>> routes_;  // stable addresses: segments view pattern
  httplib::Server server_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> started_{false};
  std::mutex stop_mutex_;
  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<HttpServer> make_http_server(const ServerConfig& config) {
  return std::make_unique<HttplibServer>(config);
}

}  // namespace mota::manager
