// Honest space accounting with the real `mota-agent` binary on a real small filesystem (a tmpfs
// of a few dozen MiB in this test process's own mount namespace, so it needs root; skipped with a
// message otherwise): an install needs what it writes (a delta: the delta and the new slot, not
// the full package twice; the slot being replaced counts as free), a disk that fills up during a
// download is recovered from by resuming the partial once space is freed, and with the disk 100%
// full at start the agent still sends a heartbeat saying so. Also (no root needed): partial
// downloads no install needs are removed.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include "manager/release/bundle.hpp"
#include "manager/release/release.hpp"
#include "manager/repo/repository.hpp"
#include "net/http_server.hpp"
#include "tests/support/event_sink.hpp"
#include "tests/support/fault_server.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::uint64_t kMiB = 1 << 20;

std::uint64_t free_bytes(const stdfs::path& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

std::string random_weights(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Resizes `filler` (on the filesystem of `dir`) so that `dir` has `target` bytes free.
void leave_free(const stdfs::path& dir, const stdfs::path& filler, std::uint64_t target) {
  std::error_code ec;
  std::uint64_t have = stdfs::exists(filler, ec) ? stdfs::file_size(filler) : 0;
  const std::uint64_t now = free_bytes(dir);
  const std::uint64_t size = now >= target ? have + (now - target) : have - (target - now);
  ASSERT_TRUE(now >= target || have >= target - now) << "the disk is too small for the test";
  int fd = ::open(filler.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(std::min(size, have))), 0) << std::strerror(errno);
  if (size > have) {
    ASSERT_EQ(::posix_fallocate(fd, 0, static_cast<off_t>(size)), 0);
  }
  ::close(fd);
  // Within a page or two of the target (tmpfs counts pages).
  ASSERT_LE(free_bytes(dir), target + 64 * 1024);
  ASSERT_GE(free_bytes(dir) + 64 * 1024, target);
}

// Appends to `filler` until the filesystem refuses even one more page. False if nothing fit.
bool fill_up(const stdfs::path& filler) {
  int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool wrote = false;
  for (std::size_t chunk : {std::size_t(1) << 20, std::size_t(4096), std::size_t(1)}) {
    const std::string zeros(chunk, '\0');
    while (::write(fd, zeros.data(), zeros.size()) == static_cast<ssize_t>(zeros.size())) {
      wrote = true;
    }
  }
  ::close(fd);
  return wrote;
}

// A repository served by mota's HTTP server and one device configured against it.
class AgentDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(fleet_.start(work_ / "fleet", "device-0001"));
    state_ = work_ / "device" / "state";
  }

  void write_config(const std::string& extra, const std::string& server_url = "") {
    test::write_file(config_path(),
                     "server_url = \"" + (server_url.empty() ? fleet_.url : server_url) +
                         "\"\nstate_dir = \"" + state_.string() + "\"\nupdate_lock = \"" +
                         state_.string() + "/update.lock\"\ntrusted_root = \"" +
                         fleet_.root_json.string() +
                         "\"\ndevice_id = \"device-0001\"\nlog_level = \"info\"\n" + extra +
                         "\n[retry]\nmax_attempts = 1\n[health]\nenabled = false\n"
                         "[[model]]\nname = \"detector\"\nchannel = \"stable\"\n");
  }
  stdfs::path config_path() const { return work_ / "device" / "agent.toml"; }

  // `deltas`: publish deltas from earlier versions (a delta between unrelated random weights
  // only costs time to find out it is useless).
  manager::Release release(const std::string& version, const std::string& weights,
                           bool deltas = true) {
    auto src = work_ / ("src-" + version);
    test::make_model_dir(src, weights);
    manager::ReleaseOptions options;
    if (!deltas) options.deltas = 0;
    auto r = fleet_.repo->add_release(src, version, options);
    EXPECT_TRUE(r) << r.error().message();
    return r ? r->release : manager::Release{};
  }
  void channel(const std::string& version) {
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = version;
    auto ch = fleet_.repo->set_channel(req);
    ASSERT_TRUE(ch) << ch.error().message();
  }
  std::vector<std::string> agent_argv(const std::string& command) const {
    return {test::build_path("agent/mota-agent").string(), "--config", config_path().string(),
            command};
  }
  test::RunResult check_once() { return test::run(agent_argv("check-once")); }
  std::string current_weights() const {
    return test::read_file(state_ / "models" / "detector" / "current" / "model.onnx");
  }
  Json last_heartbeat() const {
    Json hb;
    for (const auto& item : fleet_.sink.items()) {
      if (item["kind"] == "heartbeat") hb = item["body"];
    }
    return hb;
  }
  std::vector<stdfs::path> downloads() const {
    std::vector<stdfs::path> out;
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator(state_ / "downloads", ec)) {
      out.push_back(e.path());
    }
    return out;
  }

  test::TempDir work_;
  test::RepoServer fleet_;
  stdfs::path state_;
};

