// Crash safety of `mota serve`'s report ingest, with the real binary on loopback: devices keep
// sending signed batches while the server is killed with SIGKILL. Every batch that was answered
// 200 must be in fleet.db afterwards, the database must be intact, and once the server is back
// the devices' resends (at-least-once delivery: everything from seq 1 again) are acknowledged and
// stored exactly once.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/http.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "protocol/identity.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

constexpr int kDevices = 4;
constexpr int kItems = 10;  // per batch

// Batch `b` (from 0) of a device: seqs b*kItems+1 .. (b+1)*kItems, installs and heartbeats.
std::string batch_body(const std::string& id, int b) {
  Json items = Json::array();
  for (int i = 1; i <= kItems; ++i) {
    const std::int64_t seq = std::int64_t(b) * kItems + i;
    Json body = i % 2 ? Json{{"model", "detector"},
                             {"from", "1.0." + std::to_string(b)},
                             {"to", "1.0." + std::to_string(b + 1)},
                             {"state", "installed"},
                             {"step", "commit"}}
                      : Json{{"agent_version", "0.1.0"},
                             {"models", Json::array({{{"model", "detector"},
                                                      {"version", "1.0." + std::to_string(b + 1)},
                                                      {"slot", b % 2 ? "b" : "a"},
                                                      {"committed", true}}})}};
    items.push_back({{"seq", seq},
                     {"kind", i % 2 ? "event" : "heartbeat"},
                     {"created_at", "2030-01-01T00:00:00Z"},
                     {"body", body}});
  }
  return Json{{"device", id}, {"batch", items}}.dump();
}

class FleetCrash : public ::testing::Test {
 protected:
  void SetUp() override {
    auto repo = manager::Repository::init(work_ / "fleet", manager::Settings{});
    ASSERT_TRUE(repo) << repo.error().message();
    for (int d = 0; d < kDevices; ++d) {
      const std::string id = "crash-" + std::to_string(d);
      auto who = protocol::DeviceIdentity::load_or_create(work_ / id, id);
      ASSERT_TRUE(who) << who.error().message();
      ids_.push_back(std::move(*who));
    }
  }

  void start_server() {
    port_ = test::free_port();
    server_ = std::make_unique<test::Process>(
        std::vector<std::string>{test::build_path("manager/mota").string(), "serve", "--repo",
                                 (work_ / "fleet").string(), "--listen",
                                 "127.0.0.1:" + std::to_string(port_), "--rollout-interval", "0s"},
        work_ / "serve.log");
    ASSERT_TRUE(test::wait_for_port(port_)) << test::read_file(work_ / "serve.log");
  }

  // Posts batch `b` of device `d`; returns the HTTP status (0 = no answer: connection refused or
  // reset, e.g. the server was killed mid-request).
  long post(http::Client& client, int d, int b) {
    const auto& who = ids_[std::size_t(d)];
    const std::string route = "/v1/devices/" + who.device_id() + "/events";
    const std::string body = batch_body(who.device_id(), b);
    auto headers = who.report_headers(route, body);
    EXPECT_TRUE(headers) << headers.error().message();
    if (!headers) return -1;
    (*headers)["Content-Type"] = "application/json";
    auto r = client.post("http://127.0.0.1:" + std::to_string(port_) + route, body, *headers);
    return r ? r->status : 0;
  }

  std::int64_t count(const std::string& sql) {
    auto db = manager::open_fleet_db(work_ / "fleet" / "fleet.db");
    EXPECT_TRUE(db) << db.error().message();
    if (!db) return -1;
    auto st = db->prepare(sql);
    EXPECT_TRUE(st) << st.error().message();
    if (!st) return -1;
    auto row = st->step();
    EXPECT_TRUE(row && *row == storage::Step::row) << sql;
    return st->column_int64(0);
  }

  test::TempDir work_;
  std::vector<protocol::DeviceIdentity> ids_;
  int port_ = 0;
  std::unique_ptr<test::Process> server_;
};

