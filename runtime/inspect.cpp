#include "runtime/inspect.hpp"

#include <cstdio>

#include "common/fs.hpp"
#include "runtime/model_check.hpp"

namespace mota::runtime {

namespace {

Json shape_json(const std::optional<std::vector<OnnxDim>>& shape) {
  if (!shape) return nullptr;
  Json arr = Json::array();
  for (const auto& d : *shape) {
    if (d.fixed()) {
      arr.push_back(d.value);
    } else if (!d.param.empty()) {
      arr.push_back(d.param);
    } else {
      arr.push_back(nullptr);
    }
  }
  return arr;
}

Json values_json(const std::vector<OnnxValue>& values) {
  Json arr = Json::array();
  for (const auto& v : values) {
    arr.push_back({{"name", v.name},
                   {"dtype", v.tensor ? onnx_dtype_name(v.elem_type) : "non-tensor"},
                   {"shape", shape_json(v.shape)}});
  }
  return arr;
}

std::string values_text(const std::vector<OnnxValue>& values) {
  std::size_t width = 0;
  for (const auto& v : values) width = std::max(width, v.name.size());
  std::string s;
  for (const auto& v : values) {
    s += "  " + v.name + std::string(width - v.name.size() + 2, ' ') +
         (v.tensor ? onnx_dtype_name(v.elem_type) : std::string("non-tensor")) + " " +
         format_onnx_shape(v.shape) + "\n";
  }
  return s.empty() ? "  (none)\n" : s;
}

std::string domain_name(const std::string& d) {
  return d.empty() ? "ai.onnx" : d;
}

}  // namespace

Result<InspectReport> inspect_model(const std::filesystem::path& model) {
  InspectReport rep;
  std::error_code ec;
  std::optional<ModelManifest> manifest;
  if (std::filesystem::is_directory(model, ec)) {
    const auto mj = model / kManifestName;
    const std::string text = MOTA_TRY(fs::read_file(mj, kMaxManifestBytes));
    manifest = MOTA_TRY_CTX(ModelManifest::parse(text, /*require_files=*/false), mj.string());
    if (manifest->framework != "onnx") {
      return fail(Errc::unsupported, mj.string() + ": framework \"" + manifest->framework +
                                         "\": inspect reads ONNX models only");
    }
    rep.manifest = mj;
    rep.model_file = model / manifest->entry;
  } else {
    rep.model_file = model;
  }
  rep.graph = MOTA_TRY_CTX(read_onnx_file(rep.model_file), rep.model_file.string());
  rep.refusals = check_backend_limits(rep.graph);
  if (manifest) {
    rep.io_problems = compare_manifest_io(*manifest, rep.graph);
    rep.skeleton = manifest_skeleton(rep.graph, manifest->name, manifest->entry);
  } else {
    rep.skeleton = manifest_skeleton(rep.graph, rep.model_file.stem().string(),
                                     rep.model_file.filename().string());
  }
  return rep;
}

Json InspectReport::to_json() const {
  Json opsets = Json::array();
  for (const auto& o : graph.opsets) {
    opsets.push_back({{"domain", domain_name(o.domain)}, {"version", o.version}});
  }
  Json ops = Json::object();
  for (const auto& [name, count] : graph.operator_counts()) ops[name] = count;
  Json refused = Json::array();
  for (const auto& h : refusals) refused.push_back({{"what", h.what}, {"reason", h.reason}});
  Json j = {
      {"ok", ok()},
      {"model", model_file.string()},
      {"ir_version", graph.ir_version},
      {"producer", {{"name", graph.producer_name}, {"version", graph.producer_version}}},
      {"opsets", opsets},
      {"inputs", values_json(graph.inputs)},
      {"outputs", values_json(graph.outputs)},
      {"nodes", graph.nodes.size()},
      {"subgraphs", graph.subgraphs},
      {"operators", ops},
      {"initializers", graph.initializers.size()},
      {"external_initializers", graph.external_initializers},
      {"backend",
       {{"name", std::string(kBundledBackend)}, {"ok", refusals.empty()}, {"refusals", refused}}},
      {"skeleton", skeleton}};
  if (manifest) {
    j["manifest"] = {
        {"path", manifest->string()}, {"ok", io_problems.empty()}, {"problems", io_problems}};
  } else {
    j["manifest"] = nullptr;
  }
  return j;
}

std::string InspectReport::to_text() const {
  std::string s = model_file.string() + ": ONNX IR version " + std::to_string(graph.ir_version);
  if (!graph.producer_name.empty()) {
    s += ", made by " + graph.producer_name +
         (graph.producer_version.empty() ? "" : " " + graph.producer_version);
  }
  s += "\nopsets:";
  for (const auto& o : graph.opsets) {
    s += " " + domain_name(o.domain) + " " + std::to_string(o.version);
  }
  if (graph.opsets.empty()) s += " (none)";
  s += "\ninputs:\n" + values_text(graph.inputs) + "outputs:\n" + values_text(graph.outputs);
  s += "operators (" + std::to_string(graph.nodes.size()) + " nodes";
  if (graph.subgraphs) s += ", " + std::to_string(graph.subgraphs) + " subgraphs included";
  s += "):";
  bool first = true;
  for (const auto& [name, count] : graph.operator_counts()) {
    s += std::string(first ? " " : ", ") + name + " " + std::to_string(count);
    first = false;
  }
  s += "\ninitializers: " + std::to_string(graph.initializers.size());
  if (graph.external_initializers) {
    s += " (" + std::to_string(graph.external_initializers) + " with external data)";
  }
  s += "\n";
  if (refusals.empty()) {
    s += "backend (" + std::string(kBundledBackend) + "): nothing known to fail\n";
  } else {
    s +=
        "backend (" + std::string(kBundledBackend) + "): REFUSED, known to get this model wrong:\n";
    for (const auto& h : refusals) s += "  - " + h.message() + "\n";
  }
  if (manifest) {
    if (io_problems.empty()) {
      s += "model.json: inputs and outputs match the graph\n";
    } else {
      s += "model.json: DIFFERS from the graph:\n";
      for (const auto& p : io_problems) s += "  - " + p + "\n";
    }
  }
  s += "model.json skeleton (edit before publishing):\n" + skeleton.dump(2) + "\n";
  return s;
}

}  // namespace mota::runtime
