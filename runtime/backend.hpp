#pragma once
// The backend interface: what mota-runtime needs from an inference engine. The rest of the runtime
// (model store, HTTP API, probe) only sees these two classes, so ONNX Runtime, TensorRT or
// llama.cpp backends can be added beside OpenCV DNN without touching it.
//
//   load      Backend::load() -> a Model (everything needed to serve, warmed up)
//   describe  Model::inputs() / Model::outputs()
//   run       Model::run()
//   unload    destroy the Model (the store does so when the last in-flight request lets go)

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "manifest/model_manifest.hpp"
#include "runtime/tensor.hpp"

namespace mota::runtime {

struct LoadOptions {
  // Independent engine instances per model = requests served at once (OpenCV's Net is not
  // re-entrant; each instance has its own lock). At least 1.
  int pool_size = 2;
  // Inferences on zero inputs per instance before the model is handed out, so the first real
  // request does not pay for lazy allocation. 0 disables (not recommended: a model whose ops fail
  // only at run time then passes load).
  int warmup_runs = 1;
  // Run the engine's parallel loops of this load (parsing, warm-up) on the calling thread alone
  // instead of on the engine's worker threads, so a niced loading thread takes only the CPU that
  // serving leaves (see init_engines). Effective once init_engines() has run.
  bool serial = true;
};

// Where a run writes its outputs: the raw encoding (tensors concatenated in outputs() order) and
// their layouts. The caller owns it and may reuse it across runs (the serving path keeps one per
// thread), so steady-state serving does not allocate the output bytes again on every request.
struct OutputBuffer {
  std::vector<TensorInfo> infos;
  std::string bytes;
  std::vector<std::size_t> offsets;  // start of each output in `bytes`

  std::string_view data(std::size_t i) const {
    std::size_t end = i + 1 < offsets.size() ? offsets[i + 1] : bytes.size();
    return std::string_view(bytes).substr(offsets[i], end - offsets[i]);
  }
  std::vector<Tensor> tensors() const;  // copies, for callers that want owning tensors
};

// A loaded, immutable model. run() is thread-safe; any number of threads may call it at once
// (they queue for a free engine instance). Destroying it frees the engine; callers must make
// sure no run() is in progress (the store does so with shared_ptr).
class Model {
 public:
  virtual ~Model() = default;
  virtual const std::vector<TensorInfo>& inputs() const = 0;
  virtual const std::vector<TensorInfo>& outputs() const = 0;
  // Inputs by position, in inputs() order (a non-empty name must match), borrowed for the call;
  // the outputs replace the contents of `out`. Errors: Errc::invalid_argument for a wrong count,
  // type or shape (the message names the input), Errc::internal when the engine fails (`out` is
  // then unspecified).
  virtual Status run_into(std::span<const TensorView> inputs, OutputBuffer& out) = 0;
  // Convenience over run_into() with owning tensors (probe, tools). Same errors.
  Result<std::vector<Tensor>> run(const std::vector<Tensor>& inputs);
};

// Checks `got` against a model's declared inputs (count, names when given, dtype, shape); the
// error names the input. For backends.
Status check_inputs(const std::vector<TensorInfo>& want, std::span<const TensorView> got);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  // Loads the manifest's entry from `dir` (an unpacked model tree). Errors say why the backend
  // cannot serve the model: Errc::unsupported (framework, dynamic shape, dtype, op), Errc::parse
  // (unreadable model file), Errc::io / not_found (files). Never throws.
  virtual Result<std::unique_ptr<Model>> load(const ModelManifest& manifest,
                                              const std::filesystem::path& dir,
                                              const LoadOptions& options) = 0;
};

// The backend for a manifest's framework ("onnx" -> OpenCV DNN), or Errc::unsupported naming the
// framework. Backends are stateless and cheap to create.
Result<std::unique_ptr<Backend>> backend_for(std::string_view framework);

// OpenCV DNN (Debian's libopencv-dnn-dev 4.6): ONNX opset 11-13, static shapes, float32 inputs.
std::unique_ptr<Backend> make_opencv_backend();

// Sets up the engines for serving: OpenCV's parallel loops on TBB (as Debian's OpenCV does)
// with loads marked LoadOptions::serial kept on their own thread, and the global worker-thread
// count (cv::setNumThreads; 0 = engine default). Call from main() before any other thread uses an
// engine (OpenCV's backend switch is not thread-safe); the thread count may be set again later.
void init_engines(int threads);

// Loads yield to serving. A load shares the CPU (and OpenCV's process-wide parallel-loop slot)
// with the requests being served; on a small device every step it takes while a request runs
// shows up in that request's latency. So serving marks its inferences (ServingScope), and a
// loading thread that set a yield budget (LoadYieldScope) waits, before each engine step, until no
// inference is in flight: it works in the gaps between requests. The budget bounds the total wait
// of one load, so a load under continuous traffic still finishes: once spent, the remaining steps
// run without waiting (still niced).
//
// ServingScope: one inference in flight for its lifetime. Cheap (two atomic operations; a wake-up
// only while a load is waiting). Any thread.
class ServingScope {
 public:
  ServingScope();
  ~ServingScope();
  ServingScope(const ServingScope&) = delete;
  ServingScope& operator=(const ServingScope&) = delete;
};

// Gives the calling (loading) thread a total yield budget for its lifetime; 0 = never wait.
// Scopes do not nest (the inner one replaces the budget until it ends).
class LoadYieldScope {
 public:
  explicit LoadYieldScope(std::chrono::milliseconds budget);
  ~LoadYieldScope();
  LoadYieldScope(const LoadYieldScope&) = delete;
  LoadYieldScope& operator=(const LoadYieldScope&) = delete;
  // What the waits of this scope took so far, and how many yield points the thread passed
  // (calls to yield_to_serving, waiting or not).
  std::chrono::nanoseconds waited() const;
  std::uint64_t steps() const;

 private:
  std::chrono::nanoseconds saved_budget_, saved_waited_;
  std::uint64_t saved_steps_;
};

// On a thread inside a LoadYieldScope with budget left: waits while inferences are in flight
// (returns as soon as none is, or the budget is spent). Elsewhere: returns at once. Backends call
// it between their load steps.
void yield_to_serving();

// Inferences in flight right now (ServingScopes alive). For tests and logs.
int serving_in_flight();

// Reads <dir>/model.json for the runtime: model.json must parse (files list optional: the agent
// has already verified the tree) and carry a name and a version.
Result<ModelManifest> read_slot_manifest(const std::filesystem::path& dir);

}  // namespace mota::runtime
