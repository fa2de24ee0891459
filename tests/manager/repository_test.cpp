#include "manager/repo/repository.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.hpp"
#include "common/http.hpp"
#include "manager/verify/verify.hpp"
#include "manifest/crypto.hpp"
#include "manifest/tuf/client.hpp"
#include "manifest/tuf/metadata.hpp"
#include "net/http_server.hpp"
#include "storage/package.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

ChannelRequest channel_req(const std::string& channel, const std::string& model,
                           const std::string& version, unsigned percent, bool allow_downgrade,
                           const std::string& min_version) {
  ChannelRequest r;
  r.channel = channel;
  r.model = model;
  r.version = version;
  r.percent = percent;
  r.allow_downgrade = allow_downgrade;
  r.min_version = min_version;
  return r;
}

namespace stdfs = std::filesystem;
using std::chrono::hours;

// Every file under `dir` (relative path -> mode + sha256 of content): equal maps mean nothing
// was created, removed or changed.
std::map<std::string, std::string> tree_hash(const stdfs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : stdfs::recursive_directory_iterator(dir)) {
    const std::string rel = stdfs::relative(e.path(), dir).string();
    if (e.is_directory()) {
      out[rel + "/"] = "dir";
    } else {
      struct stat st {};
      ::stat(e.path().c_str(), &st);
      out[rel] = std::to_string(st.st_mode) + " " + crypto::sha256_hex(test::read_file(e.path()));
    }
  }
  return out;
}

mode_t mode_of(const stdfs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

// A small generated model: model.json without "files" (the packer fills them in) + two files.
// Not a real ONNX file, hence framework "other".
stdfs::path make_model(const stdfs::path& dir, const std::string& name = "det",
                       const std::string& payload = "weights") {
  test::write_file(dir / "model.json",
                   R"({"name": ")" + name +
                       R"(", "version": "0.0.1", "framework": "other", "entry": "model.onnx"})");
  test::write_file(dir / "model.onnx", std::string(4096, 'w') + payload);
  test::write_file(dir / "labels" / "coco.txt", "person\ncar\n");
  return dir;
}

Settings fast_settings() {
  Settings s;
  s.zstd_level = 3;
  return s;
}

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_dir_ = tmp_ / "repo-dir";
    auto r = Repository::init(repo_dir_, fast_settings());
    ASSERT_TRUE(r.has_value()) << r.error().message();
    model_ = make_model(tmp_ / "model");
  }

  Repository open(NowFn now = now_seconds) {
    auto r = Repository::open(repo_dir_, std::move(now));
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return std::move(*r);
  }

  std::uint64_t timestamp_version() {
    auto ts = tuf::parse_timestamp(test::read_file(repo_dir_ / "repo/metadata/timestamp.json"));
    EXPECT_TRUE(ts.has_value());
    return ts->signed_.version;
  }

  void expect_verifies(NowFn now = now_seconds) {
    auto v = Repository::verify(repo_dir_, std::move(now));
    ASSERT_TRUE(v.has_value()) << v.error().message();
  }

  test::TempDir tmp_;
  stdfs::path repo_dir_;
  stdfs::path model_;
};

TEST_F(RepositoryTest, InitLayoutAndModes) {
  const stdfs::path d = repo_dir_;
  EXPECT_TRUE(stdfs::is_regular_file(d / "mota.toml"));
  EXPECT_EQ(mode_of(d / "keys"), 0700u);
  for (const char* role : {"root", "targets", "snapshot", "timestamp"}) {
    const auto key = d / "keys" / (std::string(role) + ".pem");
    EXPECT_EQ(mode_of(key), 0600u) << key;
    EXPECT_NE(test::read_file(key).find("BEGIN PRIVATE KEY"), std::string::npos);
  }
  for (const char* f :
       {"1.root.json", "root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"}) {
    EXPECT_TRUE(stdfs::is_regular_file(d / "repo/metadata" / f)) << f;
  }
  EXPECT_EQ(test::read_file(d / "repo/metadata/1.root.json"),
            test::read_file(d / "repo/metadata/root.json"));
  auto root = tuf::parse_root(test::read_file(d / "repo/metadata/1.root.json"));
  ASSERT_TRUE(root.has_value());
  EXPECT_TRUE(root->signed_.consistent_snapshot);
  EXPECT_EQ(root->signed_.keys.size(), 4u);
  // Expiries follow the defaults: root about a year out, timestamp about a day.
  const auto now = now_seconds();
  EXPECT_GT(root->signed_.expires, now + hours(24 * 364));
  auto ts = tuf::parse_timestamp(test::read_file(d / "repo/metadata/timestamp.json"));
  ASSERT_TRUE(ts.has_value());
  EXPECT_LT(ts->signed_.expires, now + hours(25));
  EXPECT_GT(ts->signed_.expires, now + hours(23));
  // No private material in the served tree.
  for (const auto& e : stdfs::recursive_directory_iterator(d / "repo")) {
    if (e.is_regular_file()) {
      EXPECT_EQ(test::read_file(e.path()).find("PRIVATE"), std::string::npos) << e.path();
    }
  }
  expect_verifies();
}

TEST_F(RepositoryTest, InitWithEcdsaAndCustomExpiry) {
  Settings s = fast_settings();
  s.key_type = crypto::KeyType::ecdsa_p256;
  s.expiry = *parse_expiry_spec("targets=2w,timestamp=6h");
  auto r = Repository::init(tmp_ / "ec", s);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  auto reopened = Repository::open(tmp_ / "ec");
  ASSERT_TRUE(reopened.has_value()) << reopened.error().message();
  EXPECT_EQ(reopened->settings().key_type, crypto::KeyType::ecdsa_p256);
  EXPECT_EQ(reopened->settings().expiry.targets, hours(24 * 14));
  EXPECT_EQ(reopened->settings().expiry.timestamp, hours(6));
  EXPECT_EQ(reopened->settings().expiry.root, hours(24 * 365));
  auto rel = reopened->add_release(model_, "1.0.0");
  ASSERT_TRUE(rel.has_value()) << rel.error().message();
  auto v = Repository::verify(tmp_ / "ec");
  ASSERT_TRUE(v.has_value()) << v.error().message();
}

