#include "runtime/model_check.hpp"

#include <algorithm>

namespace mota::runtime {

namespace {

std::string declared_shape(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

bool shape_agrees(const std::vector<std::int64_t>& declared,
                  const std::optional<std::vector<OnnxDim>>& graph) {
  if (!graph) return true;
  if (declared.size() != graph->size()) return false;
  for (std::size_t i = 0; i < declared.size(); ++i) {
    const auto& g = (*graph)[i];
    if (declared[i] >= 0 && g.fixed() && declared[i] != g.value) return false;
  }
  return true;
}

std::string names_of(const std::vector<OnnxValue>& values) {
  std::string s;
  for (const auto& v : values) s += (s.empty() ? "'" : ", '") + v.name + "'";
  return s.empty() ? "none" : s;
}

void compare(const char* kind, const std::vector<TensorSpec>& declared,
             const std::vector<OnnxValue>& graph, std::vector<std::string>& out) {
  const std::string k = kind;
  if (declared.empty()) {
    out.push_back("model.json declares no " + k + "s; the graph has " + names_of(graph) +
                  " (mota-runtime inspect prints them for model.json)");
    return;
  }
  for (const auto& d : declared) {
    auto it = std::find_if(graph.begin(), graph.end(),
                           [&](const OnnxValue& v) { return v.name == d.name; });
    if (it == graph.end()) {
      out.push_back("model.json " + k + " '" + d.name + "' is not an " + k +
                    " of the graph (the graph's " + k + "s: " + names_of(graph) + ")");
      continue;
    }
    if (!it->tensor) {
      out.push_back("the graph's " + k + " '" + d.name + "' is not a tensor");
      continue;
    }
    const std::string dtype = onnx_dtype_name(it->elem_type);
    if (dtype != d.dtype) {
      out.push_back("model.json " + k + " '" + d.name + "' is " + d.dtype + ", the graph says " +
                    dtype);
    }
    if (!shape_agrees(d.shape, it->shape)) {
      out.push_back("model.json " + k + " '" + d.name + "' has shape " + declared_shape(d.shape) +
                    ", the graph says " + format_onnx_shape(it->shape));
    }
  }
  for (const auto& v : graph) {
    bool listed = std::any_of(declared.begin(), declared.end(),
                              [&](const TensorSpec& d) { return d.name == v.name; });
    if (!listed) {
      out.push_back("the graph's " + k + " '" + v.name + "' (" + onnx_dtype_name(v.elem_type) +
                    " " + format_onnx_shape(v.shape) + ") is not declared in model.json");
    }
  }
}

Json values_json(const std::vector<OnnxValue>& values) {
  Json arr = Json::array();
  for (const auto& v : values) {
    Json shape = Json::array();
    if (v.shape) {
      for (const auto& d : *v.shape) shape.push_back(d.fixed() ? d.value : -1);
    }
    arr.push_back({{"name", v.name}, {"dtype", onnx_dtype_name(v.elem_type)}, {"shape", shape}});
  }
  return arr;
}

}  // namespace

std::vector<std::string> compare_manifest_io(const ModelManifest& manifest,
                                             const OnnxModel& graph) {
  std::vector<std::string> out;
  compare("input", manifest.inputs, graph.inputs, out);
  compare("output", manifest.outputs, graph.outputs, out);
  return out;
}

Json manifest_skeleton(const OnnxModel& graph, const std::string& name, const std::string& entry) {
  std::string n;
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    n += ok ? c : '-';
  }
  while (!n.empty() && !((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= '0' && n[0] <= '9'))) {
    n.erase(0, 1);
  }
  if (n.size() > 64) n.resize(64);
  if (n.empty()) n = "model";
  return Json{{"name", n},
              {"framework", "onnx"},
              {"entry", entry},
              {"inputs", values_json(graph.inputs)},
              {"outputs", values_json(graph.outputs)}};
}

}  // namespace mota::runtime
