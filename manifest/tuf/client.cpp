// TUF client workflow (specification 1.0.x, section 5), ordered and checked as python-tuf's
// ngclient does (tuf/ngclient/updater.py and _internal/trusted_metadata_set.py).
//
// Local metadata is only ever "intermediate": a local timestamp or snapshot that verifies against
// the current root is kept for rollback protection even if expired or stale, and is replaced by
// a remote file that passes every check. A local file that fails to load is ignored (as in
// python-tuf), except root.json, the anchor of trust.

#include "manifest/tuf/client.hpp"

#include <algorithm>
#include <set>
#include <system_error>
#include <utility>

#include "common/fs.hpp"
#include "manifest/crypto.hpp"

namespace mota::tuf {

namespace {

constexpr const char* kTopLevelRoles[] = {"root", "timestamp", "snapshot", "targets"};

std::string join_url(const std::string& base, const std::string& rel) {
  if (!base.empty() && base.back() == '/') return base + rel;
  return base + "/" + rel;
}

Status verify_length_and_hashes(std::string_view data, const std::optional<std::uint64_t>& length,
                                const std::map<std::string, std::string>& hashes,
                                const std::string& file) {
  if (length && data.size() != *length) {
    return fail(Errc::verification, file + ": length " + std::to_string(data.size()) +
                                        " does not match the expected " + std::to_string(*length) +
                                        " bytes");
  }
  bool any_supported = hashes.empty();
  for (const auto& [name, expected] : hashes) {
    auto algo = crypto::hash_from_name(name);
    if (!algo) continue;  // an algorithm this build lacks; another listed hash must cover it
    any_supported = true;
    crypto::Hasher h(*algo);
    h.update(data);
    std::string got = h.hex_digest();
    if (!crypto::digest_equal(got, expected)) {
      return fail(Errc::verification,
                  file + ": hash mismatch (" + name + " " + got + ", expected " + expected + ")");
    }
  }
  if (!any_supported) {
    return fail(Errc::unsupported, file + ": none of the listed hash algorithms is supported");
  }
  return {};
}

Result<RoleKeys> top_role(const Root& root, const std::string& role) {
  auto it = root.roles.find(role);
  if (it == root.roles.end()) {
    return fail(Errc::verification, "root.json version " + std::to_string(root.version) +
                                        " does not define the '" + role + "' role");
  }
  return it->second;
}

// Whether the keys or threshold of `role` differ between two roots (spec 5.3.11).
bool role_changed(const Root& a, const Root& b, const std::string& role) {
  auto ia = a.roles.find(role);
  auto ib = b.roles.find(role);
  if (ia == a.roles.end() || ib == b.roles.end()) return true;
  std::set<std::string> ka(ia->second.keyids.begin(), ia->second.keyids.end());
  std::set<std::string> kb(ib->second.keyids.begin(), ib->second.keyids.end());
  return ka != kb || ia->second.threshold != ib->second.threshold;
}

Status version_matches(std::uint64_t got, std::uint64_t want, const std::string& file,
                       const std::string& listed_in) {
  if (got == want) return {};
  if (got < want) {
    return fail(Errc::rollback, file + ": version " + std::to_string(got) +
                                    " is lower than version " + std::to_string(want) +
                                    " listed in " + listed_in +
                                    " (replayed or rolled-back metadata)");
  }
  return fail(Errc::verification, file + ": version " + std::to_string(got) +
                                      " does not match version " + std::to_string(want) +
                                      " listed in " + listed_in);
}

Status check_not_expired(const Common& c, const std::string& file, TimePoint now) {
  if (c.expires <= now) {
    return fail(Errc::expired,
                file + ": expired at " + format_time(c.expires) + " (possible freeze attack)");
  }
  return {};
}

}  // namespace

struct Client::State {
  bool refreshed = false;
  TimePoint now{};
  Signed<Root> root;
  std::optional<Signed<Timestamp>> timestamp;
  std::optional<Signed<Snapshot>> snapshot;
  std::map<std::string, Signed<Targets>> targets;  // "targets" and delegated roles
  // (delegator, role) pairs whose delegation's keys and threshold the role in `targets` met. A
  // role is one file, but several delegators may delegate its name, each with its own keys.
  std::set<std::pair<std::string, std::string>> verified_delegations;
};

struct Client::DelegationRef {
  std::string delegator;  // the role whose "delegations" hold `role`
  const std::map<std::string, Key>* keys;
  const DelegatedRole* role;
};

namespace {

// Fetches a metadata file of at most max_bytes within `timeout` (0: none). A 403/404 sets
// *missing instead of failing when `missing` is given.
Result<std::string> fetch(http::Client& http, const std::string& base, const std::string& file,
                          std::uint64_t max_bytes, std::chrono::milliseconds timeout,
                          bool* missing = nullptr) {
  http::GetRequest req;
  req.url = join_url(base, file);
  req.max_bytes = max_bytes;
  req.timeout = timeout;
  std::string data;
  auto info = http.get(req, [&](std::span<const std::byte> chunk) -> Status {
    data.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    return {};
  });
  if (info) return data;
  Error err = std::move(info).error();
  if (missing) {
    int status = err.code() == Errc::http ? err.http_status() : 0;
    if (status == 403 || status == 404) {
      *missing = true;
      return std::string();
    }
  }
  if (err.code() == Errc::too_large) {
    return fail(Errc::too_large, file + ": larger than the limit of " + std::to_string(max_bytes) +
                                     " bytes (" + err.message() + ")");
  }
  return fail(std::move(err).context("fetch " + file));
}

Status persist(const std::filesystem::path& dir, const std::string& file, std::string_view data) {
  return fs::write_file_atomic(dir / file, data).context("store trusted " + file);
}

Status verify_root_self(const Signed<Root>& r, const std::string& file) {
  auto role = MOTA_TRY_CTX(top_role(r.signed_, "root"), file);
  return verify_threshold(r.envelope, r.signatures, r.signed_.keys, role, "root").context(file);
}

// Checks a parsed targets role beyond what the parser does: no delegation may reuse a top-level
// role name, which would collide with the top-level files in the metadata directory.
Status check_delegation_names(const Targets& t, const std::string& file) {
  if (!t.delegations) return {};
  for (const auto& d : t.delegations->roles) {
    for (const char* top : kTopLevelRoles) {
      if (d.name == top) {
        return fail(Errc::verification,
                    file + ": delegates to '" + d.name + "', the name of a top-level role");
      }
    }
  }
  return {};
}

}  // namespace

Client::Client(ClientConfig config, http::Client& http)
    : config_(std::move(config)), http_(http), state_(std::make_unique<State>()) {}

Client::~Client() = default;

std::chrono::milliseconds Client::fetch_timeout(std::optional<std::uint64_t> length) const {
  if (config_.fetch_timeout.count() <= 0) return config_.fetch_timeout;  // none
  if (!length || config_.fetch_min_rate == 0) return config_.fetch_timeout;
  // At most a day more, whatever a (signed) length says.
  const double extra_ms = std::min(
      8.64e7, 1000.0 * static_cast<double>(*length) / static_cast<double>(config_.fetch_min_rate));
  return config_.fetch_timeout + std::chrono::milliseconds(static_cast<std::int64_t>(extra_ms));
}

Status Client::init(const std::filesystem::path& metadata_dir, std::string_view trusted_root) {
  auto root = MOTA_TRY_CTX(parse_root(trusted_root), "trusted root");
  MOTA_TRY_CTX(verify_root_self(root, "root.json"), "trusted root");
  MOTA_TRY(fs::make_dirs(metadata_dir));
  return fs::write_file_atomic(metadata_dir / "root.json", trusted_root)
      .context("store trusted root");
}

Status Client::refresh() {
  state_ = std::make_unique<State>();
  State& s = *state_;
  s.now = config_.now();
  const auto& dir = config_.metadata_dir;

  // 5.2: the trusted root. A broken local root cannot be recovered from without a new one
  // obtained out of band, so unlike the other roles it is an error.
  {
    auto bytes =
        MOTA_TRY_CTX(fs::read_file(dir / "root.json", config_.max_root_bytes), "trusted root.json");
    s.root = MOTA_TRY_CTX(parse_root(bytes), "trusted root.json");
    MOTA_TRY_CTX(verify_root_self(s.root, "root.json"), "trusted root.json");
  }
  const Root original_root = s.root.signed_;

  // 5.3: root rotation, one version at a time, until the server has no next version.
  for (std::uint64_t i = 0; i < config_.max_root_rotations; ++i) {
    std::uint64_t next = s.root.signed_.version + 1;
    std::string file = std::to_string(next) + ".root.json";
    bool missing = false;
    auto bytes = MOTA_TRY(fetch(http_, config_.metadata_base_url, file, config_.max_root_bytes,
                                fetch_timeout(std::nullopt), &missing));
    if (missing) break;
    auto new_root = MOTA_TRY_CTX(parse_root(bytes), file);
    // Signed by a threshold of the keys the trusted root names for "root" ...
    auto old_role = MOTA_TRY_CTX(top_role(s.root.signed_, "root"), file);
    MOTA_TRY_CTX(verify_threshold(new_root.envelope, new_root.signatures, s.root.signed_.keys,
                                  old_role, "root (by the trusted root's keys)"),
                 file);
    // ... is exactly the next version ...
    if (new_root.signed_.version != next) {
      Errc code = new_root.signed_.version < next ? Errc::rollback : Errc::verification;
      return fail(code, file + ": version " + std::to_string(new_root.signed_.version) +
                            " is not the expected version " + std::to_string(next) +
                            (code == Errc::rollback ? " (replayed or rolled-back metadata)" : ""));
    }
    // ... and by a threshold of its own keys.
    MOTA_TRY_CTX(verify_threshold(new_root.envelope, new_root.signatures, new_root.signed_.keys,
                                  MOTA_TRY_CTX(top_role(new_root.signed_, "root"), file),
                                  "root (by its own keys)"),
                 file);
    MOTA_TRY(persist(dir, "root.json", bytes));
    s.root = std::move(new_root);
  }
  // 5.3.10: the final root must be current.
  MOTA_TRY(check_not_expired(s.root.signed_, "root.json", s.now));
  // 5.3.11: fast-forward attack recovery. After a rotation of timestamp or snapshot keys the
  // old files may carry versions an attacker inflated; forget them.
  if (role_changed(original_root, s.root.signed_, "timestamp") ||
      role_changed(original_root, s.root.signed_, "snapshot")) {
    MOTA_TRY(fs::remove_all(dir / "timestamp.json"));
    MOTA_TRY(fs::remove_all(dir / "snapshot.json"));
  }

  MOTA_TRY(update_timestamp());
  MOTA_TRY(update_snapshot());
  MOTA_TRY(load_targets("targets", nullptr));
  s.refreshed = true;
  return {};
}

Status Client::update_timestamp() {
  State& s = *state_;
  const auto& dir = config_.metadata_dir;
  auto role = MOTA_TRY(top_role(s.root.signed_, "timestamp"));

  // Local timestamp: kept (even if expired) for rollback protection when it verifies.
  if (auto bytes = fs::read_file(dir / "timestamp.json", config_.max_timestamp_bytes)) {
    if (auto local = parse_timestamp(*bytes)) {
      if (verify_threshold(local->envelope, local->signatures, s.root.signed_.keys, role,
                           "timestamp")) {
        s.timestamp = std::move(*local);
      }
    }
  }

  const std::string file = "timestamp.json";
  auto bytes = MOTA_TRY(fetch(http_, config_.metadata_base_url, file, config_.max_timestamp_bytes,
                              fetch_timeout(std::nullopt)));
  auto ts = MOTA_TRY_CTX(parse_timestamp(bytes), file);
  MOTA_TRY_CTX(verify_threshold(ts.envelope, ts.signatures, s.root.signed_.keys, role, "timestamp"),
               file);
  if (s.timestamp) {
    const Timestamp& trusted = s.timestamp->signed_;
    if (ts.signed_.version < trusted.version) {
      return fail(Errc::rollback, file + ": version " + std::to_string(ts.signed_.version) +
                                      " is lower than trusted version " +
                                      std::to_string(trusted.version) +
                                      " (replayed or rolled-back metadata)");
    }
    if (ts.signed_.version == trusted.version) {
      // Same version: keep the trusted one (python-tuf); it must still be current.
      return check_not_expired(trusted, file, s.now);
    }
    if (ts.signed_.snapshot.version < trusted.snapshot.version) {
      return fail(Errc::rollback, file + ": snapshot version " +
                                      std::to_string(ts.signed_.snapshot.version) +
                                      " is lower than trusted snapshot version " +
                                      std::to_string(trusted.snapshot.version) +
                                      " (replayed or rolled-back metadata)");
    }
  }
  MOTA_TRY(check_not_expired(ts.signed_, file, s.now));
  MOTA_TRY(persist(dir, file, bytes));
  s.timestamp = std::move(ts);
  return {};
}

Status Client::update_snapshot() {
  State& s = *state_;
  const auto& dir = config_.metadata_dir;
  auto role = MOTA_TRY(top_role(s.root.signed_, "snapshot"));
  const MetaFile& meta = s.timestamp->signed_.snapshot;

  // Local snapshot: verified once already, so its hashes are not checked against the (possibly
  // newer) timestamp. If it is current and the version the timestamp names, nothing is fetched.
  if (auto bytes = fs::read_file(dir / "snapshot.json", config_.max_snapshot_bytes)) {
    if (auto local = parse_snapshot(*bytes)) {
      if (verify_threshold(local->envelope, local->signatures, s.root.signed_.keys, role,
                           "snapshot")) {
        s.snapshot = std::move(*local);
        if (s.snapshot->signed_.version == meta.version &&
            check_not_expired(s.snapshot->signed_, "snapshot.json", s.now)) {
          return {};
        }
      }
    }
  }

  const std::string file = s.root.signed_.consistent_snapshot
                               ? std::to_string(meta.version) + ".snapshot.json"
                               : std::string("snapshot.json");
  auto bytes =
      MOTA_TRY(fetch(http_, config_.metadata_base_url, file,
                     meta.length.value_or(config_.max_snapshot_bytes), fetch_timeout(meta.length)));
  MOTA_TRY(verify_length_and_hashes(bytes, meta.length, meta.hashes, file));
  auto snap = MOTA_TRY_CTX(parse_snapshot(bytes), file);
  MOTA_TRY_CTX(
      verify_threshold(snap.envelope, snap.signatures, s.root.signed_.keys, role, "snapshot"),
      file);
  if (s.snapshot) {
    for (const auto& [name, old] : s.snapshot->signed_.meta) {
      auto it = snap.signed_.meta.find(name);
      if (it == snap.signed_.meta.end()) {
        return fail(Errc::rollback,
                    file + ": no longer lists " + name + ", which the trusted snapshot lists");
      }
      if (it->second.version < old.version) {
        return fail(Errc::rollback,
                    file + ": " + name + " version " + std::to_string(it->second.version) +
                        " is lower than trusted version " + std::to_string(old.version) +
                        " (replayed or rolled-back metadata)");
      }
    }
  }
  MOTA_TRY(check_not_expired(snap.signed_, file, s.now));
  MOTA_TRY(version_matches(snap.signed_.version, meta.version, file, "timestamp.json"));
  MOTA_TRY(persist(dir, "snapshot.json", bytes));
  s.snapshot = std::move(snap);
  return {};
}

Status Client::load_targets(const std::string& role_name, const DelegationRef* delegation) {
  State& s = *state_;
  const auto& dir = config_.metadata_dir;

  const std::map<std::string, Key>* keys = &s.root.signed_.keys;
  RoleKeys role;
  if (delegation) {
    keys = delegation->keys;
    role.keyids = delegation->role->keyids;
    role.threshold = delegation->role->threshold;
  } else {
    role = MOTA_TRY(top_role(s.root.signed_, "targets"));
  }

  const std::string encoded = http::percent_encode(role_name);
  const std::pair<std::string, std::string> via{delegation ? delegation->delegator : "", role_name};
  if (auto cached = s.targets.find(role_name); cached != s.targets.end()) {
    // Loaded earlier in this search or an earlier one, possibly through another delegator: its
    // authority comes from the delegation in use now, so it must meet THIS one's keys and
    // threshold (spec 5.6.7.2.4) before any target is taken from it.
    if (!delegation || s.verified_delegations.contains(via)) return {};
    MOTA_TRY_CTX(verify_threshold(cached->second.envelope, cached->second.signatures, *keys, role,
                                  role_name),
                 encoded + ".json (loaded through another delegator)");
    s.verified_delegations.insert(via);
    return {};
  }
  const std::string meta_name = role_name + ".json";
  auto meta_it = s.snapshot->signed_.meta.find(meta_name);
  if (meta_it == s.snapshot->signed_.meta.end()) {
    return fail(Errc::verification, "snapshot.json does not list " + meta_name);
  }
  const MetaFile& meta = meta_it->second;

  auto check = [&](std::string_view bytes, const std::string& file) -> Result<Signed<Targets>> {
    MOTA_TRY(verify_length_and_hashes(bytes, meta.length, meta.hashes, file));
    auto t = MOTA_TRY_CTX(parse_targets(bytes), file);
    MOTA_TRY_CTX(verify_threshold(t.envelope, t.signatures, *keys, role, role_name), file);
    MOTA_TRY(version_matches(t.signed_.version, meta.version, file, "snapshot.json"));
    MOTA_TRY(check_not_expired(t.signed_, file, s.now));
    MOTA_TRY(check_delegation_names(t.signed_, file));
    return t;
  };

  // Local copy: used as is when it is exactly what the snapshot names.
  if (auto bytes = fs::read_file(dir / (encoded + ".json"), config_.max_targets_bytes)) {
    if (auto local = check(*bytes, encoded + ".json")) {
      s.targets.emplace(role_name, std::move(*local));
      s.verified_delegations.insert(via);
      return {};
    }
  }

  const std::string file = s.root.signed_.consistent_snapshot
                               ? std::to_string(meta.version) + "." + encoded + ".json"
                               : encoded + ".json";
  auto bytes =
      MOTA_TRY(fetch(http_, config_.metadata_base_url, file,
                     meta.length.value_or(config_.max_targets_bytes), fetch_timeout(meta.length)));
  auto t = MOTA_TRY(check(bytes, file));
  MOTA_TRY(persist(dir, encoded + ".json", bytes));
  s.targets.emplace(role_name, std::move(t));
  s.verified_delegations.insert(via);
  return {};
}

Result<TargetFile> Client::get_target(const std::string& target_path) {
  if (!state_->refreshed) MOTA_TRY(refresh());
  State& s = *state_;

  // 5.6.7: preorder depth-first walk of the delegation graph (python-tuf's
  // _preorder_depth_first_walk). Each entry is (role, delegator); "targets" has none.
  struct Visit {
    std::string role;
    std::string delegator;
  };
  std::vector<Visit> to_visit{{"targets", ""}};
  std::set<std::pair<std::string, std::string>> visited;
  unsigned budget = config_.max_delegations;

  while (budget > 0 && !to_visit.empty()) {
    Visit v = std::move(to_visit.back());
    to_visit.pop_back();
    if (visited.count({v.role, v.delegator})) continue;

    if (v.delegator.empty()) {
      MOTA_TRY(load_targets(v.role, nullptr));
    } else {
      // The delegator is loaded (it was visited before its children were queued).
      const Targets& parent = s.targets.at(v.delegator).signed_;
      const DelegatedRole* dr = nullptr;
      for (const auto& r : parent.delegations->roles) {
        if (r.name == v.role) {
          dr = &r;
          break;
        }
      }
      if (!dr) return fail(Errc::internal, "delegation to " + v.role + " disappeared");
      DelegationRef ref{v.delegator, &parent.delegations->keys, dr};
      MOTA_TRY_CTX(load_targets(v.role, &ref),
                   "delegated role '" + v.role + "' (delegated by '" + v.delegator + "')");
    }

    const Targets& t = s.targets.at(v.role).signed_;
    if (auto it = t.targets.find(target_path); it != t.targets.end()) return it->second;
    visited.insert({v.role, v.delegator});
    --budget;

    if (t.delegations) {
      std::vector<Visit> children;
      for (const auto& child : t.delegations->roles) {
        if (!child.matches(target_path)) continue;
        children.push_back({child.name, v.role});
        if (child.terminating) {
          to_visit.clear();  // no backtracking past a terminating role
          break;
        }
      }
      to_visit.insert(to_visit.end(), children.rbegin(), children.rend());
    }
  }
  return fail(Errc::not_found, "target '" + target_path + "' is not listed by any trusted role" +
                                   (budget == 0 && !to_visit.empty()
                                        ? " (stopped after visiting " +
                                              std::to_string(config_.max_delegations) + " roles)"
                                        : ""));
}

std::string Client::target_url(const std::string& target_base_url, const std::string& target_path,
                               const TargetFile& info) const {
  std::string rel = target_path;
  bool consistent = state_->refreshed && state_->root.signed_.consistent_snapshot;
  if (consistent && !info.hashes.empty()) {
    // Any listed hash names the file; prefer sha256 (what repositories commonly list first).
    auto it = info.hashes.find("sha256");
    const std::string& hash = it != info.hashes.end() ? it->second : info.hashes.begin()->second;
    auto slash = target_path.rfind('/');
    if (slash == std::string::npos) {
      rel = hash + "." + target_path;
    } else {
      rel = target_path.substr(0, slash + 1) + hash + "." + target_path.substr(slash + 1);
    }
  }
  return join_url(target_base_url, rel);
}

namespace {

struct TargetHashers {
  std::vector<std::pair<std::string, crypto::Hasher>> hashers;  // (algorithm name, hasher)

