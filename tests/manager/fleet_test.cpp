// Fleet tracking: the report ingest rules (signatures, TOFU, enrollment, replay, forged ids,
// limits) on real SQLite files with real device keys, the views, and guarded rollouts against a
// real repository.

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>

#include "common/http.hpp"
#include "common/latency_histogram.hpp"
#include "manager/fleet/field_health.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "manager/fleet/fleet_ingest.hpp"
#include "manager/fleet/rollout.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/channel.hpp"
#include "protocol/identity.hpp"
#include "protocol/session.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

// Every row of every fleet table, as text: "unchanged" means this string is equal.
std::string dump(const stdfs::path& db_path) {
  auto db = storage::Database::open(db_path);
  EXPECT_TRUE(db) << db.error().message();
  std::string out;
  for (const char* table : {"devices", "installed", "events", "releases", "channels", "rollouts",
                            "rollout_transitions"}) {
    auto st = db->prepare(std::string("SELECT * FROM ") + table + " ORDER BY 1, 2");
    EXPECT_TRUE(st);
    out += std::string("[") + table + "]\n";
    while (st->step().value_or(storage::Step::done) == storage::Step::row) {
      for (int c = 0; c < st->column_count(); ++c) out += st->column_text(c) + "|";
      out += "\n";
    }
  }
  return out;
}

DeviceFilter filter(const std::string& model, const std::string& version = "",
                    const std::string& state = "") {
  DeviceFilter f;
  f.model = model;
  f.version = version;
  f.state = state;
  return f;
}
DeviceFilter stale_filter() {
  DeviceFilter f;
  f.stale = std::chrono::seconds(3600);
  return f;
}

class Fleet : public ::testing::Test {
 protected:
  stdfs::path db_path() const { return work_ / "fleet.db"; }

  // Trust on first use: most tests here are about what reports do once a device counts; the
  // admission tests pass IngestOptions{} (pending) or their own.
  static IngestOptions automatic() {
    IngestOptions o;
    o.admission = AdmissionMode::automatic;
    return o;
  }
  void open_ingest(IngestOptions options = automatic()) {
    ingest_.reset();
    auto in = FleetIngest::open(db_path(), options);
    ASSERT_TRUE(in) << in.error().message();
    ingest_ = std::move(*in);
  }

  protocol::DeviceIdentity& identity(const std::string& id, const std::string& dir = "") {
    const std::string key = dir.empty() ? id : dir;
    auto it = ids_.find(key);
    if (it == ids_.end()) {
      auto d = protocol::DeviceIdentity::load_or_create(work_ / "keys" / key, id);
      EXPECT_TRUE(d) << d.error().message();
      it = ids_.emplace(key, std::move(*d)).first;
    }
    return it->second;
  }

  static Json event(std::int64_t seq, const std::string& device, const std::string& state,
                    const std::string& from, const std::string& to, const std::string& error = "") {
    return Json{{"seq", seq},
                {"kind", "event"},
                {"created_at", "2030-01-01T00:00:00Z"},
                {"body",
                 {{"device", device},
                  {"model", "detector"},
                  {"from", from},
                  {"to", to},
                  {"state", state},
                  {"step", state == "installed" ? "commit" : "verify"},
                  {"error", error},
                  {"kind", "full"}}}};
  }
  static Json heartbeat(std::int64_t seq, const std::string& version) {
    return Json{
        {"seq", seq},
        {"kind", "heartbeat"},
        {"created_at", "2030-01-01T00:00:00Z"},
        {"body",
         {{"agent_version", "0.1.0"},
          {"arch", "x86_64"},
          {"models",
           {{{"model", "detector"}, {"slot", "a"}, {"version", version}, {"committed", true}}}}}}};
  }

  // A heartbeat running `version` with field health of it: the runtime's totals of load `load`,
  // every run `ms` long.
  static Json field_heartbeat(std::int64_t seq, const std::string& version, const std::string& load,
                              std::uint64_t inferences, std::uint64_t errors, double ms) {
    Json hb = heartbeat(seq, version);
    hb["body"]["field"] =
        Json::array({{{"model", "detector"},
                      {"version", version},
                      {"load", load},
                      {"inferences", inferences},
                      {"errors", errors},
                      {"latency", Json::array({Json::array({latency_bucket(ms), inferences})})}}});
    return hb;
  }

  // A request as the HttpServer hands it over (lower-case header names), signed by `signer`.
  static net::HttpRequest request(const protocol::DeviceIdentity& signer,
                                  const std::string& route_id, const std::string& body,
                                  TimePoint at = now_seconds(),
                                  const std::string& endpoint = "events") {
    net::HttpRequest req;
    req.method = "POST";
    req.path = "/v1/devices/" + route_id + "/" + endpoint;
    req.path_params["id"] = route_id;
    req.body = body;
    auto h = signer.report_headers("/v1/devices/" + http::percent_encode(route_id) + "/" + endpoint,
                                   body, at);
    EXPECT_TRUE(h) << h.error().message();
    set_headers(req, *h);
    return req;
  }
  static void set_headers(net::HttpRequest& req, const std::map<std::string, std::string>& h) {
    for (auto& [k, v] : h) {
      std::string lower = k;
      for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
      req.headers[lower] = v;
    }
  }
  // A session handshake of `signer` for `route_id`, with a fresh X25519 key (returned in `own`).
  net::HttpReply handshake(const protocol::DeviceIdentity& signer, const std::string& route_id,
                           std::optional<crypto::KeyAgreement>& own, TimePoint at = now_seconds()) {
    auto k = crypto::KeyAgreement::generate();
    EXPECT_TRUE(k);
    own.emplace(std::move(*k));
    return ingest_->handle_session(
        request(signer, route_id, protocol::session_request_body(route_id, own->public_hex()), at,
                "session"));
  }
  // A session of `id`'s identity, opened through the ingest's handshake route.
  protocol::ReportSession session(const std::string& id) {
    std::optional<crypto::KeyAgreement> own;
    auto r = handshake(identity(id), id, own);
    EXPECT_EQ(r.status, 200) << r.body;
    auto s = protocol::accept_session(*own, id, identity(id).public_key_hex(), r.body);
    EXPECT_TRUE(s) << (s ? "" : s.error().message());
    return s ? *s : protocol::ReportSession{};
  }
  // A report of `batch` to `route_id`'s events route, under `s` as device `as`.
  static net::HttpRequest session_request(const protocol::ReportSession& s, const std::string& as,
                                          const std::string& route_id, const std::string& body,
                                          TimePoint at = now_seconds()) {
    net::HttpRequest req;
    req.method = "POST";
    req.path = "/v1/devices/" + route_id + "/events";
    req.path_params["id"] = route_id;
    req.body = body;
    auto h =
        s.report_headers(as, "/v1/devices/" + http::percent_encode(route_id) + "/events", body, at);
    EXPECT_TRUE(h) << h.error().message();
    set_headers(req, *h);
    return req;
  }
  net::HttpReply post(const std::string& id, const Json& batch) {
    auto& who = identity(id);
    return ingest_->handle(request(who, id, Json{{"device", id}, {"batch", batch}}.dump()));
  }
  net::HttpReply post_from(const std::string& id, const std::string& remote, const Json& batch) {
    auto req = request(identity(id), id, Json{{"device", id}, {"batch", batch}}.dump());
    req.remote_addr = remote;
    return ingest_->handle(req);
  }
  std::vector<DeviceModelRow> devices(DeviceFilter f = {}) {
    auto db = open_fleet_db(db_path());
    EXPECT_TRUE(db);
    auto rows = list_devices(*db, f, now_seconds());
    EXPECT_TRUE(rows) << rows.error().message();
    return rows ? *rows : std::vector<DeviceModelRow>{};
  }
  void expect_refused(const net::HttpReply& r, int status, const std::string& words,
                      const std::string& before) {
    EXPECT_EQ(r.status, status) << r.body;
    auto j = Json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_NE(j.value("error", "").find(words), std::string::npos) << r.body;
    EXPECT_EQ(dump(db_path()), before);
  }

  test::TempDir work_;
  std::unique_ptr<FleetIngest> ingest_;
  std::map<std::string, protocol::DeviceIdentity> ids_;
};

