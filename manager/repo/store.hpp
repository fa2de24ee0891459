#pragma once
// The repository store's primitives, shared by the units that read or write a repository
// (manager/repo/, manager/release/, manager/verify/): the directory layout, the lock, the
// metadata clients currently see, the role keys and the one publish path. Not a public API:
// fleet/ and cli/ go through Repository (manager/repo/repository.hpp).
//
// Errors are values (Errc::not_found, parse, verification, io, expired) with the file or role
// named. Thread-safety: none of these keep state between calls; a DirLock serialises processes.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/fs.hpp"
#include "common/result.hpp"
#include "common/time.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/channel.hpp"
#include "manifest/crypto.hpp"
#include "manifest/tuf/metadata.hpp"

namespace mota::manager::detail {

namespace stdfs = std::filesystem;

inline constexpr const char* kRoles[] = {"root", "targets", "snapshot", "timestamp"};
inline constexpr std::uint64_t kMaxMetadataBytes = 16u << 20;
inline constexpr std::uint64_t kMaxChannelBytes = 1u << 20;

// The layout of DIR (manager/repo/repository.hpp).
struct Paths {
  explicit Paths(stdfs::path d)
      : dir(std::move(d)),
        settings(dir / "mota.toml"),
        keys(dir / "keys"),
        tmp(dir / "tmp"),
        lock(dir / ".lock"),
        repo(dir / "repo"),
        metadata(repo / "metadata"),
        targets(repo / "targets") {}
  stdfs::path dir, settings, keys, tmp, lock, repo, metadata, targets;

  stdfs::path key(std::string_view role) const { return keys / (std::string(role) + ".pem"); }
  stdfs::path versioned(std::uint64_t v, std::string_view role) const {
    return metadata / (std::to_string(v) + "." + std::string(role) + ".json");
  }
  // Consistent-snapshot file name of a target: "<dir>/<sha256>.<basename>".
  stdfs::path target_file(const std::string& target_path, const std::string& sha256) const {
    stdfs::path tp(target_path);
    return targets / tp.parent_path() / (sha256 + "." + tp.filename().string());
  }
};

// flock() on DIR/.lock; released when the object (its descriptor) goes away. acquire() polls
// for 30 s at most, then fails with Errc::io naming the directory.
class DirLock {
 public:
  static Result<DirLock> acquire(const stdfs::path& file, bool exclusive);

 private:
  fs::File file_;
};

// Repository state: the metadata clients currently see, reached from timestamp.json.
struct State {
  tuf::Signed<tuf::Root> root;
  tuf::Signed<tuf::Targets> targets;
  tuf::Signed<tuf::Snapshot> snapshot;
  tuf::Signed<tuf::Timestamp> timestamp;
};

// The highest N with metadata/N.root.json (Errc::not_found without 1.root.json).
Result<std::uint64_t> latest_root_version(const Paths& p);
// The latest root, timestamp.json and the snapshot and targets versions it leads to.
Result<State> load_state(const Paths& p);

RoleExpiry role_expiry(const Settings& s, const std::string& role, const tuf::Common& c,
                       TimePoint now);
// Root, targets, snapshot, timestamp.
std::vector<RoleExpiry> expiry_of(const State& st, const Settings& s, TimePoint now);

// The first 16 hex digits of a key id, for messages and retired key file names.
std::string short_id(const std::string& keyid);
// Reads keys/<role>.pem and checks root lists it for the role: signing with a key clients do not
// trust would publish metadata every client rejects (Errc::verification).
Result<crypto::PrivateKey> load_key(const Paths& p, std::string_view role, const tuf::Root& root);
Result<std::string> sign(const Json& signed_json, const crypto::PrivateKey& key);
tuf::MetaFile meta_for(std::uint64_t version, const std::string& bytes);

// Files written by an operation that is not complete yet; removed unless dismissed. Metadata is
// only referenced once timestamp.json is replaced (last), so removing the rest is always safe.
class Cleanup {
 public:
  ~Cleanup() {
    if (done_) return;
    for (auto it = paths_.rbegin(); it != paths_.rend(); ++it) {
      std::error_code ec;
      stdfs::remove(*it, ec);  // directories only when empty
    }
  }
  void add(stdfs::path p) { paths_.push_back(std::move(p)); }
  void dismiss() { done_ = true; }

 private:
  std::vector<stdfs::path> paths_;
  bool done_ = false;
};

// Creates the missing directories of `dir` one by one, recording them for cleanup.
Status make_dirs_tracked(const stdfs::path& dir, Cleanup& cleanup);

struct Publish {
  std::optional<tuf::Targets> targets;  // new targets content (version/expiry set here)
  bool snapshot = false;                // re-sign snapshot even if targets did not change
};

// The single publish path: target files are already in place; writes N.targets.json, then
// N.snapshot.json, then timestamp.json last, so a client sees the old set or the new one. On
// success `st` is the new state and `cleanup` is dismissed.
Status publish(const Paths& p, State& st, const Settings& settings, TimePoint now, Publish what,
               Cleanup& cleanup);
// Mutating operations refuse to publish under an expired root: every client would reject it.
Status check_root_usable(const State& st, TimePoint now);

// Hashes a file with every algorithm a target lists; compares length first (cheap).
Status check_target_file(const stdfs::path& file, const std::string& target_path,
                         const tuf::TargetFile& info);

// What a target is, from its custom data: a release (kind "full"), a delta (kind "delta").
bool is_release(const tuf::TargetFile& t);
Release release_from(const std::string& path, const tuf::TargetFile& t);
bool is_delta(const tuf::TargetFile& t);
DeltaTarget delta_from(const std::string& path, const tuf::TargetFile& t);
// Semantic version order; plain string order when either is not a semantic version.
bool semver_less(const std::string& a, const std::string& b);
// The channel file of target `path` (at most kMaxChannelBytes), parsed.
Result<Channel> read_channel(const Paths& p, const std::string& path, const tuf::TargetFile& t);

}  // namespace mota::manager::detail
