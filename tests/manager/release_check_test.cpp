// `mota release add` checks the model before publishing (manager/release/release_check.hpp): an
// ONNX file that does not parse, a model.json that does not match the graph, what the bundled
// backend is known to get wrong, and (with the real mota-runtime) a model that does not load or
// produces other outputs than declared are refused with the reason, and the repository stays as it
// was.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "manager/release/release.hpp"
#include "manager/repo/repository.hpp"
#include "manager/verify/verify.hpp"
#include "manifest/crypto.hpp"
#include "tests/support/onnx_builder.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;
namespace onnx = test::onnx;
using I64s = std::vector<std::int64_t>;

std::map<std::string, std::string> tree_hash(const stdfs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : stdfs::recursive_directory_iterator(dir)) {
    const std::string rel = stdfs::relative(e.path(), dir).string();
    out[rel] = e.is_directory() ? "dir" : crypto::sha256_hex(test::read_file(e.path()));
  }
  return out;
}

std::string slim() {
  return test::read_file(test::shared_model("ultraface/version-slim-320.onnx"));
}

std::string runtime_bin() {
  return test::build_path("runtime/mota-runtime").string();
}

constexpr const char* kFaceIo = R"(
  "inputs": [{"name": "input", "shape": [1, 3, 240, 320], "dtype": "float32"}],
  "outputs": [{"name": "scores", "shape": [1, 4420, 2], "dtype": "float32"},
              {"name": "boxes", "shape": [1, 4420, 4], "dtype": "float32"}])";

class ReleaseCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_dir_ = tmp_ / "repo";
    Settings s;
    s.zstd_level = 3;
    auto r = Repository::init(repo_dir_, s);
    ASSERT_TRUE(r.has_value()) << r.error().message();
  }

  // A model directory: model.json with `io` (JSON members) and model.onnx holding `onnx`.
  stdfs::path model(const std::string& tag, const std::string& onnx_bytes,
                    const std::string& io = kFaceIo, const std::string& framework = "onnx") {
    const stdfs::path d = tmp_ / tag;
    test::write_file(d / "model.json", R"({"name": "face", "framework": ")" + framework +
                                           R"(", "entry": "model.onnx")" +
                                           (io.empty() ? "" : "," + io) + "}");
    test::write_file(d / "model.onnx", onnx_bytes);
    return d;
  }

  ReleaseOptions options(bool load = true) {
    ReleaseOptions o;
    o.checks.load = load;
    o.checks.runtime = runtime_bin();
    return o;
  }

  Result<ReleaseResult> add(const stdfs::path& src, const ReleaseOptions& o,
                            const std::string& version = "1.0.0") {
    auto repo = Repository::open(repo_dir_);
    EXPECT_TRUE(repo.has_value());
    return repo->add_release(src, version, o);
  }

  // The release is refused with `needle` in its message (Errc::verification), the repository is
  // exactly as it was and no scratch file is left.
  void expect_refused(const stdfs::path& src, const std::string& needle, bool load = true) {
    SCOPED_TRACE(src.filename().string());
    const auto before = tree_hash(repo_dir_);
    auto r = add(src, options(load), "9.0.0");
    ASSERT_FALSE(r.has_value()) << "published; expected: " << needle;
    EXPECT_EQ(r.error().code(), Errc::verification) << r.error().message();
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
    EXPECT_EQ(r.error().message().find(".work-"), std::string::npos) << r.error().message();
    EXPECT_EQ(tree_hash(repo_dir_), before);
  }

  test::TempDir tmp_;
  stdfs::path repo_dir_;
};

