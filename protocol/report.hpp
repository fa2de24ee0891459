#pragma once
// Device reports: what the agent and the server agree on, so both ends share one definition.
//
// Wire format (version 1): agent/report.hpp (the Reporter) sends, manager/fleet/fleet_ingest.hpp
// receives:
//
//   POST <server_url>/v1/devices/<percent_encode(device id)>/events
//   Content-Type: application/json
//   X-Mota-Device, X-Mota-Key, X-Mota-Timestamp, X-Mota-Signature  (protocol/identity.hpp) signed
//     over route = events_route(device id) (the path below server_url, exactly as sent, still
//     percent-encoded) and the exact body bytes. A server that sees the decoded id rebuilds the
//     route with events_route() (http::percent_encode, RFC 3986 unreserved kept).
//     With sessions (protocol/session.hpp) X-Mota-Session and X-Mota-Mac replace X-Mota-Key and
//     X-Mota-Signature; a 401 to a report under a session opens a new one and sends the batch
//     once more.
//   body:
//     {"device": "<device id>",
//      "batch": [{"seq": 17, "kind": "event",     "created_at": "2030-01-01T00:00:00Z",
//                 "body": {...}},
//                {"seq": 18, "kind": "heartbeat", "created_at": "...", "body": {...}}, ...]}
//     Items are in strictly increasing seq order. Seqs are per device, never reused, and may have
//     gaps (the outbox drops old heartbeats when full). An item whose stored body is not valid
//     JSON (should never happen) is sent as "body": {"invalid_json": "<the stored text>"} rather
//     than blocking the outbox forever.
//   answer:
//     2xx with {"acked": N}: the server has stored every item with seq <= N (N may be less than
//       the batch's last seq: the rest is sent again). It must be an integer not above the last
//       seq of the batch (an ack for something never sent is refused: it would skip items).
//     2xx with an empty body or no "acked" member: the whole batch is stored.
//     408, 429, 5xx, transport failure: nothing is acknowledged; the batch is sent again later.
//     other 4xx: the server refuses the batch (bad signature, unknown device, ...): the items
//       stay queued, the agent reports the refusal and stops; resending at once would only spin.
//   Delivery is at-least-once (an ack lost on the way back means the batch is sent again), so the
//   server deduplicates by (device, seq).
//
// Thread-safety: pure functions.

#include <string>
#include <string_view>

namespace mota::protocol {

// "/v1/devices/<percent-encoded id>/events": the route a device's batches go to and are signed
// over (below the server URL).
std::string events_route(std::string_view device_id);

}  // namespace mota::protocol
