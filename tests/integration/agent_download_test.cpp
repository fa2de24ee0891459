// agent/download: resumable, verifying downloads against real loopback servers: the repository's
// own HTTP server for well-behaved serving, tests/support/fault_server for scripted misbehaviour.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "agent/download.hpp"
#include "common/http.hpp"
#include "manifest/crypto.hpp"
#include "net/http_server.hpp"
#include "tests/support/fault_server.hpp"
#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::milliseconds;

std::string make_content(std::size_t n, std::uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// Tiny delays keep the retry tests fast.
RetryPolicy fast_policy(unsigned attempts = 5) {
  RetryPolicy p;
  p.max_attempts = attempts;
  p.base_delay = milliseconds(1);
  p.max_delay = milliseconds(5);
  return p;
}

class DownloadTest : public ::testing::Test {
 protected:
  DownloadTest() : content_(make_content((3u << 20) + 12345)) {}

  DownloadSpec spec(const std::string& url) const {
    DownloadSpec s;
    s.url = url;
    s.length = content_.size();
    s.sha256 = crypto::sha256_hex(content_);
    s.partial = tmp_ / "state" / "downloads" / (s.sha256 + ".part");
    return s;
  }

  // Serves `files` (name -> content) from the repository's HTTP server; returns the base URL.
  std::string serve_static(const std::map<std::string, std::string>& files) {
    for (const auto& [name, data] : files) test::write_file(tmp_ / "www" / name, data);
    net::ServerConfig cfg;
    cfg.static_root = tmp_ / "www";
    server_ = net::make_http_server(cfg);
    auto port = server_->start();
    EXPECT_TRUE(port) << port.error().message();
    return "http://127.0.0.1:" + std::to_string(port ? *port : 0);
  }

  std::unique_ptr<http::Client> client() {
    http::ClientConfig cfg;
    cfg.connect_timeout = milliseconds(2000);
    cfg.min_rate_window = milliseconds(5000);
    return http::make_http_client(cfg);
  }

  test::TempDir tmp_;
  std::string content_;
  std::unique_ptr<net::HttpServer> server_;
};

TEST_F(DownloadTest, FreshDownloadIsCompleteAndVerified) {
  auto base = serve_static({{"model.bin", content_}});
  auto s = spec(base + "/model.bin");
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
  auto c = client();
  auto r = download(*c, s, fast_policy(), nullptr, [&](std::uint64_t done, std::uint64_t total) {
    calls.emplace_back(done, total);
  });
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->bytes_fetched, content_.size());
  EXPECT_FALSE(r->resumed);
  EXPECT_EQ(r->attempts, 1u);
  EXPECT_EQ(test::read_file(s.partial), content_);
  ASSERT_GE(calls.size(), 3u);  // every MiB and at the end
  for (std::size_t i = 1; i < calls.size(); ++i) EXPECT_GE(calls[i].first, calls[i - 1].first);
  EXPECT_EQ(calls.back().first, content_.size());
  EXPECT_EQ(calls.back().second, content_.size());
}

TEST_F(DownloadTest, ResumesAfterADropWithoutRefetching) {
  std::mt19937 rng(std::random_device{}());
  std::uint64_t drop = std::uniform_int_distribution<std::uint64_t>(1, content_.size() - 1)(rng);
  SCOPED_TRACE("dropped after " + std::to_string(drop) + " bytes");
  test::FaultConfig fc;
  fc.body = content_;
  fc.drop_after = {drop};
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->attempts, 2u);
  EXPECT_EQ(r->bytes_fetched, content_.size());
  EXPECT_EQ(test::read_file(s.partial), content_);
  // Every byte went over the wire once: the second request continued where the first stopped.
  EXPECT_EQ(srv.body_bytes_sent(), content_.size());
  auto ranges = srv.ranges();
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], "");
  EXPECT_EQ(ranges[1], "bytes=" + std::to_string(drop) + "-");
}

