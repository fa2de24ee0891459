// Tests for manifest/tuf/metadata.hpp: parsing (strict on what the client relies on, tolerant of
// unknown fields), serialisation round trips, key ids, threshold counting, path matching, expiry.
#include "manifest/tuf/metadata.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <functional>
#include <memory>

#include "common/hex.hpp"
#include "tests/support/test_support.hpp"

namespace mota::tuf {
namespace {

using crypto::KeyType;
using crypto::PrivateKey;

TimePoint at(std::string_view s) {
  auto t = parse_time(s);
  EXPECT_TRUE(t) << s;
  return *t;
}

// Keys are generated once per run (cheap ed25519/ECDSA; one RSA for the mixed-scheme test).
struct Keys {
  PrivateKey a = *PrivateKey::generate(KeyType::ed25519);
  PrivateKey b = *PrivateKey::generate(KeyType::ecdsa_p256);
  PrivateKey c = *PrivateKey::generate(KeyType::ed25519);
  Key ka = Key::from_public(a.public_key());
  Key kb = Key::from_public(b.public_key());
  Key kc = Key::from_public(c.public_key());
};
const Keys& keys() {
  static Keys k;
  return k;
}

Root make_root(unsigned threshold = 2) {
  const Keys& k = keys();
  Root r;
  r.version = 1;
  r.expires = at("2030-01-01T00:00:00Z");
  r.keys = {{k.ka.key_id(), k.ka}, {k.kb.key_id(), k.kb}};
  for (const char* role : {"root", "timestamp", "snapshot", "targets"}) {
    r.roles[role] = RoleKeys{{k.ka.key_id(), k.kb.key_id()}, threshold};
  }
  return r;
}

Timestamp make_timestamp() {
  Timestamp t;
  t.version = 7;
  t.expires = at("2030-01-02T03:04:05Z");
  t.snapshot = MetaFile{4, 1234, {{"sha256", std::string(64, 'a')}}};
  return t;
}

Snapshot make_snapshot() {
  Snapshot s;
  s.version = 4;
  s.expires = at("2030-01-01T00:00:00Z");
  s.meta["targets.json"] = MetaFile{3, std::nullopt, {}};
  s.meta["vendor-a.json"] = MetaFile{2, 99, {{"sha256", std::string(64, 'b')}}};
  return s;
}

Targets make_targets() {
  const Keys& k = keys();
  Targets t;
  t.version = 3;
  t.expires = at("2030-01-01T00:00:00Z");
  TargetFile f;
  f.length = 42;
  f.hashes = {{"sha256", std::string(64, 'c')}, {"sha512", std::string(128, 'd')}};
  f.custom = Json{{"model", "resnet"}, {"tags", {"a", "b"}}};
  t.targets["models/resnet/1.0.0/model.json"] = f;
  t.targets["empty.bin"] = TargetFile{0, {{"sha256", crypto::sha256_hex("")}}, nullptr};
  Delegations d;
  d.keys = {{k.kc.key_id(), k.kc}};
  DelegatedRole by_path;
  by_path.name = "vendor-a";
  by_path.keyids = {k.kc.key_id()};
  by_path.threshold = 1;
  by_path.terminating = true;
  by_path.paths = std::vector<std::string>{"models/vendor-a/*", "*.onnx"};
  DelegatedRole by_hash;
  by_hash.name = "bins-0";
  by_hash.keyids = {k.kc.key_id()};
  by_hash.path_hash_prefixes = std::vector<std::string>{"00", "0a"};
  d.roles = {by_path, by_hash};
  t.delegations = d;
  return t;
}

std::string sign(const Json& signed_json, std::vector<const PrivateKey*> ks = {}) {
  if (ks.empty()) ks = {&keys().a, &keys().b};
  auto bytes = sign_metadata(signed_json, ks);
  EXPECT_TRUE(bytes) << bytes.error().message();
  return bytes ? *bytes : std::string();
}

// An envelope with the given signed part and no signatures (parsing does not look at them).
std::string unsigned_bytes(const Json& signed_json) {
  return Json{{"signed", signed_json}, {"signatures", Json::array()}}.dump();
}

// ------------------------------------------------------------------------------------------------
// Keys

TEST(Key, IdIsSha256OfCanonicalKeyObject) {
  Key k{"ed25519", "ed25519", std::string(64, 'f')};
  std::string canonical = R"({"keytype":"ed25519","keyval":{"public":")" + std::string(64, 'f') +
                          R"("},"scheme":"ed25519"})";
  EXPECT_EQ(*canonical_json(k.to_json()), canonical);
  EXPECT_EQ(k.key_id(), crypto::sha256_hex(canonical));
  EXPECT_EQ(k.key_id().size(), 64u);
  // Any field changes the id.
  Key other = k;
  other.scheme = "ecdsa-sha2-nistp256";
  EXPECT_NE(other.key_id(), k.key_id());
}

TEST(Key, PublicRoundTrip) {
  for (const PrivateKey* pk : {&keys().a, &keys().b}) {
    Key k = Key::from_public(pk->public_key());
    EXPECT_EQ(k.keytype, crypto::keytype_name(pk->type()));
    EXPECT_EQ(k.scheme, crypto::scheme_name(pk->type()));
    auto back = k.to_public();
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->type, pk->type());
    EXPECT_EQ(back->public_value, pk->public_key().public_value);
  }
  // The older securesystemslib keytype name for ECDSA is understood too.
  Key legacy{"ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256", keys().kb.public_value};
  EXPECT_EQ(legacy.to_public()->type, KeyType::ecdsa_p256);
}

