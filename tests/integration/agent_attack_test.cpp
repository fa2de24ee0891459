// The real `mota-agent` against hostile or broken repositories, served by `mota serve`
// (net::make_http_server) and by a real nginx, with the device's reports checked where they
// arrive: at a POST /v1/devices/:id/events route that verifies each batch's signature.
//
// Every rejection asserts: the exit code, a clear error on stderr, the active model untouched
// (same `current`, same bytes), nothing new in the inactive slot, no download left behind, and a
// signed event naming the cause at the events route.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "common/time.hpp"
#include "manager/release/bundle.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/channel.hpp"
#include "manifest/crypto.hpp"
#include "manifest/tuf/metadata.hpp"
#include "net/http_server.hpp"
#include "protocol/identity.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

enum class ServerKind { MotaServe, Nginx };

// The server side of the report protocol (agent/report.hpp), as strict as a fleet server should
// be: each batch must carry a valid signature over the route and body, seqs must increase across
// batches. Anything wrong is recorded in problems() (and a bad signature gets 401).
class EventSink {
 public:
  net::HttpReply handle(const net::HttpRequest& req) {
    std::map<std::string, std::string> h;
    for (const char* name :
         {"X-Mota-Device", "X-Mota-Key", "X-Mota-Timestamp", "X-Mota-Signature"}) {
      std::string lower = name;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (auto it = req.headers.find(lower); it != req.headers.end()) h[name] = it->second;
    }
    std::lock_guard lock(mu_);
    ++requests_;
    // The device id has no characters to percent-encode, so the decoded path is the signed route.
    auto st = protocol::verify_report(h, req.path, req.body);
    if (!st) {
      problems_.push_back("bad signature: " + st.error().message());
      return {401, "application/json", R"({"error": "bad signature"})", {}};
    }
    if (h["X-Mota-Device"] != req.path_params.at("id")) {
      problems_.push_back("X-Mota-Device " + h["X-Mota-Device"] + " is not the route's " +
                          req.path_params.at("id"));
    }
    Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("batch") ||
        !body["batch"].is_array() || body["batch"].empty()) {
      problems_.push_back("malformed batch: " + req.body);
      return {400, "application/json", R"({"error": "malformed"})", {}};
    }
    if (body.value("device", "") != h["X-Mota-Device"]) {
      problems_.push_back("body device differs from X-Mota-Device: " + req.body);
    }
    std::int64_t last = 0;
    for (const auto& item : body["batch"]) {
      const std::int64_t seq = item.value("seq", std::int64_t{0});
      if (seq <= last_seq_) {
        problems_.push_back("seq " + std::to_string(seq) + " is not above " +
                            std::to_string(last_seq_) + " (duplicate or out of order)");
      } else {
        last_seq_ = seq;
        items_.push_back(item);  // each seq counted once
      }
      last = seq;
    }
    ++batches_;
    return {200, "application/json", Json{{"acked", last}}.dump(), {}};
  }

  // Event bodies that arrived since the previous call, in seq order.
  std::vector<Json> new_events() {
    std::lock_guard lock(mu_);
    std::vector<Json> out;
    for (; consumed_ < items_.size(); ++consumed_) {
      const auto& item = items_[consumed_];
      if (item.value("kind", "") == "event") out.push_back(item["body"]);
    }
    return out;
  }
  std::vector<Json> all_items() {
    std::lock_guard lock(mu_);
    return items_;
  }
  std::vector<std::string> problems() {
    std::lock_guard lock(mu_);
    return problems_;
  }
  int batches() {
    std::lock_guard lock(mu_);
    return batches_;
  }

 private:
  std::mutex mu_;
  std::vector<Json> items_;
  std::size_t consumed_ = 0;
  std::int64_t last_seq_ = 0;
  int batches_ = 0;
  int requests_ = 0;
  std::vector<std::string> problems_;
};

