// OpenCV DNN backend (Debian's libopencv-dnn-dev 4.6).
//
// What it handles reliably: ONNX opset 11-13 with static input shapes and float32 inputs. Anything
// else is refused at load time with that reason: the manifest must declare every input with a
// fixed shape, and the model is parsed and run (warm-up) before load() returns, so an unsupported
// op fails here and not on the first request.
//
// cv::dnn::Net is not re-entrant, and copying one shares its state: the pool holds pool_size Nets,
// each parsed separately from the same bytes in memory, each behind its own mutex.

#include <atomic>
#include <cstring>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include "common/fs.hpp"
#include "runtime/backend.hpp"
#include "runtime/onnx_info.hpp"

namespace mota::runtime {

namespace {

constexpr std::uint64_t kMaxModelBytes = std::uint64_t{2} << 30;

std::string opset_note(const std::optional<OnnxInfo>& info) {
  std::string note = " (OpenCV DNN 4.6 handles ONNX opset 11-13 with static shapes";
  if (info && info->opset) note += "; this model declares opset " + std::to_string(*info->opset);
  return note + ")";
}

struct Instance {
  std::mutex mu;
  cv::dnn::Net net;
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

  Result<std::vector<Tensor>> run(const std::vector<Tensor>& in) override {
    if (in.size() != inputs_.size()) {
      return fail(Errc::invalid_argument, "model takes " + std::to_string(inputs_.size()) +
                                              " input(s), got " + std::to_string(in.size()));
    }
    for (std::size_t i = 0; i < in.size(); ++i) {
      const auto& want = inputs_[i];
      const auto& got = in[i];
      if (!got.name.empty() && got.name != want.name) {
        return fail(Errc::invalid_argument, "input " + std::to_string(i) + " is \"" + want.name +
                                                "\", got \"" + got.name + "\"");
      }
      if (got.dtype != want.dtype || got.shape != want.shape) {
        return fail(Errc::invalid_argument,
                    "input \"" + want.name + "\" must be " + std::string(dtype_name(want.dtype)) +
                        " [" + format_shape(want.shape) + "], got " +
                        std::string(dtype_name(got.dtype)) + " [" + format_shape(got.shape) + "]");
      }
    }
    Instance& inst = acquire();
    std::unique_lock lock(inst.mu, std::adopt_lock);
    return run_on(inst.net, in);
  }

  // Runs on a given net (the pool is not involved): used for warm-up before the model is shared.
  Result<std::vector<Tensor>> run_on(cv::dnn::Net& net, const std::vector<Tensor>& in) {
    try {
      std::vector<cv::Mat> blobs;
      blobs.reserve(in.size());
      for (std::size_t i = 0; i < in.size(); ++i) {
        std::vector<int> dims(in[i].shape.begin(), in[i].shape.end());
        // The Mat borrows the request's bytes (read-only use by setInput, which copies).
        blobs.emplace_back(static_cast<int>(dims.size()), dims.data(), CV_32F,
                           const_cast<char*>(in[i].data.data()));
        net.setInput(blobs.back(), in.size() == 1 ? cv::String() : cv::String(inputs_[i].name));
      }
      std::vector<cv::Mat> outs;
      net.forward(outs, out_names_);
      if (outs.size() != out_names_.size()) {
        return fail(Errc::internal, "OpenCV returned " + std::to_string(outs.size()) +
                                        " outputs for " + std::to_string(out_names_.size()));
      }
      std::vector<Tensor> result;
      result.reserve(outs.size());
      for (std::size_t i = 0; i < outs.size(); ++i) {
        cv::Mat m = outs[i].isContinuous() ? outs[i] : outs[i].clone();
        if (m.depth() != CV_32F) {
          return fail(Errc::unsupported,
                      "output \"" + out_names_[i] + "\": OpenCV produced a non-float32 tensor");
        }
        Tensor t;
        t.name = out_names_[i];
        t.dtype = DType::float32;
        for (int d = 0; d < m.dims; ++d) t.shape.push_back(m.size[d]);
        t.data.assign(reinterpret_cast<const char*>(m.data), m.total() * m.elemSize());
        result.push_back(std::move(t));
      }
      return result;
    } catch (const cv::Exception& e) {
      return fail(Errc::internal, "OpenCV DNN: " + std::string(e.what()));
    } catch (const std::exception& e) {
      return fail(Errc::internal, std::string("OpenCV DNN: ") + e.what());
    }
  }

