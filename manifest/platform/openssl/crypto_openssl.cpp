// OpenSSL 3 backend of manifest/crypto.hpp. Only the EVP API is used (no deprecated low-level
// RSA_/EC_KEY_ calls), and this is the only file in mota that includes OpenSSL headers.
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include "common/hex.hpp"
#include "manifest/crypto.hpp"

namespace mota::crypto {

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

constexpr int kMinRsaBits = 2048;
constexpr int kRsaGenerateBits = 3072;

// Drains OpenSSL's thread-local error queue into one readable string (and leaves it empty, so a
// later failure does not report a stale reason).
std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? std::string("unknown OpenSSL error") : out;
}

Error ossl_error(Errc code, std::string_view what) {
  return Error(code, std::string(what) + ": " + openssl_errors());
}

// Never prompt on the terminal for a passphrase: an encrypted key simply fails to load.
int no_password(char*, int, int, void*) {
  return -1;
}

BioPtr mem_bio(std::string_view data) {
  if (data.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) return nullptr;
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

// The OpenSSL key type that backs a mota KeyType; checks the EC curve and RSA size too.
Status check_key_matches(EVP_PKEY* pkey, KeyType type) {
  switch (type) {
    case KeyType::ed25519:
      if (!EVP_PKEY_is_a(pkey, "ED25519")) {
        return fail(Errc::verification, "key is not an Ed25519 key");
      }
      return {};
    case KeyType::ecdsa_p256: {
      if (!EVP_PKEY_is_a(pkey, "EC")) return fail(Errc::verification, "key is not an EC key");
      char group[64] = {0};
      size_t len = 0;
      if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                          &len)) {
        ERR_clear_error();
        return fail(Errc::verification, "EC key has no named curve");
      }
      std::string_view g(group, len);
      if (g != "prime256v1" && g != "P-256" && g != "secp256r1") {
        return fail(Errc::verification, "EC key is on curve " + std::string(g) + ", not P-256");
      }
      return {};
    }
    case KeyType::rsa_pss_sha256:
    case KeyType::rsa_pkcs1v15_sha256: {
      if (!EVP_PKEY_is_a(pkey, "RSA") && !EVP_PKEY_is_a(pkey, "RSA-PSS")) {
        return fail(Errc::verification, "key is not an RSA key");
      }
      int bits = EVP_PKEY_get_bits(pkey);
      if (bits < kMinRsaBits) {
        return fail(Errc::verification, "RSA key has " + std::to_string(bits) + " bits; at least " +
                                            std::to_string(kMinRsaBits) + " are required");
      }
      return {};
    }
  }
  return fail(Errc::unsupported, "unknown key type");
}

Result<PkeyPtr> load_public(const PublicKey& key) {
  if (key.type == KeyType::ed25519) {
    auto raw = from_hex(key.public_value);
    if (!raw)
      return fail(Errc::verification, "Ed25519 public key is not hex: " + raw.error().message());
    if (raw->size() != 32) {
      return fail(Errc::verification,
                  "Ed25519 public key has " + std::to_string(raw->size()) + " bytes, expected 32");
    }
    PkeyPtr p(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                          reinterpret_cast<const unsigned char*>(raw->data()),
                                          raw->size()));
    if (!p) return fail(ossl_error(Errc::verification, "load Ed25519 public key"));
    return p;
  }
  BioPtr bio = mem_bio(key.public_value);
  if (!bio) return fail(ossl_error(Errc::internal, "BIO_new_mem_buf"));
  PkeyPtr p(PEM_read_bio_PUBKEY(bio.get(), nullptr, no_password, nullptr));
  if (!p) {
    return fail(ossl_error(Errc::verification,
                           "public key is not a PEM SubjectPublicKeyInfo (BEGIN PUBLIC KEY)"));
  }
  MOTA_TRY(check_key_matches(p.get(), key.type));
  return p;
}

// Sets RSA-PSS parameters on a DigestSign/DigestVerify context.
bool set_pss(EVP_PKEY_CTX* pctx, int saltlen) {
  return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, saltlen) > 0;
}