// Every file under a directory (symlinks as their target, never followed): a before/after
// comparison of the device's model directory.
using Tree = std::map<std::string, std::string>;
Tree snapshot(const stdfs::path& dir) {
  Tree t;
  std::error_code ec;
  if (!stdfs::exists(dir, ec)) return t;
  for (auto it = stdfs::recursive_directory_iterator(dir); it != stdfs::end(it); ++it) {
    const auto rel = it->path().lexically_relative(dir).string();  // never resolves links
    if (it->is_symlink()) {
      t[rel] = "symlink -> " + stdfs::read_symlink(it->path()).string();
    } else if (it->is_regular_file()) {
      t[rel] = test::read_file(it->path());
    } else if (it->is_directory()) {
      t[rel + "/"] = "";
    }
  }
  return t;
}
Tree subtree(const Tree& t, const std::string& prefix) {
  Tree out;
  for (const auto& [k, v] : t) {
    if (k.rfind(prefix + "/", 0) == 0) out[k] = v;
  }
  return out;
}

class AgentAttack : public ::testing::TestWithParam<ServerKind> {
 protected:
  void SetUp() override {
    log::set_level(log::Level::warn);  // the servers' request log would drown the output
    if (GetParam() == ServerKind::Nginx && !test::Nginx::available()) {
      GTEST_SKIP() << "nginx not installed";
    }
    auto repo = manager::Repository::init(fleet(), manager::Settings{});
    ASSERT_TRUE(repo) << repo.error().message();
    repo_ = std::make_unique<manager::Repository>(std::move(*repo));

    net::ServerConfig cfg;
    if (GetParam() == ServerKind::MotaServe) cfg.static_root = fleet() / "repo";
    api_ = net::make_http_server(cfg);
    api_->route("POST", "/v1/devices/:id/events",
                [this](const net::HttpRequest& req) { return sink_.handle(req); });
    auto port = api_->start();
    ASSERT_TRUE(port) << port.error().message();
    const std::string api_url = "http://127.0.0.1:" + std::to_string(*port);

    std::string urls;
    if (GetParam() == ServerKind::MotaServe) {
      urls = "server_url = \"" + api_url + "\"\n";  // report_url defaults to server_url
    } else {
      nginx_ = std::make_unique<test::Nginx>(fleet() / "repo", work_ / "nginx");
      ASSERT_NE(nginx_->port(), 0);
      urls = "server_url = \"" + nginx_->url("") + "\"\nreport_url = \"" + api_url + "\"\n";
    }
    state_ = work_ / "device" / "state";
    test::write_file(
        config_path(),
        urls + "state_dir = \"" + state_.string() + "\"\nupdate_lock = \"" + state_.string() +
            "/update.lock\"\ntrusted_root = \"" +
            (fleet() / "repo" / "metadata" / "1.root.json").string() +
            "\"\ndevice_id = \"device-0001\"\nlog_level = \"warn\"\n"
            "[retry]\nmax_attempts = 1\n"
            // Bad bytes from the server are failures that may pass on retry: no backoff here,
            // so each check-once below tries again (and counts towards the block).
            "[health]\nenabled = false\nretry_backoff = \"0s\"\n[[model]]\nname = "
            "\"detector\"\nchannel = \"stable\"\n");
  }
  void TearDown() override {
    if (api_) api_->stop();
    auto problems = sink_.problems();
    for (const auto& p : problems) ADD_FAILURE() << "events route: " << p;
  }

  stdfs::path fleet() const { return work_ / "fleet"; }
  stdfs::path config_path() const { return work_ / "device" / "agent.toml"; }
  stdfs::path model_dir() const { return state_ / "models" / "detector"; }