TEST_F(Fleet, StoresBatchLearnsKeyAndShowsViews) {
  open_ingest();
  auto r = post("dev-1",
                Json::array({event(1, "dev-1", "installed", "", "1.0.0"), heartbeat(2, "1.0.0")}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["acked"], 2);
  auto rows = devices();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].device, "dev-1");
  EXPECT_EQ(rows[0].version, "1.0.0");
  EXPECT_EQ(rows[0].state, "ok");
  EXPECT_EQ(rows[0].slot, "a");
  EXPECT_GT(rows[0].last_seen, 0);

  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  auto info = show_device(*db, "dev-1");
  ASSERT_TRUE(info && *info);
  EXPECT_EQ((*info)->key, identity("dev-1").public_key_hex());
  EXPECT_FALSE((*info)->enrolled);
  EXPECT_EQ((*info)->agent_version, "0.1.0");
  ASSERT_EQ((*info)->events.size(), 2u);
  EXPECT_EQ((*info)->events[0].to, "1.0.0");
  EXPECT_EQ((*info)->events[1].kind, "heartbeat");
  auto none = show_device(*db, "nobody");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  EXPECT_EQ(ingest_->stats().items_stored, 2u);
}

TEST_F(Fleet, ReplayedBatchIsAcknowledgedOnceAndChangesNothing) {
  open_ingest();
  const Json batch = Json::array({event(1, "dev-1", "installed", "", "1.0.0")});
  ASSERT_EQ(post("dev-1", batch).status, 200);
  const std::string before = dump(db_path());
  // The same signed request again (an ack lost on the way back, or a captured replay).
  const std::string body = Json{{"device", "dev-1"}, {"batch", batch}}.dump();
  auto r = ingest_->handle(request(identity("dev-1"), "dev-1", body));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["acked"], 1);
  EXPECT_EQ(dump(db_path()), before);
  EXPECT_EQ(ingest_->stats().items_duplicate, 1u);
  // A batch overlapping the stored one stores only the new item.
  ASSERT_EQ(post("dev-1", Json::array({event(1, "dev-1", "installed", "", "1.0.0"),
                                       event(2, "dev-1", "failed", "1.0.0", "2.0.0", "boom")}))
                .status,
            200);
  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  EXPECT_EQ((*show_device(*db, "dev-1"))->events.size(), 2u);
}

TEST_F(Fleet, RefusesForeignKeysForgedIdsBadSignaturesAndJunk) {
  open_ingest();
  ASSERT_EQ(post("victim", Json::array({heartbeat(1, "1.0.0")})).status, 200);
  ASSERT_EQ(post("attacker", Json::array({heartbeat(1, "1.0.0")})).status, 200);
  const std::string before = dump(db_path());
  const Json batch = Json::array({event(7, "victim", "failed", "1.0.0", "2.0.0", "x")});
  const std::string body = Json{{"device", "victim"}, {"batch", batch}}.dump();

  // Signed for "victim" with another key (a second identity claiming the id).
  auto& impostor = identity("victim", "impostor");
  expect_refused(ingest_->handle(request(impostor, "victim", body)), 403,
                 "is not the key on record for device victim", before);
  // The attacker signs correctly as itself but posts to the victim's route.
  auto req = request(identity("attacker"), "victim", body);
  expect_refused(ingest_->handle(req), 403, "X-Mota-Device 'attacker' is not the device 'victim'",
                 before);
  // ... and relabelling the header breaks the signature, which covers the id.
  req.headers["x-mota-device"] = "victim";
  expect_refused(ingest_->handle(req), 401, "report from victim", before);
  // Its own route, but the body claims the victim.
  expect_refused(ingest_->handle(request(identity("attacker"), "attacker", body)), 403,
                 "body names device 'victim'", before);
  // Unsigned.
  auto unsigned_req = request(identity("victim"), "victim", body);
  unsigned_req.headers.erase("x-mota-signature");
  expect_refused(ingest_->handle(unsigned_req), 401, "X-Mota-Signature is missing", before);
  // Body changed after signing.
  auto tampered = request(identity("victim"), "victim", body);
  tampered.body[tampered.body.size() / 2] ^= 1;
  expect_refused(ingest_->handle(tampered), 401, "report from victim", before);
  // Captured long ago.
  expect_refused(ingest_->handle(request(identity("victim"), "victim", body,
                                         now_seconds() - std::chrono::hours(2))),
                 401, "away from the server's clock", before);
  // Signed, but not JSON / not a batch / seqs out of order.
  expect_refused(ingest_->handle(request(identity("victim"), "victim", "{\"device\": ")), 400,
                 "not a JSON object", before);
  expect_refused(
      ingest_->handle(request(identity("victim"), "victim", R"({"device":"victim","batch":7})")),
      400, "\"batch\"", before);
  Json bad = Json{{"device", "victim"},
                  {"batch", Json::array({heartbeat(5, "1.0.0"), heartbeat(3, "1.0.0")})}};
  expect_refused(ingest_->handle(request(identity("victim"), "victim", bad.dump())), 400,
                 "increasing seq order", before);
  // Over the body limit (the HttpServer refuses far bigger bodies before reading them).
  IngestOptions small;
  small.max_body_bytes = 1000;
  open_ingest(small);
  Json big =
      Json{{"device", "victim"}, {"batch", Json::array({heartbeat(9, std::string(2000, 'x'))})}};
  expect_refused(ingest_->handle(request(identity("victim"), "victim", big.dump())), 413,
                 "over the 1000-byte limit", before);
}

TEST_F(Fleet, SessionReportsAreStoredLikeSignedOnes) {
  open_ingest();
  auto s = session("dev-1");
  ASSERT_EQ(s.id.size(), 32u);
  const std::string body =
      Json{{"device", "dev-1"},
           {"batch",
            Json::array({event(1, "dev-1", "installed", "", "1.0.0"), heartbeat(2, "1.0.0")})}}
          .dump();
  auto r = ingest_->handle(session_request(s, "dev-1", "dev-1", body));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["acked"], 2);
  // The key recorded on first use is the Ed25519 key that signed the handshake.
  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  auto info = show_device(*db, "dev-1");
  ASSERT_TRUE(info && *info);
  EXPECT_EQ((*info)->key, identity("dev-1").public_key_hex());
  EXPECT_EQ((*info)->events.size(), 2u);
  // The same report again is a replay: acknowledged, stored once.
  r = ingest_->handle(session_request(s, "dev-1", "dev-1", body));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ingest_->stats().items_stored, 2u);
  EXPECT_EQ(ingest_->stats().items_duplicate, 2u);
  EXPECT_EQ(ingest_->stats().sessions_opened, 1u);
  EXPECT_EQ(ingest_->stats().session_reports, 2u);
  // Signed reports still work next to sessions.
  EXPECT_EQ(post("dev-1", Json::array({heartbeat(3, "1.0.0")})).status, 200);
}

TEST_F(Fleet, SessionRefusesForgedMacsForeignSessionsAndStaleOnes) {
  TimePoint clock = now_seconds();
  IngestOptions options;
  options.session_ttl = std::chrono::seconds(600);
  options.now = [&clock] { return clock; };
  open_ingest(options);
  auto victim = session("victim");
  auto attacker = session("attacker");
  ASSERT_EQ(
      ingest_
          ->handle(session_request(
              victim, "victim", "victim",
              Json{{"device", "victim"}, {"batch", Json::array({heartbeat(1, "1.0.0")})}}.dump(),
              clock))
          .status,
      200);
  const std::string before = dump(db_path());
  const std::string body =
      Json{{"device", "victim"},
           {"batch", Json::array({event(7, "victim", "failed", "1.0.0", "2.0.0", "x")})}}
          .dump();

  // A body changed after the MAC was computed.
  auto tampered = session_request(victim, "victim", "victim", body, clock);
  tampered.body[tampered.body.size() / 2] ^= 1;
  expect_refused(ingest_->handle(tampered), 401, "X-Mota-Mac does not match", before);
  // A MAC under a guessed key.
  protocol::ReportSession guessed = victim;
  guessed.key = std::string(32, '\x42');
  expect_refused(ingest_->handle(session_request(guessed, "victim", "victim", body, clock)), 401,
                 "X-Mota-Mac does not match", before);
  // The attacker's own session used in the victim's name, and on the victim's route as itself.
  expect_refused(ingest_->handle(session_request(attacker, "victim", "victim", body, clock)), 401,
                 "belongs to another device", before);
  expect_refused(ingest_->handle(session_request(attacker, "attacker", "victim", body, clock)), 403,
                 "X-Mota-Device 'attacker' is not the device 'victim'", before);
  // A made-up session id, and no MAC at all.
  protocol::ReportSession unknown = victim;
  unknown.id = std::string(32, 'a');
  expect_refused(ingest_->handle(session_request(unknown, "victim", "victim", body, clock)), 401,
                 "unknown or expired", before);
  auto no_mac = session_request(victim, "victim", "victim", body, clock);
  no_mac.headers.erase("x-mota-mac");
  expect_refused(ingest_->handle(no_mac), 401, "X-Mota-Mac is not 64 hex", before);
  // A MAC'd report captured and replayed much later (still inside the session's lifetime).
  expect_refused(ingest_->handle(session_request(victim, "victim", "victim", body,
                                                 clock - std::chrono::hours(1))),
                 401, "away from the server's clock", before);
  // Past the session's lifetime.
  clock += std::chrono::seconds(601);
  expect_refused(ingest_->handle(session_request(victim, "victim", "victim", body, clock)), 401,
                 "unknown or expired", before);
  EXPECT_EQ(ingest_->stats().session_reports, 1u);
}

