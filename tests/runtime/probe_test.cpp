// `mota-runtime probe SLOT` as the agent runs it (a separate process): it passes a good model and
// names the failing check, with its own exit code, for each kind of bad one.
#include "runtime/probe.hpp"

#include <gtest/gtest.h>

#include <limits>

#include "tests/runtime/runtime_support.hpp"

namespace mota::runtime {
namespace {

using testing::make_slot;
using testing::SlotSpec;

class ProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = testing::test_image();
    // Expected outputs recorded with `mota-runtime run`, as a publisher would.
    SlotSpec plain;
    plain.onnx = testing::slim_onnx();
    make_slot(tmp_ / "plain-slim", plain);
    plain.onnx = testing::rfb_onnx();
    make_slot(tmp_ / "plain-rfb", plain);
    test::write_file(tmp_ / "image.bin", image_);
    for (const char* m : {"slim", "rfb"}) {
      auto r = test::run({bin(), "run", (tmp_ / (std::string("plain-") + m)).string(), "--input",
                          (tmp_ / "image.bin").string(), "--output",
                          (tmp_ / (std::string(m) + ".expected")).string()});
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    slim_expected_ = test::read_file(tmp_ / "slim.expected");
    rfb_expected_ = test::read_file(tmp_ / "rfb.expected");
    ASSERT_EQ(slim_expected_.size(), (4420u * 2 + 4420u * 4) * 4);
  }
  static std::string bin() { return test::build_path("runtime/mota-runtime").string(); }

  SlotSpec slim_with_health(std::string expected) {
    SlotSpec s;
    s.onnx = testing::slim_onnx();
    s.health = testing::Health{image_, std::move(expected), 1e-3, 5000};
    return s;
  }
  struct Outcome {
    int exit_code;
    Json report;
    std::string err;
  };
  Outcome probe_slot(const std::string& name, const SlotSpec& spec) {
    make_slot(tmp_ / name, spec);
    auto r = test::run({bin(), "probe", (tmp_ / name).string(), "--json"});
    Json j = Json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out << r.err;
    return {r.exit_code, j, r.err};
  }

  test::TempDir tmp_;
  std::string image_, slim_expected_, rfb_expected_;
};

TEST_F(ProbeTest, GoodModelPasses) {
  auto o = probe_slot("good", slim_with_health(slim_expected_));
  EXPECT_EQ(o.exit_code, 0) << o.report.dump();
  EXPECT_EQ(o.report["ok"], true);
  EXPECT_EQ(o.report["step"], "");
  EXPECT_EQ(o.report["name"], "face");
  EXPECT_EQ(o.report["has_health"], true);
  EXPECT_LE(o.report["max_abs_diff"].get<double>(), 1e-3);
  EXPECT_GT(o.report["latency_ms"].get<double>(), 0);
  // What the engine produced, for `mota release add`'s load check.
  EXPECT_EQ(o.report["outputs"],
            Json::parse(R"([{"name": "scores", "dtype": "float32", "shape": [1, 4420, 2]},
                            {"name": "boxes", "dtype": "float32", "shape": [1, 4420, 4]}])"));

  // Human-readable form.
  auto r = test::run({bin(), "probe", (tmp_ / "good").string()});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("probe face 1.0.0: ok"), std::string::npos) << r.out;
}

TEST_F(ProbeTest, OutputMismatch) {
  // The RFB model's answers recorded as the slim model's expected output.
  auto o = probe_slot("mismatch", slim_with_health(rfb_expected_));
  EXPECT_EQ(o.exit_code, 8);
  EXPECT_EQ(o.report["step"], "output");
  EXPECT_NE(o.report["reason"].get<std::string>().find("differs from health/expected.bin by up to"),
            std::string::npos)
      << o.report.dump();
  EXPECT_GT(o.report["max_abs_diff"].get<double>(), 1e-3);

  // A truncated expected file is a mismatch too, with the sizes.
  o = probe_slot("short", slim_with_health(slim_expected_.substr(0, 100)));
  EXPECT_EQ(o.exit_code, 8);
  EXPECT_NE(o.report["reason"].get<std::string>().find("has 100 bytes, the model produced 106080"),
            std::string::npos)
      << o.report.dump();

  // Human-readable form on stderr.
  auto r = test::run({bin(), "probe", (tmp_ / "mismatch").string()});
  EXPECT_EQ(r.exit_code, 8);
  EXPECT_NE(r.err.find("failed at output: output differs"), std::string::npos) << r.err;
}