TEST_F(ReleaseCheckTest, AGoodModelPublishesWithAndWithoutTheLoadCheck) {
  auto r = add(model("good", slim()), options());
  ASSERT_TRUE(r.has_value()) << r.error().message();
  const CheckReport& c = r->checks;
  EXPECT_TRUE(c.onnx);
  EXPECT_EQ(c.graph, "model.onnx: ONNX IR version 4, opset 9, 217 nodes, made by pytorch 1.2");
  EXPECT_EQ(c.inputs, 1u);
  EXPECT_EQ(c.outputs, 2u);
  EXPECT_EQ(c.load, CheckReport::Load::passed);
  EXPECT_EQ(c.runtime, runtime_bin());
  EXPECT_GT(c.load_ms, 0);
  EXPECT_TRUE(c.warnings.empty());
  EXPECT_TRUE(stdfs::is_empty(repo_dir_ / "tmp"));
  Json j = c.to_json();
  EXPECT_EQ(j["load"]["status"], "passed");
  EXPECT_EQ(j["limits"]["refused"], false);

  auto n = add(model("good2", slim()), options(false), "1.1.0");
  ASSERT_TRUE(n.has_value()) << n.error().message();
  EXPECT_EQ(n->checks.load, CheckReport::Load::skipped_by_flag);
  EXPECT_EQ(n->checks.to_json()["load"]["reason"], "--no-load-check");
  ASSERT_TRUE(Repository::verify(repo_dir_).has_value());
}

TEST_F(ReleaseCheckTest, FilesThatAreNotOnnxModelsAreRefused) {
  // The issue's case: a truncated 754-byte export, which used to publish with exit 0.
  expect_refused(model("truncated", slim().substr(0, 754)),
                 "model check: model.onnx: not an ONNX model: truncated field at byte ");
  expect_refused(model("half", slim().substr(0, slim().size() / 2)),
                 "model check: model.onnx: not an ONNX model: truncated field at byte ");
  expect_refused(model("garbage", std::string(300000, '\x07')),
                 "model check: model.onnx: not an ONNX model");
  expect_refused(model("empty", ""), "model check: model.onnx: ");
  // --no-load-check does not skip these.
  expect_refused(model("truncated-noload", slim().substr(0, 754)),
                 "model check: model.onnx: not an ONNX model: truncated field at byte ", false);
}

TEST_F(ReleaseCheckTest, ModelJsonMustMatchTheGraph) {
  const std::string s = slim();
  auto io = [](const std::string& in_name, const std::string& in_shape,
               const std::string& out_dtype) {
    return R"("inputs": [{"name": ")" + in_name + R"(", "shape": )" + in_shape +
           R"(, "dtype": "float32"}],
              "outputs": [{"name": "scores", "shape": [1, 4420, 2], "dtype": "float32"},
                          {"name": "boxes", "shape": [1, 4420, 4], "dtype": ")" +
           out_dtype + R"("}])";
  };
  expect_refused(model("name", s, io("image", "[1, 3, 240, 320]", "float32")),
                 "model check: model.json does not match model.onnx: model.json input 'image' is "
                 "not an input of the graph (the graph's inputs: 'input'); the graph's input "
                 "'input' (float32 [1,3,240,320]) is not declared in model.json");
  expect_refused(model("shape", s, io("input", "[1, 3, 480, 640]", "float32")),
                 "model.json input 'input' has shape [1,3,480,640], the graph says [1,3,240,320]");
  expect_refused(model("rank", s, io("input", "[3, 240, 320]", "float32")),
                 "model.json input 'input' has shape [3,240,320], the graph says [1,3,240,320]");
  expect_refused(model("dtype", s, io("input", "[1, 3, 240, 320]", "float16")),
                 "model.json output 'boxes' is float16, the graph says float32");
  expect_refused(
      model("missing-output", s,
            R"("inputs": [{"name": "input", "shape": [1, 3, 240, 320], "dtype": "float32"}],
               "outputs": [{"name": "scores", "shape": [1, 4420, 2], "dtype": "float32"}])"),
      "the graph's output 'boxes' (float32 [1,4420,4]) is not declared in model.json");
  expect_refused(model("no-io", s, ""),
                 "model.json declares no inputs; the graph has 'input' (mota-runtime inspect "
                 "prints them for model.json); model.json declares no outputs");

  // A symbolic graph dimension takes any declared size; a declared -1 takes any graph size.
  onnx::Model sym = onnx::unary("Relu", {"batch", 4});
  auto ok = add(model("symbolic", sym.bytes(),
                      R"("inputs": [{"name": "x", "shape": [2, 4], "dtype": "float32"}],
                         "outputs": [{"name": "y", "shape": [-1, 4], "dtype": "float32"}])"),
                options(false));
  ASSERT_TRUE(ok.has_value()) << ok.error().message();
}

