#include "manager/release/deltas.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "common/log.hpp"
#include "common/semver.hpp"
#include "delta/package/package_delta.hpp"
#include "storage/package.hpp"

namespace mota::manager::detail {
namespace {

double ratio_of(std::uint64_t part, std::uint64_t whole) {
  return whole ? double(part) / double(whole) : 0.0;
}

std::string percent(double r) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100.0 * r);
  return b;
}

// Builds, checks and places one delta from `base` to `to` (whose unpacked tree is `to_dir`);
// adds its target to `targets`. `outcome` gets the size/ratio as soon as they are known.
Status build_delta(const Paths& p, const Release& base, const tuf::TargetFile& base_info,
                   const Release& to, const stdfs::path& to_dir, const stdfs::path& scratch,
                   double max_ratio, tuf::Targets& targets, Cleanup& cleanup,
                   DeltaOutcome& outcome) {
  const stdfs::path base_file = p.target_file(base.target_path, base.sha256);
  MOTA_TRY_CTX(check_target_file(base_file, base.target_path, base_info),
               "old package in the repository is damaged");
  const stdfs::path from_dir = scratch / ("from-" + base.version);
  auto unpacked = storage::unpack_file(base_file, from_dir);
  if (!unpacked) {
    return fail(
        std::move(unpacked).error().context("old package " + base_file.string() + " is damaged"));
  }
  struct RemoveTree {
    stdfs::path p;
    ~RemoveTree() { (void)fs::remove_all(p); }
  } remove_from{from_dir};
  if (unpacked->tree_digest != base.tree_digest) {
    return fail(Errc::verification, "old package " + base_file.string() + " has tree digest " +
                                        unpacked->tree_digest + ", targets.json says " +
                                        base.tree_digest);
  }
  const stdfs::path out = scratch / (base.version + ".mdelta");
  struct RemoveFile {
    stdfs::path p;
    ~RemoveFile() {
      std::error_code ec;
      stdfs::remove(p, ec);
    }
  } remove_out{out};
  delta::PackageDeltaInfo info =
      MOTA_TRY_CTX(delta::diff_package_dirs(from_dir, to_dir, out), "diff");
  if (info.from.tree_digest != base.tree_digest || info.to.tree_digest != to.tree_digest) {
    return fail(Errc::internal, "delta names trees " + info.from.tree_digest + " -> " +
                                    info.to.tree_digest + ", the releases are " + base.tree_digest +
                                    " -> " + to.tree_digest);
  }
  std::error_code ec;
  outcome.size = stdfs::file_size(out, ec);
  if (ec) return fail(Errc::io, "stat " + out.string() + ": " + ec.message());
  outcome.ratio = ratio_of(outcome.size, to.length);
  if (double(outcome.size) > max_ratio * double(to.length)) {
    outcome.reason = "not smaller enough: " + std::to_string(outcome.size) + " bytes is " +
                     percent(outcome.ratio) + " of the " + std::to_string(to.length) +
                     "-byte package (delta_max_ratio " + percent(max_ratio) + ")";
    return {};
  }
  const std::string sha = MOTA_TRY(crypto::file_sha256_hex(out.string()));
  DeltaTarget d;
  d.name = to.name;
  d.from = base.version;
  d.to = to.version;
  d.target_path = delta_target_path(to.name, base.version, to.version);
  d.length = outcome.size;
  d.sha256 = sha;
  d.from_tree_digest = base.tree_digest;
  d.tree_digest = to.tree_digest;
  d.full_target = to.target_path;
  d.full_length = to.length;
  d.full_sha256 = to.sha256;
  const stdfs::path final_path = p.target_file(d.target_path, sha);
  MOTA_TRY(make_dirs_tracked(final_path.parent_path(), cleanup));
  if (::rename(out.c_str(), final_path.c_str()) != 0) {
    return fail(errno_error("rename", out.string() + " -> " + final_path.string(), errno));
  }
  cleanup.add(final_path);
  MOTA_TRY(fs::fsync_dir(final_path.parent_path()));
  tuf::TargetFile tf;
  tf.length = d.length;
  tf.hashes["sha256"] = sha;
  tf.custom = Json{{"kind", "delta"},
                   {"name", d.name},
                   {"from", d.from},
                   {"to", d.to},
                   {"from_tree_digest", d.from_tree_digest},
                   {"tree_digest", d.tree_digest},
                   {"full_target", d.full_target},
                   {"full_length", d.full_length},
                   {"full_sha256", d.full_sha256}};
  targets.targets[d.target_path] = tf;
  outcome.published = true;
  outcome.target = std::move(d);
  return {};
}

}  // namespace

std::vector<DeltaOutcome> build_deltas(const Paths& p, const tuf::Targets& current,
                                       const Release& to, const stdfs::path& to_package, unsigned n,
                                       double max_ratio, const stdfs::path& scratch,
                                       tuf::Targets& targets, Cleanup& cleanup) {
  std::vector<DeltaOutcome> out;
  const auto to_ver = SemVer::parse(to.version);
  std::vector<std::pair<Release, const tuf::TargetFile*>> bases;
  for (const auto& [path, t] : current.targets) {
    if (!is_release(t)) continue;
    Release r = release_from(path, t);
    if (r.name != to.name) continue;
    auto v = SemVer::parse(r.version);
    // Only lower versions: a hotfix 1.0.1 after 2.0.0 is reached from 1.0.x, never from 2.0.0.
    if (!v || !to_ver || !(*v < *to_ver)) continue;
    bases.emplace_back(std::move(r), &t);
  }
  std::sort(bases.begin(), bases.end(), [](const auto& a, const auto& b) {
    return semver_less(b.first.version, a.first.version);
  });
  if (bases.size() > n) bases.resize(n);
  if (bases.empty()) return out;

  const stdfs::path to_dir = scratch / "to";
  auto unpacked = storage::unpack_file(to_package, to_dir);
  for (const auto& [base, info] : bases) {
    DeltaOutcome o;
    o.from = base.version;
    Status s =
        unpacked ? build_delta(p, base, *info, to, to_dir, scratch, max_ratio, targets, cleanup, o)
                 : Status(fail(unpacked.error().context("unpack the new package")));
    if (!s) o.reason = s.error().message();
    const log::Level level = o.published || s ? log::Level::info : log::Level::warn;
    log::write(level,
               o.published ? "published delta"
                           : (s ? "skipped delta (too large)" : "skipped delta (failed)"),
               {{"MODEL", to.name},
                {"FROM", o.from},
                {"TO", to.version},
                {"SIZE", std::to_string(o.size)},
                {"FULL_SIZE", std::to_string(to.length)},
                {"RATIO", percent(o.ratio)},
                {"REASON", o.reason}});
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace mota::manager::detail