const EVP_MD* digest_for(KeyType t) {
  return t == KeyType::ed25519 ? nullptr : EVP_sha256();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Names

std::string_view keytype_name(KeyType t) {
  switch (t) {
    case KeyType::ed25519:
      return "ed25519";
    case KeyType::ecdsa_p256:
      return "ecdsa";
    case KeyType::rsa_pss_sha256:
    case KeyType::rsa_pkcs1v15_sha256:
      return "rsa";
  }
  return "unknown";
}

std::string_view scheme_name(KeyType t) {
  switch (t) {
    case KeyType::ed25519:
      return "ed25519";
    case KeyType::ecdsa_p256:
      return "ecdsa-sha2-nistp256";
    case KeyType::rsa_pss_sha256:
      return "rsassa-pss-sha256";
    case KeyType::rsa_pkcs1v15_sha256:
      return "rsa-pkcs1v15-sha256";
  }
  return "unknown";
}

Result<KeyType> key_type_from_tuf(std::string_view keytype, std::string_view scheme) {
  if (keytype == "ed25519" && scheme == "ed25519") return KeyType::ed25519;
  if ((keytype == "ecdsa" || keytype == "ecdsa-sha2-nistp256") && scheme == "ecdsa-sha2-nistp256") {
    return KeyType::ecdsa_p256;
  }
  if (keytype == "rsa" && scheme == "rsassa-pss-sha256") return KeyType::rsa_pss_sha256;
  if (keytype == "rsa" && scheme == "rsa-pkcs1v15-sha256") return KeyType::rsa_pkcs1v15_sha256;
  return fail(Errc::unsupported, "unsupported key type \"" + std::string(keytype) +
                                     "\" with scheme \"" + std::string(scheme) + "\"");
}

Result<KeyType> key_type_from_name(std::string_view name) {
  if (name == "ed25519") return KeyType::ed25519;
  if (name == "ecdsa" || name == "ecdsa-sha2-nistp256") return KeyType::ecdsa_p256;
  if (name == "rsa" || name == "rsassa-pss-sha256") return KeyType::rsa_pss_sha256;
  return fail(Errc::unsupported,
              "unknown key type \"" + std::string(name) +
                  "\" (expected ed25519, ecdsa, ecdsa-sha2-nistp256, rsa or rsassa-pss-sha256)");
}

// ---------------------------------------------------------------------------------------------
// Verification

Status verify(const PublicKey& key, std::span<const std::byte> message,
              std::span<const std::byte> signature) {
  PkeyPtr pkey = MOTA_TRY(load_public(key));
  if (key.type == KeyType::ed25519 && signature.size() != 64) {
    return fail(Errc::verification, "Ed25519 signature has " + std::to_string(signature.size()) +
                                        " bytes, expected 64");
  }
  if (signature.empty()) return fail(Errc::verification, "signature is empty");
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return fail(ossl_error(Errc::internal, "EVP_MD_CTX_new"));
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  if (EVP_DigestVerifyInit(ctx.get(), &pctx, digest_for(key.type), nullptr, pkey.get()) != 1) {
    return fail(ossl_error(Errc::verification, "initialise verification"));
  }
  if (key.type == KeyType::rsa_pss_sha256 && !set_pss(pctx, RSA_PSS_SALTLEN_AUTO)) {
    return fail(ossl_error(Errc::internal, "set RSA-PSS parameters"));
  }
  if (key.type == KeyType::rsa_pkcs1v15_sha256 &&
      EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0) {
    return fail(ossl_error(Errc::internal, "set RSA PKCS#1 v1.5 padding"));
  }
  int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                            signature.size(),
                            reinterpret_cast<const unsigned char*>(message.data()), message.size());
  if (rc == 1) return {};
  // 0 is "does not verify"; < 0 is a malformed signature (bad DER, wrong size). Either way the
  // error queue holds only detail, which we drop so it does not leak into a later report.
  ERR_clear_error();
  return fail(Errc::verification, std::string(scheme_name(key.type)) +
                                      (rc == 0 ? " signature does not match the message and key"
                                               : " signature is malformed"));
}

// ---------------------------------------------------------------------------------------------
// Private keys

struct PrivateKey::Impl {
  PkeyPtr pkey;
};

PrivateKey::PrivateKey(KeyType t, std::unique_ptr<Impl> impl) : type_(t), impl_(std::move(impl)) {}
PrivateKey::PrivateKey(PrivateKey&&) noexcept = default;
PrivateKey& PrivateKey::operator=(PrivateKey&&) noexcept = default;
PrivateKey::~PrivateKey() = default;

