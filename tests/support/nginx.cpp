#include "tests/support/nginx.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "tests/support/test_support.hpp"

namespace mota::test {

namespace stdfs = std::filesystem;

bool Nginx::available() {
  return ::access(kBinary, X_OK) == 0;
}

namespace {

std::string config(const stdfs::path& root, const stdfs::path& work, int port,
                   std::size_t send_buffer) {
  std::string w = work.string();
  std::string c;
  // As root nginx would switch workers to "nobody", who cannot read a 0700 temp dir; as
  // non-root the directive is meaningless (and only draws a warning).
  if (::geteuid() == 0) c += "user root root;\n";
  c += "daemon off;\nmaster_process off;\nworker_processes 1;\n";
  c += "pid " + w + "/nginx.pid;\n";
  c += "error_log " + w + "/error.log info;\n";
  c += "events { worker_connections 128; }\n";
  c += "http {\n";
  c += "  access_log " + w + "/access.log;\n";
  // Machine-readable, one request per line, for tests that count what went over the wire.
  c += "  log_format mota_requests '$request_method $request_uri $status $body_bytes_sent "
       "\"$http_range\"';\n";
  c += "  access_log " + w + "/requests.log mota_requests;\n";
  for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}) {
    c += std::string("  ") + t + "_temp_path " + w + "/" + t + "_temp;\n";
  }
  c += "  types { application/json json; }\n  default_type application/octet-stream;\n";
  c += "  sendfile on;\n";
  c += "  server {\n";
  c += "    listen 127.0.0.1:" + std::to_string(port);
  if (send_buffer > 0) c += " sndbuf=" + std::to_string(send_buffer);
  c += ";\n";
  c += "    root " + stdfs::absolute(root).string() + ";\n";
  c += "    location / { }\n";
  c += "  }\n}\n";
  return c;
}

}  // namespace

Nginx::Nginx(const stdfs::path& root_dir, const stdfs::path& work_dir, std::size_t send_buffer)
    : work_(work_dir) {
  stdfs::create_directories(work_);
  // free_port() can race with another process taking the port: retry a few times.
  for (int attempt = 0; attempt < 3; ++attempt) {
    int port = free_port();
    stdfs::path conf = work_ / "nginx.conf";
    write_file(conf, config(root_dir, work_, port, send_buffer));
    process_ = std::make_unique<Process>(
        std::vector<std::string>{kBinary, "-p", work_.string() + "/", "-c", conf.string(), "-e",
                                 (work_ / "error.log").string()},
        work_ / "nginx.out");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline && process_->running()) {
      if (wait_for_port(port, std::chrono::milliseconds(100))) {
        port_ = port;
        return;
      }
    }
    process_.reset();
  }
  ADD_FAILURE() << "nginx did not start; error log:\n"
                << error_log() << "\noutput:\n"
                << read_file(work_ / "nginx.out");
}

Nginx::~Nginx() = default;  // Process sends SIGTERM, then SIGKILL

std::string Nginx::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

std::string Nginx::error_log() const {
  return read_file(work_ / "error.log");
}

std::vector<NginxRequest> Nginx::requests() const {
  std::vector<NginxRequest> out;
  std::error_code ec;
  if (!stdfs::exists(work_ / "requests.log", ec)) return out;
  std::istringstream in(read_file(work_ / "requests.log"));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    NginxRequest r;
    std::string status, bytes;
    if (!(fields >> r.method >> r.uri >> status >> bytes >> r.range)) {
      ADD_FAILURE() << "unparsable nginx request log line: " << line;
      continue;
    }
    r.status = std::atoi(status.c_str());
    (void)std::from_chars(bytes.data(), bytes.data() + bytes.size(), r.body_bytes_sent);
    if (r.range.size() >= 2 && r.range.front() == '"' && r.range.back() == '"') {
      r.range = r.range.substr(1, r.range.size() - 2);
    }
    if (r.range == "-") r.range.clear();  // nginx logs an absent header as "-"
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace mota::test