// Each entry of the bundled backend's known limits (runtime/onnx_limits.hpp), refused at publish
// with its reason, before anything runs it.
struct LimitCase {
  std::string name;
  onnx::Model model;
  std::string reason;
};

onnx::Model graph(std::int64_t opset, std::vector<onnx::Node> nodes,
                  std::vector<onnx::Tensor> inits = {}) {
  onnx::Model m = onnx::unary("Relu", {1, 3, 4, 4}, opset);
  m.graph.nodes = std::move(nodes);
  m.graph.initializers = std::move(inits);
  return m;
}

std::vector<LimitCase> limit_cases() {
  std::vector<LimitCase> c;
  c.push_back(
      {"CumSum",
       graph(13, {onnx::node("CumSum", {"x", "axis"}, {"y"})}, {onnx::int64s("axis", {}, {1})}),
       "CumSum (opset 13, 1 node): corrupts the heap"});
  for (const char* op : {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                         "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"}) {
    c.push_back(
        {std::string(op) + "18",
         graph(18, {onnx::node(op, {"x", "axes"}, {"y"})}, {onnx::int64s("axes", {1}, {1})}),
         std::string(op) + " (opset 18, 1 node, axes given as an input (opset 18 form)): "
                           "the axes input is ignored: it reduces over all axes and "
                           "returns the wrong shape, without an error"});
  }
  c.push_back(
      {"ReduceSum13",
       graph(13, {onnx::node("ReduceSum", {"x", "axes"}, {"y"})}, {onnx::int64s("axes", {1}, {1})}),
       "ReduceSum (opset 13, 1 node, axes given as an input (opset 13 form)): fails to "
       "load: axes as an input is not implemented"});
  c.push_back(
      {"Squeeze13",
       graph(13, {onnx::node("Squeeze", {"x", "axes"}, {"y"})}, {onnx::int64s("axes", {1}, {0})}),
       "Squeeze (opset 13, 1 node, axes given as an input (opset 13 form)): fails to load"});
  c.push_back({"SqueezeNoAxes", graph(11, {onnx::node("Squeeze", {"x"}, {"y"})}),
               "Squeeze (opset 11, 1 node, without axes (every dimension of size 1)): fails to "
               "load: it needs the axes spelled out"});
  c.push_back({"ClipRelu6",
               graph(11, {onnx::node("Clip", {"x", "lo", "hi"}, {"y"})},
                     {onnx::floats("lo", {}, {0}), onnx::floats("hi", {}, {6})}),
               "Clip (opset 11, 1 node, min or max given as an input (PyTorch's ReLU6 and clamp "
               "exports)): fails to load"});
  c.push_back({"Split13",
               graph(13, {onnx::node("Split", {"x", "split"}, {"y", "z"})},
                     {onnx::int64s("split", {2}, {1, 3})}),
               "Split (opset 13, 1 node, split sizes given as an input (opset 13 form)): the sizes "
               "are ignored"});
  c.push_back(
      {"ConcatConstant",
       graph(13, {onnx::node("Concat", {"x", "c"}, {"y"}, {onnx::attr("axis", std::int64_t{1})})},
             {onnx::floats("c", {1, 1, 4, 4}, std::vector<float>(16, 0.5f))}),
       "Concat (opset 13, 1 node, joins a constant (initializer or Constant) with a "
       "computed tensor): returns wrong values"});
  {
    onnx::Model m = graph(13, {onnx::node("Add", {"x", "w"}, {"y"})});
    m.graph.initializers = {onnx::Tensor{"w", onnx::kFloat, {1, 3, 4, 4}, "", true}};
    c.push_back({"ExternalData", m,
                 "external data (1 initializer): it cannot read tensor data "
                 "stored outside the .onnx file"});
  }
  c.push_back({"Opset22", graph(22, {onnx::node("Relu", {"x"}, {"y"})}),
               "opset 22: newer than the newest checked on OpenCV DNN 4.6 (21)"});
  return c;
}

// gtest prints a parameter by name, not as bytes.
void PrintTo(const LimitCase& c, std::ostream* os) {
  *os << c.name;
}

class ReleaseLimitTest : public ReleaseCheckTest,
                         public ::testing::WithParamInterface<LimitCase> {};