Result<PrivateKey> PrivateKey::generate(KeyType type) {
  EVP_PKEY* raw = nullptr;
  switch (type) {
    case KeyType::ed25519:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
      break;
    case KeyType::ecdsa_p256:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
      break;
    case KeyType::rsa_pss_sha256:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(kRsaGenerateBits));
      break;
    case KeyType::rsa_pkcs1v15_sha256:
      return fail(Errc::unsupported, "rsa-pkcs1v15-sha256 is verify-only; new keys use rsassa-pss");
  }
  if (!raw) {
    return fail(ossl_error(Errc::internal, "generate " + std::string(keytype_name(type)) + " key"));
  }
  auto impl = std::make_unique<Impl>();
  impl->pkey.reset(raw);
  return PrivateKey(type, std::move(impl));
}

Result<PrivateKey> PrivateKey::from_pem(std::string_view pem) {
  BioPtr bio = mem_bio(pem);
  if (!bio) return fail(ossl_error(Errc::internal, "BIO_new_mem_buf"));
  PkeyPtr p(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr));
  if (!p) {
    return fail(
        ossl_error(Errc::parse, "not an unencrypted PEM private key (expected BEGIN PRIVATE KEY)"));
  }
  KeyType type;
  if (EVP_PKEY_is_a(p.get(), "ED25519")) {
    type = KeyType::ed25519;
  } else if (EVP_PKEY_is_a(p.get(), "EC")) {
    type = KeyType::ecdsa_p256;
  } else if (EVP_PKEY_is_a(p.get(), "RSA")) {
    type = KeyType::rsa_pss_sha256;
  } else {
    return fail(Errc::unsupported, std::string("private key of type ") +
                                       EVP_PKEY_get0_type_name(p.get()) +
                                       " is not supported (use ed25519, ecdsa P-256 or rsa)");
  }
  if (auto st = check_key_matches(p.get(), type); !st) {
    return fail(Errc::unsupported, "private key: " + st.error().message());
  }
  auto impl = std::make_unique<Impl>();
  impl->pkey = std::move(p);
  return PrivateKey(type, std::move(impl));
}

Result<std::string> PrivateKey::to_pem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return fail(ossl_error(Errc::internal, "BIO_new"));
  if (PEM_write_bio_PKCS8PrivateKey(bio.get(), impl_->pkey.get(), nullptr, nullptr, 0, nullptr,
                                    nullptr) != 1) {
    return fail(ossl_error(Errc::internal, "write PKCS#8 private key"));
  }
  std::string out = bio_contents(bio.get());
  return out;
}

PublicKey PrivateKey::public_key() const {
  PublicKey pk;
  pk.type = type_;
  if (type_ == KeyType::ed25519) {
    unsigned char raw[32];
    size_t len = sizeof raw;
    if (EVP_PKEY_get_raw_public_key(impl_->pkey.get(), raw, &len) == 1 && len == sizeof raw) {
      pk.public_value = to_hex(std::as_bytes(std::span(raw, len)));
    }
  } else {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (bio && PEM_write_bio_PUBKEY(bio.get(), impl_->pkey.get()) == 1) {
      pk.public_value = bio_contents(bio.get());
    }
  }
  // Only allocation failure gets here with an empty value; such a key then verifies nothing.
  ERR_clear_error();
  return pk;
}

Result<std::string> PrivateKey::sign(std::span<const std::byte> message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return fail(ossl_error(Errc::internal, "EVP_MD_CTX_new"));
  EVP_PKEY_CTX* pctx = nullptr;
  if (EVP_DigestSignInit(ctx.get(), &pctx, digest_for(type_), nullptr, impl_->pkey.get()) != 1) {
    return fail(ossl_error(Errc::internal, "initialise signing"));
  }
  if (type_ == KeyType::rsa_pss_sha256 && !set_pss(pctx, RSA_PSS_SALTLEN_DIGEST)) {
    return fail(ossl_error(Errc::internal, "set RSA-PSS parameters"));
  }
  const auto* msg = reinterpret_cast<const unsigned char*>(message.data());
  size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, msg, message.size()) != 1) {
    return fail(ossl_error(Errc::internal, "query signature size"));
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, msg,
                     message.size()) != 1) {
    return fail(ossl_error(Errc::internal, "sign"));
  }
  sig.resize(len);  // ECDSA DER signatures are often shorter than the maximum
  return sig;
}

// ---------------------------------------------------------------------------------------------
// Hashing

std::string_view hash_name(HashAlgo a) {
  return a == HashAlgo::sha512 ? "sha512" : "sha256";
}

