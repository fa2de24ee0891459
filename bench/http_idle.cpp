// Resident memory of the HTTP server (net/) per connection, for real: forks a server process (the
// epoll server of `mota serve`, a static root and two routes), opens connections to it over
// loopback in three shapes and reads the server's VmRSS from /proc before and after each:
//   idle      N keep-alive connections that each made one GET and stay open
//   onebyte   N connections that each sent one byte of a request
//   body      M keep-alive connections that each POSTed a 16 MiB body, answered, and stay open
// Each shape starts from a fresh server. See bench/README.md, "HTTP server memory".
//   mota-bench-http-idle [N=5000] [M=100]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/log.hpp"
#include "net/http_server.hpp"

namespace {

using namespace mota;

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// The server in a child process; returns its pid and port.
pid_t spawn_server(int& port) {
  int fds[2];
  if (::pipe(fds) != 0) std::abort();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    log::set_level(log::Level::error);
    const auto root = std::filesystem::temp_directory_path() /
                      ("mota-bench-http-idle-" + std::to_string(::getpid()));
    std::filesystem::create_directories(root);
    std::ofstream(root / "file.bin") << "static";
    net::ServerConfig cfg;
    cfg.static_root = root;
    cfg.keep_alive_timeout_s = 600;
    cfg.request_timeout_s = 600;
    cfg.keep_alive_max_count = 1000;
    cfg.max_body_bytes = 16 << 20;
    auto server = net::make_http_server(cfg);
    server->route("POST", "/upload", [](const net::HttpRequest& r) {
      net::HttpReply reply;
      reply.body = std::to_string(r.body.size());
      return reply;
    });
    auto bound = server->start();
    const int p = bound ? *bound : -1;
    [[maybe_unused]] auto n = ::write(fds[1], &p, sizeof p);
    ::close(fds[1]);
    ::pause();  // until SIGKILL
    std::_Exit(0);
  }
  ::close(fds[1]);
  if (::read(fds[0], &port, sizeof port) != sizeof port || port <= 0) {
    std::fprintf(stderr, "server did not start\n");
    std::exit(1);
  }
  ::close(fds[0]);
  return pid;
}

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::fprintf(stderr, "connect: %s\n", std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

void send_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) std::exit(1);
    off += std::size_t(n);
  }
}

// Reads one whole answer (head + Content-Length body).
void read_answer(int fd) {
  std::string buf;
  char tmp[4096];
  std::size_t need = std::string::npos;
  while (need == std::string::npos || buf.size() < need) {
    const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) {
      std::fprintf(stderr, "connection closed before the answer\n");
      std::exit(1);
    }
    buf.append(tmp, std::size_t(n));
    const std::size_t end = buf.find("\r\n\r\n");
    if (need == std::string::npos && end != std::string::npos) {
      const std::size_t at = buf.find("Content-Length: ");
      need = end + 4 + std::stoul(buf.substr(at + 16));
    }
  }
}

// `body_bytes` of 'x' follow `head` (the request is built after the fork: the server's RSS does
// not include a copy of it).
void run(const char* shape, int count, const std::string& head, std::size_t body_bytes,
         bool answered) {
  int port = 0;
  const pid_t pid = spawn_server(port);
  const std::string request = head + std::string(body_bytes, 'x');
  // Warm up: one request of the shape's kind on a connection that is then closed.
  {
    const int fd = connect_to(port);
    send_all(fd, "GET /file.bin HTTP/1.1\r\nHost: h\r\n\r\n");
    read_answer(fd);
    ::close(fd);
  }
  const long before = rss_kib(pid);
  std::vector<int> fds;
  for (int i = 0; i < count; ++i) {
    fds.push_back(connect_to(port));
    send_all(fds.back(), request);
    if (answered) read_answer(fds.back());
  }
  // The last connections are surely read by the server: one more answered request on a new one.
  const int probe = connect_to(port);
  send_all(probe, "GET /file.bin HTTP/1.1\r\nHost: h\r\n\r\n");
  read_answer(probe);
  // Connections of other event loops may still be read: take the highest of a few samples.
  long after = rss_kib(pid);
  for (int i = 0; i < 10; ++i) {
    ::usleep(100 * 1000);
    after = std::max(after, rss_kib(pid));
  }
  std::printf("%-8s %6d connections: server RSS %7ld -> %7ld KiB, %7.1f KiB per connection\n",
              shape, count, before, after, double(after - before) / count);
  ::close(probe);
  for (int fd : fds) ::close(fd);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 5000;
  const int m = argc > 2 ? std::atoi(argv[2]) : 100;
  run("idle", n, "GET /file.bin HTTP/1.1\r\nHost: h\r\n\r\n", 0, true);
  run("onebyte", n, "G", 0, false);
  run("body", m, "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 16777216\r\n\r\n", 16 << 20,
      true);
  return 0;
}
