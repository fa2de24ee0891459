// Tests for manifest/crypto.hpp: each signature scheme round-trips and rejects tampering, keys
// survive PEM, and signatures interoperate with the `openssl` command-line tool both ways (so the
// encodings are the standard ones other TUF tools use).
#include "manifest/crypto.hpp"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

#include "common/hex.hpp"
#include "tests/support/test_support.hpp"

namespace mota::crypto {
namespace {

using test::TempDir;

// Key generation (RSA-3072 in particular) is slow under sanitizers: one key of each type per run.
const PrivateKey& shared_key(KeyType t) {
  static std::map<KeyType, std::unique_ptr<PrivateKey>> keys;
  auto& slot = keys[t];
  if (!slot) {
    auto k = PrivateKey::generate(t);
    EXPECT_TRUE(k) << k.error().message();
    slot = std::make_unique<PrivateKey>(std::move(*k));
  }
  return *slot;
}

test::RunResult openssl(const std::vector<std::string>& args);

// A second, different key of each type (for "wrong key" checks). The RSA one is a 2048-bit key
// from the openssl CLI, which is quicker than a second RSA-3072 generation.
const PrivateKey& other_key(KeyType t) {
  static std::map<KeyType, std::unique_ptr<PrivateKey>> keys;
  auto& slot = keys[t];
  if (!slot) {
    Result<PrivateKey> k = fail(Errc::internal, "not generated");
    if (t == KeyType::rsa_pss_sha256) {
      TempDir dir;
      auto r = openssl({"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                        (dir / "k.pem").string()});
      EXPECT_EQ(r.exit_code, 0) << r.err;
      k = PrivateKey::from_pem(test::read_file(dir / "k.pem"));
    } else {
      k = PrivateKey::generate(t);
    }
    EXPECT_TRUE(k) << k.error().message();
    slot = std::make_unique<PrivateKey>(std::move(*k));
  }
  return *slot;
}

test::RunResult openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run(argv);
}

// ------------------------------------------------------------------------------------------------
// Hashes

TEST(Hash, KnownVectors) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha512_hex("abc"),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
  EXPECT_EQ(sha512_hex(""),
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
            "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e");
}

TEST(Hash, StreamingEqualsOneShotAndMillionA) {
  Hasher h;
  std::string block(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.update(block);
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  std::string data;
  for (int i = 0; i < 5000; ++i) data += static_cast<char>(i * 7);
  Hasher s(HashAlgo::sha512);
  for (std::size_t off = 0; off < data.size(); off += 333) {
    s.update(std::string_view(data).substr(off, 333));
  }
  s.update(std::string_view());  // an empty update changes nothing
  EXPECT_EQ(s.algo(), HashAlgo::sha512);
  EXPECT_EQ(s.hex_digest(), sha512_hex(data));
}

TEST(Hash, MovedHasherKeepsState) {
  Hasher a;
  a.update("ab");
  Hasher b(std::move(a));
  b.update("c");
  Hasher c(HashAlgo::sha512);
  c = std::move(b);
  EXPECT_EQ(c.algo(), HashAlgo::sha256);
  EXPECT_EQ(c.hex_digest(), sha256_hex("abc"));
}

TEST(Hash, Names) {
  EXPECT_EQ(hash_name(HashAlgo::sha256), "sha256");
  EXPECT_EQ(hash_name(HashAlgo::sha512), "sha512");
  EXPECT_EQ(*hash_from_name("sha512"), HashAlgo::sha512);
  auto bad = hash_from_name("md5");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::unsupported);
  EXPECT_NE(bad.error().message().find("md5"), std::string::npos);
}

TEST(Hash, FileStreamsAcrossBlocks) {
  TempDir dir;
  // 2.5 MiB + 3 bytes: crosses the 1 MiB read blocks and ends mid-block.
  std::string content((5u << 19) + 3, '\0');
  for (std::size_t i = 0; i < content.size(); ++i)
    content[i] = static_cast<char>((i * 31) ^ (i >> 9));
  test::write_file(dir / "big.bin", content);
  test::write_file(dir / "empty", "");
  auto h = file_sha256_hex((dir / "big.bin").string());
  ASSERT_TRUE(h) << h.error().message();
  EXPECT_EQ(*h, sha256_hex(content));
  // And the same as the openssl CLI says.
  auto r = openssl({"dgst", "-sha256", "-r", (dir / "big.bin").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, 64), *h);
  EXPECT_EQ(*file_sha256_hex((dir / "empty").string()), sha256_hex(""));
}

TEST(Hash, FileErrorsNameThePath) {
  TempDir dir;
  auto missing = file_sha256_hex((dir / "nope").string());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::not_found);
  EXPECT_NE(missing.error().message().find((dir / "nope").string()), std::string::npos);
  auto is_dir = file_sha256_hex(dir.path().string());
  ASSERT_FALSE(is_dir);
  EXPECT_EQ(is_dir.error().code(), Errc::io);
  EXPECT_NE(is_dir.error().message().find(dir.path().string()), std::string::npos);
}

TEST(Hash, DigestEqual) {
  EXPECT_TRUE(digest_equal("abcdef0123", "ABCDEF0123"));
  EXPECT_TRUE(digest_equal("", ""));
  EXPECT_FALSE(digest_equal("abcdef0123", "abcdef0124"));
  EXPECT_FALSE(digest_equal("abcdef0123", "abcdef012"));
  EXPECT_FALSE(digest_equal("0", "1"));
  // Only letters fold: '@' (0x40) and '`' (0x60) differ by the case bit but are not letters.
  EXPECT_FALSE(digest_equal("@", "`"));
  EXPECT_FALSE(digest_equal("[", "{"));
}

TEST(Random, BytesAreFreshAndSized) {
  auto a = random_bytes(32), b = random_bytes(32);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->size(), 32u);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(random_bytes(0)->size(), 0u);
}

