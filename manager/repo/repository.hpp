#pragma once
// A mota repository on disk: the publishing side of TUF. Layout (see docs/repository.md):
//
//   DIR/mota.toml        settings: key type, expiry per role, refresh margin, zstd level
//   DIR/keys/            0700; root.pem targets.pem snapshot.pem timestamp.pem (0600, PKCS#8)
//   DIR/tmp/             staging for packages being built (same filesystem as repo/)
//   DIR/.lock            flock()ed exclusively by every mutating operation
//   DIR/repo/            the tree a web server serves:
//     metadata/N.root.json, root.json (latest root), N.targets.json, N.snapshot.json,
//              timestamp.json
//     targets/models/<name>/<version>/<sha256>.<name>-<version>.mota
//     targets/channels/<channel>/<sha256>.<model>.json
//     targets/deltas/<name>/<from>/<sha256>.<to>.mdelta
//
// Consistent snapshots are always on: metadata and target files are never overwritten, new
// versions are added beside the old ones, and timestamp.json (written last) switches clients to
// the new set atomically.
//
// Thread-safety: a Repository object is used by one thread. Several processes may operate on one
// directory; the lock file serialises them.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "common/time.hpp"
#include "manager/repo/settings.hpp"
#include "manifest/channel.hpp"
#include "manifest/crypto.hpp"
#include "manifest/tuf/metadata.hpp"
#include "storage/package.hpp"

namespace mota::manager {

struct Release {
  std::string name;
  std::string version;
  std::string target_path;  // "models/<name>/<version>/<name>-<version>.mota"
  std::uint64_t length = 0;
  std::string sha256;
  std::string tree_digest;
  std::string framework;
};

// A published package delta. TUF target "deltas/<name>/<from>/<to>.mdelta" (delta_target_path),
// custom {"kind": "delta", "name", "from", "to", "from_tree_digest", "tree_digest",
// "full_target", "full_length", "full_sha256"}: from_tree_digest/tree_digest are the tree
// digests of the FROM and TO releases, full_* describe TO's full package (a device falls back to
// it when the delta does not apply).
struct DeltaTarget {
  std::string name;
  std::string from, to;      // versions; from < to
  std::string target_path;   // "deltas/<name>/<from>/<to>.mdelta"
  std::uint64_t length = 0;  // of the .mdelta
  std::string sha256;
  std::string from_tree_digest, tree_digest;
  std::string full_target;  // "models/<name>/<to>/<name>-<to>.mota"
  std::uint64_t full_length = 0;
  std::string full_sha256;
};

struct ChannelRequest {
  std::string channel;
  std::string model;
  std::string version;
  unsigned percent = 100;
  // A finer share in basis points (0..10000; paced rollouts) instead of `percent`.
  std::optional<unsigned> bp;
  bool allow_downgrade = false;
  std::string min_version;  // empty: none
  // A label selector (common/labels.hpp): VERSION goes to `percent` of the devices it matches
  // only; the others keep what the channel gave them (manifest/channel.hpp "targeted"). Empty:
  // every device.
  std::string select;
  // The sample's salt when a new one is drawn (16 lower-case hex); empty: random.
  std::string salt;
  // When devices may switch to what the file gives them (common/window.hpp texts); empty: any
  // time (manifest/channel.hpp "install_window").
  std::vector<std::string> install_window;
};

// Where one role of the served metadata stands against the refresh rule.
struct RoleExpiry {
  std::string role;  // "root", "targets", "snapshot", "timestamp"
  std::uint64_t version = 0;
  TimePoint expires;
  std::chrono::seconds window{0};  // Settings::refresh_window(role)
  bool due = false;                // expires within `window` (expires <= now + window)
  bool expired = false;            // now >= expires: every client refuses it
};

// "timestamp version 7 expires 2026-11-22T10:00:00Z (in 3h, within its 12h refresh window)", or
// "... expired at ..." once expired.
std::string describe_expiry(const RoleExpiry& r, TimePoint now);
// What an operator runs to renew `role`: "run `mota key rotate root` (needs the offline root key)"
// for root, else "run `mota timestamp refresh` (or keep `mota serve` running with the keys)".
std::string renew_hint(std::string_view role);

struct RefreshOptions {
  // false: re-sign only the online roles that are due (Settings::refresh_window) and nothing at
  // all when none is, so a frequent timer leaves the repository unchanged. true (`mota timestamp
  // refresh --force`): always re-sign the timestamp (version + 1), plus the due ones.
  bool force = false;
  // Set (`mota bundle create --valid-for`): an online role that expires before now + valid_for
  // is due too, and every role re-signed gets the longer of its lifetime and valid_for, so an
  // offline bundle made right after stays installable that long (docs/bundles.md).
  std::optional<std::chrono::seconds> valid_for = std::nullopt;
};

struct RefreshResult {
  std::uint64_t timestamp_version = 0;  // current after the call
  bool resigned_timestamp = false;
  bool resigned_snapshot = false;
  bool resigned_targets = false;
  // The four roles after the call (root, targets, snapshot, timestamp), as expiry_status().
  std::vector<RoleExpiry> roles;
  // Due roles this host could not re-sign because their key file is absent or unreadable (the
  // operator keeps it elsewhere): "snapshot: keys/snapshot.pem: No such file or directory".
  // Whatever did not need that key was re-signed. A key that is present but wrong is an error.
  std::vector<std::string> missing_keys;
  // The root is due: it is never re-signed online (its key belongs offline); each entry says
  // when it expires and the command to run.
  std::vector<std::string> warnings;

