// mota-runtime's command line, run as the real binary: usage errors exit 2 (as in every mota
// binary, and apart from probe's verdicts 3..9), --version, `inspect`, and what `serve` tells
// systemd (READY=1, WATCHDOG=1 keep-alives, STOPPING=1).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <tuple>

#include "common/version.hpp"
#include "manifest/model_manifest.hpp"
#include "tests/runtime/runtime_support.hpp"
#include "tests/support/onnx_builder.hpp"

namespace mota::runtime {
namespace {

namespace onnx = test::onnx;

class RuntimeCliTest : public ::testing::Test {
 protected:
  static std::string bin() { return test::build_path("runtime/mota-runtime").string(); }
  test::RunResult run(std::vector<std::string> args) {
    args.insert(args.begin(), bin());
    return test::run(args);
  }
  test::TempDir tmp_;
};

TEST_F(RuntimeCliTest, UsageErrorsExit2WithAMessage) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{}, "A subcommand is required"},
      {{"frobnicate"}, "unknown command 'frobnicate' (serve, probe, run, inspect)"},
      {{"probe"}, "slot is required"},
      {{"probe", "/x", "--bogus"}, "--bogus"},
      {{"probe", "/x", "--runs", "zero"}, "--runs"},
      {{"probe", "/x", "--runs", "0"}, "--runs"},
      {{"run", "/x", "--input", "i"}, "--output is required"},
      {{"inspect"}, "model is required"},
      {{"inspect", "a", "b"}, "b"},
      {{"serve", "--pool-size", "many"}, "--pool-size"},
  };
  for (const auto& c : cases) {
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    auto r = run(c.args);
    EXPECT_EQ(r.exit_code, 2) << joined << r.err;
    EXPECT_NE(r.err.find("mota-runtime: error: "), std::string::npos) << joined << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << joined << r.err;
    EXPECT_NE(r.err.find("Run 'mota-runtime --help' for usage."), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "") << joined;
  }
  // A bad flag value found after parsing is a usage error too.
  test::write_file(tmp_ / "runtime.toml", "socket = \"" + (tmp_ / "s.sock").string() + "\"\n");
  const std::string cfg = (tmp_ / "runtime.toml").string();
  for (const auto& [flag, value, message] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--log-level", "loud", "--log-level: debug, info, warn or error"},
           {"--model", "face", "--model face: expected NAME=SLOT"},
           {"--tcp", "nowhere", "--tcp: "}}) {
    auto r = run({"serve", "--config", cfg, flag, value});
    EXPECT_EQ(r.exit_code, 2) << flag << ": " << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("Run 'mota-runtime --help' for usage."), std::string::npos) << r.err;
  }
  // A bad config file is the operation failing, not a usage error.
  test::write_file(tmp_ / "bad.toml", "pool_size = 0\n");
  auto bad = run({"serve", "--config", (tmp_ / "bad.toml").string()});
  EXPECT_EQ(bad.exit_code, 1) << bad.err;

  // An operation that fails is not a usage error: an input of the wrong size for the model.
  testing::SlotSpec face;
  face.onnx = testing::slim_onnx();
  testing::make_slot(tmp_ / "face", face);
  test::write_file(tmp_ / "short.bin", std::string(100, '\0'));
  auto f = run({"run", (tmp_ / "face").string(), "--input", (tmp_ / "short.bin").string(),
                "--output", (tmp_ / "out.bin").string()});
  EXPECT_EQ(f.exit_code, 1) << f.err;
  EXPECT_NE(f.err.find("mota-runtime: error: "), std::string::npos) << f.err;
}