TEST_P(ReleaseLimitTest, RefusedAtPublishWithTheReason) {
  const auto& k = GetParam();
  const auto src = model("m", k.model.bytes(),
                         R"("inputs": [{"name": "x", "shape": [1, 3, 4, 4], "dtype": "float32"}],
                            "outputs": [{"name": "y", "shape": [1, 3, 4, 4], "dtype": "float32"}])");
  expect_refused(src,
                 "model check: model.onnx: the bundled backend (OpenCV DNN 4.6) is known to get "
                 "this model wrong: " +
                     k.reason,
                 /*load=*/false);
}

INSTANTIATE_TEST_SUITE_P(Table, ReleaseLimitTest, ::testing::ValuesIn(limit_cases()),
                         [](const ::testing::TestParamInfo<LimitCase>& i) { return i.param.name; });

TEST_F(ReleaseCheckTest, TheLoadCheckRefusesWhatParsesButDoesNotLoadOrRunAsDeclared) {
  const std::string io1x4 =
      R"("inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
         "outputs": [{"name": "y", "shape": [1, 4], "dtype": "float32"}])";
  // An operator OpenCV does not have: not in the table, caught by loading it.
  const auto unknown = model("unknown-op", onnx::unary("MotaNoSuchOp", {1, 4}).bytes(), io1x4);
  expect_refused(unknown,
                 "load check: the model fails at load: model.onnx: OpenCV DNN cannot load "
                 "it: ");
  expect_refused(unknown, "MotaNoSuchOp");
  // ...and --no-load-check publishes it (only the static checks ran).
  auto skipped = add(unknown, options(false), "2.0.0");
  ASSERT_TRUE(skipped.has_value()) << skipped.error().message();

  // A graph whose output shape is symbolic, so it agrees with any declaration; the real output
  // is [1,8], model.json says [1,4].
  onnx::Model cat = onnx::unary("Concat", {1, 4});
  cat.graph.nodes = {
      onnx::node("Concat", {"x", "x"}, {"y"}, {onnx::attr("axis", std::int64_t{1})})};
  cat.graph.outputs = {onnx::value("y", {"n", "m"})};
  expect_refused(model("shape", cat.bytes(), io1x4),
                 "load check: the model fails at load: output \"y\" has shape [1,8], model.json "
                 "declares [1,4]");

  // The graph says int64 and model.json agrees, but the bundled runtime serves float32.
  onnx::Model argmax = onnx::unary("ArgMax", {1, 5});
  argmax.graph.nodes[0].attrs = {onnx::attr("axis", std::int64_t{1})};
  argmax.graph.outputs = {onnx::value("y", {1, 1}, onnx::kInt64)};
  expect_refused(model("dtype", argmax.bytes(),
                       R"("inputs": [{"name": "x", "shape": [1, 5], "dtype": "float32"}],
                          "outputs": [{"name": "y", "shape": [1, 1], "dtype": "int64"}])"),
                 "load check: model.json output 'y' is int64, mota-runtime produces float32");
}

TEST_F(ReleaseCheckTest, ALoadCheckThatCrashesOrHangsRefusesTheRelease) {
  // Fault injection: stand-ins for mota-runtime that crash or never answer.
  const auto crash = tmp_ / "crash.sh";
  test::write_file(crash, "#!/bin/sh\nkill -SEGV $$\n");
  stdfs::permissions(crash, stdfs::perms::owner_all);
  const auto hang = tmp_ / "hang.sh";
  test::write_file(hang, "#!/bin/sh\nexec sleep 60\n");
  stdfs::permissions(hang, stdfs::perms::owner_all);
  const auto src = model("face", slim());
  const auto before = tree_hash(repo_dir_);

  ReleaseOptions o = options();
  o.checks.runtime = crash;
  auto r = add(src, o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_NE(r.error().message().find("load check: mota-runtime probe was killed by signal 11"),
            std::string::npos)
      << r.error().message();

  o.checks.runtime = hang;
  o.checks.timeout = std::chrono::seconds(1);
  r = add(src, o);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("load check: mota-runtime probe gave no verdict within 1 s"),
            std::string::npos)
      << r.error().message();
  EXPECT_EQ(tree_hash(repo_dir_), before);
}

