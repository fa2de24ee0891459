// The ONNX graph reader (runtime/onnx_info.hpp) on real exports, hand-built graphs and malformed
// or hostile bytes.
#include "runtime/onnx_info.hpp"

#include <gtest/gtest.h>

#include <chrono>

#include "tests/runtime/runtime_support.hpp"
#include "tests/support/onnx_builder.hpp"

namespace mota::runtime {
namespace {

namespace onnx = test::onnx;

std::size_t count_of(const OnnxModel& m, const std::string& op) {
  for (const auto& [name, n] : m.operator_counts()) {
    if (name == op) return n;
  }
  return 0;
}

TEST(OnnxInfo, ReadsTheRealUltraFaceExport) {
  auto m = read_onnx_file(test::shared_model("ultraface/version-slim-320.onnx"));
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->ir_version, 4);
  EXPECT_EQ(m->opset(""), 9);
  EXPECT_EQ(m->opset("ai.onnx"), 9);
  EXPECT_EQ(m->producer_name, "pytorch");
  EXPECT_EQ(m->producer_version, "1.2");
  // IR 4 lists the 184 weights as graph inputs too: only the real input is an input.
  EXPECT_EQ(m->initializers.size(), 184u);
  ASSERT_EQ(m->inputs.size(), 1u);
  EXPECT_EQ(m->inputs[0].name, "input");
  EXPECT_EQ(onnx_dtype_name(m->inputs[0].elem_type), "float32");
  EXPECT_EQ(format_onnx_shape(m->inputs[0].shape), "[1,3,240,320]");
  ASSERT_EQ(m->outputs.size(), 2u);
  EXPECT_EQ(m->outputs[0].name, "scores");
  EXPECT_EQ(format_onnx_shape(m->outputs[0].shape), "[1,4420,2]");
  EXPECT_EQ(m->outputs[1].name, "boxes");
  EXPECT_EQ(format_onnx_shape(m->outputs[1].shape), "[1,4420,4]");
  EXPECT_EQ(count_of(*m, "Conv"), 42u);
  EXPECT_EQ(count_of(*m, "Relu"), 34u);
  EXPECT_EQ(count_of(*m, "Softmax"), 1u);
  EXPECT_EQ(m->nodes.size(), 217u);
  EXPECT_EQ(m->external_initializers, 0u);
  // The in-memory reader agrees with the mapped one.
  auto again = read_onnx_model(testing::slim_onnx());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->nodes.size(), m->nodes.size());
}

TEST(OnnxInfo, TruncatedGarbageAndEmptyFilesAreNotModels) {
  const std::string slim = testing::slim_onnx();
  // The case: the first 754 bytes of a real export.
  auto cut = read_onnx_model(slim.substr(0, 754));
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().code(), Errc::parse);
  EXPECT_NE(cut.error().message().find("not an ONNX model: truncated field at byte "),
            std::string::npos)
      << cut.error().message();
  // Cut anywhere inside: always an error, never a crash or a partial success.
  for (std::size_t n : {1ul, 2ul, 10ul, 100ul, 5000ul, slim.size() / 2, slim.size() - 1}) {
    EXPECT_FALSE(read_onnx_model(slim.substr(0, n))) << n;
  }
  auto garbage = read_onnx_model("this is not a protobuf at all");
  ASSERT_FALSE(garbage);
  EXPECT_NE(garbage.error().message().find("not an ONNX model"), std::string::npos);
  EXPECT_FALSE(read_onnx_model(std::string(5000, '\x07')));
  auto empty = read_onnx_model("");
  ASSERT_FALSE(empty);
  EXPECT_NE(empty.error().message().find("no ir_version"), std::string::npos);

  test::TempDir tmp;
  test::write_file(tmp / "empty.onnx", "");
  auto ef = read_onnx_file(tmp / "empty.onnx");
  ASSERT_FALSE(ef);
  EXPECT_NE(ef.error().message().find("the file is empty"), std::string::npos);
  auto missing = read_onnx_file(tmp / "nope.onnx");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::not_found);
}

