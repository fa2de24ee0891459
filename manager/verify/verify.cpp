#include "manager/verify/verify.hpp"

#include <optional>

#include "common/hex.hpp"
#include "common/semver.hpp"
#include "delta/package/package_delta.hpp"
#include "manager/repo/store.hpp"
#include "storage/package.hpp"

namespace mota::manager {

using namespace detail;

namespace {

class Verifier {
 public:
  Verifier(Paths p, TimePoint now, const Settings& s) : p_(std::move(p)), now_(now), s_(s) {}

  Result<VerifyReport> run() {
    MOTA_TRY(check_root_chain());
    MOTA_TRY(check_timestamp());
    MOTA_TRY(check_snapshot());
    MOTA_TRY(check_targets());
    MOTA_TRY(check_target_files());
    return std::move(report_);
  }

 private:
  // The refresh rule (Settings::refresh_window), so verify warns exactly about what the
  // refresher would renew now (and about the root, which it never renews).
  void expiry_warning(const tuf::Common& c, const std::string& role) {
    const RoleExpiry e = role_expiry(s_, role, c, now_);
    if (e.due) report_.warnings.push_back(describe_expiry(e, now_) + ": " + renew_hint(role));
  }

  Status check_meta(const std::string& name, const std::string& bytes, const tuf::MetaFile& m,
                    const std::string& listed_in) {
    if (m.length && *m.length != bytes.size()) {
      return fail(Errc::verification, name + ": length " + std::to_string(bytes.size()) +
                                          " differs from " + std::to_string(*m.length) +
                                          " listed in " + listed_in);
    }
    for (const auto& [algo, expected] : m.hashes) {
      std::string got;
      if (algo == "sha256")
        got = crypto::sha256_hex(bytes);
      else if (algo == "sha512")
        got = crypto::sha512_hex(bytes);
      else
        continue;
      if (!crypto::digest_equal(got, expected)) {
        return fail(Errc::verification,
                    name + ": " + algo + " differs from the hash listed in " + listed_in);
      }
    }
    return {};
  }

  Status check_root_chain() {
    const std::uint64_t latest = MOTA_TRY(latest_root_version(p_));
    std::optional<tuf::Signed<tuf::Root>> prev;
    std::string latest_bytes;
    for (std::uint64_t v = 1; v <= latest; ++v) {
      const std::string name = std::to_string(v) + ".root.json";
      std::string bytes = MOTA_TRY(fs::read_file(p_.versioned(v, "root"), kMaxMetadataBytes));
      auto r = MOTA_TRY_CTX(tuf::parse_root(bytes), name);
      if (r.signed_.version != v) {
        return fail(Errc::verification,
                    name + ": holds version " + std::to_string(r.signed_.version));
      }
      const auto& self_role = r.signed_.roles["root"];
      if (prev) {
        MOTA_TRY_CTX(tuf::verify_threshold(r.envelope, r.signatures, prev->signed_.keys,
                                           prev->signed_.roles["root"], "root"),
                     name + ": signatures by the previous root's keys");
      }
      MOTA_TRY_CTX(
          tuf::verify_threshold(r.envelope, r.signatures, r.signed_.keys, self_role, "root"),
          name + ": signatures by its own root keys");
      prev = std::move(r);
      latest_bytes = std::move(bytes);
    }
    root_ = std::move(*prev);
    for (const char* role : kRoles) {
      if (!root_.signed_.roles.count(role)) {
        return fail(Errc::verification,
                    std::to_string(latest) + ".root.json: no " + std::string(role) + " role");
      }
    }
    if (!root_.signed_.consistent_snapshot) {
      return fail(Errc::unsupported, std::to_string(latest) +
                                         ".root.json: consistent_snapshot is false (mota "
                                         "repositories always use consistent snapshots)");
    }
    auto copy = fs::read_file(p_.metadata / "root.json", kMaxMetadataBytes);
    if (!copy || *copy != latest_bytes) {
      return fail(Errc::verification,
                  "metadata/root.json is not a copy of " + std::to_string(latest) + ".root.json");
    }
    MOTA_TRY(tuf::check_expiry(root_.signed_, "root", now_));
    expiry_warning(root_.signed_, "root");
    report_.checked.push_back("root: versions 1.." + std::to_string(latest) +
                              " chain-signed to threshold, expires " +
                              format_time(root_.signed_.expires));
    return {};
  }