TEST_F(Fleet, SessionHandshakeRefusalsChangeNothing) {
  open_ingest();
  ASSERT_EQ(post("victim", Json::array({heartbeat(1, "1.0.0")})).status, 200);
  const std::string before = dump(db_path());
  std::optional<crypto::KeyAgreement> own;
  auto body_for = [&](const std::string& device) {
    auto k = crypto::KeyAgreement::generate();
    return protocol::session_request_body(device, k->public_hex());
  };
  // Another key claiming the victim's id.
  expect_refused(handshake(identity("victim", "impostor"), "victim", own), 403,
                 "is not the key on record for device victim", before);
  // Unsigned, tampered, stale, another device's route, a body naming someone else.
  auto unsigned_req =
      request(identity("victim"), "victim", body_for("victim"), now_seconds(), "session");
  unsigned_req.headers.erase("x-mota-signature");
  expect_refused(ingest_->handle_session(unsigned_req), 401, "X-Mota-Signature is missing", before);
  auto tampered =
      request(identity("victim"), "victim", body_for("victim"), now_seconds(), "session");
  tampered.body[20] ^= 1;
  expect_refused(ingest_->handle_session(tampered), 401, "report from victim", before);
  expect_refused(
      handshake(identity("victim"), "victim", own, now_seconds() - std::chrono::hours(1)), 401,
      "away from the server's clock", before);
  expect_refused(ingest_->handle_session(request(identity("attacker"), "victim",
                                                 body_for("attacker"), now_seconds(), "session")),
                 403, "X-Mota-Device 'attacker' is not the device 'victim'", before);
  expect_refused(ingest_->handle_session(request(identity("attacker"), "attacker",
                                                 body_for("victim"), now_seconds(), "session")),
                 403, "is not the device 'attacker'", before);
  // Malformed bodies: not JSON, no key, a key that is not hex.
  for (const std::string& junk :
       {std::string("{\"device\":"), std::string("{\"device\":\"victim\"}"),
        std::string("{\"device\":\"victim\",\"x25519\":\"") + std::string(64, 'z') + "\"}"}) {
    auto r = ingest_->handle_session(
        request(identity("victim"), "victim", junk, now_seconds(), "session"));
    expect_refused(r, 400, "session:", before);
  }
  // A low-order X25519 key (the shared secret would be zero).
  std::string low = "{\"device\":\"victim\",\"x25519\":\"" + std::string(64, '0') + "\"}";
  expect_refused(
      ingest_->handle_session(request(identity("victim"), "victim", low, now_seconds(), "session")),
      400, "X25519 key is unusable", before);
  EXPECT_EQ(ingest_->stats().sessions_opened, 0u);

  // Enrolled-only: an unknown device cannot open a session.
  IngestOptions enrolled;
  enrolled.admission = AdmissionMode::enrolled_only;
  open_ingest(enrolled);
  expect_refused(handshake(identity("stranger"), "stranger", own), 403, "not enrolled", before);
  // Sessions off: the route answers 404, so agents sign each report.
  IngestOptions off;
  off.sessions = false;
  open_ingest(off);
  EXPECT_EQ(handshake(identity("victim"), "victim", own).status, 404);
}

TEST_F(Fleet, ReplayedHandshakeIsRefusedAndTheSessionKeepsWorking) {
  open_ingest();
  auto& dev = identity("dev-1");
  auto k1 = crypto::KeyAgreement::generate();
  auto k2 = crypto::KeyAgreement::generate();
  ASSERT_TRUE(k1 && k2);
  auto h1 = request(dev, "dev-1", protocol::session_request_body("dev-1", k1->public_hex()),
                    now_seconds() - std::chrono::seconds(5), "session");
  auto h2 = request(dev, "dev-1", protocol::session_request_body("dev-1", k2->public_hex()),
                    now_seconds(), "session");
  ASSERT_EQ(ingest_->handle_session(h1).status, 200);
  auto a2 = ingest_->handle_session(h2);  // the device's later handshake replaces the first
  ASSERT_EQ(a2.status, 200) << a2.body;
  auto s2 = protocol::accept_session(*k2, "dev-1", dev.public_key_hex(), a2.body);
  ASSERT_TRUE(s2);

  // Both captured handshakes replayed: the older one, and the latest (its X25519 key again).
  auto r = ingest_->handle_session(h1);
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_NE(r.body.find("older than this device's last one"), std::string::npos) << r.body;
  r = ingest_->handle_session(h2);
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_NE(r.body.find("already used"), std::string::npos) << r.body;
  EXPECT_EQ(ingest_->stats().sessions_opened, 2u);
  // The device's session is untouched by the replays.
  const std::string body =
      Json{{"device", "dev-1"}, {"batch", Json::array({heartbeat(1, "1.0.0")})}}.dump();
  r = ingest_->handle(session_request(*s2, "dev-1", "dev-1", body));
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(Fleet, SessionTableIsBounded) {
  IngestOptions options;
  options.max_sessions = 2;
  open_ingest(options);
  session("a");
  session("b");
  session("a");  // replacing a device's own session needs no room
  std::optional<crypto::KeyAgreement> own;
  auto r = handshake(identity("c"), "c", own);
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("maximum of 2 sessions"), std::string::npos) << r.body;
  // ... and that device's signed reports are still accepted.
  EXPECT_EQ(post("c", Json::array({heartbeat(1, "1.0.0")})).status, 200);
}

TEST_F(Fleet, EnrolledOnlyRefusesUnknownDevices) {
  IngestOptions options;
  options.admission = AdmissionMode::enrolled_only;
  open_ingest(options);
  const std::string before = dump(db_path());
  auto r = post("dev-1", Json::array({heartbeat(1, "1.0.0")}));
  expect_refused(r, 403, "not enrolled", before);
  {
    auto db = open_fleet_db(db_path());
    ASSERT_TRUE(db);
    ASSERT_TRUE(enroll_device(*db, "dev-1", identity("dev-1").public_key_hex(), now_seconds()));
    auto again =
        enroll_device(*db, "dev-1", identity("dev-1", "other").public_key_hex(), now_seconds());
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), Errc::already_exists);
  }
  EXPECT_EQ(post("dev-1", Json::array({heartbeat(1, "1.0.0")})).status, 200);
  // The key file forms `mota devices enroll --key` accepts.
  auto pem = test::read_file(identity("dev-1").key_path());
  EXPECT_EQ(*device_key_hex(pem), identity("dev-1").public_key_hex());
  EXPECT_EQ(*device_key_hex(" " + identity("dev-1").public_key_hex() + "\n"),
            identity("dev-1").public_key_hex());
  EXPECT_FALSE(device_key_hex("not a key"));
}

