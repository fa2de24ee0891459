#include "protocol/identity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

#include "common/fs.hpp"
#include "common/hex.hpp"
#include "common/log.hpp"

namespace mota::protocol {

namespace {

Result<crypto::PrivateKey> parse_key(const std::filesystem::path& path, std::string_view pem) {
  auto key = crypto::PrivateKey::from_pem(pem);
  if (!key) {
    return fail(Errc::parse, path.string() + ": not a usable PKCS#8 PEM private key (" +
                                 key.error().message() +
                                 "); not replacing it: move it away to create a new identity");
  }
  if (key->type() != crypto::KeyType::ed25519) {
    return fail(Errc::parse, path.string() + ": holds a " +
                                 std::string(crypto::keytype_name(key->type())) +
                                 " key, the device key must be ed25519; not replacing it");
  }
  return std::move(*key);
}

Result<crypto::PrivateKey> load_key(const std::filesystem::path& path) {
  auto pem = MOTA_TRY_CTX(fs::read_file(path, 64 * 1024), "read device key");
  auto key = MOTA_TRY(parse_key(path, pem));  // a rejected file is left exactly as it was
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    // Tighten rather than refuse: the key is still ours, only its mode drifted.
    log::warn("device key was readable by others; setting mode 0600", {{"PATH", path.string()}});
    if (::chmod(path.c_str(), 0600) != 0)
      return fail(errno_error("chmod 0600", path.string(), errno));
  }
  return key;
}

// Writes a new key without ever replacing an existing file: temp file, fsync, link() (which fails
// if the name exists), fsync dir. Returns false in `created` if another process won the race.
Status write_new_key(const std::filesystem::path& path, std::string_view pem, bool& created) {
  created = false;
  auto tmp =
      path.parent_path() / ("." + path.filename().string() + ".tmp-" + std::to_string(::getpid()));
  ::unlink(tmp.c_str());  // our own leftover from a crash with the same pid
  {
    auto f = MOTA_TRY(fs::File::open_write(tmp, O_CREAT | O_EXCL, 0600));
    if (::fchmod(f.fd(), 0600) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return fail(errno_error("chmod", tmp.string(), err));
    }
    Status st = f.write_all(pem);
    if (st) st = f.sync();
    if (st) st = f.close();
    if (!st) {
      ::unlink(tmp.c_str());
      return st;
    }
  }
  int rc = ::link(tmp.c_str(), path.c_str());
  int err = errno;
  ::unlink(tmp.c_str());
  if (rc != 0) {
    if (err == EEXIST) return {};
    return fail(errno_error("link", tmp.string() + " -> " + path.string(), err));
  }
  created = true;
  return fs::fsync_dir(path.parent_path());
}

}  // namespace

Result<DeviceIdentity> DeviceIdentity::load_or_create(const std::filesystem::path& state_dir,
                                                      std::string device_id) {
  const auto path = state_dir / kDeviceKeyFile;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    auto key = MOTA_TRY(load_key(path));
    return DeviceIdentity(std::move(device_id), path, std::move(key));
  }
  if (errno != ENOENT) return fail(errno_error("stat", path.string(), errno));

  MOTA_TRY_CTX(fs::make_dirs(state_dir, 0755), "create device key");
  auto key =
      MOTA_TRY_CTX(crypto::PrivateKey::generate(crypto::KeyType::ed25519), "generate device key");
  auto pem = MOTA_TRY_CTX(key.to_pem(), "generate device key");
  bool created = false;
  MOTA_TRY_CTX(write_new_key(path, pem, created), "write device key");
  if (!created) {
    auto existing = MOTA_TRY(load_key(path));
    return DeviceIdentity(std::move(device_id), path, std::move(existing));
  }
  log::info("generated device key",
            {{"PATH", path.string()}, {"PUBLIC_KEY", key.public_key().public_value}});
  return DeviceIdentity(std::move(device_id), path, std::move(key));
}