// ------------------------------------------------------------------------------------------------
// Key type names

TEST(KeyNames, TufPairs) {
  EXPECT_EQ(*key_type_from_tuf("ed25519", "ed25519"), KeyType::ed25519);
  EXPECT_EQ(*key_type_from_tuf("ecdsa", "ecdsa-sha2-nistp256"), KeyType::ecdsa_p256);
  EXPECT_EQ(*key_type_from_tuf("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256"), KeyType::ecdsa_p256);
  EXPECT_EQ(*key_type_from_tuf("rsa", "rsassa-pss-sha256"), KeyType::rsa_pss_sha256);
  for (auto t : {KeyType::ed25519, KeyType::ecdsa_p256, KeyType::rsa_pss_sha256,
                 KeyType::rsa_pkcs1v15_sha256}) {
    EXPECT_EQ(*key_type_from_tuf(keytype_name(t), scheme_name(t)), t);
  }
  auto bad = key_type_from_tuf("ecdsa", "ecdsa-sha2-nistp384");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::unsupported);
  EXPECT_NE(bad.error().message().find("ecdsa-sha2-nistp384"), std::string::npos);
  EXPECT_FALSE(key_type_from_tuf("ed25519", "ecdsa-sha2-nistp256"));
}

TEST(KeyNames, CliNames) {
  EXPECT_EQ(*key_type_from_name("ed25519"), KeyType::ed25519);
  EXPECT_EQ(*key_type_from_name("ecdsa"), KeyType::ecdsa_p256);
  EXPECT_EQ(*key_type_from_name("ecdsa-sha2-nistp256"), KeyType::ecdsa_p256);
  EXPECT_EQ(*key_type_from_name("rsa"), KeyType::rsa_pss_sha256);
  EXPECT_EQ(*key_type_from_name("rsassa-pss-sha256"), KeyType::rsa_pss_sha256);
  auto bad = key_type_from_name("dsa");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::unsupported);
  EXPECT_NE(bad.error().message().find("dsa"), std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// Each scheme

class Scheme : public ::testing::TestWithParam<KeyType> {};

TEST_P(Scheme, SignVerifyRoundTrip) {
  const PrivateKey& key = shared_key(GetParam());
  EXPECT_EQ(key.type(), GetParam());
  PublicKey pub = key.public_key();
  EXPECT_EQ(pub.type, GetParam());
  auto sig = key.sign("the signed part");
  ASSERT_TRUE(sig) << sig.error().message();
  auto ok = verify(pub, "the signed part", *sig);
  EXPECT_TRUE(ok) << ok.error().message();
  // Binary messages including NUL bytes.
  std::string bin("a\0b\xff", 4);
  auto sig2 = key.sign(bin);
  ASSERT_TRUE(sig2);
  EXPECT_TRUE(verify(pub, bin, *sig2));
  EXPECT_FALSE(verify(pub, std::string("a\0b\xfe", 4), *sig2));
  // Empty message.
  auto sig3 = key.sign("");
  ASSERT_TRUE(sig3);
  EXPECT_TRUE(verify(pub, "", *sig3));
}

TEST_P(Scheme, PublicKeyEncoding) {
  PublicKey pub = shared_key(GetParam()).public_key();
  if (GetParam() == KeyType::ed25519) {
    EXPECT_EQ(pub.public_value.size(), 64u);
    EXPECT_TRUE(from_hex(pub.public_value));
  } else {
    EXPECT_EQ(pub.public_value.rfind("-----BEGIN PUBLIC KEY-----\n", 0), 0u) << pub.public_value;
    EXPECT_NE(pub.public_value.find("-----END PUBLIC KEY-----"), std::string::npos);
  }
}

TEST_P(Scheme, TamperedMessageFails) {
  const PrivateKey& key = shared_key(GetParam());
  auto sig = key.sign("version 5");
  ASSERT_TRUE(sig);
  auto st = verify(key.public_key(), "version 6", *sig);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::verification);
  EXPECT_NE(st.error().message().find("does not match"), std::string::npos) << st.error().message();
}