TEST_F(DownloadTest, SeveralDropsInOneCall) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.drop_after = {100, 1 << 20, 1};
  test::FaultServer srv(fc);
  auto c = client();
  auto s = spec(srv.url());
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->attempts, 4u);
  EXPECT_EQ(srv.body_bytes_sent(), content_.size());
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, ResumesAPartialLeftByAnEarlierCall) {
  test::FaultConfig fc;
  fc.body = content_;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  const std::size_t have = (1u << 20) + 7;
  test::write_file(s.partial, content_.substr(0, have));
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->resumed);
  EXPECT_EQ(r->attempts, 1u);
  EXPECT_EQ(r->bytes_fetched, content_.size() - have);
  EXPECT_EQ(srv.body_bytes_sent(), content_.size() - have);
  EXPECT_EQ(srv.ranges(), std::vector<std::string>{"bytes=" + std::to_string(have) + "-"});
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, ResumesAgainstTheRepositoryServer) {
  auto base = serve_static({{"model.bin", content_}});
  auto s = spec(base + "/model.bin");
  test::write_file(s.partial, content_.substr(0, 999));
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->resumed);
  EXPECT_EQ(r->bytes_fetched, content_.size() - 999);
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, ServerIgnoringRangeRestartsFromZero) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.ignore_range = true;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  // Garbage that would survive if the 200 body were appended instead of replacing the file.
  test::write_file(s.partial, std::string(5000, 'x'));
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->resumed);
  EXPECT_EQ(r->bytes_fetched, content_.size());
  EXPECT_EQ(srv.ranges(), std::vector<std::string>{"bytes=5000-"});
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, ServerIgnoringRangeAfterADropStillEndsCorrect) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.drop_after = {777777};
  fc.ignore_range = true;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->attempts, 2u);
  EXPECT_EQ(srv.body_bytes_sent(), 777777 + content_.size());
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, EndlessDataIsTooLargeAndThePartialIsRemoved) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.endless = true;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large) << r.error().message();
  EXPECT_TRUE(contains(r.error().message(), std::to_string(content_.size())))
      << r.error().message();
  EXPECT_FALSE(stdfs::exists(s.partial));
  EXPECT_EQ(srv.requests(), 1u);  // not retried
}

TEST_F(DownloadTest, EndlessRangeAnswerIsBoundedByTheRemainingSignedLength) {
  // 206 without Content-Length that never ends: cut off once it exceeds length - offset, even
  // though the whole would still fit in `length`.
  test::FaultConfig fc;
  fc.body = content_;
  fc.endless = true;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  test::write_file(s.partial, content_.substr(0, 2u << 20));
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large) << r.error().message();
  EXPECT_TRUE(contains(r.error().message(), "more than the signed length")) << r.error().message();
  EXPECT_FALSE(stdfs::exists(s.partial));
}

TEST_F(DownloadTest, WrongContentFailsVerificationAndIsRemoved) {
  std::string other = make_content(content_.size(), 2);
  auto base = serve_static({{"model.bin", other}});
  auto s = spec(base + "/model.bin");
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_TRUE(contains(r.error().message(), "sha256 mismatch: got " + crypto::sha256_hex(other) +
                                                ", signed " + s.sha256))
      << r.error().message();
  EXPECT_FALSE(stdfs::exists(s.partial));
}

TEST_F(DownloadTest, ShortContentFailsVerificationAndIsRemoved) {
  auto base = serve_static({{"model.bin", content_.substr(0, 1000)}});
  auto s = spec(base + "/model.bin");
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_TRUE(contains(r.error().message(), "length mismatch")) << r.error().message();
  EXPECT_FALSE(stdfs::exists(s.partial));
}

TEST_F(DownloadTest, NotFoundIsNotRetriedAndLeavesNothing) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.fail_status = 404;
  fc.fail_times = 100;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::http);
  EXPECT_EQ(r.error().http_status(), 404);
  EXPECT_TRUE(contains(r.error().message(), "404")) << r.error().message();
  EXPECT_EQ(srv.requests(), 1u);
  EXPECT_FALSE(stdfs::exists(s.partial));
}

TEST_F(DownloadTest, NotFoundKeepsAnEarlierPartial) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.fail_status = 404;
  fc.fail_times = 100;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  test::write_file(s.partial, content_.substr(0, 4096));
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status(), 404);
  EXPECT_EQ(test::read_file(s.partial), content_.substr(0, 4096));
}

