// `mota release add` builds package deltas from earlier releases and publishes them as TUF
// targets in the same publish: which versions, the size rule, the custom contract the agent
// relies on, verify(), and that a published delta really turns FROM into TO.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "delta/package/package_delta.hpp"
#include "manager/release/release.hpp"
#include "manager/repo/repository.hpp"
#include "manager/verify/verify.hpp"
#include "manifest/crypto.hpp"
#include "manifest/tuf/metadata.hpp"
#include "storage/package.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

std::map<std::string, std::string> tree_hash(const stdfs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : stdfs::recursive_directory_iterator(dir)) {
    const std::string rel = stdfs::relative(e.path(), dir).string();
    if (e.is_directory()) {
      out[rel + "/"] = "dir";
    } else {
      out[rel] = crypto::sha256_hex(test::read_file(e.path()));
    }
  }
  return out;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// 256 KiB of incompressible "weights"; version k differs from the base in k small patches, so
// any two versions share almost everything and a delta is tiny next to the package.
std::string weights(int k, unsigned seed = 1) {
  std::string w = random_bytes(256 << 10, seed);
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j < 64; ++j) w[static_cast<std::size_t>(i) * 20000 + 1000 + j] ^= 0x5a;
  }
  return w;
}

class ReleaseDeltaTest : public ::testing::Test {
 protected:
  void SetUp() override { init(Settings{}); }

  void init(Settings s) {
    s.zstd_level = 3;
    repo_dir_ = tmp_ / ("repo-" + std::to_string(++repos_));
    auto r = Repository::init(repo_dir_, s);
    ASSERT_TRUE(r.has_value()) << r.error().message();
  }

  Repository open() {
    auto r = Repository::open(repo_dir_);
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return std::move(*r);
  }

  stdfs::path model(const std::string& w, const std::string& tag) {
    const stdfs::path d = tmp_ / ("src-" + tag);
    stdfs::remove_all(d);
    test::write_file(d / "model.json",
                     R"({"name": "det", "framework": "other", "entry": "model.onnx"})");
    test::write_file(d / "model.onnx", w);
    test::write_file(d / "labels.txt", "person\ncar\n");
    return d;
  }

  ReleaseResult release(const std::string& version, const std::string& w,
                        std::optional<unsigned> deltas = std::nullopt) {
    auto repo = open();
    ReleaseOptions o;
    o.deltas = deltas;
    auto r = repo.add_release(model(w, version), version, o);
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return r ? *r : ReleaseResult{};
  }

  tuf::Targets current_targets() {
    auto ts = tuf::parse_timestamp(test::read_file(repo_dir_ / "repo/metadata/timestamp.json"));
    EXPECT_TRUE(ts.has_value());
    auto snap = tuf::parse_snapshot(
        test::read_file(repo_dir_ / "repo/metadata" /
                        (std::to_string(ts->signed_.snapshot.version) + ".snapshot.json")));
    EXPECT_TRUE(snap.has_value());
    auto t = tuf::parse_targets(test::read_file(
        repo_dir_ / "repo/metadata" /
        (std::to_string(snap->signed_.meta.at("targets.json").version) + ".targets.json")));
    EXPECT_TRUE(t.has_value());
    return t->signed_;
  }

  stdfs::path target_file(const std::string& path, const std::string& sha) {
    stdfs::path tp(path);
    return repo_dir_ / "repo/targets" / tp.parent_path() / (sha + "." + tp.filename().string());
  }

  std::vector<std::string> delta_paths() {
    std::vector<std::string> out;
    for (const auto& [p, t] : current_targets().targets) {
      if (t.custom.value("kind", "") == "delta") out.push_back(p);
    }
    return out;
  }