TEST_F(ProbeTest, NanOrInfOutput) {
  // A model whose output is -Inf for the health input: Log(0).
  SlotSpec s = testing::tiny_slot("Log");
  s.health = testing::Health{std::string(16, '\0'), std::nullopt, 1e-3, 5000};
  auto o = probe_slot("log0", s);
  EXPECT_EQ(o.exit_code, 7) << o.report.dump() << o.err;
  EXPECT_EQ(o.report["step"], "nan");
  EXPECT_NE(o.report["reason"].get<std::string>().find("output \"y\" holds NaN or Inf"),
            std::string::npos);

  // The real detector fed a NaN image.
  std::string nan_image = image_;
  float nan = std::numeric_limits<float>::quiet_NaN();
  for (std::size_t i = 0; i < nan_image.size(); i += 4) std::memcpy(nan_image.data() + i, &nan, 4);
  SlotSpec d = slim_with_health(slim_expected_);
  d.health->input = nan_image;
  o = probe_slot("nanimage", d);
  EXPECT_EQ(o.exit_code, 7) << o.report.dump();
}

TEST_F(ProbeTest, TooSlow) {
  SlotSpec s = slim_with_health(slim_expected_);
  s.health->latency_budget_ms = 0.01;
  auto o = probe_slot("slow", s);
  EXPECT_EQ(o.exit_code, 9) << o.report.dump();
  EXPECT_EQ(o.report["step"], "latency");
  EXPECT_NE(o.report["reason"].get<std::string>().find("exceeds the budget 0.010 ms"),
            std::string::npos)
      << o.report.dump();
}

TEST_F(ProbeTest, Unloadable) {
  SlotSpec corrupt = slim_with_health(slim_expected_);
  corrupt.onnx = corrupt.onnx.substr(0, corrupt.onnx.size() / 2);
  auto o = probe_slot("corrupt", corrupt);
  EXPECT_EQ(o.exit_code, 4);
  EXPECT_EQ(o.report["step"], "load");
  EXPECT_NE(o.report["reason"].get<std::string>().find("not an ONNX model"), std::string::npos)
      << o.report.dump();

  SlotSpec op = testing::tiny_slot("MotaNoSuchOp");
  o = probe_slot("badop", op);
  EXPECT_EQ(o.exit_code, 4);
  std::string reason = o.report["reason"].get<std::string>();
  EXPECT_NE(reason.find("MotaNoSuchOp"), std::string::npos) << reason;
  EXPECT_NE(reason.find("(ONNX opset 13; OpenCV DNN 4.6 limits: docs/runtime.md)"),
            std::string::npos)
      << reason;

  // What the bundled backend is known to get wrong fails at load with the reason (OpenCV never
  // sees the model), and the JSON names the outputs only once a run happened.
  SlotSpec cumsum = testing::tiny_slot("CumSum");
  o = probe_slot("cumsum", cumsum);
  EXPECT_EQ(o.exit_code, 4) << o.report.dump();
  EXPECT_EQ(o.report["step"], "load");
  EXPECT_NE(
      o.report["reason"].get<std::string>().find("CumSum (opset 13, 1 node): corrupts the heap"),
      std::string::npos)
      << o.report.dump();
  EXPECT_EQ(o.report["outputs"], Json::array());

  // Not a model directory at all.
  auto r = test::run({bin(), "probe", (tmp_ / "nothing").string(), "--json"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(Json::parse(r.out)["step"], "manifest");
}

TEST_F(ProbeTest, BadHealthInput) {
  SlotSpec s = slim_with_health(slim_expected_);
  s.health->input = image_.substr(0, 1000);
  auto o = probe_slot("badinput", s);
  EXPECT_EQ(o.exit_code, 5);
  EXPECT_EQ(o.report["step"], "input");
  EXPECT_NE(o.report["reason"].get<std::string>().find("health/input.bin"), std::string::npos);
}

TEST_F(ProbeTest, NoHealthSectionChecksLoadAndFiniteness) {
  auto r = test::run({bin(), "probe", (tmp_ / "plain-slim").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("no health section"), std::string::npos) << r.out;
}

TEST_F(ProbeTest, InProcessApi) {
  make_slot(tmp_ / "api", slim_with_health(slim_expected_));
  auto rep = probe(tmp_ / "api");
  EXPECT_TRUE(rep.ok) << rep.reason;
  EXPECT_EQ(rep.exit_code(), 0);
  EXPECT_EQ(rep.version, "1.0.0");
}

}  // namespace
}  // namespace mota::runtime