  Status check_role_sigs(const Json& env, const std::vector<tuf::Signature>& sigs,
                         const std::string& role, const std::string& name) {
    return tuf::verify_threshold(env, sigs, root_.signed_.keys, root_.signed_.roles[role], role)
        .context(name);
  }

  Status check_timestamp() {
    std::string bytes = MOTA_TRY(fs::read_file(p_.metadata / "timestamp.json", kMaxMetadataBytes));
    ts_ = MOTA_TRY_CTX(tuf::parse_timestamp(bytes), "timestamp.json");
    MOTA_TRY(check_role_sigs(ts_.envelope, ts_.signatures, "timestamp", "timestamp.json"));
    MOTA_TRY(tuf::check_expiry(ts_.signed_, "timestamp", now_));
    expiry_warning(ts_.signed_, "timestamp");
    report_.checked.push_back("timestamp: version " + std::to_string(ts_.signed_.version) +
                              " signed, expires " + format_time(ts_.signed_.expires));
    return {};
  }

  Status check_snapshot() {
    const std::uint64_t v = ts_.signed_.snapshot.version;
    const std::string name = std::to_string(v) + ".snapshot.json";
    std::string bytes = MOTA_TRY(fs::read_file(p_.versioned(v, "snapshot"), kMaxMetadataBytes));
    MOTA_TRY(check_meta(name, bytes, ts_.signed_.snapshot, "timestamp.json"));
    snap_ = MOTA_TRY_CTX(tuf::parse_snapshot(bytes), name);
    MOTA_TRY(check_role_sigs(snap_.envelope, snap_.signatures, "snapshot", name));
    if (snap_.signed_.version != v) {
      return fail(Errc::verification,
                  name + ": holds version " + std::to_string(snap_.signed_.version));
    }
    MOTA_TRY(tuf::check_expiry(snap_.signed_, "snapshot", now_));
    expiry_warning(snap_.signed_, "snapshot");
    report_.checked.push_back("snapshot: version " + std::to_string(v) +
                              " length and hash match timestamp, signed, expires " +
                              format_time(snap_.signed_.expires));
    return {};
  }

  Status check_targets() {
    auto it = snap_.signed_.meta.find("targets.json");
    if (it == snap_.signed_.meta.end()) {
      return fail(Errc::verification, "snapshot lists no targets.json");
    }
    const std::uint64_t v = it->second.version;
    const std::string name = std::to_string(v) + ".targets.json";
    std::string bytes = MOTA_TRY(fs::read_file(p_.versioned(v, "targets"), kMaxMetadataBytes));
    MOTA_TRY(check_meta(name, bytes, it->second, "snapshot"));
    targets_ = MOTA_TRY_CTX(tuf::parse_targets(bytes), name);
    MOTA_TRY(check_role_sigs(targets_.envelope, targets_.signatures, "targets", name));
    if (targets_.signed_.version != v) {
      return fail(Errc::verification,
                  name + ": holds version " + std::to_string(targets_.signed_.version));
    }
    MOTA_TRY(tuf::check_expiry(targets_.signed_, "targets", now_));
    expiry_warning(targets_.signed_, "targets");
    if (targets_.signed_.delegations && !targets_.signed_.delegations->roles.empty()) {
      return fail(Errc::unsupported, name + ": delegations are not checked by mota verify");
    }
    report_.checked.push_back("targets: version " + std::to_string(v) +
                              " length and hash match snapshot, signed, expires " +
                              format_time(targets_.signed_.expires) + ", " +
                              std::to_string(targets_.signed_.targets.size()) + " targets");
    return {};
  }

