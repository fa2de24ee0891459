#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <mutex>

#include "agent/report.hpp"
#include "common/version.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "manager/fleet/fleet_ingest.hpp"
#include "net/http_server.hpp"
#include "storage/sqlite.hpp"
#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

using protocol::DeviceIdentity;
using protocol::verify_report;

// A fleet server stand-in: POST /v1/devices/:id/events verifies the signature over the route the
// agent signed (rebuilt from the decoded id) and the body, then records the batch.
struct FleetServer {
  std::mutex mu;
  std::vector<Json> batches;            // accepted batch bodies, in arrival order
  std::vector<std::string> rejections;  // verification failures
  std::deque<int> forced;               // statuses to answer before accepting (500, 400, ...)
  std::string ack_mode = "last";        // "last": {"acked": last}, "empty": no body, "partial"
  std::unique_ptr<net::HttpServer> server;
  int port = 0;

  net::HttpReply handle(const net::HttpRequest& req) {
    std::map<std::string, std::string> headers;
    for (const char* name :
         {"X-Mota-Device", "X-Mota-Key", "X-Mota-Timestamp", "X-Mota-Signature"}) {
      std::string lower(name);
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      auto it = req.headers.find(lower);
      if (it != req.headers.end()) headers[name] = it->second;
    }
    const std::string route =
        "/v1/devices/" + http::percent_encode(req.path_params.at("id")) + "/events";
    std::lock_guard lock(mu);
    if (auto ok = verify_report(headers, route, req.body); !ok) {
      rejections.push_back(ok.error().message());
      return {401, "application/json", R"({"error":"bad signature"})", {}};
    }
    if (headers["X-Mota-Device"] != req.path_params.at("id"))
      return {403, "application/json", R"({"error":"device mismatch"})", {}};
    if (!forced.empty()) {
      int status = forced.front();
      forced.pop_front();
      return {status, "application/json", R"({"error":"forced"})", {}};
    }
    auto body = parse_json(req.body);
    if (!body) return {400, "text/plain", "not json", {}};
    batches.push_back(*body);
    const auto& batch = (*body)["batch"];
    std::int64_t last = batch.back()["seq"].get<std::int64_t>();
    if (ack_mode == "empty") return {200, "application/json", "", {}};
    if (ack_mode == "partial" && batch.size() > 1) {
      // Stores only the first item of each batch.
      std::int64_t first = batch.front()["seq"].get<std::int64_t>();
      batches.back()["batch"] = Json::array({batch.front()});
      return {200, "application/json", Json{{"acked", first}}.dump(), {}};
    }
    return {200, "application/json", Json{{"acked", last}}.dump(), {}};
  }

  void start(int want_port = 0) {
    net::ServerConfig cfg;
    cfg.port = want_port;
    cfg.threads = 2;
    server = net::make_http_server(cfg);
    server->route("POST", "/v1/devices/:id/events",
                  [this](const net::HttpRequest& r) { return handle(r); });
    auto p = server->start();
    ASSERT_TRUE(p) << p.error().message();
    port = *p;
  }