  // ~200 KB that zstd cannot shrink, so packages span several 64 KiB reads and writes.
  std::string weights(const std::string& version) const {
    std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>{}(version)));
    std::string w(200000, '\0');
    for (auto& c : w) c = static_cast<char>(rng());
    return w + version;
  }
  manager::Release release(const std::string& version) {
    auto src = work_ / ("src-" + version);
    test::make_model_dir(src, weights(version));
    auto r = repo_->add_release(src, version);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : manager::Release{};
  }
  void channel(const std::string& version, bool allow_downgrade = false,
               const std::string& min_version = "") {
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = version;
    req.allow_downgrade = allow_downgrade;
    req.min_version = min_version;
    auto ch = repo_->set_channel(req);
    ASSERT_TRUE(ch) << ch.error().message();
  }
  // The package file as served (consistent-snapshot name <sha256>.<file>).
  stdfs::path served_package(const manager::Release& rel) const {
    return fleet() / "repo" / "targets" / "models" / "detector" / rel.version /
           (rel.sha256 + ".detector-" + rel.version + ".mota");
  }

  // A signed offline bundle of `version` from the repository as it stands now.
  stdfs::path bundle(const std::string& version) {
    manager::BundleRequest req;
    req.model = "detector";
    req.version = version;
    req.output =
        work_ / "usb" / ("detector-" + version + "-" + std::to_string(++bundles_) + ".motab");
    stdfs::create_directories(req.output.parent_path());
    auto b = manager::create_bundle(fleet(), req);
    EXPECT_TRUE(b) << b.error().message();
    return req.output;
  }

  test::RunResult agent(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {test::build_path("agent/mota-agent").string(), "--config",
                                     config_path().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = test::run(argv);
    std::cout << "[mota-agent " << args[0] << "] exit " << r.exit_code;
    if (!r.err.empty()) std::cout << ", stderr:\n" << r.err;
    std::cout << std::endl;
    return r;
  }
  std::string current() const {
    std::error_code ec;
    auto t = stdfs::read_symlink(model_dir() / "current", ec);
    return ec ? "" : t.string();
  }
  std::string current_weights() const {
    return test::read_file(model_dir() / "current" / "model.onnx");
  }

  // Installs `version` (already released) through a normal poll and checks it arrived as such.
  void install(const std::string& version) {
    auto r = agent({"check-once"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    ASSERT_EQ(current_weights(), weights(version));
    auto ev = sink_.new_events();
    ASSERT_EQ(ev.size(), 1u) << Json(ev).dump();
    EXPECT_EQ(ev[0]["state"], "installed");
    EXPECT_EQ(ev[0]["to"], version);
  }

  // Asserts what a rejected poll (or offline install) must leave: the model directory as it was
  // before (the inactive slot may only have been cleared, never filled), no download kept, and
  // exactly one event of `state` whose error names `cause` arrived at the events route (when
  // `expect_event`).
  // Returns that event (null without one).
  Json expect_rejected(const Tree& before, const std::string& state, const std::string& cause,
                       bool expect_event = true) {
    const Tree after = snapshot(model_dir());
    const std::string active = before.count("current")
                                   ? before.at("current").substr(std::string("symlink -> ").size())
                                   : "";
    EXPECT_EQ(current(), active);
    if (!active.empty()) {
      EXPECT_TRUE(subtree(after, active) == subtree(before, active))
          << "the active slot " << active << " changed";
      const std::string inactive = active == "a" ? "b" : "a";
      const Tree in_after = subtree(after, inactive);
      EXPECT_TRUE(in_after.empty() || in_after == subtree(before, inactive))
          << "something new in the inactive slot " << inactive;
    } else {
      EXPECT_EQ(after.count("a/model.json") + after.count("b/model.json"), 0u)
          << "a model was left in a slot although nothing is installed";
    }
    std::error_code ec;
    EXPECT_TRUE(!stdfs::exists(state_ / "downloads", ec) || stdfs::is_empty(state_ / "downloads"))
        << "untrusted bytes kept in downloads/";
    if (!expect_event) return nullptr;
    auto ev = sink_.new_events();
    EXPECT_EQ(ev.size(), 1u) << Json(ev).dump(2);
    if (ev.size() != 1) return nullptr;
    EXPECT_EQ(ev[0]["state"], state) << ev[0].dump();
    // A metadata problem is the device's condition, not a failure of the model's versions.
    EXPECT_EQ(ev[0]["model"], state == "metadata_error" ? "" : "detector");
    EXPECT_EQ(ev[0]["device"], "device-0001");
    EXPECT_NE(ev[0].value("error", "").find(cause), std::string::npos) << ev[0].dump();
    return ev[0];
  }

  test::TempDir work_;
  std::unique_ptr<manager::Repository> repo_;
  std::unique_ptr<net::HttpServer> api_;
  std::unique_ptr<test::Nginx> nginx_;
  EventSink sink_;
  stdfs::path state_;
  int bundles_ = 0;
};

// 1. The happy path end to end: first install, upgrade, operator rollback, each reported.
TEST_P(AgentAttack, InstallUpgradeAndRollbackAreReported) {
  release("1.0.0");
  channel("1.0.0");
  install("1.0.0");
  EXPECT_EQ(current(), "a");

  release("2.0.0");
  channel("2.0.0");
  install("2.0.0");
  EXPECT_EQ(current(), "b");
  EXPECT_EQ(test::read_file(model_dir() / "a" / "model.onnx"), weights("1.0.0"));

  channel("1.0.0", /*allow_downgrade=*/true);
  install("1.0.0");
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(test::read_file(model_dir() / "b" / "model.onnx"), weights("2.0.0"));

  // An idle poll installs nothing and sends nothing: no event, and the heartbeat of the first
  // poll is younger than heartbeat_interval (1h).
  const auto batches = sink_.batches();
  auto r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(sink_.new_events().empty());
  EXPECT_EQ(sink_.batches(), batches);

  // The first poll's heartbeat arrived, with the inventory after that poll's install.
  const Json* hb = nullptr;
  auto items = sink_.all_items();
  for (const auto& i : items) {
    if (i.value("kind", "") == "heartbeat") hb = &i;
  }
  ASSERT_NE(hb, nullptr) << Json(items).dump();
  ASSERT_TRUE((*hb)["body"]["models"].is_array()) << hb->dump();
  ASSERT_EQ((*hb)["body"]["models"].size(), 1u) << hb->dump();
  EXPECT_EQ((*hb)["body"]["models"][0]["version"], "1.0.0");
  EXPECT_EQ((*hb)["body"]["models"][0]["slot"], "a");
  EXPECT_EQ(sink_.batches(), 3);  // one per install
}

// 2. Version policy: an older version without allow_downgrade is refused by a poll and by an
//    offline install of a signed bundle of it; a version below the channel's min_version by an
//    offline install; and a signed channel that contradicts its own min_version (which `mota
//    channel set` refuses to publish, so it is forged here with the repository's keys) by a poll.
TEST_P(AgentAttack, DowngradeAndMinVersionAreRefusedOnlineAndOffline) {
  auto old_rel = release("1.0.0");
  release("2.0.0");
  channel("2.0.0");
  install("2.0.0");
  const auto pkg = served_package(old_rel);
  const Tree before = snapshot(model_dir());

  channel("1.0.0");  // no allow_downgrade
  auto r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 0);  // a refusal is policy at work, not a failure of the device
  EXPECT_NE(r.err.find("allow_downgrade"), std::string::npos) << r.err;
  auto ev = expect_rejected(before, "refused", "allow_downgrade");
  EXPECT_EQ(ev.value("to", ""), "1.0.0");
  EXPECT_EQ(ev.value("from", ""), "2.0.0");

  // The same version installed offline is refused by the same rule, and reported as such.
  r = agent({"install", bundle("1.0.0").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("allow_downgrade"), std::string::npos) << r.err;
  ev = expect_rejected(before, "refused", "allow_downgrade");
  EXPECT_NE(ev.value("error", "").find("offline install"), std::string::npos) << ev.dump();

  // The device learns min_version 1.5.0 (with rollbacks allowed) from ordinary polls that have
  // nothing to install...
  channel("2.0.0", /*allow_downgrade=*/false, /*min_version=*/"1.5.0");
  EXPECT_EQ(agent({"check-once"}).exit_code, 0);
  channel("2.0.0", /*allow_downgrade=*/true, /*min_version=*/"1.5.0");
  EXPECT_EQ(agent({"check-once"}).exit_code, 0);
  // The first poll that finds the device on what its channel wants ends the refusal, once.
  auto ok = sink_.new_events();
  ASSERT_EQ(ok.size(), 1u) << Json(ok).dump(2);
  EXPECT_EQ(ok[0]["state"], "ok") << ok[0].dump();
  EXPECT_EQ(ok[0]["from"], "2.0.0");
  EXPECT_EQ(ok[0]["to"], "2.0.0");
  EXPECT_EQ(ok[0]["channel"], "stable");
  // ...and an offline install of 1.0.0 is refused by it.
  r = agent({"install", bundle("1.0.0").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("min_version 1.5.0"), std::string::npos) << r.err;
  ev = expect_rejected(before, "refused", "min_version 1.5.0");
  EXPECT_NE(ev.value("error", "").find("offline install"), std::string::npos) << ev.dump();

  // (A signed channel that contradicts its own min_version is refused by Channel::parse: see
  // tests/manifest/channel_test.cpp.)

  // Control: once the channel explicitly rolls back to 1.0.0, an offline install of a bundle
  // made then is accepted (the served copy is damaged afterwards, so the poll cannot install it
  // first).
  channel("1.0.0", /*allow_downgrade=*/true);
  const auto usb = bundle("1.0.0");
  auto damaged = test::read_file(pkg);
  damaged[damaged.size() / 3] ^= 0x01;
  test::write_file(pkg, damaged);
  r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 1);
  expect_rejected(before, "failed", "sha256 mismatch");
  r = agent({"install", usb.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(current_weights(), weights("1.0.0"));
  ev = sink_.new_events().at(0);
  EXPECT_EQ(ev.value("state", ""), "installed") << ev.dump();
  EXPECT_EQ(ev.value("to", ""), "1.0.0") << ev.dump();
}

// 3. A byte of the served package flipped after publishing.
TEST_P(AgentAttack, TamperedPackage) {
  release("1.0.0");
  channel("1.0.0");
  install("1.0.0");
  auto rel = release("2.0.0");
  channel("2.0.0");
  auto bytes = test::read_file(served_package(rel));
  bytes[bytes.size() / 2] ^= 0x01;
  test::write_file(served_package(rel), bytes);

  Tree before = snapshot(model_dir());
  auto r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("sha256 mismatch"), std::string::npos) << r.err;
  expect_rejected(before, "failed", "sha256 mismatch");
}

// 4. The served package shorter, then longer, than its signed length.
TEST_P(AgentAttack, WrongLengthPackage) {
  release("1.0.0");
  channel("1.0.0");
  install("1.0.0");
  auto rel = release("2.0.0");
  channel("2.0.0");
  const auto original = test::read_file(served_package(rel));

  test::write_file(served_package(rel), original.substr(0, original.size() / 2));
  Tree before = snapshot(model_dir());
  auto r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("length mismatch"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("that may pass on retry"), std::string::npos) << r.err;
  expect_rejected(before, "failed", "length mismatch");

  test::write_file(served_package(rel), original + std::string(1000, 'x'));
  r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("server announced " + std::to_string(original.size() + 1000)),
            std::string::npos)
      << r.err;
  expect_rejected(before, "failed", "server announced");

  // The repository repaired: the same device installs it (no poisoned state left behind).
  test::write_file(served_package(rel), original);
  install("2.0.0");
}

// 5. An older timestamp.json replayed after the device has seen a newer one: it would lead the
//    device back to the 1.0.0 channel.
TEST_P(AgentAttack, ReplayedTimestamp) {
  release("1.0.0");
  channel("1.0.0");
  install("1.0.0");
  const auto ts_file = fleet() / "repo" / "metadata" / "timestamp.json";
  const auto old_ts = test::read_file(ts_file);
  release("2.0.0");
  channel("2.0.0");
  auto refreshed = repo_->refresh_timestamp();
  ASSERT_TRUE(refreshed) << refreshed.error().message();
  install("2.0.0");

  test::write_file(ts_file, old_ts);
  Tree before = snapshot(model_dir());
  auto r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("timestamp.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("lower than trusted version"), std::string::npos) << r.err;
  auto ev = expect_rejected(before, "metadata_error", "lower than trusted version");
  EXPECT_EQ(ev.value("step", ""), "refresh") << ev.dump();
  EXPECT_EQ(current_weights(), weights("2.0.0"));
}

// 6. A timestamp that expires a second after signing (a freeze attack once it has passed).
TEST_P(AgentAttack, ExpiredTimestamp) {
  release("1.0.0");
  channel("1.0.0");
  install("1.0.0");

  // The operator's settings with a 1 s timestamp lifetime, then an update signed with it.
  manager::Settings s = repo_->settings();
  s.expiry.timestamp = 1s;
  test::write_file(fleet() / "mota.toml", s.to_toml());
  auto reopened = manager::Repository::open(fleet());
  ASSERT_TRUE(reopened) << reopened.error().message();
  *repo_ = std::move(*reopened);
  release("2.0.0");
  channel("2.0.0");
  auto ts = Json::parse(test::read_file(fleet() / "repo" / "metadata" / "timestamp.json"));
  auto expires = parse_time(ts["signed"]["expires"].get<std::string>());
  ASSERT_TRUE(expires);
  ASSERT_LE(*expires - now_seconds(), 2s);
  while (std::chrono::system_clock::now() < *expires + 50ms) std::this_thread::sleep_for(50ms);

  Tree before = snapshot(model_dir());
  auto r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("timestamp.json: expired"), std::string::npos) << r.err;
  auto ev = expect_rejected(before, "metadata_error", "expired");
  EXPECT_EQ(ev.value("step", ""), "refresh") << ev.dump();
  EXPECT_EQ(current_weights(), weights("1.0.0"));
  r = agent({"status"});
  EXPECT_NE(r.out.find("metadata: refresh failing: TUF refresh"), std::string::npos) << r.out;

  // The operator re-signs the timestamp (normal lifetime): the next poll ends the condition,
  // once, and the update goes through.
  s.expiry.timestamp = std::chrono::hours(24);
  test::write_file(fleet() / "mota.toml", s.to_toml());
  reopened = manager::Repository::open(fleet());
  ASSERT_TRUE(reopened) << reopened.error().message();
  *repo_ = std::move(*reopened);
  ASSERT_TRUE(repo_->refresh_timestamp());
  r = agent({"check-once"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto after = sink_.new_events();
  ASSERT_EQ(after.size(), 2u) << Json(after).dump(2);
  EXPECT_EQ(after[0]["state"], "metadata_ok") << after[0].dump();
  EXPECT_EQ(after[0]["model"], "");
  EXPECT_EQ(after[1]["state"], "installed") << after[1].dump();
  EXPECT_EQ(current_weights(), weights("2.0.0"));
  r = agent({"status"});
  EXPECT_EQ(r.out.find("metadata:"), std::string::npos) << r.out;
}

// 7. Endless data: the package replaced by an 8 GiB (sparse) file. The agent stops at the signed
//    length, keeps nothing, and does so in far less time than 8 GiB would take.
TEST_P(AgentAttack, EndlessPackageStopsAtSignedLength) {
  release("1.0.0");
  channel("1.0.0");
  install("1.0.0");
  auto rel = release("2.0.0");
  channel("2.0.0");
  stdfs::resize_file(served_package(rel), std::uintmax_t{8} << 30);

  Tree before = snapshot(model_dir());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = agent({"check-once"});
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("server announced 8589934592 bytes"), std::string::npos) << r.err;
  EXPECT_LT(took, 3s);  // reading, hashing and writing 8 GiB takes far longer
  expect_rejected(before, "failed", "server announced 8589934592 bytes");
  EXPECT_EQ(current_weights(), weights("1.0.0"));
}

INSTANTIATE_TEST_SUITE_P(Servers, AgentAttack,
                         ::testing::Values(ServerKind::MotaServe, ServerKind::Nginx),
                         [](const ::testing::TestParamInfo<ServerKind>& info) {
                           return info.param == ServerKind::MotaServe ? std::string("MotaServe")
                                                                      : std::string("Nginx");
                         });

}  // namespace
}  // namespace mota