TEST_F(RepositoryTest, RefusesReinitAndNonEmptyDirs) {
  const auto before = tree_hash(repo_dir_);
  auto again = Repository::init(repo_dir_, fast_settings());
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), Errc::already_exists);
  EXPECT_NE(again.error().message().find("already a mota repository"), std::string::npos);
  EXPECT_EQ(tree_hash(repo_dir_), before);

  test::write_file(tmp_ / "busy" / "notes.txt", "mine");
  auto busy = Repository::init(tmp_ / "busy", fast_settings());
  ASSERT_FALSE(busy.has_value());
  EXPECT_EQ(busy.error().code(), Errc::already_exists);
  EXPECT_NE(busy.error().message().find("not empty"), std::string::npos);
  EXPECT_EQ(test::read_file(tmp_ / "busy" / "notes.txt"), "mine");
  EXPECT_EQ(std::distance(stdfs::directory_iterator(tmp_ / "busy"), stdfs::directory_iterator()),
            1);

  // An existing empty directory is fine.
  stdfs::create_directory(tmp_ / "empty");
  EXPECT_TRUE(Repository::init(tmp_ / "empty", fast_settings()).has_value());
}

TEST_F(RepositoryTest, OpenNotARepository) {
  stdfs::create_directory(tmp_ / "plain");
  auto r = Repository::open(tmp_ / "plain");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::not_found);
  EXPECT_EQ(r.error().message(),
            (tmp_ / "plain").string() + " is not a mota repository (no mota.toml)");
  auto v = Repository::verify(tmp_ / "plain");
  ASSERT_FALSE(v.has_value());
  EXPECT_NE(v.error().message().find("is not a mota repository"), std::string::npos);
}

TEST_F(RepositoryTest, BadSettingsFileIsAClearError) {
  test::write_file(repo_dir_ / "mota.toml", "zstd_level = 3\nexpirey = 1\n");
  auto r = Repository::open(repo_dir_);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::parse);
  EXPECT_NE(r.error().message().find("unknown key 'expirey'"), std::string::npos)
      << r.error().message();
  test::write_file(repo_dir_ / "mota.toml", "[expiry]\ntargets = \"soon\"\n");
  r = Repository::open(repo_dir_);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("expiry.targets"), std::string::npos) << r.error().message();
  test::write_file(repo_dir_ / "mota.toml", "key_type = \"ed25519\"\nzstd_level = = 3\n");
  r = Repository::open(repo_dir_);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("line 2"), std::string::npos) << r.error().message();
}

TEST(Settings, TomlRoundTrip) {
  Settings s;
  s.key_type = crypto::KeyType::rsa_pss_sha256;
  s.zstd_level = 7;
  s.refresh_margin = hours(12);
  s.expiry.targets = hours(24 * 60);
  s.expiry.snapshot = hours(24 * 14);
  auto back = Settings::from_toml(s.to_toml());
  ASSERT_TRUE(back.has_value()) << back.error().message();
  EXPECT_EQ(back->key_type, s.key_type);
  EXPECT_EQ(back->zstd_level, 7);
  EXPECT_EQ(back->refresh_margin, hours(12));
  EXPECT_EQ(back->expiry.targets, hours(24 * 60));
  EXPECT_EQ(back->expiry.snapshot, hours(24 * 14));
  EXPECT_EQ(back->expiry.root, s.expiry.root);
}

TEST(Settings, ExpirySpec) {
  auto e = parse_expiry_spec("root=2y,timestamp=12h");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->root, hours(24 * 730));
  EXPECT_EQ(e->timestamp, hours(12));
  EXPECT_EQ(e->targets, Expiry{}.targets);
  EXPECT_TRUE(parse_expiry_spec("").has_value());
  for (const char* bad : {"root", "root=", "root=x", "owner=1d", "root=0d"}) {
    auto r = parse_expiry_spec(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), Errc::invalid_argument) << bad;
  }
}

TEST(Settings, ExpirySpecTakesSeconds) {
  auto e = parse_expiry_spec("timestamp=20s,snapshot=90s");
  ASSERT_TRUE(e.has_value()) << e.error().message();
  EXPECT_EQ(e->timestamp, std::chrono::seconds(20));
  EXPECT_EQ(e->snapshot, std::chrono::seconds(90));
  Settings s;
  s.expiry = *e;
  auto back = Settings::from_toml(s.to_toml());
  ASSERT_TRUE(back.has_value()) << back.error().message();
  EXPECT_EQ(back->expiry.timestamp, std::chrono::seconds(20));
  EXPECT_NE(s.to_toml().find("timestamp = \"20s\""), std::string::npos) << s.to_toml();
}

// The refresh rule: min(refresh_margin, half the lifetime); the root is flagged a month ahead.
TEST(Settings, RefreshWindow) {
  using std::chrono::seconds;
  Settings s;  // margin 2d; timestamp 1d, snapshot 1w, targets 3mo, root 1y
  EXPECT_EQ(s.refresh_window("timestamp"), hours(12));
  EXPECT_EQ(s.refresh_window("snapshot"), hours(48));
  EXPECT_EQ(s.refresh_window("targets"), hours(48));
  EXPECT_EQ(s.refresh_window("root"), hours(24 * 30));
  s.expiry.timestamp = seconds(20);
  s.expiry.root = hours(24 * 20);
  EXPECT_EQ(s.refresh_window("timestamp"), seconds(10));
  EXPECT_EQ(s.refresh_window("root"), hours(24 * 10));
  s.refresh_margin = hours(1);
  s.expiry.timestamp = seconds(1);
  EXPECT_EQ(s.refresh_window("snapshot"), hours(1));
  EXPECT_EQ(s.refresh_window("timestamp"), seconds(1));  // never 0: 1 s at least
}

