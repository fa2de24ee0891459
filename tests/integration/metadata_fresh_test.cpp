// Metadata stays fresh without a human (issue 15): with a 20-second timestamp lifetime, a real
// `mota serve` re-signs what is due by itself and a real `mota-agent run` daemon, polling every
// 2 s, installs every version published over two minutes (with a long quiet stretch) without a
// single failed poll. The same with `mota serve --no-refresh` and `mota timestamp refresh` run
// periodically, as mota-refresh.timer would; and without any refresh the agent's polls fail with
// the expiry error, which shows these tests can fail.
//
// The agent's sd_notify datagrams tell the test about every poll: "STATUS=idle: ..." after a
// successful one, "STATUS=last poll failed: <reason>" after a failed one.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/http.hpp"
#include "common/time.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/tuf/metadata.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The receiving end of NOTIFY_SOCKET: counts the agent's polls and keeps every failure.
class PollWatcher {
 public:
  explicit PollWatcher(const stdfs::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    EXPECT_GE(fd_, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    EXPECT_LT(path.string().size(), sizeof addr.sun_path);
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    // Room for minutes of datagrams while the test runs a publish.
    int size = 1 << 20;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  ~PollWatcher() { ::close(fd_); }

  // Reads what has arrived.
  void drain() {
    char buf[8192];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return;
      const std::string m(buf, static_cast<std::size_t>(n));
      if (m.find("STATUS=idle: ") != std::string::npos) {
        ++polls_;
        if (m.find("(update failed)") != std::string::npos) failures_.push_back(m);
      } else if (m.find("STATUS=last poll failed: ") != std::string::npos) {
        ++polls_;
        failures_.push_back(m);
      }
    }
  }
  int polls() const { return polls_; }
  const std::vector<std::string>& failures() const { return failures_; }
  std::string failure_text() const {
    std::string s;
    for (const auto& f : failures_) s += f + "\n";
    return s;
  }

 private:
  stdfs::path path_;
  int fd_ = -1;
  int polls_ = 0;
  std::vector<std::string> failures_;
};

class MetadataFresh : public ::testing::Test {
 protected:
  stdfs::path dir() const { return work_ / "repo"; }
  stdfs::path state() const { return work_ / "state"; }
  static std::string mota_bin() { return test::build_path("manager/mota").string(); }

  test::RunResult mota(std::vector<std::string> args) {
    args.insert(args.begin(), {mota_bin(), "--repo", dir().string()});
    return test::run(args);
  }

