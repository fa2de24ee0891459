#pragma once
// The device's identity: an Ed25519 key pair generated on first start and kept in
// <state_dir>/device.key (PKCS#8 PEM, mode 0600). The server learns the public key from the first
// report (bound to the id at first contact, or pre-registered by the fleet operator; admission is
// the server's: docs/fleet.md) and checks every later
// report against it.
//
// Report signing scheme (version 1), for the server to verify:
//   headers   X-Mota-Device     device id (agent.toml device_id)
//             X-Mota-Key        Ed25519 public key, 64 lower-case hex characters (raw 32 bytes)
//             X-Mota-Timestamp  UTC time of signing, "YYYY-MM-DDTHH:MM:SSZ"
//             X-Mota-Signature  Ed25519 signature, 128 lower-case hex characters, over
//   message   "mota-report-v1\n" + device + "\n" + timestamp + "\n" + route + "\n" + body
//             where route is the request path below <server_url>, e.g. "/v1/devices/x/status",
//             and body is the exact request body bytes (possibly empty).
// Binding the device id, route and time stops a captured report from being replayed under
// another id, to another endpoint or (with a server-side window on the timestamp) much later.
// signed_message() builds the message, so server and agent share one definition.
//
// Thread-safety: a loaded DeviceIdentity is immutable; sign() may be called concurrently.

#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/time.hpp"
#include "manifest/crypto.hpp"

namespace mota::protocol {

inline constexpr const char* kDeviceKeyFile = "device.key";

// A device id: 1..128 of [A-Za-z0-9._:-] (agent.toml device_id, or /etc/machine-id). The agent
// never sends another; the server refuses any other at the edge, before it is stored or logged.
bool valid_device_id(std::string_view id);

class DeviceIdentity {
 public:
  // Loads <state_dir>/device.key, or, if it does not exist, generates a key and writes it there
  // (0600, atomically; state_dir is created if missing). If two processes race, both end up with
  // the key that was linked into place first. An existing file that is unreadable, not a PKCS#8
  // PEM key, or not Ed25519 is an error (Errc::parse / io) and is never replaced: a device
  // silently changing identity would be locked out by the server, so a human decides.
  static Result<DeviceIdentity> load_or_create(const std::filesystem::path& state_dir,
                                               std::string device_id);

  const std::string& device_id() const { return device_id_; }
  const std::filesystem::path& key_path() const { return key_path_; }
  crypto::PublicKey public_key() const { return key_.public_key(); }
  // 64 lower-case hex characters.
  std::string public_key_hex() const { return key_.public_key().public_value; }

  // Hex Ed25519 signature over `message` as given.
  Result<std::string> sign(std::string_view message) const;

  // The four X-Mota-* headers for a report of `body` to `route` (see the scheme above).
  Result<std::map<std::string, std::string>> report_headers(std::string_view route,
                                                            std::string_view body,
                                                            TimePoint at = now_seconds()) const;

 private:
  DeviceIdentity(std::string id, std::filesystem::path path, crypto::PrivateKey key)
      : device_id_(std::move(id)), key_path_(std::move(path)), key_(std::move(key)) {}

  std::string device_id_;
  std::filesystem::path key_path_;
  crypto::PrivateKey key_;
};

// The exact bytes signed for a report (scheme version 1 above).
std::string signed_message(std::string_view device_id, std::string_view timestamp,
                           std::string_view route, std::string_view body);

// Server side: checks the headers of a report against `body` and `route`. Errc::verification
// naming the missing/malformed header or the bad signature. Does not check the timestamp's age
// (the caller owns the clock and the window) nor that the key belongs to the device. Header
// names match case-insensitively.
Status verify_report(const std::map<std::string, std::string>& headers, std::string_view route,
                     std::string_view body);

// Fleet enrollment (docs/security.md, "Devices"): an image carries the private half of a fleet
// enrollment key (agent.toml enrollment_key); the agent sends, with its handshakes and signed
// reports,
//   X-Mota-Enrollment-Key        the enrollment key's Ed25519 public key, 64 lower-case hex
//   X-Mota-Enrollment-Signature  its signature, 128 lower-case hex, over
//   enrollment_message(device id, device key hex) = "mota-enrollment-v1\n" + id + "\n" + key
// and a server that has the key on record (and not revoked) admits the device on first contact.
// The signature binds the device's own key, so a captured one admits nobody else.
std::string enrollment_message(std::string_view device_id, std::string_view device_key_hex);
// The two headers for `device` (nothing is sent when the agent has no enrollment key).
Result<std::map<std::string, std::string>> enrollment_headers(const crypto::PrivateKey& enrollment,
                                                              const DeviceIdentity& device);
// Server side: Errc::verification when the signature is malformed or does not verify.
Status verify_enrollment(std::string_view enrollment_key_hex, std::string_view signature_hex,
                         std::string_view device_id, std::string_view device_key_hex);

}  // namespace mota::protocol