// Under the default admission a device nobody vouched for is recorded (its key binds the id) but
// counts for nothing: not in the fleet's numbers, shown apart, until an operator accepts it; a
// rejected device's reports are refused and change nothing.
TEST_F(Fleet, NewDevicesArePendingAndCountForNothingUntilAccepted) {
  open_ingest(IngestOptions{});
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_EQ(post_from(id, "10.1.2.3", Json::array({heartbeat(1, "1.0.0")})).status, 200);
  }
  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  auto summary = [&] {
    auto s = fleet_summary(*db, std::chrono::seconds(3600), now_seconds());
    EXPECT_TRUE(s) << s.error().message();
    return s ? *s : FleetSummary{};
  };
  EXPECT_EQ(summary().devices, 0);
  EXPECT_EQ(summary().pending, 3);
  EXPECT_TRUE(summary().models.empty()) << "a pending device's version is counted nowhere";
  DeviceFilter pending;
  pending.admission = "pending";
  EXPECT_EQ(devices(pending).size(), 3u);
  auto info = show_device(*db, "a");
  ASSERT_TRUE(info && *info);
  EXPECT_EQ((*info)->admission, "pending");
  EXPECT_EQ((*info)->first_remote, "10.1.2.3");
  EXPECT_EQ((*info)->models.size(), 1u) << "its reports are kept";

  ASSERT_EQ(*set_admission(*db, {"a", "b"}, Admission::admitted, now_seconds()), 2);
  EXPECT_EQ(summary().devices, 2);
  EXPECT_EQ(summary().pending, 1);
  ASSERT_EQ(summary().models.size(), 1u);
  EXPECT_EQ(summary().models[0].devices, 2);
  info = show_device(*db, "a");
  EXPECT_EQ((*info)->admitted_by, "operator");

  ASSERT_EQ(*set_admission(*db, {"b", "c"}, Admission::rejected, now_seconds()), 2);
  EXPECT_EQ(summary().devices, 1);
  EXPECT_EQ(summary().rejected, 2);
  EXPECT_EQ(summary().models[0].devices, 1) << "a rejected device leaves the counts";
  const std::string before = dump(db_path());
  expect_refused(post("c", Json::array({heartbeat(2, "2.0.0")})), 403, "rejected by an operator",
                 before);
  std::optional<crypto::KeyAgreement> own;
  expect_refused(handshake(identity("c"), "c", own), 403, "rejected by an operator", before);
  // An unknown id changes nothing, and says which.
  auto unknown = set_admission(*db, {"a", "nobody"}, Admission::rejected, now_seconds());
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message().find("'nobody'"), std::string::npos);
  EXPECT_EQ(dump(db_path()), before);
  // Accepting undoes a rejection.
  ASSERT_EQ(*set_admission(*db, {"c"}, Admission::admitted, now_seconds()), 1);
  EXPECT_EQ(post("c", Json::array({heartbeat(2, "2.0.0")})).status, 200);
  EXPECT_EQ(summary().devices, 2);
}

// An outsider can create ids at will: pending registrations are limited per source address, per
// minute overall, and in number; devices on record keep reporting meanwhile.
TEST_F(Fleet, RegistrationFloodIsLimited) {
  TimePoint clock = now_seconds();
  IngestOptions options;
  options.new_devices_per_minute_per_address = 5;
  options.new_devices_per_minute = 8;
  options.max_pending = 12;
  options.now = [&clock] { return clock; };
  options.max_clock_skew = std::chrono::hours(24);
  open_ingest(options);
  auto send = [&](const std::string& id, const std::string& from) {
    auto& who = identity(id);
    auto req = request(
        who, id, Json{{"device", id}, {"batch", Json::array({heartbeat(1, "1")})}}.dump(), clock);
    req.remote_addr = from;
    return ingest_->handle(req);
  };
  for (int i = 0; i < 5; ++i) ASSERT_EQ(send("x" + std::to_string(i), "10.0.0.1").status, 200);
  std::string before = dump(db_path());
  expect_refused(send("x5", "10.0.0.1"), 429, "from one address (10.0.0.1)", before);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(send("y" + std::to_string(i), "10.0.0.2").status, 200);
  before = dump(db_path());
  expect_refused(send("y3", "10.0.0.3"), 429, "at most 8 new devices per minute", before);
  // A device on record is not a registration.
  auto again =
      request(identity("x0"), "x0",
              Json{{"device", "x0"}, {"batch", Json::array({heartbeat(2, "1")})}}.dump(), clock);
  EXPECT_EQ(ingest_->handle(again).status, 200);

  // The next minute: registrations go on until 12 devices are pending.
  clock += std::chrono::seconds(60);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(send("z" + std::to_string(i), "10.0.0.4").status, 200);
  before = dump(db_path());
  expect_refused(send("z4", "10.0.0.4"), 429, "12 devices are pending already", before);
  // An operator deals with some of them (another process): room again, once re-counted.
  {
    auto db = open_fleet_db(db_path());
    ASSERT_TRUE(db);
    ASSERT_TRUE(set_admission(*db, {"x0", "x1", "x2"}, Admission::rejected, clock));
  }
  clock += std::chrono::seconds(1);
  EXPECT_EQ(send("z4", "10.0.0.4").status, 200);
  IngestStats st = ingest_->stats();
  EXPECT_EQ(st.registrations_refused, 3u);
  EXPECT_EQ(st.devices_registered, 13u);
}

// The agent's own id rules hold at the edge: nothing else is stored, logged raw or answered 500.
TEST_F(Fleet, DeviceIdsOutsideTheAgentCharsetAreRefused) {
  open_ingest();
  const std::string before = dump(db_path());
  for (const std::string& id :
       {std::string("victim-01\0spoof", 15), std::string("a\nb"), std::string("a\x1b[2Jb"),
        std::string(30000, 'a'), std::string("x y"), std::string("caf\xc3\xa9"),
        std::string("bad\xff")}) {
    auto& who = identity(id, "k" + std::to_string(std::hash<std::string>{}(id)));
    const std::string body = Json{{"device", "x"}, {"batch", Json::array()}}.dump();
    expect_refused(ingest_->handle(request(who, id, body)), 400, "not 1..128 of [A-Za-z0-9._:-]",
                   before);
    std::optional<crypto::KeyAgreement> own;
    expect_refused(handshake(who, id, own), 400, "not 1..128 of [A-Za-z0-9._:-]", before);
  }
  // A valid route id with a header id that is not valid UTF-8: 400, not a 500.
  auto req =
      request(identity("dev"), "dev", Json{{"device", "dev"}, {"batch", Json::array()}}.dump());
  req.headers["x-mota-device"] = "dev\xff\xfe";
  expect_refused(ingest_->handle(req), 400, "X-Mota-Device is not", before);
}

// A fleet enrollment key: the image carries the private half; its signature over (id, device
// key) admits the device on first contact in any mode, until the key is revoked.
TEST_F(Fleet, EnrollmentKeyAdmitsOnFirstContactUntilRevoked) {
  IngestOptions options;
  options.admission = AdmissionMode::enrolled_only;
  open_ingest(options);
  auto factory = crypto::PrivateKey::generate(crypto::KeyType::ed25519);
  auto stranger = crypto::PrivateKey::generate(crypto::KeyType::ed25519);
  ASSERT_TRUE(factory && stranger);
  {
    auto db = open_fleet_db(db_path());
    ASSERT_TRUE(db);
    ASSERT_TRUE(
        add_enrollment_key(*db, "factory", factory->public_key().public_value, now_seconds()));
    auto dup = add_enrollment_key(*db, "other", factory->public_key().public_value, now_seconds());
    ASSERT_FALSE(dup);
    EXPECT_EQ(dup.error().code(), Errc::already_exists);
  }
  auto enrolled_post = [&](const std::string& id, const crypto::PrivateKey& key, std::int64_t seq) {
    auto& who = identity(id);
    auto req = request(who, id,
                       Json{{"device", id}, {"batch", Json::array({heartbeat(seq, "1")})}}.dump());
    auto h = protocol::enrollment_headers(key, who);
    EXPECT_TRUE(h);
    set_headers(req, *h);
    return ingest_->handle(req);
  };
  ASSERT_EQ(enrolled_post("cam-1", *factory, 1).status, 200);
  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  auto info = show_device(*db, "cam-1");
  ASSERT_TRUE(info && *info);
  EXPECT_EQ((*info)->admission, "admitted");
  EXPECT_EQ((*info)->admitted_by, "enrollment:factory");

  std::string before = dump(db_path());
  // A key not on record admits nobody (enrolled_only: refused).
  expect_refused(enrolled_post("cam-2", *stranger, 1), 403, "not enrolled", before);
  // A signature made for another device (a captured header) does not verify for this one.
  {
    auto req =
        request(identity("cam-3"), "cam-3",
                Json{{"device", "cam-3"}, {"batch", Json::array({heartbeat(1, "1")})}}.dump());
    set_headers(req, *protocol::enrollment_headers(*factory, identity("cam-1")));
    expect_refused(ingest_->handle(req), 401, "enrollment signature of device cam-3", before);
  }
  // Through a session: the handshake carries the signature.
  {
    auto& who = identity("cam-4");
    auto k = crypto::KeyAgreement::generate();
    ASSERT_TRUE(k);
    auto req = request(who, "cam-4", protocol::session_request_body("cam-4", k->public_hex()),
                       now_seconds(), "session");
    set_headers(req, *protocol::enrollment_headers(*factory, who));
    auto r = ingest_->handle_session(req);
    ASSERT_EQ(r.status, 200) << r.body;
    auto s = protocol::accept_session(*k, "cam-4", who.public_key_hex(), r.body);
    ASSERT_TRUE(s);
    const std::string body =
        Json{{"device", "cam-4"}, {"batch", Json::array({heartbeat(1, "1")})}}.dump();
    EXPECT_EQ(ingest_->handle(session_request(*s, "cam-4", "cam-4", body)).status, 200);
    info = show_device(*db, "cam-4");
    ASSERT_TRUE(info && *info);
    EXPECT_EQ((*info)->admitted_by, "enrollment:factory");
  }
  // Revoked: admits nobody new; those it admitted stay.
  ASSERT_TRUE(revoke_enrollment_key(*db, "factory", now_seconds()));
  before = dump(db_path());
  expect_refused(enrolled_post("cam-5", *factory, 1), 403, "not enrolled", before);
  EXPECT_EQ(enrolled_post("cam-1", *factory, 2).status, 200);
  auto keys = list_enrollment_keys(*db);
  ASSERT_TRUE(keys && keys->size() == 1u);
  EXPECT_GT((*keys)[0].revoked_at, 0);
  EXPECT_EQ((*keys)[0].admitted, 2);

  // Under the pending default, a pending device that comes back with a valid signature is
  // admitted then.
  open_ingest(IngestOptions{});
  ASSERT_TRUE(
      add_enrollment_key(*db, "line-2", stranger->public_key().public_value, now_seconds()));
  ASSERT_EQ(post("cam-6", Json::array({heartbeat(1, "1")})).status, 200);
  EXPECT_EQ((*show_device(*db, "cam-6"))->admission, "pending");
  ASSERT_EQ(enrolled_post("cam-6", *stranger, 2).status, 200);
  EXPECT_EQ((*show_device(*db, "cam-6"))->admission, "admitted");
  EXPECT_EQ((*show_device(*db, "cam-6"))->admitted_by, "enrollment:line-2");
}

