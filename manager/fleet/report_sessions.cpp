#include "manager/fleet/report_sessions.hpp"

#include <algorithm>
#include <mutex>

#include "common/hex.hpp"
#include "manifest/crypto.hpp"
#include "protocol/session.hpp"

namespace mota::manager {

namespace {

Error refusal(int status, std::string message) {
  return Error(status == 503 ? Errc::too_large : Errc::verification, std::move(message), status);
}

}  // namespace

Result<ReportSessions::Opened> ReportSessions::open(const std::string& device,
                                                    const std::string& device_key_hex,
                                                    const std::string& device_x25519_hex,
                                                    TimePoint signed_at, TimePoint now,
                                                    std::string enrollment) {
  // The key agreement first, outside the lock (it is the expensive part).
  auto own = crypto::KeyAgreement::generate();
  if (!own) return tl::unexpected(own.error());
  auto id_raw = crypto::random_bytes(protocol::kSessionIdBytes);
  if (!id_raw) return tl::unexpected(id_raw.error());
  Opened opened{to_hex(*id_raw), own->public_hex(), options_.ttl.count()};
  auto key = protocol::derive_session_key(*own, device_x25519_hex, opened.id, device,
                                          device_key_hex, device_x25519_hex, opened.server_x25519);
  if (!key) {
    return tl::unexpected(
        refusal(400, "session: the device's X25519 key is unusable: " + key.error().message()));
  }

  std::unique_lock lock(mu_);
  auto dev = devices_.find(device);
  if (dev != devices_.end()) {
    if (signed_at < dev->second.last_signed_at) {
      return tl::unexpected(refusal(401, "session: handshake signed at " + format_time(signed_at) +
                                             " is older than this device's last one (" +
                                             format_time(dev->second.last_signed_at) +
                                             "): a replayed handshake"));
    }
    if (device_x25519_hex == dev->second.last_x25519) {
      return tl::unexpected(refusal(
          401, "session: this X25519 key was already used by the device: a replayed handshake"));
    }
  }
  if (now >= next_purge_ || sessions_.size() >= options_.max_sessions) {
    purge(now);
    next_purge_ = now + std::max<std::chrono::seconds>(options_.ttl / 4, std::chrono::seconds(1));
    dev = devices_.find(device);
  }
  const bool replaces = dev != devices_.end() && !dev->second.session_id.empty();
  if (!replaces && sessions_.size() >= options_.max_sessions) {
    return tl::unexpected(refusal(503, "session: the server holds its maximum of " +
                                           std::to_string(options_.max_sessions) +
                                           " sessions; sign each report instead"));
  }
  if (replaces) sessions_.erase(dev->second.session_id);
  const TimePoint expires = now + options_.ttl;
  sessions_[opened.id] =
      Session{device, device_key_hex, std::move(*key), expires, std::move(enrollment)};
  DeviceState& state = devices_[device];
  state.session_id = opened.id;
  state.last_signed_at = signed_at;
  state.last_x25519 = device_x25519_hex;
  state.keep_until = std::max(expires, signed_at + options_.replay_window);
  return opened;
}

void ReportSessions::purge(TimePoint now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    it = it->second.expires <= now ? sessions_.erase(it) : std::next(it);
  }
  for (auto it = devices_.begin(); it != devices_.end();) {
    if (!it->second.session_id.empty() && !sessions_.contains(it->second.session_id)) {
      it->second.session_id.clear();
    }
    it = it->second.keep_until <= now ? devices_.erase(it) : std::next(it);
  }
}

Result<ReportSessions::Authenticated> ReportSessions::check(
    const std::string& id, const std::string& device, std::string_view timestamp,
    std::string_view route, std::string_view body, std::string_view mac_hex, TimePoint now) const {
  std::string mac_key;
  Authenticated who;
  {
    std::shared_lock lock(mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second.expires <= now) {
      return tl::unexpected(refusal(
          401, "report: session " + id.substr(0, 32) +
                   " is unknown or expired (a restarted server forgets sessions); open a new one"));
    }
    if (it->second.device != device) {
      return tl::unexpected(
          refusal(401, "report: session " + id + " belongs to another device, not " + device));
    }
    mac_key = it->second.mac_key;
    who.device_key = it->second.device_key;
    who.enrollment = it->second.enrollment;
  }
  if (mac_hex.size() != 64) {
    return tl::unexpected(refusal(401, "report: X-Mota-Mac is not 64 hex characters"));
  }
  auto mac = protocol::session_mac(mac_key, device, timestamp, route, body);
  if (!mac) return tl::unexpected(mac.error());
  if (!crypto::digest_equal(*mac, mac_hex)) {
    return tl::unexpected(
        refusal(401, "report: X-Mota-Mac does not match the report under session " + id +
                         " (a modified report or the wrong key)"));
  }
  return who;
}

std::size_t ReportSessions::size() const {
  std::shared_lock lock(mu_);
  return sessions_.size();
}

}  // namespace mota::manager
