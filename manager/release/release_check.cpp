#include "manager/release/release_check.hpp"

#include "common/process.hpp"
#include "manifest/json.hpp"
#include "runtime/model_check.hpp"
#include "runtime/onnx_info.hpp"
#include "runtime/onnx_limits.hpp"

namespace mota::manager {

namespace {

std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : sep) + p;
  return s;
}

std::string shape_text(const Json& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += shape[i].dump();
  }
  return s + "]";
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  return shape_text(Json(shape));
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (auto pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
}

// The last non-empty line of a child's stderr without mota-runtime's prefix.
std::string last_line(std::string err) {
  while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
  const auto nl = err.rfind('\n');
  if (nl != std::string::npos) err = err.substr(nl + 1);
  for (const char* prefix : {"mota-runtime: error: ", "mota-runtime: "}) {
    if (err.rfind(prefix, 0) == 0) return err.substr(std::string_view(prefix).size());
  }
  return err;
}

}  // namespace

Status check_model_static(const std::filesystem::path& model_dir, const ModelManifest& manifest,
                          CheckReport& report) {
  report.framework = manifest.framework;
  if (manifest.framework != "onnx") return {};
  report.onnx = true;
  const auto file = model_dir / manifest.entry;
  auto graph = runtime::read_onnx_file(file);
  if (!graph) {
    const Errc code = graph.error().code() == Errc::parse || graph.error().code() == Errc::too_large
                          ? Errc::verification
                          : graph.error().code();
    return fail(code, "model check: " + manifest.entry + ": " + graph.error().message());
  }
  const auto opset = graph->opset("");
  report.graph = manifest.entry + ": ONNX IR version " + std::to_string(graph->ir_version) +
                 (opset ? ", opset " + std::to_string(*opset) : std::string(", no opset")) + ", " +
                 std::to_string(graph->nodes.size()) + " nodes";
  if (!graph->producer_name.empty()) {
    report.graph += ", made by " + graph->producer_name +
                    (graph->producer_version.empty() ? "" : " " + graph->producer_version);
  }
  const auto problems = runtime::compare_manifest_io(manifest, *graph);
  if (!problems.empty()) {
    return fail(Errc::verification, "model check: model.json does not match " + manifest.entry +
                                        ": " + join(problems, "; "));
  }
  report.inputs = manifest.inputs.size();
  report.outputs = manifest.outputs.size();
  const auto hits = runtime::check_backend_limits(*graph);
  if (!hits.empty()) {
    return fail(Errc::verification,
                "model check: " + manifest.entry + ": " + runtime::describe_limit_hits(hits));
  }
  return {};
}

Status check_model_load(const std::filesystem::path& runtime, const std::filesystem::path& slot,
                        const std::filesystem::path& shown_dir, const ModelManifest& manifest,
                        std::chrono::seconds timeout, CheckReport& report) {
  const auto run =
      MOTA_TRY_CTX(run_child({runtime.string(), "probe", slot.string(), "--json", "--runs", "1"},
                             {}, std::chrono::duration_cast<std::chrono::milliseconds>(timeout)),
                   "load check: " + runtime.string());
  auto refused = [&](std::string reason) {
    replace_all(reason, slot.string(), shown_dir.string());
    return fail(Errc::verification, "load check: " + reason);
  };
  if (run.timed_out) {
    return refused("mota-runtime probe gave no verdict within " + std::to_string(timeout.count()) +
                   " s (the model did not load and run once in that time)");
  }
  if (run.signal) {
    return refused("mota-runtime probe was killed by signal " + std::to_string(run.signal) +
                   " while loading or running the model (the engine crashed on it)");
  }
  auto doc = parse_json(run.out);
  if (!doc || !doc->is_object() || !doc->contains("ok")) {
    return refused("mota-runtime probe exited with " + std::to_string(run.exit_code) + ": " +
                   last_line(run.err));
  }
  const Json& rep = *doc;
  if (run.exit_code != 0 || !json_get_or(rep, "ok", false)) {
    return refused("the model fails at " + json_get_or<std::string>(rep, "step", "?") + ": " +
                   json_get_or<std::string>(rep, "reason", "no reason given"));
  }
  report.load_ms = json_get_or(rep, "load_ms", 0.0);
  const Json outs = rep.contains("outputs") ? rep["outputs"] : Json::array();
  for (const auto& want : manifest.outputs) {
    const Json* got = nullptr;
    for (const auto& o : outs) {
      if (json_get_or<std::string>(o, "name", "") == want.name) got = &o;
    }
    if (!got) return refused("mota-runtime produced no output '" + want.name + "'");
    const std::string dtype = json_get_or<std::string>(*got, "dtype", "?");
    if (dtype != want.dtype) {
      return refused("model.json output '" + want.name + "' is " + want.dtype +
                     ", mota-runtime produces " + dtype);
    }
    const Json shape = got->contains("shape") ? (*got)["shape"] : Json::array();
    bool same = shape.is_array() && shape.size() == want.shape.size();
    for (std::size_t i = 0; same && i < want.shape.size(); ++i) {
      same = want.shape[i] < 0 || (shape[i].is_number_integer() && shape[i] == want.shape[i]);
    }
    if (!same) {
      return refused("model.json output '" + want.name + "' has shape " + shape_text(want.shape) +
                     ", mota-runtime produces " + shape_text(shape));
    }
  }
  report.load = CheckReport::Load::passed;
  report.runtime = runtime.string();
  return {};
}

Json CheckReport::to_json() const {
  Json j = {{"framework", framework}, {"onnx", onnx}};
  if (!onnx) {
    j["note"] = "no checks for framework \"" + framework + "\": only ONNX models are checked";
    return j;
  }
  j["graph"] = graph;
  j["io"] = {{"inputs", inputs}, {"outputs", outputs}, {"match", true}};
  j["limits"] = {{"backend", std::string(runtime::kBundledBackend)}, {"refused", false}};
  Json load_j;
  switch (load) {
    case Load::passed:
      load_j = {{"status", "passed"}, {"runtime", runtime}, {"load_ms", load_ms}};
      break;
    case Load::skipped_by_flag:
      load_j = {{"status", "skipped"}, {"reason", "--no-load-check"}};
      break;
    case Load::skipped_no_runtime:
      load_j = {
          {"status", "skipped"},
          {"reason", warnings.empty() ? std::string("mota-runtime not found") : warnings.front()}};
      break;
    case Load::not_applicable:
      load_j = {{"status", "not run"}};
      break;
  }
  j["load"] = load_j;
  j["warnings"] = warnings;
  return j;
}

std::vector<std::string> CheckReport::lines() const {
  if (!onnx) {
    return {"checks: none for framework \"" + framework + "\" (only ONNX models are checked)"};
  }
  std::vector<std::string> out = {"checked: " + graph,
                                  "checked: model.json's " + std::to_string(inputs) +
                                      " input(s) and " + std::to_string(outputs) +
                                      " output(s) match the graph",
                                  "checked: nothing " + std::string(runtime::kBundledBackend) +
                                      " is known to get wrong (docs/runtime.md)"};
  char ms[32];
  std::snprintf(ms, sizeof ms, "%.0f", load_ms);
  switch (load) {
    case Load::passed:
      out.push_back("checked: loaded and ran once with " + runtime + " (load " + ms +
                    " ms); outputs as model.json declares");
      break;
    case Load::skipped_by_flag:
      out.push_back("load check: skipped (--no-load-check)");
      break;
    case Load::skipped_no_runtime:
    case Load::not_applicable:
      break;
  }
  for (const auto& w : warnings) out.push_back("warning: " + w);
  return out;
}

}  // namespace mota::manager
