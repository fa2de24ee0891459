// Signed offline bundles end to end, with the real binaries: `mota bundle create` writes a bundle
// from a real repository (real keys, real signatures), and `mota-agent install FILE.motab` checks
// it against the device's own trusted metadata, as a poll would, before anything is installed.
//
// Refused, each with a clear error, nothing installed, and the device's model untouched: a bare
// .mota package (which proves nothing about where it came from), a bundle made in an unrelated
// repository with other keys, a relabelled package (another model's weights under this version's
// name), a bundle damaged in its metadata or its package or truncated, an old bundle on a device
// that has seen newer metadata, an expired bundle, a downgrade or a blocklisted version, a model
// the device does not run, and hostile archives. Installed: a good bundle on a device that never
// reached the server (root rotated before bundling), a delta when the bundle carries one from the
// installed version, a bundle made with --valid-for from a repository whose metadata had expired.

#include "manager/release/bundle.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <random>

#include "agent/requirements.hpp"
#include "agent/state.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/tuf/metadata.hpp"
#include "storage/bundle.hpp"
#include "storage/package.hpp"
#include "tests/support/agent_support.hpp"
#include "tests/support/event_sink.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::hours;

std::string random_weights(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// One simulated device: its agent.toml and state directory.
struct Device {
  stdfs::path dir;
  stdfs::path state() const { return dir / "state"; }
  stdfs::path config() const { return dir / "agent.toml"; }
  stdfs::path model_dir() const { return state() / "models" / "detector"; }
  std::string current() const {
    std::error_code ec;
    auto t = stdfs::read_symlink(model_dir() / "current", ec);
    return ec ? "" : t.string();
  }
  std::string current_weights() const {
    std::error_code ec;
    if (!stdfs::exists(model_dir() / "current" / "model.onnx", ec)) return "";
    return test::read_file(model_dir() / "current" / "model.onnx");
  }
  std::string trusted(const std::string& file) const {
    std::error_code ec;
    if (!stdfs::exists(state() / "metadata" / file, ec)) return "";
    return test::read_file(state() / "metadata" / file);
  }
  test::RunResult agent(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {test::build_path("agent/mota-agent").string(), "--config",
                                     config().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::run(argv);
  }
  // Events still queued in the device's outbox (a device without a server keeps them).
  std::vector<Json> queued_events() const {
    std::vector<Json> out;
    auto st = agent::StateStore::open(state());
    EXPECT_TRUE(st) << st.error().message();
    if (!st) return out;
    auto items = st->peek(1000);
    EXPECT_TRUE(items);
    for (const auto& i : *items) {
      if (i.kind == agent::OutboxKind::event) out.push_back(Json::parse(i.body));
    }
    return out;
  }
};

class BundleInstall : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(fleet_.start(work_ / "fleet", "device-0001"));
    v1_ = random_weights(1 << 20, 1);
    v2_ = v1_;  // a fine-tune: a few bytes change, so release add publishes a small delta
    for (std::size_t i = 64; i < v2_.size(); i += 8191) v2_[i] = static_cast<char>(v2_[i] ^ 1);
  }

  // A device polling the fleet's server (online), or one whose server_url nothing listens on.
  Device device(const std::string& name, bool online, const stdfs::path& root = {},
                const std::string& delta = "prefer") {
    Device d{work_ / name};
    const std::string url =
        online ? fleet_.url : "http://127.0.0.1:" + std::to_string(test::free_port());
    test::write_file(
        d.config(),
        "server_url = \"" + url + "\"\nstate_dir = \"" + d.state().string() +
            "\"\nupdate_lock = \"" + d.state().string() + "/update.lock\"\ntrusted_root = \"" +
            (root.empty() ? fleet_.root_json : root).string() +
            "\"\ndevice_id = \"device-0001\"\nlog_level = \"warn\"\ndelta = \"" + delta +
            "\"\n[retry]\nmax_attempts = 1\n[health]\nenabled = false\n"
            "[[model]]\nname = \"detector\"\nchannel = \"stable\"\n");
    return d;
  }
  manager::Release release(manager::Repository& repo, const std::string& version,
                           const std::string& weights, const std::string& name = "") {
    auto src = work_ / ("src-" + std::to_string(++sources_));
    test::make_model_dir(src, weights);
    auto r = repo.add_release(src, version, name);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : manager::Release{};
  }
  manager::Release release(const std::string& version, const std::string& weights) {
    return release(*fleet_.repo, version, weights);
  }
  void channel(const std::string& version, bool allow_downgrade = false) {
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = version;
    req.allow_downgrade = allow_downgrade;
    auto ch = fleet_.repo->set_channel(req);
    ASSERT_TRUE(ch) << ch.error().message();
  }
  test::RunResult mota(std::vector<std::string> args) {
    args.insert(args.begin(), test::build_path("manager/mota").string());
    return test::run(args);
  }
  // `mota bundle create` on `repo` (default: the fleet's); returns the file.
  stdfs::path bundle(const std::string& version, const std::vector<std::string>& extra = {},
                     stdfs::path repo = {}) {
    if (repo.empty()) repo = work_ / "fleet";
    const auto out = work_ / "usb" / ("b" + std::to_string(++bundles_) + "-" + version + ".motab");
    std::vector<std::string> args = {"bundle", "create",     "detector", version,
                                     "-o",     out.string(), "--repo",   repo.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    stdfs::create_directories(out.parent_path());
    auto r = mota(args);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return out;
  }
  // The bundle with some entries' bytes replaced (names as in the archive).
  stdfs::path rewrite(const stdfs::path& in, const std::map<std::string, std::string>& replace) {
    const auto out = work_ / "usb" / ("rewritten-" + std::to_string(++bundles_) + ".motab");
    auto r = storage::BundleReader::open(in);
    if (!r) {
      ADD_FAILURE() << r.error().message();
      return out;
    }
    auto w = storage::BundleWriter::create(out);
    if (!w) {
      ADD_FAILURE() << w.error().message();
      return out;
    }
    for (const auto& e : r->entries()) {
      auto it = replace.find(e.name);
      auto bytes = r->read(e, 1 << 30);
      EXPECT_TRUE(bytes);
      EXPECT_TRUE(w->add(e.name, it != replace.end() ? it->second : bytes.value_or("")));
    }
    EXPECT_TRUE(w->commit());
    return out;
  }
  std::string entry(const stdfs::path& bundle, const std::string& suffix, std::string* name) {
    auto r = storage::BundleReader::open(bundle);
    if (!r) {
      ADD_FAILURE() << r.error().message();
      return "";
    }
    for (const auto& e : r->entries()) {
      if (e.name.ends_with(suffix)) {
        *name = e.name;
        return r->read(e, 1 << 30).value_or("");
      }
    }
    ADD_FAILURE() << "no entry " << suffix;
    return "";
  }
  // Installs `version` through a poll of the fleet's server.
  void poll(const Device& d, const std::string& weights) {
    auto r = d.agent({"check-once"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    ASSERT_EQ(d.current_weights(), weights);
  }
  // The events the fleet's server received since the last call.
  std::vector<Json> new_events() {
    auto all = fleet_.sink.events();
    std::vector<Json> out(all.begin() + static_cast<std::ptrdiff_t>(seen_), all.end());
    seen_ = all.size();
    return out;
  }
  // What a refused install must leave: exit 1, the cause on stderr, the same model serving, the
  // trusted metadata unchanged when `same_metadata`, nothing in downloads/.
  void expect_refused(const Device& d, const test::RunResult& r, const std::string& cause,
                      const std::string& weights_before, const std::string& root_before,
                      const std::string& ts_before, bool same_metadata = true) {
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.err.find(cause), std::string::npos) << r.err;
    EXPECT_EQ(d.current_weights(), weights_before);
    if (same_metadata) {
      EXPECT_EQ(d.trusted("root.json"), root_before);
      EXPECT_EQ(d.trusted("timestamp.json"), ts_before);
    }
    std::error_code ec;
    EXPECT_TRUE(!stdfs::exists(d.state() / "downloads", ec) ||
                stdfs::is_empty(d.state() / "downloads"))
        << "bytes from a refused bundle kept in downloads/";
  }

  test::TempDir work_;
  test::RepoServer fleet_;
  std::string v1_, v2_;
  int bundles_ = 0, sources_ = 0;
  std::size_t seen_ = 0;
};

// A device that never reached its server (nothing listens at its server_url) installs from a
// good bundle, through a root rotation it learns from the bundle itself.
TEST_F(BundleInstall, DeviceThatNeverReachedTheServerInstallsFromAGoodBundle) {
  auto rel = release("1.0.0", v1_);
  channel("1.0.0");
  ASSERT_TRUE(fleet_.repo->rotate_key("root"));       // root 2
  ASSERT_TRUE(fleet_.repo->rotate_key("timestamp"));  // root 3
  const auto b = bundle("1.0.0");
  Device d = device("offline", /*online=*/false);

  auto r = d.agent({"install", b.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("detector: installed 1.0.0 from " + b.string() + " (full)"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(d.current_weights(), v1_);
  EXPECT_EQ(d.current(), "a");
  // Its trusted metadata moved forward exactly as a poll would have moved it.
  auto root = tuf::parse_root(d.trusted("root.json"));
  ASSERT_TRUE(root);
  EXPECT_EQ(root->signed_.version, 3u);
  EXPECT_EQ(d.trusted("timestamp.json"),
            test::read_file(work_ / "fleet" / "repo" / "metadata" / "timestamp.json"));
  auto st = d.agent({"status", "--json"});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  auto sj = Json::parse(st.out);
  EXPECT_EQ(sj["models"][0]["version"], "1.0.0");
  EXPECT_EQ(sj["models"][0]["committed"], true);
  // The event waits in the outbox for a server: installed, from a bundle.
  auto ev = d.queued_events();
  ASSERT_EQ(ev.size(), 1u) << Json(ev).dump(2);
  EXPECT_EQ(ev[0]["state"], "installed");
  EXPECT_EQ(ev[0]["source"], "bundle");
  EXPECT_EQ(ev[0]["step"], "commit");
  EXPECT_EQ(ev[0]["kind"], "full");
  EXPECT_EQ(ev[0]["to"], "1.0.0");
  EXPECT_EQ(ev[0]["channel"], "stable");
  EXPECT_EQ(ev[0]["bytes"], rel.length);

  // The same bundle again: nothing to do.
  r = d.agent({"install", b.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("1.0.0 is already installed"), std::string::npos) << r.out;
  EXPECT_EQ(d.queued_events().size(), 1u);
}

// What today's `install FILE.mota` took on trust is refused: a package proves nothing about who
// built it.
TEST_F(BundleInstall, BarePackageIsRefusedWithHowToMakeABundle) {
  auto rel = release("1.0.0", v1_);
  channel("1.0.0");
  Device d = device("dev", /*online=*/true);
  const auto pkg = work_ / "fleet" / "repo" / "targets" / "models" / "detector" / "1.0.0" /
                   (rel.sha256 + ".detector-1.0.0.mota");
  auto r = d.agent({"install", pkg.string()});
  expect_refused(d, r,
                 pkg.string() +
                     " is a bare package, not a signed bundle: make one with `mota bundle "
                     "create MODEL VERSION`",
                 "", "", "", /*same_metadata=*/false);
  EXPECT_FALSE(stdfs::exists(d.model_dir() / "a"));
}

// A bundle made in an unrelated repository, with other keys, for the same model name: refused by
// signature, with or without a root rotation in it; the device's trusted metadata untouched.
TEST_F(BundleInstall, ForeignBundleIsRefusedBySignature) {
  release("1.0.0", v1_);
  channel("1.0.0");
  Device d = device("dev", /*online=*/true);
  poll(d, v1_);
  new_events();
  const std::string root_before = d.trusted("root.json"), ts_before = d.trusted("timestamp.json");
  for (bool rotated : {false, true}) {
    SCOPED_TRACE(rotated ? "foreign repository with a rotated root" : "foreign repository");
    const auto dir = work_ / (rotated ? "foreign-rotated" : "foreign");
    auto foreign = manager::Repository::init(dir, manager::Settings{});
    ASSERT_TRUE(foreign) << foreign.error().message();
    release(*foreign, "2.0.0", random_weights(50000, 9));
    if (rotated) {
      ASSERT_TRUE(foreign->rotate_key("root"));
    }
    const auto b = bundle("2.0.0", {}, dir);
    auto r = d.agent({"install", b.string()});
    expect_refused(d, r, "signatures", v1_, root_before, ts_before);
    EXPECT_NE(r.err.find(rotated ? "2.root.json" : "timestamp.json"), std::string::npos) << r.err;
    auto ev = new_events();
    ASSERT_EQ(ev.size(), 1u) << Json(ev).dump(2);
    EXPECT_EQ(ev[0]["state"], "failed");
    EXPECT_EQ(ev[0]["step"], "refresh");
    EXPECT_EQ(ev[0]["source"], "bundle");
    EXPECT_EQ(ev[0]["to"], "2.0.0");
  }
}

// Another model's weights packed under this version's name, inside an otherwise genuine bundle:
// the signed sha256 does not match. The genuine bundle then installs (nothing was blocked).
TEST_F(BundleInstall, RelabelledPackageIsRefusedByHash) {
  release("1.0.0", v1_);
  channel("1.0.0");
  Device d = device("dev", /*online=*/true, {}, "never");
  poll(d, v1_);
  new_events();
  release("1.1.0", v2_);
  const auto good = bundle("1.1.0");
  std::string pkg_entry;
  const std::string genuine = entry(good, ".detector-1.1.0.mota", &pkg_entry);
  // The attacker's package: other weights, but detector 1.1.0 in its model.json, cut or padded
  // to the signed length so that only the hash can tell.
  const auto src = work_ / "other-model";
  test::make_model_dir(src, random_weights(1 << 20, 77));
  storage::PackOptions po;
  po.version = "1.1.0";
  ASSERT_TRUE(storage::pack(src, work_ / "relabelled.mota", po));
  std::string fake = test::read_file(work_ / "relabelled.mota");
  fake.resize(genuine.size(), '\0');
  ASSERT_NE(fake, genuine);
  const auto bad = rewrite(good, {{pkg_entry, fake}});

  auto r = d.agent({"install", bad.string()});
  expect_refused(d, r, "sha256 mismatch", v1_, "", "", /*same_metadata=*/false);
  auto ev = new_events();
  ASSERT_EQ(ev.size(), 1u) << Json(ev).dump(2);
  EXPECT_EQ(ev[0]["state"], "failed");
  EXPECT_EQ(ev[0]["step"], "download");
  EXPECT_EQ(ev[0]["source"], "bundle");

  r = d.agent({"install", good.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(d.current_weights(), v2_);
}

// A bundle damaged in transit or on purpose: a signature byte, a metadata length, a package byte,
// a truncated file. Each is refused before anything is installed; the intact one installs.
TEST_F(BundleInstall, TamperedBundleIsRefused) {
  release("1.0.0", v1_);
  channel("1.0.0");
  Device d = device("dev", /*online=*/true, {}, "never");
  poll(d, v1_);
  release("1.1.0", v2_);
  channel("1.1.0");
  const auto good = bundle("1.1.0");
  const std::string root_before = d.trusted("root.json"), ts_before = d.trusted("timestamp.json");

  std::string ts_name, targets_name, pkg_name;
  std::string ts = entry(good, "metadata/timestamp.json", &ts_name);
  std::string targets = entry(good, ".targets.json", &targets_name);
  std::string pkg = entry(good, ".detector-1.1.0.mota", &pkg_name);
  // A hex digit of the timestamp's signature.
  auto sig = ts.find("\"sig\": \"");
  ASSERT_NE(sig, std::string::npos);
  sig += 8 + 10;
  ts[sig] = ts[sig] == '0' ? '1' : '0';
  // A digit of a length in targets.json: still well-formed, but not what the snapshot signed.
  auto len = targets.find("\"length\": ");
  ASSERT_NE(len, std::string::npos);
  len += 10;
  targets[len] = targets[len] == '1' ? '2' : '1';
  pkg[pkg.size() / 2] ^= 0x04;

  struct Case {
    const char* what;
    stdfs::path file;
    const char* cause;
    bool metadata_kept;
  };
  const std::string whole = test::read_file(good);
  test::write_file(work_ / "usb" / "truncated.motab", whole.substr(0, whole.size() * 2 / 3));
  const Case cases[] = {
      {"signature byte", rewrite(good, {{ts_name, ts}}), "timestamp.json", true},
      {"truncated file", work_ / "usb" / "truncated.motab", "truncated?", true},
      // From here the (genuine) timestamp and snapshot move the device forward, as online.
      {"metadata length", rewrite(good, {{targets_name, targets}}), "hash mismatch", false},
      {"package byte", rewrite(good, {{pkg_name, pkg}}), "sha256 mismatch", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto r = d.agent({"install", c.file.string()});
    expect_refused(d, r, c.cause, v1_, root_before, ts_before, c.metadata_kept);
  }
  auto r = d.agent({"install", good.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(d.current_weights(), v2_);
  // Online again, the device polls on from where the bundle left its metadata.
  r = d.agent({"check-once"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("detector: up to date 1.1.0"), std::string::npos) << r.out;
}

// A device that has seen newer metadata (here from a poll) refuses an older bundle: TUF's rollback
// protection, as online. A bundle made after that installs.
TEST_F(BundleInstall, OldBundleIsRefusedByRollbackProtection) {
  release("1.0.0", v1_);
  release("1.1.0", v2_);
  channel("1.0.0");
  const auto old = bundle("1.1.0");
  ASSERT_TRUE(fleet_.repo->refresh_timestamp());  // any publish
  Device d = device("dev", /*online=*/true, {}, "never");
  poll(d, v1_);
  new_events();
  const std::string root_before = d.trusted("root.json"), ts_before = d.trusted("timestamp.json");

  auto r = d.agent({"install", old.string()});
  expect_refused(d, r, "is lower than trusted version", v1_, root_before, ts_before);
  auto ev = new_events();
  ASSERT_EQ(ev.size(), 1u) << Json(ev).dump(2);
  EXPECT_EQ(ev[0]["state"], "failed");
  EXPECT_EQ(ev[0]["step"], "refresh");
  EXPECT_NE(ev[0]["error"].get<std::string>().find("replayed or rolled-back"), std::string::npos);

  r = d.agent({"install", bundle("1.1.0").string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(d.current_weights(), v2_);
}

// Metadata signed two days ago (1-day timestamp) has expired: devices refuse a bundle of it, as
// they refuse it online. `--valid-for 30d` re-signs the online roles first: that one installs.
TEST_F(BundleInstall, ExpiredBundleIsRefusedAndValidForMakesOneThatInstalls) {
  const auto past = now_seconds() - hours(48);
  const auto dir = work_ / "aged";
  auto aged = manager::Repository::init(dir, manager::Settings{}, [past] { return past; });
  ASSERT_TRUE(aged) << aged.error().message();
  release(*aged, "1.0.0", v1_);
  manager::BundleRequest req;
  req.model = "detector";
  req.version = "1.0.0";
  req.output = work_ / "usb" / "expired.motab";
  stdfs::create_directories(req.output.parent_path());
  ASSERT_TRUE(manager::create_bundle(dir, req, [past] { return past; }));  // valid back then
  Device d = device("dev", /*online=*/false, dir / "repo" / "metadata" / "1.root.json");

  auto r = d.agent({"install", req.output.string()});
  expect_refused(d, r, "expired at", "", "", "", /*same_metadata=*/false);
  EXPECT_NE(r.err.find("timestamp.json"), std::string::npos) << r.err;
  EXPECT_FALSE(stdfs::exists(d.model_dir() / "current"));
  auto ev = d.queued_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0]["state"], "failed");
  EXPECT_EQ(ev[0]["step"], "refresh");

  // Without --valid-for, `mota bundle create` refuses to write what every device would refuse.
  const auto plain = work_ / "usb" / "plain.motab";
  auto c =
      mota({"bundle", "create", "detector", "1.0.0", "-o", plain.string(), "--repo", dir.string()});
  EXPECT_EQ(c.exit_code, 1);
  EXPECT_NE(c.err.find("expired at"), std::string::npos) << c.err;
  EXPECT_FALSE(stdfs::exists(plain));
  r = d.agent({"install", bundle("1.0.0", {"--valid-for", "30d"}, dir).string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(d.current_weights(), v1_);
}

// A bundle that carries the delta from the installed version: the device applies it (7 KiB of
// changes instead of the 1 MiB package), and says so.
TEST_F(BundleInstall, DeltaFromTheInstalledVersionIsUsed) {
  release("1.0.0", v1_);
  channel("1.0.0");
  Device d = device("dev", /*online=*/true);
  poll(d, v1_);
  new_events();
  auto full = release("1.1.0", v2_);
  const auto b = bundle("1.1.0", {"--delta-from", "1.0.0"});
  std::string delta_name;
  const auto delta = entry(b, ".1.1.0.mdelta", &delta_name);
  ASSERT_LT(delta.size() * 10, full.length);

  auto r = d.agent({"install", b.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("installed 1.1.0 from " + b.string() + " (delta)"), std::string::npos)
      << r.out;
  EXPECT_EQ(d.current_weights(), v2_);
  auto ev = new_events();
  ASSERT_EQ(ev.size(), 1u) << Json(ev).dump(2);
  EXPECT_EQ(ev[0]["state"], "installed");
  EXPECT_EQ(ev[0]["kind"], "delta");
  EXPECT_EQ(ev[0]["source"], "bundle");
  EXPECT_EQ(ev[0]["bytes"], delta.size());
  EXPECT_EQ(ev[0]["saved_bytes"], full.length - delta.size());

  // A bundle without the delta: the full package, from the bundle.
  Device e = device("other", /*online=*/true);
  poll(e, v1_);
  new_events();
  r = e.agent({"install", bundle("1.1.0").string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("(full)"), std::string::npos) << r.out;
  EXPECT_EQ(e.current_weights(), v2_);
}

// The poll's version policy applies offline: no downgrade unless the channel explicitly rolls
// back to it, no version this device blocked, no model it does not run.
TEST_F(BundleInstall, VersionPolicyAppliesOffline) {
  release("1.0.0", v1_);
  release("1.1.0", v2_);
  channel("1.1.0");
  Device d = device("dev", /*online=*/true, {}, "never");
  poll(d, v2_);
  new_events();

  auto r = d.agent({"install", bundle("1.0.0").string()});
  expect_refused(d, r, "refused: version 1.0.0 is older than the installed 1.1.0", v2_, "", "",
                 false);
  auto ev = new_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0]["state"], "refused");
  EXPECT_EQ(ev[0]["step"], "policy");
  EXPECT_EQ(ev[0]["source"], "bundle");

  // Once the channel rolls back to 1.0.0, a bundle made then carries that signed channel file.
  channel("1.0.0", /*allow_downgrade=*/true);
  r = d.agent({"install", bundle("1.0.0").string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(d.current_weights(), v1_);

  // A version this device blocked (it failed here) is refused.
  {
    auto st = agent::StateStore::open(d.state());
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->block("detector", "1.1.0", "failed its trial here"));
  }
  channel("1.1.0");
  r = d.agent({"install", bundle("1.1.0").string()});
  expect_refused(d, r, "refused: version 1.1.0 is blocklisted on this device", v1_, "", "", false);

  // A release for another architecture: its signed requirements are checked as a poll checks
  // them, before anything is copied out of the bundle.
  {
    const auto src = work_ / "src-armless";
    test::make_model_dir(src, random_weights(1000, 4));
    Json m = Json::parse(test::read_file(src / "model.json"));
    const std::string other = test::this_arch() == "armv7l" ? "riscv64" : "armv7l";
    m["requirements"] = Json{{"arch", {other}}};
    test::write_file(src / "model.json", m.dump(2));
    ASSERT_TRUE(fleet_.repo->add_release(src, "1.2.0"));
    new_events();
    r = d.agent({"install", bundle("1.2.0").string()});
    expect_refused(d, r, "refused: requirements not met: arch: the release runs on " + other, v1_,
                   "", "", false);
    ev = new_events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0]["state"], "refused");
    EXPECT_EQ(ev[0]["step"], "requirements");
    EXPECT_EQ(ev[0]["source"], "bundle");
  }

  // A bundle of a model agent.toml does not list.
  release(*fleet_.repo, "3.0.0", random_weights(1000, 3), "other-model");
  const auto out = work_ / "usb" / "other.motab";
  auto c = mota({"bundle", "create", "other-model", "3.0.0", "-o", out.string(), "--repo",
                 (work_ / "fleet").string()});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  r = d.agent({"install", out.string()});
  expect_refused(d, r, "a bundle of other-model 3.0.0, a model agent.toml does not list", v1_, "",
                 "", false);
}

// Hostile archives never get past the reader: nothing is written outside (or inside) the device.
TEST_F(BundleInstall, HostileArchivesAreRefused) {
  release("1.0.0", v1_);
  channel("1.0.0");
  const auto good = bundle("1.0.0");
  Device d = device("dev", /*online=*/false);
  auto header = [](const std::string& name, std::size_t size, char type) {
    std::string h(512, '\0');
    std::memcpy(h.data(), name.data(), std::min<std::size_t>(name.size(), 100));
    std::snprintf(h.data() + 100, 8, "%07o", 0644);
    std::snprintf(h.data() + 108, 8, "%07o", 0);
    std::snprintf(h.data() + 116, 8, "%07o", 0);
    std::snprintf(h.data() + 124, 12, "%011zo", size);
    std::snprintf(h.data() + 136, 12, "%011o", 0);
    h[156] = type;
    if (type == '2') std::memcpy(h.data() + 157, "/etc/passwd", 11);
    std::memcpy(h.data() + 257,
                "ustar\0"
                "00",
                8);
    std::memset(h.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char ch : h) sum += ch;
    std::snprintf(h.data() + 148, 8, "%06o", sum);
    h[155] = ' ';
    return h;
  };
  // The good bundle's first entry (bundle.json), then the hostile entry, then the end.
  auto r0 = storage::BundleReader::open(good);
  ASSERT_TRUE(r0) << r0.error().message();
  const auto& idx = r0->entries()[0];
  std::string index = r0->read(idx, 1 << 16).value_or("");
  std::string first = header("bundle.json", index.size(), '0') + index;
  first.resize((first.size() + 511) / 512 * 512, '\0');
  const std::pair<std::string, std::string> cases[] = {
      {header("../../evil", 4, '0') + std::string("evil") + std::string(508, '\0'),
       "a '..' path component"},
      {header("/tmp/evil", 4, '0') + std::string("evil") + std::string(508, '\0'),
       "an absolute path"},
      {header("targets/link", 0, '2'), "is a symbolic link"},
      {header("targets/huge", 1 << 30, '0'), "declares 1073741824 bytes"},
  };
  for (const auto& [hostile, cause] : cases) {
    SCOPED_TRACE(cause);
    const auto file = work_ / "usb" / "hostile.motab";
    test::write_file(file, first + hostile + std::string(1024, '\0'));
    auto r = d.agent({"install", file.string()});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.err.find("is not a mota bundle: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(cause), std::string::npos) << r.err;
    EXPECT_FALSE(stdfs::exists(d.model_dir() / "current"));
    EXPECT_FALSE(stdfs::exists(work_ / "evil"));
    EXPECT_FALSE(stdfs::exists("/tmp/evil"));
  }
  auto r = d.agent({"install", good.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace mota
