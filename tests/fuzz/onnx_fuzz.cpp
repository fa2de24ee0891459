// libFuzzer harness for the ONNX graph reader (runtime/onnx_info.hpp) and what consumes its
// result: the bundled backend's limits check, the model.json comparison and the skeleton. The
// input is an untrusted .onnx file. Any crash, sanitizer report, leak, hang or unbounded
// allocation is a bug; errors are fine. Built with -DMOTA_FUZZ=ON and clang; run with
// `FUZZ_TARGET=onnx scripts/fuzz`. With MOTA_FUZZ_SEEDS=<dir> set, initialisation writes
// hand-built models (shapes, initializers, attributes, subgraphs, external data) into <dir>.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "manifest/model_manifest.hpp"
#include "runtime/model_check.hpp"
#include "runtime/onnx_info.hpp"
#include "runtime/onnx_limits.hpp"
#include "tests/support/onnx_builder.hpp"

namespace {

namespace onnx = mota::test::onnx;
namespace stdfs = std::filesystem;

void write_seed(const stdfs::path& dir, const std::string& name, const std::string& bytes) {
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

void write_seeds(const stdfs::path& dir) {
  write_seed(dir, "relu", onnx::unary("Relu", {1, 4}).bytes());

  // A small conv net: weights as initializers, listed as inputs too (IR 4, as old exports do).
  onnx::Model conv;
  conv.ir_version = 4;
  conv.opsets = {{"", 9}};
  conv.graph.inputs = {onnx::value("input", {1, 3, 8, 8}), onnx::value("w", {4, 3, 3, 3}),
                       onnx::value("b", {4})};
  conv.graph.outputs = {onnx::value("scores", {1, 4, 8, 8}), onnx::value("flat", {1, 256})};
  conv.graph.initializers = {onnx::floats("w", {4, 3, 3, 3}, std::vector<float>(108, 0.5f)),
                             onnx::floats("b", {4}, {1, 2, 3, 4}),
                             onnx::int64s("shape", {2}, {1, -1})};
  conv.graph.nodes = {onnx::node("Conv", {"input", "w", "b"}, {"c"},
                                 {onnx::attr("kernel_shape", std::vector<std::int64_t>{3, 3}),
                                  onnx::attr("pads", std::vector<std::int64_t>{1, 1, 1, 1})}),
                      onnx::node("Relu", {"c"}, {"scores"}),
                      onnx::node("Reshape", {"scores", "shape"}, {"flat"})};
  write_seed(dir, "conv", conv.bytes());

  // Symbolic dimensions, other element types, another domain, omitted inputs, a Constant.
  onnx::Model mixed;
  mixed.opsets = {{"", 18}, {"com.microsoft", 1}};
  mixed.graph.inputs = {onnx::value("x", {"batch", 3, onnx::Dim::unknown()}),
                        onnx::value("ids", {"batch"}, onnx::kInt64)};
  mixed.graph.outputs = {onnx::value("y", {"batch", 3}, onnx::kFloat16)};
  mixed.graph.value_info = {onnx::value("m", {"batch", 3, 1})};
  mixed.graph.nodes = {
      onnx::node("Constant", {}, {"axes"}, {onnx::attr("value", onnx::int64s("t", {1}, {2}))}),
      onnx::node("ReduceMean", {"x", "axes"}, {"m"}), onnx::node("Clip", {"m", "", "hi"}, {"c"}),
      onnx::node("Squeeze", {"c"}, {"y"}, {onnx::attr("axes", std::vector<std::int64_t>{2})}),
      onnx::node("FusedGemm", {"y", "ids"}, {"z"}, {onnx::attr("alpha", 1.0f)}, "com.microsoft")};
  write_seed(dir, "mixed", mixed.bytes());

  // Nested subgraphs (If in a Loop body) and an initializer stored as external data.
  onnx::Graph branch;
  branch.nodes = {onnx::node("CumSum", {"a", "axis"}, {"b"})};
  onnx::Graph body;
  body.nodes = {onnx::node("If", {"cond"}, {"o"},
                           {onnx::attr("then_branch", branch), onnx::attr("else_branch", branch)})};
  onnx::Model nested = onnx::unary("Relu", {1, 4}, 13);
  nested.graph.nodes.push_back(
      onnx::node("Loop", {"n", "cond"}, {"l"}, {onnx::attr("body", body)}));
  nested.graph.initializers = {onnx::Tensor{"ext", onnx::kFloat, {4}, "", true}};
  write_seed(dir, "nested", nested.bytes());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) write_seeds(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto model =
      mota::runtime::read_onnx_model(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!model) return 0;
  auto hits = mota::runtime::check_backend_limits(*model);
  if (!hits.empty()) (void)mota::runtime::describe_limit_hits(hits);
  (void)model->operator_counts();
  for (const auto& v : model->inputs) (void)mota::runtime::format_onnx_shape(v.shape);
  mota::ModelManifest m;
  m.name = "m";
  m.framework = "onnx";
  m.entry = "model.onnx";
  m.inputs = {{"x", {1, -1, 4}, "float32"}};
  m.outputs = {{"y", {1, 3}, "float16"}};
  (void)mota::runtime::compare_manifest_io(m, *model);
  (void)mota::runtime::manifest_skeleton(*model, "Fuzzed Model!", "model.onnx").dump();
  return 0;
}
