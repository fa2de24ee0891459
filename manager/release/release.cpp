#include "manager/release/release.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/log.hpp"
#include "common/semver.hpp"
#include "manager/release/deltas.hpp"
#include "manager/release/staging.hpp"
#include "manager/repo/store.hpp"
#include "manifest/model_manifest.hpp"

namespace mota::manager {

using namespace detail;

Result<Release> Repository::add_release(const stdfs::path& model_dir, const std::string& version,
                                        const std::string& name,
                                        const storage::Progress& progress) {
  ReleaseOptions o;
  o.name = name;
  o.progress = progress;
  auto r = MOTA_TRY(add_release(model_dir, version, o));
  return std::move(r.release);
}

Result<ReleaseResult> Repository::add_release(const stdfs::path& model_dir,
                                              const std::string& version,
                                              const ReleaseOptions& options) {
  const Paths p(dir_);
  if (!SemVer::parse(version)) {
    return fail(Errc::invalid_argument, "version '" + version + "' is not a semantic version");
  }
  const auto mj = model_dir / kManifestName;
  const std::string manifest_text = MOTA_TRY(fs::read_file(mj, kMaxManifestBytes));
  auto source = ModelManifest::parse(manifest_text, /*require_files=*/false);
  if (!source) return fail(std::move(source).error().context(mj.string()));
  std::string name = options.name.empty() ? source->name : options.name;
  if (!valid_model_name(name)) {
    return fail(Errc::invalid_argument,
                "model name '" + name + "' is not valid ([a-z0-9][a-z0-9._-]{0,63})");
  }

  auto lock = MOTA_TRY(DirLock::acquire(p.lock, true));
  State st = MOTA_TRY(load_state(p));
  const TimePoint now = now_();
  MOTA_TRY(check_root_usable(st, now));
  const std::string tp = release_target_path(name, version);
  if (st.targets.signed_.targets.count(tp)) {
    return fail(Errc::already_exists,
                "release " + name + " " + version + " is already published (" + tp + ")");
  }
  // Keys before packing: a wrong key should fail in a second, not after packing gigabytes.
  for (const char* role : {"targets", "snapshot", "timestamp"}) {
    MOTA_TRY(load_key(p, role, st.root.signed_));
  }

  // Declared before the scratch directory so that on failure the scratch tree goes first.
  Cleanup cleanup;
  MOTA_TRY(fs::make_dirs(p.tmp, 0755));
  const ScratchDir scratch = MOTA_TRY(ScratchDir::create(
      p.tmp / ("." + name + "-" + version + ".work-" + std::to_string(::getpid()))));
  ReleaseResult result;
  MOTA_TRY(check_model(model_dir, *source, name, version, options.checks, scratch.path(),
                       result.checks));
  stdfs::path pack_source = model_dir;
  if (options.health) {
    pack_source = scratch.path() / "model";
    MOTA_TRY(stage_with_health(model_dir, pack_source, name, version, *options.health));
  }

  const stdfs::path staged = p.tmp / (name + "-" + version + ".mota");
  cleanup.add(staged);
  storage::PackOptions opts;
  opts.version = version;
  opts.name = name;
  opts.compression_level = settings_.zstd_level;
  opts.progress = options.progress;
  storage::PackResult packed =
      MOTA_TRY_CTX(storage::pack(pack_source, staged, opts), "pack " + model_dir.string());
  // Hash the bytes on disk, not what the packer meant to write.
  const std::string sha = MOTA_TRY(crypto::file_sha256_hex(staged.string()));
  std::error_code ec;
  const std::uint64_t length = stdfs::file_size(staged, ec);
  if (ec) return fail(Errc::io, "stat " + staged.string() + ": " + ec.message());
  if (!packed.package_sha256.empty() && !crypto::digest_equal(sha, packed.package_sha256)) {
    return fail(Errc::internal,
                "packed file " + staged.string() + " changed between writing and hashing");
  }

  const stdfs::path final_path = p.target_file(tp, sha);
  MOTA_TRY(make_dirs_tracked(final_path.parent_path(), cleanup));
  if (::rename(staged.c_str(), final_path.c_str()) != 0) {
    return fail(errno_error("rename", staged.string() + " -> " + final_path.string(), errno));
  }
  cleanup.add(final_path);
  MOTA_TRY(fs::fsync_dir(final_path.parent_path()));

  // What the package unpacks to (model.json and every file it lists): devices check their free
  // space against it before they download (agent/agent.hpp, "Space").
  std::uint64_t tree_size = packed.manifest.serialize().size();
  for (const auto& f : packed.manifest.files) tree_size += f.size;
  tuf::TargetFile tf;
  tf.length = length;
  tf.hashes["sha256"] = sha;
  // Requirements signed with the target, so that a device can refuse a release it cannot run
  // before downloading it (agent/requirements.hpp); model.json is only read after the download.
  const Requirements& req = packed.manifest.requirements;
  tf.custom = Json{{"name", name},
                   {"version", version},
                   {"kind", "full"},
                   {"tree_digest", packed.tree_digest},
                   {"framework", packed.manifest.framework},
                   {"package_size", length},
                   {"requirements", Json{{"min_ram_mb", req.min_ram_mb},
                                         {"arch", req.arch},
                                         {"accelerators", req.accelerators}}},
                   {"tree_size", tree_size}};
  tuf::Targets targets = st.targets.signed_;
  targets.targets[tp] = tf;

  result.release = release_from(tp, tf);
  const unsigned n = options.deltas.value_or(settings_.delta_versions);
  if (n > 0) {
    result.deltas = build_deltas(p, st.targets.signed_, result.release, final_path, n,
                                 settings_.delta_max_ratio, scratch.path(), targets, cleanup);
  }
  MOTA_TRY_CTX(publish(p, st, settings_, now, Publish{std::move(targets), false}, cleanup),
               "publish");
  log::debug("published release", {{"MODEL", name}, {"VERSION", version}});
  return result;
}

Result<std::vector<Release>> Repository::list_releases() const {
  const Paths p(dir_);
  auto lock = MOTA_TRY(DirLock::acquire(p.lock, false));
  const State st = MOTA_TRY(load_state(p));
  std::vector<Release> out;
  for (const auto& [path, t] : st.targets.signed_.targets) {
    if (is_release(t)) out.push_back(release_from(path, t));
  }
  std::sort(out.begin(), out.end(), [](const Release& a, const Release& b) {
    if (a.name != b.name) return a.name < b.name;
    return semver_less(a.version, b.version);
  });
  return out;
}

Result<std::vector<DeltaTarget>> Repository::list_deltas(const std::string& name) const {
  const Paths p(dir_);
  auto lock = MOTA_TRY(DirLock::acquire(p.lock, false));
  const State st = MOTA_TRY(load_state(p));
  std::vector<DeltaTarget> out;
  for (const auto& [path, t] : st.targets.signed_.targets) {
    if (!is_delta(t)) continue;
    DeltaTarget d = delta_from(path, t);
    if (!name.empty() && d.name != name) continue;
    out.push_back(std::move(d));
  }
  std::sort(out.begin(), out.end(), [](const DeltaTarget& a, const DeltaTarget& b) {
    if (a.name != b.name) return a.name < b.name;
    if (a.to != b.to) return semver_less(a.to, b.to);
    return semver_less(a.from, b.from);
  });
  return out;
}

}  // namespace mota::manager