TEST_P(Scheme, WrongKeyFails) {
  auto sig = shared_key(GetParam()).sign("message");
  ASSERT_TRUE(sig);
  auto st = verify(other_key(GetParam()).public_key(), "message", *sig);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::verification);
}

TEST_P(Scheme, TruncatedGarbageAndEmptySignaturesFail) {
  const PrivateKey& key = shared_key(GetParam());
  PublicKey pub = key.public_key();
  auto sig = key.sign("message");
  ASSERT_TRUE(sig);
  std::string truncated = sig->substr(0, sig->size() - 1);
  std::string extended = *sig + std::string(1, '\0');
  std::string flipped = *sig;
  flipped[flipped.size() / 2] ^= 0x01;
  auto garbage = random_bytes(sig->size());
  ASSERT_TRUE(garbage);
  for (const std::string& bad :
       {truncated, extended, flipped, *garbage, std::string(), std::string(1, '\x30')}) {
    auto st = verify(pub, "message", bad);
    ASSERT_FALSE(st) << "accepted a bad signature of " << bad.size() << " bytes";
    EXPECT_EQ(st.error().code(), Errc::verification);
    EXPECT_FALSE(st.error().message().empty());
  }
}

TEST_P(Scheme, PemRoundTrip) {
  const PrivateKey& key = shared_key(GetParam());
  auto pem = key.to_pem();
  ASSERT_TRUE(pem) << pem.error().message();
  EXPECT_EQ(pem->rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u) << "not PKCS#8: " << *pem;
  auto back = PrivateKey::from_pem(*pem);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->type(), GetParam());
  EXPECT_EQ(back->public_key().public_value, key.public_key().public_value);
  EXPECT_EQ(*back->to_pem(), *pem);
  // A signature by the reloaded key verifies under the original public key.
  auto sig = back->sign("after reload");
  ASSERT_TRUE(sig);
  EXPECT_TRUE(verify(key.public_key(), "after reload", *sig));
}

