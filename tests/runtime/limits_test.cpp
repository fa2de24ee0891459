// The bundled backend's known limits (runtime/onnx_limits.hpp) at load: each table entry, built as
// the small graph it was measured with, is refused by the OpenCV backend before OpenCV reads it,
// with the reason; the same operator in the form the backend handles still loads and runs. (The
// refused graphs are never handed to OpenCV here: CumSum would corrupt the test's heap.)
#include <gtest/gtest.h>

#include <set>

#include "runtime/backend.hpp"
#include "runtime/onnx_limits.hpp"
#include "tests/runtime/runtime_support.hpp"
#include "tests/support/onnx_builder.hpp"

namespace mota::runtime {
namespace {

namespace onnx = test::onnx;
using I64s = std::vector<std::int64_t>;

struct Case {
  std::string name;
  onnx::Model model;
  std::vector<int> in, out;  // shapes of x and y
  std::string refused;       // expected in the load error; empty: loads and runs
};

Json tensor_json(const std::string& name, const std::vector<int>& shape) {
  return Json::array({{{"name", name}, {"shape", shape}, {"dtype", "float32"}}});
}

onnx::Model graph(std::int64_t opset, const std::vector<int>& in, const std::vector<int>& out,
                  std::vector<onnx::Node> nodes, std::vector<onnx::Tensor> inits = {}) {
  onnx::Model m;
  m.opsets = {{"", opset}};
  m.graph.inputs = {onnx::value("x", std::vector<onnx::Dim>(in.begin(), in.end()))};
  m.graph.outputs = {onnx::value("y", std::vector<onnx::Dim>(out.begin(), out.end()))};
  m.graph.nodes = std::move(nodes);
  m.graph.initializers = std::move(inits);
  return m;
}

Case reduce_case(const std::string& op, std::int64_t opset, bool axes_input,
                 const std::string& refused) {
  const std::vector<int> in{1, 3, 4, 4}, out{1, 3, 1, 1};
  if (axes_input) {
    return {op + "_" + std::to_string(opset) + "_axes_input",
            graph(opset, in, out, {onnx::node(op, {"x", "axes"}, {"y"})},
                  {onnx::int64s("axes", {2}, {2, 3})}),
            in, out, refused};
  }
  return {op + "_" + std::to_string(opset) + "_axes_attribute",
          graph(opset, in, out, {onnx::node(op, {"x"}, {"y"}, {onnx::attr("axes", I64s{2, 3})})}),
          in, out, refused};
}

std::vector<Case> cases() {
  std::vector<Case> c;
  const std::vector<int> v{1, 3, 4, 4};
  // CumSum, any opset: heap corruption.
  c.push_back({"CumSum_11",
               graph(11, v, v, {onnx::node("CumSum", {"x", "axis"}, {"y"})},
                     {onnx::int64s("axis", {}, {1})}),
               v, v, "CumSum (opset 11, 1 node): corrupts the heap"});
  c.push_back({"CumSum_17",
               graph(17, v, v, {onnx::node("CumSum", {"x", "axis"}, {"y"})},
                     {onnx::int64s("axis", {}, {3})}),
               v, v, "CumSum (opset 17, 1 node): corrupts the heap"});
  // Reductions with the opset 18 axes input: wrong shapes, no error.
  for (const char* op : {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                         "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"}) {
    c.push_back(reduce_case(op, 18, true,
                            std::string(op) + " (opset 18, 1 node, axes given as an input (opset "
                                              "18 form)): the axes input is ignored"));
  }
  c.push_back(reduce_case("ReduceMean", 17, false, ""));
  c.push_back(reduce_case("ReduceMax", 17, false, ""));
  // ReduceSum with the opset 13 axes input: fails.
  c.push_back(reduce_case("ReduceSum", 13, true,
                          "ReduceSum (opset 13, 1 node, axes given as an input (opset 13 form)): "
                          "fails to load"));
  c.push_back(reduce_case("ReduceSum", 12, false, ""));
  // Squeeze: axes as an input (13+), or no axes at all.
  const std::vector<int> sq_in{1, 3, 1, 4}, sq_out{1, 3, 4};
  c.push_back({"Squeeze_13_axes_input",
               graph(13, sq_in, sq_out, {onnx::node("Squeeze", {"x", "axes"}, {"y"})},
                     {onnx::int64s("axes", {1}, {2})}),
               sq_in, sq_out, "Squeeze (opset 13, 1 node, axes given as an input"});
  c.push_back({"Squeeze_12_no_axes",
               graph(12, sq_in, {3, 4}, {onnx::node("Squeeze", {"x"}, {"y"})}),
               sq_in,
               {3, 4},
               "Squeeze (opset 12, 1 node, without axes"});
  c.push_back({"Squeeze_12_axes_attribute",
               graph(12, sq_in, sq_out,
                     {onnx::node("Squeeze", {"x"}, {"y"}, {onnx::attr("axes", I64s{2})})}),
               sq_in, sq_out, ""});
  // Clip with min/max inputs, as PyTorch exports ReLU6 (Constant nodes) or clamp (initializers).
  c.push_back({"Clip_11_relu6_export",
               graph(11, v, v,
                     {onnx::node("Constant", {}, {"lo"},
                                 {onnx::attr("value", onnx::floats("lo_t", {}, {0}))}),
                      onnx::node("Constant", {}, {"hi"},
                                 {onnx::attr("value", onnx::floats("hi_t", {}, {6}))}),
                      onnx::node("Clip", {"x", "lo", "hi"}, {"y"})}),
               v, v, "Clip (opset 11, 1 node, min or max given as an input"});
  c.push_back(
      {"Clip_13_min_only",
       graph(13, v, v, {onnx::node("Clip", {"x", "lo"}, {"y"})}, {onnx::floats("lo", {}, {0})}), v,
       v, "Clip (opset 13, 1 node, min or max given as an input"});
  c.push_back({"Clip_13_no_bounds", graph(13, v, v, {onnx::node("Clip", {"x"}, {"y"})}), v, v, ""});
  c.push_back({"Clip_10_attributes",
               graph(10, v, v,
                     {onnx::node("Clip", {"x"}, {"y"},
                                 {onnx::attr("min", 0.0f), onnx::attr("max", 6.0f)})}),
               v, v, ""});
  // Split with sizes as an input (13+): sizes ignored.
  const std::vector<int> sp_in{1, 4, 2, 2};
  {
    onnx::Model m = graph(
        13, sp_in, {1, 1, 2, 2},
        {onnx::node("Split", {"x", "split"}, {"y", "z"}, {onnx::attr("axis", std::int64_t{1})})},
        {onnx::int64s("split", {2}, {1, 3})});
    m.graph.outputs.push_back(onnx::value("z", {1, 3, 2, 2}));
    c.push_back({"Split_13_sizes_input",
                 m,
                 sp_in,
                 {1, 1, 2, 2},
                 "Split (opset 13, 1 node, split sizes given as an input"});
  }
  {
    onnx::Model m =
        graph(12, sp_in, {1, 1, 2, 2},
              {onnx::node("Split", {"x"}, {"y", "z"},
                          {onnx::attr("axis", std::int64_t{1}), onnx::attr("split", I64s{1, 3})})});
    m.graph.outputs.push_back(onnx::value("z", {1, 3, 2, 2}));
    c.push_back({"Split_12_sizes_attribute", m, sp_in, {1, 1, 2, 2}, ""});
  }
  // Concat of a constant and a computed tensor: wrong values.
  const std::vector<int> cc_in{1, 1, 2, 2}, cc_out{1, 2, 2, 2};
  c.push_back(
      {"Concat_initializer_and_input",
       graph(13, cc_in, cc_out,
             {onnx::node("Concat", {"x", "c"}, {"y"}, {onnx::attr("axis", std::int64_t{1})})},
             {onnx::floats("c", {1, 1, 2, 2}, {0.5f, 0.5f, 0.5f, 0.5f})}),
       cc_in, cc_out, "Concat (opset 13, 1 node, joins a constant"});
  c.push_back(
      {"Concat_computed_only",
       graph(13, cc_in, cc_out,
             {onnx::node("Relu", {"x"}, {"r"}),
              onnx::node("Concat", {"x", "r"}, {"y"}, {onnx::attr("axis", std::int64_t{1})})}),
       cc_in, cc_out, ""});
  // PyTorch's flatten export: Shape -> Gather -> Unsqueeze -> Concat with a constant -> Reshape.
  // OpenCV computes the shape at load, so that Concat joins constants only and works.
  c.push_back(
      {"Concat_shape_arithmetic",
       graph(13, v, {1, 48},
             {onnx::node("Shape", {"x"}, {"s"}),
              onnx::node("Gather", {"s", "zero"}, {"n"}, {onnx::attr("axis", std::int64_t{0})}),
              onnx::node("Unsqueeze", {"n", "ax"}, {"n1"}),
              onnx::node("Concat", {"n1", "minus1"}, {"shape"},
                         {onnx::attr("axis", std::int64_t{0})}),
              onnx::node("Reshape", {"x", "shape"}, {"y"})},
             {onnx::int64s("zero", {}, {0}), onnx::int64s("ax", {1}, {0}),
              onnx::int64s("minus1", {1}, {-1})}),
       v,
       {1, 48},
       ""});
  // Model-level: external data, an opset newer than surveyed, no default opset import.
  {
    onnx::Model m = graph(13, v, v, {onnx::node("Add", {"x", "w"}, {"y"})});
    m.graph.initializers = {onnx::Tensor{"w", onnx::kFloat, {1, 3, 4, 4}, "", true}};
    c.push_back({"external_data", m, v, v, "external data (1 initializer): it cannot read"});
  }
  c.push_back({"opset_22", graph(22, v, v, {onnx::node("Relu", {"x"}, {"y"})}), v, v,
               "opset 22: newer than the newest checked on OpenCV DNN 4.6 (21)"});
  c.push_back({"opset_21", graph(21, v, v, {onnx::node("Relu", {"x"}, {"y"})}), v, v, ""});
  {
    onnx::Model m = graph(13, v, v, {onnx::node("Relu", {"x"}, {"y"})});
    m.opsets.clear();
    c.push_back({"no_opset", m, v, v, "no opset import for the default domain"});
  }
  return c;
}

// gtest prints a parameter by name, not as bytes.
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

class LimitsAtLoad : public ::testing::TestWithParam<Case> {
 protected:
  test::TempDir tmp_;
};

TEST_P(LimitsAtLoad, RefusedWithTheReasonOrLoads) {
  const Case& k = GetParam();
  testing::SlotSpec s;
  s.name = "m";
  s.onnx = k.model.bytes();
  s.inputs = tensor_json("x", k.in);
  s.outputs = tensor_json("y", k.out);
  testing::make_slot(tmp_ / "slot", s);
  auto manifest = read_slot_manifest(tmp_ / "slot");
  ASSERT_TRUE(manifest) << manifest.error().message();
  auto backend = backend_for("onnx");
  ASSERT_TRUE(backend);
  auto model = (*backend)->load(*manifest, tmp_ / "slot", LoadOptions{.pool_size = 1});
  if (k.refused.empty()) {
    ASSERT_TRUE(model) << model.error().message();
    const Shape in(k.in.begin(), k.in.end());
    auto out = (*model)->run(
        {Tensor{"x", DType::float32, in, std::string(*byte_size(in, DType::float32), '\0')}});
    ASSERT_TRUE(out) << out.error().message();
    EXPECT_EQ((*out)[0].shape, Shape(k.out.begin(), k.out.end()));
    return;
  }
  ASSERT_FALSE(model) << "loaded; expected: " << k.refused;
  EXPECT_EQ(model.error().code(), Errc::unsupported) << model.error().message();
  EXPECT_NE(model.error().message().find("model.onnx: the bundled backend (OpenCV DNN 4.6) is "
                                         "known to get this model wrong: "),
            std::string::npos)
      << model.error().message();
  EXPECT_NE(model.error().message().find(k.refused), std::string::npos) << model.error().message();
}

INSTANTIATE_TEST_SUITE_P(Table, LimitsAtLoad, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

TEST(LimitsTable, EveryEntryHasARefusedCase) {
  std::set<std::string> refused_ops;
  for (const auto& c : cases()) {
    if (!c.refused.empty()) refused_ops.insert(c.refused.substr(0, c.refused.find(' ')));
  }
  for (const auto& l : known_limits()) {
    EXPECT_TRUE(refused_ops.count(std::string(l.op_type))) << l.op_type << " has no case";
    EXPECT_FALSE(l.reason.empty());
  }
}

TEST(LimitsTable, RealModelsPass) {
  for (const char* f : {"ultraface/version-slim-320.onnx", "ultraface/version-RFB-320.onnx"}) {
    auto m = read_onnx_file(test::shared_model(f));
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_TRUE(check_backend_limits(*m).empty()) << describe_limit_hits(check_backend_limits(*m));
  }
}

}  // namespace
}  // namespace mota::runtime