TEST_F(ReleaseCheckTest, OtherFrameworksAreNotChecked) {
  auto r = add(model("other", "not a model at all", "", "other"), options());
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_FALSE(r->checks.onnx);
  EXPECT_EQ(r->checks.framework, "other");
  EXPECT_EQ(r->checks.to_json()["note"],
            "no checks for framework \"other\": only ONNX models are checked");
  EXPECT_EQ(r->checks.lines(),
            std::vector<std::string>{
                "checks: none for framework \"other\" (only ONNX models are checked)"});
}

// The CLI: what was checked in the normal and --json output, the warning when mota-runtime is
// not there, and usage errors.
class ReleaseCheckCliTest : public ReleaseCheckTest {
 protected:
  test::RunResult mota(std::vector<std::string> args, const std::string& bin = "") {
    args.insert(args.begin(), bin.empty() ? test::build_path("manager/mota").string() : bin);
    args.push_back("--repo");
    args.push_back(repo_dir_.string());
    return test::run(args);
  }
};

TEST_F(ReleaseCheckCliTest, OutputSaysWhatWasChecked) {
  auto r = mota({"release", "add", model("face", slim()).string(), "--version", "1.0.0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("  checked: model.onnx: ONNX IR version 4, opset 9, 217 nodes, made by "
                       "pytorch 1.2\n"
                       "  checked: model.json's 1 input(s) and 2 output(s) match the graph\n"
                       "  checked: nothing OpenCV DNN 4.6 is known to get wrong "
                       "(docs/runtime.md)\n"
                       "  checked: loaded and ran once with "),
            std::string::npos)
      << r.out;

  auto j = mota({"release", "add", model("face2", slim()).string(), "--version", "1.1.0", "--json",
                 "--no-load-check"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  Json doc = Json::parse(j.out);
  EXPECT_EQ(doc["checks"]["framework"], "onnx");
  EXPECT_EQ(doc["checks"]["onnx"], true);
  EXPECT_EQ(doc["checks"]["io"]["match"], true);
  EXPECT_EQ(doc["checks"]["load"], Json::parse(R"({"status": "skipped",
                                                     "reason": "--no-load-check"})"));

  auto bad =
      mota({"release", "add", model("cut", slim().substr(0, 754)).string(), "--version", "2.0.0"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("mota: error: release add: model check: model.onnx: not an ONNX model: "
                         "truncated field at byte "),
            std::string::npos)
      << bad.err;

  auto usage = mota({"release", "add", model("x", slim()).string(), "--version", "3.0.0",
                     "--no-load-check", "--runtime", runtime_bin()});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_NE(usage.err.find("--runtime has nothing to run with --no-load-check"), std::string::npos)
      << usage.err;
}

TEST_F(ReleaseCheckCliTest, WithoutMotaRuntimeTheReleaseGoesOnWithAWarning) {
  // A publish host without OpenCV: `mota` alone in a directory, nothing on $PATH.
  const auto bin = tmp_ / "bin" / "mota";
  stdfs::create_directories(bin.parent_path());
  stdfs::copy_file(test::build_path("manager/mota"), bin);
  stdfs::permissions(bin, stdfs::perms::owner_all);
  std::vector<std::string> args = {
      bin.string(),      "release", "add",    model("face", slim()).string(),
      "--version",       "1.0.0",   "--json", "--repo",
      repo_dir_.string()};
  auto r = test::run(args, {{"PATH", (tmp_ / "empty").string()}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json doc = Json::parse(r.out);
  EXPECT_EQ(doc["checks"]["load"]["status"], "skipped");
  const std::string reason = doc["checks"]["load"]["reason"];
  EXPECT_NE(reason.find("load check skipped: mota-runtime not found"), std::string::npos) << reason;
  EXPECT_EQ(doc["checks"]["warnings"].size(), 1u);

  args[5] = "1.1.0";
  args.erase(args.begin() + 6);  // --json
  auto t = test::run(args, {{"PATH", (tmp_ / "empty").string()}});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("  warning: load check skipped: mota-runtime not found"), std::string::npos)
      << t.out;
  // The static checks still ran.
  EXPECT_NE(t.out.find("  checked: model.onnx: ONNX IR version 4"), std::string::npos) << t.out;
}

}  // namespace
}  // namespace mota::manager