  // Every seq received, in order, over all accepted batches.
  std::vector<std::int64_t> seqs() {
    std::lock_guard lock(mu);
    std::vector<std::int64_t> out;
    for (const auto& b : batches)
      for (const auto& item : b["batch"]) out.push_back(item["seq"].get<std::int64_t>());
    return out;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

struct Device {
  test::TempDir tmp;
  std::optional<StateStore> store;
  std::optional<DeviceIdentity> id;
  std::unique_ptr<http::Client> client = http::make_http_client();

  explicit Device(const std::string& device_id = "dev-1") { open(device_id); }
  void open(const std::string& device_id = "dev-1") {
    store.reset();
    auto s = StateStore::open(tmp.path());
    ASSERT_TRUE(s) << s.error().message();
    store.emplace(std::move(*s));
    auto i = DeviceIdentity::load_or_create(tmp.path(), device_id);
    ASSERT_TRUE(i) << i.error().message();
    id.emplace(std::move(*i));
  }
  std::vector<std::int64_t> enqueue_events(int n, const std::string& tag = "e") {
    std::vector<std::int64_t> seqs;
    for (int i = 0; i < n; ++i) {
      auto r = store->enqueue(OutboxKind::event, Json{{"type", tag}, {"i", i}}.dump());
      EXPECT_TRUE(r) << r.error().message();
      if (r) seqs.push_back(r->seq);
    }
    return seqs;
  }
  std::size_t rows() {
    auto st = store->outbox_stats();
    EXPECT_TRUE(st) << st.error().message();
    return st ? st->rows : 0;
  }
};

TEST(Report, BatchArrivesInOrderOnceAndIsAcked) {
  FleetServer fleet;
  fleet.start();
  Device dev;
  auto seqs = dev.enqueue_events(5);
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url() + "/");
  auto r = rep.flush();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->batches, 1u);
  EXPECT_EQ(r->acked, 5u);
  EXPECT_EQ(r->acked_seq, seqs.back());
  EXPECT_EQ(r->remaining, 0u);
  EXPECT_EQ(fleet.seqs(), seqs);
  ASSERT_EQ(fleet.batches.size(), 1u);
  const auto& b = fleet.batches[0];
  EXPECT_EQ(b["device"], "dev-1");
  EXPECT_EQ(b["batch"][0]["kind"], "event");
  EXPECT_EQ(b["batch"][2]["body"], (Json{{"type", "e"}, {"i", 2}}));
  EXPECT_TRUE(fleet.rejections.empty());

  // Nothing left: a second flush sends nothing (exactly once per ack).
  auto again = rep.flush();
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->batches, 0u);
  EXPECT_EQ(fleet.seqs(), seqs);

  // New items continue after the acked ones.
  auto more = dev.enqueue_events(2);
  ASSERT_TRUE(rep.flush());
  seqs.insert(seqs.end(), more.begin(), more.end());
  EXPECT_EQ(fleet.seqs(), seqs);
}

TEST(Report, PlainOkAcksEverythingAndIdNeedingEncodingIsSigned) {
  FleetServer fleet;
  fleet.ack_mode = "empty";
  fleet.start();
  Device dev("dev 1+x");
  auto seqs = dev.enqueue_events(3);
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  EXPECT_EQ(rep.events_route(), "/v1/devices/dev%201%2Bx/events");
  auto r = rep.flush();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->acked, 3u);
  EXPECT_EQ(dev.rows(), 0u);
  EXPECT_EQ(fleet.seqs(), seqs);
  EXPECT_TRUE(fleet.rejections.empty());
}

TEST(Report, PartialAckResendsTheRestInOrder) {
  FleetServer fleet;
  fleet.ack_mode = "partial";
  fleet.start();
  Device dev;
  auto seqs = dev.enqueue_events(4);
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  auto r = rep.flush(10);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->batches, 4u);  // each POST stores one item
  EXPECT_EQ(r->acked, 4u);
  EXPECT_EQ(fleet.seqs(), seqs);
  EXPECT_EQ(dev.rows(), 0u);
}

TEST(Report, ServerDownKeepsItemsAndSendsThemLaterInOrder) {
  // Declared first so the client (and its kept-alive connection) goes before the server.
  FleetServer fleet;
  int port = test::free_port();
  Device dev;
  auto seqs = dev.enqueue_events(3);
  Reporter rep(*dev.store, *dev.client, *dev.id, "http://127.0.0.1:" + std::to_string(port));
  auto r = rep.flush();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::network) << r.error().message();
  EXPECT_NE(r.error().message().find("/v1/devices/dev-1/events"), std::string::npos)
      << r.error().message();
  EXPECT_FALSE(report_refused(r.error()));
  EXPECT_EQ(dev.rows(), 3u);

  auto later = dev.enqueue_events(2, "later");
  seqs.insert(seqs.end(), later.begin(), later.end());
  fleet.start(port);
  auto ok = rep.flush();
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(fleet.seqs(), seqs);
  EXPECT_EQ(dev.rows(), 0u);
}