TEST_P(Scheme, PublicKeyOfAnotherTypeIsRejected) {
  PublicKey pub = shared_key(GetParam()).public_key();
  auto sig = shared_key(GetParam()).sign("m");
  ASSERT_TRUE(sig);
  for (KeyType other : {KeyType::ed25519, KeyType::ecdsa_p256, KeyType::rsa_pss_sha256}) {
    if (other == GetParam()) continue;
    PublicKey mislabelled{other, pub.public_value};
    auto st = verify(mislabelled, "m", *sig);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code(), Errc::verification) << st.error().message();
  }
}

INSTANTIATE_TEST_SUITE_P(AllSchemes, Scheme,
                         ::testing::Values(KeyType::ed25519, KeyType::ecdsa_p256,
                                           KeyType::rsa_pss_sha256),
                         [](const auto& info) {
                           std::string n(scheme_name(info.param));
                           for (char& c : n) {
                             if (c == '-') c = '_';
                           }
                           return n;
                         });

// ------------------------------------------------------------------------------------------------
// Malformed keys

TEST(Keys, MalformedPublicKeys) {
  struct Case {
    PublicKey key;
    std::string why;
  };
  // Filled one by one: GCC 12 at -O2 reports a false -Wmaybe-uninitialized on the strings of an
  // initializer list of these aggregates.
  std::vector<Case> cases;
  auto add = [&cases](KeyType type, std::string value, std::string why) {
    cases.push_back(Case{PublicKey{type, std::move(value)}, std::move(why)});
  };
  add(KeyType::ed25519, "zz" + std::string(62, '0'), "not hex");
  add(KeyType::ed25519, std::string(62, 'a'), "31 bytes");
  add(KeyType::ed25519, "", "0 bytes");
  add(KeyType::ecdsa_p256, "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n",
      "PEM");
  add(KeyType::rsa_pss_sha256, "not a pem", "PEM");
  for (const auto& c : cases) {
    auto st = verify(c.key, "m", std::string(64, 'x'));
    ASSERT_FALSE(st) << c.why;
    EXPECT_EQ(st.error().code(), Errc::verification);
    EXPECT_NE(st.error().message().find(c.why), std::string::npos) << st.error().message();
  }
}

TEST(Keys, GarbageAndEncryptedPrivateKeysAreRejected) {
  auto garbage =
      PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  ASSERT_FALSE(garbage);
  EXPECT_EQ(garbage.error().code(), Errc::parse);
  EXPECT_FALSE(PrivateKey::from_pem(""));

  // An encrypted key must fail cleanly, never prompt for a passphrase.
  TempDir dir;
  auto r = openssl({"genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass", "pass:secret",
                    "-out", (dir / "enc.pem").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto enc = PrivateKey::from_pem(test::read_file(dir / "enc.pem"));
  ASSERT_FALSE(enc);
  EXPECT_EQ(enc.error().code(), Errc::parse);
}

TEST(Keys, UnsupportedPrivateKeyTypes) {
  TempDir dir;
  auto r1 = openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out",
                     (dir / "p384.pem").string()});
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  auto p384 = PrivateKey::from_pem(test::read_file(dir / "p384.pem"));
  ASSERT_FALSE(p384);
  EXPECT_EQ(p384.error().code(), Errc::unsupported);
  EXPECT_NE(p384.error().message().find("P-256"), std::string::npos) << p384.error().message();

  auto r2 = openssl({"genpkey", "-algorithm", "X25519", "-out", (dir / "x.pem").string()});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  auto x = PrivateKey::from_pem(test::read_file(dir / "x.pem"));
  ASSERT_FALSE(x);
  EXPECT_EQ(x.error().code(), Errc::unsupported);
}

TEST(Keys, SmallRsaAndWrongCurvePublicKeysAreRejected) {
  TempDir dir;
  auto r = openssl({"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out",
                    (dir / "rsa1024.pem").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto pub = openssl({"pkey", "-in", (dir / "rsa1024.pem").string(), "-pubout"});
  ASSERT_EQ(pub.exit_code, 0) << pub.err;
  auto st = verify(PublicKey{KeyType::rsa_pss_sha256, pub.out}, "m", std::string(128, 'x'));
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message().find("1024 bits"), std::string::npos) << st.error().message();

  auto r2 = openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out",
                     (dir / "p384.pem").string()});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  auto pub2 = openssl({"pkey", "-in", (dir / "p384.pem").string(), "-pubout"});
  auto st2 = verify(PublicKey{KeyType::ecdsa_p256, pub2.out}, "m", std::string(70, 'x'));
  ASSERT_FALSE(st2);
  EXPECT_NE(st2.error().message().find("not P-256"), std::string::npos) << st2.error().message();
}

