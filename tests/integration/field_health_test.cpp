// Field health end to end: real `mota-agent` processes on two devices, each with its own real
// mota-runtime, update from a real `mota serve` (repository and reports). The test plays the
// devices' applications: it runs inferences on each runtime. The agents report what the runtime
// counted (inferences, errors, latency histogram) in their heartbeats; a rollout of a version
// that is much slower than the previous one on the same devices is halted by the field gate
// (--max-latency-regression) and the devices go back, though every install of it succeeded.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "manager/release/release.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "tests/runtime/runtime_support.hpp"
#include "tests/support/mota_cli.hpp"
#include "tests/support/onnx_builder.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using runtime::testing::RuntimeProcess;

constexpr int kDim = 128;

// y = x·w·w·…·w (`layers` products of 128×128 matrices; 0: y = relu(x)): the same interface at
// any cost, so a version can be made slower and nothing else.
std::string matmul_model(int layers) {
  namespace onnx = test::onnx;
  onnx::Model m;
  m.graph.inputs = {onnx::value("x", {kDim, kDim})};
  m.graph.outputs = {onnx::value("y", {kDim, kDim})};
  if (layers == 0) {
    m.graph.nodes = {onnx::node("Relu", {"x"}, {"y"})};
    return m.bytes();
  }
  m.graph.initializers = {onnx::floats(
      "w", {kDim, kDim}, std::vector<float>(std::size_t(kDim * kDim), 1.0f / float(kDim)))};
  std::string prev = "x";
  for (int i = 0; i < layers; ++i) {
    const std::string out = i + 1 == layers ? "y" : "h" + std::to_string(i);
    m.graph.nodes.push_back(onnx::node("MatMul", {prev, "w"}, {out}));
    prev = out;
  }
  return m.bytes();
}

class FieldHealth : public ::testing::Test {
 protected:
  void SetUp() override {
    auto repo = manager::Repository::init(repo_dir(), manager::Settings{});
    ASSERT_TRUE(repo) << repo.error().message();
    repo_ = std::make_unique<manager::Repository>(std::move(*repo));
    ASSERT_NO_FATAL_FAILURE(release("1.0.0", 0));
    ASSERT_NO_FATAL_FAILURE(release("2.0.0", 24));
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "face";
    req.version = "1.0.0";
    ASSERT_TRUE(repo_->set_channel(req));

    port_ = test::free_port();
    server_ = std::make_unique<test::Process>(
        std::vector<std::string>{mota_bin(), "serve", "--repo", repo_dir().string(), "--listen",
                                 "127.0.0.1:" + std::to_string(port_), "--rollout-interval", "0s",
                                 "--admission", "automatic"},
        work_ / "serve.log");
    ASSERT_TRUE(test::wait_for_port(port_)) << test::read_file(work_ / "serve.log");
    for (const char* id : {"cam-1", "cam-2"}) {
      const auto dir = work_ / id;
      stdfs::create_directories(dir / "health.d");
      runtimes_.push_back(std::make_unique<RuntimeProcess>(dir, std::vector<std::string>{}));
      const std::string url = "http://127.0.0.1:" + std::to_string(port_);
      test::write_file(
          dir / "agent.toml",
          "server_url = \"" + url + "\"\nreport_url = \"" + url + "\"\nstate_dir = \"" +
              (dir / "state").string() + "\"\nupdate_lock = \"" + (dir / "update.lock").string() +
              "\"\ntrusted_root = \"" +
              (repo_dir() / "repo" / "metadata" / "1.root.json").string() + "\"\ndevice_id = \"" +
              id + "\"\nheartbeat_interval = \"0s\"\nlog_level = \"warn\"\nruntime_socket = \"" +
              runtimes_.back()->socket().string() +
              "\"\n[retry]\nmax_attempts = 1\n[health]\nruntime_binary = \"" +
              test::build_path("runtime/mota-runtime").string() + "\"\nhooks_dir = \"" +
              (dir / "health.d").string() +
              "\"\nretry_backoff = \"0s\"\n[[model]]\nname = \"face\"\nchannel = \"stable\"\n");
      ids_.push_back(id);
    }
  }