TEST_F(Fleet, FailuresRollbacksFiltersAndFleetSummary) {
  open_ingest();
  ASSERT_EQ(post("a", Json::array({event(1, "a", "installed", "", "1.0.0"),
                                   event(2, "a", "installed", "1.0.0", "2.0.0")}))
                .status,
            200);
  ASSERT_EQ(post("b", Json::array({event(1, "b", "installed", "", "1.0.0"),
                                   event(2, "b", "failed", "1.0.0", "2.0.0", "sha256 mismatch")}))
                .status,
            200);
  // c went to 2.0.0 and back to 1.0.0 (its inventory says so): an operator's downgrade or a
  // USB install, not a rollback (only the agent's "rolled_back" events are).
  ASSERT_EQ(post("c", Json::array({event(1, "c", "installed", "", "2.0.0"), heartbeat(2, "1.0.0")}))
                .status,
            200);
  auto failed = devices(filter("", "", "failed"));
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].device, "b");
  EXPECT_EQ(failed[0].version, "1.0.0");
  EXPECT_EQ(failed[0].target, "2.0.0");
  EXPECT_EQ(failed[0].last_error, "sha256 mismatch");
  EXPECT_EQ(devices(filter("", "1.0.0")).size(), 2u);
  EXPECT_EQ(devices(filter("other")).size(), 0u);
  EXPECT_EQ(devices(stale_filter()).size(), 0u);

  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  auto s = fleet_summary(*db, std::chrono::seconds(3600), now_seconds());
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->devices, 3);
  EXPECT_EQ(s->stale, 0);
  ASSERT_EQ(s->models.size(), 1u);
  const auto& m = s->models[0];
  EXPECT_EQ(m.devices, 3);
  EXPECT_EQ(m.failed, 1);
  std::map<std::string, VersionStats> by;
  for (const auto& v : m.versions) by[v.version] = v;
  EXPECT_EQ(by["1.0.0"].devices, 2);
  EXPECT_NEAR(by["1.0.0"].percent, 66.67, 0.01);
  EXPECT_EQ(by["2.0.0"].devices, 1);
  EXPECT_EQ(by["2.0.0"].failures, 1);
  EXPECT_EQ(by["2.0.0"].rollbacks, 0);
  EXPECT_EQ(s->metadata_errors, 0);
  // An hour later every device is stale.
  auto later =
      fleet_summary(*db, std::chrono::seconds(3600), now_seconds() + std::chrono::hours(2));
  ASSERT_TRUE(later);
  EXPECT_EQ(later->stale, 3);
  EXPECT_EQ(later->models[0].stale, 3);
}

// Heartbeats carry the runtime's running totals per load: the server adds differences, so a
// repeated heartbeat adds nothing, a new load adds its totals whole, and a malformed entry is
// refused with nothing stored.
TEST_F(Fleet, FieldHealthAddsTheDifferencesOfEachLoad) {
  open_ingest();
  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  auto totals = [&](const std::string& version) {
    auto t = field_totals(*db, "detector", version);
    EXPECT_TRUE(t) << t.error().message();
    return t ? *t : FieldTotals{};
  };
  ASSERT_EQ(post("d1", Json::array({field_heartbeat(1, "1.0.0", "r1/1", 100, 1, 2.0)})).status,
            200);
  EXPECT_EQ(totals("1.0.0").inferences, 100u);
  // The same totals again, under a new seq (a heartbeat queued while nothing ran): nothing added.
  ASSERT_EQ(post("d1", Json::array({field_heartbeat(2, "1.0.0", "r1/1", 100, 1, 2.0)})).status,
            200);
  EXPECT_EQ(totals("1.0.0").inferences, 100u);
  // A batch replayed whole (the acknowledgement was lost): stored once.
  ASSERT_EQ(post("d1", Json::array({field_heartbeat(2, "1.0.0", "r1/1", 100, 1, 2.0)})).status,
            200);
  ASSERT_EQ(post("d1", Json::array({field_heartbeat(3, "1.0.0", "r1/1", 150, 4, 2.0)})).status,
            200);
  FieldTotals t = totals("1.0.0");
  EXPECT_EQ(t.inferences, 150u);
  EXPECT_EQ(t.errors, 4u);
  EXPECT_EQ(t.latency.counts[latency_bucket(2.0)], 150u);
  // A new load (the runtime restarted, or the model was reloaded): its counters start again.
  ASSERT_EQ(post("d1", Json::array({field_heartbeat(4, "1.0.0", "r2/1", 20, 0, 8.0)})).status, 200);
  // Counts going down under the same name (a runtime that names no instance): a new load too.
  ASSERT_EQ(post("d1", Json::array({field_heartbeat(5, "1.0.0", "r2/1", 5, 0, 8.0)})).status, 200);
  t = totals("1.0.0");
  EXPECT_EQ(t.inferences, 175u);
  EXPECT_EQ(t.errors, 4u);
  EXPECT_EQ(t.latency.counts[latency_bucket(8.0)], 25u);
  EXPECT_EQ(t.devices, 1);
  // Another device and another version are kept apart.
  ASSERT_EQ(post("d2", Json::array({field_heartbeat(1, "2.0.0", "x/1", 40, 0, 1.0)})).status, 200);
  EXPECT_EQ(totals("1.0.0").inferences, 175u);
  EXPECT_EQ(totals("2.0.0").inferences, 40u);
  auto by = device_field(*db, "d1");
  ASSERT_TRUE(by);
  ASSERT_EQ(by->size(), 1u);
  EXPECT_EQ(by->at(0).totals.inferences, 175u);

  const std::string before = dump(db_path());
  Json bad = field_heartbeat(6, "1.0.0", "r2/1", 10, 0, 8.0);
  bad["body"]["field"][0]["errors"] = -3;
  expect_refused(post("d1", Json::array({bad})), 400, "errors is not an integer", before);
  bad = field_heartbeat(6, "1.0.0", "r2/1", 10, 0, 8.0);
  bad["body"]["field"][0]["latency"] = Json::array({Json::array({kLatencyBuckets, 1})});
  expect_refused(post("d1", Json::array({bad})), 400, "out of range", before);
}

// A device nobody vouched for (pending) cannot move the fleet's field health: made-up latencies
// would halt a rollout (or hide a regression) otherwise. Its own view keeps what it sent.
TEST_F(Fleet, FieldHealthOfUnadmittedDevicesCountsForNothing) {
  open_ingest(IngestOptions{});  // new devices are pending
  ASSERT_EQ(
      post("fake", Json::array({field_heartbeat(1, "1.0.0", "x/1", 5000, 4000, 900.0)})).status,
      200);
  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  auto t = field_totals(*db, "detector", "1.0.0");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->runs(), 0u);
  EXPECT_EQ(t->devices, 0);
  auto by = field_by_version(*db, "detector");
  ASSERT_TRUE(by);
  EXPECT_TRUE(by->empty());
  auto own = device_field(*db, "fake");
  ASSERT_TRUE(own);
  ASSERT_EQ(own->size(), 1u);
  EXPECT_EQ(own->at(0).totals.inferences, 5000u);
  // Accepted, it counts.
  ASSERT_TRUE(set_admission(*db, {"fake"}, Admission::admitted, now_seconds()));
  t = field_totals(*db, "detector", "1.0.0");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->runs(), 9000u);
}

