// mota-bench-runtime: inference latency and throughput through mota-runtime (HTTP over its Unix
// socket, raw tensors) against calling OpenCV DNN directly in-process, and p99 while the model is
// being swapped against steady state. Prints a markdown table. Run by scripts/bench-runtime.
//
//   mota-bench-runtime --runtime PATH/mota-runtime --model FILE.onnx [--iters N]

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <string>
#include <thread>
#include <vector>

#include "runtime/client.hpp"

extern char** environ;

namespace {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;
using mota::runtime::Client;
using mota::runtime::ClientOptions;

struct Stats {
  double p50 = 0, p99 = 0, per_s = 0;
};

Stats summarize(std::vector<double> ms, double wall_s) {
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) { return ms[static_cast<std::size_t>(p * (ms.size() - 1) + 0.5)]; };
  return {pct(0.50), pct(0.99), static_cast<double>(ms.size()) / wall_s};
}

std::string image() {
  std::string out(3 * 240 * 320 * 4, '\0');
  for (std::size_t i = 0; i < out.size() / 4; ++i) {
    float f = (static_cast<float>((i * 7 + i / 320 * 13) % 255) - 127.0f) / 128.0f;
    std::memcpy(out.data() + i * 4, &f, 4);
  }
  return out;
}

void write(const stdfs::path& p, const std::string& data) {
  stdfs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << data;
}

std::string read(const stdfs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void make_slot(const stdfs::path& dir, const std::string& onnx, const std::string& version) {
  write(dir / "model.onnx", onnx);
  write(dir / "model.json", R"({"name": "face", "version": ")" + version +
                                R"(", "framework": "onnx", "entry": "model.onnx",
  "inputs": [{"name": "input", "shape": [1, 3, 240, 320], "dtype": "float32"}],
  "outputs": [{"name": "scores", "shape": [1, 4420, 2], "dtype": "float32"},
              {"name": "boxes", "shape": [1, 4420, 4], "dtype": "float32"}]})");
}

// Samples are gathered in alternating rounds (in-process, runtime, in-process, ...) so that load
// from other processes on the machine hits both sides alike.
struct Series {
  std::vector<double> ms;
  double wall_s = 0;
  Stats stats() const { return summarize(ms, wall_s); }
};

void bench_inprocess(cv::dnn::Net& net, const std::string& img, int iters, Series& s) {
  int dims[] = {1, 3, 240, 320};
  cv::Mat blob(4, dims, CV_32F, const_cast<char*>(img.data()));
  std::vector<cv::String> names = {"scores", "boxes"};
  std::vector<cv::Mat> outs;
  auto start = Clock::now();
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    net.setInput(blob);
    net.forward(outs, names);
    s.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  s.wall_s += std::chrono::duration<double>(Clock::now() - start).count();
}

void bench_client(Client& c, const std::string& img, int iters, int* failures, Series& s) {
  auto start = Clock::now();
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    auto r = c.infer_raw("face", img);
    if (!r) {
      ++*failures;
      std::fprintf(stderr, "infer failed: %s\n", r.error().message().c_str());
      continue;
    }
    s.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  s.wall_s += std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string runtime_bin, model;
  int iters = 300;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--runtime") runtime_bin = argv[i + 1];
    if (a == "--model") model = argv[i + 1];
    if (a == "--iters") iters = std::max(20, std::atoi(argv[i + 1]));
  }
  if (runtime_bin.empty() || model.empty()) {
    std::fprintf(stderr, "usage: %s --runtime PATH --model FILE.onnx [--iters N]\n", argv[0]);
    return 2;
  }
  char tmpl[] = "/tmp/mota-bench-runtime.XXXXXX";
  if (!::mkdtemp(tmpl)) return 1;
  stdfs::path dir = tmpl;
  std::string onnx = read(model), img = image();
  // Two slots of the same model (different versions), so swapping does not change the work per
  // inference: p99 during swaps measures the swap, not a different model.
  make_slot(dir / "a", onnx, "1.0.0");
  make_slot(dir / "b", onnx, "1.0.1");
  stdfs::path sock = dir / "runtime.sock";
  write(dir / "runtime.toml", "socket = \"" + sock.string() + "\"\nlog_level = \"warn\"\n");

  cv::dnn::Net net = cv::dnn::readNetFromONNX(onnx.data(), onnx.size());
  Series direct_s, served_s, swapping_s;
  for (int i = 0; i < 5; ++i) bench_inprocess(net, img, 1, direct_s);
  direct_s = {};

  std::vector<std::string> args = {runtime_bin, "serve",
                                   "--config",  (dir / "runtime.toml").string(),
                                   "--model",   "face=" + (dir / "a").string()};
  std::vector<char*> cargs;
  for (auto& s : args) cargs.push_back(s.data());
  cargs.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, cargs[0], nullptr, nullptr, cargs.data(), environ) != 0) {
    std::fprintf(stderr, "cannot start %s\n", runtime_bin.c_str());
    return 1;
  }
  ClientOptions o;
  o.socket = sock;
  Client c(o);
  for (int i = 0; i < 500 && !c.health(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  int failures = 0;
  for (int i = 0; i < 5; ++i) (void)c.infer_raw("face", img);
  constexpr int kRounds = 6;
  std::atomic<int> swaps{0};
  for (int round = 0; round < kRounds; ++round) {
    std::fprintf(stderr, "round %d/%d: in-process, runtime, runtime during swaps\n", round + 1,
                 kRounds);
    bench_inprocess(net, img, iters / kRounds, direct_s);
    bench_client(c, img, iters / kRounds, &failures, served_s);
    // Swaps back to back for the whole phase: the worst case, not one swap now and then.
    std::atomic<bool> stop{false};
    std::thread swapper([&] {
      Client control(o);
      while (!stop.load()) {
        auto r = control.load("face", dir / (swaps.load() % 2 ? "a" : "b"));
        if (!r) std::fprintf(stderr, "swap failed: %s\n", r.error().message().c_str());
        swaps.fetch_add(1);
      }
    });
    bench_client(c, img, iters / kRounds, &failures, swapping_s);
    stop = true;
    swapper.join();
  }
  Stats direct = direct_s.stats(), served = served_s.stats(), swapping = swapping_s.stats();

  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  stdfs::remove_all(dir);

  auto overhead = [&](double a, double b) { return (a / b - 1.0) * 100.0; };
  std::printf("| %-38s | p50 ms | p99 ms | inferences/s |\n", "path (1 client, sequential)");
  std::printf("|---|---:|---:|---:|\n");
  std::printf("| %-38s | %6.2f | %6.2f | %12.1f |\n", "OpenCV DNN in-process", direct.p50,
              direct.p99, direct.per_s);
  std::printf("| %-38s | %6.2f | %6.2f | %12.1f |\n", "mota-runtime (Unix socket, raw)", served.p50,
              served.p99, served.per_s);
  std::printf("| %-38s | %6.2f | %6.2f | %12.1f |\n",
              ("mota-runtime during " + std::to_string(swaps.load()) + " swaps").c_str(),
              swapping.p50, swapping.p99, swapping.per_s);
  std::printf("\n");
  std::printf("- overhead at p50: %+.1f%% (target <= 5%%)\n", overhead(served.p50, direct.p50));
  std::printf("- p99 during swaps / steady p99: %.2fx (target <= 1.5x)\n",
              swapping.p99 / served.p99);
  std::printf("- failed requests: %d\n", failures);
  return failures == 0 ? 0 : 1;
}