TEST_F(RepositoryTest, ReleaseAddAndList) {
  auto repo = open();
  const auto v0 = timestamp_version();
  auto r1 = repo.add_release(model_, "1.10.0");
  ASSERT_TRUE(r1.has_value()) << r1.error().message();
  EXPECT_EQ(r1->name, "det");
  EXPECT_EQ(r1->version, "1.10.0");
  EXPECT_EQ(r1->target_path, "models/det/1.10.0/det-1.10.0.mota");
  EXPECT_EQ(timestamp_version(), v0 + 1);

  // Package on disk under its consistent-snapshot name, with the hash it is named by.
  const auto file =
      repo_dir_ / "repo/targets/models/det/1.10.0" / (r1->sha256 + ".det-1.10.0.mota");
  ASSERT_TRUE(stdfs::is_regular_file(file));
  EXPECT_EQ(*crypto::file_sha256_hex(file.string()), r1->sha256);
  EXPECT_EQ(stdfs::file_size(file), r1->length);
  auto m = storage::read_manifest(file);
  ASSERT_TRUE(m.has_value()) << m.error().message();
  EXPECT_EQ(m->version, "1.10.0");
  EXPECT_EQ(m->name, "det");
  // Nothing left in the staging directory.
  EXPECT_TRUE(stdfs::is_empty(repo_dir_ / "tmp"));

  // The real UltraFace model, under a name given on the command line.
  const auto face = tmp_ / "face";
  stdfs::create_directories(face);
  stdfs::copy_file(test::shared_model("ultraface/version-slim-320.onnx"), face / "slim.onnx");
  test::write_file(face / "model.json",
                   R"({"name": "ultraface", "version": "0.1.0", "framework": "onnx",
                       "entry": "slim.onnx", "description": "UltraFace slim 320",
                       "inputs": [{"name": "input", "shape": [1, 3, 240, 320], "dtype": "float32"}],
                       "outputs": [{"name": "scores", "shape": [1, 4420, 2], "dtype": "float32"},
                                   {"name": "boxes", "shape": [1, 4420, 4], "dtype": "float32"}]})");
  auto r2 = repo.add_release(face, "2.0.0", "face");
  ASSERT_TRUE(r2.has_value()) << r2.error().message();
  auto r3 = repo.add_release(model_, "1.9.0");
  ASSERT_TRUE(r3.has_value()) << r3.error().message();

  auto list = repo.list_releases();
  ASSERT_TRUE(list.has_value()) << list.error().message();
  ASSERT_EQ(list->size(), 3u);
  // Sorted by name, then semver (1.9.0 before 1.10.0).
  EXPECT_EQ((*list)[0].version, "1.9.0");
  EXPECT_EQ((*list)[1].version, "1.10.0");
  EXPECT_EQ((*list)[2].name, "face");
  EXPECT_EQ((*list)[2].framework, "onnx");
  EXPECT_EQ((*list)[2].tree_digest.size(), 64u);

  // targets.json custom data lets an agent decide before downloading.
  auto targets = tuf::parse_targets(test::read_file(repo_dir_ / "repo/metadata/4.targets.json"));
  ASSERT_TRUE(targets.has_value());
  const auto& custom = targets->signed_.targets.at("models/face/2.0.0/face-2.0.0.mota").custom;
  EXPECT_EQ(custom["name"], "face");
  EXPECT_EQ(custom["version"], "2.0.0");
  EXPECT_EQ(custom["kind"], "full");
  EXPECT_EQ(custom["framework"], "onnx");
  EXPECT_EQ(custom["package_size"], r2->length);
  EXPECT_EQ(custom["tree_digest"], r2->tree_digest);
  // model.json declares no requirements: signed as none, so a device knows there are none.
  EXPECT_EQ(custom["requirements"],
            Json({{"min_ram_mb", 0}, {"arch", Json::array()}, {"accelerators", Json::array()}}));
  // tree_size: what the package unpacks to (model.json and every file), for devices' space check.
  const auto tree = tmp_ / "face-tree";
  auto unpacked = storage::unpack_file(
      repo_dir_ / "repo/targets/models/face/2.0.0" / (r2->sha256 + ".face-2.0.0.mota"), tree);
  ASSERT_TRUE(unpacked.has_value()) << unpacked.error().message();
  std::uint64_t tree_bytes = 0;
  for (const auto& e : stdfs::recursive_directory_iterator(tree)) {
    if (e.is_regular_file()) tree_bytes += e.file_size();
  }
  EXPECT_EQ(custom["tree_size"], tree_bytes);
  expect_verifies();
}

TEST_F(RepositoryTest, DuplicateVersionRefusedAndRepoUnchanged) {
  auto repo = open();
  ASSERT_TRUE(repo.add_release(model_, "1.0.0").has_value());
  const auto before = tree_hash(repo_dir_);
  // Even with different content, the same name+version is refused.
  test::write_file(model_ / "model.onnx", "different");
  auto again = repo.add_release(model_, "1.0.0");
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), Errc::already_exists);
  EXPECT_NE(again.error().message().find("det 1.0.0 is already published"), std::string::npos)
      << again.error().message();
  EXPECT_EQ(tree_hash(repo_dir_), before);
}

