// The TUF client (manifest/tuf/client.hpp) against a real repository (tests/support/tuf_repo.hpp:
// real keys, real signatures) served over real loopback HTTP by a small server of this file (raw
// sockets: this layer's tests link only common and manifest). Faults are injected by changing
// what the server sends.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "common/fs.hpp"
#include "common/http.hpp"
#include "manifest/tuf/client.hpp"
#include "tests/support/fault_server.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/tuf_repo.hpp"

namespace mota::tuf {
namespace {

namespace stdfs = std::filesystem;
using test::TempDir;
using test::TufRepo;

std::string percent_decode(std::string_view s) {
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Serves a directory over loopback HTTP/1.1 (GET only, one request per connection, a thread per
// connection), counting requests by their decoded path; individual paths can be overridden
// with a status or an endless stream.
class RepoServer {
 public:
  explicit RepoServer(stdfs::path root) : root_(std::move(root)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 64) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "repo server: cannot listen: " << std::strerror(errno);
      return;
    }
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~RepoServer() {
    stop_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    ::close(listen_fd_);
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string metadata_url() const { return url() + "/metadata"; }
  std::string targets_url() const { return url() + "/targets"; }

  int count(const std::string& path) {
    std::lock_guard lock(mu_);
    return counts_[path];
  }
  std::vector<std::string> requests() {
    std::lock_guard lock(mu_);
    return log_;
  }
  void clear_log() {
    std::lock_guard lock(mu_);
    log_.clear();
    counts_.clear();
  }
  void set_status(const std::string& path, int status) {
    std::lock_guard lock(mu_);
    status_[path] = status;
  }
  void set_endless(const std::string& path) {
    std::lock_guard lock(mu_);
    endless_.insert(path);
  }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;  // 50 ms: how soon the destructor is noticed
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::lock_guard lock(mu_);
      threads_.emplace_back([this, fd] {
        handle(fd);
        ::close(fd);
      });
    }
  }

  static bool send_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(std::size_t(n));
    }
    return true;
  }

  static bool answer(int fd, int status, const std::string& body) {
    return send_all(fd, "HTTP/1.1 " + std::to_string(status) +
                            " X\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  }

  void handle(int fd) {
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string head;
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return;
      head.append(buf, std::size_t(n));
    }
    // "GET /path?query HTTP/1.1"
    const std::size_t sp1 = head.find(' ');
    const std::size_t sp2 = head.find(' ', sp1 + 1);
    if (head.compare(0, sp1, "GET") != 0 || sp2 == std::string::npos) {
      answer(fd, 405, "");
      return;
    }
    const std::string target = head.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string path = percent_decode(target.substr(0, target.find('?')));
    std::optional<int> status;
    bool endless = false;
    {
      std::lock_guard lock(mu_);
      counts_[path]++;
      log_.push_back(path);
      if (auto it = status_.find(path); it != status_.end()) status = it->second;
      endless = endless_.count(path) > 0;
    }
    if (status) {
      answer(fd, *status, "");
      return;
    }
    if (endless) {
      // No Content-Length, never ending (bounded, in case nobody stops it).
      static const std::string chunk(16 * 1024, ' ');
      if (!send_all(fd,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "Connection: close\r\n\r\n")) {
        return;
      }
      for (std::size_t sent = 0; sent <= (64u << 20) && !stop_; sent += chunk.size()) {
        if (!send_all(fd, chunk)) return;
      }
      return;
    }
    // Files are stored under their percent-encoded names, as a static server would hold them.
    // Metadata files sit directly in metadata/, so everything after that prefix is one name
    // (role names may contain '/' once decoded).
    const std::string rel = path.substr(1);
    std::optional<std::string> candidate;
    if (rel.rfind("metadata/", 0) == 0) {
      candidate = "metadata/" + http::percent_encode(rel.substr(9));
    } else if (rel.find("..") == std::string::npos) {
      candidate = rel;
    }
    std::error_code ec;
    if (candidate && stdfs::is_regular_file(root_ / *candidate, ec)) {
      answer(fd, 200, test::read_file(root_ / *candidate));
      return;
    }
    answer(fd, 404, "");
  }

  stdfs::path root_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::map<std::string, int> counts_;
  std::vector<std::string> log_;
  std::map<std::string, int> status_;
  std::set<std::string> endless_;
};

// All files of a directory with their contents (the trusted metadata state).
std::map<std::string, std::string> dir_state(const stdfs::path& dir) {
  std::map<std::string, std::string> out;
  if (!stdfs::exists(dir)) return out;
  for (const auto& e : stdfs::directory_iterator(dir)) {
    out[e.path().filename().string()] = test::read_file(e.path());
  }
  return out;
}

class TufClientTest : public ::testing::Test {
 protected:
  TufClientTest() : repo_(tmp_ / "repo"), server_(tmp_ / "repo"), http_(http::make_http_client()) {
    EXPECT_TRUE(Client::init(meta_dir(), repo_.root_bytes(1)));
  }

  stdfs::path meta_dir() const { return tmp_ / "client"; }

  ClientConfig config() const {
    ClientConfig c;
    c.metadata_dir = meta_dir();
    c.metadata_base_url = server_.metadata_url();
    return c;
  }
  std::unique_ptr<Client> make_client(ClientConfig c) {
    return std::make_unique<Client>(std::move(c), *http_);
  }
  Status refresh() { return make_client(config())->refresh(); }

  // Refresh must fail with `code` and a message containing `text`, and leave the trusted
  // metadata exactly as it was, except the files in `may_change` (metadata that verified before
  // the failing step is legitimately stored, as the specification says).
  void expect_rejected(Errc code, const std::string& text, std::set<std::string> may_change = {},
                       std::optional<ClientConfig> c = std::nullopt) {
    auto before = dir_state(meta_dir());
    auto client = make_client(c ? *c : config());
    auto st = client->refresh();
    ASSERT_FALSE(st) << "refresh unexpectedly succeeded";
    EXPECT_EQ(st.error().code(), code) << st.error().message();
    EXPECT_NE(st.error().message().find(text), std::string::npos) << st.error().message();
    auto after = dir_state(meta_dir());
    for (auto* m : {&before, &after}) {
      for (const auto& f : may_change) m->erase(f);
    }
    EXPECT_EQ(after, before) << "trusted metadata changed on rejection";
    EXPECT_EQ(client->timestamp(), nullptr);
  }