Result<HashAlgo> hash_from_name(std::string_view name) {
  if (name == "sha256") return HashAlgo::sha256;
  if (name == "sha512") return HashAlgo::sha512;
  return fail(Errc::unsupported, "unsupported hash algorithm \"" + std::string(name) +
                                     "\" (expected sha256 or sha512)");
}

struct Hasher::Impl {
  MdCtxPtr ctx;
};

namespace {
// Hash contexts fail only on allocation failure or a broken OpenSSL install; neither can be
// handled meaningfully by a caller of a void update(), so this is fatal (like std::bad_alloc).
[[noreturn]] void hash_fatal(const char* what) {
  std::fprintf(stderr, "mota: fatal: %s: %s\n", what, openssl_errors().c_str());
  std::abort();
}
}  // namespace

Hasher::Hasher(HashAlgo algo) : algo_(algo), impl_(std::make_unique<Impl>()) {
  impl_->ctx.reset(EVP_MD_CTX_new());
  if (!impl_->ctx) hash_fatal("EVP_MD_CTX_new");
  const EVP_MD* md = algo == HashAlgo::sha512 ? EVP_sha512() : EVP_sha256();
  if (EVP_DigestInit_ex(impl_->ctx.get(), md, nullptr) != 1) hash_fatal("EVP_DigestInit_ex");
}
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;
Hasher::~Hasher() = default;

void Hasher::update(std::span<const std::byte> data) {
  if (data.empty()) return;
  if (EVP_DigestUpdate(impl_->ctx.get(), data.data(), data.size()) != 1) {
    hash_fatal("EVP_DigestUpdate");
  }
}

std::string Hasher::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->ctx.get(), md, &len) != 1) hash_fatal("EVP_DigestFinal_ex");
  return to_hex(std::as_bytes(std::span(md, len)));
}

std::string sha256_hex(std::string_view data) {
  // Fetched once and one context per thread, reused: rollout buckets hash a short string per
  // device, and `mota fleet` does that for every device of a model (a million of them), where a
  // new context and an implicit fetch per call cost several times the hash itself.
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local MdCtxPtr ctx(EVP_MD_CTX_new());
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!md || !ctx || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out, &len) != 1) {
    hash_fatal("sha256");
  }
  return to_hex(std::as_bytes(std::span(out, len)));
}

std::string sha512_hex(std::string_view data) {
  Hasher h(HashAlgo::sha512);
  h.update(data);
  return h.hex_digest();
}

Result<std::string> file_sha256_hex(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno_error("open", path, errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  constexpr std::size_t kBlock = 1u << 20;
  std::vector<std::byte> buf(kBlock);
  Hasher h(HashAlgo::sha256);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno_error("read", path, errno));
    }
    if (n == 0) break;
    h.update(std::span(buf.data(), static_cast<std::size_t>(n)));
  }
  return h.hex_digest();
}

bool digest_equal(std::string_view a, std::string_view b) {
  // The length of a digest is public (it follows from the algorithm); the content is not.
  if (a.size() != b.size()) return false;
  unsigned diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    // Branch-free ASCII lower-casing: sets bit 0x20 only for 'A'..'Z'.
    auto lower = [](unsigned char c) -> unsigned {
      unsigned is_upper = static_cast<unsigned>(static_cast<unsigned>(c - 'A') <= 25u);
      return c | (is_upper << 5);
    };
    diff |= lower(static_cast<unsigned char>(a[i])) ^ lower(static_cast<unsigned char>(b[i]));
  }
  return diff == 0;
}

struct KeyAgreement::Impl {
  PkeyPtr pkey;
};

KeyAgreement::KeyAgreement(std::unique_ptr<Impl> impl, std::string public_hex)
    : impl_(std::move(impl)), public_hex_(std::move(public_hex)) {}
KeyAgreement::KeyAgreement(KeyAgreement&&) noexcept = default;
KeyAgreement& KeyAgreement::operator=(KeyAgreement&&) noexcept = default;
KeyAgreement::~KeyAgreement() = default;

Result<KeyAgreement> KeyAgreement::generate() {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  if (!pkey) return fail(ossl_error(Errc::internal, "generate X25519 key"));
  unsigned char raw[32];
  std::size_t len = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(pkey.get(), raw, &len) != 1 || len != sizeof raw) {
    return fail(ossl_error(Errc::internal, "X25519 public key"));
  }
  auto impl = std::make_unique<Impl>();
  impl->pkey = std::move(pkey);
  return KeyAgreement(std::move(impl), to_hex(std::as_bytes(std::span(raw, len))));
}

