#pragma once
// What `mota release add` checks about a model before it publishes it (docs/runtime.md, "Checks
// at publish"). For framework "onnx":
//   1. graph   the entry file parses as an ONNX model (runtime/onnx_info.hpp);
//   2. io      model.json's inputs and outputs are the graph's: names, dtypes, shapes
//              (runtime/model_check.hpp);
//   3. limits  nothing the bundled backend is known to get wrong (runtime/onnx_limits.hpp);
//   4. load    where mota-runtime is found (or given), the model is loaded and run once on zeros in
//              a separate process (`mota-runtime probe --json --runs 1`), so a crash takes down
//              only that process; the outputs it produced are checked against model.json.
//              Skipped with --no-load-check; when mota-runtime is not found the release goes on
//              with a warning (a publish host need not have OpenCV), which the result carries.
// Any failure refuses the release (Errc::verification) with the reason. Other frameworks
// ("tflite", "gguf", "tensorrt", "other") get no checks, and the result says so.
// Thread-safety: free functions; no shared state.

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/model_manifest.hpp"

namespace mota::manager {

struct ReleaseChecks {
  bool load = true;               // --no-load-check: false (the static checks always run)
  std::filesystem::path runtime;  // mota-runtime for the load check; empty: find_runtime_binary()
  std::chrono::seconds timeout{600};  // for the load check's process (load included)
};

// What was checked, for the CLI's output.
struct CheckReport {
  std::string framework;
  bool onnx = false;  // the ONNX checks ran (framework "onnx")
  std::string graph;  // "model.onnx: ONNX IR version 4, opset 9, 217 nodes, made by pytorch 1.2"
  std::size_t inputs = 0, outputs = 0;
  enum class Load { not_applicable, passed, skipped_by_flag, skipped_no_runtime };
  Load load = Load::not_applicable;
  std::string runtime;  // the mota-runtime binary that ran the load check
  double load_ms = 0;   // what the probe reported
  std::vector<std::string> warnings;

  Json to_json() const;
  std::vector<std::string> lines() const;  // one per check, for people
};

// Checks 1-3 on `model_dir` (whose model.json is `manifest`). Errc::verification with the reason;
// Errc::io / not_found when the entry file cannot be opened.
Status check_model_static(const std::filesystem::path& model_dir, const ModelManifest& manifest,
                          CheckReport& report);

// Check 4 on `slot`, a staged copy of the model whose model.json has a name and a version and no
// health section (the run is on zeros). `runtime` must be executable. Errc::verification with
// mota-runtime's reason (`shown_dir` replaces `slot` in it: the publisher's directory, not the
// scratch copy).
Status check_model_load(const std::filesystem::path& runtime, const std::filesystem::path& slot,
                        const std::filesystem::path& shown_dir, const ModelManifest& manifest,
                        std::chrono::seconds timeout, CheckReport& report);

}  // namespace mota::manager
