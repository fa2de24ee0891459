// Fleet tracking end to end on loopback: three real `mota-agent` processes (own state dirs, keys
// and ids) report to one real `mota serve`; a staged rollout advances by itself, the fleet views
// match what each agent says about itself, a rollout of a version whose served bytes are damaged
// halts itself and republishes the previous version, and hostile requests to the report route
// change nothing.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>

#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "tests/support/mota_cli.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

const std::vector<std::string> kDevices = {"edge-a", "edge-b", "edge-c"};

class FleetEndToEnd : public ::testing::Test {
 protected:
  void SetUp() override {
    auto repo = manager::Repository::init(repo_dir(), manager::Settings{});
    ASSERT_TRUE(repo) << repo.error().message();
    repo_ = std::make_unique<manager::Repository>(std::move(*repo));
    for (const char* v : {"1.0.0", "2.0.0", "3.0.0"}) {
      auto src = work_ / (std::string("src-") + v);
      test::make_model_dir(src, std::string(50000, v[0]) + v);
      auto r = repo_->add_release(src, v);
      ASSERT_TRUE(r) << r.error().message();
      releases_[v] = *r;
    }
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = "1.0.0";
    ASSERT_TRUE(repo_->set_channel(req));

    port_ = test::free_port();
    base_ = "http://127.0.0.1:" + std::to_string(port_);
    server_ = std::make_unique<test::Process>(
        std::vector<std::string>{mota_bin(), "serve", "--repo", repo_dir().string(), "--listen",
                                 "127.0.0.1:" + std::to_string(port_), "--rollout-interval",
                                 "200ms", "--admission", "automatic"},
        work_ / "serve.log");
    ASSERT_TRUE(test::wait_for_port(port_)) << test::read_file(work_ / "serve.log");
    for (const auto& id : kDevices) {
      auto dir = work_ / id;
      test::write_file(
          dir / "agent.toml",
          "server_url = \"" + base_ + "\"\nstate_dir = \"" + (dir / "state").string() +
              "\"\nupdate_lock = \"" + (dir / "state").string() +
              "/update.lock\"\ntrusted_root = \"" +
              (repo_dir() / "repo" / "metadata" / "1.root.json").string() + "\"\ndevice_id = \"" +
              id +
              "\"\nlog_level = \"warn\"\n[retry]\nmax_attempts = 1\n"
              "[health]\nenabled = false\n[[model]]\nname = \"detector\"\nchannel = \"stable\"\n");
    }
  }

  stdfs::path repo_dir() const { return work_ / "fleet"; }
  static std::string mota_bin() { return test::build_path("manager/mota").string(); }