TEST(Key, UnsupportedSchemeIsUnsupported) {
  Key k{"ecdsa", "ecdsa-sha2-nistp384", "pem"};
  auto r = k.to_public();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::unsupported);
  EXPECT_NE(r.error().message().find("ecdsa-sha2-nistp384"), std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// Round trips

TEST(RoundTrip, Root) {
  Root r = make_root();
  r.consistent_snapshot = false;
  std::string bytes = sign(to_json(r));
  auto p = parse_root(bytes);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->signed_.type, "root");
  EXPECT_EQ(p->signed_.spec_version, kSpecVersion);
  EXPECT_EQ(p->signed_.version, 1u);
  EXPECT_EQ(p->signed_.expires, r.expires);
  EXPECT_FALSE(p->signed_.consistent_snapshot);
  EXPECT_EQ(p->signed_.keys.size(), 2u);
  EXPECT_EQ(p->signed_.roles.at("snapshot").threshold, 2u);
  EXPECT_EQ(p->signed_.roles.at("root").keyids, r.roles.at("root").keyids);
  EXPECT_EQ(to_json(p->signed_), to_json(r));
  EXPECT_EQ(p->envelope["signed"], to_json(r));
  ASSERT_EQ(p->signatures.size(), 2u);
  EXPECT_EQ(p->signatures[0].keyid, keys().ka.key_id());
}

TEST(RoundTrip, Timestamp) {
  Timestamp t = make_timestamp();
  auto p = parse_timestamp(sign(to_json(t)));
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->signed_.version, 7u);
  EXPECT_EQ(p->signed_.snapshot.version, 4u);
  EXPECT_EQ(p->signed_.snapshot.length, 1234u);
  EXPECT_EQ(to_json(p->signed_), to_json(t));
  EXPECT_EQ(to_json(t)["meta"]["snapshot.json"]["hashes"]["sha256"], std::string(64, 'a'));
}

TEST(RoundTrip, Snapshot) {
  Snapshot s = make_snapshot();
  auto p = parse_snapshot(sign(to_json(s)));
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->signed_.meta.size(), 2u);
  EXPECT_FALSE(p->signed_.meta.at("targets.json").length);
  EXPECT_TRUE(p->signed_.meta.at("targets.json").hashes.empty());
  EXPECT_EQ(p->signed_.meta.at("vendor-a.json").length, 99u);
  EXPECT_EQ(to_json(p->signed_), to_json(s));
  // Absent optional fields are not written as null.
  EXPECT_FALSE(to_json(s)["meta"]["targets.json"].contains("length"));
  EXPECT_FALSE(to_json(s)["meta"]["targets.json"].contains("hashes"));
}

TEST(RoundTrip, TargetsWithDelegations) {
  Targets t = make_targets();
  auto p = parse_targets(sign(to_json(t)));
  ASSERT_TRUE(p) << p.error().message();
  const Targets& g = p->signed_;
  ASSERT_EQ(g.targets.size(), 2u);
  const TargetFile& f = g.targets.at("models/resnet/1.0.0/model.json");
  EXPECT_EQ(f.length, 42u);
  EXPECT_EQ(f.hashes.size(), 2u);
  EXPECT_EQ(f.custom["model"], "resnet");
  EXPECT_TRUE(g.targets.at("empty.bin").custom.is_null());
  ASSERT_TRUE(g.delegations);
  ASSERT_EQ(g.delegations->roles.size(), 2u);
  // Priority order is kept.
  EXPECT_EQ(g.delegations->roles[0].name, "vendor-a");
  EXPECT_TRUE(g.delegations->roles[0].terminating);
  EXPECT_TRUE(g.delegations->roles[0].paths);
  EXPECT_FALSE(g.delegations->roles[0].path_hash_prefixes);
  EXPECT_EQ(g.delegations->roles[1].name, "bins-0");
  EXPECT_FALSE(g.delegations->roles[1].paths);
  EXPECT_EQ(g.delegations->roles[1].path_hash_prefixes->size(), 2u);
  EXPECT_EQ(to_json(g), to_json(t));

  Json j = to_json(t);
  EXPECT_TRUE(j["delegations"]["roles"].is_array());
  EXPECT_TRUE(j["delegations"]["keys"].is_object());
  EXPECT_FALSE(j["targets"]["empty.bin"].contains("custom"));
}

TEST(RoundTrip, TargetsWithoutDelegations) {
  Targets t;
  t.expires = at("2030-01-01T00:00:00Z");
  auto p = parse_targets(sign(to_json(t)));
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_FALSE(p->signed_.delegations);
  EXPECT_TRUE(p->signed_.targets.empty());
  EXPECT_FALSE(to_json(t).contains("delegations"));
  EXPECT_TRUE(to_json(t)["targets"].is_object());
}

TEST(Parse, HashesAreNormalisedToLowerCase) {
  Json j = to_json(make_timestamp());
  j["meta"]["snapshot.json"]["hashes"]["sha256"] = std::string(64, 'A');
  auto p = parse_timestamp(unsigned_bytes(j));
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->signed_.snapshot.hashes.at("sha256"), std::string(64, 'a'));
}

