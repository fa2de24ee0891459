// OpenCV DNN backend (Debian's libopencv-dnn-dev 4.6).
//
// What it handles: ONNX models with static input shapes and float32 inputs, at default-domain
// opsets up to runtime/onnx_limits.hpp's kMaxCheckedOpset, except what that file's table lists
// (operators this OpenCV crashes on, computes wrongly without an error, or cannot load; measured,
// see docs/runtime.md). Before OpenCV sees the bytes, the graph is read (runtime/onnx_info.hpp)
// and checked against that table, so a model OpenCV would corrupt memory on or answer wrongly is
// refused with the reason instead. Then the model is parsed and run (warm-up) before load()
// returns, so an op that fails loudly fails here and not on the first request.
//
// cv::dnn::Net is not re-entrant, and copying one shares its state: the pool holds pool_size Nets,
// each parsed separately from the same bytes in memory, each behind its own mutex.

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/core/parallel/backend/parallel_for.tbb.hpp>
#include <opencv2/core/parallel/parallel_backend.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include "common/fs.hpp"
#include "runtime/backend.hpp"
#include "runtime/onnx_info.hpp"
#include "runtime/onnx_limits.hpp"

namespace mota::runtime {

namespace {

// Set on a thread that is loading a model with LoadOptions::serial (see ParallelBackend).
thread_local bool t_serial_engine = false;
// init_engines() has run: LoadOptions::serial takes effect (tools that never call it, such as
// the probe, keep OpenCV's own parallel loops for their loads).
std::atomic<bool> g_serial_loads{false};

struct SerialEngineScope {
  bool saved = t_serial_engine;
  explicit SerialEngineScope(bool on) { t_serial_engine = saved || on; }
  ~SerialEngineScope() { t_serial_engine = saved; }
  SerialEngineScope(const SerialEngineScope&) = delete;
  SerialEngineScope& operator=(const SerialEngineScope&) = delete;
};

// OpenCV's own cv::parallel_for_ (libopencv_core), which this file interposes (below).
using ParallelForFn = void (*)(const cv::Range&, const cv::ParallelLoopBody&, double);
ParallelForFn opencv_parallel_for() {
  static const ParallelForFn fn = [] {
    // POSIX guarantees dlsym's void* converts to a function pointer.
    void* p = ::dlsym(RTLD_NEXT, "_ZN2cv13parallel_for_ERKNS_5RangeERKNS_16ParallelLoopBodyEd");
    return reinterpret_cast<ParallelForFn>(p);
  }();
  return fn;
}

// OpenCV's parallel loops on TBB, as Debian's OpenCV runs them itself (the same TBB arena
// set-up: OpenCV's own TBB backend from its public header), except on a thread that is loading a
// model: there each loop runs on the loading thread alone, not on TBB's workers (which are not
// niced), so a load only uses the CPU serving leaves. (With cv::parallel_for_ interposed, below,
// a loading thread's loops do not even get here; this stays as the fallback.)
class ParallelBackend final : public cv::parallel::ParallelForAPI {
 public:
  void parallel_for(int tasks, FN_parallel_for_body_cb_t body, void* data) override {
    if (t_serial_engine) {
      body(0, tasks, data);
      return;
    }
    tbb_.parallel_for(tasks, body, data);
  }
  int getThreadNum() const override { return t_serial_engine ? 0 : tbb_.getThreadNum(); }
  int getNumThreads() const override { return tbb_.getNumThreads(); }
  int setNumThreads(int n) override { return tbb_.setNumThreads(n); }
  const char* getName() const override { return "tbb (mota: loads serial)"; }

 private:
  cv::parallel::tbb::ParallelForBackend tbb_;
};

constexpr std::uint64_t kMaxModelBytes = std::uint64_t{2} << 30;

// What a load error adds about the model, so the reader can compare with docs/runtime.md.
std::string opset_note(const OnnxModel& info) {
  auto opset = info.opset("");
  if (!opset) return "";
  return " (ONNX opset " + std::to_string(*opset) + "; " + std::string(kBundledBackend) +
         " limits: docs/runtime.md)";
}

// One engine instance. Only the thread that took it from the pool touches it.
struct Instance {
  cv::dnn::Net net;
  // forward()'s destinations. OpenCV copies each output blob into these Mats, and leaves a Mat's
  // memory in place when it already has the right shape and type: so when the output shapes are
  // known they are pointed at the caller's OutputBuffer and the engine's own copy is the only one.
  std::vector<cv::Mat> outs;
};

// The engine instances of one model. A request takes whichever instance is free (the most recently
// used first: its weights and buffers are the likeliest to be in cache) and waits only when all
// are busy, for the first one to come back, not for one picked in advance.
class InstancePool {
 public:
  explicit InstancePool(std::vector<std::unique_ptr<Instance>> all) : all_(std::move(all)) {
    for (auto& i : all_) free_.push_back(i.get());
  }
  Instance& acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !free_.empty(); });
    Instance* i = free_.back();
    free_.pop_back();
    return *i;
  }
  void release(Instance& i) {
    {
      std::lock_guard lock(mu_);
      free_.push_back(&i);
    }
    cv_.notify_one();
  }
  std::vector<std::unique_ptr<Instance>>& all() { return all_; }

 private:
  std::vector<std::unique_ptr<Instance>> all_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Instance*> free_;
};

