// The operator's side of device admission and of device-supplied text, through the real `mota`
// binary on a real fleet database: `mota devices accept|reject`, `mota devices --admission`,
// `mota fleet` showing pending devices apart, `mota enrollment create|list|revoke`; and every
// view printing what devices sent with control characters, escapes and bidi overrides visible,
// never interpreted by the terminal.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "manager/fleet/fleet_db.hpp"
#include "storage/sqlite.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

class AdmissionCli : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = (tmp_ / "repo").string();
    auto r = mota({"init", repo_});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto db = open_fleet_db(stdfs::path(repo_) / "fleet.db");
    ASSERT_TRUE(db) << db.error().message();
    db_ = std::make_unique<storage::Database>(std::move(*db));
  }
  test::RunResult mota(std::vector<std::string> args) {
    args.insert(args.begin(), test::build_path("manager/mota").string());
    return test::run(args);
  }
  // A device row as the ingest writes it; `id` may hold any byte (databases from before ids were
  // checked at the edge).
  void add_device(const std::string& id, const std::string& admission, char key = 'a',
                  const std::string& agent_version = "0.1.0") {
    auto st = db_->prepare(
        "INSERT INTO devices (id, key, first_seen, last_seen, admission, agent_version) VALUES "
        "(?, ?, 1, CAST(strftime('%s', 'now') AS INTEGER), ?, ?)");
    ASSERT_TRUE(st) << st.error().message();
    ASSERT_TRUE(st->bind_all(id, std::string(64, key), admission, agent_version));
    ASSERT_TRUE(st->run());
  }
  void add_model(const std::string& id, const std::string& version, const std::string& error = "",
                 const std::string& model = "detector") {
    auto st = db_->prepare(
        "INSERT INTO installed (device, model, version, state, last_error, updated_at) VALUES "
        "(?, ?, ?, ?, ?, 1)");
    ASSERT_TRUE(st) << st.error().message();
    ASSERT_TRUE(
        st->bind_all(id, model, version, std::string(error.empty() ? "ok" : "failed"), error));
    ASSERT_TRUE(st->run());
  }

  test::TempDir tmp_;
  std::string repo_;
  std::unique_ptr<storage::Database> db_;
};