TEST_F(Fleet, MigrationsGoDownAndUp) {
  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  EXPECT_EQ(*storage::schema_version(*db), fleet_migrations().back().version);
  ASSERT_TRUE(storage::migrate_down_to(*db, 0));
  EXPECT_FALSE(db->prepare("SELECT * FROM devices"));
  ASSERT_TRUE(storage::migrate(*db, fleet_migrations()));
  EXPECT_TRUE(db->prepare("SELECT * FROM devices"));
}

class Rollouts : public Fleet {
 protected:
  void SetUp() override {
    auto repo = Repository::init(work_ / "repo", Settings{});
    ASSERT_TRUE(repo) << repo.error().message();
    repo_ = std::make_unique<Repository>(std::move(*repo));
    for (const char* v : {"1.0.0", "2.0.0", "3.0.0"}) {
      test::make_model_dir(work_ / (std::string("src-") + v), std::string(1000, v[0]));
      ASSERT_TRUE(repo_->add_release(work_ / (std::string("src-") + v), v));
    }
    ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = "1.0.0";
    ASSERT_TRUE(repo_->set_channel(req));
    open_ingest();
    for (int i = 0; i < 10; ++i) {
      const std::string id = "dev-" + std::to_string(i);
      ASSERT_EQ(post(id, Json::array({event(1, id, "installed", "", "1.0.0")})).status, 200);
      seq_[id] = 1;
    }
    auto db = open_fleet_db(db_path());
    ASSERT_TRUE(db);
    db_ = std::make_unique<storage::Database>(std::move(*db));
  }
  Channel channel() {
    auto chs = repo_->show_channels("stable");
    EXPECT_TRUE(chs && chs->size() == 1u);
    return chs->at(0);
  }
  // Each device does what the published channel tells it; `fail` versions fail to install
  // (`fail_state` "failed": before the switch; "rolled_back": in the trial after it).
  void devices_poll(const std::string& fail = "", const std::string& fail_state = "failed") {
    const Channel ch = channel();
    for (auto& [id, seq] : seq_) {
      const std::string want = wanted_version(ch, id, {});
      auto rows = devices(filter("detector"));
      std::string have;
      for (const auto& r : rows) {
        if (r.device == id) have = r.version;
      }
      if (want.empty() || want == have) continue;
      ++seq;
      Json ev = want == fail ? event(seq, id, fail_state, have, want, "hook exited with 1")
                             : event(seq, id, "installed", have, want);
      ASSERT_EQ(post(id, Json::array({ev})).status, 200);
    }
  }
  // detector on stable: halts above 5%, no minimum time per step.
  static RolloutSpec make_spec(const std::string& version, std::vector<unsigned> percents,
                               std::int64_t min_devices) {
    RolloutSpec s;
    s.channel = "stable";
    s.model = "detector";
    s.version = version;
    s.percents = std::move(percents);
    s.max_failure_bp = 500;
    s.min_devices = min_devices;
    s.step_after = std::chrono::seconds(0);
    return s;
  }
  // The devices running `version` now.
  std::set<std::string> running(const std::string& version) {
    std::set<std::string> out;
    for (const auto& r : devices(filter("detector", version))) out.insert(r.device);
    return out;
  }
  RolloutInfo tick(TimePoint at = now_seconds()) {
    auto r = tick_rollout(*db_, *repo_, "stable", "detector", at);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : RolloutInfo{};
  }

  std::unique_ptr<Repository> repo_;
  std::unique_ptr<storage::Database> db_;
  std::map<std::string, std::int64_t> seq_;
};

TEST_F(Rollouts, AdvancesThroughHealthyStepsToCompletion) {
  RolloutSpec spec = make_spec("2.0.0", {30, 100}, 1);
  auto started = start_rollout(*db_, *repo_, spec, now_seconds());
  ASSERT_TRUE(started) << started.error().message();
  EXPECT_EQ(started->state, "running");
  EXPECT_EQ(started->previous_version, "1.0.0");
  EXPECT_EQ(channel().rollout.percent, 30u);
  EXPECT_EQ(channel().rollout.fallback_version, "1.0.0");
  auto again = start_rollout(*db_, *repo_, spec, now_seconds());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), Errc::already_exists);

  devices_poll();
  auto r = tick();
  EXPECT_EQ(r.step, 1) << (r.transitions.empty() ? "" : r.transitions.back().reason);
  EXPECT_EQ(channel().rollout.percent, 100u);
  EXPECT_EQ(r.counts.targeted, 10);
  devices_poll();
  r = tick();
  EXPECT_EQ(r.state, "completed");
  EXPECT_EQ(r.counts.updated, 10);
  ASSERT_EQ(r.transitions.size(), 3u);
  EXPECT_NE(r.transitions[1].reason.find("advanced to 100%"), std::string::npos);
  EXPECT_EQ(devices(filter("", "2.0.0")).size(), 10u);
  // Nothing active any more.
  auto t = tick_rollout(*db_, *repo_, "stable", "detector", now_seconds());
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code(), Errc::not_found);
}

TEST_F(Rollouts, FailingVersionHaltsAndRepublishesThePrevious) {
  RolloutSpec spec = make_spec("3.0.0", {50, 100}, 2);
  ASSERT_TRUE(start_rollout(*db_, *repo_, spec, now_seconds()));
  // The 50% step may hold none of the ten devices (random salt): then it advances to 100%.
  RolloutInfo r;
  for (int round = 0; round < 2 && r.state != "halted"; ++round) {
    devices_poll("3.0.0");
    r = tick();
  }
  ASSERT_EQ(r.state, "halted");
  EXPECT_GT(r.counts.failed, 0);
  EXPECT_NE(r.transitions.back().reason.find("republished 1.0.0"), std::string::npos)
      << r.transitions.back().reason;
  const Channel ch = channel();
  EXPECT_EQ(ch.version, "1.0.0");
  EXPECT_EQ(ch.rollout.percent, 100u);
  EXPECT_TRUE(ch.allow_downgrade);
  auto status = rollout_status(*db_, "stable", "detector");
  ASSERT_TRUE(status && *status);
  EXPECT_EQ((*status)->state, "halted");
}

// The agent's rollback after the switch (state "rolled_back": it ran `to` on trial and went back
// to `from` by itself) counts against the rollout like a failure, and the device shows where it is.
TEST_F(Rollouts, DevicesRollingBackHaltTheRollout) {
  RolloutSpec spec = make_spec("3.0.0", {50, 100}, 2);
  ASSERT_TRUE(start_rollout(*db_, *repo_, spec, now_seconds()));
  RolloutInfo r;
  for (int round = 0; round < 2 && r.state != "halted"; ++round) {
    devices_poll("3.0.0", "rolled_back");
    r = tick();
  }
  ASSERT_EQ(r.state, "halted");
  EXPECT_GT(r.counts.rolled_back, 0);
  EXPECT_EQ(r.counts.failed, 0);
  EXPECT_EQ(channel().version, "1.0.0");
  int rolled = 0;
  for (const auto& row : devices(filter("detector"))) {
    if (row.rolled_back_from.empty()) continue;
    ++rolled;
    EXPECT_EQ(row.version, "1.0.0") << row.device << " runs the version it went back to";
    EXPECT_EQ(row.rolled_back_from, "3.0.0");
    EXPECT_EQ(row.state, "failed");
    EXPECT_EQ(row.last_error, "hook exited with 1");
  }
  EXPECT_EQ(rolled, r.counts.rolled_back);
}