  // Re-signs the current targets after `edit` and publishes it (targets, snapshot, timestamp)
  // with the repository's own keys: a lie that every signature check accepts.
  void republish(const std::function<void(tuf::Targets&)>& edit) {
    const stdfs::path md = repo_dir_ / "repo/metadata";
    auto key = [&](const std::string& role) {
      auto k = crypto::PrivateKey::from_pem(test::read_file(repo_dir_ / "keys" / (role + ".pem")));
      EXPECT_TRUE(k.has_value());
      return std::move(*k);
    };
    auto meta = [](std::uint64_t v, const std::string& bytes) {
      tuf::MetaFile m;
      m.version = v;
      m.length = bytes.size();
      m.hashes["sha256"] = crypto::sha256_hex(bytes);
      return m;
    };
    auto ts = *tuf::parse_timestamp(test::read_file(md / "timestamp.json"));
    auto snap = *tuf::parse_snapshot(
        test::read_file(md / (std::to_string(ts.signed_.snapshot.version) + ".snapshot.json")));
    tuf::Targets t = current_targets();
    edit(t);
    t.version += 1;
    const auto tk = key("targets");
    const std::string tb = *tuf::sign_metadata(tuf::to_json(t), {&tk});
    test::write_file(md / (std::to_string(t.version) + ".targets.json"), tb);
    tuf::Snapshot s = snap.signed_;
    s.version += 1;
    s.meta["targets.json"] = meta(t.version, tb);
    const auto sk = key("snapshot");
    const std::string sb = *tuf::sign_metadata(tuf::to_json(s), {&sk});
    test::write_file(md / (std::to_string(s.version) + ".snapshot.json"), sb);
    tuf::Timestamp tsn = ts.signed_;
    tsn.version += 1;
    tsn.snapshot = meta(s.version, sb);
    const auto tsk = key("timestamp");
    test::write_file(md / "timestamp.json", *tuf::sign_metadata(tuf::to_json(tsn), {&tsk}));
  }

  void expect_verify_fails(const std::string& needle, Errc code = Errc::verification) {
    auto v = Repository::verify(repo_dir_);
    ASSERT_FALSE(v.has_value()) << "verify passed; expected: " << needle;
    EXPECT_EQ(v.error().code(), code) << v.error().message();
    EXPECT_NE(v.error().message().find(needle), std::string::npos) << v.error().message();
  }

  test::TempDir tmp_;
  stdfs::path repo_dir_;
  int repos_ = 0;
};

TEST_F(ReleaseDeltaTest, PublishesDeltasFromTheLastNLowerVersionsInOnePublish) {
  Settings s;
  s.delta_versions = 2;
  init(s);
  const auto first = release("1.0.0", weights(0));
  EXPECT_TRUE(first.deltas.empty());  // nothing to start from
  const auto r11 = release("1.1.0", weights(1));
  ASSERT_EQ(r11.deltas.size(), 1u);
  const auto r12 = release("1.2.0", weights(2));
  const std::uint64_t targets_before = current_targets().version;
  const auto r13 = release("1.3.0", weights(3));
  // Exactly one new targets version for the release and its deltas.
  EXPECT_EQ(current_targets().version, targets_before + 1);

  // N = 2: from 1.2.0 and 1.1.0, newest first; never from 1.0.0.
  ASSERT_EQ(r13.deltas.size(), 2u);
  EXPECT_EQ(r13.deltas[0].from, "1.2.0");
  EXPECT_EQ(r13.deltas[1].from, "1.1.0");
  for (const auto& d : r13.deltas) {
    EXPECT_TRUE(d.published) << d.reason;
    EXPECT_TRUE(d.reason.empty());
    EXPECT_GT(d.size, 0u);
    EXPECT_LT(d.ratio, 0.8);
    EXPECT_EQ(d.target.length, d.size);
  }

  // The custom contract, exactly.
  const auto targets = current_targets();
  const auto& rel12 = r12.release;
  const auto& rel13 = r13.release;
  const std::string dp = "deltas/det/1.2.0/1.3.0.mdelta";
  ASSERT_TRUE(targets.targets.count(dp));
  const auto& tf = targets.targets.at(dp);
  const Json want = {{"kind", "delta"},
                     {"name", "det"},
                     {"from", "1.2.0"},
                     {"to", "1.3.0"},
                     {"from_tree_digest", rel12.tree_digest},
                     {"tree_digest", rel13.tree_digest},
                     {"full_target", "models/det/1.3.0/det-1.3.0.mota"},
                     {"full_length", rel13.length},
                     {"full_sha256", rel13.sha256}};
  EXPECT_EQ(tf.custom, want) << tf.custom.dump();
  // Stored under its consistent-snapshot name, with the length and hash targets.json signs.
  const stdfs::path file = target_file(dp, tf.hashes.at("sha256"));
  ASSERT_TRUE(stdfs::is_regular_file(file)) << file;
  EXPECT_EQ(stdfs::file_size(file), tf.length);
  EXPECT_EQ(*crypto::file_sha256_hex(file.string()), tf.hashes.at("sha256"));
  EXPECT_EQ(r13.deltas[0].target.target_path, dp);
  EXPECT_EQ(r13.deltas[0].target.sha256, tf.hashes.at("sha256"));

  EXPECT_EQ(delta_paths(),
            (std::vector<std::string>{
                "deltas/det/1.0.0/1.1.0.mdelta", "deltas/det/1.0.0/1.2.0.mdelta",
                "deltas/det/1.1.0/1.2.0.mdelta", "deltas/det/1.1.0/1.3.0.mdelta", dp}));
  // Releases stay releases; deltas are listed on their own.
  auto repo = open();
  auto releases = repo.list_releases();
  ASSERT_TRUE(releases.has_value());
  ASSERT_EQ(releases->size(), 4u);
  for (const auto& r : *releases) EXPECT_EQ(r.target_path.rfind("models/", 0), 0u);
  auto deltas = repo.list_deltas("det");
  ASSERT_TRUE(deltas.has_value()) << deltas.error().message();
  ASSERT_EQ(deltas->size(), 5u);
  EXPECT_EQ((*deltas)[0].from, "1.0.0");
  EXPECT_EQ((*deltas)[0].to, "1.1.0");
  EXPECT_EQ((*deltas)[4].from, "1.2.0");
  EXPECT_EQ((*deltas)[4].to, "1.3.0");
  EXPECT_EQ((*deltas)[4].full_sha256, rel13.sha256);
  EXPECT_TRUE(repo.list_deltas("other")->empty());

  // Scratch trees and staged files are gone.
  EXPECT_TRUE(stdfs::is_empty(repo_dir_ / "tmp"));
  auto v = Repository::verify(repo_dir_);
  ASSERT_TRUE(v.has_value()) << v.error().message();
  EXPECT_NE(v->checked.back().find("5 deltas"), std::string::npos) << v->checked.back();
}

