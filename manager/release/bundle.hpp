#pragma once
// `mota bundle`: signed offline bundles for devices that cannot reach the repository (USB
// sticks, air-gapped sites). The container is storage/bundle.hpp; the feature, its trust model
// and what a device does with a bundle are in docs/bundles.md.
//
// A bundle carries the repository's metadata exactly as published, so a device checks it with
// the same TUF client workflow as a poll (signatures, thresholds, root rotation, rollback of every
// role, expiry, lengths and hashes), against its own trusted metadata. create_bundle() collects
// the metadata by running that very client against the repository's files, starting from
// repo/metadata/1.root.json as a device that never polled would, and records every file it
// fetched; so a bundle holds what such a device needs, and nothing it would not check.
//
// Thread-safety: free functions without shared state; a repository may be published to while a
// bundle is made (consistent snapshots: the bundle holds one published state).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/time.hpp"
#include "manager/repo/repository.hpp"
#include "storage/bundle.hpp"

namespace mota::manager {

struct BundleRequest {
  std::string model;
  std::string version;
  // Installed versions to carry a delta from (each must be published: `mota release deltas`).
  std::vector<std::string> delta_from;
  std::filesystem::path output;  // empty: "<model>-<version>.motab" in the current directory
  // Set: first re-sign the repository's online metadata so that it expires no sooner than
  // now + valid_for (Repository::refresh with RefreshOptions::valid_for, a normal publish that
  // every device sees). Needs the timestamp and snapshot keys (and targets', if it expires
  // sooner); refused when the root expires sooner (that needs `mota key rotate root`).
  std::optional<std::chrono::seconds> valid_for;
};

// One role as the bundle carries it.
struct BundleRole {
  std::string role;  // "root" (the newest in the bundle), "timestamp", "snapshot", "targets"
  std::uint64_t version = 0;
  TimePoint expires;
};

// A target file the bundle carries.
struct BundleTarget {
  std::string kind;   // "package", "delta", "channel"
  std::string path;   // target path, e.g. "models/m/1.1.0/m-1.1.0.mota"
  std::string entry;  // "targets/models/m/1.1.0/<sha256>.m-1.1.0.mota"
  std::uint64_t length = 0;
  std::string sha256;
  std::string from;  // for a delta: the version it applies to
};

struct BundleInfo {
  std::filesystem::path path;
  std::uint64_t size = 0;  // of the file
  storage::BundleIndex index;
  std::vector<storage::BundleEntry> entries;
  std::vector<BundleRole> roles;      // root, timestamp, snapshot, targets
  std::vector<BundleTarget> targets;  // package, deltas, channels
  TimePoint expires;                  // the earliest expiry of the roles: devices refuse it after
  std::string expires_first;          // the role that expires first
  // What verification checked, in order; empty when the bundle was not verified (no root given).
  std::vector<std::string> checked;
  std::string verified_against;  // the trusted root's description, when verified
};

// Writes a bundle of `request.model` `request.version` from the repository in `repo_dir` and
// verifies the written file as a device that trusts only repo/metadata/1.root.json would (at
// `now`), removing it when that fails. Errors: Errc::not_found for a version that is not released
// or a delta that is not published (the message names the command that lists them);
// Errc::expired when the repository's metadata has expired (run `mota timestamp refresh`, or use
// valid_for); Errc::invalid_argument for an empty model or version; I/O errors. Nothing is left at
// the output path on failure (it is written atomically).
Result<BundleInfo> create_bundle(const std::filesystem::path& repo_dir,
                                 const BundleRequest& request, NowFn now = now_seconds);

// Describes a bundle (index, entries, roles and their expiry, targets). The metadata is read
// without being trusted unless `trusted_root` (the bytes of a root.json, e.g. the one baked into
// the devices) is given: then the bundle is verified as a device holding only that root would
// verify it at `now` — root chain, signatures, thresholds, versions, expiry, and the length and
// every hash of each target it carries — and `checked` says what was checked. Errors: the
// reader's (storage::BundleReader::open), and with a root the first check that fails.
Result<BundleInfo> inspect_bundle(const std::filesystem::path& bundle,
                                  const std::optional<std::string>& trusted_root = std::nullopt,
                                  NowFn now = now_seconds);

}  // namespace mota::manager
