// `mota bundle create|inspect` (manager/release/bundle.hpp) on a real repository with real keys: a
// bundle carries exactly what a device that only knows root 1 needs (root chain, timestamp,
// snapshot, targets, the package, the deltas asked for, the model's channel files) and verifies as
// such; errors name what to run; --valid-for re-signs the online metadata so the bundle stays
// installable that long, and refuses when the root would expire first; inspect --root checks a
// bundle as a device would, and catches a damaged or foreign one. The CLI's exit codes too.

#include "manager/release/bundle.hpp"

#include <gtest/gtest.h>

#include <random>

#include "manager/verify/verify.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/tuf/metadata.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::hours;

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override { init(); }
  void init(NowFn now = now_seconds, Settings settings = {}) {
    repo_dir_ = tmp_ / "fleet";
    settings.zstd_level = 3;
    auto r = Repository::init(repo_dir_, settings, now);
    ASSERT_TRUE(r) << r.error().message();
    repo_ = std::make_unique<Repository>(std::move(*r));
  }
  Release release(const std::string& version, const std::string& weights) {
    auto src = tmp_ / ("src-" + version);
    test::make_model_dir(src, weights);
    auto r = repo_->add_release(src, version);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : Release{};
  }
  void channel(const std::string& name, const std::string& version) {
    ChannelRequest req;
    req.channel = name;
    req.model = "detector";
    req.version = version;
    auto c = repo_->set_channel(req);
    ASSERT_TRUE(c) << c.error().message();
  }
  // v1 and a fine-tune of it (so a delta is published), on two channels.
  void publish_two() {
    v1_ = random_bytes(200000, 1);
    v2_ = v1_;
    for (std::size_t i = 0; i < v2_.size(); i += 4099) v2_[i] ^= 1;
    release("1.0.0", v1_);
    rel2_ = release("1.1.0", v2_);
    channel("stable", "1.1.0");
    channel("beta", "1.1.0");
  }
  std::string root1() { return test::read_file(repo_dir_ / "repo/metadata/1.root.json"); }
  BundleRequest request(const std::string& version = "1.1.0") {
    BundleRequest req;
    req.model = "detector";
    req.version = version;
    req.output = out_;
    return req;
  }
  test::RunResult mota(std::vector<std::string> args) {
    args.insert(args.begin(), test::build_path("manager/mota").string());
    return test::run(args);
  }

  test::TempDir tmp_;
  stdfs::path repo_dir_;
  std::unique_ptr<Repository> repo_;
  stdfs::path out_ = tmp_ / "out" / "detector-1.1.0.motab";
  std::string v1_, v2_;
  Release rel2_;
};

std::vector<std::string> names(const BundleInfo& b) {
  std::vector<std::string> out;
  for (const auto& e : b.entries) out.push_back(e.name);
  return out;
}

