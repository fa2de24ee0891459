#include "tests/support/fault_server.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace mota::test {

namespace {

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 206:
      return "Partial Content";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 416:
      return "Range Not Satisfiable";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

}  // namespace

FaultServer::FaultServer(FaultConfig config) : config_(std::move(config)) {
  if (config_.chunk_size == 0) config_.chunk_size = 64 * 1024;
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(listen_fd_, 0) << std::strerror(errno);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
      << std::strerror(errno);
  EXPECT_EQ(::listen(listen_fd_, 16), 0) << std::strerror(errno);
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

FaultServer::~FaultServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

std::string FaultServer::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

std::vector<std::string> FaultServer::ranges() const {
  std::lock_guard lock(mu_);
  return ranges_;
}

void FaultServer::serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    int r = ::poll(&p, 1, 50);
    if (r <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    // A client that stops reading must not wedge the server (and the test's teardown).
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    handle(fd);
    ::close(fd);
  }
}

bool FaultServer::send_all(int fd, const char* data, std::size_t n, bool body) {
  while (n > 0) {
    if (stop_) return false;
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (body) body_bytes_sent_ += static_cast<std::uint64_t>(w);
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

void FaultServer::pause(std::chrono::milliseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (!stop_ && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        until - std::chrono::steady_clock::now(), std::chrono::milliseconds(20)));
  }
}

void FaultServer::wait_for_hangup(int fd) {
  char buf[256];
  while (!stop_) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    if (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) <= 0) return;
  }
}

void FaultServer::handle(int fd) {
  std::string req;
  char buf[4096];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 65536) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    req.append(buf, static_cast<std::size_t>(n));
  }
  ++requests_;
  std::string range;
  std::size_t pos = req.find("\r\n");
  while (pos != std::string::npos) {
    std::size_t next = req.find("\r\n", pos + 2);
    if (next == std::string::npos) break;
    std::string line = req.substr(pos + 2, next - pos - 2);
    if (lower(line).rfind("range:", 0) == 0) {
      range = line.substr(6);
      range.erase(0, range.find_first_not_of(" \t"));
    }
    pos = next;
  }
  {
    std::lock_guard lock(mu_);
    ranges_.push_back(range);
  }

  const std::string& body = config_.body;
  if (config_.fail_times > 0) {
    --config_.fail_times;
    std::string head = "HTTP/1.1 " + std::to_string(config_.fail_status) + " " +
                       reason(config_.fail_status) +
                       "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    send_all(fd, head.data(), head.size(), false);
    return;
  }

  std::uint64_t start = 0;
  bool partial = false;
  if (!range.empty() && !config_.ignore_range && range.rfind("bytes=", 0) == 0) {
    const char* first = range.data() + 6;
    const char* last = range.data() + range.size();
    auto [p, ec] = std::from_chars(first, last, start);
    if (ec == std::errc() && p != first && p < last && *p == '-' && p + 1 == last) {
      partial = true;
    } else {
      start = 0;
    }
  }
  if (partial && start >= body.size() && !config_.endless) {
    std::string head = "HTTP/1.1 416 " + std::string(reason(416)) + "\r\nContent-Range: bytes */" +
                       std::to_string(body.size()) +
                       "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    send_all(fd, head.data(), head.size(), false);
    return;
  }

  std::string head = "HTTP/1.1 " + std::string(partial ? "206 " : "200 ") +
                     reason(partial ? 206 : 200) + "\r\nConnection: close\r\n";
  if (partial) {
    head += "Content-Range: bytes " + std::to_string(start + config_.content_range_skew) + "-" +
            (config_.endless ? std::string("*") : std::to_string(body.size() - 1)) + "/" +
            (config_.endless ? std::string("*") : std::to_string(body.size())) + "\r\n";
  }
  if (!config_.endless) {
    head +=
        "Content-Length: " + std::to_string(body.size() - start + config_.announce_extra) + "\r\n";
  }
  head += "\r\n";
  if (!send_all(fd, head.data(), head.size(), false)) return;

  std::uint64_t limit = UINT64_MAX;
  if (bodies_ < config_.drop_after.size()) limit = config_.drop_after[bodies_];
  ++bodies_;
  std::uint64_t sent = 0;
  std::uint64_t at = start;
  while (sent < limit) {
    if (sent >= config_.stall_after) {
      wait_for_hangup(fd);
      return;
    }
    if (at >= body.size()) {
      if (!config_.endless || body.empty()) break;
      at = 0;
    }
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(
        {config_.chunk_size, body.size() - at, limit - sent, config_.stall_after - sent}));
    if (!send_all(fd, body.data() + at, n, true)) return;
    sent += n;
    at += n;
    if (config_.chunk_delay.count() > 0) pause(config_.chunk_delay);
  }
  // A drop: close without sending the rest (the client sees a short body).
  ::shutdown(fd, SHUT_RDWR);
}