TEST(Parse, UnknownFieldsAreToleratedAndStaySigned) {
  Json j = to_json(make_root());
  j["x-vendor"] = {{"note", "kept"}, {"n", 1}};
  j["roles"]["root"]["x-extra"] = true;
  j["keys"][keys().ka.key_id()]["keyid_hash_algorithms"] = {"sha256", "sha512"};
  j["roles"]["mirror"] = {{"keyids", Json::array()}, {"threshold", 1}};
  std::string bytes = sign(j);
  auto p = parse_root(bytes);
  ASSERT_TRUE(p) << p.error().message();
  // The envelope keeps the unknown fields, and signatures cover them.
  EXPECT_EQ(p->envelope["signed"]["x-vendor"]["note"], "kept");
  const Root& r = p->signed_;
  EXPECT_TRUE(verify_threshold(p->envelope, p->signatures, r.keys, r.roles.at("root"), "root"));
  Json tampered = p->envelope;
  tampered["signed"]["x-vendor"]["note"] = "changed";
  EXPECT_FALSE(verify_threshold(tampered, p->signatures, r.keys, r.roles.at("root"), "root"));
}

TEST(Parse, AbsentConsistentSnapshotIsFalse) {
  Json j = to_json(make_root());
  j.erase("consistent_snapshot");
  auto p = parse_root(unsigned_bytes(j));
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_FALSE(p->signed_.consistent_snapshot);
}

TEST(Parse, LegacyTwoPartSpecVersionIsAccepted) {
  Json j = to_json(make_snapshot());
  j["spec_version"] = "1.0";
  EXPECT_TRUE(parse_snapshot(unsigned_bytes(j)));
}

// ------------------------------------------------------------------------------------------------
// Malformed fields: every field the client relies on, rejected with its path in the message.

struct Mutation {
  std::string what;                   // names the case in failure output
  std::function<void(Json&)> mutate;  // applied to the "signed" object
  std::string expect;                 // substring of the error message
  Errc code = Errc::parse;
};

using Parser = std::function<Status(std::string_view)>;

template <class F>
Parser as_status(F f) {
  return [f](std::string_view b) -> Status {
    auto r = f(b);
    if (!r) return fail(r.error());
    return {};
  };
}

void expect_rejected(const Json& valid, const Parser& parse, const std::vector<Mutation>& cases) {
  ASSERT_TRUE(parse(unsigned_bytes(valid))) << "the unmutated document must parse";
  for (const auto& m : cases) {
    Json j = valid;
    m.mutate(j);
    auto st = parse(unsigned_bytes(j));
    ASSERT_FALSE(st) << m.what << ": accepted";
    EXPECT_EQ(st.error().code(), m.code) << m.what << ": " << st.error().message();
    EXPECT_NE(st.error().message().find(m.expect), std::string::npos)
        << m.what << ": \"" << st.error().message() << "\" lacks \"" << m.expect << "\"";
  }
}

std::vector<Mutation> common_cases(const std::string& type) {
  return {
      {"wrong _type", [](Json& j) { j["_type"] = "mirrors"; },
       "signed._type: expected \"" + type + "\", got \"mirrors\""},
      {"no _type", [](Json& j) { j.erase("_type"); }, "missing required field \"_type\""},
      {"_type number", [](Json& j) { j["_type"] = 1; }, "signed._type: expected a string"},
      {"spec major 2", [](Json& j) { j["spec_version"] = "2.0.0"; }, "is not supported"},
      {"spec garbage", [](Json& j) { j["spec_version"] = "1.0.x"; }, "not a version"},
      {"spec one part", [](Json& j) { j["spec_version"] = "1"; }, "not a version"},
      {"spec four parts", [](Json& j) { j["spec_version"] = "1.0.0.0"; }, "not a version"},
      {"spec number", [](Json& j) { j["spec_version"] = 1; },
       "signed.spec_version: expected a string"},
      {"no spec", [](Json& j) { j.erase("spec_version"); },
       "missing required field \"spec_version\""},
      {"version 0", [](Json& j) { j["version"] = 0; },
       "signed.version: expected an integer >= 1, got 0"},
      {"version -1", [](Json& j) { j["version"] = -1; },
       "signed.version: expected an integer >= 1"},
      {"version string", [](Json& j) { j["version"] = "2"; },
       "signed.version: expected an integer"},
      {"version bool", [](Json& j) { j["version"] = true; }, "signed.version: expected an integer"},
      {"version float", [](Json& j) { j["version"] = 2.0; }, "non-integer number"},
      {"no version", [](Json& j) { j.erase("version"); }, "missing required field \"version\""},
      {"expires no Z", [](Json& j) { j["expires"] = "2030-01-01T00:00:00"; }, "signed.expires"},
      {"expires offset", [](Json& j) { j["expires"] = "2030-01-01T00:00:00+01:00"; },
       "signed.expires"},
      {"expires date", [](Json& j) { j["expires"] = "2030-01-01"; }, "signed.expires"},
      {"expires number", [](Json& j) { j["expires"] = 1893456000; },
       "signed.expires: expected a string"},
      {"no expires", [](Json& j) { j.erase("expires"); }, "missing required field \"expires\""},
  };
}

