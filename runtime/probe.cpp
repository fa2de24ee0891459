#include "runtime/probe.hpp"

#include <algorithm>
#include <chrono>

#include "common/fs.hpp"

namespace mota::runtime {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kMaxHealthBytes = std::uint64_t{1} << 30;

struct Loaded {
  ModelManifest manifest;
  std::unique_ptr<Model> model;
};

std::vector<TensorInfo> declared_inputs(const Model& model) {
  return model.inputs();
}

// Orders outputs as health.expected_output lays them out (model.json "outputs" order; the
// backend already returns them in that order when model.json lists them).
std::string concat_outputs(const std::vector<Tensor>& outs) {
  return join_raw(outs);
}

}  // namespace

Json ProbeReport::to_json() const {
  Json j = {{"ok", ok},
            {"step", step},
            {"reason", reason},
            {"name", name},
            {"version", version},
            {"has_health", has_health},
            {"load_ms", load_ms},
            {"latency_ms", latency_ms},
            {"latency_budget_ms", latency_budget_ms},
            {"tolerance", tolerance}};
  Json outs = Json::array();
  for (const auto& o : outputs) {
    outs.push_back({{"name", o.name}, {"dtype", dtype_name(o.dtype)}, {"shape", o.shape}});
  }
  j["outputs"] = outs;
  if (max_abs_diff >= 0) {
    j["max_abs_diff"] = max_abs_diff;
  } else {
    j["max_abs_diff"] = nullptr;
  }
  return j;
}

int ProbeReport::exit_code() const {
  if (ok) return 0;
  static const std::pair<const char*, int> kCodes[] = {{"manifest", 3}, {"load", 4}, {"input", 5},
                                                       {"run", 6},      {"nan", 7},  {"output", 8},
                                                       {"latency", 9}};
  for (const auto& [s, c] : kCodes) {
    if (step == s) return c;
  }
  return 1;
}

ProbeReport probe(const std::filesystem::path& slot, const ProbeOptions& options) {
  ProbeReport rep;
  auto failed = [&](std::string step, std::string reason) {
    rep.ok = false;
    rep.step = std::move(step);
    rep.reason = std::move(reason);
    return rep;
  };
  auto manifest = read_slot_manifest(slot);
  if (!manifest) return failed("manifest", manifest.error().message());
  rep.name = manifest->name;
  rep.version = manifest->version;
  rep.has_health = manifest->health.has_value();
  if (manifest->health) {
    rep.latency_budget_ms = manifest->health->latency_budget_ms;
    rep.tolerance = manifest->health->tolerance;
  }

  auto start = Clock::now();
  auto backend = backend_for(manifest->framework);
  if (!backend) return failed("load", backend.error().message());
  auto model = (*backend)->load(*manifest, slot, options.load);
  if (!model) return failed("load", model.error().message());
  rep.load_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();

  // Inputs: the health input cut to the declared inputs, or zeros without a health section.
  std::vector<Tensor> inputs;
  auto specs = declared_inputs(**model);
  if (manifest->health) {
    auto path = slot / manifest->health->input;
    auto bytes = fs::read_file(path, kMaxHealthBytes);
    if (!bytes) return failed("input", bytes.error().message());
    auto split = split_raw(*bytes, specs);
    if (!split) return failed("input", manifest->health->input + ": " + split.error().message());
    inputs = std::move(*split);
  } else {
    for (const auto& s : specs) {
      auto n = byte_size(s.shape, s.dtype);
      if (!n) return failed("input", n.error().message());
      inputs.push_back({s.name, s.dtype, s.shape, std::string(*n, '\0')});
    }
  }

  int runs = std::max(1, options.runs);
  std::vector<double> times;
  std::vector<Tensor> first;
  for (int r = 0; r < runs; ++r) {
    auto t0 = Clock::now();
    auto out = (*model)->run(inputs);
    times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (!out) return failed("run", out.error().message());
    for (const auto& t : *out) {
      if (!all_finite(t)) {
        return failed("nan", "output \"" + t.name + "\" holds NaN or Inf");
      }
    }
    if (r == 0) {
      for (const auto& t : *out) rep.outputs.push_back({t.name, t.dtype, t.shape});
      first = std::move(*out);
    }
  }
  std::sort(times.begin(), times.end());
  rep.latency_ms = times[times.size() / 2];

  if (manifest->health && !manifest->health->expected_output.empty()) {
    auto path = slot / manifest->health->expected_output;
    auto expected = fs::read_file(path, kMaxHealthBytes);
    if (!expected) return failed("output", expected.error().message());
    std::string actual = concat_outputs(first);
    if (expected->size() != actual.size()) {
      return failed("output", manifest->health->expected_output + " has " +
                                  std::to_string(expected->size()) + " bytes, the model produced " +
                                  std::to_string(actual.size()));
    }
    bool all_float = std::all_of(first.begin(), first.end(),
                                 [](const Tensor& t) { return t.dtype == DType::float32; });
    if (!all_float) {
      if (*expected != actual) {
        return failed("output", "output differs from " + manifest->health->expected_output);
      }
      rep.max_abs_diff = 0;
    } else {
      auto diff = max_abs_diff(actual, *expected);
      if (!diff) {
        return failed("output", manifest->health->expected_output + " holds NaN or Inf");
      }
      rep.max_abs_diff = *diff;
      if (*diff > manifest->health->tolerance) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "output differs from %s by up to %.6g (tolerance %.6g)",
                      manifest->health->expected_output.c_str(), *diff,
                      manifest->health->tolerance);
        return failed("output", buf);
      }
    }
  }
  if (manifest->health && rep.latency_ms > manifest->health->latency_budget_ms) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "median latency %.3f ms over %d runs exceeds the budget %.3f ms",
                  rep.latency_ms, runs, manifest->health->latency_budget_ms);
    return failed("latency", buf);
  }
  rep.ok = true;
  return rep;
}

Result<std::string> run_raw(const std::filesystem::path& slot, const std::string& input) {
  auto manifest = MOTA_TRY(read_slot_manifest(slot));
  auto backend = MOTA_TRY(backend_for(manifest.framework));
  auto model = MOTA_TRY(backend->load(manifest, slot, LoadOptions{.pool_size = 1}));
  auto inputs = MOTA_TRY_CTX(split_raw(input, model->inputs()), "input");
  auto out = MOTA_TRY(model->run(inputs));
  return concat_outputs(out);
}

}  // namespace mota::runtime
