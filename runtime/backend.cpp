#include "runtime/backend.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>

#include "common/fs.hpp"

namespace mota::runtime {

Result<std::unique_ptr<Backend>> backend_for(std::string_view framework) {
  if (framework == "onnx") return make_opencv_backend();
  return fail(Errc::unsupported, "framework \"" + std::string(framework) +
                                     "\" has no backend in this mota-runtime (supported: onnx)");
}

Result<ModelManifest> read_slot_manifest(const std::filesystem::path& dir) {
  auto path = dir / kManifestName;
  auto text = MOTA_TRY_CTX(fs::read_file(path, kMaxManifestBytes), path.string());
  auto m = MOTA_TRY_CTX(ModelManifest::parse(text, /*require_files=*/false), path.string());
  if (m.name.empty()) return fail(Errc::parse, path.string() + ": name: required");
  if (m.version.empty()) return fail(Errc::parse, path.string() + ": version: required");
  return m;
}

namespace {

// The serving gate (see ServingScope). `waiting` is set before a loader checks `busy` and
// `busy` is dropped before the last request checks `waiting` (both seq_cst), so a loader either
// sees no request or is woken by the one that ends: no lost wake-up.
struct Gate {
  std::atomic<int> busy{0};
  std::atomic<int> waiting{0};
  std::mutex mu;
  std::condition_variable cv;
};
Gate& gate() {
  static Gate g;
  return g;
}

thread_local std::chrono::nanoseconds t_yield_budget{0};
thread_local std::chrono::nanoseconds t_yield_waited{0};
thread_local std::uint64_t t_yield_steps = 0;

}  // namespace

ServingScope::ServingScope() {
  gate().busy.fetch_add(1);
}

ServingScope::~ServingScope() {
  Gate& g = gate();
  if (g.busy.fetch_sub(1) == 1 && g.waiting.load() > 0) {
    std::lock_guard lock(g.mu);
    g.cv.notify_all();
  }
}

LoadYieldScope::LoadYieldScope(std::chrono::milliseconds budget)
    : saved_budget_(t_yield_budget), saved_waited_(t_yield_waited), saved_steps_(t_yield_steps) {
  t_yield_budget = budget;
  t_yield_waited = {};
  t_yield_steps = 0;
}

LoadYieldScope::~LoadYieldScope() {
  t_yield_budget = saved_budget_;
  t_yield_waited = saved_waited_;
  t_yield_steps = saved_steps_;
}

std::chrono::nanoseconds LoadYieldScope::waited() const {
  return t_yield_waited;
}

std::uint64_t LoadYieldScope::steps() const {
  return t_yield_steps;
}

void yield_to_serving() {
  ++t_yield_steps;
  if (t_yield_waited >= t_yield_budget) return;
  Gate& g = gate();
  if (g.busy.load() == 0) return;
  auto start = std::chrono::steady_clock::now();
  g.waiting.fetch_add(1);
  {
    std::unique_lock lock(g.mu);
    g.cv.wait_for(lock, t_yield_budget - t_yield_waited, [&] { return g.busy.load() == 0; });
  }
  g.waiting.fetch_sub(1);
  t_yield_waited += std::chrono::steady_clock::now() - start;
}

int serving_in_flight() {
  return gate().busy.load();
}

}  // namespace mota::runtime

namespace mota::runtime {

std::vector<Tensor> OutputBuffer::tensors() const {
  std::vector<Tensor> out;
  out.reserve(infos.size());
  for (std::size_t i = 0; i < infos.size(); ++i) {
    out.push_back({infos[i].name, infos[i].dtype, infos[i].shape, std::string(data(i))});
  }
  return out;
}

Result<std::vector<Tensor>> Model::run(const std::vector<Tensor>& inputs) {
  std::vector<TensorView> views;
  views.reserve(inputs.size());
  for (const auto& t : inputs) views.push_back(TensorView::of(t));
  OutputBuffer out;
  MOTA_TRY(run_into(views, out));
  return out.tensors();
}

Status check_inputs(const std::vector<TensorInfo>& want, std::span<const TensorView> got) {
  if (got.size() != want.size()) {
    return fail(Errc::invalid_argument, "model takes " + std::to_string(want.size()) +
                                            " input(s), got " + std::to_string(got.size()));
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& w = want[i];
    const auto& g = got[i];
    if (!g.name.empty() && g.name != w.name) {
      return fail(Errc::invalid_argument, "input " + std::to_string(i) + " is \"" + w.name +
                                              "\", got \"" + std::string(g.name) + "\"");
    }
    bool same_shape = std::equal(g.shape.begin(), g.shape.end(), w.shape.begin(), w.shape.end());
    if (g.dtype != w.dtype || !same_shape) {
      Shape gs(g.shape.begin(), g.shape.end());
      return fail(Errc::invalid_argument,
                  "input \"" + w.name + "\" must be " + std::string(dtype_name(w.dtype)) + " [" +
                      format_shape(w.shape) + "], got " + std::string(dtype_name(g.dtype)) + " [" +
                      format_shape(gs) + "]");
    }
    auto n = byte_size(w.shape, w.dtype);
    if (!n || g.data.size() != *n) {
      return fail(Errc::invalid_argument, "input \"" + w.name + "\" has " +
                                              std::to_string(g.data.size()) + " bytes, needs " +
                                              (n ? std::to_string(*n) : std::string("?")));
    }
  }
  return {};
}

}  // namespace mota::runtime
