#pragma once
// The TUF client workflow of the specification, section 5 ("Detailed client workflow"):
// root rotation with thresholds (5.3), timestamp (5.4), snapshot (5.5), targets with delegations
// searched depth-first with terminating roles (5.6), then target download with length and hash
// checks (5.7). Fast-forward attack recovery (5.3.11) deletes timestamp/snapshot after a rotation
// of their keys.
//
// Trusted metadata lives in one directory, byte-for-byte as received: root.json, timestamp.json,
// snapshot.json, targets.json and <delegated role>.json (role names percent-encoded in file
// names). No other .json files are written there. Every file is replaced atomically.
//
// Not thread-safe: one Client per metadata directory at a time.

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/http.hpp"
#include "common/result.hpp"
#include "manifest/tuf/metadata.hpp"

namespace mota::tuf {

struct ClientConfig {
  std::filesystem::path metadata_dir;
  std::string metadata_base_url;  // metadata URL = base + "/" + filename, base used verbatim
  // Upper bounds for files whose length is not yet known (spec 5.3.3, 5.4.1, ...).
  std::uint64_t max_root_bytes = 512 * 1024;
  std::uint64_t max_timestamp_bytes = 16 * 1024;
  std::uint64_t max_snapshot_bytes = 2u << 20;
  std::uint64_t max_targets_bytes = 16u << 20;
  std::uint64_t max_root_rotations = 256;  // stop a server that offers endless root versions
  // Whole-request limit of every metadata fetch and download_target() (the http::Client's
  // minimum rate applies as well), so a server dripping timestamp.json cannot hold a refresh.
  // A file whose trusted length is known (snapshot, targets and target files, when listed with a
  // length) gets length / fetch_min_rate seconds on top when fetch_min_rate is set, so a big
  // targets.json on a slow link is not cut off for its size.
  std::chrono::milliseconds fetch_timeout{60'000};
  std::uint64_t fetch_min_rate = 0;  // bytes per second; 0: the fixed fetch_timeout only
  unsigned max_delegations = 32;     // visited roles per target search
  // Time source for expiry checks (tests override it).
  std::function<TimePoint()> now = [] { return now_seconds(); };
};

class Client {
 public:
  // `http` must outlive the client.
  Client(ClientConfig config, http::Client& http);

  // Writes `trusted_root` (bytes of a root.json obtained out of band) as the initial trusted
  // root after checking it parses and is self-signed to its own threshold. No network access.
  static Status init(const std::filesystem::path& metadata_dir, std::string_view trusted_root);

  // Runs 5.3-5.5 and loads top-level targets (5.6). After success the trusted set is current.
  Status refresh();

  // Searches the targets for `target_path` (5.6.7 delegation walk, fetching delegated roles as
  // needed). Errc::not_found when no trusted role lists it. Calls refresh() first if needed.
  Result<TargetFile> get_target(const std::string& target_path);

  // URL of a target for download: consistent snapshot naming "dir/HASH.name" when the root says so.
  std::string target_url(const std::string& target_base_url, const std::string& target_path,
                         const TargetFile& info) const;

  // Downloads a target into `dest_file` (atomically), verifying length and every listed hash
  // while streaming. If `dest_file` exists with matching length and hashes it is kept and
  // nothing is fetched.
  Status download_target(const std::string& target_base_url, const std::string& target_path,
                         const TargetFile& info, const std::filesystem::path& dest_file);

  // The trusted roles after refresh(); null before.
  const Root* root() const;
  const Targets* targets() const;
  const Snapshot* snapshot() const;
  const Timestamp* timestamp() const;

  struct State;
  ~Client();

 private:
  struct DelegationRef;  // a delegating role's keys and the delegation itself
  Status update_timestamp();
  Status update_snapshot();
  // Loads "targets" (delegation == nullptr: verified with the root) or a delegated role. A role
  // already loaded is served again only once it has met the keys and threshold of `delegation`,
  // the delegation it is reached through now.
  Status load_targets(const std::string& role_name, const DelegationRef* delegation);

  // fetch_timeout for a file of `length` bytes (unknown: nullopt).
  std::chrono::milliseconds fetch_timeout(std::optional<std::uint64_t> length) const;

  ClientConfig config_;
  http::Client& http_;
  std::unique_ptr<State> state_;
};

}  // namespace mota::tuf