TEST(Malformed, Root) {
  const std::string ka = keys().ka.key_id();
  auto cases = common_cases("root");
  std::vector<Mutation> more = {
      {"consistent_snapshot string", [](Json& j) { j["consistent_snapshot"] = "yes"; },
       "signed.consistent_snapshot: expected a boolean"},
      {"keys array", [](Json& j) { j["keys"] = Json::array(); }, "signed.keys: expected an object"},
      {"no keys", [](Json& j) { j.erase("keys"); }, "missing required field \"keys\""},
      {"key not object", [ka](Json& j) { j["keys"][ka] = "k"; }, "expected a key object"},
      {"key no keytype", [ka](Json& j) { j["keys"][ka].erase("keytype"); },
       "missing required field \"keytype\""},
      {"key no scheme", [ka](Json& j) { j["keys"][ka].erase("scheme"); },
       "missing required field \"scheme\""},
      {"key public number", [ka](Json& j) { j["keys"][ka]["keyval"]["public"] = 5; },
       "keyval.public: expected a string"},
      {"key keyval string", [ka](Json& j) { j["keys"][ka]["keyval"] = "x"; },
       "keyval: expected an object"},
      {"empty key id", [ka](Json& j) { j["keys"][""] = j["keys"][ka]; }, "empty key id"},
      {"no roles", [](Json& j) { j.erase("roles"); }, "missing required field \"roles\""},
      {"missing snapshot role", [](Json& j) { j["roles"].erase("snapshot"); },
       "signed.roles: missing role \"snapshot\""},
      {"threshold 0", [](Json& j) { j["roles"]["root"]["threshold"] = 0; },
       "signed.roles.root.threshold: expected an integer >= 1, got 0"},
      {"threshold negative", [](Json& j) { j["roles"]["targets"]["threshold"] = -2; },
       "signed.roles.targets.threshold"},
      {"threshold huge", [](Json& j) { j["roles"]["root"]["threshold"] = 1ull << 40; },
       "too large"},
      {"no threshold", [](Json& j) { j["roles"]["root"].erase("threshold"); },
       "missing required field \"threshold\""},
      {"keyids string", [](Json& j) { j["roles"]["root"]["keyids"] = "abc"; },
       "signed.roles.root.keyids: expected an array"},
      {"keyid number", [](Json& j) { j["roles"]["timestamp"]["keyids"] = {1}; },
       "signed.roles.timestamp.keyids[0]: expected a string"},
      {"role not object", [](Json& j) { j["roles"]["root"] = 1; }, "signed.roles.root"},
  };
  cases.insert(cases.end(), more.begin(), more.end());
  expect_rejected(to_json(make_root()), as_status(parse_root), cases);
}

TEST(Malformed, Timestamp) {
  auto cases = common_cases("timestamp");
  std::vector<Mutation> more = {
      {"no meta", [](Json& j) { j.erase("meta"); }, "missing required field \"meta\""},
      {"meta array", [](Json& j) { j["meta"] = Json::array(); }, "signed.meta: expected an object"},
      {"no snapshot.json",
       [](Json& j) {
         j["meta"] = {{"other.json", {{"version", 1}}}};
       },
       "missing the \"snapshot.json\" entry"},
      {"version 0", [](Json& j) { j["meta"]["snapshot.json"]["version"] = 0; },
       "signed.meta[\"snapshot.json\"].version: expected an integer >= 1"},
      {"no version", [](Json& j) { j["meta"]["snapshot.json"].erase("version"); },
       "missing required field \"version\""},
      {"length -1", [](Json& j) { j["meta"]["snapshot.json"]["length"] = -1; },
       "signed.meta[\"snapshot.json\"].length: expected an integer >= 0"},
      {"length string", [](Json& j) { j["meta"]["snapshot.json"]["length"] = "5"; },
       ".length: expected an integer"},
      {"hashes empty", [](Json& j) { j["meta"]["snapshot.json"]["hashes"] = Json::object(); },
       "must list at least one hash"},
      {"hashes string", [](Json& j) { j["meta"]["snapshot.json"]["hashes"] = "ab"; },
       ".hashes: expected an object"},
      {"hash not hex", [](Json& j) { j["meta"]["snapshot.json"]["hashes"]["sha256"] = "xyz!"; },
       "is not a hex string"},
      {"hash odd length", [](Json& j) { j["meta"]["snapshot.json"]["hashes"]["sha256"] = "abc"; },
       "is not a hex string"},
      {"hash empty", [](Json& j) { j["meta"]["snapshot.json"]["hashes"]["sha256"] = ""; },
       "is not a hex string"},
      {"hash number", [](Json& j) { j["meta"]["snapshot.json"]["hashes"]["sha256"] = 12; },
       ".hashes.sha256: expected a string"},
      {"meta entry string", [](Json& j) { j["meta"]["snapshot.json"] = "v1"; },
       "signed.meta[\"snapshot.json\"]: expected an object"},
  };
  cases.insert(cases.end(), more.begin(), more.end());
  expect_rejected(to_json(make_timestamp()), as_status(parse_timestamp), cases);
}

TEST(Malformed, Snapshot) {
  auto cases = common_cases("snapshot");
  std::vector<Mutation> more = {
      {"no targets.json", [](Json& j) { j["meta"].erase("targets.json"); },
       "missing the \"targets.json\" entry"},
      {"role version 0", [](Json& j) { j["meta"]["vendor-a.json"]["version"] = 0; },
       "signed.meta[\"vendor-a.json\"].version"},
      {"role length float", [](Json& j) { j["meta"]["vendor-a.json"]["length"] = 1.5; },
       "non-integer number"},
  };
  cases.insert(cases.end(), more.begin(), more.end());
  expect_rejected(to_json(make_snapshot()), as_status(parse_snapshot), cases);
}

