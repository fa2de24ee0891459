// mota-bench-runtime: inference latency and throughput through mota-runtime (HTTP over its Unix
// socket, raw tensors) against calling OpenCV DNN directly in-process, and p99 while the model is
// being swapped against steady state. Prints a markdown table. Run by scripts/bench-runtime.
//
//   mota-bench-runtime --runtime PATH/mota-runtime --model FILE.onnx [--iters N] [--rounds R]
//                      [--engine-threads T] [--swap-gap-ms MS]
//
// Honesty rules, because the machine this runs on is shared and noisy:
// - Same engine set-up on both sides: one cv::dnn::Net per caller, OpenCV backend on the CPU,
//   the same OpenCV thread count (--engine-threads, passed to the runtime too).
// - The rows are measured in R interleaved rounds (in-process, runtime, runtime during swaps; in
//   a new random order each round) so that load from other processes hits all rows alike, and the
//   headline ratios are medians of the per-round ratios (paired: each round compares its own
//   rows), next to the pooled percentiles.
// - The runtime's own cost is also measured without the inference noise: each answer carries the
//   engine time (X-Mota-Infer-Ms), so round trip - engine time = what HTTP, the socket, parsing
//   and copies add.
// - The load average is printed before and after; a run under load is not a fair figure.
// - BENCH_RUNTIME_TOML_B="..." starts a second runtime with those runtime.toml lines and measures
//   its body and swap rows in the same rounds ("B:" rows): an A/B of a setting under the same
//   neighbours, which separate runs on a shared machine cannot give.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <random>
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

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
}

double median(std::vector<double> v) {
  return pct(std::move(v), 0.5);
}

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  f >> a >> b >> c;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", a, b, c);
  return buf;
}

// CPU seconds used so far by a process (all its threads): /proc/PID/stat utime + stime.
double process_cpu_s(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), {});
  auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields;
  std::string field;
  for (char ch : stat.substr(close + 2)) {
    if (ch == ' ') {
      fields.push_back(field);
      field.clear();
    } else {
      field += ch;
    }
  }
  // After "pid (comm) ": state is field 0, utime field 11, stime field 12.
  if (fields.size() < 13) return 0;
  return (std::stod(fields[11]) + std::stod(fields[12])) /
         static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double own_cpu_s() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
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

// One row of the table: every sample, and each round's samples apart for paired comparisons.
struct Series {
  std::vector<double> ms, overhead_ms, engine_ms;
  double cpu_s = 0, runtime_cpu_s = 0;  // CPU used by this process / by mota-runtime
  std::vector<std::vector<double>> rounds;
  double wall_s = 0;
  std::vector<double>& begin_round() {
    rounds.emplace_back();
    return rounds.back();
  }
  double per_s() const { return static_cast<double>(ms.size()) / wall_s; }
  void add(std::vector<double>& round, double v) {
    ms.push_back(v);
    round.push_back(v);
  }
};