TEST_F(DownloadTest, ServiceUnavailableTwiceThenSucceeds) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.fail_status = 503;
  fc.fail_times = 2;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->attempts, 3u);
  EXPECT_EQ(srv.requests(), 3u);
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, GivesUpAfterMaxAttempts) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.fail_status = 500;
  fc.fail_times = 100;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto c = client();
  auto r = download(*c, s, fast_policy(3));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::http);
  EXPECT_EQ(r.error().http_status(), 500);
  EXPECT_TRUE(contains(r.error().message(), "giving up after 3 attempts")) << r.error().message();
  EXPECT_EQ(srv.requests(), 3u);
}

TEST_F(DownloadTest, ConnectionRefusedIsRetriedThenReported) {
  int port = test::free_port();  // nothing listens there
  auto s = spec("http://127.0.0.1:" + std::to_string(port) + "/x");
  auto c = client();
  auto r = download(*c, s, fast_policy(2));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::network);
  EXPECT_TRUE(contains(r.error().message(), "giving up after 2 attempts")) << r.error().message();
}

TEST_F(DownloadTest, CancelMidTransferKeepsThePartialForAResume) {
  // About 3 MB/s: the transfer is still running when cancelled.
  test::FaultConfig fc;
  fc.body = content_;
  fc.chunk_size = 16 * 1024;
  fc.chunk_delay = milliseconds(5);
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  std::atomic<bool> cancel{false};
  std::chrono::steady_clock::time_point cancelled_at;
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(400));
    cancelled_at = std::chrono::steady_clock::now();
    cancel = true;
  });
  auto c = client();
  auto r = download(*c, s, fast_policy(), &cancel);
  auto returned_at = std::chrono::steady_clock::now();
  canceller.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::cancelled) << r.error().message();
  EXPECT_LT(returned_at - cancelled_at, milliseconds(1000));
  ASSERT_TRUE(stdfs::exists(s.partial));
  const std::uint64_t kept = stdfs::file_size(s.partial);
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, content_.size());
  EXPECT_EQ(test::read_file(s.partial), content_.substr(0, kept));

  cancel = false;
  auto c2 = client();  // as after a restart of the agent
  auto r2 = download(*c2, s, fast_policy(), &cancel);
  ASSERT_TRUE(r2) << r2.error().message();
  EXPECT_TRUE(r2->resumed);
  EXPECT_EQ(r2->bytes_fetched, content_.size() - kept);
  EXPECT_EQ(srv.ranges().back(), "bytes=" + std::to_string(kept) + "-");
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, CancelDuringBackoff) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.fail_status = 503;
  fc.fail_times = 100;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  RetryPolicy slow;
  slow.base_delay = milliseconds(20000);
  slow.max_delay = milliseconds(20000);
  std::atomic<bool> cancel{false};
  std::thread canceller([&] {
    while (srv.requests() == 0) std::this_thread::sleep_for(milliseconds(5));
    std::this_thread::sleep_for(milliseconds(50));
    cancel = true;
  });
  auto started = std::chrono::steady_clock::now();
  auto c = client();
  auto r = download(*c, s, slow, &cancel);
  canceller.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::cancelled) << r.error().message();
  // Unless the jitter drew a delay under ~50 ms (then a 2nd request happened), we were asleep.
  EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds(1500));
}

TEST_F(DownloadTest, CancelWhileTheServerIsSilent) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.stall_after = 100000;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  std::atomic<bool> cancel{false};
  std::chrono::steady_clock::time_point cancelled_at;
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(300));
    cancelled_at = std::chrono::steady_clock::now();
    cancel = true;
  });
  auto c = client();
  auto r = download(*c, s, fast_policy(), &cancel);
  auto returned_at = std::chrono::steady_clock::now();
  canceller.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::cancelled) << r.error().message();
  EXPECT_LT(returned_at - cancelled_at, milliseconds(1000));
  // What arrived before the silence was saved.
  EXPECT_EQ(test::read_file(s.partial), content_.substr(0, 100000));
}