TEST_F(ReleaseDeltaTest, OptionOverridesSettingAndZeroDisables) {
  release("1.0.0", weights(0));
  release("1.1.0", weights(1));
  auto none = release("1.2.0", weights(2), 0u);
  EXPECT_TRUE(none.deltas.empty());
  auto one = release("1.3.0", weights(3), 1u);
  ASSERT_EQ(one.deltas.size(), 1u);
  EXPECT_EQ(one.deltas[0].from, "1.2.0");
  // Default (3): 1.3.0, 1.2.0, 1.1.0.
  auto dflt = release("1.4.0", weights(4));
  ASSERT_EQ(dflt.deltas.size(), 3u);
  EXPECT_EQ(dflt.deltas[2].from, "1.1.0");
  EXPECT_EQ(delta_paths().size(), 1u + 1u + 3u);

  // delta_versions = 0 in mota.toml turns them off.
  Settings off;
  off.delta_versions = 0;
  init(off);
  release("1.0.0", weights(0));
  auto r = release("1.1.0", weights(1));
  EXPECT_TRUE(r.deltas.empty());
  EXPECT_TRUE(delta_paths().empty());
}

TEST_F(ReleaseDeltaTest, SkippedWhenNotClearlySmaller) {
  release("1.0.0", weights(0, 1));
  const auto before = current_targets().targets.size();
  // An unrelated model: random bytes share nothing, the delta is as big as the package.
  auto r = release("1.1.0", weights(0, 99));
  ASSERT_EQ(r.deltas.size(), 1u);
  const auto& d = r.deltas[0];
  EXPECT_FALSE(d.published);
  EXPECT_GT(d.size, 0u);
  EXPECT_GT(d.ratio, 0.8);
  EXPECT_NE(d.reason.find("of the"), std::string::npos) << d.reason;
  EXPECT_NE(d.reason.find("delta_max_ratio 80.0%"), std::string::npos) << d.reason;
  // The release is published, without the delta.
  EXPECT_EQ(current_targets().targets.size(), before + 1);
  EXPECT_TRUE(delta_paths().empty());
  EXPECT_FALSE(stdfs::exists(repo_dir_ / "repo/targets/deltas/det/1.0.0"));
  EXPECT_TRUE(stdfs::is_empty(repo_dir_ / "tmp"));
  auto v = Repository::verify(repo_dir_);
  ASSERT_TRUE(v.has_value()) << v.error().message();

  // mota.toml's delta_max_ratio is the limit: at 0.1% even a close pair is skipped.
  Settings s;
  s.delta_max_ratio = 0.001;
  init(s);
  release("1.0.0", weights(0));
  auto tight = release("1.1.0", weights(6));
  ASSERT_EQ(tight.deltas.size(), 1u);
  EXPECT_FALSE(tight.deltas[0].published);
  EXPECT_NE(tight.deltas[0].reason.find("delta_max_ratio 0.1%"), std::string::npos)
      << tight.deltas[0].reason;
}

