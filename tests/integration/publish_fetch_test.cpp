// End to end on loopback: `mota init` + `release add` + channel, served by mota's own server and by
// a real nginx, fetched and verified by the TUF client library the agent uses. Then the attacks a
// repository must survive: a tampered target, a replayed old timestamp, an expired snapshot.

#include <gtest/gtest.h>

#include <memory>

#include "common/fs.hpp"
#include "common/http.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/channel.hpp"
#include "manifest/tuf/client.hpp"
#include "net/http_server.hpp"
#include "storage/package.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;

enum class ServerKind { mota, nginx };

// Serves `root` with mota's HttpServer or a real nginx; base_url() is the repository root URL.
class Served {
 public:
  Served(ServerKind kind, const stdfs::path& root, const stdfs::path& work) {
    if (kind == ServerKind::nginx) {
      nginx_ = std::make_unique<test::Nginx>(root, work);
      base_ = nginx_->url("");
    } else {
      net::ServerConfig cfg;
      cfg.static_root = root;
      server_ = net::make_http_server(cfg);
      auto port = server_->start();
      EXPECT_TRUE(port) << port.error().message();
      base_ = "http://127.0.0.1:" + std::to_string(port ? *port : 0);
    }
  }
  ~Served() {
    if (server_) server_->stop();
  }
  const std::string& base_url() const { return base_; }

 private:
  std::unique_ptr<test::Nginx> nginx_;
  std::unique_ptr<net::HttpServer> server_;
  std::string base_;
};

using test::make_model_dir;

class PublishFetch : public ::testing::TestWithParam<ServerKind> {
 protected:
  void SetUp() override {
    if (GetParam() == ServerKind::nginx && !test::Nginx::available()) {
      GTEST_SKIP() << "nginx not installed (scripts/deps installs nginx-light)";
    }
    manager::Settings settings;
    // A long-lived timestamp, so that a client clock moved 8 days ahead sees the snapshot (1 week)
    // expired while the timestamp is still valid.
    settings.expiry.timestamp = std::chrono::hours(24 * 30);
    auto repo = manager::Repository::init(work_ / "fleet", settings);
    ASSERT_TRUE(repo) << repo.error().message();
    repo_ = std::make_unique<manager::Repository>(std::move(*repo));

    make_model_dir(work_ / "src1", std::string(200000, 'a'));
    make_model_dir(work_ / "src2", std::string(300000, 'b'));
    auto r1 = repo_->add_release(work_ / "src1", "1.0.0");
    ASSERT_TRUE(r1) << r1.error().message();
    // Keep the timestamp of this state: replaying it later must be refused.
    old_timestamp_ = test::read_file(metadata_dir() / "timestamp.json");
    auto r2 = repo_->add_release(work_ / "src2", "1.1.0");
    ASSERT_TRUE(r2) << r2.error().message();
    release_ = *r2;
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = "1.1.0";
    auto ch = repo_->set_channel(req);
    ASSERT_TRUE(ch) << ch.error().message();

    served_ = std::make_unique<Served>(GetParam(), work_ / "fleet" / "repo", work_.path());
    ASSERT_TRUE(tuf::Client::init(device_meta(), test::read_file(metadata_dir() / "1.root.json")));
  }

  stdfs::path metadata_dir() const { return work_ / "fleet" / "repo" / "metadata"; }
  stdfs::path device_meta() const { return work_ / "device" / "metadata"; }

  tuf::ClientConfig client_config() const {
    tuf::ClientConfig cfg;
    cfg.metadata_dir = device_meta();
    cfg.metadata_base_url = served_->base_url() + "/metadata";
    return cfg;
  }
  std::string targets_url() const { return served_->base_url() + "/targets"; }

  test::TempDir work_;
  std::unique_ptr<manager::Repository> repo_;
  std::unique_ptr<Served> served_;
  std::unique_ptr<http::Client> http_ = http::make_http_client();
  manager::Release release_;
  std::string old_timestamp_;
};

