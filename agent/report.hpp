#pragma once
// Reports from the device to the server: the outbox of StateStore (events and heartbeats) is sent
// in signed batches, at least once and in seq order, and deleted once the server acknowledges it.
//
// Wire format (version 1): protocol/report.hpp (routes, headers, body, answers). The Reporter
// is its device side; manager/fleet/fleet_ingest.hpp is the server side.
//
// Heartbeat body (enqueued by enqueue_heartbeat(), built by heartbeat()):
//   {"agent_version": "0.1.0", "arch": "x86_64", "ram_total_bytes": 8123456,
//    "disk_free_bytes": 1234567, "disk_full": false, "time": "2030-01-01T00:00:00Z",
//    "tuf": {"root": 1, "timestamp": 42, ...},
//    "models": [{"model": "resnet", "slot": "a", "version": "1.2.0", "committed": true,
//                "channel": "stable"}, ...],
//    "blocked": [{"model": "resnet", "version": "1.3.0", "reason": "install resnet 1.3.0: probe:
//                 output: ...", "since": "2030-01-01T00:00:00Z"}, ...],
//    "labels": {"site": "plant-3", "mota/arch": "x86_64", "mota/ram-gb": "8", ...},
//    "field": [{"model": "resnet", "version": "1.3.0", "load": "9f2c...e1/4",
//               "inferences": 1200, "errors": 3, "latency": [[40, 900], [41, 300]]}, ...]}
//   "models" lists every model with an active slot, by name; "version" is "" if that slot's row is
//   missing; "channel" is present for models in ReporterOptions::channels. disk_free_bytes is the
//   space left in the state directory (where agent.db lives). "blocked" is the whole block list
//   (agent/install.hpp), by model then time, [] when empty (agents before it send no member).
//   "labels" is ReporterOptions::labels (agents before labels send no member).
//   "field" is ReporterOptions::field, absent when empty: mota-runtime's running totals for each
//   model version it serves, since that load ("load" names it: runtime instance/generation), so
//   the server takes differences and a lost or repeated heartbeat neither loses nor double-counts
//   what the next one carries; "latency" is common/latency_histogram.hpp's sparse form.
//   disk_full is true when that is below
//   kDiskFullBytes: the agent runs on its reserve (agent/agent.hpp, "Space") and can install
//   nothing.
//
// Thread-safety: none; a Reporter uses its StateStore and Client from the calling thread. The
// referenced store, client and identity must outlive it.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/state.hpp"
#include "common/http.hpp"
#include "common/labels.hpp"
#include "common/latency_histogram.hpp"
#include "common/result.hpp"
#include "manifest/canonical_json.hpp"
#include "protocol/identity.hpp"
#include "protocol/session.hpp"

namespace mota::agent {

// Below this much free space in the state directory a heartbeat says "disk_full": true; it is
// also the size of the agent's reserve.
inline constexpr std::uint64_t kDiskFullBytes = 1u << 20;

// Field health of one model version as mota-runtime serves it: the counters of its current load.
struct FieldSample {
  std::string model, version;
  std::string load;  // "<runtime instance>/<generation>": the counters restart when it changes
  std::uint64_t inferences = 0, errors = 0;
  LatencyHistogram latency;
};

struct ReporterOptions {
  std::size_t batch_items = 100;           // items per POST at most
  std::uint64_t batch_bytes = 256u << 10;  // body bytes per POST at most (one item always fits)
  std::uint64_t max_response_bytes = 64u << 10;  // the server's answer is small
  // Authenticate reports with a session (protocol/session.hpp: one signed handshake, then an HMAC
  // per report) where the server offers them; false signs every report.
  bool sessions = true;
  // model -> the channel this device follows for it, reported in heartbeats ("channel").
  std::map<std::string, std::string> channels;
  // The device's labels (agent/requirements.hpp device_labels), reported in heartbeats.
  Labels labels;
  // Field health reported in heartbeats ("field"); empty: no member.
  std::vector<FieldSample> field;
  // Sent with every handshake and signed report: the enrollment signature
  // (protocol::enrollment_headers), empty when the device has no enrollment key.
  std::map<std::string, std::string> extra_headers;
};

struct SendResult {
  std::size_t batches = 0;     // POSTs the server accepted (2xx)
  std::size_t acked = 0;       // items deleted from the outbox because the server has them
  std::int64_t acked_seq = 0;  // highest seq acknowledged by this flush, 0 if none
  std::size_t remaining = 0;   // items still in the outbox afterwards
  std::size_t handshakes = 0;  // sessions opened by this flush
};

// The report session and when to try opening one again, kept across Reporters: the daemon makes
// a Reporter per poll, and a session lasts an hour (protocol/session.hpp).
struct ReportSessionState {
  std::optional<protocol::ReportSession> session;
  // No handshake before this time: the server has no sessions (404) or refused the last one.
  std::chrono::steady_clock::time_point no_session_until{};
};

class Reporter {
 public:
  // `sessions`, if given, must outlive the Reporter; without it the session ends with it.
  Reporter(StateStore& store, http::Client& client, protocol::DeviceIdentity& identity,
           std::string server_url, ReporterOptions options = {},
           ReportSessionState* sessions = nullptr);

  // Sends up to `max_batches` batches, oldest items first, acknowledging each one the server
  // accepts before building the next. Returns the progress when the outbox is empty or
  // max_batches were sent. On a failure the batch being sent stays queued (the ones before it are
  // already acknowledged) and the error is returned:
  //   Errc::network   transport failure (server down, reset, timeout): retry later.
  //   Errc::http      the server's status is in Error::http_status() and the message; retry later
  //                   for 408/429/5xx, report_refused() is true for the other 4xx.
  //   Errc::parse     a 2xx answer whose ack is malformed or acknowledges unsent seqs.
  //   store errors    from StateStore, with its context.
  Result<SendResult> flush(std::size_t max_batches = 10);

  // The heartbeat inventory (format above). Errors come from the StateStore or sysinfo/statvfs.
  Result<Json> heartbeat();
  // heartbeat() enqueued as an OutboxKind::heartbeat item.
  Status enqueue_heartbeat();

  // The route and URL batches go to (see the wire format).
  std::string events_route() const;
  std::string events_url() const;

 private:
  // The X-Mota-* headers of one report: under the session when sessions are on (opening one
  // first when there is none or it is due for renewal), else signed. `used_session` says which.
  Result<std::map<std::string, std::string>> auth_headers(const std::string& route,
                                                          const std::string& body,
                                                          bool& used_session, SendResult& result);

  StateStore& store_;
  http::Client& client_;
  protocol::DeviceIdentity& identity_;
  std::string server_url_;  // without a trailing '/'
  ReporterOptions options_;
  ReportSessionState own_sessions_;
  ReportSessionState& sessions_;
};

// True for an error from flush() meaning the server refused the batch (a 4xx other than 408 and
// 429): sending the same items again will not help until something changes on either side.
bool report_refused(const Error& error);

}  // namespace mota::agent