TEST(Malformed, Targets) {
  const std::string path = "models/resnet/1.0.0/model.json";
  auto cases = common_cases("targets");
  std::vector<Mutation> more = {
      {"no targets", [](Json& j) { j.erase("targets"); }, "missing required field \"targets\""},
      {"targets array", [](Json& j) { j["targets"] = Json::array(); },
       "signed.targets: expected an object"},
      {"length -1", [path](Json& j) { j["targets"][path]["length"] = -1; },
       "signed.targets[\"" + path + "\"].length: expected an integer >= 0, got -1"},
      {"length float", [path](Json& j) { j["targets"][path]["length"] = 4.5; },
       "non-integer number"},
      {"length string", [path](Json& j) { j["targets"][path]["length"] = "42"; },
       ".length: expected an integer"},
      {"no length", [path](Json& j) { j["targets"][path].erase("length"); },
       "missing required field \"length\""},
      {"no hashes", [path](Json& j) { j["targets"][path].erase("hashes"); },
       "missing required field \"hashes\""},
      {"empty hashes", [path](Json& j) { j["targets"][path]["hashes"] = Json::object(); },
       "must list at least one hash"},
      {"hash not hex", [path](Json& j) { j["targets"][path]["hashes"]["sha256"] = "g0"; },
       "\"g0\" is not a hex string"},
      {"target not object", [path](Json& j) { j["targets"][path] = 42; },
       "signed.targets[\"" + path + "\"]: expected an object"},
      {"delegations array", [](Json& j) { j["delegations"] = Json::array(); },
       "signed.delegations: expected an object"},
      {"delegations no keys", [](Json& j) { j["delegations"].erase("keys"); },
       "missing required field \"keys\""},
      {"delegations no roles", [](Json& j) { j["delegations"].erase("roles"); },
       "missing required field \"roles\""},
      {"delegations roles object", [](Json& j) { j["delegations"]["roles"] = Json::object(); },
       "signed.delegations.roles: expected an array"},
      {"succinct roles", [](Json& j) { j["delegations"]["succinct_roles"] = Json::object(); },
       "succinct_roles", Errc::unsupported},
      {"both paths and prefixes",
       [](Json& j) { j["delegations"]["roles"][0]["path_hash_prefixes"] = {"ab"}; },
       "sets both \"paths\" and \"path_hash_prefixes\""},
      {"neither paths nor prefixes",
       [](Json& j) { j["delegations"]["roles"][1].erase("path_hash_prefixes"); }, "sets neither"},
      {"paths not array", [](Json& j) { j["delegations"]["roles"][0]["paths"] = "*"; },
       "signed.delegations.roles[0].paths: expected an array"},
      {"path not string",
       [](Json& j) {
         j["delegations"]["roles"][0]["paths"] = {"a", 3};
       },
       "signed.delegations.roles[0].paths[1]: expected a string"},
      {"prefix not hex",
       [](Json& j) { j["delegations"]["roles"][1]["path_hash_prefixes"] = {"0g"}; },
       "\"0g\" is not a hex prefix"},
      {"no terminating", [](Json& j) { j["delegations"]["roles"][0].erase("terminating"); },
       "missing required field \"terminating\""},
      {"terminating string", [](Json& j) { j["delegations"]["roles"][0]["terminating"] = "no"; },
       "terminating: expected a boolean"},
      {"role threshold 0", [](Json& j) { j["delegations"]["roles"][0]["threshold"] = 0; },
       "signed.delegations.roles[0].threshold: expected an integer >= 1"},
      {"role no keyids", [](Json& j) { j["delegations"]["roles"][0].erase("keyids"); },
       "missing required field \"keyids\""},
      {"role no name", [](Json& j) { j["delegations"]["roles"][0].erase("name"); },
       "missing required field \"name\""},
      {"role named targets", [](Json& j) { j["delegations"]["roles"][0]["name"] = "targets"; },
       "cannot name a delegated role"},
      {"role named root", [](Json& j) { j["delegations"]["roles"][0]["name"] = "root"; },
       "cannot name a delegated role"},
      {"role empty name", [](Json& j) { j["delegations"]["roles"][0]["name"] = ""; },
       "cannot name a delegated role"},
      {"duplicate role", [](Json& j) { j["delegations"]["roles"][1]["name"] = "vendor-a"; },
       "role \"vendor-a\" is delegated twice"},
      {"role not object", [](Json& j) { j["delegations"]["roles"][0] = "vendor-a"; },
       "signed.delegations.roles[0]: expected an object"},
      {"delegated key malformed",
       [](Json& j) {
         j["delegations"]["keys"] = {{"id", {{"keytype", "ed25519"}}}};
       },
       "missing required field \"scheme\""},
  };
  cases.insert(cases.end(), more.begin(), more.end());
  expect_rejected(to_json(make_targets()), as_status(parse_targets), cases);
}

TEST(Malformed, Envelope) {
  Json good = to_json(make_root());
  struct Case {
    std::string what;
    std::string bytes;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"not JSON", "{\"signed\":", "parse error"},
      {"array", "[]", "metadata: expected an object, got array"},
      {"no signed", Json{{"signatures", Json::array()}}.dump(),
       "missing required field \"signed\""},
      {"signed string", Json{{"signed", "x"}, {"signatures", Json::array()}}.dump(),
       "metadata.signed: expected an object"},
      {"no signatures", Json{{"signed", good}}.dump(), "missing required field \"signatures\""},
      {"signatures object", Json{{"signed", good}, {"signatures", Json::object()}}.dump(),
       "metadata.signatures: expected an array"},
      {"signature string", Json{{"signed", good}, {"signatures", {"sig"}}}.dump(),
       "signatures[0]: expected an object"},
      {"signature no sig", Json{{"signed", good}, {"signatures", {{{"keyid", "a"}}}}}.dump(),
       "signatures[0]: missing required field \"sig\""},
      {"signature keyid number",
       Json{{"signed", good}, {"signatures", {{{"keyid", 1}, {"sig", "00"}}}}}.dump(),
       "signatures[0].keyid: expected a string"},
      {"duplicate key in signed", R"({"signatures":[],"signed":{"version":1,"version":2}})",
       "duplicate object key \"version\""},
      {"float in unknown field",
       Json{{"signed",
             [&] {
               Json j = good;
               j["x"] = 0.5;
               return j;
             }()},
            {"signatures", Json::array()}}
           .dump(),
       "non-integer number"},
  };
  for (const auto& c : cases) {
    auto r = parse_root(c.bytes);
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.error().code(), Errc::parse) << c.what;
    EXPECT_NE(r.error().message().find(c.expect), std::string::npos)
        << c.what << ": " << r.error().message();
    EXPECT_EQ(r.error().message().rfind("root metadata: ", 0), 0u) << r.error().message();
  }
  // A parser for one role refuses the others.
  auto wrong = parse_timestamp(sign(good));
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message().find("expected \"timestamp\", got \"root\""),
            std::string::npos);
}

