#pragma once
// The model store: for each model name, the one model being served, swapped without downtime.
//
// load(name, slot) reads <slot>/model.json, loads and warms up the model on a separate, niced
// thread (off the request path: serving threads keep running the current model meanwhile), then
// swaps an atomic shared_ptr. Requests that already hold the old model finish on it; the loading
// thread frees it once they are done (never a request: see StoreOptions::retire_wait). A failed
// load changes nothing and returns the reason. Loads are serialised (one at a time, in call order),
// so two control requests cannot interleave.
//
// Thread-safety: every method may be called from any thread at any time.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common/latency_histogram.hpp"
#include "runtime/backend.hpp"

namespace mota::runtime {

struct StoreOptions {
  LoadOptions load;
  // nice(2) increment of the loading thread, so parsing and warm-up yield the CPU to serving
  // threads. 0 = same priority. (OpenCV's own worker threads used by warm-up are not reniced.)
  int load_nice = 10;
  // Run the loading thread under SCHED_IDLE: it gets a CPU only when no normal thread wants one,
  // and any serving thread that wakes up takes the CPU from it at once (a niced thread keeps it
  // for the rest of its time slice, stalling the request's parallel layer). A load then waits for
  // gaps, also those left by other processes: on a machine kept busy by them it could starve. So
  // after load_idle_escalate the thread is moved back to SCHED_OTHER (at load_nice). Leaving
  // SCHED_IDLE needs CAP_SYS_NICE or an RLIMIT_NICE that allows the loader's nice value
  // (sched(7)); each load checks that first, on a throwaway thread.
  //   on:   SCHED_IDLE, escalated if allowed (if not, it stays idle: always finishes, slowly)
  //   off:  niced only (load_nice)
  //   automatic: SCHED_IDLE when escalation is allowed, otherwise niced only (the default)
  enum class Idle { off, on, automatic };
  Idle load_idle = Idle::automatic;
  std::chrono::milliseconds load_idle_escalate{1000};  // 0: moved out as soon as it is in
  // The most a load waits, in total, for serving to be idle: before each engine step (each of
  // OpenCV's parallel loops while parsing and warming up, each engine instance) and before freeing
  // the model it replaced, the loading thread waits while inferences are in flight, so it works in
  // the gaps between requests (backend.hpp, yield_to_serving). Once the budget is spent the rest
  // of the load runs without waiting (niced). A load under continuous traffic so takes at most
  // this much longer. 0 = never wait.
  std::chrono::milliseconds load_yield{1000};
  // How long a load waits, after the swap, for the requests still running on the old model
  // before it frees it on the loading thread. Past that the old model is parked and freed by the
  // next load (or the store's destructor). Either way no request ever frees a model: that would
  // put the engine's teardown on a request's path.
  std::chrono::milliseconds retire_wait{5000};
  // First loads in a child process: a model this store has not loaded before (its slot's files
  // by path, size, mtime and inode) is first loaded and run once by `<isolate_with> probe SLOT
  // --runs 1` (the agent's probe), so a model that crashes the engine (SIGFPE inside OpenCV)
  // kills only that child and the load is refused, the served models untouched; a child still
  // running after load_timeout is killed and the load refused (a load that would never end).
  // A child's other verdicts (a failed health check, say) are not the store's business: the
  // load goes on in-process and fails or succeeds on its own. Empty: every load runs in-process
  // only (unit tests; `mota-runtime serve` sets its own binary).
  std::filesystem::path isolate_with;
  std::chrono::milliseconds load_timeout{300000};
};

// What is loaded under a name. Immutable once published.
struct ModelInfo {
  std::string name, version, framework, backend;
  std::filesystem::path slot;    // canonical path (a "current" symlink resolved to its slot)
  std::uint64_t generation = 0;  // process-wide load counter: tells two loads of one slot apart
  std::chrono::system_clock::time_point loaded_at;
  double load_ms = 0;
  double load_waited_ms = 0;  // of load_ms: waiting for serving to be idle (load_yield)
  std::vector<TensorInfo> inputs, outputs;
};

// Counters of one loaded model (they start from zero at each load, so a trial sees only the new
// model's behaviour).
struct ModelStats {
  std::uint64_t inferences = 0;   // successful runs
  std::uint64_t errors = 0;       // runs the engine failed (bad requests are not counted)
  double p50_ms = 0, p99_ms = 0;  // over the last 1024 successful runs; 0 before any
  // Every successful run's latency since the load (field health: the agent reports it and the
  // server compares versions with it).
  LatencyHistogram latency;
};

class ServedModel {
 public:
  ServedModel(ModelInfo info, std::unique_ptr<Model> model)
      : info_(std::move(info)), model_(std::move(model)) {}
  const ModelInfo& info() const { return info_; }
  // Runs the model (see Model::run_into) and records the outcome in stats(). Thread-safe.
  Status infer(std::span<const TensorView> inputs, OutputBuffer& out);
  ModelStats stats() const;

 private:
  ModelInfo info_;
  std::unique_ptr<Model> model_;
  std::atomic<std::uint64_t> inferences_{0}, errors_{0};
  std::array<std::atomic<std::uint64_t>, kLatencyBuckets> histogram_{};
  mutable std::mutex lat_mu_;
  std::vector<float> latencies_ms_;  // ring buffer
  std::size_t lat_next_ = 0;
};

class ModelStore {
 public:
  explicit ModelStore(StoreOptions options = {});
  ~ModelStore();
  ModelStore(const ModelStore&) = delete;
  ModelStore& operator=(const ModelStore&) = delete;

  // Loads `slot` and makes it the served model for `name`. Errors (nothing changed):
  // Errc::invalid_argument if the manifest's name is not `name`; whatever reading model.json or
  // the backend reports (see Backend::load), with context "load <name> from <slot>".
  Result<ModelInfo> load(const std::string& name, const std::filesystem::path& slot);

  // The model served under `name` right now, or null. Holding the pointer keeps that model alive
  // (and in use) even if another one is swapped in.
  std::shared_ptr<ServedModel> get(const std::string& name) const;
  // Every served model, sorted by name.
  std::vector<std::shared_ptr<ServedModel>> all() const;

 private:
  struct Entry {
    std::atomic<std::shared_ptr<ServedModel>> current;
  };
  Entry& entry(const std::string& name);

  // Frees the retired models no request holds any more; on the calling (loading) thread.
  void reap();

  StoreOptions options_;
  std::mutex load_mu_;  // one load at a time
  // Models swapped out, held so that the last request using one does not free it. Guarded by
  // load_mu_.
  std::vector<std::shared_ptr<ServedModel>> retired_;
  mutable std::shared_mutex map_mu_;
  std::map<std::string, std::unique_ptr<Entry>> entries_;  // never erased
  // Slots (by identity, see isolate_with) whose first load a child survived. Guarded by load_mu_.
  std::set<std::string> isolated_ok_;
  // Runs the child check of isolate_with for `slot` unless it passed before. Caller holds
  // load_mu_.
  Status check_in_child(const std::string& ctx, const std::filesystem::path& slot);
  std::atomic<std::uint64_t> generation_{0};
};

}  // namespace mota::runtime