TEST_F(RuntimeCliTest, VersionAndHelp) {
  auto v = run({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out, std::string("mota-runtime ") + kVersion + "\n");
  auto h = run({"--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("inspect"), std::string::npos);
  auto ih = run({"inspect", "--help"});
  EXPECT_EQ(ih.exit_code, 0);
  EXPECT_NE(ih.out.find("--json"), std::string::npos);
}

TEST_F(RuntimeCliTest, InspectARealModel) {
  const auto slim = test::shared_model("ultraface/version-slim-320.onnx").string();
  auto r = run({"inspect", slim});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* want :
       {"ONNX IR version 4, made by pytorch 1.2", "opsets: ai.onnx 9",
        "inputs:\n  input  float32 "
        "[1,3,240,320]\n",
        "outputs:\n  scores  float32 [1,4420,2]\n  boxes   float32 [1,4420,4]\n",
        "operators (217 nodes): Add 2, BatchNormalization 25, Concat 12, Constant 31, Conv 42",
        "initializers: 184", "backend (OpenCV DNN 4.6): nothing known to fail",
        "model.json skeleton (edit before publishing):"}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
  }
  auto j = run({"inspect", slim, "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  Json doc = Json::parse(j.out);
  EXPECT_EQ(doc["ok"], true);
  EXPECT_EQ(doc["ir_version"], 4);
  EXPECT_EQ(doc["opsets"], Json::parse(R"([{"domain": "ai.onnx", "version": 9}])"));
  EXPECT_EQ(doc["inputs"],
            Json::parse(R"([{"name": "input", "dtype": "float32", "shape": [1, 3, 240, 320]}])"));
  EXPECT_EQ(doc["operators"]["Conv"], 42);
  EXPECT_EQ(doc["backend"]["ok"], true);
  EXPECT_EQ(doc["manifest"], nullptr);
  // The skeleton is a model.json the manifest parser accepts once a version is added.
  Json sk = doc["skeleton"];
  EXPECT_EQ(sk["name"], "version-slim-320");
  EXPECT_EQ(sk["entry"], "version-slim-320.onnx");
  EXPECT_EQ(sk["outputs"][1], Json::parse(R"({"name": "boxes", "dtype": "float32",
                                               "shape": [1, 4420, 4]})"));
  sk["version"] = "1.0.0";
  auto parsed = mota::ModelManifest::parse(sk.dump(), /*require_files=*/false);
  EXPECT_TRUE(parsed) << parsed.error().message();
}

TEST_F(RuntimeCliTest, InspectADirectoryComparesModelJson) {
  testing::SlotSpec s;
  s.onnx = testing::slim_onnx();
  s.inputs[0]["shape"] = {1, 3, 480, 640};
  s.outputs[1]["dtype"] = "float16";
  testing::make_slot(tmp_ / "face", s);
  auto r = run({"inspect", (tmp_ / "face").string()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("model.json: DIFFERS from the graph:\n"
                       "  - model.json input 'input' has shape [1,3,480,640], the graph says "
                       "[1,3,240,320]\n"
                       "  - model.json output 'boxes' is float16, the graph says float32\n"),
            std::string::npos)
      << r.out;
  auto j = run({"inspect", (tmp_ / "face").string(), "--json"});
  EXPECT_EQ(j.exit_code, 1);
  Json doc = Json::parse(j.out);
  EXPECT_EQ(doc["ok"], false);
  EXPECT_EQ(doc["backend"]["ok"], true);
  EXPECT_EQ(doc["manifest"]["ok"], false);
  EXPECT_EQ(doc["manifest"]["problems"].size(), 2u);
  EXPECT_EQ(doc["skeleton"]["name"], "face");

  // Agreeing model.json: exit 0.
  testing::SlotSpec good;
  good.onnx = testing::slim_onnx();
  testing::make_slot(tmp_ / "good", good);
  auto g = run({"inspect", (tmp_ / "good").string()});
  EXPECT_EQ(g.exit_code, 0) << g.out << g.err;
  EXPECT_NE(g.out.find("model.json: inputs and outputs match the graph"), std::string::npos);
}

TEST_F(RuntimeCliTest, InspectRefusalsAndUnreadableModels) {
  onnx::Model m = onnx::unary("Relu", {1, 4}, 18);
  m.graph.nodes = {onnx::node("ReduceMean", {"x", "axes"}, {"y"})};
  m.graph.initializers = {onnx::int64s("axes", {1}, {1})};
  test::write_file(tmp_ / "reduce.onnx", m.bytes());
  auto r = run({"inspect", (tmp_ / "reduce.onnx").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("backend (OpenCV DNN 4.6): REFUSED, known to get this model wrong:\n"
                       "  - ReduceMean (opset 18, 1 node, axes given as an input (opset 18 "
                       "form)): the axes input is ignored"),
            std::string::npos)
      << r.out;
  auto j = run({"inspect", (tmp_ / "reduce.onnx").string(), "--json"});
  EXPECT_EQ(j.exit_code, 1);
  Json doc = Json::parse(j.out);
  EXPECT_EQ(doc["backend"]["ok"], false);
  EXPECT_EQ(doc["backend"]["refusals"][0]["what"],
            "ReduceMean (opset 18, 1 node, axes given as an input (opset 18 form))");

  test::write_file(tmp_ / "cut.onnx", testing::slim_onnx().substr(0, 754));
  auto cut = run({"inspect", (tmp_ / "cut.onnx").string()});
  EXPECT_EQ(cut.exit_code, 1);
  EXPECT_NE(cut.err.find("mota-runtime: error: inspect: " + (tmp_ / "cut.onnx").string() +
                         ": not an ONNX model: truncated field at byte "),
            std::string::npos)
      << cut.err;
  auto cutj = run({"inspect", (tmp_ / "cut.onnx").string(), "--json"});
  EXPECT_EQ(cutj.exit_code, 1);
  EXPECT_EQ(Json::parse(cutj.out)["ok"], false);
  auto missing = run({"inspect", (tmp_ / "none.onnx").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("none.onnx"), std::string::npos);

  // A model directory of another framework: nothing to inspect.
  test::write_file(tmp_ / "gguf" / "model.json",
                   R"({"name": "llm", "framework": "gguf", "entry": "m.gguf"})");
  auto other = run({"inspect", (tmp_ / "gguf").string()});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("framework \"gguf\": inspect reads ONNX models only"), std::string::npos)
      << other.err;
}

// The receiving end of NOTIFY_SOCKET: every datagram, in order.
class NotifyListener {
 public:
  explicit NotifyListener(const std::filesystem::path& path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd_, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  ~NotifyListener() { ::close(fd_); }
  NotifyListener(const NotifyListener&) = delete;
  NotifyListener& operator=(const NotifyListener&) = delete;

  // Reads datagrams until one contains `what` or `timeout` passes without any; true if found.
  bool wait_for(const std::string& what, std::chrono::milliseconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return false;
      seen.emplace_back(buf, static_cast<std::size_t>(n));
      if (seen.back().find(what) != std::string::npos) return true;
    }
  }
  std::vector<std::string> seen;

 private:
  int fd_ = -1;
};

TEST_F(RuntimeCliTest, ServeTellsSystemdReadyWatchdogAndStopping) {
  // WatchdogSec= of 400 ms: keep-alives every ~200 ms, each after the API answered.
  test::write_file(tmp_ / "runtime.toml",
                   "socket = \"" + (tmp_ / "api.sock").string() + "\"\nlog_level = \"warn\"\n");
  NotifyListener notify(tmp_ / "notify.sock");
  test::Process rt(
      {bin(), "serve", "--config", (tmp_ / "runtime.toml").string()}, tmp_ / "runtime.log",
      {{"NOTIFY_SOCKET", (tmp_ / "notify.sock").string()}, {"WATCHDOG_USEC", "400000"}});
  ASSERT_TRUE(notify.wait_for("READY=1", std::chrono::seconds(60)))
      << test::read_file(tmp_ / "runtime.log");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(notify.wait_for("WATCHDOG=1", std::chrono::seconds(10)))
        << "keep-alive " << i << "; log: " << test::read_file(tmp_ / "runtime.log");
  }
  rt.kill(SIGTERM);
  EXPECT_TRUE(notify.wait_for("STOPPING=1", std::chrono::seconds(30)));
  EXPECT_EQ(rt.wait(), 0);

  // Without WATCHDOG_USEC: READY=1 and STOPPING=1, and no keep-alive in between.
  NotifyListener quiet(tmp_ / "quiet.sock");
  test::Process plain({bin(), "serve", "--config", (tmp_ / "runtime.toml").string()},
                      tmp_ / "plain.log", {{"NOTIFY_SOCKET", (tmp_ / "quiet.sock").string()}});
  ASSERT_TRUE(quiet.wait_for("READY=1", std::chrono::seconds(60)));
  plain.kill(SIGTERM);
  EXPECT_TRUE(quiet.wait_for("STOPPING=1", std::chrono::seconds(30)));
  EXPECT_EQ(plain.wait(), 0);
  for (const auto& m : quiet.seen) EXPECT_EQ(m.find("WATCHDOG=1"), std::string::npos) << m;
}

}  // namespace
}  // namespace mota::runtime