// The finding: made-up ids whose buckets fall in a step (the salt is in the public channel
// file) reported the new version and advanced the step, or reported failures and halted the
// rollout. Under the pending default they count for nothing until an operator accepts them.
TEST_F(Rollouts, PendingDevicesCanNeitherAdvanceNorHaltARollout) {
  open_ingest(IngestOptions{});  // the ten admitted devices stay admitted
  RolloutSpec spec = make_spec("2.0.0", {50, 100}, 5);
  // A salt under which at least one admitted device is in the 50% step (else the step has
  // nobody to wait for and advances by itself; 1 in 1024).
  std::string salt;
  int admitted_in_step = 0;
  for (int attempt = 0; attempt < 5 && admitted_in_step == 0; ++attempt) {
    if (attempt > 0) {
      ASSERT_TRUE(abort_rollout(*db_, *repo_, "stable", "detector", now_seconds()));
    }
    ASSERT_TRUE(start_rollout(*db_, *repo_, spec, now_seconds()));
    salt = channel().rollout.salt;
    for (const auto& [id, seq] : seq_) admitted_in_step += rollout_bucket(salt, id) < 5000;
  }
  ASSERT_GT(admitted_in_step, 0);
  // Forty invented ids in the step: twenty report failures, twenty the new version.
  std::vector<std::string> fakes;
  for (int i = 0; fakes.size() < 40; ++i) {
    const std::string id = "fake-" + std::to_string(i);
    if (rollout_bucket(salt, id) < 5000) fakes.push_back(id);
  }
  for (std::size_t i = 0; i < fakes.size(); ++i) {
    const std::string& id = fakes[i];
    Json ev = i < 20 ? event(1, id, "failed", "1.0.0", "2.0.0", "made up")
                     : event(1, id, "installed", "1.0.0", "2.0.0");
    ASSERT_EQ(post(id, Json::array({ev})).status, 200);
  }
  RolloutInfo r = tick();
  EXPECT_EQ(r.state, "running") << (r.transitions.empty() ? "" : r.transitions.back().reason);
  EXPECT_EQ(r.step, 0);
  EXPECT_EQ(r.counts.targeted, admitted_in_step);
  EXPECT_EQ(r.counts.failed + r.counts.updated, 0);
  EXPECT_EQ(channel().version, "2.0.0");
  EXPECT_EQ(channel().rollout.percent, 50u);
  // Accepted, the same reports count: the failures halt it (so the guard above is admission).
  auto db = open_fleet_db(db_path());
  ASSERT_TRUE(db);
  ASSERT_TRUE(set_admission(*db, fakes, Admission::admitted, now_seconds()));
  r = tick();
  EXPECT_EQ(r.state, "halted");
  EXPECT_EQ(r.counts.failed, 20);
}

TEST_F(Rollouts, PauseResumeAbortAndBadSpecs) {
  RolloutSpec spec = make_spec("2.0.0", {10, 100}, 1);
  ASSERT_TRUE(start_rollout(*db_, *repo_, spec, now_seconds()));
  ASSERT_TRUE(pause_rollout(*db_, "stable", "detector", now_seconds()));
  EXPECT_FALSE(pause_rollout(*db_, "stable", "detector", now_seconds()));
  devices_poll();
  EXPECT_EQ(tick().step, 0);  // paused: no advance
  ASSERT_TRUE(resume_rollout(*db_, "stable", "detector", now_seconds()));
  auto aborted = abort_rollout(*db_, *repo_, "stable", "detector", now_seconds());
  ASSERT_TRUE(aborted) << aborted.error().message();
  EXPECT_EQ(aborted->state, "aborted");
  EXPECT_EQ(channel().version, "1.0.0");

  EXPECT_FALSE(parse_percents("5,25"));
  EXPECT_FALSE(parse_percents("25,5,100"));
  EXPECT_FALSE(parse_percents("0,100"));
  EXPECT_EQ(*parse_percents("5,25,100"), (std::vector<unsigned>{5, 25, 100}));
  EXPECT_EQ(*parse_failure_rate("5%"), 500u);
  EXPECT_EQ(*parse_failure_rate("0.5%"), 50u);
  EXPECT_FALSE(parse_failure_rate("150%"));
  EXPECT_FALSE(parse_failure_rate("five"));
  EXPECT_FALSE(parse_failure_rate("5"));  // a bare number is ambiguous: the % is required
  EXPECT_FALSE(parse_failure_rate("0.05"));
  EXPECT_FALSE(parse_failure_rate("-5%"));
  EXPECT_FALSE(parse_failure_rate("1e1%"));
  RolloutSpec unreleased = make_spec("9.0.0", {100}, 1);
  const std::string before = dump(db_path());
  EXPECT_FALSE(start_rollout(*db_, *repo_, unreleased, now_seconds()));
  EXPECT_EQ(dump(db_path()), before);
}

// --rate: the share grows at most once a minute by at most N of the rollout's devices (simulated
// clock: ticks every 20 s), stops below each step's percentage until the step's gate passes, and
// every device ends on the version.
TEST_F(Rollouts, PacedRolloutGivesAtMostRateDevicesAMinute) {
  RolloutSpec spec = make_spec("2.0.0", {50, 100}, 1);
  spec.rate_per_min = 2;
  const TimePoint t0 = now_seconds();
  auto started = start_rollout(*db_, *repo_, spec, t0);
  ASSERT_TRUE(started) << started.error().message();
  EXPECT_EQ(started->rate_per_min, 2u);
  EXPECT_EQ(channel().rollout.share_bp(), started->share_bp);
  std::vector<std::pair<std::int64_t, std::size_t>> newly;  // (seconds after t0, devices)
  std::set<std::string> have;
  RolloutInfo r = *started;
  for (int k = 0; k <= 120 && r.state == "running"; ++k) {
    if (k > 0) r = tick(t0 + std::chrono::seconds(20 * k));
    EXPECT_EQ(channel().rollout.share_bp(), r.state == "running" ? r.share_bp : 10000u);
    if (r.step == 0) {
      EXPECT_LE(r.share_bp, 5000u) << "beyond the first step's 50%";
    }
    devices_poll();
    const auto now_running = running("2.0.0");
    EXPECT_TRUE(std::includes(now_running.begin(), now_running.end(), have.begin(), have.end()));
    newly.emplace_back(20 * k, now_running.size() - have.size());
    have = now_running;
  }
  EXPECT_EQ(r.state, "completed") << (r.transitions.empty() ? "" : r.transitions.back().reason);
  EXPECT_EQ(have.size(), 10u);
  // In any 60 seconds, at most 2 devices newly took the version: over 10 devices, >= 5 minutes.
  for (const auto& [at, n] : newly) {
    std::size_t in_window = 0;
    for (const auto& [at2, n2] : newly) in_window += (at2 >= at && at2 < at + 60) ? n2 : 0;
    EXPECT_LE(in_window, 2u) << "from " << at << " s";
  }
  EXPECT_GE(newly.back().first, 4 * 60);
  bool reached = false;
  for (const auto& t : r.transitions)
    reached |= t.reason.find("reached 50% at 2 devices/min") != std::string::npos;
  EXPECT_TRUE(reached);
}

TEST_F(Rollouts, PacedRolloutStillHaltsAtOnce) {
  RolloutSpec spec = make_spec("3.0.0", {100}, 1);
  spec.rate_per_min = 3;
  const TimePoint t0 = now_seconds();
  ASSERT_TRUE(start_rollout(*db_, *repo_, spec, t0));
  devices_poll("3.0.0");
  const RolloutInfo r = tick(t0 + std::chrono::seconds(1));
  EXPECT_EQ(r.state, "halted");
  EXPECT_GE(r.counts.failed, 1);
  EXPECT_LE(r.counts.failed, 3);
  EXPECT_EQ(channel().version, "1.0.0");
  EXPECT_EQ(channel().rollout.share_bp(), 10000u);
}