class OpenCvModel final : public Model {
 public:
  OpenCvModel(std::vector<TensorInfo> inputs, std::vector<TensorInfo> outputs,
              std::vector<cv::String> out_names, std::vector<std::unique_ptr<Instance>> pool)
      : inputs_(std::move(inputs)),
        outputs_(std::move(outputs)),
        out_names_(std::move(out_names)),
        pool_(std::move(pool)) {}

  const std::vector<TensorInfo>& inputs() const override { return inputs_; }
  const std::vector<TensorInfo>& outputs() const override { return outputs_; }

  Status run_into(std::span<const TensorView> in, OutputBuffer& out) override {
    MOTA_TRY(check_inputs(inputs_, in));
    Instance& inst = pool_.acquire();
    struct Release {
      InstancePool& pool;
      Instance& inst;
      ~Release() { pool.release(inst); }
    } release{pool_, inst};
    return run_on(inst, in, out);
  }

  // Runs on a given instance (taken from the pool, or not yet shared: warm-up).
  Status run_on(Instance& inst, std::span<const TensorView> in, OutputBuffer& out) {
    try {
      for (std::size_t i = 0; i < in.size(); ++i) {
        int dims[8];
        int nd = static_cast<int>(std::min<std::size_t>(in[i].shape.size(), 8));
        for (int d = 0; d < nd; ++d) dims[d] = static_cast<int>(in[i].shape[d]);
        // The Mat borrows the request's bytes; setInput copies them into the net (as it does for
        // any caller), so the request body is never copied on our side.
        cv::Mat blob(nd, dims, CV_32F, const_cast<char*>(in[i].data.data()));
        inst.net.setInput(blob, in.size() == 1 ? cv::String() : cv::String(inputs_[i].name));
      }
      bool direct = point_outputs_at(inst, out);
      inst.net.forward(inst.outs, out_names_);
      if (inst.outs.size() != out_names_.size()) {
        return fail(Errc::internal, "OpenCV returned " + std::to_string(inst.outs.size()) +
                                        " outputs for " + std::to_string(out_names_.size()));
      }
      for (std::size_t i = 0; i < inst.outs.size(); ++i) {
        const cv::Mat& m = inst.outs[i];
        if (m.depth() != CV_32F) {
          inst.outs.clear();
          return fail(Errc::unsupported,
                      "output \"" + out_names_[i] + "\": OpenCV produced a non-float32 tensor");
        }
        if (direct && m.data != reinterpret_cast<const uchar*>(out.bytes.data() + out.offsets[i])) {
          direct = false;  // OpenCV reallocated: the shape is not the one learned at warm-up
        }
      }
      if (!direct) gather(inst, out);
      return {};
    } catch (const cv::Exception& e) {
      inst.outs.clear();
      return fail(Errc::internal, "OpenCV DNN: " + std::string(e.what()));
    } catch (const std::exception& e) {
      inst.outs.clear();
      return fail(Errc::internal, std::string("OpenCV DNN: ") + e.what());
    }
  }

  std::vector<std::unique_ptr<Instance>>& instances() { return pool_.all(); }
  void set_outputs(std::vector<TensorInfo> o) {
    outputs_ = std::move(o);
    offsets_.clear();
    total_bytes_ = 0;
    for (const auto& t : outputs_) {
      offsets_.push_back(total_bytes_);
      auto n = byte_size(t.shape, t.dtype);
      if (!n) {  // unknown or absurd shape: no direct writes, gather() copes
        offsets_.clear();
        return;
      }
      total_bytes_ += *n;
    }
  }