TEST(Parse, RepeatedKeyidInSignaturesIsRefused) {
  const std::string ka = keys().ka.key_id();
  const std::vector<std::pair<std::string, Parser>> roles = {
      {"root", as_status(parse_root)},
      {"timestamp", as_status(parse_timestamp)},
      {"snapshot", as_status(parse_snapshot)},
      {"targets", as_status(parse_targets)},
  };
  const std::map<std::string, Json> docs = {
      {"root", to_json(make_root())},
      {"timestamp", to_json(make_timestamp())},
      {"snapshot", to_json(make_snapshot())},
      {"targets", to_json(make_targets())},
  };
  for (const auto& [role, parse] : roles) {
    Json env = *parse_json(sign(docs.at(role)));  // signed by a, then b
    ASSERT_TRUE(parse(env.dump())) << role << ": distinct keyids must parse";
    ASSERT_EQ(env["signatures"][0]["keyid"], ka);
    // The same signature again, and a different signature under the same keyid: both refused.
    for (const std::string& sig :
         {env["signatures"][0]["sig"].get<std::string>(), std::string(128, '0')}) {
      Json dup = env;
      dup["signatures"].push_back(Json{{"keyid", ka}, {"sig", sig}});
      auto st = parse(dup.dump());
      ASSERT_FALSE(st) << role << ": repeated keyid accepted";
      EXPECT_EQ(st.error().code(), Errc::verification);
      EXPECT_EQ(st.error().message(), role + " metadata: signatures[2]: keyid \"" + ka +
                                          "\" already signs in signatures[0]; keyids in "
                                          "\"signatures\" must be unique");
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Threshold verification

struct Verified {
  Json envelope;
  std::vector<Signature> sigs;
};

// Parses signed bytes back into the pieces verify_threshold takes.
Verified parsed(const std::string& bytes) {
  auto p = parse_root(bytes);
  EXPECT_TRUE(p) << p.error().message();
  return {p->envelope, p->signatures};
}

Status verify_root(const Verified& v, const Root& r, const std::string& role = "root") {
  return verify_threshold(v.envelope, v.sigs, r.keys, r.roles.at(role), role);
}

TEST(Threshold, AllSignersMeetIt) {
  Root r = make_root(2);
  auto st = verify_root(parsed(sign(to_json(r))), r);
  EXPECT_TRUE(st) << st.error().message();
}

TEST(Threshold, NotMetNamesCounts) {
  Root r = make_root(2);
  auto st = verify_root(parsed(sign(to_json(r), {&keys().a})), r);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::verification);
  EXPECT_EQ(st.error().message(), "root: 1 of 2 required signatures valid");
  auto none = verify_root(parsed(unsigned_bytes(to_json(r))), r, "snapshot");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().message(), "snapshot: 0 of 2 required signatures valid");
}

TEST(Threshold, DuplicateSignatureCountsOnce) {
  Root r = make_root(2);
  Verified v = parsed(sign(to_json(r), {&keys().a}));
  ASSERT_EQ(v.sigs.size(), 1u);
  v.sigs.push_back(v.sigs[0]);  // the same valid signature listed twice
  v.envelope["signatures"].push_back(v.envelope["signatures"][0]);
  auto st = verify_root(v, r);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), "root: 1 of 2 required signatures valid");
}

TEST(Threshold, DuplicateKeyidInRoleCountsOnce) {
  Root r = make_root(2);
  const std::string ka = keys().ka.key_id();
  r.roles["root"].keyids = {ka, ka};
  auto st = verify_root(parsed(sign(to_json(r), {&keys().a})), r);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), "root: 1 of 2 required signatures valid");
}

TEST(Threshold, SameKeyUnderTwoKeyidsCountsOnce) {
  Root r = make_root(2);
  const std::string ka = keys().ka.key_id();
  r.keys["alias-of-a"] = keys().ka;
  r.roles["root"].keyids = {ka, "alias-of-a"};
  Verified v = parsed(sign(to_json(r), {&keys().a}));
  Signature alias = v.sigs[0];
  alias.keyid = "alias-of-a";
  v.sigs.push_back(alias);
  auto st = verify_root(v, r);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), "root: 1 of 2 required signatures valid");
}