// A sample bucket holding more known devices than the rate could not be paced: refused with the
// smallest rate that works, and nothing recorded or published.
TEST_F(Rollouts, RateFinerThanTheSampleIsRefused) {
  const std::string salt = rollout_salt("stable", "detector", "2.0.0");
  std::map<unsigned, std::string> seen;
  std::vector<std::string> pair;
  for (int i = 0; pair.empty(); ++i) {
    const std::string id = "twin-" + std::to_string(i);
    auto [it, fresh] = seen.emplace(rollout_bucket(salt, id), id);
    if (!fresh) pair = {it->second, id};
  }
  for (const auto& id : pair) {
    ASSERT_EQ(post(id, Json::array({event(1, id, "installed", "", "1.0.0")})).status, 200);
  }
  RolloutSpec spec = make_spec("2.0.0", {100}, 1);
  spec.rate_per_min = 1;
  const std::string before = dump(db_path());
  auto r = start_rollout(*db_, *repo_, spec, now_seconds());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_NE(r.error().message().find("holds 2 devices of the 12"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("use at least 2/min"), std::string::npos);
  EXPECT_EQ(dump(db_path()), before);
  EXPECT_EQ(channel().version, "1.0.0");
  spec.rate_per_min = 2;
  EXPECT_TRUE(start_rollout(*db_, *repo_, spec, now_seconds()));
}

TEST_F(Rollouts, ScheduledRolloutPublishesNothingUntilItsTime) {
  RolloutSpec spec = make_spec("2.0.0", {30, 100}, 1);
  const TimePoint t0 = now_seconds();
  spec.start_at = std::chrono::duration_cast<std::chrono::seconds>(
                      (t0 + std::chrono::hours(2)).time_since_epoch())
                      .count();
  const std::string channel_before = channel().serialize();
  auto r = start_rollout(*db_, *repo_, spec, t0);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->state, "scheduled");
  EXPECT_EQ(r->previous_version, "1.0.0");
  EXPECT_EQ(channel().serialize(), channel_before);
  // It holds the channel: another rollout is refused; it cannot be paused, only aborted.
  auto other = start_rollout(*db_, *repo_, make_spec("3.0.0", {100}, 1), t0);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code(), Errc::already_exists);
  EXPECT_FALSE(pause_rollout(*db_, "stable", "detector", t0));
  devices_poll();
  EXPECT_EQ(tick(t0 + std::chrono::minutes(119)).state, "scheduled");
  EXPECT_EQ(channel().serialize(), channel_before);
  EXPECT_TRUE(running("2.0.0").empty());
  auto listed = list_rollouts(*db_);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->at(0).state, "scheduled");

  r = tick(t0 + std::chrono::minutes(120));
  EXPECT_EQ(r->state, "running");
  EXPECT_EQ(channel().version, "2.0.0");
  EXPECT_EQ(channel().rollout.percent, 30u);
  ASSERT_EQ(r->transitions.size(), 2u);
  EXPECT_NE(r->transitions[0].reason.find("scheduled to begin at"), std::string::npos);
  EXPECT_NE(r->transitions[1].reason.find("began as scheduled"), std::string::npos);
  EXPECT_EQ(r->started_at, std::chrono::duration_cast<std::chrono::seconds>(
                               (t0 + std::chrono::minutes(120)).time_since_epoch())
                               .count());
}

TEST_F(Rollouts, AbortedScheduledRolloutNeverPublishes) {
  RolloutSpec spec = make_spec("2.0.0", {100}, 1);
  const TimePoint t0 = now_seconds();
  spec.start_at =
      std::chrono::duration_cast<std::chrono::seconds>(t0.time_since_epoch()).count() + 600;
  const std::string channel_before = channel().serialize();
  ASSERT_TRUE(start_rollout(*db_, *repo_, spec, t0));
  auto aborted = abort_rollout(*db_, *repo_, "stable", "detector", t0);
  ASSERT_TRUE(aborted) << aborted.error().message();
  EXPECT_EQ(aborted->state, "aborted");
  EXPECT_FALSE(tick_rollout(*db_, *repo_, "stable", "detector", t0 + std::chrono::hours(1)));
  EXPECT_EQ(channel().serialize(), channel_before);
}

// A channel that took the version meanwhile (by hand) cannot begin the rollout: aborted, saying
// why, at its start time.
TEST_F(Rollouts, ScheduledRolloutThatCannotBeginIsAbortedWithTheReason) {
  RolloutSpec spec = make_spec("2.0.0", {100}, 1);
  const TimePoint t0 = now_seconds();
  spec.start_at =
      std::chrono::duration_cast<std::chrono::seconds>(t0.time_since_epoch()).count() + 600;
  ASSERT_TRUE(start_rollout(*db_, *repo_, spec, t0));
  ChannelRequest req;
  req.channel = "stable";
  req.model = "detector";
  req.version = "2.0.0";
  ASSERT_TRUE(repo_->set_channel(req));
  const RolloutInfo r = tick(t0 + std::chrono::minutes(10));
  EXPECT_EQ(r.state, "aborted");
  ASSERT_FALSE(r.transitions.empty());
  EXPECT_NE(r.transitions.back().reason.find("could not begin as scheduled: channel stable "
                                             "already gives detector 2.0.0 to everyone"),
            std::string::npos)
      << r.transitions.back().reason;
}

// Field gates: what the runtime counts on the devices halts a rollout whose version fails
// inferences or got slower than the previous one on the same devices, and a gated step waits for
// enough runs before it advances.
TEST_F(Rollouts, FieldErrorRateHaltsAndAGatedStepWaitsForRuns) {
  RolloutSpec spec = make_spec("2.0.0", {100}, 1);
  spec.max_error_bp = 100;  // 1%
  spec.min_inferences = 1000;
  ASSERT_TRUE(start_rollout(*db_, *repo_, spec, now_seconds()));
  devices_poll();
  // 10 devices x 50 runs, 4% failed: too few runs to judge, and too few to advance.
  for (auto& [id, seq] : seq_) {
    ASSERT_EQ(
        post(id, Json::array({field_heartbeat(++seq, "2.0.0", id + "/1", 48, 2, 3.0)})).status,
        200);
  }
  RolloutInfo r = tick();
  EXPECT_EQ(r.state, "running") << (r.transitions.empty() ? "" : r.transitions.back().reason);
  EXPECT_EQ(r.field.version.runs(), 500u);
  EXPECT_EQ(r.field.version.devices, 10);
  // 10 x 150 runs, still 4%: judged, halted.
  for (auto& [id, seq] : seq_) {
    ASSERT_EQ(
        post(id, Json::array({field_heartbeat(++seq, "2.0.0", id + "/1", 144, 6, 3.0)})).status,
        200);
  }
  r = tick();
  ASSERT_EQ(r.state, "halted");
  EXPECT_NE(r.transitions.back().reason.find("field error rate 4.0%"), std::string::npos)
      << r.transitions.back().reason;
  EXPECT_EQ(channel().version, "1.0.0");
}

TEST_F(Rollouts, FieldLatencyRegressionOnTheSameDevicesHalts) {
  // Before the rollout every device served 1.0.0 at ~1 ms.
  for (auto& [id, seq] : seq_) {
    ASSERT_EQ(
        post(id, Json::array({field_heartbeat(++seq, "1.0.0", id + "/1", 300, 0, 1.0)})).status,
        200);
  }
  RolloutSpec spec = make_spec("2.0.0", {100}, 1);
  spec.max_latency_regression_pct = 50;
  spec.min_inferences = 1000;
  ASSERT_TRUE(start_rollout(*db_, *repo_, spec, now_seconds()));
  devices_poll();
  // 20% slower: within the limit; and, with enough runs, the rollout completes.
  for (auto& [id, seq] : seq_) {
    ASSERT_EQ(
        post(id, Json::array({field_heartbeat(++seq, "2.0.0", id + "/2", 200, 0, 1.2)})).status,
        200);
  }
  RolloutInfo r = tick();
  EXPECT_EQ(r.state, "completed") << (r.transitions.empty() ? "" : r.transitions.back().reason);
  EXPECT_EQ(r.field.same_devices.version.devices, 10);

  // 3.0.0 is 5x slower than 2.0.0 on the same devices: halted, back to 2.0.0.
  spec.version = "3.0.0";
  ASSERT_TRUE(start_rollout(*db_, *repo_, spec, now_seconds()));
  devices_poll();
  for (auto& [id, seq] : seq_) {
    ASSERT_EQ(
        post(id, Json::array({field_heartbeat(++seq, "3.0.0", id + "/3", 200, 0, 6.0)})).status,
        200);
  }
  r = tick();
  ASSERT_EQ(r.state, "halted");
  EXPECT_NE(r.transitions.back().reason.find("field p99 latency"), std::string::npos)
      << r.transitions.back().reason;
  EXPECT_NE(r.transitions.back().reason.find("2.0.0's"), std::string::npos);
  EXPECT_EQ(channel().version, "2.0.0");
}

TEST(RolloutRegression, ParsesWholePercentages) {
  EXPECT_EQ(*parse_regression("20%"), 20u);
  EXPECT_EQ(*parse_regression("0%"), 0u);
  for (const char* bad : {"20", "-5%", "1.5%", "", "%", "100001%"}) {
    EXPECT_FALSE(parse_regression(bad)) << bad;
  }
}

TEST(RolloutRate, ParsesPerMinuteAndPerHour) {
  EXPECT_EQ(*parse_rate("10/min"), 10u);
  EXPECT_EQ(*parse_rate("10/m"), 10u);
  EXPECT_EQ(*parse_rate("600/h"), 10u);
  EXPECT_EQ(*parse_rate("100000/min"), 100000u);
  for (const char* bad : {"", "10", "0/min", "100001/min", "90/h", "-1/min", "1.5/min", "ten/min",
                          "10/s", "10/day", "/min", "99999999999/min"}) {
    auto r = parse_rate(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    }
  }
}

}  // namespace
}  // namespace mota::manager