TEST(OnnxInfo, ValidProtobufThatIsNoModelIsRefused) {
  // A protobuf with only an ir_version: no graph.
  auto nograph = read_onnx_model(onnx::pb_int(1, 8));
  ASSERT_FALSE(nograph);
  EXPECT_EQ(nograph.error().message(), "not an ONNX model: no graph");
  // ir_version written as a string (wrong wire type for field 1).
  auto wire = read_onnx_model(onnx::pb_bytes(1, "8"));
  ASSERT_FALSE(wire);
  EXPECT_NE(wire.error().message().find("ir_version (field 1) has wire type 2 at byte 0"),
            std::string::npos)
      << wire.error().message();
  // Two graphs.
  onnx::Model m = onnx::unary("Relu", {1, 4});
  auto two = read_onnx_model(m.bytes() + onnx::pb_bytes(7, m.graph.bytes()));
  ASSERT_FALSE(two);
  EXPECT_NE(two.error().message().find("a second graph"), std::string::npos);
  // A node without op_type.
  onnx::Model noop = onnx::unary("", {1, 4});
  auto n = read_onnx_model(noop.bytes());
  ASSERT_FALSE(n);
  EXPECT_NE(n.error().message().find("a node without op_type"), std::string::npos);
}

TEST(OnnxInfo, NamesMustBePrintableUtf8) {
  // Found by the fuzzer: a name that is not UTF-8 made `inspect --json` throw. Such names (and
  // control characters, which would reach terminals and logs) are refused with their offset.
  for (const std::string& bad :
       {std::string("x\x99"), std::string("\xc0\x80"), std::string("a\nb"), std::string("\x1b[2J"),
        std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80")}) {
    onnx::Model m = onnx::unary("Relu", {1, 4});
    m.graph.nodes[0].op_type = bad;
    auto r = read_onnx_model(m.bytes());
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), Errc::parse);
    EXPECT_NE(r.error().message().find("not an ONNX model: a name that is not printable UTF-8 at "
                                       "byte "),
              std::string::npos)
        << r.error().message();
  }
  onnx::Model ok = onnx::unary("Relu", {1, 4});
  ok.graph.inputs[0].name = "x";
  ok.producer_name = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
  auto r = read_onnx_model(ok.bytes());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->producer_name, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
}

TEST(OnnxInfo, ReadsShapesTypesNodesAndOpsets) {
  onnx::Model m;
  m.ir_version = 9;
  m.opsets = {{"", 17}, {"com.microsoft", 1}};
  m.producer_name = "builder";
  m.graph.inputs = {onnx::value("image", {"batch", 3, onnx::Dim::unknown(), 64}),
                    onnx::value("mask", {1, 64}, onnx::kUint8), onnx::value("w", {4})};
  m.graph.inputs.push_back(onnx::Value{"noshape", onnx::kInt64, std::nullopt});
  m.graph.outputs = {onnx::value("y", {"batch", 10}, onnx::kFloat16)};
  m.graph.initializers = {onnx::floats("w", {4}, {1, 2, 3, 4})};
  m.graph.nodes = {
      onnx::node("Clip", {"image", "", "hi"}, {"c"}),
      onnx::node("FusedGemm", {"c", "w"}, {"y"}, {onnx::attr("alpha", 1.0f)}, "com.microsoft"),
      onnx::node("Squeeze", {"y"}, {"z"}, {onnx::attr("axes", std::vector<std::int64_t>{0})})};
  auto r = read_onnx_model(m.bytes());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->ir_version, 9);
  EXPECT_EQ(r->opset(), 17);
  EXPECT_EQ(r->opset("com.microsoft"), 1);
  EXPECT_FALSE(r->opset("ai.onnx.ml"));
  EXPECT_EQ(r->producer_name, "builder");
  ASSERT_EQ(r->inputs.size(), 3u);  // "w" is an initializer
  EXPECT_EQ(format_onnx_shape(r->inputs[0].shape), "[batch,3,?,64]");
  EXPECT_FALSE(r->inputs[0].shape->at(0).fixed());
  EXPECT_EQ(r->inputs[0].shape->at(0).param, "batch");
  EXPECT_EQ(onnx_dtype_name(r->inputs[1].elem_type), "uint8");
  EXPECT_EQ(r->inputs[2].name, "noshape");
  EXPECT_FALSE(r->inputs[2].shape);
  EXPECT_EQ(format_onnx_shape(r->inputs[2].shape), "(no shape)");
  EXPECT_EQ(onnx_dtype_name(r->outputs[0].elem_type), "float16");
  ASSERT_EQ(r->nodes.size(), 3u);
  EXPECT_EQ(r->nodes[0].given_inputs(), 2);  // "" is an omitted optional input
  EXPECT_EQ(r->nodes[0].inputs.size(), 3u);
  EXPECT_EQ(r->nodes[1].domain, "com.microsoft");
  EXPECT_TRUE(r->nodes[1].has_attribute("alpha"));
  EXPECT_TRUE(r->nodes[2].has_attribute("axes"));
  auto ops = r->operator_counts();
  ASSERT_EQ(ops.size(), 3u);
  EXPECT_EQ(ops[0].first, "Clip");
  EXPECT_EQ(ops[2].first, "com.microsoft:FusedGemm");
  EXPECT_EQ(onnx_dtype_name(0), "undefined");
  EXPECT_EQ(onnx_dtype_name(99), "type-99");
}