TEST(Threshold, UnknownAndUnlistedKeysAreIgnored) {
  Root r = make_root(1);
  // Key c signs, but is neither in the role nor (first) in the key set.
  Verified v = parsed(sign(to_json(r), {&keys().c}));
  auto st = verify_root(v, r);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), "root: 0 of 1 required signatures valid");
  // In the key set but not listed for the role: still not counted.
  r.keys[keys().kc.key_id()] = keys().kc;
  v = parsed(sign(to_json(r), {&keys().c}));
  EXPECT_FALSE(verify_root(v, r));
  // Listed for the role but absent from the key set: ignored, the others still count.
  Root r2 = make_root(1);
  r2.roles["root"].keyids.insert(r2.roles["root"].keyids.begin(), "no-such-key");
  v = parsed(sign(to_json(r2), {&keys().c, &keys().b}));
  auto ok = verify_root(v, r2);
  EXPECT_TRUE(ok) << ok.error().message();
}

TEST(Threshold, BadSignatureEntriesDoNotHideGoodOnes) {
  Root r = make_root(2);
  Verified v = parsed(sign(to_json(r)));
  const std::string ka = keys().ka.key_id();
  // A non-hex and a wrong signature for key a listed before the valid one.
  v.sigs.insert(v.sigs.begin(), Signature{ka, "not hex"});
  v.sigs.insert(v.sigs.begin(), Signature{ka, std::string(128, '0')});
  auto st = verify_root(v, r);
  EXPECT_TRUE(st) << st.error().message();
  // Replacing b's signature by garbage drops the count.
  for (auto& s : v.sigs) {
    if (s.keyid == keys().kb.key_id()) s.sig = "30";
  }
  auto bad = verify_root(v, r);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), "root: 1 of 2 required signatures valid");
}

TEST(Threshold, ModifiedSignedPartFails) {
  Root r = make_root(2);
  Verified v = parsed(sign(to_json(r)));
  v.envelope["signed"]["version"] = 2;
  auto st = verify_root(v, r);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), "root: 0 of 2 required signatures valid");
  // Removing a field fails too.
  Verified w = parsed(sign(to_json(r)));
  w.envelope["signed"].erase("consistent_snapshot");
  EXPECT_FALSE(verify_root(w, r));
}

TEST(Threshold, WhitespaceInTheBytesDoesNotMatter) {
  Root r = make_root(2);
  std::string bytes = sign(to_json(r));
  auto env = parse_json(bytes);
  ASSERT_TRUE(env);
  // Re-serialised compactly: the canonical form, and so the signatures, are unchanged.
  auto st = verify_root(parsed(env->dump()), r);
  EXPECT_TRUE(st) << st.error().message();
}

TEST(Threshold, MixedSchemes) {
  // A 2048-bit key from the openssl CLI: quicker than generating RSA-3072 here.
  test::TempDir dir;
  auto gen = test::run({"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", (dir / "rsa.pem").string()});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  auto rsa = PrivateKey::from_pem(test::read_file(dir / "rsa.pem"));
  ASSERT_TRUE(rsa) << rsa.error().message();
  Key kr = Key::from_public(rsa->public_key());
  Root r = make_root(3);
  r.keys[kr.key_id()] = kr;
  r.roles["root"].keyids.push_back(kr.key_id());
  auto st = verify_root(parsed(sign(to_json(r), {&keys().a, &keys().b, &*rsa})), r);
  EXPECT_TRUE(st) << st.error().message();
}

TEST(Threshold, ZeroThresholdAndMissingSignedAreRejected) {
  Root r = make_root(1);
  Verified v = parsed(sign(to_json(r)));
  RoleKeys zero{r.roles.at("root").keyids, 0};
  auto st = verify_threshold(v.envelope, v.sigs, r.keys, zero, "root");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::verification);
  auto no_signed = verify_threshold(Json::object(), v.sigs, r.keys, r.roles.at("root"), "root");
  ASSERT_FALSE(no_signed);
  EXPECT_EQ(no_signed.error().code(), Errc::verification);
}

// ------------------------------------------------------------------------------------------------
// sign_metadata

TEST(SignMetadata, PrettyPrintedWithTrailingNewline) {
  std::string bytes = sign(to_json(make_snapshot()));
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(bytes.back(), '\n');
  EXPECT_EQ(bytes.rfind("{\n  \"signatures\": [", 0), 0u) << bytes.substr(0, 40);
  auto env = parse_json(bytes);
  ASSERT_TRUE(env);
  const auto& sigs = (*env)["signatures"];
  ASSERT_EQ(sigs.size(), 2u);
  EXPECT_EQ(sigs[0]["keyid"], keys().ka.key_id());
  EXPECT_EQ(sigs[1]["keyid"], keys().kb.key_id());
  // Signatures are hex over the canonical form of "signed".
  auto raw = from_hex(sigs[0]["sig"].get<std::string>());
  ASSERT_TRUE(raw);
  EXPECT_EQ(raw->size(), 64u);
  EXPECT_TRUE(crypto::verify(keys().a.public_key(), *canonical_json((*env)["signed"]), *raw));
}

TEST(SignMetadata, SameKeyTwiceSignsOnce) {
  auto bytes = sign_metadata(to_json(make_snapshot()), {&keys().a, &keys().a});
  ASSERT_TRUE(bytes);
  EXPECT_EQ((*parse_json(*bytes))["signatures"].size(), 1u);
}

TEST(SignMetadata, RejectsUnsignableInput) {
  Json with_float = to_json(make_snapshot());
  with_float["ratio"] = 0.5;
  auto f = sign_metadata(with_float, {&keys().a});
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code(), Errc::invalid_argument);
  auto arr = sign_metadata(Json::array(), {&keys().a});
  ASSERT_FALSE(arr);
  EXPECT_EQ(arr.error().code(), Errc::invalid_argument);
  auto null_key = sign_metadata(to_json(make_snapshot()), {nullptr});
  ASSERT_FALSE(null_key);
  EXPECT_EQ(null_key.error().code(), Errc::invalid_argument);
}