TEST_F(ReleaseDeltaTest, HotfixGetsDeltasOnlyFromLowerVersions) {
  release("1.0.0", weights(0));
  release("2.0.0", weights(2));
  release("2.0.0-rc.1", weights(1));  // a pre-release sorts below 2.0.0
  auto hotfix = release("1.0.1", weights(1));
  ASSERT_EQ(hotfix.deltas.size(), 1u);
  EXPECT_EQ(hotfix.deltas[0].from, "1.0.0");
  EXPECT_TRUE(hotfix.deltas[0].published);
  for (const auto& p : delta_paths()) {
    EXPECT_EQ(p.find("deltas/det/2.0.0/"), std::string::npos) << p;
  }
  EXPECT_EQ(delta_paths(), (std::vector<std::string>{"deltas/det/1.0.0/1.0.1.mdelta",
                                                     "deltas/det/1.0.0/2.0.0-rc.1.mdelta",
                                                     "deltas/det/1.0.0/2.0.0.mdelta"}));
  // Other models' releases are never bases.
  auto repo = open();
  ReleaseOptions o;
  o.name = "other";
  auto other = repo.add_release(model(weights(3), "other"), "0.9.0", o);
  ASSERT_TRUE(other.has_value()) << other.error().message();
  EXPECT_TRUE(other->deltas.empty());
  auto v = Repository::verify(repo_dir_);
  ASSERT_TRUE(v.has_value()) << v.error().message();
}

TEST_F(ReleaseDeltaTest, PublishedDeltaTurnsFromIntoTo) {
  // The real UltraFace model, fine-tuned: a few weights changed, and labels rewritten.
  const std::string onnx = test::read_file(test::shared_model("ultraface/version-slim-320.onnx"));
  std::string tuned = onnx;
  for (std::size_t i = tuned.size() / 2; i < tuned.size() / 2 + 4096; i += 16) tuned[i] ^= 0x01;
  release("1.0.0", onnx);
  auto r = release("1.1.0", tuned);
  ASSERT_EQ(r.deltas.size(), 1u);
  ASSERT_TRUE(r.deltas[0].published) << r.deltas[0].reason;
  EXPECT_LT(r.deltas[0].ratio, 0.2);

  auto repo = open();
  auto rels = *repo.list_releases();
  ASSERT_EQ(rels.size(), 2u);
  const auto from_pkg = target_file(rels[0].target_path, rels[0].sha256);
  ASSERT_TRUE(storage::unpack_file(from_pkg, tmp_ / "slot-a").has_value());
  const auto& d = r.deltas[0].target;
  const auto applied = delta::apply_package_file(
      tmp_ / "slot-a", target_file(d.target_path, d.sha256), tmp_ / "slot-b");
  ASSERT_TRUE(applied.has_value()) << applied.error().message();
  EXPECT_EQ(applied->tree_digest, r.release.tree_digest);
  EXPECT_EQ(applied->tree_digest, d.tree_digest);
  // Byte for byte what a full install of 1.1.0 gives.
  ASSERT_TRUE(
      storage::unpack_file(target_file(r.release.target_path, r.release.sha256), tmp_ / "full")
          .has_value());
  EXPECT_EQ(tree_hash(tmp_ / "slot-b"), tree_hash(tmp_ / "full"));
}

TEST_F(ReleaseDeltaTest, VerifyCatchesATamperedDeltaFile) {
  release("1.0.0", weights(0));
  auto r = release("1.1.0", weights(1));
  ASSERT_TRUE(r.deltas.at(0).published);
  const auto& d = r.deltas[0].target;
  const auto file = target_file(d.target_path, d.sha256);
  std::string bytes = test::read_file(file);
  bytes[bytes.size() / 2] ^= 0x01;
  test::write_file(file, bytes);
  expect_verify_fails("target " + d.target_path + ": sha256");
  stdfs::remove(file);
  expect_verify_fails("is missing", Errc::not_found);
}