  std::string trusted(const std::string& file) { return test::read_file(meta_dir() / file); }
  std::uint64_t trusted_version(const std::string& file) {
    auto j = parse_json(trusted(file));
    return (*j)["signed"]["version"].get<std::uint64_t>();
  }

  TempDir tmp_;
  TufRepo repo_;
  RepoServer server_;
  std::unique_ptr<http::Client> http_;
};

// --- happy path -------------------------------------------------------------------------------

TEST_F(TufClientTest, RefreshStoresVerifiedMetadataByteForByte) {
  repo_.add_target("targets", "models/a.bin", "weights");
  repo_.bump_all();
  auto client = make_client(config());
  ASSERT_TRUE(client->refresh()) << client->refresh().error().message();
  ASSERT_NE(client->targets(), nullptr);
  EXPECT_EQ(client->timestamp()->version, 2u);
  EXPECT_EQ(client->snapshot()->version, 2u);
  EXPECT_EQ(client->targets()->version, 2u);
  EXPECT_EQ(client->root()->version, 1u);
  auto files = dir_state(meta_dir());
  EXPECT_EQ(files.size(), 4u);
  EXPECT_EQ(files["root.json"], repo_.root_bytes(1));
  EXPECT_EQ(files["timestamp.json"], test::read_file(repo_.metadata_dir() / "timestamp.json"));
  EXPECT_EQ(files["snapshot.json"], test::read_file(repo_.metadata_dir() / "2.snapshot.json"));
  EXPECT_EQ(files["targets.json"], test::read_file(repo_.metadata_dir() / "2.targets.json"));
  // Consistent snapshot: versioned names for snapshot and targets, never the plain ones.
  auto reqs = server_.requests();
  EXPECT_EQ(reqs,
            (std::vector<std::string>{"/metadata/2.root.json", "/metadata/timestamp.json",
                                      "/metadata/2.snapshot.json", "/metadata/2.targets.json"}));
}

TEST_F(TufClientTest, DownloadsTargetWithHashPrefixedName) {
  repo_.add_target("targets", "models/a.bin", "the weights");
  repo_.bump_all();
  auto client = make_client(config());
  auto info = client->get_target("models/a.bin");
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->length, 11u);
  EXPECT_EQ(client->target_url("http://h/t", "models/a.bin", *info),
            "http://h/t/models/" + info->hashes.at("sha256") + ".a.bin");
  stdfs::path dest = tmp_ / "out" / "a.bin";
  ASSERT_TRUE(fs::make_dirs(dest.parent_path()));
  auto st = client->download_target(server_.targets_url(), "models/a.bin", *info, dest);
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(test::read_file(dest), "the weights");
  EXPECT_EQ(server_.count("/targets/models/" + info->hashes.at("sha256") + ".a.bin"), 1);
}

// Every metadata fetch is bounded by fetch_timeout; a file whose signed length is known gets
// length / fetch_min_rate on top, so a big targets.json on a slow link is not cut off for its size.
TEST_F(TufClientTest, MetadataFetchesAreBoundedAndKnownLengthsGetTimeForTheirSize) {
  for (int i = 0; i < 10; ++i) {
    repo_.add_target("targets", "models/m" + std::to_string(i) + "/" + std::string(100, 'x'),
                     "weights " + std::to_string(i));
  }
  repo_.bump_all();
  const auto length = stdfs::file_size(repo_.metadata_dir() / "2.targets.json");
  ASSERT_GT(length, 3000u);
  test::DropProxyConfig pc;
  pc.upstream_port = std::stoi(server_.url().substr(server_.url().rfind(':') + 1));
  pc.cut_times = 0;
  pc.slow_suffix = "targets.json";
  pc.slow_rate = 1000;  // bytes per second: 3+ s for targets.json
  test::DropProxy proxy(pc);
  ClientConfig c = config();
  c.metadata_base_url = proxy.url("/metadata");
  c.fetch_timeout = std::chrono::milliseconds(500);
  const auto t0 = std::chrono::steady_clock::now();
  auto st = make_client(c)->refresh();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::network) << st.error().message();
  EXPECT_NE(st.error().message().find("fetch 2.targets.json: GET "), std::string::npos)
      << st.error().message();
  EXPECT_NE(st.error().message().find("timed out: no complete answer within 0.5 s"),
            std::string::npos)
      << st.error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));

  // 0.5 s + length / 500 bytes/s: twice the time the proxy needs.
  c.fetch_min_rate = 500;
  auto ok = make_client(c)->refresh();
  ASSERT_TRUE(ok) << ok.error().message();
}

TEST_F(TufClientTest, WithoutConsistentSnapshotUsesPlainNames) {
  TempDir tmp2;
  TufRepo repo(tmp2 / "repo", /*consistent_snapshot=*/false);
  RepoServer server(tmp2 / "repo");
  repo.add_target("targets", "x.txt", "x");
  repo.bump_all();
  ASSERT_TRUE(Client::init(tmp2 / "client", repo.root_bytes(1)));
  ClientConfig c;
  c.metadata_dir = tmp2 / "client";
  c.metadata_base_url = server.metadata_url();
  Client client(c, *http_);
  auto info = client.get_target("x.txt");
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(server.count("/metadata/snapshot.json"), 1);
  EXPECT_EQ(server.count("/metadata/targets.json"), 1);
  ASSERT_TRUE(client.download_target(server.targets_url(), "x.txt", *info, tmp2 / "x"));
  EXPECT_EQ(server.count("/targets/x.txt"), 1);
}