TEST(Report, ServerErrorThenOkResendsWithoutLoss) {
  FleetServer fleet;
  fleet.forced = {500, 503};
  fleet.start();
  Device dev;
  auto seqs = dev.enqueue_events(3);
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  for (int status : {500, 503}) {
    auto r = rep.flush();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::http);
    EXPECT_EQ(r.error().http_status(), status);
    EXPECT_FALSE(report_refused(r.error()));
    EXPECT_NE(r.error().message().find("HTTP " + std::to_string(status)), std::string::npos)
        << r.error().message();
    EXPECT_EQ(dev.rows(), 3u);
  }
  auto ok = rep.flush();
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(fleet.seqs(), seqs);
  EXPECT_EQ(dev.rows(), 0u);
}

TEST(Report, RefusedBatchIsKeptAndErrorNamesTheStatus) {
  FleetServer fleet;
  fleet.forced = {400};
  fleet.start();
  Device dev;
  auto seqs = dev.enqueue_events(2);
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  auto r = rep.flush(10);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::http);
  EXPECT_EQ(r.error().http_status(), 400);
  EXPECT_TRUE(report_refused(r.error()));
  EXPECT_NE(r.error().message().find("HTTP 400"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("refused"), std::string::npos) << r.error().message();
  EXPECT_EQ(dev.rows(), 2u);
  EXPECT_TRUE(fleet.seqs().empty());
  // Stopped at the refusal: one request, not ten.
  EXPECT_TRUE(fleet.forced.empty());
  auto ok = rep.flush();
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(fleet.seqs(), seqs);
}

TEST(Report, AckBeyondTheBatchIsRejectedAndNothingIsDeleted) {
  net::ServerConfig cfg;
  auto server = net::make_http_server(cfg);
  server->route("POST", "/v1/devices/:id/events", [](const net::HttpRequest&) {
    return net::HttpReply{200, "application/json", R"({"acked": 1000})", {}};
  });
  auto port = server->start();
  ASSERT_TRUE(port) << port.error().message();
  Device dev;
  dev.enqueue_events(2);
  Reporter rep(*dev.store, *dev.client, *dev.id, "http://127.0.0.1:" + std::to_string(*port));
  auto r = rep.flush();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::parse);
  EXPECT_NE(r.error().message().find("acknowledged seq 1000"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(dev.rows(), 2u);
}

TEST(Report, MalformedAckKeepsItems) {
  net::ServerConfig cfg;
  auto server = net::make_http_server(cfg);
  server->route("POST", "/v1/devices/:id/events", [](const net::HttpRequest&) {
    return net::HttpReply{200, "application/json", R"({"acked": "lots"})", {}};
  });
  auto port = server->start();
  ASSERT_TRUE(port) << port.error().message();
  Device dev;
  dev.enqueue_events(2);
  Reporter rep(*dev.store, *dev.client, *dev.id, "http://127.0.0.1:" + std::to_string(*port));
  auto r = rep.flush();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::parse);
  EXPECT_NE(r.error().message().find("answer: field 'acked' must be an integer, got string"),
            std::string::npos)
      << r.error().message();
  EXPECT_EQ(dev.rows(), 2u);
}