  test::RunResult mota(std::vector<std::string> args) {
    return test::mota_cli(repo_dir(), std::move(args));
  }
  Json mota_json(std::vector<std::string> args) {
    return test::mota_cli_json(repo_dir(), std::move(args));
  }
  test::RunResult agent(const std::string& id, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {test::build_path("agent/mota-agent").string(), "--config",
                                     (work_ / id / "agent.toml").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::run(argv);
  }
  void poll_all() {
    for (const auto& id : kDevices) {
      auto r = agent(id, {"check-once"});
      if (::getenv("FLEET_TEST_VERBOSE"))
        std::fprintf(stderr, "%s: %s%s\n", id.c_str(), r.out.c_str(), r.err.c_str());
    }
  }
  // Waits for `mota serve`'s rollout ticker to move the rollout to one of `states`.
  Json wait_rollout(const std::vector<std::string>& states, std::chrono::milliseconds limit) {
    Json j;
    const auto until = std::chrono::steady_clock::now() + limit;
    do {
      j = mota_json({"rollout", "status", "stable", "detector"});
      for (const auto& s : states) {
        if (j.value("state", "") == s) return j;
      }
      std::this_thread::sleep_for(100ms);
    } while (std::chrono::steady_clock::now() < until);
    return j;
  }
  // `mota devices --json` and `mota fleet --json` against each agent's own status.
  void expect_views_match_agents(const std::string& version) {
    Json rows = mota_json({"devices", "--model", "detector"});
    ASSERT_EQ(rows.size(), kDevices.size()) << rows.dump(2);
    for (const auto& id : kDevices) {
      auto st = agent(id, {"status", "--json"});
      ASSERT_EQ(st.exit_code, 0) << st.err;
      const std::string own = Json::parse(st.out)["models"][0]["version"];
      EXPECT_EQ(own, version) << id;
      bool found = false;
      for (const auto& row : rows) {
        if (row["device"] == id) {
          found = true;
          EXPECT_EQ(row["version"], own) << id;
        }
      }
      EXPECT_TRUE(found) << id;
    }
    Json fleet = mota_json({"fleet"});
    ASSERT_EQ(fleet["models"].size(), 1u) << fleet.dump(2);
    EXPECT_EQ(fleet["devices"], kDevices.size());
    for (const auto& v : fleet["models"][0]["versions"]) {
      EXPECT_EQ(v["devices"], v["version"] == version ? kDevices.size() : 0u) << fleet.dump(2);
    }
  }

  test::TempDir work_;
  std::unique_ptr<manager::Repository> repo_;
  std::map<std::string, manager::Release> releases_;
  int port_ = 0;
  std::string base_;
  std::unique_ptr<test::Process> server_;
};

TEST_F(FleetEndToEnd, RolloutAdvancesThenAFailingVersionHaltsItself) {
  poll_all();
  expect_views_match_agents("1.0.0");

  auto r = mota({"rollout", "start", "stable", "detector", "2.0.0", "--percent", "50,100",
                 "--max-failure-rate", "5%", "--min-devices", "1", "--step-after", "0s"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json status;
  for (int round = 0; round < 3; ++round) {
    poll_all();
    status = wait_rollout({"completed"}, 1500ms);
    if (status["state"] == "completed") break;
  }
  ASSERT_EQ(status["state"], "completed") << status.dump(2) << test::read_file(work_ / "serve.log");
  // The last step completes once min-devices reported; the others follow at their next poll.
  EXPECT_GE(status["updated"].get<int>(), 1);
  poll_all();
  expect_views_match_agents("2.0.0");

  // 3.0.0's served package is damaged: every device's install fails with a "failed" event.
  auto served = repo_dir() / "repo" / "targets" / "models" / "detector" / "3.0.0" /
                (releases_["3.0.0"].sha256 + ".detector-3.0.0.mota");
  auto bytes = test::read_file(served);
  bytes[bytes.size() / 2] ^= 0x5a;
  test::write_file(served, bytes);
  r = mota({"rollout", "start", "stable", "detector", "3.0.0", "--percent", "100",
            "--max-failure-rate", "5%", "--min-devices", "1", "--step-after", "0s"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  poll_all();
  status = wait_rollout({"halted"}, 5000ms);
  ASSERT_EQ(status["state"], "halted") << status.dump(2);
  // The first failure already halts it (failure rate 100% of the devices that reported).
  EXPECT_GE(status["failed"].get<int>(), 1);
  EXPECT_NE(status["transitions"].back()["reason"].get<std::string>().find("republished 2.0.0"),
            std::string::npos)
      << status.dump(2);
  auto channels = repo_->show_channels("stable");
  ASSERT_TRUE(channels);
  EXPECT_EQ(channels->at(0).version, "2.0.0");
  EXPECT_EQ(channels->at(0).rollout.percent, 100u);
  // The devices stay on (and are told to run) 2.0.0; the views say so, with the failures.
  poll_all();
  expect_views_match_agents("2.0.0");
  auto show = mota({"device", "show", "edge-a"});
  EXPECT_EQ(show.exit_code, 0);
  EXPECT_NE(show.out.find("sha256 mismatch"), std::string::npos) << show.out;
  auto text = mota({"rollout", "status", "stable", "detector"});
  EXPECT_NE(text.out.find("halted"), std::string::npos) << text.out;
  EXPECT_EQ(mota({"device", "show", "nobody"}).exit_code, 1);
  EXPECT_EQ(
      mota({"rollout", "start", "stable", "detector", "2.0.0", "--percent", "5,25"}).exit_code, 2);
}

// Raw HTTP: a header block and `body_prefix`, announcing `content_length`; returns the answer.
std::string raw_post(int port, const std::string& path, std::uint64_t content_length,
                     const std::string& body_prefix, bool expect_continue = false) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "";
  }
  std::string req = "POST " + path +
                    " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                    "application/json\r\nContent-Length: " +
                    std::to_string(content_length) + "\r\nConnection: close\r\n" +
                    (expect_continue ? "Expect: 100-continue\r\n\r\n" : "\r\n" + body_prefix);
  (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, std::size_t(n));
  ::close(fd);
  return out;
}

// `mota serve` with the default admission: real agents that report are pending until an
// operator accepts them, except the one whose image carries a fleet enrollment key; an image
// with a broken key fails at start, naming it.
TEST_F(FleetEndToEnd, PendingByDefaultAndAnEnrollmentKeyAdmits) {
  server_.reset();
  server_ = std::make_unique<test::Process>(
      std::vector<std::string>{mota_bin(), "serve", "--repo", repo_dir().string(), "--listen",
                               "127.0.0.1:" + std::to_string(port_), "--rollout-interval", "0s"},
      work_ / "serve2.log");
  ASSERT_TRUE(test::wait_for_port(port_)) << test::read_file(work_ / "serve2.log");
  const auto key = work_ / "enrollment.pem";
  auto r = mota({"enrollment", "create", "factory", "--out", key.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto toml = work_ / "edge-a" / "agent.toml";
  const std::string config = test::read_file(toml);
  test::write_file(toml, "enrollment_key = \"" + (work_ / "broken.pem").string() + "\"\n" + config);
  test::write_file(work_ / "broken.pem", "not a key");
  auto broken = agent("edge-a", {"check-once"});
  EXPECT_NE(broken.exit_code, 0);
  EXPECT_NE(broken.err.find("enrollment_key " + (work_ / "broken.pem").string()), std::string::npos)
      << broken.err;
  test::write_file(toml, "enrollment_key = \"" + key.string() + "\"\n" + config);
  poll_all();

  Json rows = mota_json({"devices"});
  ASSERT_EQ(rows.size(), kDevices.size()) << rows.dump(2);
  for (const auto& row : rows) {
    EXPECT_EQ(row["admission"], row["device"] == "edge-a" ? "admitted" : "pending") << row.dump();
  }
  Json fleet = mota_json({"fleet"});
  EXPECT_EQ(fleet["devices"], 1);
  EXPECT_EQ(fleet["pending"], 2);
  ASSERT_EQ(fleet["models"].size(), 1u) << fleet.dump(2);
  EXPECT_EQ(fleet["models"][0]["devices"], 1) << "pending devices are not counted";
  Json edge_a = mota_json({"device", "show", "edge-a"});
  EXPECT_EQ(edge_a["admitted_by"], "enrollment:factory");

  r = mota({"devices", "accept", "--all-pending"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  fleet = mota_json({"fleet"});
  EXPECT_EQ(fleet["devices"], 3);
  EXPECT_EQ(fleet["models"][0]["devices"], 3);
}

TEST_F(FleetEndToEnd, HostileRequestsAreRefusedAndChangeNothing) {
  poll_all();
  const std::string before = mota({"devices", "--json"}).out;
  // 100 MB announced (with Expect: 100-continue, as curl sends for big bodies): refused from the
  // headers, the body is never sent.
  auto answer = raw_post(port_, "/v1/devices/edge-a/events", 100u << 20, "", true);
  EXPECT_NE(answer.find(" 413 "), std::string::npos) << answer;
  // Unsigned and malformed.
  answer = raw_post(port_, "/v1/devices/edge-a/events", 9, "{\"device\"");
  EXPECT_NE(answer.find(" 401 "), std::string::npos) << answer;
  EXPECT_NE(answer.find("X-Mota-Device is missing"), std::string::npos) << answer;
  EXPECT_EQ(mota({"devices", "--json"}).out, before);
  // A device whose key changed (its key file replaced) is refused, the old key stays on record.
  stdfs::remove(work_ / "edge-b" / "state" / "device.key");
  stdfs::remove(work_ / "edge-b" / "state" / "status" / "heartbeat");  // so it has a report
  (void)agent("edge-b", {"check-once"});
  const std::string log = test::read_file(work_ / "serve.log");
  EXPECT_NE(log.find("is not the key on record for device edge-b"), std::string::npos) << log;
  EXPECT_EQ(mota({"devices", "--json"}).out, before);
}

}  // namespace
}  // namespace mota
