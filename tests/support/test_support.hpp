#pragma once
// Helpers shared by tests: temporary directories, free loopback ports, child processes.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mota::test {

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& rel) const { return path_ / rel; }

 private:
  std::filesystem::path path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
int free_port();

// Writes a file (creating parent directories); aborts the test on failure.
void write_file(const std::filesystem::path& p, std::string_view content);
std::string read_file(const std::filesystem::path& p);

// Path of a built binary such as "manager/mota": under $MOTA_BUILD_DIR if set, else the build
// directory this test binary is in.
std::filesystem::path build_path(const std::string& rel);
// The repository root ($MOTA_SOURCE_DIR if set, else the current directory: ctest runs tests
// there).
std::filesystem::path source_path(const std::string& rel = "");
// ../shared/models/<rel> relative to the repository root.
std::filesystem::path shared_model(const std::string& rel);

struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs a program to completion with stdin from /dev/null, capturing stdout and stderr.
RunResult run(const std::vector<std::string>& argv,
              const std::map<std::string, std::string>& env = {},
              std::chrono::seconds timeout = std::chrono::seconds(120));

// A background child process (servers). Killed with SIGTERM (then SIGKILL) on destruction.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::filesystem::path& log_file,
          const std::map<std::string, std::string>& env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  pid_t pid() const { return pid_; }
  bool running();
  void kill(int sig);
  // Waits for exit; returns the exit status as RunResult-style code (-1 on signal).
  int wait();

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// A small model directory named "detector": model.json (one input, one output), model.onnx
// holding `weights`, and labels/classes.txt. Publishes as is with Repository::add_release. The
// weights are not an ONNX model, so model.json says so: framework "other" (`mota release add`
// checks every "onnx" model's graph).
void make_model_dir(const std::filesystem::path& dir, const std::string& weights);

// Peak resident memory of this process in KiB (VmHWM). Unlike getrusage's ru_maxrss it is not
// inherited through fork/exec, and reset_peak_rss() (clear_refs) restarts it to measure one phase.
long peak_rss_kib();
void reset_peak_rss();

// Polls until a TCP connect to 127.0.0.1:port succeeds or the timeout passes.
bool wait_for_port(int port, std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

}  // namespace mota::test
