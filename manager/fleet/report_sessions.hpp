#pragma once
// The server's side of report sessions (protocol/session.hpp): the sessions devices opened with a
// signed handshake, kept in memory only. A restart forgets them; devices then get a 401 and
// shake hands again, which costs one signature check each.
//
// One session per device: a new handshake replaces the device's previous session. Bounded:
// beyond max_sessions live sessions a handshake is refused with 503 and the device signs its
// reports instead, so memory stays bounded (~250 bytes per session) and nothing is lost.
//
// Thread-safety: every member may be called concurrently (a shared mutex; MACs are computed
// outside it).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/result.hpp"
#include "common/time.hpp"

namespace mota::manager {

struct SessionOptions {
  std::chrono::seconds ttl{3600};
  std::size_t max_sessions = 250000;
  // The clock window of reports (IngestOptions::max_clock_skew): a device's last handshake time
  // is kept at least this long, so a replayed handshake is refused even after its session ended.
  std::chrono::seconds replay_window{600};
};

class ReportSessions {
 public:
  explicit ReportSessions(SessionOptions options = {}) : options_(options) {}

  struct Opened {
    std::string id;             // 32 hex characters
    std::string server_x25519;  // 64 hex characters
    std::int64_t expires_in = 0;
  };
  // Opens a session for `device`, whose handshake was signed at `signed_at` by the Ed25519 key
  // `device_key_hex`; the caller has checked that signature, the clock window and the key's
  // standing. Errors carry the HTTP status to answer:
  //   400  device_x25519_hex is not a usable X25519 public key
  //   401  a replayed handshake: signed before the device's last one, or the same X25519 key
  //   503  max_sessions live sessions (the device signs its reports instead)
  // `enrollment`: the enrollment key whose signature the handshake carried and the caller
  // verified ("" = none), returned with every report of the session.
  Result<Opened> open(const std::string& device, const std::string& device_key_hex,
                      const std::string& device_x25519_hex, TimePoint signed_at, TimePoint now,
                      std::string enrollment = {});

  // Authenticates a report under session `id`: the session exists, has not expired, belongs to
  // `device`, and `mac_hex` is the HMAC of (device, timestamp, route, body) under its key.
  // Returns the Ed25519 key of the device that opened the session (hex) and the handshake's
  // enrollment key name. Errors are 401s naming what failed (unknown or expired session, another
  // device's session, a wrong MAC).
  struct Authenticated {
    std::string device_key;
    std::string enrollment;
  };
  Result<Authenticated> check(const std::string& id, const std::string& device,
                              std::string_view timestamp, std::string_view route,
                              std::string_view body, std::string_view mac_hex, TimePoint now) const;

  std::size_t size() const;

 private:
  struct Session {
    std::string device;
    std::string device_key;  // Ed25519, hex
    std::string mac_key;     // 32 raw bytes
    TimePoint expires;
    std::string enrollment;
  };
  struct DeviceState {
    std::string session_id;  // the live one, "" once it was dropped
    TimePoint last_signed_at;
    std::string last_x25519;
    TimePoint keep_until;  // drop this record after (the session's expiry or the replay window)
  };
  // Drops expired sessions and device records no longer needed. Caller holds mu_ exclusively.
  void purge(TimePoint now);

  SessionOptions options_;
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, Session> sessions_;  // by id
  std::unordered_map<std::string, DeviceState> devices_;
  TimePoint next_purge_{};
};

}  // namespace mota::manager