TEST(Report, OkThatAcksNothingStopsInsteadOfSpinning) {
  std::atomic<int> requests{0};
  net::ServerConfig cfg;
  auto server = net::make_http_server(cfg);
  server->route("POST", "/v1/devices/:id/events", [&](const net::HttpRequest&) {
    ++requests;
    return net::HttpReply{200, "application/json", R"({"acked": 0})", {}};
  });
  auto port = server->start();
  ASSERT_TRUE(port) << port.error().message();
  Device dev;
  dev.enqueue_events(2);
  Reporter rep(*dev.store, *dev.client, *dev.id, "http://127.0.0.1:" + std::to_string(*port));
  auto r = rep.flush(10);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("acknowledged none"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(requests.load(), 1);
  EXPECT_EQ(dev.rows(), 2u);
}

TEST(Report, StoredBodyThatIsNotJsonDoesNotBlockTheOutbox) {
  FleetServer fleet;
  fleet.start();
  Device dev;
  auto bad = dev.store->enqueue(OutboxKind::event, "{not json");
  ASSERT_TRUE(bad) << bad.error().message();
  auto good = dev.enqueue_events(1);
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  auto r = rep.flush();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(fleet.seqs(), (std::vector<std::int64_t>{bad->seq, good[0]}));
  EXPECT_EQ(fleet.batches[0]["batch"][0]["body"], (Json{{"invalid_json", "{not json"}}));
  EXPECT_EQ(dev.rows(), 0u);
}

TEST(Report, TamperedBodyFailsTheServerSideSignatureCheck) {
  FleetServer fleet;
  fleet.start();
  Device dev;
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  const std::string route = rep.events_route();
  const std::string body =
      R"({"device":"dev-1","batch":[{"seq":1,"kind":"event","body":{"ok":true}}]})";
  auto headers = dev.id->report_headers(route, body);
  ASSERT_TRUE(headers) << headers.error().message();

  std::string tampered = body;
  tampered.replace(tampered.find("true"), 4, "fals");
  auto bad = dev.client->post(rep.events_url(), tampered, *headers);
  ASSERT_TRUE(bad) << bad.error().message();
  EXPECT_EQ(bad->status, 401);
  ASSERT_EQ(fleet.rejections.size(), 1u);
  EXPECT_NE(fleet.rejections[0].find("report from dev-1"), std::string::npos)
      << fleet.rejections[0];
  EXPECT_TRUE(fleet.batches.empty());

  // The same headers with the original body pass: only the body changed.
  auto good = dev.client->post(rep.events_url(), body, *headers);
  ASSERT_TRUE(good) << good.error().message();
  EXPECT_EQ(good->status, 200);
  EXPECT_EQ(fleet.batches.size(), 1u);
}

TEST(Report, SeqsSurviveStoreReopen) {
  FleetServer fleet;
  fleet.start();
  Device dev;
  auto first = dev.enqueue_events(3);
  {
    Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
    ASSERT_TRUE(rep.flush());
  }
  auto pending = dev.enqueue_events(2, "pending");
  dev.open();  // agent restart: new store connection, same identity
  auto after = dev.enqueue_events(1, "after");
  EXPECT_GT(pending.front(), first.back());
  EXPECT_GT(after.front(), pending.back());
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  ASSERT_TRUE(rep.flush());
  std::vector<std::int64_t> all = first;
  all.insert(all.end(), pending.begin(), pending.end());
  all.insert(all.end(), after.begin(), after.end());
  EXPECT_EQ(fleet.seqs(), all);
  EXPECT_TRUE(fleet.rejections.empty());
}

TEST(Report, LargeOutboxGoesInSeveralBatches) {
  FleetServer fleet;
  fleet.start();
  Device dev;
  auto seqs = dev.enqueue_events(250);
  ReporterOptions opt;
  opt.batch_items = 100;
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url(), opt);
  auto r = rep.flush(2);  // bounded: two batches per flush
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->batches, 2u);
  EXPECT_EQ(r->acked, 200u);
  EXPECT_EQ(r->remaining, 50u);
  auto rest = rep.flush(10);
  ASSERT_TRUE(rest) << rest.error().message();
  EXPECT_EQ(rest->batches, 1u);
  EXPECT_EQ(rest->remaining, 0u);
  EXPECT_EQ(fleet.seqs(), seqs);
  ASSERT_EQ(fleet.batches.size(), 3u);
  EXPECT_EQ(fleet.batches[0]["batch"].size(), 100u);
  EXPECT_EQ(fleet.batches[2]["batch"].size(), 50u);
}

TEST(Report, ByteBoundSplitsBatches) {
  FleetServer fleet;
  fleet.start();
  Device dev;
  std::vector<std::int64_t> seqs;
  for (int i = 0; i < 6; ++i) {
    auto r = dev.store->enqueue(OutboxKind::event, Json{{"pad", std::string(1000, 'x')}}.dump());
    ASSERT_TRUE(r) << r.error().message();
    seqs.push_back(r->seq);
  }
  ReporterOptions opt;
  opt.batch_bytes = 2500;  // two padded items per batch
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url(), opt);
  auto r = rep.flush(10);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->batches, 3u);
  EXPECT_EQ(fleet.seqs(), seqs);
}

