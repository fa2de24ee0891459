#pragma once
// The health probe: loads a slot with the same backend the runtime uses and runs the package's
// health section (manifest/model_manifest.hpp, HealthSpec) against it. The agent runs it as a
// separate process (`mota-runtime probe SLOT`), so a model that crashes the engine crashes only
// the probe.
//
// Health files: health.input holds the model's inputs (model.json "inputs", in order, each with
// its declared shape and dtype) as raw little-endian bytes, concatenated. health.expected_output
// holds the outputs in model.json "outputs" order (every output the engine reports when
// model.json lists none), concatenated. `mota-runtime run` writes that file.
//
// Checks, in order (the first failure is reported):
//   manifest  model.json unreadable or without name/version
//   load      the backend refuses or fails to load the model (incl. warm-up run)
//   input     health.input missing or not the size of the declared inputs
//   run       the engine fails on the health input
//   nan       an output holds NaN or Inf
//   output    an output differs from health.expected_output by more than health.tolerance
//             (absolute, per element) or has another size
//   latency   the median of `runs` timed inferences exceeds health.latency_budget_ms
// Without a health section only manifest, load, run on zeros and nan are checked.

#include <filesystem>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "manifest/model_manifest.hpp"
#include "runtime/backend.hpp"

namespace mota::runtime {

struct ProbeOptions {
  int runs = 3;  // timed inferences after the warm-up
  LoadOptions load{.pool_size = 1, .warmup_runs = 1};
};

struct ProbeReport {
  bool ok = false;
  std::string step;    // "" when ok, else the failing check's name (see above)
  std::string reason;  // why it failed, one line
  std::string name, version;
  bool has_health = false;
  double load_ms = 0;
  double latency_ms = 0;         // median of the timed runs (0 if not reached)
  double latency_budget_ms = 0;  // 0 without a health section
  double max_abs_diff = -1;      // -1: not compared
  double tolerance = 0;
  // What the engine produced on the first run (name, dtype, shape), once the run step is reached:
  // `mota release add` checks it against model.json.
  std::vector<TensorInfo> outputs;

  Json to_json() const;
  // Exit status of `mota-runtime probe`: 0 ok, 3 manifest, 4 load, 5 input, 6 run, 7 nan,
  // 8 output, 9 latency. (1 and 2 stay with "error" and "usage" as in every mota binary.)
  int exit_code() const;
};

ProbeReport probe(const std::filesystem::path& slot, const ProbeOptions& options = {});

// Runs the model in `slot` once on `input` (raw inputs as for health.input) and returns the
// outputs concatenated in health.expected_output order: what a publisher records as the expected
// output (`mota-runtime run`, `mota release add --health-input`).
Result<std::string> run_raw(const std::filesystem::path& slot, const std::string& input);

}  // namespace mota::runtime