TEST_F(TufClientTest, SecondRefreshUsesLocalSnapshotAndTargets) {
  ASSERT_TRUE(refresh());
  server_.clear_log();
  ASSERT_TRUE(refresh());
  // Timestamp unchanged: the trusted snapshot and targets are current, nothing else is fetched.
  EXPECT_EQ(server_.requests(),
            (std::vector<std::string>{"/metadata/2.root.json", "/metadata/timestamp.json"}));
}

TEST_F(TufClientTest, UnknownTargetIsNotFound) {
  auto client = make_client(config());
  auto info = client->get_target("nope");
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::not_found);
  EXPECT_NE(info.error().message().find("'nope'"), std::string::npos);
}

// --- root rotation ----------------------------------------------------------------------------

TEST_F(TufClientTest, RootRotationWithThresholdAndKeyChange) {
  // v2: root threshold 2 with two new keys, signed by the old key (old threshold) and the new.
  std::vector<crypto::PrivateKey> old_keys = std::move(repo_.keys["root"]);
  repo_.root.version = 2;
  repo_.root.roles["root"].threshold = 2;
  repo_.rotate_keys("root");
  std::vector<const crypto::PrivateKey*> old_signers;
  for (const auto& k : old_keys) old_signers.push_back(&k);
  repo_.publish_root(old_signers);
  // v3: one more key change, signed by both v2 keys and the v3 ones.
  std::vector<crypto::PrivateKey> v2_keys = std::move(repo_.keys["root"]);
  repo_.root.version = 3;
  repo_.rotate_keys("root");
  std::vector<const crypto::PrivateKey*> v2_signers;
  for (const auto& k : v2_keys) v2_signers.push_back(&k);
  repo_.publish_root(v2_signers);

  auto client = make_client(config());
  ASSERT_TRUE(client->refresh()) << client->refresh().error().message();
  EXPECT_EQ(client->root()->version, 3u);
  EXPECT_EQ(trusted("root.json"), repo_.root_bytes(3));
}

TEST_F(TufClientTest, NewRootNotSignedByOldThresholdIsRejected) {
  repo_.root.version = 2;
  repo_.rotate_keys("root");  // signed by the new key only
  repo_.publish_root();
  expect_rejected(Errc::verification, "2.root.json");
  EXPECT_EQ(trusted("root.json"), repo_.root_bytes(1));
}

TEST_F(TufClientTest, NewRootNotSignedByItsOwnThresholdIsRejected) {
  std::vector<crypto::PrivateKey> old_keys = std::move(repo_.keys["root"]);
  repo_.root.version = 2;
  repo_.rotate_keys("root");
  // Signed only by the old key: the new root's own threshold is not met.
  repo_.write_metadata("2.root.json", TufRepo::sign(to_json(repo_.root), {&old_keys.front()}));
  expect_rejected(Errc::verification, "own keys");
}

TEST_F(TufClientTest, SkippedRootVersionIsRejected) {
  repo_.root.version = 3;  // served as 2.root.json
  std::string bytes = repo_.publish_root();
  repo_.write_metadata("2.root.json", bytes);
  expect_rejected(Errc::verification, "is not the expected version 2");
}

TEST_F(TufClientTest, ReplayedRootVersionIsRejected) {
  repo_.write_metadata("2.root.json", repo_.root_bytes(1));
  expect_rejected(Errc::rollback, "is not the expected version 2");
}

TEST_F(TufClientTest, RootRotationsAreBounded) {
  for (std::uint64_t v = 2; v <= 6; ++v) {
    repo_.root.version = v;
    repo_.publish_root();
  }
  auto c = config();
  c.max_root_rotations = 3;
  auto client = make_client(c);
  ASSERT_TRUE(client->refresh());
  EXPECT_EQ(client->root()->version, 4u);
  EXPECT_EQ(server_.count("/metadata/5.root.json"), 0);
}

TEST_F(TufClientTest, RootFetchErrorOtherThanNotFoundFails) {
  server_.set_status("/metadata/2.root.json", 500);
  expect_rejected(Errc::http, "500");
  server_.set_status("/metadata/2.root.json", 403);
  EXPECT_TRUE(refresh());  // 403, like 404, means "no newer root"
}

TEST_F(TufClientTest, ExpiredFinalRootIsRejectedButIntermediateExpiredRootIsFine) {
  repo_.root.version = 2;
  repo_.root.expires = TufRepo::in_days(-1);
  repo_.publish_root();
  expect_rejected(Errc::expired, "root.json: expired at", {"root.json"});
  repo_.root.version = 3;
  repo_.root.expires = TufRepo::in_days(10);
  repo_.publish_root();
  ASSERT_TRUE(refresh());
  EXPECT_EQ(trusted_version("root.json"), 3u);
}

TEST_F(TufClientTest, CorruptLocalRootIsAnError) {
  test::write_file(meta_dir() / "root.json", "{not json");
  auto st = refresh();
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message().find("trusted root.json"), std::string::npos);
}

TEST_F(TufClientTest, InitRejectsRootNotSelfSigned) {
  TempDir d;
  std::string bytes = TufRepo::sign(to_json(repo_.root), {});
  auto st = Client::init(d / "m", bytes);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::verification);
  EXPECT_FALSE(stdfs::exists(d / "m" / "root.json"));
}

// --- timestamp --------------------------------------------------------------------------------

TEST_F(TufClientTest, ReplayedTimestampIsRejected) {
  repo_.timestamp.version = 5;
  repo_.publish_timestamp();
  ASSERT_TRUE(refresh());
  repo_.timestamp.version = 3;
  repo_.publish_timestamp();
  expect_rejected(Errc::rollback,
                  "timestamp.json: version 3 is lower than trusted version 5 (replayed or "
                  "rolled-back metadata)");
}

