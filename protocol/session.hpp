#pragma once
// Report sessions (scheme "mota-session-v1"): one Ed25519-signed handshake per device and hour
// instead of one signature per report. Verifying an Ed25519 signature costs the server ~140 µs
// per report; an HMAC over the same bytes costs a few µs, so small frequent reports stop being
// dominated by signature checks. Both ends use this header, so they share one definition.
//
//   1. Handshake: POST /v1/devices/<id>/session, signed like a report (identity.hpp, scheme v1,
//      route = that path), body {"device": "<id>", "x25519": "<64 hex>"} with a fresh X25519
//      public key of the device.
//      200 {"session": "<32 hex>", "x25519": "<64 hex>", "expires_in": <seconds>}
//      Both sides then derive the 32-byte session key
//        HKDF-SHA256(ikm  = X25519(own private key, peer public key),
//                    salt = the 16 bytes of the session id,
//                    info = "mota-session-v1\n" + device + "\n" + device Ed25519 key (hex) + "\n"
//                           + device X25519 key (hex) + "\n" + server X25519 key (hex))
//      and forget their X25519 private keys.
//   2. Reports carry X-Mota-Device, X-Mota-Session (the id), X-Mota-Timestamp and X-Mota-Mac =
//      hex HMAC-SHA256(session key, signed_message(device, timestamp, route, body)) in place of
//      X-Mota-Key and X-Mota-Signature. Everything else (routes, bodies, acks, seq dedup, the
//      clock window) is unchanged.
//   The server answers 401 for an unknown or expired session or a wrong MAC: the agent drops the
//   session, shakes hands again once and resends. A 404 to the handshake means a server without
//   sessions: the agent signs each report, as before.
//
// Why this is sound without TLS: the handshake is signed with the device key and bound to the
// route, the time and the device's ephemeral key, so only the device can open a session in its
// name. The session key is known to the device and the server only: someone on the path who swaps
// the server's X25519 key ends up sharing a key with the device that the server does not have, so
// it still cannot make the server accept a report the device did not send (it can drop reports,
// which it can do anyway). The server refuses a replayed handshake (not newer than the device's
// last one, or the same X25519 key), which would in any case open a session whose key the replayer
// cannot compute.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "common/http.hpp"
#include "common/result.hpp"
#include "common/time.hpp"
#include "manifest/crypto.hpp"
#include "protocol/identity.hpp"

namespace mota::protocol {

inline constexpr std::string_view kSessionScheme = "mota-session-v1";
inline constexpr std::size_t kSessionIdBytes = 16;

// "/v1/devices/<percent-encoded id>/session".
std::string session_route(std::string_view device_id);

// The session key (see above), from `own` key pair and the peer's public key. Errc::verification
// for a malformed session id or X25519 key.
Result<std::string> derive_session_key(const crypto::KeyAgreement& own,
                                       std::string_view peer_x25519_hex,
                                       std::string_view session_id_hex, std::string_view device_id,
                                       std::string_view device_key_hex,
                                       std::string_view device_x25519_hex,
                                       std::string_view server_x25519_hex);

// Hex HMAC-SHA256 under `key` of signed_message(device_id, timestamp, route, body).
Result<std::string> session_mac(std::string_view key, std::string_view device_id,
                                std::string_view timestamp, std::string_view route,
                                std::string_view body);

// A session as the device holds it. Copyable value; holds the key in memory only.
struct ReportSession {
  std::string id;                                  // 32 hex characters
  std::string key;                                 // 32 raw bytes
  std::chrono::steady_clock::time_point renew_at;  // shake hands again from then on

  // The four X-Mota-* headers of a report of `body` to `route` under this session.
  Result<std::map<std::string, std::string>> report_headers(std::string_view device_id,
                                                            std::string_view route,
                                                            std::string_view body,
                                                            TimePoint at = now_seconds()) const;
};

// The two halves of open_session(), for callers that send the request themselves (the load
// benchmark): the handshake body, and the session from the server's 200 answer to it.
std::string session_request_body(std::string_view device_id, std::string_view x25519_hex);
Result<ReportSession> accept_session(const crypto::KeyAgreement& own, std::string_view device_id,
                                     std::string_view device_key_hex, std::string_view answer);

// Opens a session with the server at `server_url` (the handshake above). renew_at is a minute
// (or a tenth of the lifetime, if shorter) before the server's expiry, on the steady clock so a
// device clock jump does not matter.
// Errors: Errc::network for transport failures; Errc::http with http_status() for any answer
// other than 200 (404/405: the server has no sessions); Errc::parse for a malformed answer;
// Errc::verification for an unusable server key.
Result<ReportSession> open_session(http::Client& client, const std::string& server_url,
                                   const DeviceIdentity& identity,
                                   std::uint64_t max_response_bytes = 64u << 10,
                                   const std::map<std::string, std::string>& extra_headers = {});

}  // namespace mota::protocol