void bench_inprocess(cv::dnn::Net& net, const std::string& img, int iters, Series& s) {
  int dims[] = {1, 3, 240, 320};
  cv::Mat blob(4, dims, CV_32F, const_cast<char*>(img.data()));
  std::vector<cv::String> names = {"scores", "boxes"};
  std::vector<cv::Mat> outs;
  auto& round = s.begin_round();
  double cpu0 = own_cpu_s();
  auto start = Clock::now();
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    net.setInput(blob);
    net.forward(outs, names);
    s.add(round, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  s.wall_s += std::chrono::duration<double>(Clock::now() - start).count();
  s.cpu_s += own_cpu_s() - cpu0;
}

// `first_after_swap` collects the latency of the first answer from each new load.
// `region`: send the request naming this shared-memory region (holding the image) instead of
// the image in the body.
void bench_client(Client& c, pid_t runtime, const std::string& img, int iters, int* failures,
                  Series& s, std::uint64_t* generation, std::vector<double>* first_after_swap,
                  const char* region = nullptr) {
  auto& round = s.begin_round();
  double cpu0 = own_cpu_s(), rt_cpu0 = process_cpu_s(runtime);
  auto start = Clock::now();
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    auto r = region ? c.infer_region("face", region) : c.infer_raw("face", img);
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!r) {
      ++*failures;
      std::fprintf(stderr, "infer failed: %s\n", r.error().message().c_str());
      continue;
    }
    s.add(round, ms);
    s.overhead_ms.push_back(ms - r->infer_ms);
    s.engine_ms.push_back(r->infer_ms);
    if (r->generation != *generation) {
      if (first_after_swap && *generation != 0) {
        first_after_swap->push_back(ms);
        if (std::getenv("BENCH_VERBOSE")) {
          std::fprintf(stderr, "first answer of generation %llu: %.2f ms (engine %.2f ms)\n",
                       static_cast<unsigned long long>(r->generation), ms, r->infer_ms);
        }
      }
      *generation = r->generation;
    }
  }
  s.wall_s += std::chrono::duration<double>(Clock::now() - start).count();
  s.cpu_s += own_cpu_s() - cpu0;
  s.runtime_cpu_s += process_cpu_s(runtime) - rt_cpu0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string runtime_bin, model;
  int iters = 600, rounds = 10, engine_threads = 0, swap_gap_ms = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--runtime") runtime_bin = argv[i + 1];
    if (a == "--model") model = argv[i + 1];
    if (a == "--iters") iters = std::max(20, std::atoi(argv[i + 1]));
    if (a == "--rounds") rounds = std::max(1, std::atoi(argv[i + 1]));
    if (a == "--engine-threads") engine_threads = std::max(0, std::atoi(argv[i + 1]));
    if (a == "--swap-gap-ms") swap_gap_ms = std::max(0, std::atoi(argv[i + 1]));
  }
  if (runtime_bin.empty() || model.empty()) {
    std::fprintf(stderr,
                 "usage: %s --runtime PATH --model FILE.onnx [--iters N] [--rounds R] "
                 "[--engine-threads T] [--swap-gap-ms MS]\n",
                 argv[0]);
    return 2;
  }
  int per_round = std::max(5, iters / rounds);
  std::string load_before = loadavg();
  char tmpl[] = "/tmp/mota-bench-runtime.XXXXXX";
  if (!::mkdtemp(tmpl)) return 1;
  stdfs::path dir = tmpl;
  std::string onnx = read(model), img = image();
  // Two slots of the same model (different versions), so swapping does not change the work per
  // inference: p99 during swaps measures the swap, not a different model.
  make_slot(dir / "a", onnx, "1.0.0");
  make_slot(dir / "b", onnx, "1.0.1");
  stdfs::path sock = dir / "runtime.sock";
  // BENCH_RUNTIME_TOML: extra runtime.toml lines, to compare settings (e.g. "warmup_runs = 2").
  const char* extra = std::getenv("BENCH_RUNTIME_TOML");
  write(dir / "runtime.toml", "socket = \"" + sock.string() + "\"\nlog_level = \"warn\"\n" +
                                  (extra ? std::string(extra) + "\n" : std::string()));

  if (engine_threads > 0) cv::setNumThreads(engine_threads);
  cv::dnn::Net net = cv::dnn::readNetFromONNX(onnx.data(), onnx.size());
  net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  Series direct_s, served_s, swapping_s, shm_s;
  for (int i = 0; i < 5; ++i) bench_inprocess(net, img, 1, direct_s);
  direct_s = {};

  std::vector<std::string> args = {runtime_bin,        "serve",
                                   "--config",         (dir / "runtime.toml").string(),
                                   "--engine-threads", std::to_string(engine_threads),
                                   "--model",          "face=" + (dir / "a").string()};
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
  // The shared-memory row: the image in a memfd sealed against shrinking (mapped by the runtime,
  // no copy on its side), registered once; each request names it.
  int memfd = ::memfd_create("mota-bench-input", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0 || ::pwrite(memfd, img.data(), img.size(), 0) != static_cast<ssize_t>(img.size()) ||
      ::fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
    std::fprintf(stderr, "memfd: %s\n", std::strerror(errno));
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
    return 1;
  }
  auto reg = c.register_region(
      "frame", "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(memfd));
  if (!reg || !reg->mapped) {
    std::fprintf(stderr, "register region: %s\n",
                 reg ? "not mapped" : reg.error().message().c_str());
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
    return 1;
  }
  for (int i = 0; i < 5; ++i) (void)c.infer_region("face", "frame");
  struct Swaps {
    std::atomic<int> count{0};
    std::uint64_t generation = 0;  // the last one the client saw
    std::vector<double> first_after_swap;
    std::vector<double> load_wall_ms, load_waited_ms;  // per completed swap (the swapper's view)
  };
  Swaps main_swaps, b_swaps;
  std::uint64_t& generation = main_swaps.generation;
  // Swaps back to back for the whole phase by default (the worst case, not one swap now and
  // then); --swap-gap-ms spaces them.
  auto swap_phase = [&](Client& client, const ClientOptions& opts, pid_t rt, Series& series,
                        Swaps& sw) {
    std::atomic<bool> stop{false};
    std::thread swapper([&] {
      Client control(opts);
      while (!stop.load()) {
        auto t0 = Clock::now();
        auto r = control.load("face", dir / (sw.count.load() % 2 ? "a" : "b"));
        if (!r) {
          std::fprintf(stderr, "swap failed: %s\n", r.error().message().c_str());
        } else {
          sw.load_wall_ms.push_back(
              std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
          sw.load_waited_ms.push_back(r->load_waited_ms);
        }
        sw.count.fetch_add(1);
        for (int w = 0; w < swap_gap_ms && !stop.load(); ++w) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
    });
    bench_client(client, rt, img, per_round, &failures, series, &sw.generation,
                 &sw.first_after_swap);
    stop = true;
    swapper.join();
  };
  // BENCH_RUNTIME_TOML_B: a second runtime with these runtime.toml lines (instead of
  // BENCH_RUNTIME_TOML's), measured in the same rounds: A/B of a setting under the same load.
  const char* extra_b = std::getenv("BENCH_RUNTIME_TOML_B");
  pid_t pid_b = 0;
  std::unique_ptr<Client> cb;
  ClientOptions ob;
  Series served_b, swapping_b;
  if (extra_b) {
    write(dir / "runtime-b.toml", "socket = \"" + (dir / "runtime-b.sock").string() +
                                      "\"\nlog_level = \"warn\"\n" + extra_b + "\n");
    std::vector<std::string> bargs = args;
    bargs[3] = (dir / "runtime-b.toml").string();
    // BENCH_RUNTIME_BIN_B: another mota-runtime binary as B (the HTTP engine A/B).
    if (const char* bin_b = std::getenv("BENCH_RUNTIME_BIN_B")) bargs[0] = bin_b;
    std::vector<char*> bc;
    for (auto& a : bargs) bc.push_back(a.data());
    bc.push_back(nullptr);
    if (posix_spawn(&pid_b, bc[0], nullptr, nullptr, bc.data(), environ) != 0) {
      std::fprintf(stderr, "cannot start %s\n", runtime_bin.c_str());
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
      return 1;
    }
    ob.socket = dir / "runtime-b.sock";
    cb = std::make_unique<Client>(ob);
    bool up = false;
    for (int i = 0; i < 500 && !(up = cb->health().has_value()); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!up) {
      std::fprintf(stderr, "the B runtime did not come up (BENCH_RUNTIME_TOML_B: %s)\n", extra_b);
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
      ::kill(pid_b, SIGTERM);
      ::waitpid(pid_b, nullptr, 0);
      return 1;
    }
    for (int i = 0; i < 5; ++i) (void)cb->infer_raw("face", img);
  }
  int phases = extra_b ? 6 : 4;
  std::mt19937 shuffle_rng(1);
  for (int round = 0; round < rounds; ++round) {
    std::fprintf(stderr, "round %d/%d (load %s)\n", round + 1, rounds, loadavg().c_str());
    // A new random order each round (fixed seed): with a rotation each row always followed the
    // same row (the runtime's body row the in-process loop), which biased it by several percent.
    std::vector<int> order(static_cast<std::size_t>(phases));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), shuffle_rng);
    for (int k = 0; k < phases; ++k) {
      switch (order[static_cast<std::size_t>(k)]) {
        case 0:
          bench_inprocess(net, img, per_round, direct_s);
          break;
        case 1:
          bench_client(c, pid, img, per_round, &failures, served_s, &generation, nullptr);
          break;
        case 2:
          swap_phase(c, o, pid, swapping_s, main_swaps);
          break;
        case 3:
          bench_client(c, pid, img, per_round, &failures, shm_s, &generation, nullptr, "frame");
          break;
        case 4:
          bench_client(*cb, pid_b, img, per_round, &failures, served_b, &b_swaps.generation,
                       nullptr);
          break;
        case 5:
          swap_phase(*cb, ob, pid_b, swapping_b, b_swaps);
          break;
      }
    }
  }

  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (pid_b) {
    ::kill(pid_b, SIGTERM);
    ::waitpid(pid_b, &status, 0);
  }
  ::close(memfd);
  stdfs::remove_all(dir);
  std::string load_after = loadavg();

  // Paired per-round ratios: each round's rows ran back to back under the same neighbours.
  std::vector<double> p50_ratio, p99_ratio, shm_p50_ratio;
  for (std::size_t r = 0; r < direct_s.rounds.size(); ++r) {
    p50_ratio.push_back(pct(served_s.rounds[r], 0.5) / pct(direct_s.rounds[r], 0.5));
    shm_p50_ratio.push_back(pct(shm_s.rounds[r], 0.5) / pct(direct_s.rounds[r], 0.5));
    p99_ratio.push_back(pct(swapping_s.rounds[r], 0.99) / pct(served_s.rounds[r], 0.99));
  }
  auto row = [](const char* name, const Series& s) {
    std::vector<double> round_p50;
    for (const auto& r : s.rounds) round_p50.push_back(pct(r, 0.5));
    std::printf("| %-36s | %6.2f | %6.2f | %6.2f | %12.1f |\n", name, pct(s.ms, 0.5),
                median(round_p50), pct(s.ms, 0.99), s.per_s());
  };
  std::printf(
      "%s, engine threads %s, %d rounds x %d inferences per row, swaps %s; load average "
      "%s before, %s after\n\n",
      stdfs::path(model).filename().c_str(),
      engine_threads ? std::to_string(engine_threads).c_str() : "OpenCV default", rounds, per_round,
      swap_gap_ms ? ("every " + std::to_string(swap_gap_ms) + " ms + load time").c_str()
                  : "back to back",
      load_before.c_str(), load_after.c_str());
  std::printf("| %-36s | p50 ms | p50 ms (median of rounds) | p99 ms | inferences/s |\n",
              "path (1 client, sequential)");
  std::printf("|---|---:|---:|---:|---:|\n");
  row("OpenCV DNN in-process", direct_s);
  row("mota-runtime (Unix socket, raw)", served_s);
  row("mota-runtime (shared-memory input)", shm_s);
  row(("mota-runtime during " + std::to_string(main_swaps.count.load()) + " swaps").c_str(),
      swapping_s);
  if (extra_b) {
    row("B: mota-runtime (Unix socket, raw)", served_b);
    row(("B: mota-runtime during " + std::to_string(b_swaps.count.load()) + " swaps").c_str(),
        swapping_b);
  }
  std::printf("\n");
  std::printf(
      "- overhead at p50: %+.1f%% (median of %zu paired rounds; pooled %+.1f%%; target "
      "<= 5%%)\n",
      (median(p50_ratio) - 1.0) * 100.0, p50_ratio.size(),
      (pct(served_s.ms, 0.5) / pct(direct_s.ms, 0.5) - 1.0) * 100.0);
  std::printf(
      "- overhead at p50, shared-memory input: %+.1f%% (median of paired rounds; pooled "
      "%+.1f%%)\n",
      (median(shm_p50_ratio) - 1.0) * 100.0,
      (pct(shm_s.ms, 0.5) / pct(direct_s.ms, 0.5) - 1.0) * 100.0);
  std::printf(
      "- serving cost without the inference (round trip - engine time): p50 %.3f ms, "
      "p99 %.3f ms; shared-memory input: p50 %.3f ms, p99 %.3f ms\n",
      pct(served_s.overhead_ms, 0.5), pct(served_s.overhead_ms, 0.99), pct(shm_s.overhead_ms, 0.5),
      pct(shm_s.overhead_ms, 0.99));
  // The other half of the overhead: the same engine call timed inside the runtime vs in-process.
  std::printf(
      "- engine time p50 (the runtime's X-Mota-Infer-Ms vs the in-process loop): body %.3f ms, "
      "shared-memory input %.3f ms, in-process %.3f ms\n",
      pct(served_s.engine_ms, 0.5), pct(shm_s.engine_ms, 0.5), pct(direct_s.ms, 0.5));
  // CPU time hardly depends on what else the machine runs (wall time under load does: a thread
  // that sleeps between requests is scheduled sooner than one that never sleeps).
  double direct_cpu = direct_s.cpu_s / static_cast<double>(direct_s.ms.size()) * 1e3;
  double client_cpu = served_s.cpu_s / static_cast<double>(served_s.ms.size()) * 1e3;
  double runtime_cpu = served_s.runtime_cpu_s / static_cast<double>(served_s.ms.size()) * 1e3;
  std::printf(
      "- CPU per inference: in-process %.2f ms; through mota-runtime %.2f ms (runtime "
      "%.2f + client %.2f): %+.1f%%\n",
      direct_cpu, runtime_cpu + client_cpu, runtime_cpu, client_cpu,
      ((runtime_cpu + client_cpu) / direct_cpu - 1.0) * 100.0);
  double shm_client = shm_s.cpu_s / static_cast<double>(shm_s.ms.size()) * 1e3;
  double shm_runtime = shm_s.runtime_cpu_s / static_cast<double>(shm_s.ms.size()) * 1e3;
  std::printf(
      "- CPU per inference, shared-memory input: %.2f ms (runtime %.2f + client %.2f): %+.1f%%\n",
      shm_runtime + shm_client, shm_runtime, shm_client,
      ((shm_runtime + shm_client) / direct_cpu - 1.0) * 100.0);
  std::printf(
      "- p99 during swaps / steady p99: %.2fx (median of paired rounds; pooled %.2fx; "
      "target <= 1.5x)\n",
      median(p99_ratio), pct(swapping_s.ms, 0.99) / pct(served_s.ms, 0.99));
  auto swap_lines = [&](const char* who, const Swaps& sw) {
    std::printf("- %sfirst answer from each new load: p50 %.2f ms, max %.2f ms (%zu loads seen)\n",
                who, pct(sw.first_after_swap, 0.5), pct(sw.first_after_swap, 1.0),
                sw.first_after_swap.size());
    std::printf(
        "- %sloads (swaps) completed: %zu, wall time p50 %.0f ms, max %.0f ms; of which waiting "
        "for in-flight inferences (load_yield_ms) p50 %.0f ms\n",
        who, sw.load_wall_ms.size(), pct(sw.load_wall_ms, 0.5), pct(sw.load_wall_ms, 1.0),
        pct(sw.load_waited_ms, 0.5));
  };
  swap_lines("", main_swaps);
  if (extra_b) {
    std::vector<double> b_p50_ratio, b_p99_ratio;
    for (std::size_t r = 0; r < direct_s.rounds.size(); ++r) {
      b_p50_ratio.push_back(pct(served_b.rounds[r], 0.5) / pct(direct_s.rounds[r], 0.5));
      b_p99_ratio.push_back(pct(swapping_b.rounds[r], 0.99) / pct(served_b.rounds[r], 0.99));
    }
    std::string b_settings = extra_b;
    std::replace(b_settings.begin(), b_settings.end(), '\n', ';');
    std::printf("- B = a second runtime with runtime.toml: %s\n", b_settings.c_str());
    std::printf("- B: overhead at p50: %+.1f%% (median of paired rounds; pooled %+.1f%%)\n",
                (median(b_p50_ratio) - 1.0) * 100.0,
                (pct(served_b.ms, 0.5) / pct(direct_s.ms, 0.5) - 1.0) * 100.0);
    std::printf(
        "- B: p99 during swaps / steady p99: %.2fx (median of paired rounds; pooled %.2fx)\n",
        median(b_p99_ratio), pct(swapping_b.ms, 0.99) / pct(served_b.ms, 0.99));
    swap_lines("B: ", b_swaps);
  }
  std::printf("- failed requests: %d\n", failures);
  return failures == 0 ? 0 : 1;
}