Result<std::string> DeviceIdentity::sign(std::string_view message) const {
  auto sig = MOTA_TRY_CTX(key_.sign(message), "sign with device key");
  return to_hex(sig);
}

std::string signed_message(std::string_view device_id, std::string_view timestamp,
                           std::string_view route, std::string_view body) {
  std::string m = "mota-report-v1\n";
  m.reserve(m.size() + device_id.size() + timestamp.size() + route.size() + body.size() + 3);
  m.append(device_id).append("\n").append(timestamp).append("\n").append(route).append("\n");
  m.append(body);
  return m;
}

Result<std::map<std::string, std::string>> DeviceIdentity::report_headers(std::string_view route,
                                                                          std::string_view body,
                                                                          TimePoint at) const {
  std::string ts = format_time(at);
  auto sig = MOTA_TRY(sign(signed_message(device_id_, ts, route, body)));
  return std::map<std::string, std::string>{{"X-Mota-Device", device_id_},
                                            {"X-Mota-Key", public_key_hex()},
                                            {"X-Mota-Timestamp", ts},
                                            {"X-Mota-Signature", std::move(sig)}};
}

Status verify_report(const std::map<std::string, std::string>& headers, std::string_view route,
                     std::string_view body) {
  // Header names are case-insensitive (RFC 9110); servers often lower-case them.
  auto get = [&](std::string_view name) -> Result<std::string> {
    for (const auto& [k, v] : headers) {
      if (k.size() == name.size() &&
          std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
          })) {
        if (v.empty()) break;
        return v;
      }
    }
    return fail(Errc::verification, "report: header " + std::string(name) + " is missing");
  };
  auto device = MOTA_TRY(get("X-Mota-Device"));
  auto key_hex = MOTA_TRY(get("X-Mota-Key"));
  auto ts = MOTA_TRY(get("X-Mota-Timestamp"));
  auto sig_hex = MOTA_TRY(get("X-Mota-Signature"));
  if (!parse_time(ts))
    return fail(Errc::verification, "report: X-Mota-Timestamp '" + ts + "' is not a UTC time");
  auto sig = from_hex(sig_hex);
  if (!sig) return fail(Errc::verification, "report: X-Mota-Signature is not hex");
  crypto::PublicKey key{crypto::KeyType::ed25519, key_hex};
  return crypto::verify(key, signed_message(device, ts, route, body), *sig)
      .context("report from " + device);
}

bool valid_device_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
  });
}

std::string enrollment_message(std::string_view device_id, std::string_view device_key_hex) {
  std::string m = "mota-enrollment-v1\n";
  m += device_id;
  m += '\n';
  m += device_key_hex;
  return m;
}

Result<std::map<std::string, std::string>> enrollment_headers(const crypto::PrivateKey& enrollment,
                                                              const DeviceIdentity& device) {
  auto sig =
      MOTA_TRY_CTX(enrollment.sign(enrollment_message(device.device_id(), device.public_key_hex())),
                   "enrollment signature");
  return std::map<std::string, std::string>{
      {"X-Mota-Enrollment-Key", enrollment.public_key().public_value},
      {"X-Mota-Enrollment-Signature", to_hex(sig)}};
}

Status verify_enrollment(std::string_view enrollment_key_hex, std::string_view signature_hex,
                         std::string_view device_id, std::string_view device_key_hex) {
  auto sig = from_hex(signature_hex);
  if (enrollment_key_hex.size() != 64 || !from_hex(enrollment_key_hex) || !sig ||
      sig->size() != 64) {
    return fail(Errc::verification,
                "enrollment: X-Mota-Enrollment-Key must be 64 and X-Mota-Enrollment-Signature "
                "128 hex characters");
  }
  crypto::PublicKey key{crypto::KeyType::ed25519, std::string(enrollment_key_hex)};
  return crypto::verify(key, enrollment_message(device_id, device_key_hex), *sig)
      .context("enrollment signature of device " + std::string(device_id));
}

}  // namespace mota::protocol