  static Result<TargetHashers> make(const TargetFile& info, const std::string& what) {
    TargetHashers h;
    for (const auto& [name, value] : info.hashes) {
      auto algo = crypto::hash_from_name(name);
      if (!algo) continue;
      h.hashers.emplace_back(name, crypto::Hasher(*algo));
    }
    if (h.hashers.empty()) {
      return fail(Errc::unsupported,
                  what + ": none of the listed hash algorithms is supported, cannot verify it");
    }
    return h;
  }
  void update(std::span<const std::byte> data) {
    for (auto& [name, hasher] : hashers) hasher.update(data);
  }
  Status check(const TargetFile& info, const std::string& what) {
    for (auto& [name, hasher] : hashers) {
      std::string got = hasher.hex_digest();
      const std::string& want = info.hashes.at(name);
      if (!crypto::digest_equal(got, want)) {
        return fail(Errc::verification,
                    what + ": hash mismatch (" + name + " " + got + ", expected " + want + ")");
      }
    }
    return {};
  }
};

// Whether `path` already holds exactly the target (length and every supported hash).
bool have_target(const std::filesystem::path& path, const TargetFile& info) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec || size != info.length) return false;
  auto hashers = TargetHashers::make(info, path.string());
  if (!hashers) return false;
  auto file = fs::File::open_read(path);
  if (!file) return false;
  std::vector<std::byte> buf(64 * 1024);
  std::uint64_t total = 0;
  for (;;) {
    auto n = file->read_some(buf);
    if (!n) return false;
    if (*n == 0) break;
    total += *n;
    hashers->update(std::span(buf.data(), *n));
  }
  return total == info.length && hashers->check(info, path.string()).has_value();
}

}  // namespace