// --- DropProxy -----------------------------------------------------------------------------------

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The value of header `name` (lower case, with the colon) in an HTTP head, "" when absent.
std::string header(const std::string& head, const std::string& name) {
  std::size_t pos = head.find("\r\n");
  while (pos != std::string::npos) {
    std::size_t next = head.find("\r\n", pos + 2);
    if (next == std::string::npos) break;
    std::string line = head.substr(pos + 2, next - pos - 2);
    if (lower(line).rfind(name, 0) == 0) {
      std::string v = line.substr(name.size());
      v.erase(0, v.find_first_not_of(" \t"));
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
      return v;
    }
    pos = next;
  }
  return "";
}

std::optional<std::uint64_t> parse_u64(const std::string& s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// Reads what is available (waiting in 50 ms steps while `stop` is unset) and appends it.
// False on end of stream, error or stop.
bool recv_more(int fd, std::string& buf, const std::atomic<bool>& stop) {
  char tmp[65536];
  while (!stop) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, 50);
    if (r < 0 && errno != EINTR) return false;
    if (r <= 0) continue;
    ssize_t n = ::recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return false;
    buf.append(tmp, static_cast<std::size_t>(n));
    return true;
  }
  return false;
}

bool send_fully(int fd, const char* data, std::size_t n, const std::atomic<bool>& stop) {
  while (n > 0) {
    if (stop) return false;
    pollfd p{fd, POLLOUT, 0};
    int r = ::poll(&p, 1, 50);
    if (r < 0 && errno != EINTR) return false;
    if (r <= 0) continue;
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return false;
    }
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

int connect_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

DropProxy::DropProxy(DropProxyConfig config) : config_(std::move(config)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(listen_fd_, 0) << std::strerror(errno);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
      << std::strerror(errno);
  EXPECT_EQ(::listen(listen_fd_, 16), 0) << std::strerror(errno);
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

DropProxy::~DropProxy() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

std::string DropProxy::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

std::vector<ProxiedRequest> DropProxy::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

std::uint64_t DropProxy::body_bytes(const std::string& suffix) const {
  std::lock_guard lock(mu_);
  std::uint64_t sum = 0;
  for (const auto& r : requests_) {
    if (ends_with(r.path, suffix)) sum += r.body_bytes;
  }
  return sum;
}

void DropProxy::serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    ++connections_;
    workers_.emplace_back([this, fd] { relay(fd); });
  }
  for (auto& t : workers_) t.join();
}