TEST_F(TufClientTest, SameTimestampVersionKeepsTrustedOne) {
  ASSERT_TRUE(refresh());
  std::string before = trusted("timestamp.json");
  // Same version, different bytes (a later expiry): the trusted one stays.
  repo_.timestamp.expires = TufRepo::in_days(40);
  repo_.publish_timestamp();
  ASSERT_TRUE(refresh());
  EXPECT_EQ(trusted("timestamp.json"), before);
}

TEST_F(TufClientTest, TimestampRollingBackSnapshotVersionIsRejected) {
  repo_.bump_all();
  repo_.bump_all();
  ASSERT_TRUE(refresh());  // trusts snapshot v3
  repo_.timestamp.version++;
  repo_.timestamp.snapshot.version = 2;
  repo_.write_metadata("timestamp.json",
                       TufRepo::sign(to_json(repo_.timestamp), repo_.signers("timestamp")));
  expect_rejected(Errc::rollback, "snapshot version 2 is lower than trusted snapshot version 3");
}

TEST_F(TufClientTest, ExpiredTimestampIsRejected) {
  ASSERT_TRUE(refresh());
  repo_.timestamp.version++;
  repo_.timestamp.expires = TufRepo::in_days(-1);
  repo_.publish_timestamp();
  expect_rejected(Errc::expired, "timestamp.json: expired at");
}

TEST_F(TufClientTest, ClockPastExpiryRejectsEverything) {
  auto c = config();
  c.now = [] { return TufRepo::in_days(31); };
  expect_rejected(Errc::expired, "root.json: expired at", {}, c);
}

TEST_F(TufClientTest, TimestampWithBadSignatureIsRejected) {
  ASSERT_TRUE(refresh());
  repo_.timestamp.version++;
  // Signed by the snapshot key, which the root does not trust for timestamp.
  repo_.write_metadata("timestamp.json",
                       TufRepo::sign(to_json(repo_.timestamp), repo_.signers("snapshot")));
  expect_rejected(Errc::verification, "timestamp.json");
}

TEST_F(TufClientTest, TamperedTimestampIsRejected) {
  ASSERT_TRUE(refresh());
  repo_.timestamp.version++;
  auto env = *parse_json(repo_.publish_timestamp());
  env["signed"]["version"] = 99;  // changed after signing
  repo_.write_metadata("timestamp.json", env.dump());
  expect_rejected(Errc::verification, "timestamp.json");
}

TEST_F(TufClientTest, DuplicateSignatureOfOneKeyIsRefused) {
  // Timestamp needs 2 of 2 keys; one key's signature listed twice does not make two.
  repo_.root.version = 2;
  repo_.root.roles["timestamp"].threshold = 2;
  repo_.add_key("timestamp");
  repo_.publish_root();
  repo_.timestamp.version = 2;
  auto one =
      *parse_json(TufRepo::sign(to_json(repo_.timestamp), {&repo_.keys["timestamp"].front()}));
  one["signatures"].push_back(one["signatures"][0]);
  repo_.write_metadata("timestamp.json", one.dump());
  expect_rejected(Errc::verification, "timestamp.json", {"root.json"});
  // Both keys: accepted.
  repo_.publish_timestamp();
  EXPECT_TRUE(refresh());
}

TEST_F(TufClientTest, RepeatedKeyidInSignaturesIsRefusedEvenAboveThreshold) {
  // Snapshot signed by its one key (threshold 1), with that signature listed twice: the
  // threshold is met, but the specification requires unique keyids in "signatures".
  ASSERT_TRUE(refresh());
  const std::string keyid = repo_.root.roles.at("snapshot").keyids.at(0);
  repo_.snapshot.version = 2;
  auto env = *parse_json(repo_.publish_snapshot());
  env["signatures"].push_back(env["signatures"][0]);
  repo_.write_metadata("2.snapshot.json", env.dump());
  repo_.meta_hashes = false;  // the timestamp must point at the doctored file
  repo_.timestamp.version = 2;
  repo_.publish_timestamp();
  expect_rejected(Errc::verification, "2.snapshot.json", {"timestamp.json"});
  auto client = make_client(config());
  auto st = client->refresh();
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message().find("snapshot metadata: signatures[1]: keyid \"" + keyid +
                                      "\" already signs in signatures[0]"),
            std::string::npos)
      << st.error().message();
  EXPECT_EQ(trusted_version("snapshot.json"), 1u);
}

TEST_F(TufClientTest, EndlessTimestampIsCutOff) {
  server_.set_endless("/metadata/timestamp.json");
  auto c = config();
  c.max_timestamp_bytes = 4096;
  expect_rejected(Errc::too_large, "timestamp.json", {}, c);
}

TEST_F(TufClientTest, CorruptLocalTimestampIsIgnored) {
  ASSERT_TRUE(refresh());
  test::write_file(meta_dir() / "timestamp.json", "garbage");
  test::write_file(meta_dir() / "snapshot.json", "{}");
  ASSERT_TRUE(refresh());
  EXPECT_EQ(trusted("timestamp.json"), test::read_file(repo_.metadata_dir() / "timestamp.json"));
  EXPECT_EQ(trusted_version("snapshot.json"), 1u);
}

// --- snapshot ---------------------------------------------------------------------------------

TEST_F(TufClientTest, SnapshotRollingBackTargetsVersionIsRejected) {
  repo_.bump_all();
  ASSERT_TRUE(refresh());  // trusts targets v2 through snapshot v2
  repo_.snapshot.version++;
  repo_.timestamp.version++;
  repo_.snapshot.meta["targets.json"].version = 1;
  repo_.meta_hashes = false;
  repo_.write_metadata("3.snapshot.json",
                       TufRepo::sign(to_json(repo_.snapshot), repo_.signers("snapshot")));
  repo_.timestamp.snapshot = {3, std::nullopt, {}};
  repo_.write_metadata("timestamp.json",
                       TufRepo::sign(to_json(repo_.timestamp), repo_.signers("timestamp")));
  expect_rejected(Errc::rollback, "targets.json version 1 is lower than trusted version 2",
                  {"timestamp.json"});
}

