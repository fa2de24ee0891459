#include "protocol/session.hpp"

#include <algorithm>

#include "common/hex.hpp"
#include "manifest/canonical_json.hpp"

namespace mota::protocol {

std::string session_route(std::string_view device_id) {
  return "/v1/devices/" + http::percent_encode(device_id) + "/session";
}

Result<std::string> derive_session_key(const crypto::KeyAgreement& own,
                                       std::string_view peer_x25519_hex,
                                       std::string_view session_id_hex, std::string_view device_id,
                                       std::string_view device_key_hex,
                                       std::string_view device_x25519_hex,
                                       std::string_view server_x25519_hex) {
  auto salt = from_hex(session_id_hex);
  if (!salt || salt->size() != kSessionIdBytes) {
    return fail(Errc::verification,
                "session id is not " + std::to_string(kSessionIdBytes * 2) + " hex characters");
  }
  auto secret = MOTA_TRY(own.derive(peer_x25519_hex));
  std::string info(kSessionScheme);
  info.append("\n").append(device_id).append("\n").append(device_key_hex).append("\n");
  info.append(device_x25519_hex).append("\n").append(server_x25519_hex);
  return crypto::hkdf_sha256(secret, *salt, info, 32);
}

Result<std::string> session_mac(std::string_view key, std::string_view device_id,
                                std::string_view timestamp, std::string_view route,
                                std::string_view body) {
  auto mac = MOTA_TRY(crypto::hmac_sha256(key, signed_message(device_id, timestamp, route, body)));
  return to_hex(mac);
}

Result<std::map<std::string, std::string>> ReportSession::report_headers(std::string_view device_id,
                                                                         std::string_view route,
                                                                         std::string_view body,
                                                                         TimePoint at) const {
  std::string ts = format_time(at);
  auto mac = MOTA_TRY(session_mac(key, device_id, ts, route, body));
  return std::map<std::string, std::string>{{"X-Mota-Device", std::string(device_id)},
                                            {"X-Mota-Session", id},
                                            {"X-Mota-Timestamp", std::move(ts)},
                                            {"X-Mota-Mac", std::move(mac)}};
}

std::string session_request_body(std::string_view device_id, std::string_view x25519_hex) {
  return Json{{"device", std::string(device_id)}, {"x25519", std::string(x25519_hex)}}.dump(
      -1, ' ', false, Json::error_handler_t::replace);
}

Result<ReportSession> accept_session(const crypto::KeyAgreement& own, std::string_view device_id,
                                     std::string_view device_key_hex, std::string_view answer) {
  auto json = parse_json(answer, 64u << 10);
  if (!json) return fail(Errc::parse, "session answer is not JSON: " + json.error().message());
  auto text = [&](const char* name) -> Result<std::string> {
    auto it = json->find(name);
    if (!json->is_object() || it == json->end() || !it->is_string()) {
      return fail(Errc::parse, std::string("session answer has no string \"") + name + "\"");
    }
    return it->get<std::string>();
  };
  ReportSession s;
  s.id = MOTA_TRY(text("session"));
  const std::string server_x25519 = MOTA_TRY(text("x25519"));
  auto ttl_it = json->find("expires_in");
  if (ttl_it == json->end() || !ttl_it->is_number_integer() || ttl_it->get<std::int64_t>() <= 0) {
    return fail(Errc::parse, "session answer has no positive integer \"expires_in\"");
  }
  const std::int64_t ttl = ttl_it->get<std::int64_t>();
  s.key = MOTA_TRY_CTX(derive_session_key(own, server_x25519, s.id, device_id, device_key_hex,
                                          own.public_hex(), server_x25519),
                       "session answer");
  const std::int64_t margin = std::min<std::int64_t>(60, ttl / 10);
  s.renew_at = std::chrono::steady_clock::now() + std::chrono::seconds(ttl - margin);
  return s;
}

Result<ReportSession> open_session(http::Client& client, const std::string& server_url,
                                   const DeviceIdentity& identity, std::uint64_t max_response_bytes,
                                   const std::map<std::string, std::string>& extra_headers) {
  std::string base = server_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  const std::string route = session_route(identity.device_id());
  const std::string what = "session: POST " + base + route;
  auto own = MOTA_TRY_CTX(crypto::KeyAgreement::generate(), what);
  const std::string body = session_request_body(identity.device_id(), own.public_hex());
  auto headers = MOTA_TRY_CTX(identity.report_headers(route, body), what);
  headers.insert(extra_headers.begin(), extra_headers.end());
  headers["Content-Type"] = "application/json";
  auto response = MOTA_TRY_CTX(client.post(base + route, body, headers, max_response_bytes), what);
  if (response.status != 200) {
    std::string msg = what + ": server answered HTTP " + std::to_string(response.status);
    if (!response.body.empty()) msg += ": " + response.body.substr(0, 200);
    return tl::unexpected(Error(Errc::http, std::move(msg), static_cast<int>(response.status)));
  }
  return MOTA_TRY_CTX(
      accept_session(own, identity.device_id(), identity.public_key_hex(), response.body), what);
}

}  // namespace mota::protocol
