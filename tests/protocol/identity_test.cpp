#include "protocol/identity.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/hex.hpp"
#include "tests/support/test_support.hpp"

namespace mota::protocol {
namespace {

mode_t mode_of(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

TEST(Identity, GeneratedOnceAndStable) {
  test::TempDir tmp;
  auto state = tmp / "state";  // does not exist yet: created
  auto id = DeviceIdentity::load_or_create(state, "dev-1");
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(id->device_id(), "dev-1");
  EXPECT_EQ(id->key_path(), state / "device.key");
  EXPECT_EQ(id->public_key_hex().size(), 64u);
  EXPECT_EQ(mode_of(state / "device.key"), 0600u);
  std::string pem = test::read_file(state / "device.key");
  EXPECT_NE(pem.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);
  // No temporary file left beside it.
  std::size_t entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(state)) ++entries;
  EXPECT_EQ(entries, 1u);

  auto again = DeviceIdentity::load_or_create(state, "dev-1");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->public_key_hex(), id->public_key_hex());
  EXPECT_EQ(test::read_file(state / "device.key"), pem);

  // Another state dir, another key.
  auto other = DeviceIdentity::load_or_create(tmp / "other", "dev-2");
  ASSERT_TRUE(other) << other.error().message();
  EXPECT_NE(other->public_key_hex(), id->public_key_hex());
}

TEST(Identity, SignatureVerifies) {
  test::TempDir tmp;
  auto id = DeviceIdentity::load_or_create(tmp.path(), "dev-1");
  ASSERT_TRUE(id) << id.error().message();
  auto sig_hex = id->sign("hello");
  ASSERT_TRUE(sig_hex) << sig_hex.error().message();
  EXPECT_EQ(sig_hex->size(), 128u);
  auto sig = from_hex(*sig_hex);
  ASSERT_TRUE(sig);
  EXPECT_TRUE(crypto::verify(id->public_key(), "hello", *sig));
  EXPECT_FALSE(crypto::verify(id->public_key(), "hellO", *sig));
}

TEST(Identity, ReportHeaders) {
  test::TempDir tmp;
  auto id = DeviceIdentity::load_or_create(tmp.path(), "dev-7");
  ASSERT_TRUE(id) << id.error().message();
  const std::string body = R"({"model":"resnet","state":"installed"})";
  const std::string route = "/v1/devices/dev-7/status";
  auto at = *parse_time("2030-01-02T03:04:05Z");
  auto h = id->report_headers(route, body, at);
  ASSERT_TRUE(h) << h.error().message();
  EXPECT_EQ(h->at("X-Mota-Device"), "dev-7");
  EXPECT_EQ(h->at("X-Mota-Key"), id->public_key_hex());
  EXPECT_EQ(h->at("X-Mota-Timestamp"), "2030-01-02T03:04:05Z");

  // The documented message, verified with crypto::verify directly.
  std::string msg = "mota-report-v1\ndev-7\n2030-01-02T03:04:05Z\n" + route + "\n" + body;
  EXPECT_EQ(signed_message("dev-7", "2030-01-02T03:04:05Z", route, body), msg);
  auto sig = from_hex(h->at("X-Mota-Signature"));
  ASSERT_TRUE(sig);
  crypto::PublicKey pub{crypto::KeyType::ed25519, h->at("X-Mota-Key")};
  EXPECT_TRUE(crypto::verify(pub, msg, *sig));

  EXPECT_TRUE(verify_report(*h, route, body));
  // Any change is rejected.
  auto r = verify_report(*h, route, body + " ");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_FALSE(verify_report(*h, "/v1/devices/dev-7/other", body));
  auto h2 = *h;
  h2["X-Mota-Device"] = "dev-8";
  EXPECT_FALSE(verify_report(h2, route, body));
  h2 = *h;
  h2["X-Mota-Timestamp"] = "2030-01-02T03:04:06Z";
  EXPECT_FALSE(verify_report(h2, route, body));
  h2 = *h;
  h2.erase("X-Mota-Signature");
  r = verify_report(h2, route, body);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("X-Mota-Signature is missing"), std::string::npos);
  h2 = *h;
  h2["X-Mota-Signature"] = "zz";
  EXPECT_FALSE(verify_report(h2, route, body));
  h2 = *h;
  h2["X-Mota-Timestamp"] = "yesterday";
  r = verify_report(h2, route, body);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("not a UTC time"), std::string::npos);
}

TEST(Identity, CorruptKeyIsAnErrorAndIsNotReplaced) {
  test::TempDir tmp;
  const std::string garbage = "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n";
  test::write_file(tmp / "device.key", garbage);
  ::chmod((tmp / "device.key").c_str(), 0600);
  auto id = DeviceIdentity::load_or_create(tmp.path(), "dev-1");
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code(), Errc::parse);
  EXPECT_NE(id.error().message().find((tmp / "device.key").string()), std::string::npos)
      << id.error().message();
  EXPECT_NE(id.error().message().find("not replacing"), std::string::npos) << id.error().message();
  EXPECT_EQ(test::read_file(tmp / "device.key"), garbage);

  // An empty file too.
  test::write_file(tmp / "device.key", "");
  EXPECT_FALSE(DeviceIdentity::load_or_create(tmp.path(), "dev-1"));
  EXPECT_EQ(test::read_file(tmp / "device.key"), "");
}

TEST(Identity, NonEd25519KeyRefused) {
  test::TempDir tmp;
  auto k = crypto::PrivateKey::generate(crypto::KeyType::ecdsa_p256);
  ASSERT_TRUE(k);
  auto pem = k->to_pem();
  ASSERT_TRUE(pem);
  test::write_file(tmp / "device.key", *pem);
  ::chmod((tmp / "device.key").c_str(), 0640);
  auto id = DeviceIdentity::load_or_create(tmp.path(), "dev-1");
  ASSERT_FALSE(id);
  EXPECT_NE(id.error().message().find("must be ed25519"), std::string::npos)
      << id.error().message();
  EXPECT_EQ(test::read_file(tmp / "device.key"), *pem);
  EXPECT_EQ(mode_of(tmp / "device.key"), 0640u);  // a rejected file is left exactly as it was
}

TEST(Identity, LooseModeIsTightened) {
  test::TempDir tmp;
  ASSERT_TRUE(DeviceIdentity::load_or_create(tmp.path(), "d"));
  ASSERT_EQ(::chmod((tmp / "device.key").c_str(), 0644), 0);
  ASSERT_TRUE(DeviceIdentity::load_or_create(tmp.path(), "d"));
  EXPECT_EQ(mode_of(tmp / "device.key"), 0600u);
}

TEST(Identity, UnwritableStateDirIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  test::TempDir tmp;
  auto ro = tmp / "ro";
  std::filesystem::create_directory(ro);
  ::chmod(ro.c_str(), 0500);
  auto id = DeviceIdentity::load_or_create(ro, "d");
  ::chmod(ro.c_str(), 0700);
  ASSERT_FALSE(id);
  EXPECT_NE(id.error().message().find("write device key"), std::string::npos)
      << id.error().message();
  EXPECT_TRUE(std::filesystem::is_empty(ro));
}

}  // namespace
}  // namespace mota::protocol