TEST_F(TufClientTest, SnapshotDroppingARoleIsRejected) {
  repo_.add_delegation("targets",
                       DelegatedRole{"team", {}, 1, false, std::vector<std::string>{"*"}, {}});
  repo_.bump_all();
  ASSERT_TRUE(refresh());
  repo_.snapshot.version++;
  repo_.timestamp.version++;
  repo_.snapshot.meta.erase("team.json");
  repo_.meta_hashes = false;
  repo_.write_metadata("3.snapshot.json",
                       TufRepo::sign(to_json(repo_.snapshot), repo_.signers("snapshot")));
  repo_.timestamp.snapshot = {3, std::nullopt, {}};
  repo_.write_metadata("timestamp.json",
                       TufRepo::sign(to_json(repo_.timestamp), repo_.signers("timestamp")));
  expect_rejected(Errc::rollback, "no longer lists team.json", {"timestamp.json"});
}

TEST_F(TufClientTest, ExpiredLocalSnapshotStillGuardsAgainstRollback) {
  repo_.snapshot.expires = TufRepo::in_days(1);
  repo_.bump_all();
  ASSERT_TRUE(refresh());  // trusts snapshot v2 (listing targets v2), which expires tomorrow
  // Two days later the repository offers snapshot v3 that lists targets v1.
  repo_.meta_hashes = false;
  repo_.snapshot.version = 3;
  repo_.snapshot.expires = TufRepo::in_days(30);
  repo_.snapshot.meta["targets.json"] = {1, std::nullopt, {}};
  repo_.write_metadata("3.snapshot.json",
                       TufRepo::sign(to_json(repo_.snapshot), repo_.signers("snapshot")));
  repo_.timestamp.version = 3;
  repo_.timestamp.snapshot = {3, std::nullopt, {}};
  repo_.write_metadata("timestamp.json",
                       TufRepo::sign(to_json(repo_.timestamp), repo_.signers("timestamp")));
  auto c = config();
  c.now = [] { return TufRepo::in_days(2); };
  expect_rejected(Errc::rollback, "targets.json version 1 is lower than trusted version 2",
                  {"timestamp.json"}, c);
}

TEST_F(TufClientTest, ExpiredSnapshotIsRejected) {
  repo_.snapshot.version++;
  repo_.timestamp.version++;
  repo_.snapshot.expires = TufRepo::in_days(-1);
  repo_.publish_all();
  expect_rejected(Errc::expired, "2.snapshot.json: expired at", {"timestamp.json"});
}

TEST_F(TufClientTest, SnapshotVersionDifferentFromTimestampIsRejected) {
  repo_.meta_hashes = false;
  repo_.timestamp.version++;
  repo_.publish_timestamp();
  repo_.timestamp.snapshot.version = 2;  // names 2.snapshot.json, which holds version 1
  repo_.write_metadata("2.snapshot.json",
                       test::read_file(repo_.metadata_dir() / "1.snapshot.json"));
  repo_.write_metadata("timestamp.json",
                       TufRepo::sign(to_json(repo_.timestamp), repo_.signers("timestamp")));
  expect_rejected(Errc::rollback, "version 1 is lower than version 2 listed in timestamp.json",
                  {"timestamp.json"});
}

TEST_F(TufClientTest, SnapshotLengthOrHashMismatchIsRejected) {
  repo_.bump_all();
  std::string good = test::read_file(repo_.metadata_dir() / "2.snapshot.json");
  // Same JSON, same signature, one byte more or less than timestamp's meta says.
  repo_.write_metadata("2.snapshot.json", good + " ");
  expect_rejected(Errc::too_large, "2.snapshot.json: larger than the limit", {"timestamp.json"});
  repo_.write_metadata("2.snapshot.json", good.substr(0, good.size() - 1));
  expect_rejected(Errc::verification, "2.snapshot.json: length", {"timestamp.json"});
  // Same length, different bytes.
  std::string same_len = good;
  same_len.back() = ' ';
  repo_.write_metadata("2.snapshot.json", same_len);
  expect_rejected(Errc::verification, "2.snapshot.json: hash mismatch (sha256", {"timestamp.json"});
}

TEST_F(TufClientTest, SnapshotWithBadSignatureIsRejected) {
  repo_.snapshot.version++;
  repo_.timestamp.version++;
  repo_.meta_hashes = false;
  repo_.publish_all();
  repo_.write_metadata("2.snapshot.json",
                       TufRepo::sign(to_json(repo_.snapshot), repo_.signers("targets")));
  expect_rejected(Errc::verification, "2.snapshot.json", {"timestamp.json"});
}

// --- targets ----------------------------------------------------------------------------------

TEST_F(TufClientTest, TargetsLengthOrHashMismatchIsRejected) {
  repo_.bump_all();
  std::string good = test::read_file(repo_.metadata_dir() / "2.targets.json");
  repo_.write_metadata("2.targets.json", good + "\n");
  expect_rejected(Errc::too_large, "2.targets.json: larger than the limit",
                  {"timestamp.json", "snapshot.json"});
  repo_.write_metadata("2.targets.json", good.substr(0, good.size() - 1));
  expect_rejected(Errc::verification, "2.targets.json: length",
                  {"timestamp.json", "snapshot.json"});
  std::string same_len = good;
  same_len.back() = ' ';
  repo_.write_metadata("2.targets.json", same_len);
  expect_rejected(Errc::verification, "2.targets.json: hash mismatch (sha256",
                  {"timestamp.json", "snapshot.json"});
}

TEST_F(TufClientTest, RolledBackTargetsIsRejected) {
  repo_.meta_hashes = false;
  repo_.bump_all();
  ASSERT_TRUE(refresh());
  repo_.bump_all();  // snapshot names targets v3 ...
  // ... but the server hands out the old v2 as 3.targets.json.
  repo_.write_metadata("3.targets.json", test::read_file(repo_.metadata_dir() / "2.targets.json"));
  expect_rejected(Errc::rollback,
                  "3.targets.json: version 2 is lower than version 3 listed in snapshot.json",
                  {"timestamp.json", "snapshot.json"});
}