  void release(const std::string& version, int layers) {
    runtime::testing::SlotSpec spec;
    spec.version = version;
    spec.onnx = matmul_model(layers);
    spec.inputs = Json::array({{{"name", "x"}, {"shape", {kDim, kDim}}, {"dtype", "float32"}}});
    spec.outputs = Json::array({{{"name", "y"}, {"shape", {kDim, kDim}}, {"dtype", "float32"}}});
    const auto src = work_ / ("src-" + version);
    runtime::testing::make_slot(src, spec);
    auto r = repo_->add_release(src, version);
    ASSERT_TRUE(r) << r.error().message();
  }

  stdfs::path repo_dir() const { return work_ / "fleet"; }
  static std::string mota_bin() { return test::build_path("manager/mota").string(); }
  test::RunResult mota(std::vector<std::string> args) {
    return test::mota_cli(repo_dir(), std::move(args));
  }
  Json mota_json(std::vector<std::string> args) {
    return test::mota_cli_json(repo_dir(), std::move(args));
  }
  // One poll of every device (its agent serves what is committed, then polls and reports).
  void poll_all() {
    for (std::size_t i = 0; i < ids_.size(); ++i) {
      auto r = test::run({test::build_path("agent/mota-agent").string(), "--config",
                          (work_ / ids_[i] / "agent.toml").string(), "check-once"});
      EXPECT_EQ(r.exit_code, 0) << ids_[i] << ": " << r.out << r.err;
    }
  }
  // The devices' applications at work: `n` inferences on every runtime; each must be answered by
  // `version`.
  void run_inferences(int n, const std::string& version) {
    const std::string input(std::size_t(kDim * kDim) * sizeof(float), '\0');
    for (const auto& rt : runtimes_) {
      runtime::Client c(rt->options());
      for (int i = 0; i < n; ++i) {
        auto r = c.infer("face", {{"x", runtime::DType::float32, {kDim, kDim}, input}});
        ASSERT_TRUE(r) << r.error().message();
        ASSERT_EQ(r->version, version);
      }
    }
  }

  test::TempDir work_;
  std::unique_ptr<manager::Repository> repo_;
  int port_ = 0;
  std::unique_ptr<test::Process> server_;
  std::vector<std::unique_ptr<RuntimeProcess>> runtimes_;
  std::vector<std::string> ids_;
};