Status Client::download_target(const std::string& target_base_url, const std::string& target_path,
                               const TargetFile& info, const std::filesystem::path& dest_file) {
  const std::string what = "target '" + target_path + "'";
  if (have_target(dest_file, info)) return {};

  auto hashers = MOTA_TRY(TargetHashers::make(info, what));
  auto out = MOTA_TRY_CTX(fs::AtomicFile::create(dest_file), what);
  http::GetRequest req;
  req.url = target_url(target_base_url, target_path, info);
  req.max_bytes = info.length;  // never accept more than the trusted length
  req.timeout = fetch_timeout(info.length);
  std::uint64_t received = 0;
  auto res = http_.get(req, [&](std::span<const std::byte> chunk) -> Status {
    if (chunk.size() > info.length - received) {
      return fail(Errc::too_large,
                  "more than the " + std::to_string(info.length) + " bytes the metadata lists");
    }
    received += chunk.size();
    hashers.update(chunk);
    return out.write_all(chunk);
  });
  if (!res) {
    if (res.error().code() == Errc::too_large) {
      return fail(Errc::too_large, what + ": length mismatch: the server sent more than the " +
                                       std::to_string(info.length) + " bytes the metadata lists");
    }
    return fail(std::move(res).error().context("download " + what));
  }
  if (received != info.length) {
    return fail(Errc::verification, what + ": length mismatch: received " +
                                        std::to_string(received) + " bytes, the metadata lists " +
                                        std::to_string(info.length));
  }
  MOTA_TRY(hashers.check(info, what));
  return out.commit().context("store " + what);
}

const Root* Client::root() const {
  return state_->refreshed ? &state_->root.signed_ : nullptr;
}
const Timestamp* Client::timestamp() const {
  return state_->refreshed ? &state_->timestamp->signed_ : nullptr;
}
const Snapshot* Client::snapshot() const {
  return state_->refreshed ? &state_->snapshot->signed_ : nullptr;
}
const Targets* Client::targets() const {
  if (!state_->refreshed) return nullptr;
  return &state_->targets.at("targets").signed_;
}

}  // namespace mota::tuf