  bool changed() const { return resigned_timestamp; }  // every re-sign ends with the timestamp
};

// Time source for signing and expiry checks (tests move it).
using NowFn = std::function<TimePoint()>;

// Defined by the units above the store, whose headers a caller of those members includes:
// manager/release/release.hpp and manager/verify/verify.hpp.
struct ReleaseOptions;
struct ReleaseResult;
struct VerifyReport;

// The one handle on a repository. Its members are implemented by concern, each in its unit:
// the store (this unit, mota_manager_repo: init, open, channels, refresh, keys), releases
// (add_release, list_releases, list_deltas: manager/release/, mota_manager_release) and
// verification (verify: manager/verify/, mota_manager_verify). A unit that links only the store
// (fleet/) cannot call the others' members: that fails to link.
class Repository {
 public:
  // Creates a repository in `dir` (created if missing; an existing directory must be empty or
  // Errc::already_exists, nothing touched): settings, four fresh keys, root v1, empty targets,
  // snapshot and timestamp v1.
  static Result<Repository> init(const std::filesystem::path& dir, const Settings& settings,
                                 NowFn now = now_seconds);
  // Opens an existing repository. Errc::not_found "DIR is not a mota repository (no mota.toml)".
  // Keys are checked against the latest root only when an operation needs them.
  static Result<Repository> open(const std::filesystem::path& dir, NowFn now = now_seconds);

  const std::filesystem::path& dir() const { return dir_; }
  const Settings& settings() const { return settings_; }