TEST_F(DownloadTest, FlakyLinkThatKeepsProgressingIsNotAbandoned) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.drop_after = {1100000, 1100000};
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto c = client();
  auto r = download(*c, s, fast_policy(2));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->attempts, 3u);
  EXPECT_EQ(srv.body_bytes_sent(), content_.size());
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, DropsWithoutRealProgressExhaustTheBudget) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.drop_after = {10, 10, 10, 10};
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto c = client();
  auto r = download(*c, s, fast_policy(3));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::network);
  EXPECT_TRUE(contains(r.error().message(), "giving up after 3 attempts")) << r.error().message();
  EXPECT_EQ(srv.requests(), 3u);
  // The 30 bytes received are kept for the next call.
  EXPECT_EQ(test::read_file(s.partial), content_.substr(0, 30));
}

TEST_F(DownloadTest, OverAnnouncedRangeAnswerIsTooLarge) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.announce_extra = 10;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  test::write_file(s.partial, content_.substr(0, 1 << 20));
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large) << r.error().message();
  EXPECT_TRUE(contains(r.error().message(), "announced")) << r.error().message();
  EXPECT_FALSE(stdfs::exists(s.partial));
  EXPECT_EQ(srv.requests(), 1u);
}

TEST_F(DownloadTest, OverAnnouncedFullAnswerIsTooLarge) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.announce_extra = 1;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large) << r.error().message();
  EXPECT_FALSE(stdfs::exists(s.partial));
}

TEST_F(DownloadTest, AnswerForAnotherRangeIsNotSplicedIn) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.content_range_skew = 5;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  test::write_file(s.partial, content_.substr(0, 1000));
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::http) << r.error().message();
  EXPECT_TRUE(contains(r.error().message(), "Content-Range")) << r.error().message();
  EXPECT_EQ(srv.requests(), 1u);
  EXPECT_EQ(test::read_file(s.partial), content_.substr(0, 1000));
}

// The child half of KillNineMidDownloadThenResume, which starts this binary to run it (disabled
// so that it never runs on its own).
TEST(DownloadChild, DISABLED_DownloadsUntilKilled) {
  const char* url = std::getenv("MOTA_DOWNLOAD_CHILD_URL");
  ASSERT_NE(url, nullptr) << "only run by KillNineMidDownloadThenResume";
  DownloadSpec s;
  s.url = url;
  s.length = std::stoull(std::getenv("MOTA_DOWNLOAD_CHILD_LENGTH"));
  s.sha256 = std::getenv("MOTA_DOWNLOAD_CHILD_SHA256");
  s.partial = std::getenv("MOTA_DOWNLOAD_CHILD_PARTIAL");
  auto c = http::make_http_client();
  auto r = download(*c, s, fast_policy());
  EXPECT_TRUE(r) << r.error().message();
}

TEST_F(DownloadTest, KillNineMidDownloadThenResume) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.chunk_size = 16 * 1024;
  fc.chunk_delay = milliseconds(4);  // ~4 MB/s: slow enough to catch mid-way
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  auto self = stdfs::read_symlink("/proc/self/exe");
  test::Process child({self.string(), "--gtest_also_run_disabled_tests",
                       "--gtest_filter=DownloadChild.DISABLED_DownloadsUntilKilled"},
                      tmp_ / "child.log",
                      {{"MOTA_DOWNLOAD_CHILD_URL", s.url},
                       {"MOTA_DOWNLOAD_CHILD_LENGTH", std::to_string(s.length)},
                       {"MOTA_DOWNLOAD_CHILD_SHA256", s.sha256},
                       {"MOTA_DOWNLOAD_CHILD_PARTIAL", s.partial.string()}});
  // Kill once at least 2 MiB reached the file (written in 1 MiB pieces).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::error_code ec;
  while (std::chrono::steady_clock::now() < deadline &&
         !(stdfs::exists(s.partial, ec) && stdfs::file_size(s.partial, ec) >= (2u << 20))) {
    std::this_thread::sleep_for(milliseconds(2));
  }
  child.kill(SIGKILL);
  child.wait();
  ASSERT_TRUE(stdfs::exists(s.partial)) << test::read_file(tmp_ / "child.log");
  const std::uint64_t kept = stdfs::file_size(s.partial);
  ASSERT_GE(kept, 2u << 20);
  ASSERT_LT(kept, content_.size()) << "the child finished before it was killed";

  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->resumed);
  EXPECT_EQ(r->bytes_fetched, content_.size() - kept);
  EXPECT_EQ(srv.ranges().back(), "bytes=" + std::to_string(kept) + "-");
  EXPECT_EQ(test::read_file(s.partial), content_);
  // Lost to the kill: at most the 1 MiB write buffer plus what was in flight, never a refetch.
  EXPECT_LE(srv.body_bytes_sent(), content_.size() + (1u << 20) + (256u << 10));
}