  Status check_target_files() {
    const auto& all = targets_.signed_.targets;
    std::size_t releases = 0, channels = 0, deltas = 0;
    for (const auto& [path, t] : all) {
      auto h = t.hashes.find("sha256");
      if (h == t.hashes.end()) {
        return fail(Errc::verification, "target " + path + " has no sha256 hash");
      }
      const stdfs::path file = p_.target_file(path, h->second);
      MOTA_TRY(check_target_file(file, path, t));
      if (is_release(t)) {
        const Release r = release_from(path, t);
        if (path != release_target_path(r.name, r.version)) {
          return fail(Errc::verification, "target " + path + ": custom name/version " + r.name +
                                              " " + r.version + " do not match the path");
        }
        auto m = storage::read_manifest(file);
        if (!m) return fail(std::move(m).error().context("target " + path + ": model.json"));
        if (m->name != r.name || m->version != r.version) {
          return fail(Errc::verification, "target " + path + ": package model.json says " +
                                              m->name + " " + m->version + ", targets.json says " +
                                              r.name + " " + r.version);
        }
        ++releases;
      } else if (path.rfind("channels/", 0) == 0) {
        Channel c = MOTA_TRY(read_channel(p_, path, t));
        if (path != channel_target_path(c.channel, c.model)) {
          return fail(Errc::verification, "target " + path + ": file is for channel " + c.channel +
                                              " model " + c.model);
        }
        for (const std::string& v : {c.version, c.rollout.fallback_version,
                                     c.targeted ? c.targeted->version : std::string()}) {
          if (!v.empty() && !all.count(release_target_path(c.model, v))) {
            return fail(Errc::verification, "channel " + path + ": version " + v + " of " +
                                                c.model + " is not released");
          }
        }
        ++channels;
      } else if (is_delta(t) || path.rfind("deltas/", 0) == 0) {
        MOTA_TRY(check_delta(path, t, file));
        ++deltas;
      }
    }
    report_.checked.push_back("target files: " + std::to_string(all.size()) +
                              " present with matching length and sha256 (" +
                              std::to_string(releases) + " packages with matching model.json, " +
                              std::to_string(channels) + " channels, " + std::to_string(deltas) +
                              " deltas matching their releases)");
    return {};
  }