// The state directory on a tmpfs of `disk_mib` MiB.
class AgentSmallDisk : public AgentDisk {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root: mounts a small tmpfs in a private mount namespace";
    }
    // Before any thread exists (the repository server's): the namespace is the calling thread's,
    // and children started from it (the agents) inherit it.
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      GTEST_SKIP() << "cannot make a private mount namespace: " << std::strerror(errno);
    }
    disk_ = work_ / "disk";
    stdfs::create_directories(disk_);
    const std::string options = "size=" + std::to_string(disk_mib_) + "m,mode=0755";
    ASSERT_EQ(::mount("tmpfs", disk_.c_str(), "tmpfs", 0, options.c_str()), 0)
        << std::strerror(errno);
    mounted_ = true;
    AgentDisk::SetUp();
    state_ = disk_ / "state";
  }
  void TearDown() override {
    if (mounted_) ::umount2(disk_.c_str(), MNT_DETACH);
  }

  static constexpr unsigned disk_mib_ = 80;
  stdfs::path disk_;
  bool mounted_ = false;
};

// A 3.8 MiB delta was refused on a 700 MB disk holding two slots: the check demanded twice the
// full package. Here 16 MiB of weights, 22 MiB free: the full package does not fit (it needs the
// package and its tree), the delta does (the delta and the new slot). Then a full package fits
// because the slot it replaces is emptied before anything is written.
TEST_F(AgentSmallDisk, DeltaInstallsOnADiskWithRoomForItNotForTwoPackages) {
  const std::string v1 = random_weights(16 * kMiB, 1);
  std::string v2 = v1;
  for (std::size_t i = 100; i < v2.size(); i += 65536) v2[i] = static_cast<char>(v2[i] ^ 0x5a);
  release("1.0.0", v1);
  channel("1.0.0");
  write_config("delta = \"never\"");
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  auto full = release("2.0.0", v2);
  channel("2.0.0");
  const auto filler = disk_ / "filler";
  ASSERT_NO_FATAL_FAILURE(leave_free(disk_, filler, 22 * kMiB));

  // Full package: 16 MiB to download + 16 MiB to unpack do not fit in 22 MiB. Nothing written.
  r = check_once();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("to unpack + "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" to download + "), std::string::npos) << r.err;
  EXPECT_EQ(current_weights(), v1);
  EXPECT_FALSE(stdfs::exists(state_ / "models" / "detector" / "b"));
  EXPECT_TRUE(downloads().empty());

  // The delta: its few KiB and the new slot fit.
  write_config("delta = \"prefer\"");
  r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), v2);
  auto ev = fleet_.sink.events();
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back()["state"], "installed") << ev.back().dump();
  EXPECT_EQ(ev.back()["kind"], "delta") << ev.back().dump();
  EXPECT_LT(ev.back()["bytes"].get<std::uint64_t>(), full.length / 10);

  // A full package of new weights with 20 MiB free: slot a (1.0.0, 16 MiB) is emptied first, so
  // 16 MiB + 16 MiB - 16 MiB (+ margin) is what it needs.
  release("3.0.0", random_weights(16 * kMiB, 3), false);
  channel("3.0.0");
  ASSERT_NO_FATAL_FAILURE(leave_free(disk_, filler, 20 * kMiB));
  r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), random_weights(16 * kMiB, 3));
  ev = fleet_.sink.events();
  EXPECT_EQ(ev.back()["state"], "installed") << ev.back().dump();
  EXPECT_EQ(ev.back()["to"], "3.0.0") << ev.back().dump();
  EXPECT_EQ(ev.back()["kind"], "full") << ev.back().dump();
  EXPECT_TRUE(downloads().empty());
}

