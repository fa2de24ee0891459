#pragma once
// A real nginx (/usr/sbin/nginx, Debian's nginx-light) serving a directory on a free loopback
// port: the reference static server that mota's client code must interoperate with.
//
//   if (!mota::test::Nginx::available()) GTEST_SKIP() << "nginx not installed";
//   mota::test::Nginx nginx(repo_dir, work.path());
//   auto url = nginx.url("/metadata/timestamp.json");
//
// Everything nginx writes (config, pid, logs, temp dirs) stays inside work_dir. nginx runs in the
// foreground without a master process and is killed on destruction. A start failure is reported
// with ADD_FAILURE (including nginx's error log) and leaves port() == 0.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace mota::test {

class Process;

// One line of the request log (written by nginx when a request ends, also when the client hung
// up mid-response; then body_bytes_sent is what nginx had handed to the kernel so far).
struct NginxRequest {
  std::string method;
  std::string uri;  // $request_uri: path and query as sent
  int status = 0;
  std::uint64_t body_bytes_sent = 0;
  std::string range;  // the Range request header, "" when absent
};

class Nginx {
 public:
  static constexpr const char* kBinary = "/usr/sbin/nginx";
  static bool available();

  // send_buffer > 0 sets the listening socket's SO_SNDBUF (nginx `listen ... sndbuf=`): bounds
  // what nginx can push into the kernel ahead of a slow reader, for tests that count bytes sent.
  Nginx(const std::filesystem::path& root_dir, const std::filesystem::path& work_dir,
        std::size_t send_buffer = 0);
  ~Nginx();
  Nginx(const Nginx&) = delete;
  Nginx& operator=(const Nginx&) = delete;

  int port() const { return port_; }
  // "http://127.0.0.1:<port>" + path (path starts with '/').
  std::string url(const std::string& path = "/") const;
  // nginx's error log so far (for failure messages).
  std::string error_log() const;
  // Every request nginx has logged so far, in log order (requests.log in work_dir).
  std::vector<NginxRequest> requests() const;

 private:
  std::filesystem::path work_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace mota::test
