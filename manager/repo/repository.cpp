#include "manager/repo/repository.hpp"

#include <sys/stat.h>

#include "manager/repo/store.hpp"

namespace mota::manager {

// The store's primitives (manager/repo/store.hpp) are this unit's own.
using namespace detail;

Repository::Repository(stdfs::path dir, Settings settings, NowFn now)
    : dir_(std::move(dir)), settings_(std::move(settings)), now_(std::move(now)) {}
Repository::Repository(Repository&&) noexcept = default;
Repository& Repository::operator=(Repository&&) noexcept = default;
Repository::~Repository() = default;

Result<Repository> Repository::init(const stdfs::path& dir, const Settings& settings, NowFn now) {
  const Paths p(dir);
  std::error_code ec;
  const bool existed = stdfs::exists(dir, ec);
  if (existed) {
    if (stdfs::exists(p.settings, ec)) {
      return fail(Errc::already_exists, dir.string() + " is already a mota repository");
    }
    if (!stdfs::is_directory(dir, ec)) {
      return fail(Errc::already_exists, dir.string() + " exists and is not a directory");
    }
    if (!stdfs::is_empty(dir, ec)) {
      return fail(Errc::already_exists, dir.string() + " exists and is not empty");
    }
  }
  if (settings.zstd_level < 1 || settings.zstd_level > 19) {
    return fail(Errc::invalid_argument,
                "zstd level " + std::to_string(settings.zstd_level) + " is not in 1..19");
  }
  // On failure, take back everything created so a retry starts from the same place.
  struct Undo {
    const Paths& p;
    bool existed;
    bool done = false;
    ~Undo() {
      if (done) return;
      std::error_code e;
      if (!existed) {
        stdfs::remove_all(p.dir, e);
        return;
      }
      for (const auto& entry : stdfs::directory_iterator(p.dir, e)) stdfs::remove_all(entry, e);
    }
  } undo{p, existed};

  MOTA_TRY(fs::make_dirs(dir, 0755));
  MOTA_TRY(fs::write_file_atomic(p.lock, "", 0644));
  auto lock = MOTA_TRY(DirLock::acquire(p.lock, true));
  MOTA_TRY(fs::make_dirs(p.keys, 0700));
  // make_dirs is subject to the umask and may have found the directory already; be explicit.
  if (::chmod(p.keys.c_str(), 0700) != 0) {
    return fail(errno_error("chmod", p.keys.string(), errno));
  }
  MOTA_TRY(fs::make_dirs(p.tmp, 0755));
  MOTA_TRY(fs::make_dirs(p.metadata, 0755));
  MOTA_TRY(fs::make_dirs(p.targets, 0755));

  const TimePoint t = now();
  tuf::Root root;
  root.type = "root";
  root.version = 1;
  root.expires = t + settings.expiry.root;
  root.consistent_snapshot = true;
  std::vector<crypto::PrivateKey> keys;
  for (const char* role : kRoles) {
    auto key = MOTA_TRY_CTX(crypto::PrivateKey::generate(settings.key_type),
                            std::string("generate ") + role + " key");
    const std::string pem = MOTA_TRY(key.to_pem());
    MOTA_TRY(fs::write_file_atomic(p.key(role), pem, 0600));
    const tuf::Key pub = tuf::Key::from_public(key.public_key());
    const std::string id = pub.key_id();
    root.keys[id] = pub;
    root.roles[role] = tuf::RoleKeys{{id}, 1};
    keys.push_back(std::move(key));
  }
  const std::string root_bytes = MOTA_TRY(sign(tuf::to_json(root), keys[0]));
  MOTA_TRY(fs::write_file_atomic(p.versioned(1, "root"), root_bytes, 0644));
  MOTA_TRY(fs::write_file_atomic(p.metadata / "root.json", root_bytes, 0644));

  tuf::Targets targets;
  targets.type = "targets";
  targets.version = 1;
  targets.expires = t + settings.expiry.targets;
  const std::string targets_bytes = MOTA_TRY(sign(tuf::to_json(targets), keys[1]));
  MOTA_TRY(fs::write_file_atomic(p.versioned(1, "targets"), targets_bytes, 0644));

  tuf::Snapshot snapshot;
  snapshot.type = "snapshot";
  snapshot.version = 1;
  snapshot.expires = t + settings.expiry.snapshot;
  snapshot.meta["targets.json"] = meta_for(1, targets_bytes);
  const std::string snapshot_bytes = MOTA_TRY(sign(tuf::to_json(snapshot), keys[2]));
  MOTA_TRY(fs::write_file_atomic(p.versioned(1, "snapshot"), snapshot_bytes, 0644));

  tuf::Timestamp timestamp;
  timestamp.type = "timestamp";
  timestamp.version = 1;
  timestamp.expires = t + settings.expiry.timestamp;
  timestamp.snapshot = meta_for(1, snapshot_bytes);
  const std::string ts_bytes = MOTA_TRY(sign(tuf::to_json(timestamp), keys[3]));
  MOTA_TRY(fs::write_file_atomic(p.metadata / "timestamp.json", ts_bytes, 0644));

  // Settings last: mota.toml is what makes DIR a repository.
  MOTA_TRY(fs::write_file_atomic(p.settings, settings.to_toml(), 0644));
  undo.done = true;
  return Repository(dir, settings, std::move(now));
}

Result<Repository> Repository::open(const stdfs::path& dir, NowFn now) {
  const Paths p(dir);
  std::error_code ec;
  if (!stdfs::exists(p.settings, ec)) {
    return fail(Errc::not_found, dir.string() + " is not a mota repository (no mota.toml)");
  }
  const std::string text = MOTA_TRY(fs::read_file(p.settings, 1u << 20));
  Settings s = MOTA_TRY_CTX(Settings::from_toml(text), dir.string());
  return Repository(dir, std::move(s), std::move(now));
}

std::string release_target_path(const std::string& name, const std::string& version) {
  return "models/" + name + "/" + version + "/" + name + "-" + version + ".mota";
}

std::string delta_target_path(const std::string& name, const std::string& from,
                              const std::string& to) {
  return "deltas/" + name + "/" + from + "/" + to + ".mdelta";
}

}  // namespace mota::manager
