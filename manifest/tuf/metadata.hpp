#pragma once
// TUF metadata (specification 1.0.x): the four top-level roles, delegated targets roles, and the
// signed envelope around them. Used by both sides: the repository (manager/) builds and signs
// these; the client (manifest/tuf/client.hpp) parses and verifies them.
//
// Parsing is strict about what the client relies on (types, required fields, lengths, hash
// encodings) and tolerant of unknown fields. Signatures are always checked over the canonical
// form of the "signed" object exactly as received, so unknown fields stay covered by them.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/time.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/crypto.hpp"

namespace mota::tuf {

inline constexpr const char* kSpecVersion = "1.0.31";

struct Key {
  std::string keytype;  // "ed25519", "ecdsa", "rsa"
  std::string scheme;   // "ed25519", "ecdsa-sha2-nistp256", "rsassa-pss-sha256"
  std::string public_value;

  static Key from_public(const crypto::PublicKey& pk);
  // The key id mota assigns: sha256 hex of the canonical JSON of this key object.
  std::string key_id() const;
  Json to_json() const;
  // Errc::unsupported for a keytype/scheme this build cannot verify.
  Result<crypto::PublicKey> to_public() const;
};

struct RoleKeys {
  std::vector<std::string> keyids;
  unsigned threshold = 1;
};

// Fields common to all roles' "signed" object.
struct Common {
  std::string type;  // "root", "timestamp", "snapshot", "targets"
  std::string spec_version = kSpecVersion;
  std::uint64_t version = 1;
  TimePoint expires{};
};

struct Root : Common {
  bool consistent_snapshot = true;
  std::map<std::string, Key> keys;        // by key id
  std::map<std::string, RoleKeys> roles;  // "root", "timestamp", "snapshot", "targets"
};

// Describes a metadata file (in timestamp and snapshot).
struct MetaFile {
  std::uint64_t version = 0;
  std::optional<std::uint64_t> length;
  std::map<std::string, std::string> hashes;  // algorithm -> lower-case hex
};

struct Timestamp : Common {
  MetaFile snapshot;  // the "snapshot.json" entry of "meta"
};

struct Snapshot : Common {
  std::map<std::string, MetaFile> meta;  // "targets.json", "<role>.json"
};

struct TargetFile {
  std::uint64_t length = 0;
  std::map<std::string, std::string> hashes;  // at least one; algorithm -> hex
  Json custom;                                // null when absent
};

struct DelegatedRole {
  std::string name;
  std::vector<std::string> keyids;
  unsigned threshold = 1;
  bool terminating = false;
  // Exactly one of the two is set (the specification forbids both).
  std::optional<std::vector<std::string>> paths;  // shell-style patterns
  std::optional<std::vector<std::string>> path_hash_prefixes;

  // Whether this role is trusted for `target_path` (spec 5.6.7.2: fnmatch-like patterns where
  // '*' does not cross '/', or sha256(target_path) starting with one of the prefixes).
  bool matches(const std::string& target_path) const;
};

struct Delegations {
  std::map<std::string, Key> keys;
  std::vector<DelegatedRole> roles;  // in priority order
};

struct Targets : Common {
  std::map<std::string, TargetFile> targets;  // by target path
  std::optional<Delegations> delegations;
};

struct Signature {
  std::string keyid;
  std::string sig;  // hex
};

// A parsed metadata file: the envelope as received, plus the typed "signed" part.
template <class T>
struct Signed {
  T signed_;
  Json envelope;  // {"signed": ..., "signatures": [...]}, as parsed from the bytes received
  std::vector<Signature> signatures;
};

// Parse metadata bytes into a typed role. The expected type is checked ("_type" must match).
// None of these verify signatures or expiry. A keyid that appears twice in "signatures" (the
// specification requires them unique) is refused with Errc::verification naming the keyid; any
// other malformation is Errc::parse.
Result<Signed<Root>> parse_root(std::string_view bytes);
Result<Signed<Timestamp>> parse_timestamp(std::string_view bytes);
Result<Signed<Snapshot>> parse_snapshot(std::string_view bytes);
Result<Signed<Targets>> parse_targets(std::string_view bytes);

// Serialise a role's "signed" object (with "_type" and all fields in TUF's JSON shape).
Json to_json(const Root& r);
Json to_json(const Timestamp& t);
Json to_json(const Snapshot& s);
Json to_json(const Targets& t);
Json to_json(const TargetFile& f);

// Verifies that at least `threshold` distinct keys among `keyids` (each present in `keys`)
// produced valid signatures over canonical_json(envelope["signed"]). A key id listed twice, or a
// key signing twice, counts once; signatures by unknown keys are ignored. On failure,
// Errc::verification says how many valid signatures were found of how many needed for `role_name`.
Status verify_threshold(const Json& envelope, const std::vector<Signature>& signatures,
                        const std::map<std::string, Key>& keys, const RoleKeys& role,
                        std::string_view role_name);

// Builds the envelope bytes for a "signed" object signed by each key (key id per Key::key_id()).
// Output is pretty-printed JSON (two-space indent) with a trailing newline: readable on disk,
// signatures computed over the canonical form.
Result<std::string> sign_metadata(const Json& signed_json,
                                  const std::vector<const crypto::PrivateKey*>& keys);

// Checks an expiry against `now`: Errc::expired naming the role and the time when expired.
Status check_expiry(const Common& c, std::string_view role_name, TimePoint now);

}  // namespace mota::tuf