TEST_F(BundleTest, CarriesWhatADeviceOnRootOneNeedsAndVerifies) {
  publish_two();
  ASSERT_TRUE(repo_->rotate_key("timestamp"));  // root 2: the bundle must carry the chain
  stdfs::create_directories(out_.parent_path());
  auto req = request();
  req.delta_from = {"1.0.0"};
  auto b = create_bundle(repo_dir_, req);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->path, out_);
  EXPECT_EQ(b->size, stdfs::file_size(out_));
  EXPECT_FALSE(b->checked.empty()) << "create verifies what it wrote";
  const auto n = names(*b);
  ASSERT_GE(n.size(), 9u);
  EXPECT_EQ(n[0], "bundle.json");
  for (const char* want :
       {"metadata/1.root.json", "metadata/2.root.json", "metadata/timestamp.json"}) {
    EXPECT_NE(std::find(n.begin(), n.end(), want), n.end()) << want;
  }
  EXPECT_EQ(std::count_if(n.begin(), n.end(),
                          [](const std::string& s) { return s.ends_with(".snapshot.json"); }),
            1);
  EXPECT_EQ(std::count_if(n.begin(), n.end(),
                          [](const std::string& s) { return s.ends_with(".targets.json"); }),
            1);
  EXPECT_EQ(n.back(), "targets/models/detector/1.1.0/" + rel2_.sha256 + ".detector-1.1.0.mota");
  std::vector<std::string> kinds;
  for (const auto& t : b->targets) kinds.push_back(t.kind + ":" + t.path);
  EXPECT_EQ(kinds, (std::vector<std::string>{"package:models/detector/1.1.0/detector-1.1.0.mota",
                                             "delta:deltas/detector/1.0.0/1.1.0.mdelta",
                                             "channel:channels/beta/detector.json",
                                             "channel:channels/stable/detector.json"}));
  // The package is the repository's file byte for byte.
  auto reader = storage::BundleReader::open(out_);
  ASSERT_TRUE(reader);
  const auto* pkg = reader->find(n.back());
  ASSERT_NE(pkg, nullptr);
  EXPECT_EQ(reader->read(*pkg, 1 << 30).value_or(""),
            test::read_file(repo_dir_ / "repo/targets/models/detector/1.1.0" /
                            (rel2_.sha256 + ".detector-1.1.0.mota")));
  // Roles: root 2 (rotated), and the bundle is installable until the timestamp expires.
  ASSERT_EQ(b->roles.size(), 4u);
  EXPECT_EQ(b->roles[0].role, "root");
  EXPECT_EQ(b->roles[0].version, 2u);
  EXPECT_EQ(b->expires_first, "timestamp");
  EXPECT_EQ(b->index.expires, format_time(b->expires));
  EXPECT_GT(b->expires, now_seconds() + hours(23));

  // inspect: the same facts unverified, and verified against root 1.
  auto plain = inspect_bundle(out_);
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_TRUE(plain->checked.empty());
  EXPECT_EQ(plain->roles[0].version, 2u);
  EXPECT_EQ(plain->expires, b->expires);
  auto checked = inspect_bundle(out_, root1());
  ASSERT_TRUE(checked) << checked.error().message();
  ASSERT_EQ(checked->checked.size(), 5u);
  EXPECT_NE(checked->checked[0].find("root chain 1 -> 2"), std::string::npos)
      << checked->checked[0];

  // Another repository's root does not verify it.
  auto other = Repository::init(tmp_ / "other", Settings{});
  ASSERT_TRUE(other);
  auto foreign = inspect_bundle(out_, test::read_file(tmp_ / "other/repo/metadata/1.root.json"));
  ASSERT_FALSE(foreign);
  EXPECT_NE(foreign.error().message().find("signatures"), std::string::npos)
      << foreign.error().message();
}

TEST_F(BundleTest, ErrorsSayWhatToRunAndLeaveNoFile) {
  publish_two();
  stdfs::create_directories(out_.parent_path());
  auto r = create_bundle(repo_dir_, request("9.9.9"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::not_found);
  EXPECT_NE(r.error().message().find("detector 9.9.9 is not released"), std::string::npos);
  EXPECT_NE(r.error().message().find("mota release list"), std::string::npos);
  auto req = request();
  req.delta_from = {"0.9.0"};
  r = create_bundle(repo_dir_, req);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("no delta from 0.9.0 to 1.1.0 of detector is published"),
            std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("mota release deltas detector"), std::string::npos);
  r = create_bundle(repo_dir_, request(""));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  r = create_bundle(tmp_ / "nowhere", request());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("not a mota repository"), std::string::npos);
  EXPECT_TRUE(stdfs::is_empty(out_.parent_path()));
}