// The disk fills up (another writer) while the package downloads: the attempt fails with the
// partial kept, and once space is freed the next poll resumes it and installs, although the free
// space is less than twice the package (the partial counts as downloaded). Every package byte
// crosses the wire about once.
TEST_F(AgentSmallDisk, RecoversFromADiskFullMidDownloadOnceSpaceIsFreed) {
  const std::string weights = random_weights(16 * kMiB, 7);
  auto rel = release("1.0.0", weights);
  channel("1.0.0");
  const int fleet_port = std::stoi(fleet_.url.substr(fleet_.url.rfind(':') + 1));
  test::DropProxyConfig pc;
  pc.upstream_port = fleet_port;
  pc.cut_times = 0;
  test::DropProxy proxy(pc);
  // Slow enough (2 MB/s, ~8 s) for the disk to fill up in the middle.
  write_config("bandwidth_limit = \"2MB/s\"", proxy.url());

  const auto filler = disk_ / "filler";
  // The one partial download, once it holds at least `at_least` bytes ("" until then).
  auto partial_file = [&](std::uint64_t at_least) {
    std::error_code ec;
    for (const auto& p : downloads()) {
      if (stdfs::file_size(p, ec) >= at_least && !ec) return p;
    }
    return stdfs::path();
  };
  {
    test::Process agent(agent_argv("check-once"), work_ / "agent-1.log");
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (agent.running() && std::chrono::steady_clock::now() < deadline &&
           partial_file(3 * kMiB).empty()) {
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(agent.running()) << test::read_file(work_ / "agent-1.log");
    // Take every free page, and keep taking what the agent gives back (a failed unpack removes
    // its slot) until it gives up.
    fill_up(filler);
    while (agent.running() && std::chrono::steady_clock::now() < deadline) {
      fill_up(filler);
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(agent.wait(), 1) << test::read_file(work_ / "agent-1.log");
  }
  const std::string log = test::read_file(work_ / "agent-1.log");
  EXPECT_NE(log.find("No space left on device"), std::string::npos) << log;
  const auto partial = partial_file(1);
  ASSERT_FALSE(partial.empty()) << "the partial is kept for the resume";
  EXPECT_EQ(partial.filename(), "detector." + rel.sha256 + ".part");
  const auto kept = stdfs::file_size(partial);
  EXPECT_GE(kept, 3 * kMiB);
  EXPECT_FALSE(stdfs::exists(state_ / "models" / "detector" / "current"));

  // Space freed, but less than twice the package: enough for the rest of the download and the
  // tree. (Demanding 2 x the package again, the partial on disk, would refuse this for ever.)
  ASSERT_NO_FATAL_FAILURE(leave_free(disk_, filler, 2 * rel.length - kMiB));
  write_config("", proxy.url());
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), weights);
  EXPECT_TRUE(downloads().empty());
  // Resumed, not started over: a Range request for the rest, and only the rest downloaded.
  std::string last_range;
  for (const auto& req : proxy.requests()) {
    if (req.path.ends_with(".mota")) last_range = req.range;
  }
  EXPECT_EQ(last_range, "bytes=" + std::to_string(kept) + "-");
  auto ev = fleet_.sink.events();
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back()["state"], "installed") << ev.back().dump();
  EXPECT_EQ(ev.back()["bytes"], rel.length - kept) << ev.back().dump();
}

// With the disk 100% full at start the agent used to fail to open agent.db and send nothing. It
// keeps a reserve while there is room, gives it back to start, and reports disk_full at once
// (whatever heartbeat_interval says); then disk_full: false once there is room again.
TEST_F(AgentSmallDisk, FullDiskAtStartStillSendsAHeartbeatSayingSo) {
  release("1.0.0", random_weights(100 * 1024, 2));
  channel("1.0.0");
  write_config("");
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_EQ(fleet_.sink.heartbeats(), 1u);
  EXPECT_EQ(last_heartbeat()["disk_full"], false);

  const auto filler = disk_ / "filler";
  ASSERT_TRUE(fill_up(filler));
  ASSERT_LT(free_bytes(disk_), 4096u);
  r = check_once();
  EXPECT_NE(r.err.find("released the agent's reserve"), std::string::npos) << r.err;
  ASSERT_EQ(fleet_.sink.heartbeats(), 2u) << r.out << r.err;
  Json hb = last_heartbeat();
  EXPECT_EQ(hb["disk_full"], true) << hb.dump();
  EXPECT_LT(hb["disk_free_bytes"].get<std::uint64_t>(), 1 * kMiB) << hb.dump();
  EXPECT_EQ(hb["models"][0]["version"], "1.0.0") << hb.dump();

  // Still full, nothing new to say: no heartbeat before heartbeat_interval.
  r = check_once();
  EXPECT_EQ(fleet_.sink.heartbeats(), 2u) << r.out << r.err;

  stdfs::remove(filler);
  r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_EQ(fleet_.sink.heartbeats(), 3u);
  EXPECT_EQ(last_heartbeat()["disk_full"], false);
  EXPECT_GE(stdfs::file_size(state_ / "reserve"), 1 * kMiB) << "the reserve is taken back";
}