TEST_F(FleetCrash, AcknowledgedReportsSurviveKill9AndResendsAreStoredOnce) {
  start_server();
  // Each device sends its batches in order until the server stops answering; acked[d] counts
  // the batches answered 200, sent[d] those attempted.
  std::atomic<int> total_acked{0};
  std::vector<int> acked(kDevices, 0), sent(kDevices, 0);
  std::vector<std::thread> senders;
  for (int d = 0; d < kDevices; ++d) {
    senders.emplace_back([&, d] {
      auto client = http::make_http_client();
      for (int b = 0; b < 100000; ++b) {
        sent[std::size_t(d)] = b + 1;
        const long status = post(*client, d, b);
        if (status != 200) {
          EXPECT_EQ(status, 0) << "only a dead server may fail a valid batch";
          return;
        }
        acked[std::size_t(d)] = b + 1;
        ++total_acked;
      }
    });
  }
  // Kill while every sender is mid-stream.
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (total_acked < 200 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_GE(total_acked.load(), 200) << test::read_file(work_ / "serve.log");
  server_->kill(SIGKILL);
  server_->wait();
  for (auto& t : senders) t.join();

  // Intact, and every acknowledged batch is there: for each device, at least its acknowledged
  // seqs and at most what it sent (a batch committed just before the kill may have lost only its
  // answer).
  auto db = manager::open_fleet_db(work_ / "fleet" / "fleet.db");
  ASSERT_TRUE(db) << db.error().message();
  {
    auto st = db->prepare("PRAGMA integrity_check");
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->step());
    EXPECT_EQ(st->column_text(0), "ok");
  }
  for (int d = 0; d < kDevices; ++d) {
    const std::string id = ids_[std::size_t(d)].device_id();
    // The kill cut each sender off: its last batch got no answer.
    EXPECT_EQ(sent[std::size_t(d)], acked[std::size_t(d)] + 1) << id;
    const std::int64_t stored = count("SELECT COUNT(*) FROM events WHERE device = '" + id + "'");
    EXPECT_GE(stored, std::int64_t(acked[std::size_t(d)]) * kItems) << id;
    EXPECT_LE(stored, std::int64_t(sent[std::size_t(d)]) * kItems) << id;
    EXPECT_EQ(stored % kItems, 0) << id << ": a batch was stored in part";
    EXPECT_EQ(count("SELECT last_seq FROM devices WHERE id = '" + id + "'"), stored) << id;
  }

  // Back up: each device sends everything again from its first batch, as an agent whose answers
  // were lost does, plus one new batch. All acknowledged; every seq stored exactly once.
  start_server();
  auto client = http::make_http_client();
  for (int d = 0; d < kDevices; ++d) {
    for (int b = 0; b <= sent[std::size_t(d)]; ++b) {
      ASSERT_EQ(post(*client, d, b), 200) << d << " " << b;
    }
    const std::string id = ids_[std::size_t(d)].device_id();
    EXPECT_EQ(count("SELECT COUNT(*) FROM events WHERE device = '" + id + "'"),
              std::int64_t(sent[std::size_t(d)] + 1) * kItems)
        << id;
    EXPECT_EQ(count("SELECT COUNT(DISTINCT seq) FROM events WHERE device = '" + id + "'"),
              std::int64_t(sent[std::size_t(d)] + 1) * kItems)
        << id;
  }
  // The views agree with the last batch each device sent.
  Json rows = Json::parse(test::run({test::build_path("manager/mota").string(), "devices", "--json",
                                     "--repo", (work_ / "fleet").string()})
                              .out,
                          nullptr, false);
  ASSERT_TRUE(rows.is_array()) << rows;
  ASSERT_EQ(rows.size(), std::size_t(kDevices));
  for (const auto& row : rows) {
    const std::string id = row["device"];
    const int d = id.back() - '0';
    EXPECT_EQ(row["version"], "1.0." + std::to_string(sent[std::size_t(d)] + 1)) << row;
  }
}

}  // namespace
}  // namespace mota