  // Packs `model_dir` as `name` (empty: model.json's name) at `version` and publishes it.
  // Errc::already_exists when that name+version is published (the repository is unchanged);
  // on any failure nothing is published and no file is left behind.
  Result<Release> add_release(const std::filesystem::path& model_dir, const std::string& version,
                              const std::string& name = "", const storage::Progress& progress = {});
  // The same with options, in one publish (one new targets version):
  //  - deltas: from each of the `deltas` (default settings().delta_versions) highest released
  //    versions of the name that are LOWER than `version` (semver), a package delta is built
  //    between the unpacked trees (in DIR/tmp, removed afterwards) and published as a delta
  //    target when size <= delta_max_ratio * full length. A delta that cannot be built (e.g. a
  //    corrupt old package in the repository) is logged as a warning and skipped: the release is
  //    the product, a delta only an optimisation. Outcomes are returned and logged.
  //  - checks: the model is checked first (manager/release/release_check.hpp: for ONNX the graph,
  //  model.json
  //    against it, the bundled backend's known limits, and a load and run through mota-runtime
  //    on a staged copy); a failure is Errc::verification with the reason, nothing published.
  //  - health: the model is staged in DIR/tmp (hardlinks or copies; model_dir is never
  //    modified), run once through `mota-runtime run`, and the staged copy gets the health
  //    files and section. A model that fails to run fails the release with mota-runtime's
  //    reason (Errc::verification); nothing is published.
  Result<ReleaseResult> add_release(const std::filesystem::path& model_dir,
                                    const std::string& version, const ReleaseOptions& options);
  // Releases (kind "full") in the current targets, sorted by name then semver.
  Result<std::vector<Release>> list_releases() const;
  // Delta targets in the current targets (all, or only `name`'s), sorted by name, to, from.
  Result<std::vector<DeltaTarget>> list_deltas(const std::string& name = "") const;

  // Points `channel` for `model` at `version` (which must be released) and publishes. A new
  // version gets a new random salt, and the previous version becomes the fallback when
  // percent < 100; the same version keeps salt and fallback (raising percent keeps devices in).
  Result<Channel> set_channel(const ChannelRequest& request);
  // Channels in the current targets (all, or only `channel`), sorted by channel then model.
  Result<std::vector<Channel>> show_channels(const std::string& channel = "") const;

  // Keeps the online metadata fresh (the refresh rule, Settings::refresh_window): under the
  // exclusive lock, re-signs (version + 1, new expiry) targets when due, snapshot when due or
  // when targets was re-signed, timestamp when due or when snapshot was re-signed (or always
  // with options.force), publishing in the usual order with timestamp.json last. Nothing due:
  // no file is written. Due roles whose key is not on this host are listed in missing_keys; a
  // due root in warnings. Errors: an expired root (Errc::expired, nothing signed), a wrong key,
  // I/O. Meant for `mota timestamp refresh` from a timer and `mota serve`'s refresher.
  Result<RefreshResult> refresh(const RefreshOptions& options = {});
  // refresh({.force = true}): the timestamp is always re-signed.
  Result<RefreshResult> refresh_timestamp();

  // The four roles clients see now (root, targets, snapshot, timestamp) against the refresh
  // rule. Changes nothing and takes no lock, so it never waits for a publish: timestamp.json is
  // replaced atomically and the versioned files it leads to are never removed, so what it reads
  // is one consistent published state (the one before or after a concurrent publish).
  Result<std::vector<RoleExpiry>> expiry_status() const;

  // Replaces the key of `role` ("root", "targets", "snapshot", "timestamp"): a new root version
  // lists the new key, signed by the old and the new root keys, then the role's metadata is
  // re-signed. The old key moves to keys/retired/. Returns the new root version.
  Result<std::uint64_t> rotate_key(const std::string& role);

  // Checks the served tree end to end as a client would (root chain, signatures, thresholds,
  // expiry, snapshot/timestamp meta, every target file's length and hash, each package's
  // model.json against its target's custom data, each channel file, each delta target's custom
  // data against the releases it names and its .mdelta header). Errc::verification (or
  // expired/not_found/parse) with the first problem found.
  static Result<VerifyReport> verify(const std::filesystem::path& dir, NowFn now = now_seconds);

  Repository(Repository&&) noexcept;
  Repository& operator=(Repository&&) noexcept;
  ~Repository();

 private:
  Repository(std::filesystem::path dir, Settings settings, NowFn now);

  std::filesystem::path dir_;
  Settings settings_;
  NowFn now_;
};

// Name of the package file inside a target path: "<name>-<version>.mota".
std::string release_target_path(const std::string& name, const std::string& version);
// Target path of a package delta: "deltas/<name>/<from>/<to>.mdelta".
std::string delta_target_path(const std::string& name, const std::string& from,
                              const std::string& to);

}  // namespace mota::manager
