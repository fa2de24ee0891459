#pragma once
// `mota-runtime inspect MODEL`: what an ONNX model is and whether the bundled backend can be
// trusted with it, without loading it. MODEL is an .onnx file or a model directory (model.json
// names the entry; its inputs and outputs are then compared with the graph's). Reads the graph in
// place (runtime/onnx_info.hpp), so it is cheap on a model of any size.
// Thread-safety: pure functions.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "manifest/canonical_json.hpp"
#include "runtime/onnx_info.hpp"
#include "runtime/onnx_limits.hpp"

namespace mota::runtime {

struct InspectReport {
  std::filesystem::path model_file;               // the .onnx read
  std::optional<std::filesystem::path> manifest;  // model.json, when MODEL is a directory
  OnnxModel graph;
  std::vector<LimitHit> refusals;        // what the bundled backend is known to get wrong
  std::vector<std::string> io_problems;  // model.json vs the graph (runtime/model_check.hpp)
  Json skeleton;                         // a model.json for the graph, to edit

  // Nothing refused and (with a model.json) nothing differs: what `mota release add` would pass
  // statically.
  bool ok() const { return refusals.empty() && io_problems.empty(); }
  Json to_json() const;
  std::string to_text() const;
};

// Errors: the file or model.json unreadable (Errc::io / not_found / parse), a framework other
// than "onnx" in model.json (Errc::unsupported), bytes that are not an ONNX model (Errc::parse,
// with the byte offset), a reader limit exceeded (Errc::too_large).
Result<InspectReport> inspect_model(const std::filesystem::path& model);

}  // namespace mota::runtime