Result<std::string> KeyAgreement::derive(std::string_view peer_public_hex) const {
  if (peer_public_hex.size() != 64) {
    return fail(Errc::verification, "X25519 public key: expected 64 hex characters, got " +
                                        std::to_string(peer_public_hex.size()));
  }
  auto raw = from_hex(peer_public_hex);
  if (!raw) return fail(Errc::verification, "X25519 public key is not hex");
  PkeyPtr peer(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_X25519, nullptr, reinterpret_cast<const unsigned char*>(raw->data()), raw->size()));
  if (!peer) return fail(ossl_error(Errc::verification, "X25519 public key"));
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_from_pkey(nullptr, impl_->pkey.get(), nullptr), EVP_PKEY_CTX_free);
  std::string secret(32, '\0');
  std::size_t len = secret.size();
  // OpenSSL refuses a low-order peer point here (the result would be all zeros).
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), reinterpret_cast<unsigned char*>(secret.data()), &len) != 1 ||
      len != secret.size()) {
    return fail(ossl_error(Errc::verification, "X25519 key agreement"));
  }
  return secret;
}

Result<std::string> hkdf_sha256(std::string_view ikm, std::string_view salt, std::string_view info,
                                std::size_t length) {
  if (length == 0 || length > 255 * 32) {
    return fail(Errc::invalid_argument,
                "hkdf_sha256: length " + std::to_string(length) + " is not in 1..8160");
  }
  std::unique_ptr<EVP_KDF, decltype(&EVP_KDF_free)> kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr),
                                                        EVP_KDF_free);
  std::unique_ptr<EVP_KDF_CTX, decltype(&EVP_KDF_CTX_free)> ctx(
      kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr, EVP_KDF_CTX_free);
  if (!ctx) return fail(ossl_error(Errc::internal, "HKDF"));
  char digest[] = "SHA256";
  // OSSL_PARAM takes non-const pointers; OpenSSL only reads these buffers.
  auto bytes = [](std::string_view v) { return const_cast<char*>(v.data()); };
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, bytes(ikm), ikm.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, bytes(salt), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, bytes(info), info.size()),
      OSSL_PARAM_construct_end()};
  std::string out(length, '\0');
  if (EVP_KDF_derive(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), out.size(), params) !=
      1) {
    return fail(ossl_error(Errc::internal, "HKDF-SHA256"));
  }
  return out;
}

Result<std::string> hmac_sha256(std::string_view key, std::string_view message) {
  // One context per thread, its digest set once: EVP_MAC_init with a digest parameter fetches
  // the digest by name (a lookup under a lock) on every call, which showed in the server's
  // profile; re-keying a context that has its digest is only the key schedule.
  struct Ctx {
    EVP_MAC_CTX* ctx = nullptr;
    ~Ctx() { EVP_MAC_CTX_free(ctx); }
  };
  thread_local Ctx tls;
  if (!tls.ctx) {
    std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr),
                                                          EVP_MAC_free);
    EVP_MAC_CTX* ctx = mac ? EVP_MAC_CTX_new(mac.get()) : nullptr;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (!ctx || EVP_MAC_CTX_set_params(ctx, params) != 1) {
      EVP_MAC_CTX_free(ctx);
      return fail(ossl_error(Errc::internal, "HMAC-SHA256"));
    }
    tls.ctx = ctx;
  }
  std::string out(32, '\0');
  std::size_t len = 0;
  // A null key would mean "keep the previous key" to EVP_MAC_init: an empty key gets a pointer.
  static const unsigned char kEmpty = 0;
  const auto* k = key.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(key.data());
  if (EVP_MAC_init(tls.ctx, k, key.size(), nullptr) != 1 ||
      EVP_MAC_update(tls.ctx, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1 ||
      EVP_MAC_final(tls.ctx, reinterpret_cast<unsigned char*>(out.data()), &len, out.size()) != 1 ||
      len != out.size()) {
    return fail(ossl_error(Errc::internal, "HMAC-SHA256"));
  }
  return out;
}

Result<std::string> random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (n == 0) return out;
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return fail(Errc::invalid_argument,
                "random_bytes: " + std::to_string(n) + " bytes is too many");
  }
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    return fail(ossl_error(Errc::internal, "RAND_bytes"));
  }
  return out;
}

}  // namespace mota::crypto