TEST_F(RepositoryTest, BadModelsAreClearErrorsAndChangeNothing) {
  auto repo = open();
  ASSERT_TRUE(repo.add_release(model_, "1.0.0").has_value());
  const auto before = tree_hash(repo_dir_);

  const auto malformed = tmp_ / "malformed";
  make_model(malformed);
  test::write_file(malformed / "model.json", "{\"name\": \"det\", ");
  auto r = repo.add_release(malformed, "1.1.0");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::parse);
  EXPECT_NE(r.error().message().find("model.json"), std::string::npos) << r.error().message();
  EXPECT_EQ(tree_hash(repo_dir_), before);

  // With the name given too: model.json is read first either way (the model's checks need it).
  r = repo.add_release(malformed, "1.1.0", "det");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::parse);
  EXPECT_NE(r.error().message().find("model.json"), std::string::npos) << r.error().message();
  EXPECT_EQ(tree_hash(repo_dir_), before);

  // model.json lists a file that is not there.
  const auto missing = tmp_ / "missing";
  make_model(missing);
  test::write_file(
      missing / "model.json",
      R"({"name":"det","version":"1.0.0","framework":"other","entry":"model.onnx","files":[
          {"path":"model.onnx","size":4103,"sha256":")" +
          crypto::sha256_hex(std::string(4096, 'w') + "weights") + R"("},
          {"path":"gone.bin","size":3,"sha256":")" +
          crypto::sha256_hex("abc") + R"("}]})");
  r = repo.add_release(missing, "1.2.0");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("gone.bin"), std::string::npos) << r.error().message();
  EXPECT_EQ(tree_hash(repo_dir_), before);

  // No model.json at all.
  stdfs::create_directory(tmp_ / "nothing");
  r = repo.add_release(tmp_ / "nothing", "1.3.0");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("model.json"), std::string::npos) << r.error().message();
  EXPECT_EQ(tree_hash(repo_dir_), before);

  // Bad version / name.
  r = repo.add_release(model_, "v1");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_NE(r.error().message().find("'v1' is not a semantic version"), std::string::npos);
  r = repo.add_release(model_, "1.4.0", "Bad/Name");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_EQ(tree_hash(repo_dir_), before);
  expect_verifies();
}

TEST_F(RepositoryTest, WrongKeyIsRefusedBeforeAnythingChanges) {
  auto other = crypto::PrivateKey::generate(crypto::KeyType::ed25519);
  ASSERT_TRUE(other.has_value());
  ASSERT_TRUE(fs::write_file_atomic(repo_dir_ / "keys/targets.pem", *other->to_pem(), 0600));
  const auto before = tree_hash(repo_dir_);
  auto repo = open();
  auto r = repo.add_release(model_, "1.0.0");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_NE(r.error().message().find("keys/targets.pem holds key"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("not a targets key of root version 1"), std::string::npos);
  EXPECT_EQ(tree_hash(repo_dir_), before);

  // A garbage key file.
  test::write_file(repo_dir_ / "keys/timestamp.pem", "not a key");
  auto t = repo.refresh_timestamp();
  ASSERT_FALSE(t.has_value());
  EXPECT_NE(t.error().message().find("keys/timestamp.pem"), std::string::npos)
      << t.error().message();
}

TEST_F(RepositoryTest, ExpiredRootRefusesPublishingAndFailsVerify) {
  const auto later = [] { return now_seconds() + hours(24 * 400); };
  auto repo = open(later);
  const auto before = tree_hash(repo_dir_);
  auto r = repo.add_release(model_, "1.0.0");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::expired);
  EXPECT_NE(r.error().message().find("root"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("key rotate root"), std::string::npos);
  EXPECT_EQ(tree_hash(repo_dir_), before);

  auto v = Repository::verify(repo_dir_, later);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), Errc::expired);
  EXPECT_NE(v.error().message().find("root"), std::string::npos) << v.error().message();

  // Rotating the root key signs a fresh root and makes the repository usable again.
  auto rot = repo.rotate_key("root");
  ASSERT_TRUE(rot.has_value()) << rot.error().message();
  EXPECT_EQ(*rot, 2u);
  // The other roles expired too; the routine refresh re-signs all of them.
  auto refreshed = repo.refresh_timestamp();
  ASSERT_TRUE(refreshed.has_value()) << refreshed.error().message();
  EXPECT_TRUE(refreshed->resigned_targets);
  expect_verifies(later);
  EXPECT_TRUE(repo.add_release(model_, "1.0.0").has_value());
}

TEST_F(RepositoryTest, ChannelSetAndShow) {
  auto repo = open();
  ASSERT_TRUE(repo.add_release(model_, "1.0.0").has_value());
  ASSERT_TRUE(repo.add_release(model_, "1.1.0").has_value());

  ChannelRequest req = channel_req("stable", "det", "1.0.0", 100, false, "");
  auto c1 = repo.set_channel(req);
  ASSERT_TRUE(c1.has_value()) << c1.error().message();
  EXPECT_EQ(c1->rollout.percent, 100u);
  EXPECT_TRUE(c1->rollout.fallback_version.empty());
  EXPECT_EQ(c1->rollout.salt.size(), 16u);

  req.version = "1.1.0";
  req.percent = 5;
  req.min_version = "1.0.0";
  auto c2 = repo.set_channel(req);
  ASSERT_TRUE(c2.has_value()) << c2.error().message();
  EXPECT_EQ(c2->rollout.fallback_version, "1.0.0");
  EXPECT_NE(c2->rollout.salt, c1->rollout.salt);  // new version, new sample

  req.percent = 25;
  auto c3 = repo.set_channel(req);
  ASSERT_TRUE(c3.has_value()) << c3.error().message();
  EXPECT_EQ(c3->rollout.salt, c2->rollout.salt);  // same version: devices stay in
  EXPECT_EQ(c3->rollout.fallback_version, "1.0.0");

  ChannelRequest beta = channel_req("beta", "det", "1.1.0", 100, true, "");
  ASSERT_TRUE(repo.set_channel(beta).has_value());

  auto all = repo.show_channels();
  ASSERT_TRUE(all.has_value()) << all.error().message();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].channel, "beta");
  EXPECT_TRUE((*all)[0].allow_downgrade);
  EXPECT_EQ((*all)[1].channel, "stable");
  EXPECT_EQ((*all)[1].rollout.percent, 25u);
  EXPECT_EQ((*all)[1].min_version, "1.0.0");
  auto stable = repo.show_channels("stable");
  ASSERT_TRUE(stable.has_value());
  ASSERT_EQ(stable->size(), 1u);
  auto none = repo.show_channels("nightly");
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());

  const auto before = tree_hash(repo_dir_);
  ChannelRequest bad = channel_req("stable", "det", "9.9.9", 100, false, "");
  auto r = repo.set_channel(bad);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::not_found);
  EXPECT_NE(r.error().message().find("det version 9.9.9 is not released"), std::string::npos);
  bad = channel_req("stable", "det", "1.1.0", 101, false, "");
  r = repo.set_channel(bad);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  bad = channel_req("Stable!", "det", "1.1.0", 100, false, "");
  EXPECT_FALSE(repo.set_channel(bad).has_value());
  // Fallback (1.0.0) below the requested minimum: refused rather than silently dropped.
  bad = channel_req("stable", "det", "1.1.0", 50, false, "1.1.0");
  r = repo.set_channel(bad);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("below min version 1.1.0"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(tree_hash(repo_dir_), before);
  expect_verifies();
}