TEST(Report, HeartbeatHasInventory) {
  Device dev;
  SlotState s;
  s.model = "resnet";
  s.slot = Slot::b;
  s.version = "1.2.0";
  s.tree_digest = std::string(64, 'a');
  s.status = SlotStatus::valid;
  ASSERT_TRUE(dev.store->put_slot(s));
  ASSERT_TRUE(dev.store->set_active("resnet", Slot::b, false));
  ASSERT_TRUE(dev.store->set_tuf_version("timestamp", 42));
  Reporter rep(*dev.store, *dev.client, *dev.id, "http://127.0.0.1:1");
  auto hb = rep.heartbeat();
  ASSERT_TRUE(hb) << hb.error().message();
  EXPECT_EQ((*hb)["agent_version"], kVersion);
  EXPECT_FALSE((*hb)["arch"].get<std::string>().empty());
  EXPECT_GT((*hb)["ram_total_bytes"].get<std::uint64_t>(), 0u);
  EXPECT_GT((*hb)["disk_free_bytes"].get<std::uint64_t>(), 0u);
  EXPECT_TRUE(parse_time((*hb)["time"].get<std::string>()));
  EXPECT_EQ((*hb)["tuf"]["timestamp"], 42);
  ASSERT_EQ((*hb)["models"].size(), 1u);
  EXPECT_EQ((*hb)["models"][0],
            (Json{{"model", "resnet"}, {"slot", "b"}, {"version", "1.2.0"}, {"committed", false}}));
  // Nothing blocked: an empty list (the server tells it from an older agent's absent one).
  EXPECT_EQ((*hb)["blocked"], Json::array());
  EXPECT_EQ((*hb)["labels"], Json::object()) << "none given";
  ASSERT_TRUE(dev.store->block("resnet", "1.3.0", "install resnet 1.3.0: probe: output: wrong"));
  hb = rep.heartbeat();
  ASSERT_TRUE(hb) << hb.error().message();
  ASSERT_EQ((*hb)["blocked"].size(), 1u);
  EXPECT_EQ((*hb)["blocked"][0]["model"], "resnet");
  EXPECT_EQ((*hb)["blocked"][0]["version"], "1.3.0");
  EXPECT_EQ((*hb)["blocked"][0]["reason"], "install resnet 1.3.0: probe: output: wrong");
  EXPECT_TRUE(parse_time((*hb)["blocked"][0]["since"].get<std::string>()));

  ReporterOptions with_labels;
  with_labels.labels = {{"site", "plant-3"}, {"mota/arch", "x86_64"}};
  Reporter labelled(*dev.store, *dev.client, *dev.id, "http://127.0.0.1:1", with_labels);
  hb = labelled.heartbeat();
  ASSERT_TRUE(hb) << hb.error().message();
  EXPECT_EQ((*hb)["labels"], (Json{{"site", "plant-3"}, {"mota/arch", "x86_64"}}));

  ASSERT_TRUE(rep.enqueue_heartbeat());
  auto items = dev.store->peek(10);
  ASSERT_TRUE(items);
  ASSERT_EQ(items->size(), 1u);
  EXPECT_EQ((*items)[0].kind, OutboxKind::heartbeat);
  auto body = parse_json((*items)[0].body);
  ASSERT_TRUE(body);
  EXPECT_EQ((*body)["models"][0]["model"], "resnet");
}

TEST(Report, HeartbeatIsSentAsHeartbeatKind) {
  FleetServer fleet;
  fleet.start();
  Device dev;
  dev.enqueue_events(1);
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  ASSERT_TRUE(rep.enqueue_heartbeat());
  ASSERT_TRUE(rep.flush());
  ASSERT_EQ(fleet.batches.size(), 1u);
  const auto& batch = fleet.batches[0]["batch"];
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0]["kind"], "event");
  EXPECT_EQ(batch[1]["kind"], "heartbeat");
  EXPECT_EQ(batch[1]["body"]["agent_version"], kVersion);
}