// An offline install from a signed bundle checks the same space as a poll before anything is
// written: the package copied out of the bundle and the tree it expands to (the signed
// tree_size), less the slot it replaces.
TEST_F(AgentSmallDisk, OfflineBundleIsCheckedForItsExpandedSize) {
  release("1.0.0", random_weights(100 * 1024, 1));
  channel("1.0.0");
  write_config("");
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string weights = random_weights(16 * kMiB, 2);
  release("2.0.0", weights, false);
  manager::BundleRequest req;
  req.model = "detector";
  req.version = "2.0.0";
  req.output = work_ / "usb" / "detector-2.0.0.motab";  // not on the small disk
  stdfs::create_directories(req.output.parent_path());
  auto bundle = manager::create_bundle(work_ / "fleet", req);
  ASSERT_TRUE(bundle) << bundle.error().message();

  // Room for the tree (the release's disk requirement) but not for the copy beside it as well.
  ASSERT_NO_FATAL_FAILURE(leave_free(disk_, disk_ / "filler", 20 * kMiB));
  r = test::run({test::build_path("agent/mota-agent").string(), "--config", config_path().string(),
                 "install", req.output.string()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find(" in " + state_.string() + " (16 MiB to unpack + 16 MiB to download + "),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(stdfs::exists(state_ / "models" / "detector" / "b"));

  ASSERT_NO_FATAL_FAILURE(leave_free(disk_, disk_ / "filler", 40 * kMiB));
  r = test::run({test::build_path("agent/mota-agent").string(), "--config", config_path().string(),
                 "install", req.output.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), weights);
}

// A partial download belongs to an install in progress or to nothing: one of a version the
// channel moved away from, of a model no longer configured, or in a layout of an older agent, is
// removed by the next poll.
TEST_F(AgentDisk, PartialsNoInstallNeedsAreRemoved) {
  release("1.0.0", random_weights(200 * 1024, 1));
  channel("1.0.0");
  write_config("");
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  // 2.0.0's download is cut after 1000 bytes: its partial stays for a resume.
  auto v2 = release("2.0.0", random_weights(200 * 1024, 2));
  channel("2.0.0");
  const int fleet_port = std::stoi(fleet_.url.substr(fleet_.url.rfind(':') + 1));
  test::DropProxyConfig pc;
  pc.upstream_port = fleet_port;
  pc.cut_after = 1000;
  test::DropProxy proxy(pc);
  write_config("", proxy.url());
  r = check_once();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  ASSERT_EQ(downloads().size(), 1u) << r.err;
  EXPECT_EQ(downloads()[0].filename(), "detector." + v2.sha256 + ".part");

  // Left behind by others.
  const auto retired = state_ / "downloads" / ("retired-model." + std::string(64, 'c') + ".part");
  const auto legacy = state_ / "downloads" / (std::string(64, 'b') + ".part");
  test::write_file(retired, std::string(5000, 'r'));
  test::write_file(legacy, std::string(5000, 'l'));

  // The channel moves on to 3.0.0 before 2.0.0 finished: its partial is of no use any more.
  release("3.0.0", random_weights(200 * 1024, 3));
  channel("3.0.0");
  r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), random_weights(200 * 1024, 3));
  EXPECT_TRUE(downloads().empty()) << downloads().front();

  // Up to date: a stray partial of this model goes too.
  const auto stray = state_ / "downloads" / ("detector." + std::string(64, 'a') + ".part");
  test::write_file(stray, "x");
  r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(downloads().empty()) << downloads().front();
}

}  // namespace
}  // namespace mota