TEST_F(RepositoryTest, TimestampRefreshBumpsVersionAndResignsNearExpiry) {
  auto repo = open();
  const auto v0 = timestamp_version();
  auto r = repo.refresh_timestamp();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->timestamp_version, v0 + 1);
  EXPECT_EQ(timestamp_version(), v0 + 1);
  EXPECT_FALSE(r->resigned_snapshot);
  EXPECT_FALSE(r->resigned_targets);

  // Six days on, the snapshot (1w) is within the 2d margin; targets (3mo) is not.
  const auto day6 = [] { return now_seconds() + hours(24 * 6); };
  auto later = open(day6);
  r = later.refresh_timestamp();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_TRUE(r->resigned_snapshot);
  EXPECT_FALSE(r->resigned_targets);
  expect_verifies(day6);

  const auto day89 = [] { return now_seconds() + hours(24 * 89); };
  auto much_later = open(day89);
  r = much_later.refresh_timestamp();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_TRUE(r->resigned_snapshot);
  EXPECT_TRUE(r->resigned_targets);
  expect_verifies(day89);

  // Without a refresh the timestamp expires: verify says so.
  auto v = Repository::verify(repo_dir_, [] { return now_seconds() + hours(24 * 95); });
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), Errc::expired);
}

// A clock the test moves, shared by every Repository and verify() that uses it.
class FakeClock {
 public:
  NowFn fn() const {
    return [t = t_] { return *t; };
  }
  void advance(std::chrono::seconds d) { *t_ += d; }
  TimePoint now() const { return *t_; }

 private:
  std::shared_ptr<TimePoint> t_ = std::make_shared<TimePoint>(now_seconds());
};

const RoleExpiry& role_of(const std::vector<RoleExpiry>& roles, const std::string& role) {
  for (const auto& e : roles) {
    if (e.role == role) return e;
  }
  ADD_FAILURE() << "no role " << role;
  return roles.front();
}

TEST_F(RepositoryTest, RefreshWithNothingDueChangesNothing) {
  auto repo = open();
  ASSERT_TRUE(repo.add_release(model_, "1.0.0").has_value());
  const auto v0 = timestamp_version();
  const auto before = tree_hash(repo_dir_);
  for (int i = 0; i < 3; ++i) {
    auto r = repo.refresh();
    ASSERT_TRUE(r.has_value()) << r.error().message();
    EXPECT_FALSE(r->changed());
    EXPECT_FALSE(r->resigned_snapshot || r->resigned_targets);
    EXPECT_TRUE(r->missing_keys.empty());
    EXPECT_TRUE(r->warnings.empty());
    EXPECT_EQ(r->timestamp_version, v0);
    ASSERT_EQ(r->roles.size(), 4u);
    for (const auto& e : r->roles) EXPECT_FALSE(e.due || e.expired) << e.role;
  }
  EXPECT_EQ(tree_hash(repo_dir_), before);

  // Forced: the timestamp alone, version + 1.
  auto f = repo.refresh({.force = true});
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_TRUE(f->resigned_timestamp);
  EXPECT_FALSE(f->resigned_snapshot || f->resigned_targets);
  EXPECT_EQ(timestamp_version(), v0 + 1);
  expect_verifies();
}

// The timer's job over simulated time: refreshing every `step`, with a release now and then,
// the repository always verifies, nothing ever expires, each online role is renewed before its
// expiry by the refresh itself, only when due (so not at every step), and the root, which is not
// renewed online, is warned about once within its window.
struct Walk {
  std::chrono::seconds step;
  std::chrono::seconds length;
  std::vector<std::chrono::seconds> publish_at;
};

void walk(const stdfs::path& dir, const stdfs::path& model, const Settings& settings,
          const Walk& w) {
  FakeClock clock;
  auto init = Repository::init(dir, settings, clock.fn());
  ASSERT_TRUE(init.has_value()) << init.error().message();
  auto repo = std::move(*init);
  int steps = 0, changed = 0, snapshots = 0, targets = 0, root_warned = 0;
  std::size_t next_publish = 0;
  const TimePoint start = clock.now();
  const auto root_due_from = start + settings.expiry.root - settings.refresh_window("root");
  while (clock.now() - start < w.length) {
    clock.advance(w.step);
    ++steps;
    if (next_publish < w.publish_at.size() && clock.now() - start >= w.publish_at[next_publish]) {
      auto rel = repo.add_release(model, std::to_string(++next_publish) + ".0.0");
      ASSERT_TRUE(rel.has_value()) << rel.error().message();
    }
    auto r = repo.refresh();
    ASSERT_TRUE(r.has_value()) << "step " << steps << ": " << r.error().message();
    changed += r->changed();
    snapshots += r->resigned_snapshot;
    targets += r->resigned_targets;
    EXPECT_TRUE(r->missing_keys.empty());
    for (const auto& e : r->roles) {
      ASSERT_FALSE(e.expired) << "step " << steps << ": " << e.role;
      if (e.role != "root") {
        ASSERT_FALSE(e.due) << "step " << steps << ": " << e.role;
      }
    }
    const bool root_due = clock.now() >= root_due_from;
    ASSERT_EQ(r->warnings.size(), root_due ? 1u : 0u) << "step " << steps;
    if (root_due) {
      EXPECT_NE(r->warnings[0].find("mota key rotate root"), std::string::npos) << r->warnings[0];
      ++root_warned;
    }
    auto v = Repository::verify(dir, clock.fn());
    ASSERT_TRUE(v.has_value()) << "step " << steps << ": " << v.error().message();
    ASSERT_EQ(v->warnings.size(), root_due ? 1u : 0u) << "step " << steps;
  }
  SCOPED_TRACE(::testing::Message() << steps << " steps, " << changed << " refreshes, " << snapshots
                                    << " snapshots, " << targets << " targets");
  EXPECT_GT(changed, 0);
  EXPECT_LT(changed, steps * 3 / 4) << "a refresh with nothing due must not re-sign";
  EXPECT_GE(snapshots, 3);
  EXPECT_GE(targets, 1);
  if (w.length > settings.expiry.root - settings.refresh_window("root")) {
    EXPECT_GT(root_warned, 0);
  }
}

