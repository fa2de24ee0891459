#include "tests/support/fault_server.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

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

}  // namespace mota::test