  // A delta target: custom data well-formed and equal to the releases it connects, and the
  // .mdelta's own header naming the same versions and trees (what the agent checks first).
  Status check_delta(const std::string& path, const tuf::TargetFile& t, const stdfs::path& file) {
    const std::string what = "delta target " + path;
    if (!is_delta(t)) {
      return fail(Errc::verification, what + ": custom kind is not \"delta\"");
    }
    const Json& c = t.custom;
    for (const char* k :
         {"name", "from", "to", "from_tree_digest", "tree_digest", "full_target", "full_sha256"}) {
      auto it = c.find(k);
      if (it == c.end() || !it->is_string() || it->get<std::string>().empty()) {
        return fail(Errc::verification, what + ": custom \"" + k + "\" is missing or not a string");
      }
    }
    if (auto it = c.find("full_length"); it == c.end() || !it->is_number_unsigned()) {
      return fail(Errc::verification,
                  what + ": custom \"full_length\" is missing or not an unsigned integer");
    }
    const DeltaTarget d = delta_from(path, t);
    for (const auto& [k, v] :
         {std::pair<const char*, const std::string*>{"from_tree_digest", &d.from_tree_digest},
          {"tree_digest", &d.tree_digest},
          {"full_sha256", &d.full_sha256}}) {
      if (v->size() != 64 || !from_hex(*v)) {
        return fail(Errc::verification, what + ": custom \"" + k + "\" is not 64 hex digits");
      }
    }
    const auto from_v = SemVer::parse(d.from);
    const auto to_v = SemVer::parse(d.to);
    if (!valid_model_name(d.name) || !from_v || !to_v) {
      return fail(Errc::verification, what + ": custom name/from/to (" + d.name + " " + d.from +
                                          " -> " + d.to + ") are not a model name and versions");
    }
    if (path != delta_target_path(d.name, d.from, d.to)) {
      return fail(Errc::verification, what + ": custom says " + d.name + " " + d.from + " -> " +
                                          d.to + ", which is not this path");
    }
    if (!(*from_v < *to_v)) {
      return fail(Errc::verification, what + ": from " + d.from + " is not lower than to " + d.to);
    }
    const auto& all = targets_.signed_.targets;
    auto release = [&](const std::string& v) -> Result<Release> {
      const std::string rp = release_target_path(d.name, v);
      auto it = all.find(rp);
      if (it == all.end() || !is_release(it->second)) {
        return fail(Errc::verification,
                    what + ": version " + v + " of " + d.name + " is not released");
      }
      return release_from(rp, it->second);
    };
    const Release from = MOTA_TRY(release(d.from));
    const Release to = MOTA_TRY(release(d.to));
    auto mismatch = [&](const std::string& field, const std::string& got, const std::string& want,
                        const std::string& whose) {
      return fail(Errc::verification,
                  what + ": custom " + field + " " + got + " differs from " + whose + "'s " + want);
    };
    if (d.from_tree_digest != from.tree_digest) {
      return mismatch("from_tree_digest", d.from_tree_digest, from.tree_digest, d.from);
    }
    if (d.tree_digest != to.tree_digest) {
      return mismatch("tree_digest", d.tree_digest, to.tree_digest, d.to);
    }
    if (d.full_target != to.target_path) {
      return mismatch("full_target", d.full_target, to.target_path, d.to);
    }
    if (d.full_length != to.length) {
      return mismatch("full_length", std::to_string(d.full_length), std::to_string(to.length),
                      d.to);
    }
    if (!crypto::digest_equal(d.full_sha256, to.sha256)) {
      return mismatch("full_sha256", d.full_sha256, to.sha256, d.to);
    }
    auto reader = MOTA_TRY_CTX(delta::file_reader(file), what);
    auto header = delta::read_package_header(reader);
    if (!header) return fail(std::move(header).error().context(what + ": .mdelta header"));
    const auto side = [](const delta::PackageSide& s) {
      return s.name + " " + s.version + " (tree " + s.tree_digest + ")";
    };
    if (header->from.name != d.name || header->to.name != d.name ||
        header->from.version != d.from || header->to.version != d.to ||
        header->from.tree_digest != d.from_tree_digest || header->to.tree_digest != d.tree_digest) {
      return fail(Errc::verification, what + ": the .mdelta is from " + side(header->from) +
                                          " to " + side(header->to) + ", targets.json says " +
                                          d.name + " " + d.from + " (tree " + d.from_tree_digest +
                                          ") to " + d.to + " (tree " + d.tree_digest + ")");
    }
    return {};
  }

  Paths p_;
  TimePoint now_;
  const Settings& s_;
  VerifyReport report_;
  tuf::Signed<tuf::Root> root_;
  tuf::Signed<tuf::Timestamp> ts_;
  tuf::Signed<tuf::Snapshot> snap_;
  tuf::Signed<tuf::Targets> targets_;
};

}  // namespace

Result<VerifyReport> Repository::verify(const stdfs::path& dir, NowFn now) {
  Paths p(dir);
  Settings settings;
  std::optional<DirLock> lock;
  std::error_code ec;
  if (stdfs::exists(p.settings, ec)) {
    const std::string text = MOTA_TRY(fs::read_file(p.settings, 1u << 20));
    settings = MOTA_TRY_CTX(Settings::from_toml(text), dir.string());
    if (stdfs::exists(p.lock, ec)) lock = MOTA_TRY(DirLock::acquire(p.lock, false));
  } else if (stdfs::exists(dir / "metadata" / "timestamp.json", ec)) {
    // A served tree (a mirror or a copy of DIR/repo) without the publishing side.
    p = Paths(dir.parent_path());
    p.repo = dir;
    p.metadata = dir / "metadata";
    p.targets = dir / "targets";
  } else {
    return fail(Errc::not_found, dir.string() +
                                     " is not a mota repository (no mota.toml, no "
                                     "metadata/timestamp.json)");
  }
  return Verifier(p, now(), settings).run();
}

}  // namespace mota::manager