void DropProxy::relay(int client) {
  int up = -1;
  std::string cbuf;  // bytes from the client not yet forwarded
  std::string ubuf;  // bytes from upstream not yet forwarded
  auto done = [&](ProxiedRequest* rec) {
    if (rec) {
      std::lock_guard lock(mu_);
      requests_.push_back(*rec);
    }
  };
  while (!stop_) {
    std::size_t end;
    bool ok = true;
    while ((end = cbuf.find("\r\n\r\n")) == std::string::npos) {
      if (cbuf.size() > 65536 || !recv_more(client, cbuf, stop_)) {
        ok = false;
        break;
      }
    }
    if (!ok) break;
    std::string head = cbuf.substr(0, end + 4);
    cbuf.erase(0, end + 4);
    ProxiedRequest rec;
    std::size_t sp1 = head.find(' ');
    std::size_t sp2 = head.find(' ', sp1 + 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos) break;
    rec.method = head.substr(0, sp1);
    rec.path = head.substr(sp1 + 1, sp2 - sp1 - 1);
    rec.range = header(head, "range:");
    const std::uint64_t req_len = parse_u64(header(head, "content-length:")).value_or(0);
    while (cbuf.size() < req_len) {
      if (!recv_more(client, cbuf, stop_)) {
        ok = false;
        break;
      }
    }
    if (!ok) break;
    std::string request = head + cbuf.substr(0, req_len);
    cbuf.erase(0, req_len);
    if (up < 0) up = connect_loopback(config_.upstream_port);
    if (up < 0 || !send_fully(up, request.data(), request.size(), stop_)) {
      done(&rec);
      break;
    }

    while ((end = ubuf.find("\r\n\r\n")) == std::string::npos) {
      if (ubuf.size() > 65536 || !recv_more(up, ubuf, stop_)) {
        ok = false;
        break;
      }
    }
    if (!ok) {
      done(&rec);
      break;
    }
    std::string rhead = ubuf.substr(0, end + 4);
    ubuf.erase(0, end + 4);
    if (rhead.size() > 12) rec.status = std::atoi(rhead.c_str() + 9);
    auto length = parse_u64(header(rhead, "content-length:"));
    const bool close_after = lower(header(rhead, "connection:")) == "close" || !length;
    const bool has_body = rec.method != "HEAD" && rec.status != 204 && rec.status != 304 &&
                          !(rec.status >= 100 && rec.status < 200);
    std::uint64_t remaining = has_body ? length.value_or(UINT64_MAX) : 0;
    std::uint64_t cut_at = UINT64_MAX;
    if (has_body && rec.method == "GET" && ends_with(rec.path, config_.cut_suffix)) {
      std::lock_guard lock(mu_);
      if (cuts_ < config_.cut_times) {
        ++cuts_;
        cut_at = config_.cut_after;
      }
    }
    if (!send_fully(client, rhead.data(), rhead.size(), stop_)) {
      done(&rec);
      break;
    }
    const bool slow = has_body && rec.method == "GET" && !config_.slow_suffix.empty() &&
                      ends_with(rec.path, config_.slow_suffix);
    // Dripping: this many bytes every 100 ms (one byte less often below 10 bytes/s).
    const std::uint64_t drip = std::max<std::uint64_t>(1, config_.slow_rate / 10);
    bool upstream_open = true;
    while (remaining > 0 && rec.body_bytes < cut_at) {
      if (ubuf.empty() && !recv_more(up, ubuf, stop_)) {
        upstream_open = false;
        break;
      }
      std::size_t n = static_cast<std::size_t>(
          std::min<std::uint64_t>({ubuf.size(), remaining, cut_at - rec.body_bytes}));
      if (slow) {
        n = static_cast<std::size_t>(std::min<std::uint64_t>(n, drip));
        const auto until =
            std::chrono::steady_clock::now() +
            std::chrono::milliseconds(1000 * drip / std::max<std::uint64_t>(config_.slow_rate, 1));
        while (!stop_ && std::chrono::steady_clock::now() < until) {
          // A client that hung up is noticed at once, not at the next byte.
          pollfd p{client, POLLIN, 0};
          if (::poll(&p, 1, 20) > 0) {
            char probe;
            if (::recv(client, &probe, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
              upstream_open = false;
              break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a pipelined request
          }
        }
        if (!upstream_open || stop_) break;
      }
      if (!send_fully(client, ubuf.data(), n, stop_)) {
        upstream_open = false;
        break;
      }
      ubuf.erase(0, n);
      rec.body_bytes += n;
      remaining -= n;
    }
    rec.cut = remaining > 0 && rec.body_bytes >= cut_at;
    done(&rec);
    if (rec.cut || !upstream_open || close_after) break;
  }
  // A cut: both connections close without the rest (the client sees a short body).
  ::shutdown(client, SHUT_RDWR);
  ::close(client);
  if (up >= 0) ::close(up);
}

}  // namespace mota::test