TEST_F(RepositoryTest, TimerKeepsDefaultLifetimesFreshForAYear) {
  // Every 11 h (the timer runs hourly; 11 h is just inside the timestamp's 12 h window) for 350
  // days: the timestamp (1d) is renewed every other step, the snapshot (1w) about every 5 days,
  // targets (3mo) at day 88 and after the next quiet 88 days; the root (1y) enters its 30-day
  // window at day 335.
  Settings s = fast_settings();
  walk(tmp_ / "year", model_, s,
       Walk{hours(11), hours(24 * 350), {hours(24 * 1), hours(24 * 30), hours(24 * 200)}});
}

TEST_F(RepositoryTest, RefreshKeepsSecondsLifetimesFresh) {
  // `mota serve`'s pace on a 20 s timestamp (1 min snapshot, 2 min targets): every 5 s for 20
  // minutes.
  using std::chrono::seconds;
  Settings s = fast_settings();
  s.expiry = Expiry{hours(24 * 365), seconds(120), seconds(60), seconds(20)};
  walk(tmp_ / "seconds", model_, s, Walk{seconds(5), seconds(1200), {seconds(30), seconds(600)}});
}

// Keys kept off this host: a refresh renews what it holds the keys for and names the rest;
// verify warns about every role within its window, each with the command that renews it.
TEST_F(RepositoryTest, RefreshWithKeysElsewhereAndVerifyWarnsPerRole) {
  FakeClock clock;
  const auto dir = tmp_ / "keys-elsewhere";
  ASSERT_TRUE(Repository::init(dir, fast_settings(), clock.fn()).has_value());
  auto repo_r = Repository::open(dir, clock.fn());
  ASSERT_TRUE(repo_r.has_value());
  auto& repo = *repo_r;
  auto warnings = [&] {
    auto v = Repository::verify(dir, clock.fn());
    EXPECT_TRUE(v.has_value()) << v.error().message();
    return v ? v->warnings : std::vector<std::string>{};
  };
  auto away = [&](const char* role) {
    stdfs::rename(dir / "keys" / (std::string(role) + ".pem"), tmp_ / (std::string(role) + ".pem"));
  };
  auto back = [&](const char* role) {
    stdfs::rename(tmp_ / (std::string(role) + ".pem"), dir / "keys" / (std::string(role) + ".pem"));
  };

  // 14 h on, the timestamp (1d) is within its 12 h window, nothing else.
  clock.advance(hours(14));
  auto w = warnings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].rfind("timestamp version 1 expires ", 0), 0u) << w[0];
  EXPECT_NE(w[0].find("within its 12h refresh window"), std::string::npos) << w[0];
  EXPECT_NE(w[0].find("mota timestamp refresh"), std::string::npos) << w[0];

  // No timestamp key here: nothing can be renewed, nothing changes.
  away("timestamp");
  auto before = tree_hash(dir);
  auto r = repo.refresh();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_FALSE(r->changed());
  ASSERT_EQ(r->missing_keys.size(), 1u);
  EXPECT_EQ(r->missing_keys[0].rfind("timestamp: ", 0), 0u) << r->missing_keys[0];
  EXPECT_NE(r->missing_keys[0].find("keys/timestamp.pem: No such file"), std::string::npos)
      << r->missing_keys[0];
  EXPECT_TRUE(role_of(r->roles, "timestamp").due);
  EXPECT_EQ(tree_hash(dir), before);
  back("timestamp");

  // Day 5.5 without the snapshot key: the timestamp is renewed, the snapshot (1w, 2d window)
  // is named and stays due.
  away("snapshot");
  clock.advance(hours(24 * 5 + 12 - 14));
  r = repo.refresh();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_TRUE(r->resigned_timestamp);
  EXPECT_FALSE(r->resigned_snapshot);
  ASSERT_EQ(r->missing_keys.size(), 1u);
  EXPECT_EQ(r->missing_keys[0].rfind("snapshot: ", 0), 0u) << r->missing_keys[0];
  EXPECT_NE(r->missing_keys[0].find("keys/snapshot.pem"), std::string::npos);
  w = warnings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].rfind("snapshot version 1 expires ", 0), 0u) << w[0];
  EXPECT_NE(w[0].find("within its 2d refresh window"), std::string::npos) << w[0];
  back("snapshot");

  // Day 88.5 without the targets key: timestamp and snapshot renewed, targets named.
  away("targets");
  clock.advance(hours(24 * 83));
  r = repo.refresh();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_TRUE(r->resigned_timestamp);
  EXPECT_TRUE(r->resigned_snapshot);
  EXPECT_FALSE(r->resigned_targets);
  ASSERT_EQ(r->missing_keys.size(), 1u);
  EXPECT_EQ(r->missing_keys[0].rfind("targets: ", 0), 0u) << r->missing_keys[0];
  w = warnings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].rfind("targets version 1 expires ", 0), 0u) << w[0];
  back("targets");
  r = repo.refresh();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_TRUE(r->resigned_targets);
  EXPECT_TRUE(r->missing_keys.empty());
  EXPECT_TRUE(warnings().empty());

  // Day 340: only the root, never renewed online, is within its 30-day window.
  clock.advance(hours(24 * 252));
  r = repo.refresh();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_EQ(r->warnings[0].rfind("root version 1 expires ", 0), 0u) << r->warnings[0];
  EXPECT_NE(r->warnings[0].find("mota key rotate root"), std::string::npos) << r->warnings[0];
  w = warnings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].rfind("root version 1 expires ", 0), 0u) << w[0];
  EXPECT_NE(w[0].find("mota key rotate root"), std::string::npos) << w[0];

  // A key that is present but wrong is an error, not a key "kept elsewhere".
  auto other = crypto::PrivateKey::generate(crypto::KeyType::ed25519);
  ASSERT_TRUE(other.has_value());
  ASSERT_TRUE(fs::write_file_atomic(dir / "keys/timestamp.pem", *other->to_pem(), 0600));
  r = repo.refresh({.force = true});
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("not a timestamp key"), std::string::npos)
      << r.error().message();
}