 private:
  // Points the instance's output Mats at `out` when the output shapes are known (after warm-up);
  // otherwise lets OpenCV allocate (warm-up) and returns false.
  bool point_outputs_at(Instance& inst, OutputBuffer& out) {
    if (offsets_.size() != outputs_.size() || outputs_.empty()) {
      inst.outs.clear();
      return false;
    }
    // Assignments into existing elements reuse their storage: no allocation once warm.
    out.infos = outputs_;
    out.offsets = offsets_;
    out.bytes.resize(total_bytes_);
    inst.outs.resize(outputs_.size());
    for (std::size_t i = 0; i < outputs_.size(); ++i) {
      int dims[8];
      const auto& shape = outputs_[i].shape;
      int nd = static_cast<int>(std::min<std::size_t>(shape.size(), 8));
      for (int d = 0; d < nd; ++d) dims[d] = static_cast<int>(shape[d]);
      inst.outs[i] = cv::Mat(nd, dims, CV_32F, out.bytes.data() + offsets_[i]);
    }
    return true;
  }

  // The slow way: whatever OpenCV allocated, copied into `out`.
  void gather(Instance& inst, OutputBuffer& out) {
    out.infos.clear();
    out.offsets.clear();
    out.bytes.clear();
    for (std::size_t i = 0; i < inst.outs.size(); ++i) {
      cv::Mat m = inst.outs[i].isContinuous() ? inst.outs[i] : inst.outs[i].clone();
      TensorInfo t{out_names_[i], DType::float32, {}};
      for (int d = 0; d < m.dims; ++d) t.shape.push_back(m.size[d]);
      out.infos.push_back(std::move(t));
      out.offsets.push_back(out.bytes.size());
      out.bytes.append(reinterpret_cast<const char*>(m.data), m.total() * m.elemSize());
    }
    // The Mats must not keep pointing into a buffer that is not theirs.
    inst.outs.clear();
  }

  std::vector<TensorInfo> inputs_, outputs_;
  std::vector<cv::String> out_names_;
  std::vector<std::size_t> offsets_;
  std::size_t total_bytes_ = 0;
  InstancePool pool_;
};

class OpenCvBackend final : public Backend {
 public:
  std::string_view name() const override { return "opencv-dnn"; }

  Result<std::unique_ptr<Model>> load(const ModelManifest& m, const std::filesystem::path& dir,
                                      const LoadOptions& options) override {
    // Parsing and warm-up keep OpenCV's parallel loops on this (loading) thread.
    SerialEngineScope serial(options.serial);
    if (m.framework != "onnx") {
      return fail(Errc::unsupported,
                  "OpenCV DNN backend loads ONNX models only, not \"" + m.framework + "\"");
    }
    if (m.inputs.empty()) {
      return fail(Errc::unsupported,
                  "model.json declares no inputs: the OpenCV DNN backend needs every input's "
                  "static shape from the manifest");
    }
    std::vector<TensorInfo> inputs;
    for (const auto& spec : m.inputs) {
      auto dt = parse_dtype(spec.dtype);
      if (!dt || *dt != DType::float32) {
        return fail(Errc::unsupported, "input \"" + spec.name + "\" is " + spec.dtype +
                                           ": the OpenCV DNN backend takes float32 inputs only");
      }
      for (auto d : spec.shape) {
        if (d <= 0) {
          return fail(Errc::unsupported, "input \"" + spec.name + "\" has a dynamic shape [" +
                                             format_shape(spec.shape) +
                                             "]: the OpenCV DNN backend needs static shapes");
        }
      }
      MOTA_TRY_CTX(byte_size(spec.shape, *dt), "input \"" + spec.name + "\"");
      inputs.push_back({spec.name, *dt, spec.shape});
    }
    auto file = dir / m.entry;
    auto bytes = MOTA_TRY_CTX(fs::read_file(file, kMaxModelBytes), "read model");
    // Checked before OpenCV parses the bytes: some models corrupt its memory or come back with
    // wrong results and no error (runtime/onnx_limits.hpp), which no warm-up would catch.
    auto info = read_onnx_model(bytes);
    if (!info) return fail(Errc::parse, m.entry + ": " + info.error().message());
    if (auto hits = check_backend_limits(*info); !hits.empty()) {
      return fail(Errc::unsupported, m.entry + ": " + describe_limit_hits(hits));
    }

    std::vector<std::unique_ptr<Instance>> pool;
    int n = std::max(1, options.pool_size);
    std::vector<cv::String> out_names;
    for (int i = 0; i < n; ++i) {
      yield_to_serving();
      auto inst = std::make_unique<Instance>();
      try {
        inst->net = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
        if (inst->net.empty()) {
          return fail(Errc::unsupported,
                      m.entry + ": OpenCV DNN read an empty network" + opset_note(*info));
        }
        inst->net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
        inst->net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
        if (i == 0) {
          if (m.outputs.empty()) {
            out_names = inst->net.getUnconnectedOutLayersNames();
          } else {
            for (const auto& o : m.outputs) out_names.push_back(o.name);
          }
        }
      } catch (const cv::Exception& e) {
        return fail(Errc::unsupported, m.entry + ": OpenCV DNN cannot load it: " +
                                           first_line(e.what()) + opset_note(*info));
      } catch (const std::exception& e) {
        return fail(Errc::unsupported, m.entry + ": OpenCV DNN cannot load it: " +
                                           std::string(e.what()) + opset_note(*info));
      }
      pool.push_back(std::move(inst));
    }
    std::vector<TensorInfo> outputs;
    for (const auto& o : out_names) outputs.push_back({o, DType::float32, {}});
    auto model = std::make_unique<OpenCvModel>(inputs, outputs, out_names, std::move(pool));

    // Warm-up on zeros: proves every op runs, learns the output shapes, and makes each instance
    // allocate its blobs, so the first real request on the new model is not the slow one. The
    // last warm-up run of each instance already takes the serving path (outputs written straight
    // into the caller's buffer).
    std::vector<std::string> zero_bytes;
    std::vector<TensorView> zeros;
    for (const auto& t : inputs) zero_bytes.emplace_back(*byte_size(t.shape, t.dtype), '\0');
    for (std::size_t k = 0; k < inputs.size(); ++k) {
      zeros.push_back({inputs[k].name, inputs[k].dtype, inputs[k].shape, zero_bytes[k]});
    }
    int runs = std::max(1, options.warmup_runs);
    OutputBuffer out;
    for (auto& inst : model->instances()) {
      for (int r = 0; r < runs; ++r) {
        yield_to_serving();
        auto st = model->run_on(*inst, zeros, out);
        if (!st) {
          return fail(Errc::unsupported, m.entry + ": fails on a warm-up run: " +
                                             first_line(st.error().message()) + opset_note(*info));
        }
        if (&inst == &model->instances().front() && r == 0) {
          for (std::size_t k = 0; k < out.infos.size(); ++k) outputs[k].shape = out.infos[k].shape;
          for (std::size_t k = 0; k < m.outputs.size() && k < out.infos.size(); ++k) {
            if (!m.outputs[k].shape.empty() &&
                !shape_matches(m.outputs[k].shape, outputs[k].shape)) {
              return fail(Errc::verification, "output \"" + m.outputs[k].name + "\" has shape [" +
                                                  format_shape(outputs[k].shape) +
                                                  "], model.json declares [" +
                                                  format_shape(m.outputs[k].shape) + "]");
            }
          }
          model->set_outputs(outputs);
        }
      }
    }
    return std::unique_ptr<Model>(std::move(model));
  }