TEST_F(AdmissionCli, AcceptRejectAndPendingDevicesShownApart) {
  add_device("cam-1", "admitted", 'a');
  add_model("cam-1", "1.0.0");
  for (const char* id : {"new-1", "new-2", "new-3"}) {
    add_device(id, "pending", id[4]);
    add_model(id, "1.0.0");
  }
  auto r = mota({"fleet", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("1 devices, 0 not seen for 1h", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("3 pending and 0 rejected devices are not counted"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("detector: 1 devices"), std::string::npos) << r.out;
  r = mota({"devices", "--repo", repo_, "--admission", "pending", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = Json::parse(r.out, nullptr, false);
  ASSERT_TRUE(rows.is_array()) << r.out;
  EXPECT_EQ(rows.size(), 3u);

  r = mota({"devices", "accept", "new-1", "new-2", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("accepted 2 devices", 0), 0u) << r.out;
  r = mota({"devices", "reject", "--all-pending", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "rejected 1 device\n");
  r = mota({"fleet", "--repo", repo_, "--json"});
  auto summary = Json::parse(r.out, nullptr, false);
  ASSERT_TRUE(summary.is_object()) << r.out;
  EXPECT_EQ(summary["devices"], 3);
  EXPECT_EQ(summary["pending"], 0);
  EXPECT_EQ(summary["rejected"], 1);
  r = mota({"device", "show", "new-3", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("admission  rejected: its reports are refused"), std::string::npos) << r.out;
  r = mota({"device", "show", "new-1", "--repo", repo_});
  EXPECT_NE(r.out.find("admission  admitted by operator at "), std::string::npos) << r.out;

  // Mistakes change nothing and say what.
  r = mota({"devices", "accept", "new-1", "cam-1", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "accepted 0 devices (2 of the 2 named were admitted already)\n");
  r = mota({"devices", "accept", "new-3", "nobody", "--repo", repo_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("device 'nobody' is not on record (nothing changed)"), std::string::npos)
      << r.err;
  r = mota({"devices", "accept", "--repo", repo_});
  EXPECT_EQ(r.exit_code, 2) << "a usage error";
  EXPECT_NE(r.err.find("give device ids or --all-pending"), std::string::npos) << r.err;
  r = mota({"fleet", "--repo", repo_, "--json"});
  EXPECT_EQ(Json::parse(r.out, nullptr, false)["rejected"], 1);
}

// Bulk by selector, until device labels: every pending device matching the listing's filters.
TEST_F(AdmissionCli, BulkAcceptNarrowedByFilters) {
  for (const char* id : {"cam-1", "cam-2", "lidar-1"}) {
    add_device(id, "pending", id[0] == 'c' ? id[4] : 'z');
    add_model(id, "1.0.0", "", id[0] == 'c' ? "detector" : "segmenter");
  }
  auto r = mota(
      {"devices", "accept", "--all-pending", "--model", "detector", "--dry-run", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "cam-1\ncam-2\nwould accept 2 devices\n");
  r = mota({"fleet", "--repo", repo_, "--json"});
  EXPECT_EQ(Json::parse(r.out, nullptr, false)["pending"], 3) << "a dry run changes nothing";
  r = mota({"devices", "accept", "--all-pending", "--model", "detector", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "accepted 2 devices\n");
  r = mota({"device", "show", "lidar-1", "--repo", repo_, "--json"});
  EXPECT_EQ(Json::parse(r.out, nullptr, false)["admission"], "pending");
  r = mota({"devices", "reject", "lidar-1", "--model", "segmenter", "--repo", repo_});
  EXPECT_EQ(r.exit_code, 2) << "filters narrow --all-pending only";
  EXPECT_NE(r.err.find("narrow --all-pending"), std::string::npos) << r.err;
}

TEST_F(AdmissionCli, EnrollmentKeysCreateListRevoke) {
  const std::string out = (tmp_ / "factory.pem").string();
  auto r = mota({"enrollment", "create", "factory", "--out", out, "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the private half is a secret";
  const std::string pem = test::read_file(out);
  EXPECT_EQ(pem.rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
  // Never over an existing file, never a second key of one name.
  r = mota({"enrollment", "create", "other", "--out", out, "--repo", repo_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("exists; not overwritten"), std::string::npos) << r.err;
  EXPECT_EQ(test::read_file(out), pem);
  r = mota(
      {"enrollment", "create", "factory", "--out", (tmp_ / "f2.pem").string(), "--repo", repo_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'factory' is on record"), std::string::npos) << r.err;
  EXPECT_FALSE(stdfs::exists(tmp_ / "f2.pem")) << "a refused key leaves no private half behind";

  r = mota({"enrollment", "list", "--repo", repo_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto keys = Json::parse(r.out, nullptr, false);
  ASSERT_TRUE(keys.is_array() && keys.size() == 1u) << r.out;
  EXPECT_EQ(keys[0]["name"], "factory");
  EXPECT_TRUE(keys[0]["revoked_at"].is_null());
  r = mota({"enrollment", "revoke", "factory", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = mota({"enrollment", "list", "--repo", repo_, "--json"});
  keys = Json::parse(r.out, nullptr, false);
  EXPECT_TRUE(keys[0]["revoked_at"].is_string()) << r.out;
  r = mota({"enrollment", "revoke", "nobody", "--repo", repo_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'nobody' is not on record"), std::string::npos) << r.err;
}

// The finding: `mota devices` and `mota device show` printed escape sequences from device fields
// (screen clear, title change), and showed the id "victim-01\0spoof" as "victim-01".
TEST_F(AdmissionCli, DeviceStringsAreEscapedInEveryView) {
  add_device(std::string("victim-01\0spoof", 15), "admitted", 'a');
  add_device("evil", "admitted", 'b', "0.1\x1b]0;pwned\x07");
  add_model("evil", "1\x1b[2J",
            "line1\nFAKE 2026 line \xe2\x80\xae"
            "txt.exe");
  auto no_raw = [](const std::string& text) {
    for (char c : text) {
      const auto u = static_cast<unsigned char>(c);
      EXPECT_FALSE(u == 0x1b || u == 0x07 || u == 0) << "a raw control byte " << int(u);
    }
    EXPECT_EQ(text.find("\xe2\x80\xae"), std::string::npos) << "a raw bidi override";
  };
  auto r = mota({"devices", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  no_raw(r.out);
  EXPECT_NE(r.out.find("victim-01\\x00spoof"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1\\x1b[2J"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line1\\nFAKE"), std::string::npos) << r.out;
  r = mota({"device", "show", "evil", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  no_raw(r.out);
  EXPECT_NE(r.out.find("0.1\\x1b]0;pwned\\x07"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\\u{202E}txt.exe"), std::string::npos) << r.out;
  r = mota({"fleet", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  no_raw(r.out);
}

}  // namespace
}  // namespace mota::manager
