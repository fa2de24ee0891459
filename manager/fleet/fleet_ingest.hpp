#pragma once
// Ingest of device reports: the server side of protocol/report.hpp's wire format
//   POST /v1/devices/<id>/events  {"device", "batch": [{seq, kind, created_at, body}, ...]}
//   -> 200 {"acked": N}
//
// Checks, in this order, each refusal answering {"error": "<what and why>"} and changing nothing:
//   413  body over IngestOptions::max_body_bytes (the HttpServer refuses far bigger ones with 413
//        before reading them)
//   401  missing/malformed X-Mota-* headers or a bad signature (protocol::verify_report), or an
//        X-Mota-Timestamp outside now ± max_clock_skew (a captured report replayed later); under
//        a session (X-Mota-Session): an unknown or expired session, another device's session,
//        or a wrong X-Mota-Mac
//   403  X-Mota-Device or the body's "device" differs from the id in the route (forged id)
//   400  malformed JSON or batch (seq not a strictly increasing positive integer, unknown kind,
//        body not an object, more than max_batch_items items)
//   400  a device id in the route outside the agent's charset (protocol::valid_device_id)
//   401  a malformed or wrong X-Mota-Enrollment-Signature (when the headers are sent at all)
//   403  the key is not the one on record for the device (the first key seen for an id is
//        recorded and binds it), the device was rejected by an operator, or the device is
//        unknown under AdmissionMode::enrolled_only
//   429  a new device over the registration limits (per minute overall and per source
//        address), or max_pending pending devices on record (the agent retries later)
//   503  the writer is overloaded or stopping (the agent retries later)
// Session handshake (protocol/session.hpp), POST /v1/devices/<id>/session, signed like a report:
//   413 body over 64 KiB; 400/401/403 as for reports (id, signature, clock, forged id, enrollment
//   signature); 400 a body that is not {"device": <the route's id>, "x25519": <64 hex>}; 403 a
//   key other than the one on record, a rejected device, or an unknown device under
//   enrolled_only; 401 a replayed handshake; 503 too many sessions.
//   200 {"session", "x25519", "expires_in"}.
//
// Admission (docs/security.md, "Devices"): a device not on record is recorded by its first
// accepted report, with its key, as AdmissionMode says: pending (counts for nothing until
// `mota devices accept`), admitted, or refused. A report or handshake carrying a valid signature
// of an enrollment key on record and not revoked (protocol/identity.hpp) admits the device in
// every mode, also a pending one. Registrations are what an outsider can cause at will, so
// pending ones are limited per minute (overall and per source address) and in number.
// A batch whose items are all stored already (same device and seq) is acknowledged without
// storing anything twice and without touching the database (at-least-once delivery).
//
// Writes: one writer thread owns the database connection and commits whatever requests are
// queued in one transaction (group commit), so a thousand devices reporting at once cost a few
// fsyncs, not a thousand. A request is answered only after its transaction committed.
//
// Thread-safety: handle() may be called from any number of threads at once. The destructor
// drains the queue and stops the writer; no handle() call may be running then.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "common/result.hpp"
#include "common/time.hpp"
#include "net/http_server.hpp"
#include "storage/sqlite.hpp"

namespace mota::manager {

// What happens to a device not on record (see Admission above).
enum class AdmissionMode {
  pending,        // recorded, counts for nothing until an operator accepts it (the default)
  automatic,      // admitted on first contact: trust on first use (a lab)
  enrolled_only,  // refused unless enrolled (`mota devices enroll`) or enrollment-signed
};

struct IngestOptions {
  AdmissionMode admission = AdmissionMode::pending;
  // Registrations of pending devices: per minute (all sources, and per source address), and
  // pending devices on record at most. Enrollment-signed devices are not limited.
  std::size_t new_devices_per_minute = 600;
  std::size_t new_devices_per_minute_per_address = 60;
  std::size_t max_pending = 10000;
  std::chrono::seconds max_clock_skew{600};  // accepted |now - X-Mota-Timestamp|
  std::size_t max_body_bytes = 4u << 20;     // per request (agents send <= 256 KiB)
  std::size_t max_batch_items = 5000;        // per request
  std::size_t max_queued_requests = 20000;   // beyond: 503
  std::size_t max_items_per_commit = 20000;  // group commit size bound
  std::chrono::seconds reply_timeout{30};    // a request waiting longer for its commit: 503
  // Report sessions (protocol/session.hpp, manager/fleet/report_sessions.hpp): POST
  // /v1/devices/<id>/session; off: that route is not served (404) and agents sign each report.
  bool sessions = true;
  std::chrono::seconds session_ttl{3600};
  std::size_t max_sessions = 250000;  // live sessions; beyond, handshakes get 503
  std::function<TimePoint()> now = now_seconds;
};

struct IngestStats {
  std::uint64_t requests_accepted = 0;
  std::uint64_t requests_refused = 0;
  std::uint64_t items_stored = 0;
  std::uint64_t items_duplicate = 0;
  std::uint64_t commits = 0;
  std::uint64_t sessions_opened = 0;
  std::uint64_t session_reports = 0;        // accepted reports authenticated by a session MAC
  std::uint64_t devices_registered = 0;     // new devices recorded (any admission)
  std::uint64_t registrations_refused = 0;  // new devices refused by the limits (429)
};

class FleetIngest {
 public:
  // Opens (creating and migrating) the database at `db_path` and starts the writer thread.
  static Result<std::unique_ptr<FleetIngest>> open(const std::filesystem::path& db_path,
                                                   IngestOptions options = {});
  ~FleetIngest();
  FleetIngest(const FleetIngest&) = delete;
  FleetIngest& operator=(const FleetIngest&) = delete;

  // The route handler (see the contract above). `req.path_params["id"]` is the route's device id.
  // Blocks until the report is committed (at most IngestOptions::reply_timeout, then 503).
  net::HttpReply handle(const net::HttpRequest& req);
  // The same without blocking (what `mota serve` registers, route_async): the checks run on the
  // calling thread, and `respond` is called by the writer thread once the report is committed —
  // there is no reply timeout then: the agent's own HTTP timeout and resend (deduplicated) cover
  // a stuck database.
  void handle_async(net::HttpRequest&& req, net::Responder respond);

  IngestStats stats() const;

  // The handshake route handler (contract above).
  net::HttpReply handle_session(const net::HttpRequest& req);

  // Registers POST /v1/devices/:id/events (and /session when sessions are on) on `server` (before
  // server.start()); `this` must outlive the server's handling of requests (stop the server first).
  void register_routes(net::HttpServer& server);

  struct Impl;

 private:
  explicit FleetIngest(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Connection settings of the ingest writer, applied by FleetIngest::open() after open_fleet_db()
// (exposed so the benchmark's raw-insert ceiling runs with exactly the same ones).
Status prepare_ingest_connection(storage::Database& db);

}  // namespace mota::manager