TEST_F(RepositoryTest, VerifyWarnsAboutNearExpiry) {
  auto v = Repository::verify(repo_dir_, [] { return now_seconds() + hours(20); });
  ASSERT_TRUE(v.has_value()) << v.error().message();
  ASSERT_FALSE(v->warnings.empty());
  EXPECT_NE(v->warnings[0].find("timestamp"), std::string::npos) << v->warnings[0];
  auto fresh = Repository::verify(repo_dir_);
  ASSERT_TRUE(fresh.has_value());
  EXPECT_TRUE(fresh->warnings.empty());
  EXPECT_GE(fresh->checked.size(), 5u);
}

class TamperTest : public RepositoryTest {
 protected:
  void SetUp() override {
    RepositoryTest::SetUp();
    auto repo = open();
    auto rel = repo.add_release(model_, "1.0.0");
    ASSERT_TRUE(rel.has_value()) << rel.error().message();
    release_ = *rel;
    ASSERT_TRUE(
        repo.set_channel(channel_req("stable", "det", "1.0.0", 100, false, "")).has_value());
    expect_verifies();
  }

  void expect_verify_fails(Errc code, const std::string& needle) {
    auto v = Repository::verify(repo_dir_);
    ASSERT_FALSE(v.has_value()) << "verify passed after tampering";
    EXPECT_EQ(v.error().code(), code) << v.error().message();
    EXPECT_NE(v.error().message().find(needle), std::string::npos)
        << "'" << v.error().message() << "' lacks '" << needle << "'";
  }

  stdfs::path package() const {
    return repo_dir_ / "repo/targets/models/det/1.0.0" / (release_.sha256 + ".det-1.0.0.mota");
  }

  Release release_;
};

TEST_F(TamperTest, TargetByteFlipped) {
  std::string bytes = test::read_file(package());
  bytes[bytes.size() / 2] ^= 0x01;
  test::write_file(package(), bytes);
  expect_verify_fails(Errc::verification, "target models/det/1.0.0/det-1.0.0.mota: sha256");
}

TEST_F(TamperTest, TargetTruncatedOrMissing) {
  std::string bytes = test::read_file(package());
  test::write_file(package(), bytes.substr(0, bytes.size() - 1));
  expect_verify_fails(Errc::verification, "length");
  stdfs::remove(package());
  expect_verify_fails(Errc::not_found, "is missing");
}

TEST_F(TamperTest, MetadataEdited) {
  // Re-indenting targets.json keeps its signature valid but breaks snapshot's hash.
  auto ts = tuf::parse_timestamp(test::read_file(repo_dir_ / "repo/metadata/timestamp.json"));
  ASSERT_TRUE(ts.has_value());
  const auto snap_file = repo_dir_ / "repo/metadata" /
                         (std::to_string(ts->signed_.snapshot.version) + ".snapshot.json");
  auto snap = tuf::parse_snapshot(test::read_file(snap_file));
  ASSERT_TRUE(snap.has_value());
  const auto targets_file =
      repo_dir_ / "repo/metadata" /
      (std::to_string(snap->signed_.meta.at("targets.json").version) + ".targets.json");
  const std::string original = test::read_file(targets_file);
  test::write_file(targets_file, Json::parse(original).dump(4));
  expect_verify_fails(Errc::verification, "differs from");
}

TEST_F(TamperTest, SignatureAltered) {
  const auto file = repo_dir_ / "repo/metadata/timestamp.json";
  Json j = Json::parse(test::read_file(file));
  std::string sig = j["signatures"][0]["sig"];
  sig[0] = sig[0] == 'a' ? 'b' : 'a';
  j["signatures"][0]["sig"] = sig;
  test::write_file(file, j.dump(2));
  expect_verify_fails(Errc::verification, "timestamp");
}

TEST_F(TamperTest, SignedContentAltered) {
  // Changing a signed field without re-signing (a version bump) must fail the signature check.
  const auto file = repo_dir_ / "repo/metadata/1.root.json";
  Json j = Json::parse(test::read_file(file));
  j["signed"]["expires"] = "2099-01-01T00:00:00Z";
  test::write_file(file, j.dump(2));
  test::write_file(repo_dir_ / "repo/metadata/root.json", j.dump(2));
  expect_verify_fails(Errc::verification, "1.root.json");
}

TEST_F(TamperTest, ChannelFileReplaced) {
  const auto dir = repo_dir_ / "repo/targets/channels/stable";
  ASSERT_TRUE(stdfs::is_directory(dir));
  for (const auto& e : stdfs::directory_iterator(dir)) {
    std::string text = test::read_file(e.path());
    const auto pos = text.find("1.0.0");
    ASSERT_NE(pos, std::string::npos);
    text[pos] = '2';
    test::write_file(e.path(), text);
  }
  expect_verify_fails(Errc::verification, "channels/stable/det.json");
}

