// The kill loop (issue 21): at least 200 SIGKILLs at random moments of real `mota-agent
// check-once` runs on three devices, while the repository publishes release after release (full
// packages, and deltas from the versions the devices run). Every kill is a power cut: the next
// run resumes from whatever the last one left. The moments: a third of the runs is cut early
// (start-up, small deltas), a third anywhere in a full download, and a third a few milliseconds
// after the last byte of the download landed (the steps after it take tens of milliseconds, so
// the clock alone would almost never hit them). Each kill point (the install step the journal
// was in, whether the run got that far, full or delta) is tallied and printed. At the end every
// device runs the last release, nothing is blocked or waiting for a retry, no install is in
// progress, and `current` named a whole, verified version after every single kill.
//
// MOTA_KILLLOOP_KILLS (default 200) and MOTA_KILLLOOP_SEED (default: random, printed) reproduce
// or lengthen a run.

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "agent/install.hpp"
#include "agent/slots.hpp"
#include "agent/state.hpp"
#include "common/log.hpp"
#include "manager/release/release.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "tests/support/event_sink.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kModel = "detector";
constexpr int kDevices = 3;
constexpr std::size_t kWeights = 3u << 19;  // 1.5 MiB per version, incompressible

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

std::string version_name(int n) {
  return std::to_string(n) + ".0.0";
}

// The journal as it stands (after a kill, with no agent running).
struct Journal {
  bool present = false;
  std::string install_id, step, from, to;
  int attempts = 0;
  std::int64_t updated_at = 0;
  bool operator==(const Journal&) const = default;
};

// Also checks what must hold after every run and every kill: the database opens and nothing is
// blocked (a good version must never be).
Journal read_journal(const stdfs::path& state) {
  Journal j;
  auto st = agent::StateStore::open(state);
  EXPECT_TRUE(st) << st.error().message();
  if (!st) return j;
  auto blocked = st->all_blocked();
  EXPECT_TRUE(blocked && blocked->empty())
      << state << ": " << (blocked && !blocked->empty() ? blocked->front().reason : "");
  auto rec = st->install(kModel);
  if (!rec || !*rec) return j;
  j.present = true;
  j.install_id = (*rec)->install_id;
  j.step = (*rec)->step;
  j.from = (*rec)->from_version;
  j.to = (*rec)->to_version;
  j.attempts = (*rec)->attempts;
  j.updated_at = (*rec)->updated_at.time_since_epoch().count();
  return j;
}