TEST_F(TufClientTest, ExpiredTargetsIsRejected) {
  repo_.targets["targets"].expires = TufRepo::in_days(-1);
  repo_.bump_all();
  expect_rejected(Errc::expired, "2.targets.json: expired at", {"timestamp.json", "snapshot.json"});
}

TEST_F(TufClientTest, TargetsWithBadSignatureIsRejected) {
  repo_.meta_hashes = false;
  repo_.bump_all();
  repo_.write_metadata("2.targets.json",
                       TufRepo::sign(to_json(repo_.targets["targets"]), repo_.signers("snapshot")));
  expect_rejected(Errc::verification, "2.targets.json", {"timestamp.json", "snapshot.json"});
}

// --- fast-forward recovery --------------------------------------------------------------------

TEST_F(TufClientTest, FastForwardRecoveryAfterTimestampKeyRotation) {
  // An attacker with the timestamp key publishes a huge version; the client trusts it.
  repo_.timestamp.version = 1000;
  repo_.publish_timestamp();
  ASSERT_TRUE(refresh());
  EXPECT_EQ(trusted_version("timestamp.json"), 1000u);
  // The repository rotates the timestamp key and starts again at a low version.
  repo_.root.version = 2;
  repo_.rotate_keys("timestamp");
  repo_.publish_root();
  repo_.timestamp.version = 2;
  repo_.publish_timestamp();
  auto st = refresh();
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(trusted_version("timestamp.json"), 2u);
  EXPECT_EQ(trusted_version("root.json"), 2u);
}

TEST_F(TufClientTest, WithoutKeyRotationAHugeTimestampStaysTrusted) {
  repo_.timestamp.version = 1000;
  repo_.publish_timestamp();
  ASSERT_TRUE(refresh());
  repo_.root.version = 2;  // new root, same timestamp keys
  repo_.publish_root();
  repo_.timestamp.version = 2;
  repo_.publish_timestamp();
  expect_rejected(Errc::rollback, "version 2 is lower than trusted version 1000", {"root.json"});
}

// --- delegations ------------------------------------------------------------------------------

class TufDelegationTest : public TufClientTest {
 protected:
  static DelegatedRole role(const std::string& name, std::vector<std::string> paths,
                            bool terminating = false) {
    DelegatedRole r;
    r.name = name;
    r.threshold = 1;
    r.terminating = terminating;
    r.paths = std::move(paths);
    return r;
  }
};

TEST_F(TufDelegationTest, FindsTargetInMatchingDelegatedRole) {
  repo_.add_delegation("targets", role("vision", {"vision/*"}));
  repo_.add_delegation("targets", role("audio", {"audio/*"}));
  repo_.add_target("vision", "vision/resnet.bin", "resnet");
  repo_.add_target("audio", "audio/whisper.bin", "whisper");
  repo_.bump_all();
  auto client = make_client(config());
  auto info = client->get_target("audio/whisper.bin");
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->length, 7u);
  // Only the matching role was fetched, and it is stored under its role name.
  EXPECT_EQ(server_.count("/metadata/1.audio.json"), 1);
  EXPECT_EQ(server_.count("/metadata/1.vision.json"), 0);
  EXPECT_TRUE(stdfs::exists(meta_dir() / "audio.json"));
  ASSERT_TRUE(
      client->download_target(server_.targets_url(), "audio/whisper.bin", *info, tmp_ / "w.bin"));
  EXPECT_EQ(test::read_file(tmp_ / "w.bin"), "whisper");
}

TEST_F(TufDelegationTest, StoredDelegatedRoleIsReusedByTheNextClient) {
  repo_.add_delegation("targets", role("vision", {"vision/*"}));
  repo_.add_target("vision", "vision/r.bin", "r");
  repo_.bump_all();
  ASSERT_TRUE(make_client(config())->get_target("vision/r.bin"));
  ASSERT_TRUE(make_client(config())->get_target("vision/r.bin"));
  EXPECT_EQ(server_.count("/metadata/1.vision.json"), 1);
  // A new version of the role is fetched once the snapshot names it.
  repo_.targets["vision"].version = 2;
  repo_.bump_all();
  ASSERT_TRUE(make_client(config())->get_target("vision/r.bin"));
  EXPECT_EQ(server_.count("/metadata/2.vision.json"), 1);
  EXPECT_EQ(trusted_version("vision.json"), 2u);
}

TEST_F(TufDelegationTest, NonMatchingPatternsAreNotSearched) {
  repo_.add_delegation("targets", role("vision", {"vision/*"}));
  repo_.add_target("vision", "audio/x.bin", "x");  // listed, but outside the delegated paths
  repo_.bump_all();
  auto client = make_client(config());
  auto info = client->get_target("audio/x.bin");
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::not_found);
  EXPECT_EQ(server_.count("/metadata/1.vision.json"), 0);
  // '*' does not cross '/'.
  EXPECT_FALSE(client->get_target("vision/sub/y.bin"));
  EXPECT_EQ(server_.count("/metadata/1.vision.json"), 0);
}

TEST_F(TufDelegationTest, TerminatingRoleStopsTheSearch) {
  repo_.add_delegation("targets", role("first", {"m/*"}, /*terminating=*/true));
  repo_.add_delegation("targets", role("second", {"m/*"}));
  repo_.add_target("second", "m/a.bin", "a");
  repo_.bump_all();
  auto client = make_client(config());
  auto info = client->get_target("m/a.bin");
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::not_found);
  EXPECT_EQ(server_.count("/metadata/1.first.json"), 1);
  EXPECT_EQ(server_.count("/metadata/1.second.json"), 0);
}