// ------------------------------------------------------------------------------------------------
// Sessions against the real fleet ingest (manager/fleet/fleet_ingest.hpp) on loopback.

// `mota serve`'s report routes over a real HttpServer and fleet.db. restart() replaces the ingest
// behind the same port, as a restarted server would: its sessions are forgotten.
struct RealFleet {
  test::TempDir dir;
  manager::IngestOptions options;
  std::mutex mu;
  std::unique_ptr<manager::FleetIngest> ingest;
  std::unique_ptr<net::HttpServer> server;
  int port = 0;

  void open() {
    std::lock_guard lock(mu);
    ingest.reset();
    auto in = manager::FleetIngest::open(dir.path() / "fleet.db", options);
    ASSERT_TRUE(in) << in.error().message();
    ingest = std::move(*in);
  }
  void start() {
    open();
    net::ServerConfig cfg;
    cfg.threads = 2;
    server = net::make_http_server(cfg);
    server->route("POST", "/v1/devices/:id/events", [this](const net::HttpRequest& r) {
      std::lock_guard lock(mu);
      return ingest->handle(r);
    });
    server->route("POST", "/v1/devices/:id/session", [this](const net::HttpRequest& r) {
      std::lock_guard lock(mu);
      return ingest->handle_session(r);
    });
    auto p = server->start();
    ASSERT_TRUE(p) << p.error().message();
    port = *p;
  }
  manager::IngestStats stats() {
    std::lock_guard lock(mu);
    return ingest->stats();
  }
  std::int64_t events() {
    auto db = storage::Database::open(dir.path() / "fleet.db");
    EXPECT_TRUE(db);
    auto st = db->prepare("SELECT count(*) FROM events");
    EXPECT_TRUE(st && st->step());
    return st->column_int64(0);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
  ~RealFleet() {
    if (server) server->stop();
  }
};

TEST(ReportSession, OneHandshakeThenMacsAndTheServerStoresEverything) {
  RealFleet fleet;
  fleet.start();
  Device dev;
  ReporterOptions opts;
  opts.batch_items = 3;
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url(), opts);
  dev.enqueue_events(7);
  auto r = rep.flush();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->batches, 3u);
  EXPECT_EQ(r->handshakes, 1u);
  dev.enqueue_events(2);
  r = rep.flush();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->handshakes, 0u);  // the session is reused
  EXPECT_EQ(dev.rows(), 0u);
  EXPECT_EQ(fleet.events(), 9);
  auto st = fleet.stats();
  EXPECT_EQ(st.sessions_opened, 1u);
  EXPECT_EQ(st.session_reports, 4u);
  EXPECT_EQ(st.requests_accepted, 4u);
}

TEST(ReportSession, TheSessionOutlivesEachPollsReporter) {
  RealFleet fleet;
  fleet.start();
  Device dev;
  ReportSessionState kept;  // what the daemon keeps between polls (agent/agent.cpp)
  for (int poll = 0; poll < 3; ++poll) {
    Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url(), {}, &kept);
    dev.enqueue_events(1);
    auto r = rep.flush();
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->handshakes, poll == 0 ? 1u : 0u) << "poll " << poll;
  }
  EXPECT_EQ(fleet.stats().sessions_opened, 1u);
  EXPECT_EQ(fleet.stats().session_reports, 3u);
  // A Reporter without kept state opens its own.
  Reporter alone(*dev.store, *dev.client, *dev.id, fleet.url());
  dev.enqueue_events(1);
  auto r = alone.flush();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->handshakes, 1u);
}

TEST(ReportSession, ARestartedServerForgetsSessionsAndTheAgentOpensANewOne) {
  RealFleet fleet;
  fleet.start();
  Device dev;
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  dev.enqueue_events(2);
  ASSERT_TRUE(rep.flush());
  fleet.open();  // the restart: same database, no sessions
  dev.enqueue_events(2);
  auto r = rep.flush();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->handshakes, 1u);
  EXPECT_EQ(r->acked, 2u);
  EXPECT_EQ(fleet.events(), 4);
  auto st = fleet.stats();
  EXPECT_EQ(st.requests_refused, 1u);  // the report under the forgotten session
  EXPECT_EQ(st.session_reports, 1u);
}