  std::vector<std::unique_ptr<Instance>>& pool() { return pool_; }
  void set_outputs(std::vector<TensorInfo> o) { outputs_ = std::move(o); }

 private:
  // A free instance (locked), or wait for the next one in round-robin order.
  Instance& acquire() {
    std::size_t start = next_.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t k = 0; k < pool_.size(); ++k) {
      Instance& inst = *pool_[(start + k) % pool_.size()];
      if (inst.mu.try_lock()) return inst;
    }
    Instance& inst = *pool_[start % pool_.size()];
    inst.mu.lock();
    return inst;
  }

  std::vector<TensorInfo> inputs_, outputs_;
  std::vector<cv::String> out_names_;
  std::vector<std::unique_ptr<Instance>> pool_;
  std::atomic<std::size_t> next_{0};
};

class OpenCvBackend final : public Backend {
 public:
  std::string_view name() const override { return "opencv-dnn"; }

  Result<std::unique_ptr<Model>> load(const ModelManifest& m, const std::filesystem::path& dir,
                                      const LoadOptions& options) override {
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
    auto info = read_onnx_info(bytes);
    if (!info) {
      return fail(Errc::parse, m.entry + ": not an ONNX model (no valid protobuf ModelProto)");
    }

    std::vector<std::unique_ptr<Instance>> pool;
    int n = std::max(1, options.pool_size);
    std::vector<cv::String> out_names;
    for (int i = 0; i < n; ++i) {
      auto inst = std::make_unique<Instance>();
      try {
        inst->net = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
        if (inst->net.empty()) {
          return fail(Errc::unsupported,
                      m.entry + ": OpenCV DNN read an empty network" + opset_note(info));
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
                                           first_line(e.what()) + opset_note(info));
      } catch (const std::exception& e) {
        return fail(Errc::unsupported, m.entry + ": OpenCV DNN cannot load it: " +
                                           std::string(e.what()) + opset_note(info));
      }
      pool.push_back(std::move(inst));
    }
    std::vector<TensorInfo> outputs;
    for (const auto& o : out_names) outputs.push_back({o, DType::float32, {}});
    auto model = std::make_unique<OpenCvModel>(inputs, outputs, out_names, std::move(pool));

    // Warm-up on zeros: proves every op runs and learns the output shapes.
    std::vector<Tensor> zeros;
    for (const auto& t : inputs) {
      zeros.push_back({t.name, t.dtype, t.shape, std::string(*byte_size(t.shape, t.dtype), '\0')});
    }
    int runs = std::max(1, options.warmup_runs);
    for (auto& inst : model->pool()) {
      for (int r = 0; r < runs; ++r) {
        auto out = model->run_on(inst->net, zeros);
        if (!out) {
          return fail(Errc::unsupported, m.entry + ": fails on a warm-up run: " +
                                             first_line(out.error().message()) + opset_note(info));
        }
        if (&inst == &model->pool().front() && r == 0) {
          for (std::size_t k = 0; k < out->size(); ++k) outputs[k].shape = (*out)[k].shape;
          for (std::size_t k = 0; k < m.outputs.size() && k < out->size(); ++k) {
            if (!m.outputs[k].shape.empty() &&
                !shape_matches(m.outputs[k].shape, outputs[k].shape)) {
              return fail(Errc::verification, "output \"" + m.outputs[k].name + "\" has shape [" +
                                                  format_shape(outputs[k].shape) +
                                                  "], model.json declares [" +
                                                  format_shape(m.outputs[k].shape) + "]");
            }
          }
        }
      }
    }
    model->set_outputs(std::move(outputs));
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

void set_engine_threads(int threads) {
  if (threads > 0) cv::setNumThreads(threads);
}

}  // namespace mota::runtime