TEST(Keys, GeneratedRsaIs3072Bits) {
  TempDir dir;
  test::write_file(dir / "k.pem", *shared_key(KeyType::rsa_pss_sha256).to_pem());
  auto r = openssl({"pkey", "-in", (dir / "k.pem").string(), "-text", "-noout"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("3072 bit"), std::string::npos) << r.out.substr(0, 100);
}

// ------------------------------------------------------------------------------------------------
// Interoperability with the openssl CLI

struct CliFiles {
  TempDir dir;
  std::string msg = (dir / "msg").string();
  std::string key = (dir / "key.pem").string();
  std::string pub = (dir / "pub.pem").string();
  std::string sig = (dir / "sig").string();
  CliFiles() { test::write_file(dir / "msg", "{\"signed\":\"canonical bytes\",\"v\":1}"); }
};

std::string cli_public(const std::string& key_file) {
  auto r = openssl({"pkey", "-in", key_file, "-pubout"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

TEST(OpensslCli, Ed25519BothWays) {
  CliFiles f;
  // CLI signs, mota verifies.
  ASSERT_EQ(openssl({"genpkey", "-algorithm", "ed25519", "-out", f.key}).exit_code, 0);
  auto r = openssl({"pkeyutl", "-sign", "-rawin", "-inkey", f.key, "-in", f.msg, "-out", f.sig});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto key = PrivateKey::from_pem(test::read_file(f.key));
  ASSERT_TRUE(key) << key.error().message();
  std::string msg = test::read_file(f.msg);
  auto st = verify(key->public_key(), msg, test::read_file(f.sig));
  EXPECT_TRUE(st) << st.error().message();
  EXPECT_FALSE(verify(key->public_key(), msg + " ", test::read_file(f.sig)));

  // mota signs, CLI verifies (with the public key the CLI derives from mota's PEM).
  const PrivateKey& mine = shared_key(KeyType::ed25519);
  test::write_file(f.dir / "key.pem", *mine.to_pem());
  test::write_file(f.dir / "pub.pem", cli_public(f.key));
  test::write_file(f.dir / "sig", *mine.sign(msg));
  auto v = openssl(
      {"pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", f.pub, "-in", f.msg, "-sigfile", f.sig});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  // The raw public key mota reports is the one inside the CLI's SPKI (its last 32 bytes).
  auto der = openssl({"pkey", "-pubin", "-in", f.pub, "-outform", "DER"});
  ASSERT_EQ(der.exit_code, 0);
  ASSERT_GE(der.out.size(), 32u);
  EXPECT_EQ(to_hex(der.out.substr(der.out.size() - 32)), mine.public_key().public_value);
}

TEST(OpensslCli, EcdsaBothWays) {
  CliFiles f;
  ASSERT_EQ(
      openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f.key})
          .exit_code,
      0);
  auto r = openssl({"dgst", "-sha256", "-sign", f.key, "-out", f.sig, f.msg});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string msg = test::read_file(f.msg);
  // The CLI's own public PEM is accepted as a TUF keyval.public.
  PublicKey cli_pub{KeyType::ecdsa_p256, cli_public(f.key)};
  auto st = verify(cli_pub, msg, test::read_file(f.sig));
  EXPECT_TRUE(st) << st.error().message();
  auto key = PrivateKey::from_pem(test::read_file(f.key));
  ASSERT_TRUE(key) << key.error().message();
  EXPECT_EQ(key->public_key().public_value, cli_pub.public_value);

  const PrivateKey& mine = shared_key(KeyType::ecdsa_p256);
  test::write_file(f.dir / "key.pem", *mine.to_pem());
  test::write_file(f.dir / "pub.pem", mine.public_key().public_value);
  test::write_file(f.dir / "sig", *mine.sign(msg));
  auto v = openssl({"dgst", "-sha256", "-verify", f.pub, "-signature", f.sig, f.msg});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("Verified OK"), std::string::npos);
  EXPECT_EQ(cli_public(f.key), mine.public_key().public_value);
}

TEST(OpensslCli, RsaPssBothWays) {
  CliFiles f;
  ASSERT_EQ(
      openssl({"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f.key})
          .exit_code,
      0);
  std::string msg = test::read_file(f.msg);
  PublicKey cli_pub{KeyType::rsa_pss_sha256, cli_public(f.key)};
  // securesystemslib signs with salt = digest length; other signers use the maximum. Both verify.
  for (std::string salt : {"digest", "max", "20"}) {
    auto r = openssl({"dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt",
                      "rsa_pss_saltlen:" + salt, "-sigopt", "rsa_mgf1_md:sha256", "-sign", f.key,
                      "-out", f.sig, f.msg});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto st = verify(cli_pub, msg, test::read_file(f.sig));
    EXPECT_TRUE(st) << "salt " << salt << ": " << st.error().message();
  }
  // PKCS#1 v1.5 is a different scheme and must not verify as PSS.
  ASSERT_EQ(openssl({"dgst", "-sha256", "-sign", f.key, "-out", f.sig, f.msg}).exit_code, 0);
  EXPECT_FALSE(verify(cli_pub, msg, test::read_file(f.sig)));

  // mota's signatures use salt length 32 exactly: the CLI verifies with that salt length fixed.
  const PrivateKey& mine = shared_key(KeyType::rsa_pss_sha256);
  test::write_file(f.dir / "pub.pem", mine.public_key().public_value);
  test::write_file(f.dir / "sig", *mine.sign(msg));
  auto v = openssl({"dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt",
                    "rsa_pss_saltlen:32", "-sigopt", "rsa_mgf1_md:sha256", "-verify", f.pub,
                    "-signature", f.sig, f.msg});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("Verified OK"), std::string::npos);
}

TEST(OpensslCli, RsaPkcs1v15VerifyOnly) {
  CliFiles f;
  ASSERT_EQ(
      openssl({"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f.key})
          .exit_code,
      0);
  std::string msg = test::read_file(f.msg);
  auto type = key_type_from_tuf("rsa", "rsa-pkcs1v15-sha256");
  ASSERT_TRUE(type);
  EXPECT_EQ(scheme_name(*type), "rsa-pkcs1v15-sha256");
  PublicKey pub{*type, cli_public(f.key)};
  ASSERT_EQ(openssl({"dgst", "-sha256", "-sign", f.key, "-out", f.sig, f.msg}).exit_code, 0);
  std::string sig = test::read_file(f.sig);
  auto st = verify(pub, msg, sig);
  EXPECT_TRUE(st) << st.error().message();
  EXPECT_FALSE(verify(pub, msg + " ", sig));
  // A PSS signature by the same key is not a PKCS#1 v1.5 signature.
  ASSERT_EQ(openssl({"dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sign", f.key, "-out",
                     f.sig, f.msg})
                .exit_code,
            0);
  EXPECT_FALSE(verify(pub, msg, test::read_file(f.sig)));
  // mota never makes such keys.
  auto gen = PrivateKey::generate(KeyType::rsa_pkcs1v15_sha256);
  ASSERT_FALSE(gen);
  EXPECT_EQ(gen.error().code(), Errc::unsupported);
}

// ------------------------------------------------------------------------------------------------
// Key agreement and MACs (report sessions)

std::string unhex(std::string_view h) {
  return *from_hex(h);
}

TEST(Hmac, Rfc4231Vectors) {
  // RFC 4231 test cases 1 and 2.
  auto a = hmac_sha256(std::string(20, '\x0b'), "Hi There");
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(to_hex(*a), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  auto b = hmac_sha256("Jefe", "what do ya want for nothing?");
  ASSERT_TRUE(b);
  EXPECT_EQ(to_hex(*b), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // The empty key is a key (not "the previous one", which is what OpenSSL does with no key).
  auto empty = hmac_sha256(std::string_view(), "abc");
  ASSERT_TRUE(empty);
  EXPECT_EQ(to_hex(*empty), "fd7adb152c05ef80dccf50a1fa4c05d5a3ec6da95575fc312ae7c5d091836351");
  // One changed byte of key or message changes the MAC.
  EXPECT_NE(*hmac_sha256("Jefe", "what do ya want for nothing!"), *b);
  EXPECT_NE(*hmac_sha256("Jeff", "what do ya want for nothing?"), *b);
}

TEST(Hkdf, Rfc5869Vector) {
  // RFC 5869 test case 1.
  std::string salt;
  for (int i = 0; i <= 0x0c; ++i) salt += static_cast<char>(i);
  std::string info;
  for (int i = 0xf0; i <= 0xf9; ++i) info += static_cast<char>(i);
  auto okm = hkdf_sha256(std::string(22, '\x0b'), salt, info, 42);
  ASSERT_TRUE(okm) << okm.error().message();
  EXPECT_EQ(to_hex(*okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  EXPECT_FALSE(hkdf_sha256("ikm", "", "", 0));
  EXPECT_FALSE(hkdf_sha256("ikm", "", "", 255 * 32 + 1));
}

TEST(KeyAgreement, BothSidesAgreeAndOthersDoNot) {
  auto a = KeyAgreement::generate();
  auto b = KeyAgreement::generate();
  auto c = KeyAgreement::generate();
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->public_hex().size(), 64u);
  EXPECT_NE(a->public_hex(), b->public_hex());
  auto ab = a->derive(b->public_hex());
  auto ba = b->derive(a->public_hex());
  ASSERT_TRUE(ab && ba) << (ab ? "" : ab.error().message());
  EXPECT_EQ(ab->size(), 32u);
  EXPECT_EQ(*ab, *ba);
  EXPECT_NE(*a->derive(c->public_hex()), *ab);
}

TEST(KeyAgreement, RefusesMalformedAndLowOrderKeys) {
  auto a = KeyAgreement::generate();
  ASSERT_TRUE(a);
  for (std::string bad :
       {std::string(), std::string(62, 'a'), std::string(66, 'a'), std::string(64, 'g')}) {
    auto r = a->derive(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), Errc::verification);
  }
  // Low-order points give an all-zero secret: 0 and 1 (RFC 7748 section 6.1).
  for (std::string low : {std::string(64, '0'), "01" + std::string(62, '0')}) {
    auto r = a->derive(low);
    ASSERT_FALSE(r) << low;
    EXPECT_EQ(r.error().code(), Errc::verification);
  }
}

TEST(OpensslCli, X25519AgreesWithTheCli) {
  CliFiles f;
  ASSERT_EQ(openssl({"genpkey", "-algorithm", "X25519", "-out", f.key}).exit_code, 0);
  auto der = openssl({"pkey", "-in", f.key, "-pubout", "-outform", "DER"});
  ASSERT_EQ(der.exit_code, 0) << der.err;
  ASSERT_EQ(der.out.size(), 44u);  // SPKI: 12-byte prefix + the raw 32-byte key
  std::string cli_pub_hex = to_hex(der.out.substr(12));

  auto mine = KeyAgreement::generate();
  ASSERT_TRUE(mine);
  // mota's raw public key as an SPKI DER file for the CLI.
  test::write_file(f.dir / "peer.der", der.out.substr(0, 12) + unhex(mine->public_hex()));
  auto cli = openssl({"pkeyutl", "-derive", "-inkey", f.key, "-peerkey",
                      (f.dir / "peer.der").string(), "-peerform", "DER"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  auto secret = mine->derive(cli_pub_hex);
  ASSERT_TRUE(secret) << secret.error().message();
  EXPECT_EQ(to_hex(*secret), to_hex(cli.out));
}

}  // namespace
}  // namespace mota::crypto