TEST(ReportSession, ServerWithoutSessionsGetsSignedReports) {
  RealFleet fleet;
  fleet.options.sessions = false;
  fleet.start();
  Device dev;
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  dev.enqueue_events(3);
  auto r = rep.flush();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->handshakes, 0u);
  EXPECT_EQ(r->acked, 3u);
  // Later flushes do not ask again (until an hour has passed).
  dev.enqueue_events(1);
  ASSERT_TRUE(rep.flush());
  auto st = fleet.stats();
  EXPECT_EQ(st.requests_accepted, 2u);
  EXPECT_EQ(st.session_reports, 0u);
  EXPECT_EQ(st.requests_refused, 0u);
  EXPECT_EQ(fleet.events(), 4);
}

TEST(ReportSession, AgentWithSessionsOffSignsEachReport) {
  RealFleet fleet;
  fleet.start();
  Device dev;
  ReporterOptions opts;
  opts.sessions = false;
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url(), opts);
  dev.enqueue_events(2);
  auto r = rep.flush();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->handshakes, 0u);
  EXPECT_EQ(fleet.stats().sessions_opened, 0u);
  EXPECT_EQ(fleet.stats().requests_accepted, 1u);
}

TEST(ReportSession, RefusedHandshakeFallsBackToASignedReportWithTheServersVerdict) {
  RealFleet fleet;
  fleet.options.admission = manager::AdmissionMode::enrolled_only;
  fleet.start();
  Device dev;
  Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url());
  dev.enqueue_events(1);
  auto r = rep.flush();
  ASSERT_FALSE(r);
  EXPECT_TRUE(report_refused(r.error()));
  EXPECT_NE(r.error().message().find("not enrolled"), std::string::npos) << r.error().message();
  EXPECT_EQ(dev.rows(), 1u);  // kept
  EXPECT_EQ(fleet.stats().sessions_opened, 0u);
}

// A device whose image carries a fleet enrollment key (agent.toml enrollment_key): the agent sends
// the key's signature with its handshake (and with signed reports), and a server that refuses
// unknown devices admits it on first contact, whichever way it reports.
TEST(ReportSession, EnrollmentSignatureAdmitsTheDeviceOnFirstContact) {
  RealFleet fleet;
  fleet.options.admission = manager::AdmissionMode::enrolled_only;
  fleet.start();
  auto factory = crypto::PrivateKey::generate(crypto::KeyType::ed25519);
  ASSERT_TRUE(factory);
  {
    auto db = manager::open_fleet_db(fleet.dir.path() / "fleet.db");
    ASSERT_TRUE(db);
    ASSERT_TRUE(manager::add_enrollment_key(*db, "factory", factory->public_key().public_value,
                                            now_seconds()));
  }
  for (const bool sessions : {true, false}) {
    SCOPED_TRACE(sessions ? "session" : "signed");
    Device dev(sessions ? "cam-session" : "cam-signed");
    ReporterOptions opts;
    opts.sessions = sessions;
    auto headers = protocol::enrollment_headers(*factory, *dev.id);
    ASSERT_TRUE(headers);
    opts.extra_headers = *headers;
    Reporter rep(*dev.store, *dev.client, *dev.id, fleet.url(), opts);
    dev.enqueue_events(2);
    auto r = rep.flush();
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->handshakes, sessions ? 1u : 0u);
    EXPECT_EQ(dev.rows(), 0u);
    auto db = manager::open_fleet_db(fleet.dir.path() / "fleet.db");
    ASSERT_TRUE(db);
    auto info = manager::show_device(*db, dev.id->device_id());
    ASSERT_TRUE(info && *info);
    EXPECT_EQ((*info)->admission, "admitted");
    EXPECT_EQ((*info)->admitted_by, "enrollment:factory");
  }
}

}  // namespace
}  // namespace mota::agent
