#pragma once
// A TUF repository built on disk for tests, with real keys and real signatures
// (manifest/tuf/metadata.hpp). Layout, ready for any static HTTP server:
//   <dir>/metadata/  N.root.json (+ root.json), timestamp.json, N.snapshot.json (+ snapshot.json),
//                    N.<role>.json (+ <role>.json), role names percent-encoded
//   <dir>/targets/   <path> and <dir of path>/<sha256>.<name of path> (consistent snapshot)
//
// Roles are plain public members: change them, then publish. Nothing bumps versions on its own,
// so a test states every version it serves. Failures (which are bugs in the test) throw
// std::runtime_error, which GoogleTest reports as a failure of the test.

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "manifest/crypto.hpp"
#include "manifest/tuf/metadata.hpp"

namespace mota::test {

class TufRepo {
 public:
  // Top-level roles with one fresh ed25519 key each (threshold 1), all version 1, expiring in 30
  // days, and publishes them (publish_root() then publish_all()).
  explicit TufRepo(std::filesystem::path dir, bool consistent_snapshot = true);

  std::filesystem::path metadata_dir() const { return dir_ / "metadata"; }
  std::filesystem::path targets_dir() const { return dir_ / "targets"; }

  tuf::Root root;
  tuf::Timestamp timestamp;
  tuf::Snapshot snapshot;
  std::map<std::string, tuf::Targets> targets;  // "targets" and delegated roles, by role name
  // Signing keys by role name (top-level and delegated). publish_* signs with all of them.
  std::map<std::string, std::vector<crypto::PrivateKey>> keys;

  // Include length and sha256 of snapshot/targets files in timestamp/snapshot "meta".
  bool meta_hashes = true;

  // Generates a key and authorises it for `role`: in the root for a top-level role, in the
  // delegator's "delegations" for a delegated role. Returns the new key id.
  std::string add_key(const std::string& role);
  // Replaces all keys of a top-level role by `threshold` new ones (root.roles[role].threshold).
  void rotate_keys(const std::string& role);

  // Lists a target in `role` (sha256 + sha512) and writes its content under targets/.
  void add_target(const std::string& role, const std::string& path, std::string_view content);
  // Adds a delegation from `delegator` (with one new key) and an empty targets role for it.
  void add_delegation(const std::string& delegator, tuf::DelegatedRole role);

  // Each signs the role with keys[role] (plus `extra`) and writes it. Returns the bytes.
  std::string publish_root(const std::vector<const crypto::PrivateKey*>& extra = {});
  std::string publish_targets(const std::string& role = "targets");
  // Lists every published targets role at its latest published version.
  std::string publish_snapshot();
  std::string publish_timestamp();
  // publish_targets for every role, then snapshot, then timestamp.
  void publish_all();
  // Bumps targets, snapshot and timestamp versions by one and publishes them all.
  void bump_all();

  // Bytes of a published root version (the initial trusted root of a client is root_bytes(1)).
  std::string root_bytes(std::uint64_t version) const;
  // Signs any "signed" object with the given keys (for tampered metadata).
  static std::string sign(const Json& signed_json,
                          const std::vector<const crypto::PrivateKey*>& keys);
  // Overwrites a file under metadata/ (fault injection).
  void write_metadata(const std::string& file, std::string_view bytes) const;
  std::vector<const crypto::PrivateKey*> signers(const std::string& role) const;

  static TimePoint in_days(int days);

 private:
  std::filesystem::path dir_;
  std::map<std::uint64_t, std::string> roots_;            // published root bytes by version
  std::map<std::string, std::string> published_targets_;  // latest bytes by role
  std::string published_snapshot_;
};

}  // namespace mota::test