 private:
  static std::string first_line(std::string s) {
    // OpenCV messages span lines ("OpenCV(4.6.0) file:line: error: (-2:...) text in function");
    // keep the informative part on one line.
    for (auto& c : s) {
      if (c == '\n') c = ' ';
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
  }
  static bool shape_matches(const Shape& declared, const Shape& actual) {
    if (declared.size() != actual.size()) return false;
    for (std::size_t i = 0; i < declared.size(); ++i) {
      if (declared[i] > 0 && declared[i] != actual[i]) return false;
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Backend> make_opencv_backend() {
  // OpenCV logs warnings to stderr on its own; errors reach us as exceptions anyway.
  static std::once_flag once;
  std::call_once(once,
                 [] { cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_ERROR); });
  return std::make_unique<OpenCvBackend>();
}

void init_engines(int threads) {
  static std::once_flag once;
  std::call_once(once, [] {
    cv::parallel::setParallelForBackend(std::make_shared<ParallelBackend>());
    g_serial_loads = true;
  });
  if (threads > 0) cv::setNumThreads(threads);
}

}  // namespace mota::runtime

// Interposes OpenCV's cv::parallel_for_: the executable's definition wins over libopencv_core's
// for every call through the dynamic linker, which is how libopencv_dnn reaches it (the test
// LoadYield.ALoadPassesYieldPointsInEveryEngineLoopAndWaitsForServing checks that it does). On a
// loading thread each loop is a step of the load: it first yields to serving (waits while an
// inference is in flight, within the load's budget, see backend.hpp) and then runs on the loading
// thread directly, without taking OpenCV's process-wide "one parallel loop at a time" flag (a
// request whose loop starts while a niced loader holds that flag would run its loop serially).
// Every other loop goes to OpenCV's own function unchanged.
void cv::parallel_for_(const cv::Range& range, const cv::ParallelLoopBody& body, double nstripes) {
  using namespace mota::runtime;
  if (t_serial_engine && g_serial_loads.load(std::memory_order_relaxed)) {
    yield_to_serving();
    if (!range.empty()) body(range);
    return;
  }
  if (auto fn = opencv_parallel_for()) return fn(range, body, nstripes);
  if (!range.empty()) body(range);  // not reachable with a shared libopencv_core
}