class KillLoop : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_level_ = log::level();
    log::set_level(log::Level::warn);  // the in-process server logs every request at info
    ASSERT_NO_FATAL_FAILURE(fleet_.start(work_ / "fleet"));
    rng_.seed(seed_);
    std::cout << "kill loop: seed " << seed_ << " (MOTA_KILLLOOP_SEED), " << kills_wanted_
              << " kills\n";
    for (int d = 0; d < kDevices; ++d) {
      const std::string id = "edge-" + std::to_string(d);
      const auto dir = work_ / id;
      stdfs::create_directories(dir / "state");
      test::write_file(dir / "agent.toml",
                       "server_url = \"" + fleet_.url + "\"\nstate_dir = \"" +
                           (dir / "state").string() + "\"\nupdate_lock = \"" +
                           (dir / "state").string() + "/update.lock\"\ntrusted_root = \"" +
                           fleet_.root_json.string() + "\"\ndevice_id = \"" + id +
                           "\"\nlog_level = \"warn\"\nbandwidth_limit = \"1MiB/s\"\n"
                           "[retry]\nmax_attempts = 2\nbase_delay = \"1s\"\nmax_delay = \"1s\"\n"
                           "[health]\nenabled = false\n"
                           "[[model]]\nname = \"detector\"\nchannel = \"stable\"\n");
    }
    ASSERT_NO_FATAL_FAILURE(publish_next());
  }
  void TearDown() override { log::set_level(saved_level_); }

  stdfs::path state(int d) const { return work_ / ("edge-" + std::to_string(d)) / "state"; }
  std::vector<std::string> argv(int d, const std::string& command = "check-once") const {
    return {test::build_path("agent/mota-agent").string(), "--config",
            (work_ / ("edge-" + std::to_string(d)) / "agent.toml").string(), command};
  }

  // Publishes the next version: every third one new weights throughout (no delta is worth it:
  // full packages), the others 2% changed from the one before (deltas from the last three).
  void publish_next() {
    const auto t0 = Clock::now();
    const int n = latest_ + 1;
    std::string weights;
    {
      std::lock_guard lock(mu_);
      std::mt19937_64 r(seed_ * 1000 + static_cast<std::uint64_t>(n));
      if (n % 3 == 1 || weights_.empty()) {
        weights.resize(kWeights);
        for (std::size_t i = 0; i + 8 <= kWeights; i += 8) {
          const std::uint64_t v = r();
          std::memcpy(weights.data() + i, &v, 8);
        }
      } else {
        weights = weights_.at(version_name(n - 1));
        const std::size_t at = r() % (kWeights - kWeights / 50);
        for (std::size_t i = 0; i < kWeights / 50; ++i) weights[at + i] = static_cast<char>(r());
      }
    }
    const std::string v = version_name(n);
    const auto src = work_ / ("src-" + v);
    test::make_model_dir(src, weights);
    manager::ReleaseOptions options;
    options.deltas = 2;  // from the two versions before: devices further behind get the package
    auto rel = fleet_.repo->add_release(src, v, options);
    ASSERT_TRUE(rel) << rel.error().message();
    stdfs::remove_all(src);
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = kModel;
    req.version = v;
    ASSERT_TRUE(fleet_.repo->set_channel(req));
    auto deltas = fleet_.repo->list_deltas(kModel);
    ASSERT_TRUE(deltas) << deltas.error().message();
    std::lock_guard lock(mu_);
    weights_[v] = weights;
    downloads_[{"", v}] = {rel->release.sha256, rel->release.length};
    for (const auto& d : *deltas) downloads_[{d.from, d.to}] = {d.sha256, d.length};
    latest_ = n;
    publish_time_ += Clock::now() - t0;
  }

  // After a kill: `current` is absent (nothing installed yet) or a whole, verified, published
  // version; the database opens. Returns the version ("" when none).
  std::string check_current(int d) {
    auto slots = agent::SlotSet::open(state(d), kModel);
    EXPECT_TRUE(slots) << slots.error().message();
    if (!slots) return "?";
    auto cur = slots->current();
    EXPECT_TRUE(cur) << cur.error().message();
    if (!cur || !*cur) return "";
    auto tree = slots->verify(**cur);
    EXPECT_TRUE(tree) << "edge-" << d << " current slot " << agent::slot_name(**cur) << ": "
                      << tree.error().message();
    if (!tree) return "?";
    const std::string w = test::read_file(slots->path(**cur) / "model.onnx");
    std::lock_guard lock(mu_);
    auto it = weights_.find(tree->manifest.version);
    EXPECT_TRUE(it != weights_.end() && it->second == w)
        << "edge-" << d << " serves weights that are not " << tree->manifest.version << "'s";
    return tree->manifest.version;
  }

  std::string kind(const Journal& j) {
    std::lock_guard lock(mu_);
    return !j.from.empty() && downloads_.count({j.from, j.to}) ? "delta" : "full";
  }

  // What an update from `from` to `to` downloads: <state>/downloads/<sha256>.part and its length
  // (the delta when one is published, else the package).
  std::pair<stdfs::path, std::uint64_t> download_of(int d, const std::string& from,
                                                    const std::string& to) {
    std::lock_guard lock(mu_);
    auto it = from.empty() ? downloads_.end() : downloads_.find({from, to});
    if (it == downloads_.end()) it = downloads_.find({"", to});
    return {state(d) / "downloads" / (it->second.first + ".part"), it->second.second};
  }

  enum class Moment { early, anywhere, after_download };
  Moment moment() {
    std::lock_guard lock(mu_);
    return static_cast<Moment>(rng_() % 3);
  }
  milliseconds delay(Moment m) {
    std::lock_guard lock(mu_);
    std::uniform_int_distribution<int> early(20, 500), anywhere(300, 2500), after(0, 120);
    switch (m) {
      case Moment::early:
        return milliseconds(early(rng_));
      case Moment::anywhere:
        return milliseconds(anywhere(rng_));
      case Moment::after_download:
        break;
    }
    return milliseconds(after(rng_));
  }

  void add_point(const std::string& point) {
    std::lock_guard lock(mu_);
    ++points_[point];
    ++kills_;
  }

  // One device: runs until enough kills happened in all.
  void device_loop(int d) {
    auto log_file = work_ / ("edge-" + std::to_string(d)) / "agent.log";
    while (!::testing::Test::HasFatalFailure()) {
      {
        std::lock_guard lock(mu_);
        if (kills_ >= kills_wanted_) return;
      }
      const Journal before = read_journal(state(d));
      const std::string runs = check_current(d);
      const std::string wants = version_name(latest_);
      Moment m = runs == wants ? Moment::early : moment();
      const auto [part, length] = download_of(d, runs, wants);
      auto complete = [&, part = part, length = length] {
        std::error_code ec;
        return stdfs::file_size(part, ec) == length && !ec;
      };
      // Nothing left to download (resuming a later step): no last byte to anchor on.
      if (m == Moment::after_download && complete()) m = Moment::anywhere;
      test::Process p(argv(d), log_file);
      if (m == Moment::after_download) {
        const auto give_up = Clock::now() + std::chrono::seconds(60);
        while (p.running() && !complete() && Clock::now() < give_up) {
          std::this_thread::sleep_for(std::chrono::microseconds(500));
        }
      }
      const auto until = Clock::now() + delay(m);
      while (p.running() && Clock::now() < until) std::this_thread::sleep_for(milliseconds(1));
      p.kill(SIGKILL);  // a no-op if it has exited already
      const int code = p.wait();
      if (code == -1) {
        const Journal after = read_journal(state(d));
        check_current(d);
        std::string point;
        if (!after.present) {
          point = before.present ? "after commit" : "polling (no install)";
        } else if (after == before) {
          point = "before resuming " + after.step + " (" + kind(after) + ")";
        } else {
          point = after.step + " (" + kind(after) + ")";
        }
        add_point(point);
        continue;
      }
      (void)read_journal(state(d));
      const std::string log = test::read_file(log_file);
      EXPECT_EQ(code, 0) << "edge-" << d << ": ..."
                         << log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
      const std::string v = check_current(d);
      {
        std::lock_guard lock(mu_);
        ++finished_;
      }
      // The first device on the newest version publishes the next one.
      std::unique_lock lock(publish_mu_);
      if (v == version_name(latest_)) {
        std::lock_guard l2(mu_);
        if (kills_ >= kills_wanted_) return;
      }
      if (v == version_name(latest_)) publish_next();
    }
  }

  test::TempDir work_;
  test::RepoServer fleet_;
  log::Level saved_level_ = log::Level::info;
  const std::uint64_t seed_ = static_cast<std::uint64_t>(
      env_int("MOTA_KILLLOOP_SEED", static_cast<int>(std::random_device{}() & 0x7fffffff)));
  const int kills_wanted_ = env_int("MOTA_KILLLOOP_KILLS", 200);

  std::mutex mu_;          // guards everything below but latest_'s writes (publish_mu_)
  std::mutex publish_mu_;  // one publish at a time
  std::atomic<int> latest_{0};
  std::map<std::string, std::string> weights_;  // version -> model.onnx
  // (from, to) -> (sha256, length) of what is downloaded: ("", to) the package, else a delta.
  std::map<std::pair<std::string, std::string>, std::pair<std::string, std::uint64_t>> downloads_;
  std::mt19937_64 rng_;
  std::map<std::string, int> points_;
  int kills_ = 0;
  int finished_ = 0;
  Clock::duration publish_time_{};
};

