#include "manager/fleet/fleet_ingest.hpp"

#include <pthread.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include "common/http.hpp"
#include "common/log.hpp"
#include "manager/fleet/field_health.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "manager/fleet/report_parser.hpp"
#include "manager/fleet/report_sessions.hpp"
#include "manifest/canonical_json.hpp"
#include "protocol/identity.hpp"
#include "protocol/report.hpp"
#include "protocol/session.hpp"
#include "storage/sqlite.hpp"

namespace mota::manager {

namespace {

// A report item, checked and taken apart on the request's thread (manager/fleet/report_parser.hpp),
// so that the single writer only runs SQL (the JSON work scales with the HTTP workers, the
// writer does not).
using Item = ReportItem;
using ModelReport = ReportModel;

struct Outcome {
  int status = 200;
  std::string body;
};

struct Job {
  std::string device;
  std::string key;
  std::string remote;      // the client's address (registration limits, first_remote)
  std::string enrollment;  // the verified enrollment key's name, "" = none
  std::vector<Item> items;
  // Called once by the writer, after the job's transaction committed (or failed): answers the
  // request (an HTTP Responder, or the promise of a synchronous handle()).
  std::function<void(Outcome)> done;
};

net::HttpReply reply(int status, const std::string& error) {
  net::HttpReply r;
  r.status = status;
  // Messages may quote what a client sent: invalid UTF-8 is replaced, never a throw.
  r.body = Json{{"error", error}}.dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

std::string header(const net::HttpRequest& req, const std::string& lower_name) {
  // The HttpServer lower-cases names (http_server.hpp), so the lookup is usually exact; the scan
  // keeps hand-built requests with other spellings working.
  if (auto it = req.headers.find(lower_name); it != req.headers.end()) return it->second;
  for (const auto& [k, v] : req.headers) {
    if (k.size() != lower_name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < k.size() && same; ++i) {
      same = std::tolower(static_cast<unsigned char>(k[i])) == lower_name[i];
    }
    if (same) return v;
  }
  return "";
}

bool lower_hex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// The refusal of a request whose X-Mota-Device is not the route's device id.
std::optional<std::string> forged_device(const std::string& header_device, const std::string& id) {
  if (header_device == id) return std::nullopt;
  return "report: X-Mota-Device '" + header_device + "' is not the device '" + id +
         "' of the route";
}

// A device-level metadata event: "metadata_error" / "metadata_ok", or the per-model "failed"
// event with step "refresh" that agents before those events sent for each model.
bool metadata_event(const ReportItem& e) {
  return e.state == "metadata_error" || e.state == "metadata_ok" ||
         (e.state == "failed" && e.step == "refresh");
}

// A heartbeat's block list as stored in devices.blocked (manager/fleet/fleet_db.hpp).
std::string blocked_json(const std::vector<ReportBlocked>& list) {
  Json arr = Json::array();
  for (const auto& b : list) {
    arr.push_back(
        {{"model", b.model}, {"version", b.version}, {"reason", b.reason}, {"since", b.since}});
  }
  return arr.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::int64_t unix_seconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// The columns the writer sets, except updated_at.
bool same_state(const DeviceModelRow& a, const DeviceModelRow& b) {
  return a.version == b.version && a.slot == b.slot && a.committed == b.committed &&
         a.state == b.state && a.target == b.target && a.last_error == b.last_error &&
         a.rolled_back_from == b.rolled_back_from && a.channel == b.channel &&
         a.failed_version == b.failed_version && a.failed_at == b.failed_at;
}

}  // namespace

// The writer's prepared statements, compiled once on the writer thread (preparing them per
// item cost more than the inserts). Destroyed before the Database (declared after it in Impl).
struct Statements {
  storage::Statement find_key, insert_device, insert_event, update_device, select_installed,
      upsert_installed, touch_installed, set_metadata, admit_pending, count_pending, select_field,
      upsert_field;

  static Result<Statements> prepare(storage::Database& db) {
    return Statements{
        MOTA_TRY(db.prepare("SELECT key, admission FROM devices WHERE id = ?")),
        MOTA_TRY(db.prepare(
            "INSERT INTO devices (id, key, enrolled, first_seen, last_seen, admission, "
            "admitted_by, admitted_at, first_remote) VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?)")),
        MOTA_TRY(db.prepare(
            "INSERT OR IGNORE INTO events (device, seq, kind, created_at, received_at, model, "
            "from_version, to_version, state, step, error, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?)")),
        // The block list rides along: the row is rewritten for last_seen anyway, and no index
        // holds it, so a heartbeat repeating it costs nothing more.
        MOTA_TRY(db.prepare(
            "UPDATE devices SET last_seen = ?, last_seq = max(last_seq, ?), agent_version = "
            "coalesce(?, agent_version), arch = coalesce(?, arch), blocked = coalesce(?, blocked), "
            "labels = coalesce(?, labels) WHERE id = ?")),
        MOTA_TRY(db.prepare(
            "SELECT version, slot, committed, state, target, last_error, rolled_back_from, "
            "channel, failed_version, failed_at FROM installed WHERE device = ? AND model = ?")),
        MOTA_TRY(db.prepare(
            "INSERT INTO installed (device, model, version, slot, committed, state, target, "
            "last_error, rolled_back_from, channel, failed_version, failed_at, updated_at) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, model) DO UPDATE SET "
            "version = excluded.version, slot = excluded.slot, committed = excluded.committed, "
            "state = excluded.state, target = excluded.target, last_error = excluded.last_error, "
            "rolled_back_from = excluded.rolled_back_from, channel = excluded.channel, "
            "failed_version = excluded.failed_version, failed_at = excluded.failed_at, "
            "updated_at = excluded.updated_at")),
        // An event that changes nothing but the time: an UPDATE of updated_at alone rewrites
        // no index (none holds it since migration 0003), where the upsert rewrites every index
        // of the table and runs the installed_counts trigger's check.
        MOTA_TRY(db.prepare("UPDATE installed SET updated_at = ? WHERE device = ? AND model = ?")),
        // A metadata event (rare: agents send one when the condition changes): the error ('' =
        // cleared) and since when; a new error while one is on record keeps the first one's time.
        MOTA_TRY(db.prepare(
            "UPDATE devices SET metadata_error = ?1, metadata_error_since = CASE WHEN ?1 = '' "
            "THEN 0 WHEN metadata_error_since = 0 THEN ?2 ELSE metadata_error_since END WHERE "
            "id = ?3")),
        // A pending device that came back with an enrollment signature.
        MOTA_TRY(db.prepare("UPDATE devices SET admission = 'admitted', admitted_by = ?, "
                            "admitted_at = ? WHERE id = ? AND admission = 'pending'")),
        // From the devices_unadmitted partial index.
        MOTA_TRY(db.prepare("SELECT COUNT(*) FROM devices WHERE admission = 'pending'")),
        MOTA_TRY(db.prepare("SELECT load, last_inferences, last_errors, last_latency, inferences, "
                            "errors, latency FROM field_health WHERE device = ? AND model = ? "
                            "AND version = ?")),
        MOTA_TRY(db.prepare(
            "INSERT INTO field_health (device, model, version, load, last_inferences, "
            "last_errors, last_latency, inferences, errors, latency, updated_at) VALUES (?, ?, "
            "?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, model, version) DO UPDATE SET load = "
            "excluded.load, last_inferences = excluded.last_inferences, last_errors = "
            "excluded.last_errors, last_latency = excluded.last_latency, inferences = "
            "excluded.inferences, errors = excluded.errors, latency = excluded.latency, "
            "updated_at = excluded.updated_at")),
    };
  }
};

// How often the checkpointer copies the WAL into the database: also the durability window of
// an acknowledged report against a power cut (docs/fleet.md).
constexpr std::chrono::milliseconds kCheckpointInterval{1000};
// WAL size (4 KiB frames, 32 MB) from which the checkpointer restarts the WAL; well below the
// writer's own automatic checkpoint threshold (kWriterAutocheckpointFrames).
constexpr std::int64_t kRestartFrames = 8000;
// The writer's own automatic checkpoint threshold (FleetIngest::open()).
constexpr std::int64_t kWriterAutocheckpointFrames = 50000;

struct FleetIngest::Impl {
  IngestOptions options;
  storage::Database db;
  std::optional<Statements> sql;  // after db: destroyed first; prepared by the writer
  // UPDATEs of an existing installed row that set only the columns that changed (the index is
  // the bit mask of update_changed()), prepared on first use by the writer.
  std::array<std::optional<storage::Statement>, 1024> update_installed;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Job>> queue;
  bool stopping = false;
  std::thread writer;
  // Checkpoints run here, on their own connection, so the writer never waits for the fsyncs of
  // a checkpoint (with synchronous=NORMAL the only ones left). See prepare_ingest_connection().
  std::condition_variable checkpoint_cv;
  std::thread checkpointer;

  mutable std::mutex stats_mu;
  IngestStats stats;

  // Sessions (null when off), and a connection of their own for the handshake's key check, so
  // handshakes never wait for the writer.
  std::unique_ptr<ReportSessions> sessions;
  std::mutex read_mu;
  std::optional<storage::Database> read_db;
  std::optional<storage::Statement> read_key;  // after read_db: destroyed first
  std::optional<storage::Statement> read_enrollment;

  // Registration limits (writer thread only): the current minute's registrations, overall and
  // per source address, and the pending devices on record (-1 = count again: the CLI accepts and
  // rejects in another process, so the count is re-read when it reaches the bound).
  std::int64_t reg_minute = -1;
  std::size_t reg_total = 0;
  std::unordered_map<std::string, std::size_t> reg_by_address;
  std::int64_t pending_count = -1;
  std::int64_t pending_counted_at = 0;

  Impl(IngestOptions o, storage::Database d) : options(std::move(o)), db(std::move(d)) {
    if (options.sessions) {
      sessions = std::make_unique<ReportSessions>(
          SessionOptions{options.session_ttl, options.max_sessions, options.max_clock_skew});
    }
  }

  void count_refused() {
    std::lock_guard lock(stats_mu);
    ++stats.requests_refused;
  }

  net::HttpReply handle(const net::HttpRequest& req);
  void handle_async(net::HttpRequest&& req, net::Responder respond);
  // The checks of a report before it is queued: a refusal, or the job to queue.
  std::variant<net::HttpReply, std::unique_ptr<Job>> admit(const net::HttpRequest& req,
                                                           bool& by_session);
  // Queues `job` for the writer; a refusal (stopping, overloaded) if it cannot be.
  std::optional<net::HttpReply> enqueue(const std::string& remote, std::unique_ptr<Job>& job);
  // The reply to `device`'s report that the writer finished.
  net::HttpReply finished(const std::string& remote, const std::string& device, Outcome out,
                          bool by_session);
  net::HttpReply handle_session(const net::HttpRequest& req);
  // Counts, logs (`what`, e.g. "report refused") and answers a refusal.
  net::HttpReply refusal(const net::HttpRequest& req, const char* what, int status,
                         const std::string& why, const std::string& device) {
    return refusal(req.remote_addr, what, status, why, device);
  }
  net::HttpReply refusal(const std::string& remote, const char* what, int status,
                         const std::string& why, const std::string& device) {
    count_refused();
    log::warn(what, {{"DEVICE", device},
                     {"STATUS", std::to_string(status)},
                     {"ERROR", why},
                     {"REMOTE", remote}});
    return reply(status, why);
  }
  static std::string route_id(const net::HttpRequest& req) {
    auto it = req.path_params.find("id");
    return it == req.path_params.end() ? "" : it->second;
  }
  // The checks of a signed request (report or handshake) to `route`: signature, X-Mota-Device
  // against the route's id, key format. The key (hex) or {status, why}.
  std::variant<std::string, Outcome> check_signed(const net::HttpRequest& req,
                                                  const std::string& route,
                                                  const std::string& id) const;
  // X-Mota-Timestamp within max_clock_skew of now: the time, or {401, why}.
  std::variant<TimePoint, Outcome> check_clock(const net::HttpRequest& req, TimePoint now) const;
  // The handshake's key against the record (read on read_db): nullopt when acceptable.
  std::optional<Outcome> check_key_on_record(const std::string& device, const std::string& key,
                                             bool enrolled);
  // X-Mota-Enrollment-*: "" when absent or naming a key not on record or revoked (logged: the
  // device is then treated as any other), the key's name when the signature verifies, or
  // {401, why} for a malformed or wrong signature.
  std::variant<std::string, Outcome> check_enrollment(const net::HttpRequest& req,
                                                      const std::string& device,
                                                      const std::string& key);
  // The refusal of a new pending device over the registration limits (writer thread), or nullopt
  // after counting it.
  Result<std::optional<Outcome>> limit_registration(const Job& job, std::int64_t now);
  void run_writer();
  void run_checkpointer(storage::Database ckpt_db);
  // Applies the jobs in one transaction; fills each job's outcome. On a database error every job
  // not refused gets 503 (nothing of the transaction is kept).
  void write_batch(std::vector<std::unique_ptr<Job>>& jobs);
  Result<Outcome> apply(Job& job, std::int64_t now, std::uint64_t& stored, std::uint64_t& dups);
  // The job's (device, model) rows, read once, changed item by item in memory and written once
  // at the end of the job: the same final rows as one read-modify-write per item.
  struct ModelRow {
    DeviceModelRow row;
    bool dirty = false;
    bool by_event = false;  // an event (not only the inventory of a heartbeat) touched it
    std::optional<DeviceModelRow> stored;  // as read, when the row exists
  };
  Result<ModelRow*> model_row(std::map<std::string, ModelRow>& rows, const std::string& device,
                              const std::string& model);
  Status update_changed(const DeviceModelRow& old, const DeviceModelRow& row,
                        const std::string& device, const std::string& model, std::int64_t now);
  static void apply_event(DeviceModelRow& row, const Item& item, std::int64_t now);
  static void apply_inventory(DeviceModelRow& row, const ModelReport& m);
  Status apply_metadata(const std::string& device, const Item& item, std::int64_t now);
  Status apply_field(const std::string& device, const ReportField& f, std::int64_t now);
};

std::variant<net::HttpReply, std::unique_ptr<Job>> FleetIngest::Impl::admit(
    const net::HttpRequest& req, bool& by_session) {
  auto refuse = [&](int status, const std::string& why, const std::string& device) {
    return refusal(req, "report refused", status, why, device);
  };
  const std::string id = route_id(req);
  if (req.body.size() > options.max_body_bytes) {
    return refuse(413,
                  "report body of " + std::to_string(req.body.size()) + " bytes is over the " +
                      std::to_string(options.max_body_bytes) + "-byte limit",
                  id);
  }
  if (!protocol::valid_device_id(id)) {
    return refuse(400, "report: the device id in the route is not 1..128 of [A-Za-z0-9._:-]", id);
  }
  if (const std::string h = header(req, "x-mota-device");
      !h.empty() && !protocol::valid_device_id(h)) {
    return refuse(400, "report: X-Mota-Device is not 1..128 of [A-Za-z0-9._:-]", id);
  }
  const std::string route = protocol::events_route(id);
  const auto now = options.now();
  // Authentication: the MAC of a session opened by a signed handshake, or the device's signature.
  std::string key, enrollment;
  const std::string session_id = header(req, "x-mota-session");
  if (!session_id.empty()) {
    if (!sessions) {
      return refuse(401,
                    "report: this server has no sessions (X-Mota-Session); sign the report "
                    "with X-Mota-Key and X-Mota-Signature",
                    id);
    }
    const std::string header_device = header(req, "x-mota-device");
    auto checked = sessions->check(session_id, header_device, header(req, "x-mota-timestamp"),
                                   route, req.body, header(req, "x-mota-mac"), now);
    if (!checked) return refuse(checked.error().http_status(), checked.error().message(), id);
    if (auto forged = forged_device(header_device, id)) return refuse(403, *forged, id);
    key = std::move(checked->device_key);
    enrollment = std::move(checked->enrollment);
  } else {
    auto signed_by = check_signed(req, route, id);
    if (auto* o = std::get_if<Outcome>(&signed_by)) return refuse(o->status, o->body, id);
    key = std::move(std::get<std::string>(signed_by));
    auto enrolled = check_enrollment(req, id, key);
    if (auto* o = std::get_if<Outcome>(&enrolled)) return refuse(o->status, o->body, id);
    enrollment = std::move(std::get<std::string>(enrolled));
  }
  if (auto clock = check_clock(req, now); auto* o = std::get_if<Outcome>(&clock)) {
    return refuse(o->status, o->body, id);
  }

  auto report = parse_report(req.body, id, options.max_batch_items);
  if (!report) return refuse(report.error().http_status(), report.error().message(), id);
  auto job = std::make_unique<Job>();
  job->device = id;
  job->key = std::move(key);
  job->remote = req.remote_addr;
  job->enrollment = std::move(enrollment);
  job->items = std::move(report->items);

  by_session = !session_id.empty();
  return job;
}

std::optional<net::HttpReply> FleetIngest::Impl::enqueue(const std::string& remote,
                                                         std::unique_ptr<Job>& job) {
  {
    std::lock_guard lock(mu);
    const char* why = stopping ? "server is stopping; report again later"
                      : queue.size() >= options.max_queued_requests
                          ? "server is overloaded; report again later"
                          : nullptr;
    if (why) return refusal(remote, "report refused", 503, why, job->device);
    queue.push_back(std::move(job));
  }
  cv.notify_one();
  return std::nullopt;
}

net::HttpReply FleetIngest::Impl::finished(const std::string& remote, const std::string& device,
                                           Outcome out, bool by_session) {
  if (out.status != 200) return refusal(remote, "report refused", out.status, out.body, device);
  {
    std::lock_guard lock(stats_mu);
    ++stats.requests_accepted;
    if (by_session) ++stats.session_reports;
  }
  net::HttpReply r;
  r.body = std::move(out.body);
  return r;
}

net::HttpReply FleetIngest::Impl::handle(const net::HttpRequest& req) {
  bool by_session = false;
  auto admitted = admit(req, by_session);
  if (auto* refused = std::get_if<net::HttpReply>(&admitted)) return std::move(*refused);
  auto job = std::move(std::get<std::unique_ptr<Job>>(admitted));
  const std::string id = job->device;
  auto promise = std::make_shared<std::promise<Outcome>>();
  auto future = promise->get_future();
  job->done = [promise](Outcome out) { promise->set_value(std::move(out)); };
  if (auto refused = enqueue(req.remote_addr, job)) return std::move(*refused);
  if (future.wait_for(options.reply_timeout) != std::future_status::ready) {
    // The writer still owns the job and will finish it; the agent sends the batch again and
    // deduplication makes that harmless.
    return refusal(req, "report refused", 503, "report not committed in time; report again later",
                   id);
  }
  return finished(req.remote_addr, id, future.get(), by_session);
}

// The same checks on the event loop; the writer answers through `respond` once the batch is
// committed, so no thread waits for it (net/http_server.hpp, route_async).
void FleetIngest::Impl::handle_async(net::HttpRequest&& req, net::Responder respond) {
  bool by_session = false;
  auto admitted = admit(req, by_session);
  if (auto* refused = std::get_if<net::HttpReply>(&admitted)) return respond(std::move(*refused));
  auto job = std::move(std::get<std::unique_ptr<Job>>(admitted));
  job->done = [this, remote = req.remote_addr, device = job->device, respond, by_session](
                  Outcome out) { respond(finished(remote, device, std::move(out), by_session)); };
  if (auto refused = enqueue(req.remote_addr, job)) respond(std::move(*refused));
}

std::variant<std::string, Outcome> FleetIngest::Impl::check_signed(const net::HttpRequest& req,
                                                                   const std::string& route,
                                                                   const std::string& id) const {
  if (auto st = protocol::verify_report(req.headers, route, req.body); !st) {
    return Outcome{401, st.error().message()};
  }
  if (auto forged = forged_device(header(req, "x-mota-device"), id)) return Outcome{403, *forged};
  std::string key = header(req, "x-mota-key");
  if (!lower_hex64(key)) {
    return Outcome{401, "report: X-Mota-Key is not 64 lower-case hex characters"};
  }
  return key;
}

std::variant<TimePoint, Outcome> FleetIngest::Impl::check_clock(const net::HttpRequest& req,
                                                                TimePoint now) const {
  const std::string ts_text = header(req, "x-mota-timestamp");
  auto ts = parse_time(ts_text);
  if (!ts) return Outcome{401, "report: X-Mota-Timestamp '" + ts_text + "' is not a UTC time"};
  const auto skew = std::chrono::abs(std::chrono::duration_cast<std::chrono::seconds>(now - *ts));
  if (skew > options.max_clock_skew) {
    return Outcome{401, "report: X-Mota-Timestamp " + ts_text + " is " +
                            std::to_string(skew.count()) +
                            " s away from the server's clock (accepted: " +
                            std::to_string(options.max_clock_skew.count()) +
                            " s); a replayed report or a device clock that is off"};
  }
  return *ts;
}

std::optional<Outcome> FleetIngest::Impl::check_key_on_record(const std::string& device,
                                                              const std::string& key,
                                                              bool enrolled) {
  std::lock_guard lock(read_mu);
  struct Record {
    std::string key, admission;
  };
  auto lookup = [&]() -> Result<std::optional<Record>> {
    if (!read_key) {
      read_key = MOTA_TRY(read_db->prepare("SELECT key, admission FROM devices WHERE id = ?"));
    }
    MOTA_TRY(read_key->reset());
    MOTA_TRY(read_key->bind(1, device));
    std::optional<Record> on_record;
    if (MOTA_TRY(read_key->step()) == storage::Step::row) {
      on_record = Record{read_key->column_text(0), read_key->column_text(1)};
    }
    MOTA_TRY(read_key->reset());
    return on_record;
  };
  auto on_record = lookup();
  if (!on_record) return Outcome{503, "fleet database: " + on_record.error().message()};
  if (*on_record) {
    if ((*on_record)->key != key) {
      return Outcome{403, "session: key " + key.substr(0, 16) +
                              "... is not the key on record for device " + device + " (" +
                              (*on_record)->key.substr(0, 16) + "...)"};
    }
    if ((*on_record)->admission == "rejected") {
      return Outcome{403, "session: device " + device +
                              " was rejected by an operator (mota devices accept ID to undo)"};
    }
  } else if (options.admission == AdmissionMode::enrolled_only && !enrolled) {
    return Outcome{
        403, "session: device " + device + " is not enrolled (mota devices enroll ID --key FILE)"};
  }
  return std::nullopt;
}

std::variant<std::string, Outcome> FleetIngest::Impl::check_enrollment(const net::HttpRequest& req,
                                                                       const std::string& device,
                                                                       const std::string& key) {
  const std::string ek = header(req, "x-mota-enrollment-key");
  const std::string sig = header(req, "x-mota-enrollment-signature");
  if (ek.empty() && sig.empty()) return std::string();
  if (!lower_hex64(ek)) {
    return Outcome{401, "enrollment: X-Mota-Enrollment-Key is not 64 lower-case hex characters"};
  }
  if (auto st = protocol::verify_enrollment(ek, sig, device, key); !st) {
    return Outcome{401, st.error().message()};
  }
  std::lock_guard lock(read_mu);
  auto lookup = [&]() -> Result<std::optional<std::pair<std::string, std::int64_t>>> {
    if (!read_enrollment) {
      read_enrollment =
          MOTA_TRY(read_db->prepare("SELECT name, revoked_at FROM enrollment_keys WHERE key = ?"));
    }
    MOTA_TRY(read_enrollment->reset());
    MOTA_TRY(read_enrollment->bind(1, ek));
    std::optional<std::pair<std::string, std::int64_t>> found;
    if (MOTA_TRY(read_enrollment->step()) == storage::Step::row) {
      found.emplace(read_enrollment->column_text(0), read_enrollment->column_int64(1));
    }
    MOTA_TRY(read_enrollment->reset());
    return found;
  };
  auto found = lookup();
  if (!found) return Outcome{503, "fleet database: " + found.error().message()};
  if (!*found || (*found)->second != 0) {
    // An image built with a key since revoked (or never registered here): the device is
    // treated as any other, so an operator can still accept it.
    log::warn(*found ? "enrollment key revoked; device not admitted by it"
                     : "enrollment key not on record; device not admitted by it",
              {{"DEVICE", device}, {"ENROLLMENT_KEY", ek}, {"REMOTE", req.remote_addr}});
    return std::string();
  }
  return (*found)->first;
}

net::HttpReply FleetIngest::Impl::handle_session(const net::HttpRequest& req) {
  auto refuse = [&](int status, const std::string& why, const std::string& device) {
    return refusal(req, "session refused", status, why, device);
  };
  const std::string id = route_id(req);
  constexpr std::size_t kMaxHandshakeBytes = 64u << 10;
  if (req.body.size() > kMaxHandshakeBytes) {
    return refuse(413,
                  "session: body of " + std::to_string(req.body.size()) + " bytes is over the " +
                      std::to_string(kMaxHandshakeBytes) + "-byte limit",
                  id);
  }
  if (!protocol::valid_device_id(id)) {
    return refuse(400, "session: the device id in the route is not 1..128 of [A-Za-z0-9._:-]", id);
  }
  if (const std::string h = header(req, "x-mota-device");
      !h.empty() && !protocol::valid_device_id(h)) {
    return refuse(400, "session: X-Mota-Device is not 1..128 of [A-Za-z0-9._:-]", id);
  }
  auto signed_by = check_signed(req, protocol::session_route(id), id);
  if (auto* o = std::get_if<Outcome>(&signed_by)) return refuse(o->status, o->body, id);
  const std::string& key = std::get<std::string>(signed_by);
  auto enrolled = check_enrollment(req, id, key);
  if (auto* o = std::get_if<Outcome>(&enrolled)) return refuse(o->status, o->body, id);
  std::string enrollment = std::move(std::get<std::string>(enrolled));
  const auto now = options.now();
  auto clock = check_clock(req, now);
  if (auto* o = std::get_if<Outcome>(&clock)) return refuse(o->status, o->body, id);

  auto body = parse_json(req.body, kMaxHandshakeBytes);
  if (!body || !body->is_object()) {
    return refuse(400,
                  "session: body is not a JSON object" +
                      (body ? std::string() : ": " + body.error().message()),
                  id);
  }
  auto text = [&](const char* name) {
    auto it = body->find(name);
    return it != body->end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (text("device") != id) {
    return refuse(403,
                  "session: body's \"device\" '" + text("device") + "' is not the device '" + id +
                      "' of the route",
                  id);
  }
  const std::string x25519 = text("x25519");
  if (!lower_hex64(x25519)) {
    return refuse(400, "session: \"x25519\" is not 64 lower-case hex characters", id);
  }
  if (auto verdict = check_key_on_record(id, key, !enrollment.empty())) {
    return refuse(verdict->status, verdict->body, id);
  }

  auto opened =
      sessions->open(id, key, x25519, std::get<TimePoint>(clock), now, std::move(enrollment));
  if (!opened) return refuse(opened.error().http_status(), opened.error().message(), id);
  {
    std::lock_guard lock(stats_mu);
    ++stats.sessions_opened;
  }
  net::HttpReply r;
  r.body = Json{{"session", opened->id},
                {"x25519", opened->server_x25519},
                {"expires_in", opened->expires_in}}
               .dump();
  return r;
}

Result<std::optional<Outcome>> FleetIngest::Impl::limit_registration(const Job& job,
                                                                     std::int64_t now) {
  auto refused = [&](std::string why) -> Result<std::optional<Outcome>> {
    std::lock_guard lock(stats_mu);
    ++stats.registrations_refused;
    return std::optional<Outcome>(Outcome{429, "report: new device " + job.device + ": " + why});
  };
  if (const std::int64_t minute = now / 60; minute != reg_minute) {
    reg_minute = minute;
    reg_total = 0;
    reg_by_address.clear();
  }
  if (reg_total >= options.new_devices_per_minute) {
    return refused("the server registers at most " +
                   std::to_string(options.new_devices_per_minute) +
                   " new devices per minute; report again later");
  }
  std::size_t& from_address = reg_by_address[job.remote];
  if (from_address >= options.new_devices_per_minute_per_address) {
    return refused("at most " + std::to_string(options.new_devices_per_minute_per_address) +
                   " new devices per minute register from one address (" + job.remote +
                   "); report again later");
  }
  // Re-read at most once a second while at the bound, so a flood costs no count per request.
  if (pending_count < 0 ||
      (pending_count >= std::int64_t(options.max_pending) && now != pending_counted_at)) {
    pending_counted_at = now;
    auto& count = sql->count_pending;
    MOTA_TRY(count.reset());
    if (MOTA_TRY(count.step()) == storage::Step::row) pending_count = count.column_int64(0);
    MOTA_TRY(count.reset());
  }
  if (pending_count >= std::int64_t(options.max_pending)) {
    return refused(std::to_string(pending_count) +
                   " devices are pending already (the limit); an operator accepts or rejects "
                   "them with mota devices accept|reject");
  }
  ++reg_total;
  ++from_address;
  ++pending_count;
  return std::optional<Outcome>();
}

void FleetIngest::Impl::run_writer() {
  while (true) {
    std::vector<std::unique_ptr<Job>> jobs;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) return;  // stopping and drained
      std::size_t items = 0;
      while (!queue.empty() && (jobs.empty() || items < options.max_items_per_commit)) {
        items += queue.front()->items.size();
        jobs.push_back(std::move(queue.front()));
        queue.pop_front();
      }
    }
    write_batch(jobs);
  }
}

void FleetIngest::Impl::write_batch(std::vector<std::unique_ptr<Job>>& jobs) {
  const std::int64_t now = unix_seconds(options.now());
  // In device order: the rows of one commit then sit in neighbouring b-tree pages (events,
  // installed and devices are keyed by device first), so fewer pages are touched and written to
  // the WAL. Stable, so two requests of one device keep their order.
  std::stable_sort(jobs.begin(), jobs.end(),
                   [](const auto& a, const auto& b) { return a->device < b->device; });
  std::vector<std::optional<Outcome>> outcomes(jobs.size());
  std::uint64_t stored = 0, dups = 0;
  auto run = [&]() -> Status {
    auto tx = MOTA_TRY(storage::Transaction::begin(db));
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      outcomes[i] = MOTA_TRY(apply(*jobs[i], now, stored, dups));
    }
    return tx.commit();
  };
  Status st = run();
  if (!st) {
    log::error("fleet database: batch not stored", {{"ERROR", st.error().message()}});
    for (auto& job : jobs) {
      job->done(Outcome{503, "fleet database: " + st.error().message()});
    }
    return;
  }
  {
    std::lock_guard lock(stats_mu);
    stats.items_stored += stored;
    stats.items_duplicate += dups;
    ++stats.commits;
  }
  for (std::size_t i = 0; i < jobs.size(); ++i) jobs[i]->done(std::move(*outcomes[i]));
}

Result<Outcome> FleetIngest::Impl::apply(Job& job, std::int64_t now, std::uint64_t& stored,
                                         std::uint64_t& dups) {
  if (!sql) sql = MOTA_TRY(Statements::prepare(db));
  auto& find = sql->find_key;
  MOTA_TRY(find.reset());
  MOTA_TRY(find.bind(1, job.device));
  const bool known = MOTA_TRY(find.step()) == storage::Step::row;
  const std::string on_record = known ? find.column_text(0) : std::string();
  const std::string admission = known ? find.column_text(1) : std::string();
  MOTA_TRY(find.reset());
  const std::string by_enrollment = job.enrollment.empty() ? "" : "enrollment:" + job.enrollment;
  if (known) {
    if (on_record != job.key) {
      return Outcome{403, "report: key " + job.key.substr(0, 16) +
                              "... is not the key on record "
                              "for device " +
                              job.device + " (" + on_record.substr(0, 16) + "...)"};
    }
    if (admission == "rejected") {
      return Outcome{403, "report: device " + job.device +
                              " was rejected by an operator (mota devices accept ID to undo)"};
    }
    if (admission == "pending" && !by_enrollment.empty()) {
      auto& up = sql->admit_pending;
      MOTA_TRY(up.reset());
      MOTA_TRY(up.bind_all(by_enrollment, now, job.device));
      MOTA_TRY(up.run());
      if (pending_count > 0) --pending_count;
      log::info("pending device admitted by its enrollment signature",
                {{"DEVICE", job.device}, {"ADMITTED_BY", by_enrollment}});
    }
  } else {
    std::string state = "admitted", by = by_enrollment;
    if (by.empty()) {
      if (options.admission == AdmissionMode::enrolled_only) {
        return Outcome{403, "report: device " + job.device +
                                " is not enrolled (mota devices enroll ID --key FILE)"};
      }
      if (options.admission == AdmissionMode::automatic) {
        by = "automatic";
      } else {
        state = "pending";
        if (auto refused = MOTA_TRY(limit_registration(job, now))) return std::move(*refused);
      }
    }
    auto& ins = sql->insert_device;
    MOTA_TRY(ins.reset());
    MOTA_TRY(ins.bind_all(job.device, job.key, now, now, state, by,
                          std::int64_t{state == "admitted" ? now : 0}, job.remote));
    MOTA_TRY(ins.run());
    {
      std::lock_guard lock(stats_mu);
      ++stats.devices_registered;
    }
    log::info(
        state == "pending" ? "new device, key recorded; pending until an operator accepts it"
                           : "new device, key recorded and admitted",
        {{"DEVICE", job.device}, {"KEY", job.key}, {"ADMITTED_BY", by}, {"REMOTE", job.remote}});
  }

  auto& insert = sql->insert_event;
  std::map<std::string, ModelRow> rows;
  std::optional<std::string> agent_version, arch, blocked, labels;
  std::size_t fresh = 0;
  std::int64_t last = 0;
  for (const auto& item : job.items) {
    last = item.seq;
    MOTA_TRY(insert.reset());
    MOTA_TRY(insert.bind_all(job.device, item.seq, item.event ? "event" : "heartbeat",
                             item.created_at, now, item.model, item.from, item.to, item.state,
                             item.step, item.error, item.body));
    MOTA_TRY(insert.run());
    if (db.changes() == 0) {
      ++dups;
      continue;
    }
    ++fresh;
    ++stored;
    if (item.event) {
      if (metadata_event(item)) {
        MOTA_TRY(apply_metadata(job.device, item, now));
        continue;  // a condition of the device, never of a model's version
      }
      if (item.model.empty()) continue;  // nothing per model to update (kept in events)
      ModelRow* r = MOTA_TRY(model_row(rows, job.device, item.model));
      apply_event(r->row, item, now);
      r->dirty = true;
      r->by_event = true;
    } else {
      if (item.agent_version) agent_version = item.agent_version;
      if (item.arch) arch = item.arch;
      if (item.blocked) blocked = blocked_json(*item.blocked);
      if (item.labels) labels = labels_json(*item.labels);
      for (const auto& m : item.models) {
        ModelRow* r = MOTA_TRY(model_row(rows, job.device, m.model));
        apply_inventory(r->row, m);
        r->dirty = true;
      }
      for (const auto& f : item.field) MOTA_TRY(apply_field(job.device, f, now));
    }
  }
  auto& up = sql->upsert_installed;
  for (auto& [model, r] : rows) {
    if (!r.dirty) continue;
    const DeviceModelRow& row = r.row;
    if (r.stored && same_state(*r.stored, row)) {
      // updated_at is when the device last reported something about this model: an event
      // (an install that failed again the same way is news for a rollout's counts), or a
      // change. A heartbeat that repeats the row writes nothing: no pages of the table or its
      // indexes dirtied (devices.last_seen says the device is alive).
      if (!r.by_event) continue;
      auto& touch = sql->touch_installed;
      MOTA_TRY(touch.reset());
      MOTA_TRY(touch.bind_all(now, job.device, model));
      MOTA_TRY(touch.run());
      continue;
    }
    if (r.stored) {
      MOTA_TRY(update_changed(*r.stored, row, job.device, model, now));
      continue;
    }
    MOTA_TRY(up.reset());
    MOTA_TRY(up.bind_all(job.device, model, row.version, row.slot, row.committed, row.state,
                         row.target, row.last_error, row.rolled_back_from, row.channel,
                         row.failed_version, row.failed_at, now));
    MOTA_TRY(up.run());
  }
  if (fresh > 0) {
    auto& seen = sql->update_device;
    MOTA_TRY(seen.reset());
    MOTA_TRY(seen.bind_all(now, last, agent_version, arch, blocked, labels, job.device));
    MOTA_TRY(seen.run());
  }
  return Outcome{200, Json{{"acked", last}}.dump()};
}

// One heartbeat's field health of one version: the difference to the totals the last one carried
// (manager/fleet/migrations/0008_field_health.up.sql), added to the device's sums.
Status FleetIngest::Impl::apply_field(const std::string& device, const ReportField& f,
                                      std::int64_t now) {
  // Checked by the parser (report_item_bad_text); a histogram it let through is valid.
  const LatencyHistogram latency = MOTA_TRY(LatencyHistogram::from_sparse(f.latency));
  auto& sel = sql->select_field;
  MOTA_TRY(sel.reset());
  MOTA_TRY(sel.bind_all(device, f.model, f.version));
  FieldTotals sum;
  LatencyHistogram add = latency;
  std::uint64_t add_inferences = f.inferences, add_errors = f.errors;
  if (MOTA_TRY(sel.step()) == storage::Step::row) {
    const std::string last_load = sel.column_text(0);
    const auto last_inferences = std::uint64_t(sel.column_int64(1));
    const auto last_errors = std::uint64_t(sel.column_int64(2));
    const LatencyHistogram last_latency = histogram_from_text(sel.column_text(3));
    sum.inferences = std::uint64_t(sel.column_int64(4));
    sum.errors = std::uint64_t(sel.column_int64(5));
    sum.latency = histogram_from_text(sel.column_text(6));
    // The same load again: only what it counted since (a repeated heartbeat adds nothing). Counts
    // that went down are a new load under the same name (a runtime that does not say its
    // instance): its totals are new.
    if (last_load == f.load && f.inferences >= last_inferences && f.errors >= last_errors) {
      if (auto d = latency.minus(last_latency)) {
        add = *d;
        add_inferences = f.inferences - last_inferences;
        add_errors = f.errors - last_errors;
      }
    }
  }
  MOTA_TRY(sel.reset());
  constexpr std::uint64_t kMax = std::uint64_t{1} << 62;  // SQLite's INTEGER is signed
  sum.inferences = std::min(kMax, sum.inferences + add_inferences);
  sum.errors = std::min(kMax, sum.errors + add_errors);
  sum.latency.add(add);
  auto& up = sql->upsert_field;
  MOTA_TRY(up.reset());
  MOTA_TRY(up.bind_all(device, f.model, f.version, f.load, std::int64_t(f.inferences),
                       std::int64_t(f.errors), histogram_text(latency),
                       std::int64_t(sum.inferences), std::int64_t(sum.errors),
                       histogram_text(sum.latency), now));
  return up.run();
}

// An existing row whose state changed: only the changed columns are set, so only the indexes
// holding them are rewritten (e.g. a failure without a version flips state and last_error, which
// only installed_failed holds), where the upsert rewrote every index and looked for a conflict.
Status FleetIngest::Impl::update_changed(const DeviceModelRow& old, const DeviceModelRow& row,
                                         const std::string& device, const std::string& model,
                                         std::int64_t now) {
  constexpr unsigned kCount = 10;
  static constexpr const char* kColumns[kCount] = {
      "version",          "slot",    "committed",      "state",    "target", "last_error",
      "rolled_back_from", "channel", "failed_version", "failed_at"};
  const bool changed[kCount] = {row.version != old.version,
                                row.slot != old.slot,
                                row.committed != old.committed,
                                row.state != old.state,
                                row.target != old.target,
                                row.last_error != old.last_error,
                                row.rolled_back_from != old.rolled_back_from,
                                row.channel != old.channel,
                                row.failed_version != old.failed_version,
                                row.failed_at != old.failed_at};
  static_assert(1u << kCount == std::tuple_size_v<decltype(update_installed)>);
  unsigned mask = 0;
  for (unsigned i = 0; i < kCount; ++i) mask |= changed[i] ? 1u << i : 0u;
  auto& st = update_installed[mask];
  if (!st) {
    std::string sql = "UPDATE installed SET ";
    for (unsigned i = 0; i < kCount; ++i) {
      if (changed[i]) sql += std::string(kColumns[i]) + " = ?, ";
    }
    sql += "updated_at = ? WHERE device = ? AND model = ?";
    st = MOTA_TRY(db.prepare(sql));
  }
  MOTA_TRY(st->reset());
  int i = 1;
  const std::string* texts[kCount] = {&row.version,
                                      &row.slot,
                                      nullptr,
                                      &row.state,
                                      &row.target,
                                      &row.last_error,
                                      &row.rolled_back_from,
                                      &row.channel,
                                      &row.failed_version,
                                      nullptr};
  const std::int64_t numbers[kCount] = {0, 0, row.committed ? 1 : 0, 0, 0, 0, 0,
                                        0, 0, row.failed_at};
  for (unsigned c = 0; c < kCount; ++c) {
    if (!changed[c]) continue;
    if (texts[c]) {
      MOTA_TRY(st->bind(i++, *texts[c]));
    } else {
      MOTA_TRY(st->bind(i++, numbers[c]));
    }
  }
  MOTA_TRY(st->bind(i++, now));
  MOTA_TRY(st->bind(i++, device));
  MOTA_TRY(st->bind(i++, model));
  return st->run();
}

Result<FleetIngest::Impl::ModelRow*> FleetIngest::Impl::model_row(
    std::map<std::string, ModelRow>& rows, const std::string& device, const std::string& model) {
  if (auto it = rows.find(model); it != rows.end()) return &it->second;
  auto& sel = sql->select_installed;
  MOTA_TRY(sel.reset());
  MOTA_TRY(sel.bind_all(device, model));
  ModelRow r;
  r.row.state = "ok";
  if (MOTA_TRY(sel.step()) == storage::Step::row) {
    r.row.version = sel.column_text(0);
    r.row.slot = sel.column_text(1);
    r.row.committed = sel.column_int64(2) != 0;
    r.row.state = sel.column_text(3);
    r.row.target = sel.column_text(4);
    r.row.last_error = sel.column_text(5);
    r.row.rolled_back_from = sel.column_text(6);
    r.row.channel = sel.column_text(7);
    r.row.failed_version = sel.column_text(8);
    r.row.failed_at = sel.column_int64(9);
    r.stored = r.row;
  }
  MOTA_TRY(sel.reset());
  return &rows.emplace(model, std::move(r)).first->second;
}

namespace {
// The device runs row.version: it is no longer failing to install it or rolled back from it.
void running(DeviceModelRow& row) {
  if (row.failed_version == row.version) {
    row.failed_version.clear();
    row.failed_at = 0;
  }
  if (row.rolled_back_from == row.version) row.rolled_back_from.clear();
}
}  // namespace

// The rules are in manager/fleet/fleet_db.hpp ("Device state"); metadata events never get here.
void FleetIngest::Impl::apply_event(DeviceModelRow& row, const Item& e, std::int64_t now) {
  const bool outcome = e.state == "installed" || e.state == "ok" || e.state == "failed" ||
                       e.state == "refused" || e.state == "rolled_back";
  if (!outcome) return;  // other states change nothing (the row is still written, as it always was)
  if (e.slot) row.slot = *e.slot;
  if (!e.channel.empty()) row.channel = e.channel;
  if (e.state == "installed") {
    row.version = e.to;
    row.state = "ok";
    row.last_error.clear();
    row.committed = true;
    if (!e.to.empty()) row.target = e.to;
    // The device moved on: whatever it failed or rolled back from before is history.
    row.failed_version.clear();
    row.failed_at = 0;
    row.rolled_back_from.clear();
    return;
  }
  if (e.state == "ok") {
    // Healthy and converged again; failed_version and rolled_back_from stay (the device still
    // did not take that version).
    row.state = "ok";
    row.last_error.clear();
    if (!e.to.empty()) row.version = e.to;
    running(row);
    return;
  }
  // "failed", "refused", "rolled_back": the device runs `from` afterwards. A failed install never
  // touches the active model; an automatic rollback brought the device back to it.
  if (!e.from.empty() || row.version.empty()) row.version = e.from;
  row.state = e.state == "refused" ? "refused" : "failed";
  row.last_error = e.error;
  if (!e.to.empty()) {
    // Without a `to` (the channel file could not be fetched, ...) no version was attempted: the
    // model's state says the device has a problem, the counts of every version are untouched.
    row.target = e.to;
    if (e.state == "failed") {
      row.failed_version = e.to;
      row.failed_at = now;
      if (row.rolled_back_from == e.to) row.rolled_back_from.clear();
    } else if (e.state == "rolled_back") {
      row.rolled_back_from = e.to;
      if (row.failed_version == e.to) {
        row.failed_version.clear();
        row.failed_at = 0;
      }
    }
  }
  running(row);
}

void FleetIngest::Impl::apply_inventory(DeviceModelRow& row, const ModelReport& m) {
  // The inventory is the truth about what runs; a version change ends a failure state (the
  // device moved on), an unchanged one keeps the last event's outcome. It never records a
  // rollback: a version going down may be an operator's downgrade.
  if (m.version != row.version) {
    row.state = "ok";
    row.last_error.clear();
  }
  row.version = m.version;
  row.slot = m.slot;
  row.committed = m.committed;
  if (!m.channel.empty()) row.channel = m.channel;
  running(row);
}

Status FleetIngest::Impl::apply_metadata(const std::string& device, const Item& e,
                                         std::int64_t now) {
  std::string error;
  if (e.state != "metadata_ok") {
    error = e.error.empty() ? "metadata refresh failed (no reason given)" : e.error;
  }
  // Since when: the device's own time of the event (it may have queued it while the server was
  // unreachable; its clock was within --max-clock-skew of ours when it sent the report), never
  // later than now.
  std::int64_t since = now;
  if (auto t = parse_time(e.created_at); t && unix_seconds(*t) > 0) {
    since = std::min(since, unix_seconds(*t));
  }
  auto& st = sql->set_metadata;
  MOTA_TRY(st.reset());
  MOTA_TRY(st.bind_all(error, since, device));
  return st.run();
}

void FleetIngest::Impl::run_checkpointer(storage::Database ckpt_db) {
  // Background checkpoints, so that the writer's own automatic checkpoint (copy + fsync of the
  // database file inside a commit) does not run: sampled stacks of the writer under load sat in
  // it once the WAL passed its threshold (bench/README.md, "Fleet").
  //   PASSIVE copies what it can without blocking anyone. But the WAL file only starts again
  //   from its beginning when a write transaction begins after *every* frame was copied, which
  //   under a steady load almost never happens, so the WAL keeps growing past the writer's
  //   threshold. Hence, once the WAL holds kRestartFrames, one RESTART: it waits for the writer's
  //   current commit, copies the few frames PASSIVE left, and makes the next commit restart the
  //   WAL. The writer is blocked only meanwhile; a short busy timeout bounds the wait for a
  //   long reader (`mota fleet`), after which the RESTART gives up and is tried again later.
  auto prepared = [&]() -> Result<std::pair<storage::Statement, storage::Statement>> {
    MOTA_TRY(ckpt_db.exec("PRAGMA busy_timeout=250"));
    return std::make_pair(MOTA_TRY(ckpt_db.prepare("PRAGMA wal_checkpoint(PASSIVE)")),
                          MOTA_TRY(ckpt_db.prepare("PRAGMA wal_checkpoint(RESTART)")));
  }();
  if (!prepared) {
    log::warn("fleet database: no background checkpoints", {{"ERROR", prepared.error().message()}});
    return;  // the writer's own automatic checkpoint still bounds the WAL
  }
  auto& [passive, restart] = *prepared;
  // Runs one checkpoint; returns the WAL's size in frames (0 when not in WAL mode).
  auto run = [](storage::Statement& st) -> Result<std::int64_t> {
    MOTA_TRY(st.reset());
    std::int64_t frames = 0;
    if (MOTA_TRY(st.step()) == storage::Step::row) frames = st.column_int64(1);
    MOTA_TRY(st.reset());
    return frames;
  };
  std::unique_lock lock(mu);
  while (!checkpoint_cv.wait_for(lock, kCheckpointInterval, [&] { return stopping; })) {
    lock.unlock();
    auto st = [&]() -> Status {
      if (MOTA_TRY(run(passive)) >= kRestartFrames) MOTA_TRY(run(restart));
      return {};
    }();
    if (!st) {
      log::warn("fleet database: checkpoint failed (retried)", {{"ERROR", st.error().message()}});
    }
    lock.lock();
  }
}

Status prepare_ingest_connection(storage::Database& db) {
  // WAL + NORMAL: a commit is appended to the WAL without an fsync; the WAL is synced at each
  // checkpoint. A crash of the process loses nothing, a power cut may lose the last commits
  // before a checkpoint (docs/fleet.md, "Durability of reports": why that is acceptable for
  // reports). With FULL, every group commit waited for an fsync and the writer spent most of its
  // time there (bench/README.md, "Fleet").
  // wal_autocheckpoint 10000 pages (40 MB) here, for the benchmark's ceiling, which has no
  // checkpointer; FleetIngest::open() raises it for its writer, whose WAL the background
  // checkpointer keeps short.
  // A 64 MiB page cache (SQLite's default is 2 MiB): the b-tree pages of events, devices and
  // installed that a batch of thousands of devices touches stay in memory between group commits
  // instead of being read back from the OS each time; mmap lets reads of pages not in the cache
  // skip a copy. Both are upper bounds, used as the database grows. Temporary b-trees (none in
  // the ingest statements today) stay in memory.
  return db.exec(
      "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=10000; PRAGMA cache_size=-65536; "
      "PRAGMA mmap_size=268435456; PRAGMA temp_store=MEMORY");
}

Result<std::unique_ptr<FleetIngest>> FleetIngest::open(const std::filesystem::path& db_path,
                                                       IngestOptions options) {
  auto db = MOTA_TRY(open_fleet_db(db_path));
  MOTA_TRY_CTX(prepare_ingest_connection(db), "fleet database " + db_path.string());
  // The checkpointer thread keeps the WAL short; the writer's own automatic checkpoint (a copy
  // of the WAL inside a commit: 8% of the writer's time at 100 items per request with the
  // 40 MB threshold of prepare_ingest_connection(); bench/README.md, "Fleet", round 3) only
  // remains as the bound for when the checkpointer cannot keep up (a long reader): 200 MB.
  MOTA_TRY_CTX(db.exec("PRAGMA wal_autocheckpoint=" + std::to_string(kWriterAutocheckpointFrames)),
               "fleet database " + db_path.string());
  auto impl = std::make_unique<Impl>(std::move(options), std::move(db));
  Impl* raw = impl.get();
  auto ckpt_db = MOTA_TRY_CTX(open_fleet_db(db_path), "fleet database checkpointer");
  // Named, so that top -H and the benchmark (bench/fleet_load.cpp: writer busy) can tell them.
  impl->writer = std::thread([raw] {
    ::pthread_setname_np(::pthread_self(), "mota-writer");
    raw->run_writer();
  });
  if (impl->sessions) {
    impl->read_db = MOTA_TRY_CTX(open_fleet_db(db_path), "fleet database (session handshakes)");
  }
  impl->checkpointer = std::thread([raw, c = std::move(ckpt_db)]() mutable {
    ::pthread_setname_np(::pthread_self(), "mota-checkpoint");
    raw->run_checkpointer(std::move(c));
  });
  return std::unique_ptr<FleetIngest>(new FleetIngest(std::move(impl)));
}

FleetIngest::FleetIngest(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FleetIngest::~FleetIngest() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->checkpoint_cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
  if (impl_->checkpointer.joinable()) impl_->checkpointer.join();
}

net::HttpReply FleetIngest::handle(const net::HttpRequest& req) {
  try {
    return impl_->handle(req);
  } catch (const std::exception& e) {
    // nlohmann/std exceptions stop here (e.g. allocation failure); the agent retries on 5xx.
    log::error("report handler failed", {{"ERROR", e.what()}});
    return reply(500, "internal error");
  }
}

void FleetIngest::handle_async(net::HttpRequest&& req, net::Responder respond) {
  try {
    impl_->handle_async(std::move(req), respond);
  } catch (const std::exception& e) {
    log::error("report handler failed", {{"ERROR", e.what()}});
    respond(reply(500, "internal error"));  // ignored if the writer answered already
  }
}

IngestStats FleetIngest::stats() const {
  std::lock_guard lock(impl_->stats_mu);
  return impl_->stats;
}

net::HttpReply FleetIngest::handle_session(const net::HttpRequest& req) {
  if (!impl_->sessions) return reply(404, "this server has no report sessions");
  try {
    return impl_->handle_session(req);
  } catch (const std::exception& e) {
    log::error("session handler failed", {{"ERROR", e.what()}});
    return reply(500, "internal error");
  }
}

void FleetIngest::register_routes(net::HttpServer& server) {
  server.route_async("POST", "/v1/devices/:id/events",
                     [this](net::HttpRequest&& req, net::Responder r) {
                       handle_async(std::move(req), std::move(r));
                     });
  if (impl_->sessions) {
    server.route("POST", "/v1/devices/:id/session",
                 [this](const net::HttpRequest& req) { return handle_session(req); });
  }
}

}  // namespace mota::manager