using test::peak_rss_kib;
using test::reset_peak_rss;

TEST_F(DownloadTest, MemoryStaysConstantForALargeFile) {
  // The body lives in this process (the server's copy), so it is resident before the reset; the
  // download itself must add far less than the file's size.
  std::string big(48u << 20, '\0');
  std::mt19937_64 rng(7);
  for (std::size_t i = 0; i + 8 <= big.size(); i += 8) {
    std::uint64_t v = rng();
    std::memcpy(big.data() + i, &v, 8);
  }
  test::FaultConfig fc;
  fc.body = big;
  test::FaultServer srv(fc);
  DownloadSpec s;
  s.url = srv.url();
  s.length = big.size();
  s.sha256 = crypto::sha256_hex(big);
  s.partial = tmp_ / "big.part";
  auto c = client();
  reset_peak_rss();
  long before = peak_rss_kib();
  auto r = download(*c, s, fast_policy());
  long grown_kib = peak_rss_kib() - before;
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(stdfs::file_size(s.partial), big.size());
  EXPECT_LT(grown_kib, 16 * 1024) << "peak RSS grew by " << grown_kib << " KiB";
}

TEST_F(DownloadTest, PartialLongerThanTheSignedLengthIsDiscarded) {
  test::FaultConfig fc;
  fc.body = content_;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  test::write_file(s.partial, content_ + "trailing junk");
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->resumed);
  EXPECT_EQ(srv.ranges(), std::vector<std::string>{""});  // fetched from 0
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, CompletePartialIsVerifiedWithoutARequest) {
  test::FaultConfig fc;
  fc.body = content_;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  test::write_file(s.partial, content_);
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->attempts, 0u);
  EXPECT_EQ(r->bytes_fetched, 0u);
  EXPECT_EQ(srv.requests(), 0u);
}

TEST_F(DownloadTest, CompletePartialWithWrongContentIsDownloadedAgain) {
  test::FaultConfig fc;
  fc.body = content_;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  std::string bad = content_;
  bad[12345] ^= 1;
  test::write_file(s.partial, bad);
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->resumed);
  EXPECT_EQ(srv.ranges(), std::vector<std::string>{""});
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, CorruptPrefixIsCaughtAtTheEnd) {
  // A resumed partial whose old bytes were damaged on disk: the final hash covers them.
  test::FaultConfig fc;
  fc.body = content_;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  std::string prefix = content_.substr(0, 100000);
  prefix[5] ^= 0x40;
  test::write_file(s.partial, prefix);
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_TRUE(contains(r.error().message(), "sha256 mismatch")) << r.error().message();
  EXPECT_FALSE(stdfs::exists(s.partial));
  // The next call starts from scratch and succeeds.
  auto r2 = download(*c, s, fast_policy());
  ASSERT_TRUE(r2) << r2.error().message();
  EXPECT_EQ(test::read_file(s.partial), content_);
}

TEST_F(DownloadTest, NoSpaceIsReportedBeforeAnyRequest) {
  test::FaultConfig fc;
  fc.body = content_;
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  s.length = 1ull << 60;  // 1 EiB
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::no_space);
  EXPECT_TRUE(contains(r.error().message(), "need 1.0 EiB in " + s.partial.parent_path().string()))
      << r.error().message();
  EXPECT_EQ(srv.requests(), 0u);
  EXPECT_FALSE(stdfs::exists(s.partial));
}

TEST_F(DownloadTest, RejectsAMalformedDigest) {
  auto s = spec("http://127.0.0.1:1/x");
  s.sha256 = "abc";
  auto c = client();
  auto r = download(*c, s, fast_policy());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_TRUE(contains(r.error().message(), "'abc'")) << r.error().message();
  EXPECT_FALSE(stdfs::exists(s.partial.parent_path()));
}