// ------------------------------------------------------------------------------------------------
// Expiry

TEST(Expiry, ExpiredAtAndAfterTheExpiryTime) {
  Common c;
  c.expires = at("2026-01-01T00:00:00Z");
  EXPECT_TRUE(check_expiry(c, "snapshot", at("2025-12-31T23:59:59Z")));
  for (const char* now : {"2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2099-01-01T00:00:00Z"}) {
    auto st = check_expiry(c, "snapshot", at(now));
    ASSERT_FALSE(st) << now;
    EXPECT_EQ(st.error().code(), Errc::expired);
    EXPECT_EQ(st.error().message(), "snapshot expired at 2026-01-01T00:00:00Z");
  }
}

// ------------------------------------------------------------------------------------------------
// Path matching (spec 5.6.7.2 / python-tuf _is_target_in_pathpattern)

bool path_match(const std::string& pattern, const std::string& target) {
  DelegatedRole r;
  r.name = "r";
  r.paths = std::vector<std::string>{pattern};
  return r.matches(target);
}

TEST(Matches, Patterns) {
  struct Case {
    const char* pattern;
    const char* target;
    bool match;
  };
  const Case cases[] = {
      {"*", "model.bin", true},
      {"*", "a/model.bin", false},  // '*' does not cross '/'
      {"models/*", "models/a.bin", true},
      {"models/*", "models/a/b.bin", false},
      {"models/*", "other/a.bin", false},
      {"models/*/weights.bin", "models/x/weights.bin", true},
      {"models/*/weights.bin", "models/x/y/weights.bin", false},
      {"*/*", "a/b", true},
      {"*/*", "a/b/c", false},
      {"a/**", "a/b/c", false},
      {"*.bin", "x.bin", true},
      {"*.bin", "x.tar", false},
      {"*.bin", "dir/x.bin", false},
      {"*.BIN", "x.bin", false},  // case-sensitive
      {"file?.txt", "file1.txt", true},
      {"file?.txt", "file10.txt", false},
      {"file?.txt", "file/.txt", false},
      {"[abc].txt", "b.txt", true},
      {"[abc].txt", "d.txt", false},
      {"[!abc].txt", "d.txt", true},
      {"[!abc].txt", "a.txt", false},
      {"[a-c]x", "bx", true},
      {"[a-c]x", "dx", false},
      {"[]]x", "]x", true},
      {"[a-]x", "-x", true},
      {"a[b", "a[b", true},  // an unclosed '[' is literal
      {"*a*b", "xxaxxb", true},
      {"*a*b", "xxaxxbc", false},
      {"a*b*c", "abcbc", true},
      {"models/resnet/1.0.0/model.json", "models/resnet/1.0.0/model.json", true},
      {"models/resnet/1.0.0/model.json", "models/resnet/1.0.0/model.jsonx", false},
      {"a/", "a/", true},
      {"a/", "a", false},
      {"/a", "a", false},
      {"", "", true},
      {"", "a", false},
      {"*", "", true},
      {"a.b", "axb", false},  // '.' is not a wildcard
      {"a+b", "a+b", true},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(path_match(c.pattern, c.target), c.match)
        << "pattern \"" << c.pattern << "\" target \"" << c.target << "\"";
  }
}

TEST(Matches, AnyPatternOfSeveral) {
  DelegatedRole r;
  r.paths = std::vector<std::string>{"a/*", "b/*.onnx"};
  EXPECT_TRUE(r.matches("a/x"));
  EXPECT_TRUE(r.matches("b/m.onnx"));
  EXPECT_FALSE(r.matches("b/m.bin"));
  r.paths = std::vector<std::string>{};
  EXPECT_FALSE(r.matches("a/x"));
}

TEST(Matches, PathHashPrefixes) {
  const std::string target = "models/vendor/model.bin";
  const std::string digest = crypto::sha256_hex(target);
  DelegatedRole r;
  r.path_hash_prefixes = std::vector<std::string>{digest.substr(0, 2)};
  EXPECT_TRUE(r.matches(target));
  std::string other = digest.substr(0, 1) + (digest[1] == '0' ? "1" : "0");
  r.path_hash_prefixes = std::vector<std::string>{other};
  EXPECT_FALSE(r.matches(target));
  r.path_hash_prefixes = std::vector<std::string>{other, digest.substr(0, 8)};
  EXPECT_TRUE(r.matches(target));
  r.path_hash_prefixes = std::vector<std::string>{digest};  // a full digest is a prefix too
  EXPECT_TRUE(r.matches(target));
  r.path_hash_prefixes = std::vector<std::string>{};
  EXPECT_FALSE(r.matches(target));

  // Through the parser: prefixes are normalised to lower case.
  Targets t = make_targets();
  std::string upper = digest.substr(0, 4);
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  t.delegations->roles[1].path_hash_prefixes = std::vector<std::string>{upper};
  auto p = parse_targets(unsigned_bytes(to_json(t)));
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_TRUE(p->signed_.delegations->roles[1].matches(target));
  EXPECT_FALSE(p->signed_.delegations->roles[0].matches(target));
  EXPECT_TRUE(p->signed_.delegations->roles[0].matches("models/vendor-a/x.bin"));
}

}  // namespace
}  // namespace mota::tuf