TEST(OnnxInfo, SubgraphNodesAreListedWithTheirDepth) {
  onnx::Graph then_g, else_g, inner;
  inner.nodes = {onnx::node("CumSum", {"a", "ax"}, {"b"})};
  then_g.nodes = {onnx::node("Relu", {"x"}, {"t"}),
                  onnx::node("If", {"cond"}, {"u"},
                             {onnx::attr("then_branch", inner), onnx::attr("else_branch", inner)})};
  else_g.nodes = {onnx::node("Sigmoid", {"x"}, {"e"})};
  onnx::Model m;
  m.graph.inputs = {onnx::value("x", {1, 4}), onnx::value("cond", {}, onnx::kBool)};
  m.graph.outputs = {onnx::value("y", {1, 4})};
  m.graph.nodes = {
      onnx::node("If", {"cond"}, {"y"},
                 {onnx::attr("then_branch", then_g), onnx::attr("else_branch", else_g)})};
  auto r = read_onnx_model(m.bytes());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->subgraphs, 4u);
  ASSERT_EQ(r->nodes.size(), 6u);
  EXPECT_EQ(r->nodes[0].op_type, "If");
  EXPECT_EQ(r->nodes[0].depth, 0);
  EXPECT_EQ(r->nodes[1].op_type, "Relu");
  EXPECT_EQ(r->nodes[1].depth, 1);
  EXPECT_EQ(r->nodes[3].op_type, "CumSum");
  EXPECT_EQ(r->nodes[3].depth, 2);
  EXPECT_EQ(count_of(*r, "CumSum"), 2u);
  // The subgraphs' values are not the model's.
  EXPECT_EQ(r->inputs.size(), 2u);
}

TEST(OnnxInfo, HostileNestingAndCountsHitTheLimits) {
  // Subgraphs nested one level more than allowed.
  onnx::Graph g;
  g.nodes = {onnx::node("Relu", {"x"}, {"y"})};
  for (int i = 0; i <= kOnnxMaxDepth; ++i) {
    onnx::Graph outer;
    outer.nodes = {onnx::node("Loop", {"n", "c"}, {"o"}, {onnx::attr("body", g)})};
    g = outer;
  }
  onnx::Model deep;
  deep.graph = g;
  auto r = read_onnx_model(deep.bytes());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large);
  EXPECT_NE(r.error().message().find("nests subgraphs more than 8 deep"), std::string::npos);

  // One dimension too many.
  std::vector<onnx::Dim> dims(kOnnxMaxRank + 1, onnx::Dim(1));
  onnx::Model wide = onnx::unary("Relu", dims);
  auto w = read_onnx_model(wide.bytes());
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code(), Errc::too_large);

  // More nodes than the limit: minimal node messages, a few bytes each.
  const std::string one = onnx::pb_bytes(1, onnx::pb_bytes(4, "A"));
  std::string graph;
  graph.reserve(one.size() * (kOnnxMaxNodes + 1));
  for (std::size_t i = 0; i <= kOnnxMaxNodes; ++i) graph += one;
  const std::string bytes = onnx::pb_int(1, 8) + onnx::pb_bytes(7, graph);
  auto start = std::chrono::steady_clock::now();
  auto n = read_onnx_model(bytes);
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code(), Errc::too_large);
  EXPECT_NE(n.error().message().find("more than 500000 nodes"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST(OnnxInfo, InitializerDataIsSkippedInPlaceAndExternalDataIsNoted) {
  // 64 MiB of weights: read without copying (the reader keeps names only).
  onnx::Model m = onnx::unary("Add", {1, 4});
  m.graph.nodes[0].inputs = {"x", "big"};
  onnx::Tensor big{"big", onnx::kFloat, {16, 1024, 1024}, std::string(64u << 20, '\x01'), false};
  m.graph.initializers = {big, onnx::Tensor{"ext", onnx::kFloat, {4}, "", true}};
  const std::string bytes = m.bytes();
  auto r = read_onnx_model(bytes);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->initializers.size(), 2u);
  EXPECT_EQ(r->initializers[0], "big");
  EXPECT_EQ(r->external_initializers, 1u);
  ASSERT_EQ(r->inputs.size(), 1u);
  EXPECT_EQ(r->inputs[0].name, "x");
}

}  // namespace
}  // namespace mota::runtime