TEST_F(RepositoryTest, VerifyServedTreeWithoutPublishingSide) {
  auto repo = open();
  ASSERT_TRUE(repo.add_release(model_, "1.0.0").has_value());
  auto v = Repository::verify(repo_dir_ / "repo");
  ASSERT_TRUE(v.has_value()) << v.error().message();
}

TEST_F(RepositoryTest, RotateKeysKeepsTheRepositoryValid) {
  auto repo = open();
  ASSERT_TRUE(repo.add_release(model_, "1.0.0").has_value());
  const std::string old_targets = test::read_file(repo_dir_ / "keys/targets.pem");
  auto v = repo.rotate_key("targets");
  ASSERT_TRUE(v.has_value()) << v.error().message();
  EXPECT_EQ(*v, 2u);
  EXPECT_NE(test::read_file(repo_dir_ / "keys/targets.pem"), old_targets);
  EXPECT_EQ(mode_of(repo_dir_ / "keys/targets.pem"), 0600u);
  EXPECT_TRUE(stdfs::is_directory(repo_dir_ / "keys/retired"));
  expect_verifies();
  // Root 2 no longer trusts the old targets key; releases still work with the new one.
  ASSERT_TRUE(repo.add_release(model_, "1.1.0").has_value());
  auto r = repo.rotate_key("root");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(*r, 3u);
  EXPECT_EQ(test::read_file(repo_dir_ / "repo/metadata/3.root.json"),
            test::read_file(repo_dir_ / "repo/metadata/root.json"));
  expect_verifies();
  auto bad = repo.rotate_key("owner");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);

  // The old targets key put back is refused: root no longer lists it.
  test::write_file(repo_dir_ / "keys/targets.pem", old_targets);
  auto refused = repo.add_release(model_, "1.2.0");
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("not a targets key of root version 3"),
            std::string::npos)
      << refused.error().message();
}

// The real TUF client against the served tree: the repository is only correct if clients accept
// it, across new releases and key rotations.
TEST_F(RepositoryTest, TufClientAcceptsTheRepositoryAcrossPublishesAndRotations) {
  auto repo = open();
  auto rel = repo.add_release(model_, "1.0.0");
  ASSERT_TRUE(rel.has_value()) << rel.error().message();
  ASSERT_TRUE(repo.set_channel(channel_req("stable", "det", "1.0.0", 100, false, "")).has_value());

  net::ServerConfig sc;
  sc.static_root = repo_dir_ / "repo";
  auto server = net::make_http_server(sc);
  auto port = server->start();
  ASSERT_TRUE(port.has_value()) << port.error().message();
  const std::string base = "http://127.0.0.1:" + std::to_string(*port);

  const auto meta_dir = tmp_ / "client-meta";
  ASSERT_TRUE(tuf::Client::init(meta_dir, test::read_file(repo_dir_ / "repo/metadata/1.root.json"))
                  .has_value());
  auto http = http::make_http_client();
  tuf::ClientConfig cc;
  cc.metadata_dir = meta_dir;
  cc.metadata_base_url = base + "/metadata";
  tuf::Client client(cc, *http);
  auto st = client.refresh();
  ASSERT_TRUE(st.has_value()) << st.error().message();

  auto info = client.get_target(rel->target_path);
  ASSERT_TRUE(info.has_value()) << info.error().message();
  EXPECT_EQ(info->custom["version"], "1.0.0");
  const auto pkg = tmp_ / "downloaded.mota";
  auto dl = client.download_target(base + "/targets", rel->target_path, *info, pkg);
  ASSERT_TRUE(dl.has_value()) << dl.error().message();
  EXPECT_EQ(*crypto::file_sha256_hex(pkg.string()), rel->sha256);

  auto ch = client.get_target(channel_target_path("stable", "det"));
  ASSERT_TRUE(ch.has_value()) << ch.error().message();
  const auto chfile = tmp_ / "stable-det.json";
  ASSERT_TRUE(
      client.download_target(base + "/targets", channel_target_path("stable", "det"), *ch, chfile)
          .has_value());
  auto parsed = Channel::parse(test::read_file(chfile));
  ASSERT_TRUE(parsed.has_value()) << parsed.error().message();
  EXPECT_EQ(wanted_version(*parsed, "device-1", {}), "1.0.0");

  // Rotate every key, publish again: the client follows the root chain and the new keys.
  for (const char* role : {"targets", "snapshot", "timestamp", "root"}) {
    auto r = repo.rotate_key(role);
    ASSERT_TRUE(r.has_value()) << role << ": " << r.error().message();
  }
  auto rel2 = repo.add_release(model_, "1.1.0");
  ASSERT_TRUE(rel2.has_value()) << rel2.error().message();
  ASSERT_TRUE(repo.refresh_timestamp().has_value());
  st = client.refresh();
  ASSERT_TRUE(st.has_value()) << st.error().message();
  ASSERT_NE(client.root(), nullptr);
  EXPECT_EQ(client.root()->version, 5u);
  auto info2 = client.get_target(rel2->target_path);
  ASSERT_TRUE(info2.has_value()) << info2.error().message();
  EXPECT_EQ(info2->custom["tree_digest"], rel2->tree_digest);
  server->stop();
}

// Two publishers at once (separate Repository objects, as two processes would be): the lock
// serialises them, so neither release is lost from targets.json.
TEST_F(RepositoryTest, ConcurrentPublishersDoNotLoseReleases) {
  constexpr int kPerThread = 3;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      auto repo = Repository::open(repo_dir_);
      if (!repo) {
        ++failures;
        return;
      }
      for (int i = 0; i < kPerThread; ++i) {
        const std::string v = std::to_string(t + 1) + "." + std::to_string(i) + ".0";
        if (!repo->add_release(model_, v).has_value()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto list = open().list_releases();
  ASSERT_TRUE(list.has_value());
  EXPECT_EQ(list->size(), 2u * kPerThread);
  EXPECT_EQ(timestamp_version(), 1u + 2u * kPerThread);
  expect_verifies();
}

}  // namespace
}  // namespace mota::manager