  void init(const std::string& expires) {
    auto r = test::run({mota_bin(), "init", dir().string(), "--expires", expires});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // A fake model (not ONNX, hence framework "other") released and put on the channel.
  void publish(const std::string& version) {
    const auto src = work_ / ("src-" + version);
    test::write_file(src / "model.json",
                     R"({"name": "detector", "version": "0.0.1", "framework": "other",
                         "entry": "model.bin"})");
    test::write_file(src / "model.bin", std::string(20000, 'w') + version);
    auto r = mota({"release", "add", src.string(), "--version", version});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = mota({"channel", "set", "stable", "detector", version});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  void start_serve(std::vector<std::string> extra = {}) {
    port_ = test::free_port();
    std::vector<std::string> argv = {
        mota_bin(),           "serve",    "--repo",
        dir().string(),       "--listen", "127.0.0.1:" + std::to_string(port_),
        "--rollout-interval", "0s"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    serve_ = std::make_unique<test::Process>(argv, serve_log());
    ASSERT_TRUE(test::wait_for_port(port_)) << test::read_file(serve_log());
  }

  void start_agent(const std::string& poll_interval) {
    const std::string url = "http://127.0.0.1:" + std::to_string(port_);
    test::write_file(work_ / "agent.toml",
                     "server_url = \"" + url + "\"\nstate_dir = \"" + state().string() +
                         "\"\nupdate_lock = \"" + state().string() +
                         "/update.lock\"\ntrusted_root = \"" +
                         (dir() / "repo/metadata/1.root.json").string() +
                         "\"\ndevice_id = \"fresh-1\"\npoll_interval = \"" + poll_interval +
                         "\"\npoll_jitter = 0\n[retry]\nmax_attempts = 2\n[health]\nenabled = "
                         "false\n[[model]]\nname = \"detector\"\nchannel = \"stable\"\n");
    watcher_ = std::make_unique<PollWatcher>(work_ / "notify.sock");
    agent_ = std::make_unique<test::Process>(
        std::vector<std::string>{test::build_path("agent/mota-agent").string(), "--config",
                                 (work_ / "agent.toml").string(), "run"},
        agent_log(),
        std::map<std::string, std::string>{{"NOTIFY_SOCKET", (work_ / "notify.sock").string()}});
  }

  void TearDown() override {
    // The agent first: it reports to the server on its way out.
    if (agent_) {
      agent_->kill(SIGTERM);
      EXPECT_EQ(agent_->wait(), 0) << test::read_file(agent_log());
    }
    if (serve_) {
      serve_->kill(SIGTERM);
      EXPECT_EQ(serve_->wait(), 0) << test::read_file(serve_log());
    }
  }

  stdfs::path serve_log() const { return work_ / "serve.log"; }
  stdfs::path agent_log() const { return work_ / "agent.log"; }

  std::string installed() const {
    std::error_code ec;
    const auto mj = state() / "models/detector/current/model.json";
    if (!stdfs::exists(mj, ec)) return "";
    const Json j = Json::parse(test::read_file(mj), nullptr, false);
    return j.is_object() ? j.value("version", "") : "";
  }

  // The served timestamp.json, checked as a device would see it now: never expired. Returns its
  // version.
  std::uint64_t check_served_timestamp() {
    auto body = http_->get_body(
        "http://127.0.0.1:" + std::to_string(port_) + "/metadata/timestamp.json", 1 << 20);
    EXPECT_TRUE(body.has_value()) << body.error().message();
    if (!body) return 0;
    auto ts = tuf::parse_timestamp(*body);
    EXPECT_TRUE(ts.has_value()) << ts.error().message();
    if (!ts) return 0;
    if (ts->signed_.expires <= now_seconds()) {
      ADD_FAILURE() << "served timestamp version " << ts->signed_.version << " expired at "
                    << format_time(ts->signed_.expires);
      served_expired_ = true;
    }
    return ts->signed_.version;
  }

  // Until `until` (or until `done` holds, when given): watches the agent's polls and the served
  // timestamp. Returns whether `done` held (true when there is none).
  bool watch(Clock::time_point until, const std::function<bool()>& done = {}) {
    for (;;) {
      watcher_->drain();
      if (!watcher_->failures().empty()) return false;
      if (port_ && serve_) last_ts_ = std::max(last_ts_, check_served_timestamp());
      if (served_expired_) return false;
      if (done && done()) return true;
      if (Clock::now() >= until) return !done;
      std::this_thread::sleep_for(250ms);
    }
  }

  bool wait_installed(const std::string& version, std::chrono::seconds limit = 30s) {
    return watch(Clock::now() + limit, [&] { return installed() == version; });
  }

  std::string logs() const {
    return "--- agent log:\n" + test::read_file(agent_log()) + "--- serve log:\n" +
           test::read_file(serve_log()) + "--- poll failures:\n" + watcher_->failure_text();
  }

  static std::size_t count(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
      ++n;
    }
    return n;
  }

  test::TempDir work_;
  int port_ = 0;
  std::unique_ptr<test::Process> serve_;
  std::unique_ptr<test::Process> agent_;
  std::unique_ptr<PollWatcher> watcher_;
  std::unique_ptr<http::Client> http_ = http::make_http_client();
  std::uint64_t last_ts_ = 0;
  bool served_expired_ = false;
};

TEST_F(MetadataFresh, ServeKeepsATwentySecondTimestampFreshAcrossMinutesOfPolls) {
  // Short snapshot and targets lifetimes too, so the refresher renews every online role.
  init("timestamp=20s,snapshot=1m,targets=2m");
  publish("1.0.0");
  start_serve();
  start_agent("2s");
  const auto t0 = Clock::now();
  ASSERT_TRUE(wait_installed("1.0.0")) << logs();

  // Publishes at 20 s and 40 s, then a quiet 80 s (four timestamp lifetimes; targets, last
  // signed at 40 s, falls due at 100 s), then one more release.
  ASSERT_TRUE(watch(t0 + 20s)) << logs();
  publish("2.0.0");
  ASSERT_TRUE(wait_installed("2.0.0")) << logs();
  ASSERT_TRUE(watch(t0 + 40s)) << logs();
  publish("3.0.0");
  ASSERT_TRUE(wait_installed("3.0.0")) << logs();
  const std::size_t quiet_from = test::read_file(serve_log()).size();
  const std::uint64_t ts_before_quiet = last_ts_;
  ASSERT_TRUE(watch(t0 + 120s)) << logs();
  const std::string quiet = test::read_file(serve_log()).substr(quiet_from);
  publish("4.0.0");
  ASSERT_TRUE(wait_installed("4.0.0")) << logs();
  watcher_->drain();

  // No poll failed, and the agent polled all along (about one every 2 s).
  EXPECT_TRUE(watcher_->failures().empty()) << logs();
  EXPECT_GE(watcher_->polls(), 35) << logs();
  const std::string agent_text = test::read_file(agent_log());
  EXPECT_EQ(agent_text.find("expired"), std::string::npos) << logs();
  EXPECT_EQ(agent_text.find("poll failed"), std::string::npos) << logs();
  // In the quiet stretch only serve signed: the timestamp several times, snapshot and targets
  // at least once each.
  EXPECT_GE(count(quiet, "metadata refreshed: re-signed"), 5u) << quiet;
  EXPECT_GE(last_ts_, ts_before_quiet + 5) << quiet;
  EXPECT_NE(quiet.find("re-signed targets version"), std::string::npos) << quiet;
  EXPECT_NE(quiet.find("snapshot version"), std::string::npos) << quiet;
  EXPECT_EQ(test::read_file(serve_log()).find("ERROR"), std::string::npos) << logs();
  auto v = mota({"verify"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

TEST_F(MetadataFresh, PeriodicTimestampRefreshKeepsItFreshWithoutServe) {
  init("timestamp=10s,snapshot=30s,targets=1m");
  publish("1.0.0");
  start_serve({"--no-refresh"});
  start_agent("1s");
  ASSERT_TRUE(wait_installed("1.0.0")) << logs();
  // `mota timestamp refresh` every 2 s, as the timer runs it (refresh only what is due).
  int resigned = 0, idle = 0;
  const auto t0 = Clock::now();
  auto tick = [&] {
    auto r = mota({"timestamp", "refresh"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    if (r.out.find("nothing was due") != std::string::npos) {
      ++idle;
    } else {
      ++resigned;
    }
  };
  bool published = false;
  for (auto next = t0; Clock::now() < t0 + 40s; next += 2s) {
    if (!published && Clock::now() >= t0 + 20s) {
      publish("2.0.0");
      published = true;
    }
    tick();
    ASSERT_TRUE(watch(next + 2s)) << logs();
  }
  ASSERT_TRUE(wait_installed("2.0.0", 10s)) << logs();
  watcher_->drain();
  EXPECT_TRUE(watcher_->failures().empty()) << logs();
  EXPECT_GE(watcher_->polls(), 20) << logs();
  EXPECT_GE(resigned, 4) << "40 s of a 10 s timestamp";
  EXPECT_GE(idle, 4) << "a refresh with nothing due changes nothing";
  EXPECT_EQ(test::read_file(agent_log()).find("expired"), std::string::npos) << logs();
  // serve did not sign: every timestamp was the timer's (its log says so once).
  EXPECT_NE(test::read_file(serve_log()).find("metadata refresh is off (--no-refresh)"),
            std::string::npos)
      << logs();
  EXPECT_EQ(test::read_file(serve_log()).find("metadata refreshed"), std::string::npos) << logs();
}

TEST_F(MetadataFresh, WithoutRefreshPollsFailWithTheExpiryError) {
  init("timestamp=8s,snapshot=1m,targets=2m");
  publish("1.0.0");
  start_serve({"--no-refresh"});
  // A fresh 8 s from here, for the first poll; then nothing re-signs it.
  auto r = mota({"timestamp", "refresh", "--force"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  start_agent("1s");
  const auto t0 = Clock::now();
  // Installed while fresh; then the timestamp expires.
  for (;;) {
    watcher_->drain();
    if (installed() == "1.0.0") break;
    ASSERT_LT(Clock::now(), t0 + 30s) << logs();
    std::this_thread::sleep_for(100ms);
  }
  for (;;) {
    watcher_->drain();
    if (!watcher_->failures().empty()) break;
    ASSERT_LT(Clock::now(), t0 + 40s) << "no poll failed after the timestamp expired\n" << logs();
    std::this_thread::sleep_for(100ms);
  }
  const std::string failure = watcher_->failures().front();
  EXPECT_NE(failure.find("timestamp.json: expired at "), std::string::npos) << failure;
  EXPECT_NE(failure.find("(possible freeze attack)"), std::string::npos) << failure;
  EXPECT_NE(test::read_file(agent_log()).find("poll failed: "), std::string::npos) << logs();
  // serve (without the refresh) says what devices see and what to run.
  for (;;) {
    const std::string text = test::read_file(serve_log());
    if (text.find("ERROR timestamp version ") != std::string::npos) {
      EXPECT_NE(text.find("devices refuse metadata since "), std::string::npos) << text;
      EXPECT_NE(text.find("run `mota timestamp refresh` or keep the key on this host"),
                std::string::npos)
          << text;
      break;
    }
    ASSERT_LT(Clock::now(), t0 + 50s) << "serve logged no expiry error\n" << text;
    std::this_thread::sleep_for(100ms);
  }
  // The model in use stays.
  EXPECT_EQ(installed(), "1.0.0");
}

}  // namespace
}  // namespace mota