TEST_P(PublishFetch, DeviceFetchesChannelAndVerifiedPackage) {
  tuf::Client client(client_config(), *http_);
  ASSERT_TRUE(client.refresh());

  // The channel target says which version the device wants.
  auto ch_info = client.get_target(channel_target_path("stable", "detector"));
  ASSERT_TRUE(ch_info) << ch_info.error().message();
  auto ch_file = work_ / "device" / "channel.json";
  auto st = client.download_target(targets_url(), channel_target_path("stable", "detector"),
                                   *ch_info, ch_file);
  ASSERT_TRUE(st) << st.error().message();
  auto channel = Channel::parse(test::read_file(ch_file));
  ASSERT_TRUE(channel) << channel.error().message();
  EXPECT_EQ(wanted_version(*channel, "device-1", {}), "1.1.0");

  // The package target carries what the agent needs before downloading anything.
  auto info = client.get_target(release_.target_path);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->custom.value("name", ""), "detector");
  EXPECT_EQ(info->custom.value("version", ""), "1.1.0");
  EXPECT_EQ(info->custom.value("kind", ""), "full");
  EXPECT_EQ(info->custom.value("tree_digest", ""), release_.tree_digest);

  auto pkg = work_ / "device" / "detector.mota";
  st = client.download_target(targets_url(), release_.target_path, *info, pkg);
  ASSERT_TRUE(st) << st.error().message();
  auto unpacked = storage::unpack_file(pkg, work_ / "device" / "slot");
  ASSERT_TRUE(unpacked) << unpacked.error().message();
  EXPECT_EQ(unpacked->tree_digest, release_.tree_digest);
  EXPECT_EQ(test::read_file(work_ / "device" / "slot" / "model.onnx"), std::string(300000, 'b'));
  EXPECT_EQ(unpacked->manifest.version, "1.1.0");
}

TEST_P(PublishFetch, TamperedTargetIsRejectedAndNothingWritten) {
  tuf::Client client(client_config(), *http_);
  ASSERT_TRUE(client.refresh());
  auto info = client.get_target(release_.target_path);
  ASSERT_TRUE(info);

  // Flip one byte of the published package on the server.
  stdfs::path served_pkg;
  for (auto& e : stdfs::directory_iterator(work_ / "fleet/repo/targets/models/detector/1.1.0")) {
    served_pkg = e.path();
  }
  ASSERT_FALSE(served_pkg.empty());
  std::string bytes = test::read_file(served_pkg);
  bytes[bytes.size() / 2] ^= 0x01;
  test::write_file(served_pkg, bytes);

  auto pkg = work_ / "device" / "detector.mota";
  auto st = client.download_target(targets_url(), release_.target_path, *info, pkg);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::verification) << st.error().message();
  EXPECT_NE(st.error().message().find("hash"), std::string::npos) << st.error().message();
  EXPECT_FALSE(stdfs::exists(pkg));
  // No temporary file left beside it either.
  for (auto& e : stdfs::directory_iterator(work_ / "device")) {
    EXPECT_EQ(e.path().filename().string().find(".detector.mota"), std::string::npos) << e.path();
  }
}

TEST_P(PublishFetch, ReplayedOldTimestampIsRejectedAndTrustKept) {
  tuf::Client client(client_config(), *http_);
  ASSERT_TRUE(client.refresh());
  auto trusted_before = test::read_file(device_meta() / "timestamp.json");

  // An attacker (or a stale mirror) serves the timestamp from before the 1.1.0 release.
  test::write_file(metadata_dir() / "timestamp.json", old_timestamp_);
  tuf::Client again(client_config(), *http_);
  auto st = again.refresh();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::rollback) << st.error().message();
  EXPECT_NE(st.error().message().find("timestamp"), std::string::npos) << st.error().message();
  EXPECT_EQ(test::read_file(device_meta() / "timestamp.json"), trusted_before);
}

TEST_P(PublishFetch, ExpiredSnapshotIsRejected) {
  auto cfg = client_config();
  cfg.now = [] { return now_seconds() + std::chrono::hours(24 * 8); };
  tuf::Client client(cfg, *http_);
  auto st = client.refresh();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::expired) << st.error().message();
  EXPECT_NE(st.error().message().find("snapshot"), std::string::npos) << st.error().message();
  EXPECT_FALSE(stdfs::exists(device_meta() / "targets.json"));
}

TEST_P(PublishFetch, ClientFollowsANewPublish) {
  tuf::Client client(client_config(), *http_);
  ASSERT_TRUE(client.refresh());
  auto v_before = client.targets()->version;
  make_model_dir(work_ / "src3", std::string(1000, 'c'));
  auto r3 = repo_->add_release(work_ / "src3", "1.2.0");
  ASSERT_TRUE(r3) << r3.error().message();

  tuf::Client again(client_config(), *http_);
  ASSERT_TRUE(again.refresh());
  EXPECT_EQ(again.targets()->version, v_before + 1);
  EXPECT_TRUE(again.get_target(r3->target_path));
}

INSTANTIATE_TEST_SUITE_P(Servers, PublishFetch,
                         ::testing::Values(ServerKind::mota, ServerKind::nginx),
                         [](const auto& info) {
                           return std::string(info.param == ServerKind::mota ? "MotaServe"
                                                                             : "Nginx");
                         });

}  // namespace
}  // namespace mota