TEST_F(ReleaseDeltaTest, VerifyCatchesDeltaTargetsThatLie) {
  release("1.0.0", weights(0));
  release("1.1.0", weights(1));
  release("1.2.0", weights(2));
  ASSERT_TRUE(Repository::verify(repo_dir_).has_value());
  const std::string real = "deltas/det/1.0.0/1.2.0.mdelta";
  const tuf::Targets good = current_targets();
  const Json custom11 = good.targets.at("deltas/det/1.1.0/1.2.0.mdelta").custom;

  // The 1.0.0 -> 1.2.0 delta presented as a delta from 1.1.0, with all of 1.1.0's values: only
  // the .mdelta's own header tells.
  republish([&](tuf::Targets& t) {
    auto tf = t.targets.at(real);
    tf.custom = custom11;
    t.targets.erase(real);
    t.targets.erase("deltas/det/1.1.0/1.2.0.mdelta");
    t.targets["deltas/det/1.1.0/1.2.0.mdelta"] = tf;
  });
  // (The file is stored under 1.0.0's directory; put it where the lie says.)
  {
    const auto& tf = good.targets.at(real);
    const auto sha = tf.hashes.at("sha256");
    stdfs::create_directories(repo_dir_ / "repo/targets/deltas/det/1.1.0");
    stdfs::copy_file(target_file(real, sha), target_file("deltas/det/1.1.0/1.2.0.mdelta", sha),
                     stdfs::copy_options::overwrite_existing);
  }
  expect_verify_fails(".mdelta is from det 1.0.0");

  struct Case {
    const char* what;
    std::function<void(Json&)> edit;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"from in custom differs from the path", [](Json& c) { c["from"] = "1.1.0"; },
       "which is not this path"},
      {"missing field", [](Json& c) { c.erase("full_sha256"); }, "\"full_sha256\" is missing"},
      {"not a digest", [](Json& c) { c["tree_digest"] = "abc"; }, "not 64 hex digits"},
      {"full_length a string", [](Json& c) { c["full_length"] = "12"; },
       "\"full_length\" is missing or not an unsigned integer"},
      {"wrong from tree", [&](Json& c) { c["from_tree_digest"] = custom11["from_tree_digest"]; },
       "from_tree_digest"},
      {"wrong full length", [](Json& c) { c["full_length"] = 1; }, "full_length 1 differs"},
      {"wrong full target", [](Json& c) { c["full_target"] = "models/det/1.1.0/det-1.1.0.mota"; },
       "full_target"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    republish([&](tuf::Targets& t) {
      t = good;
      c.edit(t.targets.at(real).custom);
    });
    expect_verify_fails(c.needle);
  }
  // A delta from a version that is not released.
  republish([&](tuf::Targets& t) {
    t = good;
    t.targets.erase("models/det/1.0.0/det-1.0.0.mota");
  });
  expect_verify_fails("version 1.0.0 of det is not released");
  // Back to the truth.
  republish([&](tuf::Targets& t) { t = good; });
  auto v = Repository::verify(repo_dir_);
  ASSERT_TRUE(v.has_value()) << v.error().message();
}

TEST_F(ReleaseDeltaTest, CorruptOldPackageIsSkippedWithAWarning) {
  const auto r10 = release("1.0.0", weights(0));
  release("1.1.0", weights(1));
  // Damage 1.0.0's package in the repository.
  const auto pkg = target_file(r10.release.target_path, r10.release.sha256);
  std::string bytes = test::read_file(pkg);
  bytes[bytes.size() / 2] ^= 0x20;
  test::write_file(pkg, bytes);

  auto r = release("1.2.0", weights(2));
  ASSERT_EQ(r.deltas.size(), 2u);
  EXPECT_EQ(r.deltas[0].from, "1.1.0");
  EXPECT_TRUE(r.deltas[0].published) << r.deltas[0].reason;
  EXPECT_EQ(r.deltas[1].from, "1.0.0");
  EXPECT_FALSE(r.deltas[1].published);
  EXPECT_NE(r.deltas[1].reason.find("old package in the repository is damaged"), std::string::npos)
      << r.deltas[1].reason;
  EXPECT_FALSE(current_targets().targets.count("deltas/det/1.0.0/1.2.0.mdelta"));
  EXPECT_TRUE(current_targets().targets.count("models/det/1.2.0/det-1.2.0.mota"));
  EXPECT_TRUE(stdfs::is_empty(repo_dir_ / "tmp"));
}