// The repository signed two days ago: its 1-day timestamp has expired. A bundle of it would be
// refused by every device, so create refuses it too; --valid-for re-signs first.
TEST_F(BundleTest, ExpiredMetadataIsRefusedAndValidForRenewsIt) {
  const auto past = now_seconds() - hours(48);
  stdfs::remove_all(repo_dir_);
  init([past] { return past; });
  publish_two();
  stdfs::create_directories(out_.parent_path());
  auto r = create_bundle(repo_dir_, request());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::expired);
  EXPECT_NE(r.error().message().find("timestamp.json: expired at"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("--valid-for"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(out_));

  auto req = request();
  req.valid_for = hours(24 * 30);
  auto b = create_bundle(repo_dir_, req);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_GE(b->expires, now_seconds() + hours(24 * 30) - std::chrono::minutes(5));
  // A normal publish: the repository verifies and says the same.
  auto v = Repository::verify(repo_dir_);
  ASSERT_TRUE(v) << v.error().message();
  auto roles = repo_->expiry_status();
  ASSERT_TRUE(roles);
  for (const auto& role : *roles) {
    EXPECT_GE(role.expires, now_seconds() + hours(24 * 30) - std::chrono::minutes(5)) << role.role;
  }
}

TEST_F(BundleTest, ValidForBeyondTheRootIsRefusedWithoutSigning) {
  Settings s;
  s.expiry.root = hours(24 * 10);
  stdfs::remove_all(repo_dir_);
  init(now_seconds, s);
  publish_two();
  const std::string ts = test::read_file(repo_dir_ / "repo/metadata/timestamp.json");
  auto req = request();
  req.valid_for = hours(24 * 30);
  stdfs::create_directories(out_.parent_path());
  auto r = create_bundle(repo_dir_, req);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("the root (version 1) expires at"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("mota key rotate root"), std::string::npos);
  EXPECT_EQ(test::read_file(repo_dir_ / "repo/metadata/timestamp.json"), ts) << "nothing signed";
  EXPECT_FALSE(stdfs::exists(out_));
}

TEST_F(BundleTest, InspectWithRootCatchesDamage) {
  publish_two();
  stdfs::create_directories(out_.parent_path());
  auto b = create_bundle(repo_dir_, request());
  ASSERT_TRUE(b) << b.error().message();
  const std::string good = test::read_file(out_);
  auto reader = storage::BundleReader::open(out_);
  ASSERT_TRUE(reader);
  auto offset_of = [&](const std::string& suffix) {
    for (const auto& e : reader->entries()) {
      if (e.name.ends_with(suffix)) return e.offset + e.size / 2;
    }
    ADD_FAILURE() << suffix;
    return std::uint64_t(0);
  };
  struct Case {
    const char* what;
    std::uint64_t at;
    const char* error;
  };
  const Case cases[] = {{"package byte", offset_of(".mota"), "sha256 mismatch"},
                        {"targets metadata byte", offset_of(".targets.json"), "targets.json"},
                        {"timestamp byte", offset_of("timestamp.json"), "timestamp.json"}};
  const auto damaged = tmp_ / "damaged.motab";
  for (const auto& c : cases) {
    std::string bytes = good;
    bytes[c.at] ^= 0x20;
    test::write_file(damaged, bytes);
    auto r = inspect_bundle(damaged, root1());
    ASSERT_FALSE(r) << c.what;
    EXPECT_NE(r.error().message().find("does not verify"), std::string::npos)
        << c.what << ": " << r.error().message();
    EXPECT_NE(r.error().message().find(c.error), std::string::npos)
        << c.what << ": " << r.error().message();
  }
}

TEST_F(BundleTest, Cli) {
  publish_two();
  const std::string out = (tmp_ / "cli.motab").string();
  auto r = mota({"bundle", "create", "detector", "1.1.0", "--delta-from", "1.0.0", "-o", out,
                 "--repo", repo_dir_.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + out), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("installable until"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("deltas from 1.0.0"), std::string::npos) << r.out;

  r = mota({"bundle", "inspect", out, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["model"], "detector");
  EXPECT_EQ(j["version"], "1.1.0");
  EXPECT_EQ(j["verified"], false);
  EXPECT_TRUE(j["verified_against"].is_null());
  EXPECT_EQ(j["roles"].size(), 4u);
  EXPECT_EQ(j["targets"][0]["kind"], "package");
  EXPECT_EQ(j["entries"][0]["name"], "bundle.json");

  r = mota({"bundle", "inspect", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("not verified"), std::string::npos) << r.out;
  r = mota(
      {"bundle", "inspect", out, "--root", (repo_dir_ / "repo/metadata/1.root.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ok: package models/detector/1.1.0/detector-1.1.0.mota"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("verified against"), std::string::npos) << r.out;

  // Usage errors exit 2, failed operations 1.
  r = mota({"bundle", "create", "detector", "1.1.0", "--valid-for", "soon", "--repo",
            repo_dir_.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--valid-for 'soon'"), std::string::npos) << r.err;
  r = mota({"bundle", "create", "detector", "--repo", repo_dir_.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = mota({"bundle", "create", "detector", "7.0.0", "-o", out, "--repo", repo_dir_.string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("detector 7.0.0 is not released"), std::string::npos) << r.err;
  EXPECT_TRUE(stdfs::exists(out)) << "a failed create leaves the earlier file alone";
  const auto pkg =
      repo_dir_ / "repo/targets/models/detector/1.1.0" / (rel2_.sha256 + ".detector-1.1.0.mota");
  r = mota({"bundle", "inspect", pkg.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is a bare package, not a signed bundle"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mota::manager