// A server that is slow throughout: the deadline stops the whole call, keeps what arrived, and a
// later call continues from there.
TEST_F(DownloadTest, DeadlineStopsTheWholeCallAndKeepsThePartial) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.chunk_size = 16 * 1024;
  fc.chunk_delay = milliseconds(50);  // ~320 KB/s: 3 MiB takes ~10 s
  test::FaultServer srv(fc);
  auto s = spec(srv.url());
  s.deadline = milliseconds(1000);
  auto c = client();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = download(*c, s, fast_policy());
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::network);
  EXPECT_TRUE(contains(r.error().message(), "not complete within its deadline of 1 s: "))
      << r.error().message();
  EXPECT_TRUE(contains(r.error().message(), "(kept for the next attempt)")) << r.error().message();
  EXPECT_GE(took, milliseconds(900));
  EXPECT_LT(took, milliseconds(3000));
  ASSERT_TRUE(stdfs::exists(s.partial));
  const auto kept = stdfs::file_size(s.partial);
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, content_.size());
  EXPECT_EQ(test::read_file(s.partial), content_.substr(0, kept));

  test::FaultConfig fast;
  fast.body = content_;
  test::FaultServer fast_srv(fast);
  s.url = fast_srv.url();
  s.deadline = milliseconds(0);
  auto r2 = download(*c, s, fast_policy());
  ASSERT_TRUE(r2) << r2.error().message();
  EXPECT_TRUE(r2->resumed);
  EXPECT_EQ(r2->bytes_fetched, content_.size() - kept);
  EXPECT_EQ(test::read_file(s.partial), content_);
}

// Each request that drips below the client's minimum rate is cut off and retried from the
// partial; a deadline ends the retries.
TEST_F(DownloadTest, DrippingServerIsCutOffAndRetriedUntilTheDeadline) {
  test::FaultConfig fc;
  fc.body = content_;
  fc.chunk_size = 1;
  fc.chunk_delay = milliseconds(500);  // 2 bytes/s
  test::FaultServer srv(fc);
  http::ClientConfig cfg;
  cfg.min_rate = 1000;
  cfg.min_rate_window = milliseconds(1000);
  auto c = http::make_http_client(cfg);
  auto s = spec(srv.url());
  s.deadline = milliseconds(3500);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = download(*c, s, fast_policy(100));
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message(), "deadline of 3.5 s")) << r.error().message();
  EXPECT_LT(took, milliseconds(6000));
  EXPECT_GE(srv.requests(), 3u) << "each stalled request was cut off after ~1 s and retried";
}

TEST(DownloadDeadline, ScaledFromTheLengthAndCapped) {
  using std::chrono::minutes;
  const milliseconds allowance = minutes(10), cap = std::chrono::hours(24);
  EXPECT_EQ(download_deadline(0, 1000, allowance, cap), allowance);
  EXPECT_EQ(download_deadline(60'000'000, 1000, allowance, cap), allowance + minutes(1000));
  EXPECT_EQ(download_deadline(1ull << 40, 1000, allowance, cap), cap);
  EXPECT_EQ(download_deadline(~0ull, 1, allowance, cap), cap);
  EXPECT_EQ(download_deadline(5, 0, allowance, cap), cap);  // no minimum rate: the cap alone
}

TEST(SpaceNeed, CountsWhatIsWrittenLessWhatIsRemovedFirst) {
  SpaceNeed n;
  n.download = 4ull << 20;
  n.tree = 60ull << 20;
  EXPECT_EQ(n.margin(), (1ull << 20) + (1ull << 20));
  EXPECT_EQ(n.total(), (66ull << 20));
  n.freed = 50ull << 20;  // the slot being replaced
  EXPECT_EQ(n.total(), (16ull << 20));
  n.freed = 500ull << 20;  // more than everything: the margin is still needed
  EXPECT_EQ(n.total(), n.margin());
}

