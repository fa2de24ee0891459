// The `mota` binary as an operator runs it: exit codes, messages, and `mota serve` over loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "common/http.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = (tmp_ / "repo").string();
    model_ = tmp_ / "model";
    test::write_file(model_ / "model.json",
                     R"({"name": "det", "version": "0.0.1", "framework": "other",
                         "entry": "model.onnx"})");
    test::write_file(model_ / "model.onnx", std::string(10000, 'x'));
  }

  test::RunResult mota(std::vector<std::string> args,
                       const std::map<std::string, std::string>& env = {}) {
    args.insert(args.begin(), test::build_path("manager/mota").string());
    return test::run(args, env);
  }

  void init() {
    auto r = mota({"init", repo_});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  test::TempDir tmp_;
  std::string repo_;
  stdfs::path model_;
};

TEST_F(CliTest, VersionAndUsageErrors) {
  auto r = mota({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("mota ", 0), 0u) << r.out;

  r = mota({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("release"), std::string::npos);

  r = mota({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err.rfind("mota: error: ", 0), 0u) << r.err;

  r = mota({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err.rfind("mota: error: unknown command 'frobnicate'", 0), 0u) << r.err;

  r = mota({"release", "delete"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err.rfind("mota: error: ", 0), 0u) << r.err;

  r = mota({"verify", "--bogus-flag"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--bogus-flag"), std::string::npos) << r.err;

  r = mota({"release", "add", model_.string()});  // --version is required
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--version"), std::string::npos) << r.err;

  r = mota({"init", repo_, "--key-type", "dsa"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--key-type"), std::string::npos) << r.err;
  EXPECT_FALSE(stdfs::exists(repo_));

  r = mota({"init", repo_, "--expires", "targets=soon"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--expires"), std::string::npos) << r.err;
  EXPECT_FALSE(stdfs::exists(repo_));

  // Missing argument, bad value: usage errors too, with nothing created.
  r = mota({"init"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("DIR"), std::string::npos) << r.err;
  r = mota({"init", repo_, "--zstd-level", "fast"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--zstd-level"), std::string::npos) << r.err;
  r = mota({"init", repo_, "--zstd-level", "40"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("zstd level 40 is not in 1..19"), std::string::npos) << r.err;
  EXPECT_FALSE(stdfs::exists(repo_));
  r = mota({"serve", "--threads", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--threads"), std::string::npos) << r.err;
  r = mota({"timestamp", "refresh", "--force=maybe"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err.rfind("mota: error: ", 0), 0u) << r.err;

  // --repo before the command: a missing value, and a mistyped command after it.
  r = mota({"--repo"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--repo"), std::string::npos) << r.err;
  r = mota({"--repo", repo_, "frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err.rfind("mota: error: unknown command 'frobnicate'", 0), 0u) << r.err;
  r = mota({"release", "list", "--repo"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--repo"), std::string::npos) << r.err;
}

// `--repo DIR` works before the command as well as after it (after wins), for the repository
// commands and the fleet ones.
TEST_F(CliTest, RepoBeforeOrAfterTheCommand) {
  init();
  auto r = mota({"release", "add", model_.string(), "--version", "1.0.0", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string plain = (tmp_ / "plain").string();
  stdfs::create_directory(plain);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--repo", repo_, "release", "list"},
        {"--repo=" + repo_, "release", "list"},
        {"--repo", plain, "release", "list", "--repo", repo_}}) {
    r = mota(args);
    ASSERT_EQ(r.exit_code, 0) << args[1] << ": " << r.err;
    EXPECT_NE(r.out.find("1.0.0"), std::string::npos) << r.out;
  }
  r = mota({"--repo", repo_, "release", "list", "--repo", plain});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mota: error: " + plain + " is not a mota repository (no mota.toml)\n");
  r = mota({"--repo", repo_, "verify"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("repository " + repo_ + " verified"), std::string::npos) << r.out;
  r = mota({"--repo", repo_, "timestamp", "refresh", "--force"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = mota({"--repo", repo_, "channel", "set", "stable", "det", "1.0.0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The fleet commands read the same --repo wherever it stands.
  const auto after = mota({"fleet", "--json", "--repo", repo_});
  const auto before = mota({"--repo", repo_, "fleet", "--json"});
  EXPECT_EQ(before.exit_code, after.exit_code) << before.err << after.err;
  EXPECT_EQ(before.out, after.out);
  EXPECT_EQ(before.err, after.err);
}

TEST_F(CliTest, InitTwiceAndNotARepository) {
  auto r = mota({"init", repo_, "--key-type", "ecdsa", "--expires", "timestamp=12h"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("initialised repository"), std::string::npos);
  // What keeps the metadata fresh, and how often it must run.
  EXPECT_NE(r.out.find("lifetimes: timestamp 12h, snapshot 1w, targets 3mo, root 1y"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("timestamp.json expires every 12h: keep `mota serve` running (it re-signs "
                       "it) or schedule `mota timestamp refresh` (the mota-manager package ships "
                       "mota-refresh.timer)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("re-signed when less than 6h is left"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mota key rotate root"), std::string::npos) << r.out;
  EXPECT_NE(test::read_file(stdfs::path(repo_) / "mota.toml").find("timestamp = \"12h\""),
            std::string::npos);

  r = mota({"init", repo_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mota: error: " + repo_ + " is already a mota repository\n");

  const std::string plain = (tmp_ / "plain").string();
  stdfs::create_directory(plain);
  r = mota({"release", "list", "--repo", plain});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mota: error: " + plain + " is not a mota repository (no mota.toml)\n");
  r = mota({"verify", plain});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not a mota repository"), std::string::npos) << r.err;
}

TEST_F(CliTest, ReleaseChannelTimestampVerify) {
  init();
  auto r = mota({"release", "add", model_.string(), "--version", "1.0.0", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("published det 1.0.0"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("packing"), std::string::npos);  // no progress on a pipe

  // $MOTA_REPO stands in for --repo.
  const std::map<std::string, std::string> env{{"MOTA_REPO", repo_}};
  r = mota({"release", "add", model_.string(), "--version", "1.1.0", "--name", "det"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;

  r = mota({"release", "add", model_.string(), "--version", "1.1.0"}, env);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("mota: error: release add: release det 1.1.0 is already published"),
            std::string::npos)
      << r.err;

  r = mota({"release", "list", "--json"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto list = parse_json(r.out);
  ASSERT_TRUE(list.has_value()) << r.out;
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0]["version"], "1.0.0");
  EXPECT_EQ((*list)[1]["target"], "models/det/1.1.0/det-1.1.0.mota");
  r = mota({"release", "list"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1.1.0"), std::string::npos);

  // The current directory is the last default.
  r = test::run({"/bin/sh", "-c",
                 "cd '" + repo_ + "' && exec '" + test::build_path("manager/mota").string() +
                     "' release list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1.0.0"), std::string::npos);

  r = mota({"channel", "set", "stable", "det", "1.0.0"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = mota(
      {"channel", "set", "stable", "det", "1.1.0", "--percent", "20", "--min-version", "1.0.0"},
      env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("for 20% of devices (others: 1.0.0)"), std::string::npos) << r.out;
  r = mota({"channel", "set", "beta", "det", "1.1.0", "--allow-downgrade"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;

  r = mota({"channel", "set", "stable", "det", "1.1.0", "--percent", "150"}, env);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--percent"), std::string::npos) << r.err;
  r = mota({"channel", "set", "stable", "det", "3.0.0"}, env);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("det version 3.0.0 is not released"), std::string::npos) << r.err;

  r = mota({"channel", "show", "stable", "--json"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto channels = parse_json(r.out);
  ASSERT_TRUE(channels.has_value()) << r.out;
  ASSERT_EQ(channels->size(), 1u);
  EXPECT_EQ((*channels)[0]["version"], "1.1.0");
  EXPECT_EQ((*channels)[0]["rollout"]["percent"], 20);
  EXPECT_EQ((*channels)[0]["rollout"]["fallback_version"], "1.0.0");
  r = mota({"channel", "show"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("beta"), std::string::npos);
  EXPECT_NE(r.out.find("stable"), std::string::npos);

  // Just published: nothing is due, nothing changes. --force re-signs the timestamp.
  const auto ts_file = stdfs::path(repo_) / "repo/metadata/timestamp.json";
  const std::string ts_before = test::read_file(ts_file);
  r = mota({"timestamp", "refresh"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("timestamp version 6: fresh, expires "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nothing was due: no file changed"), std::string::npos) << r.out;
  EXPECT_EQ(test::read_file(ts_file), ts_before);
  r = mota({"timestamp", "refresh", "--force"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("timestamp version 7: re-signed, expires "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("snapshot version 6: fresh"), std::string::npos) << r.out;

  r = mota({"key", "rotate", "snapshot"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("root version 2"), std::string::npos) << r.out;
  r = mota({"key", "rotate", "owner"}, env);
  EXPECT_EQ(r.exit_code, 2);

  r = mota({"verify"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ok: root: versions 1..2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("verified"), std::string::npos) << r.out;

  // Tamper with a package: verify fails and says which target.
  for (const auto& e : stdfs::recursive_directory_iterator(stdfs::path(repo_) / "repo/targets")) {
    if (e.path().extension() == ".mota") {
      std::string bytes = test::read_file(e.path());
      bytes[bytes.size() / 2] ^= 0x20;
      test::write_file(e.path(), bytes);
      break;
    }
  }
  r = mota({"verify", repo_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("mota: error: verify " + repo_ + ": target models/det/", 0), 0u) << r.err;
}

// The head of the answer to a GET of `path` (the project's HTTP client does not show headers).
std::string response_head(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == ssize_t(req.size())) {
    char buf[4096];
    for (ssize_t n;
         got.find("\r\n\r\n") == std::string::npos && (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      got.append(buf, std::size_t(n));
    }
  }
  ::close(fd);
  return got.substr(0, got.find("\r\n\r\n") + 2);
}

TEST_F(CliTest, ServeAnswersAndStopsOnSigterm) {
  init();
  const int port = test::free_port();
  test::Process server({test::build_path("manager/mota").string(), "serve", "--repo", repo_,
                        "--listen", "127.0.0.1:" + std::to_string(port)},
                       tmp_ / "serve.log");
  ASSERT_TRUE(test::wait_for_port(port)) << test::read_file(tmp_ / "serve.log");

  auto http = http::make_http_client();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  auto body = http->get_body(base + "/metadata/timestamp.json", 1 << 20);
  ASSERT_TRUE(body.has_value()) << body.error().message();
  EXPECT_EQ(*body, test::read_file(stdfs::path(repo_) / "repo/metadata/timestamp.json"));
  auto root = http->get_body(base + "/metadata/1.root.json", 1 << 20);
  ASSERT_TRUE(root.has_value()) << root.error().message();
  // Only DIR/repo is served: the keys are not reachable.
  auto key = http->get_body(base + "/keys/root.pem", 1 << 20);
  ASSERT_FALSE(key.has_value());
  EXPECT_EQ(key.error().code(), Errc::http);
  auto key2 = http->get_body(base + "/../keys/root.pem", 1 << 20);
  EXPECT_FALSE(key2.has_value());
  // The TUF cache rule (mota serve hands it to the server): metadata that changes in place is
  // never cached, versioned metadata may be.
  EXPECT_NE(response_head(port, "/metadata/timestamp.json").find("\r\nCache-Control: no-store\r\n"),
            std::string::npos);
  EXPECT_EQ(response_head(port, "/metadata/1.root.json").find("Cache-Control"), std::string::npos);

  server.kill(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
  const std::string log = test::read_file(tmp_ / "serve.log");
  EXPECT_NE(log.find("serving "), std::string::npos) << log;
  EXPECT_NE(log.find("http://127.0.0.1:" + std::to_string(port)), std::string::npos) << log;
}

// A repository whose four roles are all within their refresh window right now: signed by the
// library on a clock in the past, with the snapshot and targets keys away for the last refresh.
// Root lifetime 100d (so the root is 11 days from expiry, inside its 30-day window).
class ExpiringRepoTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    using std::chrono::hours;
    auto t = std::make_shared<TimePoint>(now_seconds() - hours(24 * 89));
    manager::NowFn clock = [t] { return *t; };
    manager::Settings s;
    s.expiry.root = hours(24 * 100);
    auto repo = manager::Repository::init(repo_, s, clock);
    ASSERT_TRUE(repo.has_value()) << repo.error().message();
    // Day -6: timestamp and snapshot renewed (the snapshot then expires in 1 day from now).
    *t = now_seconds() - hours(24 * 6);
    ASSERT_TRUE(repo->refresh().has_value());
    // 20 h ago, with only the timestamp key here: the timestamp has 4 h left now.
    *t = now_seconds() - hours(20);
    for (const char* k : {"snapshot", "targets"}) move_key(k, true);
    auto r = repo->refresh();
    ASSERT_TRUE(r.has_value()) << r.error().message();
    ASSERT_TRUE(r->resigned_timestamp);
    for (const char* k : {"snapshot", "targets"}) move_key(k, false);
  }
  void move_key(const std::string& role, bool away) {
    const auto home = stdfs::path(repo_) / "keys" / (role + ".pem");
    const auto elsewhere = tmp_ / (role + ".pem");
    stdfs::rename(away ? home : elsewhere, away ? elsewhere : home);
  }
};

TEST_F(ExpiringRepoTest, VerifyWarnsForEveryRoleAndRefreshRenewsTheOnlineOnes) {
  auto r = mota({"verify", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* role : {"root", "timestamp", "snapshot", "targets"}) {
    EXPECT_NE(r.out.find(std::string("warning: ") + role + " version "), std::string::npos)
        << role << "\n"
        << r.out;
  }
  EXPECT_NE(r.out.find("timestamp version 3 expires "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("within its 12h refresh window): run `mota timestamp refresh`"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("within its 1mo refresh window): sign a new root version with `mota key "
                       "rotate root`"),
            std::string::npos)
      << r.out;

  // Without the targets key here: timestamp and snapshot are renewed, the rest is an error.
  move_key("targets", true);
  r = mota({"timestamp", "refresh", "--repo", repo_});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("timestamp version 4: re-signed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("snapshot version 3: re-signed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("targets version 1: DUE"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("mota: error: timestamp refresh: cannot re-sign what is due, no key here: "
                       "targets: " +
                       repo_ + "/keys/targets.pem: No such file or directory"),
            std::string::npos)
      << r.err;
  move_key("targets", false);

  r = mota({"timestamp", "refresh", "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("targets version 2: re-signed"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("mota: warning: root version 1 expires "), std::string::npos) << r.err;
  r = mota({"verify", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("warning: root version 1"), std::string::npos) << r.out;
  for (const char* role : {"timestamp", "snapshot", "targets"}) {
    EXPECT_EQ(r.out.find(std::string("warning: ") + role), std::string::npos) << r.out;
  }
}

// `mota serve` without --no-refresh renews what is due at once (before serving) and logs it;
// with --no-refresh it only warns about each role within its window.
TEST_F(ExpiringRepoTest, ServeRefreshesAtStartOrWarns) {
  const int port = test::free_port();
  const auto log = tmp_ / "serve.log";
  const auto ts_file = stdfs::path(repo_) / "repo/metadata/timestamp.json";
  const std::string ts_before = test::read_file(ts_file);
  {
    test::Process server({test::build_path("manager/mota").string(), "serve", "--repo", repo_,
                          "--listen", "127.0.0.1:" + std::to_string(port), "--no-refresh"},
                         log);
    ASSERT_TRUE(test::wait_for_port(port)) << test::read_file(log);
    server.kill(SIGTERM);
    EXPECT_EQ(server.wait(), 0) << test::read_file(log);
  }
  std::string text = test::read_file(log);
  EXPECT_NE(text.find("metadata refresh is off (--no-refresh)"), std::string::npos) << text;
  for (const char* role : {"timestamp", "snapshot", "targets"}) {
    EXPECT_NE(text.find(std::string("WARN ") + role + " version "), std::string::npos)
        << role << "\n"
        << text;
  }
  EXPECT_NE(text.find("is not re-signed here: auto-refresh is off (--no-refresh); devices refuse "
                      "metadata after "),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("WARN root version 1"), std::string::npos) << text;
  EXPECT_EQ(test::read_file(ts_file), ts_before);

  stdfs::remove(log);
  {
    test::Process server({test::build_path("manager/mota").string(), "serve", "--repo", repo_,
                          "--listen", "127.0.0.1:" + std::to_string(port)},
                         log);
    ASSERT_TRUE(test::wait_for_port(port)) << test::read_file(log);
    server.kill(SIGTERM);
    EXPECT_EQ(server.wait(), 0) << test::read_file(log);
  }
  text = test::read_file(log);
  EXPECT_NE(text.find("metadata refreshed: re-signed targets version 2"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("WARN timestamp"), std::string::npos) << text;
  EXPECT_NE(text.find("WARN root version 1"), std::string::npos) << text;
  EXPECT_NE(test::read_file(ts_file), ts_before);
  auto v = mota({"verify", repo_});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  EXPECT_EQ(v.out.find("warning: timestamp"), std::string::npos) << v.out;
}

TEST_F(CliTest, ServeUsageAndBindErrors) {
  init();
  auto r = mota({"serve", "--repo", repo_, "--listen", "nonsense"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--listen 'nonsense'"), std::string::npos) << r.err;
  const std::string plain = (tmp_ / "plain").string();
  stdfs::create_directory(plain);
  r = mota({"serve", "--repo", plain, "--listen", "127.0.0.1:0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not a mota repository"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mota