TEST_F(FieldHealth, ASlowerVersionInTheFieldHaltsItsRolloutAndTheDevicesGoBack) {
  poll_all();  // 1.0.0 installed and served
  ASSERT_NO_FATAL_FAILURE(run_inferences(300, "1.0.0"));
  poll_all();  // heartbeats carry 1.0.0's field health

  auto r =
      mota({"rollout", "start", "stable", "face", "2.0.0", "--percent", "100", "--min-devices", "1",
            "--step-after", "0s", "--max-latency-regression", "50%", "--min-inferences", "500"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  poll_all();  // 2.0.0 installed: probed, tried and committed (it works; it is only slower)
  ASSERT_NO_FATAL_FAILURE(run_inferences(200, "2.0.0"));
  // 400 runs of 2.0.0 in all, not yet 500: the gated step waits, neither halted nor completed.
  poll_all();
  r = mota({"rollout", "tick"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json status = mota_json({"rollout", "status", "stable", "face"});
  EXPECT_EQ(status["state"], "running") << status.dump(2);
  EXPECT_EQ(status["field"]["version"]["devices"], 2) << status.dump(2);

  ASSERT_NO_FATAL_FAILURE(run_inferences(100, "2.0.0"));
  poll_all();
  r = mota({"rollout", "tick"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  status = mota_json({"rollout", "status", "stable", "face"});
  ASSERT_EQ(status["state"], "halted") << status.dump(2);
  const std::string reason = status["transitions"].back()["reason"].get<std::string>();
  EXPECT_NE(reason.find("field p99 latency"), std::string::npos) << reason;
  EXPECT_NE(reason.find("1.0.0's"), std::string::npos) << reason;
  EXPECT_NE(reason.find("on the same 2 devices"), std::string::npos) << reason;
  const Json& same = status["field"]["same_devices"];
  EXPECT_GT(same["version"]["p99_ms"].get<double>(), 1.5 * same["previous"]["p99_ms"].get<double>())
      << status.dump(2);

  // The fleet view shows the field health of the versions devices run.
  auto field_of = [&](const std::string& version) {
    Json fleet = mota_json({"fleet"});
    for (const auto& v : fleet["models"][0]["versions"]) {
      if (v["version"] == version) return v.value("field", Json());
    }
    return Json();
  };
  Json slow = field_of("2.0.0");
  ASSERT_TRUE(slow.is_object()) << mota({"fleet", "--json"}).out;
  EXPECT_EQ(slow["inferences"], 600);
  EXPECT_EQ(slow["devices"], 2);

  // The halt gave 1.0.0 back: the devices go back to it.
  poll_all();
  ASSERT_NO_FATAL_FAILURE(run_inferences(1, "1.0.0"));
  Json fast = field_of("1.0.0");
  ASSERT_TRUE(fast.is_object()) << mota({"fleet", "--json"}).out;
  EXPECT_EQ(fast["inferences"], 600);
  const auto text = mota({"fleet"});
  EXPECT_NE(text.out.find("P99 MS"), std::string::npos) << text.out;
}

// Between hourly heartbeats, field health goes out every field_interval, and only when the models
// ran: a poll with nothing new sends nothing, also from check-once (a fresh process each time).
TEST_F(FieldHealth, FieldIntervalSendsHeartbeatsOnlyWhenTheModelsRan) {
  const auto config = work_ / "cam-1" / "agent.toml";
  std::string text = test::read_file(config);
  const std::string every_poll = "heartbeat_interval = \"0s\"";
  text.replace(text.find(every_poll), every_poll.size(),
               "heartbeat_interval = \"1h\"\nfield_interval = \"5s\"");
  test::write_file(config, text);
  auto poll = [&] {
    auto r = test::run(
        {test::build_path("agent/mota-agent").string(), "--config", config.string(), "check-once"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  };
  // The last heartbeat, `seconds` ago (its stamp is how the agent knows when it sent one).
  auto heartbeat_was = [&](int seconds) {
    stdfs::last_write_time(work_ / "cam-1" / "state" / "status" / "heartbeat",
                           stdfs::file_time_type::clock::now() - std::chrono::seconds(seconds));
  };
  auto heartbeats = [&] {
    Json d = mota_json({"device", "show", "cam-1"});
    int n = 0;
    for (const auto& e : d["events"]) n += e["kind"] == "heartbeat";
    return n;
  };
  auto inferences = [&]() -> std::uint64_t {
    Json d = mota_json({"device", "show", "cam-1"});
    return d["field"].empty() ? 0 : d["field"][0]["inferences"].get<std::uint64_t>();
  };
  poll();  // installs 1.0.0; the first heartbeat
  // Until the server has heard of the runtime's load of 1.0.0 (the install's trial load, or the
  // agent's own when it serves the committed slot), a poll past field_interval says it (0 runs);
  // then one with nothing new sends nothing.
  int first = heartbeats();
  for (int i = 0; i < 3; ++i) {
    heartbeat_was(10);
    poll();
    const int now = heartbeats();
    if (now == first) break;
    first = now;
  }
  heartbeat_was(10);
  poll();  // nothing ran: no heartbeat, though field_interval has passed
  EXPECT_EQ(heartbeats(), first);

  runtime::Client c(runtimes_[0]->options());
  const std::string input(std::size_t(kDim * kDim) * sizeof(float), '\0');
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(c.infer("face", {{"x", runtime::DType::float32, {kDim, kDim}, input}}));
  }
  heartbeat_was(1);
  poll();  // ran, but the last heartbeat is younger than field_interval
  EXPECT_EQ(heartbeats(), first);
  heartbeat_was(10);
  poll();  // ran, and field_interval has passed: a heartbeat with the counts
  EXPECT_EQ(heartbeats(), first + 1);
  EXPECT_EQ(inferences(), 50u);
}

}  // namespace
}  // namespace mota