TEST(SpaceNeed, RefusalNamesEveryTerm) {
  test::TempDir tmp;
  SpaceNeed n;
  n.tree = 3ull << 60;
  n.download = 12 * 1024;
  n.freed = 16ull << 20;
  n.freed_what = "slot a";
  auto st = check_space(tmp.path(), n);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::no_space);
  const std::string& m = st.error().message();
  EXPECT_EQ(m.rfind("need 3.0 EiB in " + tmp.path().string() +
                        " (3.0 EiB to unpack + 12 KiB to download + 48 PiB margin - 16 MiB of "
                        "slot a, removed first), ",
                    0),
            0u)
      << m;
  EXPECT_TRUE(m.ends_with(" free")) << m;
  SpaceNeed small;
  small.tree = 1000;
  EXPECT_TRUE(check_space(tmp.path(), small));
}

TEST(DiskUsage, AllocatedBytesOfATree) {
  test::TempDir tmp;
  EXPECT_EQ(disk_usage(tmp / "missing"), 0u);
  test::write_file(tmp / "slot" / "model.onnx", std::string(100'000, 'w'));
  test::write_file(tmp / "slot" / "labels" / "a.txt", "x");
  stdfs::create_symlink("/etc", tmp / "slot" / "link");  // not followed
  const auto usage = disk_usage(tmp / "slot");
  EXPECT_GE(usage, 100'000u);
  EXPECT_LT(usage, 1'000'000u);
  EXPECT_GE(disk_usage(tmp / "slot" / "model.onnx"), 100'000u);
}

TEST(CheckSpace, ClearMessage) {
  test::TempDir tmp;
  EXPECT_TRUE(check_space(tmp.path(), 1));
  auto st = check_space(tmp / "not" / "yet", 3ull << 60);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::no_space);
  const std::string& m = st.error().message();
  EXPECT_EQ(m.rfind("need 3.0 EiB in " + (tmp / "not" / "yet").string() + ", ", 0), 0u) << m;
  EXPECT_TRUE(m.ends_with(" free")) << m;
}

TEST(FormatBytes, BinaryUnits) {
  EXPECT_EQ(format_bytes(0), "0 bytes");
  EXPECT_EQ(format_bytes(1), "1 byte");
  EXPECT_EQ(format_bytes(1023), "1023 bytes");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(300ull << 20), "300 MiB");
  EXPECT_EQ(format_bytes((12ull << 30) / 10), "1.2 GiB");
}

TEST(Retryable, TransportAndServerSideErrorsOnly) {
  EXPECT_TRUE(retryable(Error(Errc::network, "reset")));
  for (int s : {500, 502, 503, 504, 408, 429})
    EXPECT_TRUE(retryable(Error(Errc::http, "x", s))) << s;
  for (int s : {0, 400, 401, 403, 404, 410, 416})
    EXPECT_FALSE(retryable(Error(Errc::http, "x", s))) << s;
  for (Errc e : {Errc::verification, Errc::too_large, Errc::cancelled, Errc::io, Errc::no_space})
    EXPECT_FALSE(retryable(Error(e, "x")));
  // The status survives added context.
  EXPECT_TRUE(retryable(Error(Errc::http, "x", 503).context("fetch")));
}

TEST(Backoff, FullJitterWithinTheExponentialCap) {
  RetryPolicy p;
  p.base_delay = milliseconds(100);
  p.max_delay = milliseconds(1000);
  for (unsigned n = 1; n <= 40; ++n) {
    auto cap = std::min<long long>(1000, 100ll << std::min(n - 1, 20u));
    bool varied = false;
    auto first = backoff_delay(p, n);
    for (int i = 0; i < 50; ++i) {
      auto d = backoff_delay(p, n);
      EXPECT_GE(d.count(), 0);
      EXPECT_LE(d.count(), cap) << "attempt " << n;
      varied = varied || d != first;
    }
    EXPECT_TRUE(varied) << "attempt " << n;  // jittered, not fixed
  }
  p.base_delay = milliseconds(0);
  EXPECT_EQ(backoff_delay(p, 3).count(), 0);
  p.base_delay = milliseconds(1);
  p.max_delay = milliseconds::max();
  for (unsigned n : {62u, 63u, 64u, 1000u}) EXPECT_GE(backoff_delay(p, n).count(), 0) << n;
}

}  // namespace
}  // namespace mota::agent
