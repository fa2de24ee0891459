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

#include <filesystem>
#include <memory>
#include <string>

namespace mota::test {

class Process;

class Nginx {
 public:
  static constexpr const char* kBinary = "/usr/sbin/nginx";
  static bool available();

  Nginx(const std::filesystem::path& root_dir, const std::filesystem::path& work_dir);
  ~Nginx();
  Nginx(const Nginx&) = delete;
  Nginx& operator=(const Nginx&) = delete;

  int port() const { return port_; }
  // "http://127.0.0.1:<port>" + path (path starts with '/').
  std::string url(const std::string& path = "/") const;
  // nginx's error log so far (for failure messages).
  std::string error_log() const;

 private:
  std::filesystem::path work_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace mota::test