TEST_F(KillLoop, RandomKillsOverFullAndDeltaInstallsEndWithEveryDeviceUpdatedAndNothingBlocked) {
  const auto t0 = Clock::now();
  std::vector<std::thread> devices;
  for (int d = 0; d < kDevices; ++d) devices.emplace_back([this, d] { device_loop(d); });
  for (auto& t : devices) t.join();
  ASSERT_FALSE(HasFatalFailure());

  // Power back for good: each device finishes on the last release.
  const std::string last = version_name(latest_);
  for (int d = 0; d < kDevices; ++d) {
    SCOPED_TRACE("edge-" + std::to_string(d));
    test::RunResult r;
    for (int run = 0; run < 3 && check_current(d) != last; ++run) {
      r = test::run(argv(d));
      EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    }
    EXPECT_EQ(check_current(d), last) << r.out << r.err;
    auto cmd = argv(d, "status");
    cmd.push_back("--json");
    auto js = test::run(cmd);
    ASSERT_EQ(js.exit_code, 0) << js.err;
    Json s = Json::parse(js.out, nullptr, false);
    ASSERT_FALSE(s.is_discarded()) << js.out;
    EXPECT_TRUE(s["models"][0]["blocked"].empty()) << s.dump(2);
    EXPECT_TRUE(s["models"][0]["retries"].empty()) << s.dump(2);
    EXPECT_TRUE(s["models"][0]["install"].is_null()) << s.dump(2);
    auto st = agent::StateStore::open(state(d));
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->all_blocked()->empty());
  }

  // The report.
  int delta_kills = 0, full_kills = 0, in_steps = 0;
  std::cout << "kill loop: " << kills_ << " SIGKILLs on " << kDevices << " devices over " << latest_
            << " releases in "
            << std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - t0).count() << " s ("
            << std::chrono::duration_cast<std::chrono::seconds>(publish_time_).count()
            << " s of them publishing); " << finished_
            << " runs finished before their kill; kill points:\n";
  for (const auto& [point, n] : points_) {
    std::cout << "  " << n << "\t" << point << "\n";
    if (point.find("(delta)") != std::string::npos) delta_kills += n;
    if (point.find("(full)") != std::string::npos) full_kills += n;
    for (const auto& step : agent::kInstallSteps) {
      if (point.rfind(std::string(step.name) + " (", 0) == 0) in_steps += n;
    }
  }
  std::cout << "  full installs: " << full_kills << " kills, delta installs: " << delta_kills
            << ", inside a step: " << in_steps << "\n";
  EXPECT_GE(kills_, kills_wanted_);
  EXPECT_GT(full_kills, 0);
  EXPECT_GT(delta_kills, 0);
  EXPECT_GE(latest_, 4);  // several releases, so deltas were published and used
}

}  // namespace
}  // namespace mota