TEST_F(ReleaseDeltaTest, FailedPublishLeavesNoDeltaBehind) {
  release("1.0.0", weights(0));
  // Fault: the next targets version's file name is taken by a directory, so publishing fails
  // after the package and the delta are in place.
  const std::uint64_t next = current_targets().version + 1;
  const auto blocker = repo_dir_ / "repo/metadata" / (std::to_string(next) + ".targets.json");
  test::write_file(blocker / "keep", "not empty, so cleanup cannot remove it");
  const auto before = tree_hash(repo_dir_);
  auto repo = open();
  auto r = repo.add_release(model(weights(1), "x"), "1.1.0", ReleaseOptions{});
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("publish"), std::string::npos) << r.error().message();
  EXPECT_EQ(tree_hash(repo_dir_), before);
}

// The CLI: `release add` reports the deltas (text and --json), `release deltas` lists them.
TEST_F(ReleaseDeltaTest, Cli) {
  const std::string mota = test::build_path("manager/mota").string();
  const std::string dir = repo_dir_.string();
  auto r = test::run({mota, "release", "add", model(weights(0), "a").string(), "--version", "1.0.0",
                      "--repo", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run({mota, "release", "add", model(weights(0, 7), "b").string(), "--version", "1.1.0",
                 "--repo", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("delta from 1.0.0: skipped"), std::string::npos) << r.out;
  r = test::run({mota, "release", "add", model(weights(1, 7), "c").string(), "--version", "1.2.0",
                 "--deltas", "2", "--json", "--repo", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j["version"], "1.2.0");
  ASSERT_EQ(j["deltas"].size(), 2u);
  EXPECT_EQ(j["deltas"][0]["from"], "1.1.0");
  EXPECT_EQ(j["deltas"][0]["published"], true);
  EXPECT_EQ(j["deltas"][0]["target"]["target"], "deltas/det/1.1.0/1.2.0.mdelta");
  EXPECT_EQ(j["deltas"][1]["published"], false);
  EXPECT_TRUE(j["deltas"][1].contains("reason"));

  r = test::run({mota, "release", "deltas", "det", "--repo", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1.1.0"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("1.0.0 "), std::string::npos) << r.out;  // the skipped one is not there
  r = test::run({mota, "release", "deltas", "--json", "--repo", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json list = Json::parse(r.out);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["from"], "1.1.0");
  EXPECT_EQ(list[0]["to"], "1.2.0");
  r = test::run({mota, "release", "list", "--json", "--repo", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).size(), 3u);
  r = test::run({mota, "release", "add", model(weights(2), "d").string(), "--version", "1.3.0",
                 "--deltas", "-1", "--repo", dir});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = test::run({mota, "verify", dir});
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
}

TEST(DeltaSettings, TomlRoundTripAndErrors) {
  Settings s;
  s.delta_versions = 5;
  s.delta_max_ratio = 0.5;
  auto back = Settings::from_toml(s.to_toml());
  ASSERT_TRUE(back.has_value()) << back.error().message();
  EXPECT_EQ(back->delta_versions, 5u);
  EXPECT_DOUBLE_EQ(back->delta_max_ratio, 0.5);
  s.delta_max_ratio = 1;
  back = Settings::from_toml(s.to_toml());
  ASSERT_TRUE(back.has_value()) << back.error().message();
  EXPECT_DOUBLE_EQ(back->delta_max_ratio, 1.0);
  // Defaults when absent (repositories made before deltas).
  back = Settings::from_toml("zstd_level = 3\n");
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->delta_versions, 3u);
  EXPECT_DOUBLE_EQ(back->delta_max_ratio, 0.8);
  // Floats for integer keys are refused by type: toml++ would convert them with a cast that is
  // undefined when out of range (the toml fuzzer's finding; UBSan in CI halts on it).
  for (const char* bad :
       {"delta_versions = -1", "delta_versions = \"3\"", "delta_max_ratio = 0",
        "delta_max_ratio = 1.5", "delta_max_ratio = \"x\"", "delta_versions = 4.8e50",
        "delta_versions = 3.0", "zstd_level = 1e300", "zstd_level = -inf", "zstd_level = 3.0"}) {
    auto r = Settings::from_toml(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), Errc::parse);
    EXPECT_NE(r.error().message().find(std::string(bad).substr(0, 10)), std::string::npos)
        << r.error().message();
  }
}

}  // namespace
}  // namespace mota::manager