TEST_F(TufDelegationTest, NonTerminatingRoleBacktracks) {
  repo_.add_delegation("targets", role("first", {"m/*"}));
  repo_.add_delegation("targets", role("second", {"m/*"}));
  repo_.add_target("second", "m/a.bin", "a");
  repo_.bump_all();
  auto client = make_client(config());
  auto info = client->get_target("m/a.bin");
  ASSERT_TRUE(info) << info.error().message();
  auto reqs = server_.requests();
  ASSERT_GE(reqs.size(), 2u);
  EXPECT_EQ(reqs[reqs.size() - 2], "/metadata/1.first.json");
  EXPECT_EQ(reqs.back(), "/metadata/1.second.json");
}

TEST_F(TufDelegationTest, NestedDelegationIsSearchedDepthFirst) {
  repo_.add_delegation("targets", role("a", {"*"}));
  repo_.add_delegation("targets", role("b", {"*"}));
  repo_.add_delegation("a", role("a-child", {"*"}));
  repo_.add_target("a-child", "t", "deep");
  repo_.add_target("b", "t", "shallow but later");
  repo_.bump_all();
  auto client = make_client(config());
  auto info = client->get_target("t");
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->length, 4u);  // a-child wins over b (preorder, depth-first)
  EXPECT_EQ(server_.count("/metadata/1.b.json"), 0);
}

TEST_F(TufDelegationTest, DelegatedRoleWithBadSignatureIsRejected) {
  repo_.add_delegation("targets", role("vision", {"vision/*"}));
  repo_.add_target("vision", "vision/r.bin", "r");
  repo_.meta_hashes = false;
  repo_.bump_all();
  // Signed by the top-level targets key instead of the delegated key.
  repo_.write_metadata("1.vision.json",
                       TufRepo::sign(to_json(repo_.targets["vision"]), repo_.signers("targets")));
  auto client = make_client(config());
  auto info = client->get_target("vision/r.bin");
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), Errc::verification);
  EXPECT_NE(info.error().message().find("1.vision.json"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(meta_dir() / "vision.json"));
}

TEST_F(TufDelegationTest, RoleReachedThroughTwoDelegatorsMeetsEachOnesKeys) {
  // A diamond: "a" and "b" both delegate "release", each with its own key. release.json is
  // signed only by a key "a" trusts, so it speaks for team-a/ through "a" but for nothing
  // through "b", even after this client has loaded it through "a".
  repo_.add_delegation("targets", role("a", {"team-a/*"}));
  repo_.add_delegation("targets", role("b", {"team-b/*"}));
  repo_.add_delegation("a", role("release", {"team-a/*"}));
  repo_.add_delegation("b", role("release", {"team-b/*"}));
  // add_key() authorised the second key in both delegations; the first key only in "a"'s.
  const auto& a_keys = repo_.targets.at("a").delegations->roles.at(0).keyids;
  const auto& b_keys = repo_.targets.at("b").delegations->roles.at(0).keyids;
  ASSERT_EQ(a_keys.size(), 2u);
  ASSERT_EQ(b_keys.size(), 1u);
  ASSERT_EQ(b_keys[0], a_keys[1]);
  repo_.keys.at("release").pop_back();  // release is signed by "a"'s own key only
  repo_.add_target("release", "team-a/app.bin", "trusted A");
  repo_.add_target("release", "team-b/app.bin", "malicious B");
  repo_.bump_all();

  auto client = make_client(config());
  auto a = client->get_target("team-a/app.bin");
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->length, 9u);
  auto b = client->get_target("team-b/app.bin");
  ASSERT_FALSE(b) << "a target signed for \"a\" was accepted through \"b\"";
  EXPECT_EQ(b.error().code(), Errc::verification);
  EXPECT_NE(b.error().message().find("delegated role 'release' (delegated by 'b')"),
            std::string::npos)
      << b.error().message();
  EXPECT_NE(b.error().message().find("release: 0 of 1 required signatures valid"),
            std::string::npos)
      << b.error().message();
  // Through "a" it still works in the same client, and a fresh client that starts with "b"
  // (release.json now stored) refuses it as well.
  EXPECT_TRUE(client->get_target("team-a/app.bin"));
  auto fresh = make_client(config())->get_target("team-b/app.bin");
  ASSERT_FALSE(fresh);
  EXPECT_EQ(fresh.error().code(), Errc::verification);
}

TEST_F(TufDelegationTest, RoleReachedThroughTwoDelegatorsTrustingItIsServed) {
  repo_.add_delegation("targets", role("a", {"team-a/*"}));
  repo_.add_delegation("targets", role("b", {"team-b/*"}));
  repo_.add_delegation("a", role("release", {"team-a/*"}));
  repo_.add_delegation("b", role("release", {"team-b/*"}));
  repo_.add_target("release", "team-a/app.bin", "A");
  repo_.add_target("release", "team-b/app.bin", "B");
  repo_.bump_all();  // release signed by both keys: valid through either delegator
  auto client = make_client(config());
  ASSERT_TRUE(client->get_target("team-a/app.bin"));
  auto b = client->get_target("team-b/app.bin");
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(server_.count("/metadata/1.release.json"), 1);  // fetched once, checked twice
}

TEST_F(TufDelegationTest, RoleNamesArePercentEncoded) {
  repo_.add_delegation("targets", role("../team a?", {"*"}));
  repo_.bump_all();
  auto client = make_client(config());
  EXPECT_FALSE(client->get_target("anything"));
  EXPECT_EQ(server_.count("/metadata/1.../team a?.json"), 1);
  EXPECT_TRUE(stdfs::exists(meta_dir() / "..%2Fteam%20a%3F.json"));
}

TEST_F(TufDelegationTest, MaxDelegationsBoundsTheSearch) {
  for (int i = 0; i < 5; ++i) repo_.add_delegation("targets", role("r" + std::to_string(i), {"*"}));
  repo_.add_target("r4", "t", "x");
  repo_.bump_all();
  auto c = config();
  c.max_delegations = 3;  // targets, r0, r1
  auto client = make_client(c);
  auto info = client->get_target("t");
  ASSERT_FALSE(info);
  EXPECT_NE(info.error().message().find("stopped after visiting 3 roles"), std::string::npos);
  EXPECT_EQ(server_.count("/metadata/1.r2.json"), 0);
}

