#pragma once
// Signatures and hashes. All cryptography in mota goes through this header; the implementation
// uses OpenSSL 3's EVP API (manifest/platform/openssl/), and nothing else includes OpenSSL.
//
// Key encodings follow TUF/securesystemslib so metadata interoperates with other TUF tools:
//   ed25519              keytype "ed25519", scheme "ed25519", public = 64 hex chars (raw 32 bytes)
//   ecdsa-sha2-nistp256  keytype "ecdsa" (also accept "ecdsa-sha2-nistp256"),
//                        scheme "ecdsa-sha2-nistp256", public = PEM SubjectPublicKeyInfo,
//                        signature = DER ECDSA-Sig-Value over SHA-256
//   rsassa-pss-sha256    keytype "rsa", scheme "rsassa-pss-sha256", public = PEM SPKI,
//                        signature = PSS/MGF1-SHA256; signing uses salt length = digest length,
//                        verifying accepts any salt length (as securesystemslib does)
//   rsa-pkcs1v15-sha256  keytype "rsa", scheme "rsa-pkcs1v15-sha256": verification only
// Signatures travel hex-encoded in metadata; this API takes and returns raw bytes.

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mota::crypto {

// rsa_pkcs1v15_sha256 is verify-only: metadata from other TUF tools (python-tuf's default RSA
// signer) may use it; mota never generates such keys, and a PEM RSA key loads as rsa_pss_sha256.
enum class KeyType { ed25519, ecdsa_p256, rsa_pss_sha256, rsa_pkcs1v15_sha256 };

// TUF names: "ed25519" / "ecdsa" / "rsa" and schemes as above.
std::string_view keytype_name(KeyType t);
std::string_view scheme_name(KeyType t);
// Accepts a TUF keytype + scheme pair; Errc::unsupported names the pair when unknown.
Result<KeyType> key_type_from_tuf(std::string_view keytype, std::string_view scheme);
// Accepts "ed25519", "ecdsa", "ecdsa-sha2-nistp256", "rsa", "rsassa-pss-sha256" (CLI flags).
Result<KeyType> key_type_from_name(std::string_view name);

struct PublicKey {
  KeyType type = KeyType::ed25519;
  std::string public_value;  // TUF keyval.public, encoded as described above
};

// Verifies `signature` over `message`. Success means valid; a wrong signature, a malformed key or
// a signature of the wrong size is Errc::verification with the reason.
Status verify(const PublicKey& key, std::span<const std::byte> message,
              std::span<const std::byte> signature);
inline Status verify(const PublicKey& key, std::string_view message, std::string_view signature) {
  return verify(key, std::as_bytes(std::span(message)), std::as_bytes(std::span(signature)));
}

// A private key. Opaque; move-only; the key material is freed (and zeroed by OpenSSL) on
// destruction. Thread-safe for concurrent sign() calls on distinct objects.
class PrivateKey {
 public:
  static Result<PrivateKey> generate(KeyType type);
  // PKCS#8 PEM, unencrypted (the file's 0600 mode is the protection; see docs/keys.md).
  static Result<PrivateKey> from_pem(std::string_view pem);
  Result<std::string> to_pem() const;

  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;
  ~PrivateKey();

  KeyType type() const { return type_; }
  PublicKey public_key() const;
  // Raw signature bytes (hex-encode for metadata).
  Result<std::string> sign(std::span<const std::byte> message) const;
  Result<std::string> sign(std::string_view message) const {
    return sign(std::as_bytes(std::span(message)));
  }

  struct Impl;

 private:
  PrivateKey(KeyType t, std::unique_ptr<Impl> impl);
  KeyType type_;
  std::unique_ptr<Impl> impl_;
};

enum class HashAlgo { sha256, sha512 };
std::string_view hash_name(HashAlgo a);  // "sha256" / "sha512"
Result<HashAlgo> hash_from_name(std::string_view name);

// Streaming hash. Feed any number of update() calls, then hex_digest() once. (OpenSSL 3 offers no
// way to serialise a digest state, so a resumed download re-hashes its partial file instead.)
class Hasher {
 public:
  explicit Hasher(HashAlgo algo = HashAlgo::sha256);
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;
  ~Hasher();

  void update(std::span<const std::byte> data);
  void update(std::string_view data) { update(std::as_bytes(std::span(data))); }
  // Lower-case hex digest; the hasher must not be updated afterwards.
  std::string hex_digest();
  HashAlgo algo() const { return algo_; }

  struct Impl;

 private:
  HashAlgo algo_;
  std::unique_ptr<Impl> impl_;
};

std::string sha256_hex(std::string_view data);
std::string sha512_hex(std::string_view data);
// Hashes a file by streaming it (constant memory).
Result<std::string> file_sha256_hex(const std::string& path);

// Constant-time comparison of two hex digests (case-insensitive).
bool digest_equal(std::string_view a, std::string_view b);

// Key agreement and message authentication, for report sessions (protocol/session.hpp): one
// Ed25519-signed handshake per device agrees a key, and each report then carries an HMAC.

// An ephemeral X25519 key pair (RFC 7748). Move-only; the private key never leaves the object
// and is freed (zeroed by OpenSSL) with it. Thread-compatible.
class KeyAgreement {
 public:
  static Result<KeyAgreement> generate();
  KeyAgreement(KeyAgreement&&) noexcept;
  KeyAgreement& operator=(KeyAgreement&&) noexcept;
  ~KeyAgreement();

  // The raw 32-byte public key as 64 lower-case hex characters.
  const std::string& public_hex() const { return public_hex_; }
  // The raw 32-byte shared secret with the peer's public key (64 hex characters). A key that is
  // not 64 hex characters, or a low-order point (the secret would be all zeros, RFC 7748 6.1),
  // is Errc::verification.
  Result<std::string> derive(std::string_view peer_public_hex) const;

  struct Impl;

 private:
  KeyAgreement(std::unique_ptr<Impl> impl, std::string public_hex);
  std::unique_ptr<Impl> impl_;
  std::string public_hex_;
};

// HKDF-SHA256 (RFC 5869), extract then expand: `length` (1..8160) raw bytes.
Result<std::string> hkdf_sha256(std::string_view ikm, std::string_view salt, std::string_view info,
                                std::size_t length);

// HMAC-SHA256 (RFC 2104) of `message`: 32 raw bytes. Thread-safe.
Result<std::string> hmac_sha256(std::string_view key, std::string_view message);

// Cryptographically secure random bytes.
Result<std::string> random_bytes(std::size_t n);

}  // namespace mota::crypto