// --- target download --------------------------------------------------------------------------

class TufDownloadTest : public TufClientTest {
 protected:
  void SetUp() override {
    repo_.add_target("targets", "m.bin", "0123456789");
    repo_.bump_all();
    client_ = make_client(config());
    auto info = client_->get_target("m.bin");
    ASSERT_TRUE(info) << info.error().message();
    info_ = *info;
    served_ = repo_.targets_dir() / (info_.hashes.at("sha256") + ".m.bin");
  }
  Status download() {
    return client_->download_target(server_.targets_url(), "m.bin", info_, dest_);
  }

  std::unique_ptr<Client> client_;
  TargetFile info_;
  stdfs::path served_;
  stdfs::path dest_ = tmp_ / "m.bin";
};

TEST_F(TufDownloadTest, HashMismatchIsRejected) {
  test::write_file(served_, "012345678X");
  auto st = download();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::verification);
  EXPECT_NE(st.error().message().find("hash mismatch"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(dest_));
}

TEST_F(TufDownloadTest, LongerTargetIsRejected) {
  test::write_file(served_, "0123456789 and more");
  auto st = download();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::too_large);
  EXPECT_NE(st.error().message().find("length mismatch"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(dest_));
}

TEST_F(TufDownloadTest, EndlessTargetIsCutOff) {
  server_.set_endless("/targets/" + served_.filename().string());
  auto st = download();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::too_large);
  EXPECT_FALSE(stdfs::exists(dest_));
}

TEST_F(TufDownloadTest, ShorterTargetIsRejected) {
  test::write_file(served_, "01234");
  auto st = download();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::verification);
  EXPECT_NE(st.error().message().find("received 5 bytes"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(dest_));
}

TEST_F(TufDownloadTest, FailedDownloadKeepsThePreviousFile) {
  test::write_file(dest_, "old content");
  test::write_file(served_, "012345678X");
  ASSERT_FALSE(download());
  EXPECT_EQ(test::read_file(dest_), "old content");
  // Nothing else (no temporary file) was left beside it.
  for (const auto& e : stdfs::directory_iterator(tmp_.path())) {
    EXPECT_TRUE(e.is_directory() || e.path() == dest_) << e.path();
  }
}

TEST_F(TufDownloadTest, PresentTargetIsNotFetchedAgain) {
  ASSERT_TRUE(download());
  const std::string path = "/targets/" + served_.filename().string();
  EXPECT_EQ(server_.count(path), 1);
  ASSERT_TRUE(download());
  EXPECT_EQ(server_.count(path), 1);
  // A local file with the wrong content is replaced.
  test::write_file(dest_, "0123456780");
  ASSERT_TRUE(download());
  EXPECT_EQ(server_.count(path), 2);
  EXPECT_EQ(test::read_file(dest_), "0123456789");
}

// --- the conformance binary -------------------------------------------------------------------

class TufClientBinaryTest : public TufClientTest {
 protected:
  test::RunResult run(std::vector<std::string> args) {
    args.insert(args.begin(), test::build_path("tests/mota-tuf-client").string());
    return test::run(args);
  }
};

TEST_F(TufClientBinaryTest, InitMakesNoRequest) {
  TempDir d;
  test::write_file(d / "root.json", repo_.root_bytes(1));
  auto r = run({"--metadata-dir", (d / "m").string(), "init", (d / "root.json").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(d / "m" / "root.json"), repo_.root_bytes(1));
  EXPECT_TRUE(server_.requests().empty());
  // A missing trusted root file: exit 1 with a message.
  r = run({"--metadata-dir", (d / "m2").string(), "init", (d / "none.json").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("none.json"), std::string::npos) << r.err;
}

TEST_F(TufClientBinaryTest, RefreshAndDownloadExitCodes) {
  repo_.add_target("targets", "dir/a-b.txt", "hello");
  repo_.bump_all();
  auto r = run(
      {"--metadata-url", server_.metadata_url(), "--metadata-dir", meta_dir().string(), "refresh"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(trusted_version("targets.json"), 2u);

  r = run({"--metadata-url", server_.metadata_url(), "--metadata-dir", meta_dir().string(),
           "--target-name", "dir/a-b.txt", "--target-dir", (tmp_ / "t").string(),
           "--target-base-url", server_.targets_url(), "download"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(tmp_ / "t" / "dir%2Fa-b.txt"), "hello");

  r = run({"--metadata-url", server_.metadata_url(), "--metadata-dir", meta_dir().string(),
           "--target-name", "missing", "--target-dir", (tmp_ / "t").string(), "--target-base-url",
           server_.targets_url(), "download"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'missing'"), std::string::npos) << r.err;
}

TEST_F(TufClientBinaryTest, FailuresExitWithOne) {
  repo_.timestamp.version = 5;
  repo_.publish_timestamp();
  ASSERT_TRUE(refresh());
  repo_.timestamp.version = 4;
  repo_.publish_timestamp();
  auto r = run(
      {"--metadata-url", server_.metadata_url(), "--metadata-dir", meta_dir().string(), "refresh"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("lower than trusted version 5"), std::string::npos) << r.err;
  // Usage errors are 1 too, never CLI11's own codes.
  EXPECT_EQ(run({"--bogus"}).exit_code, 1);
  EXPECT_EQ(run({"--metadata-dir", meta_dir().string()}).exit_code, 1);
  EXPECT_EQ(run({"--metadata-dir", meta_dir().string(), "refresh"}).exit_code, 1);
  // Unreachable server.
  r = run({"--metadata-url", "http://127.0.0.1:" + std::to_string(test::free_port()),
           "--metadata-dir", meta_dir().string(), "refresh"});
  EXPECT_EQ(r.exit_code, 1);
}

}  // namespace
}  // namespace mota::tuf
