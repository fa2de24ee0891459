#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "manager/repo/repository.hpp"
#include "manager/repo/store.hpp"

namespace mota::manager {

using namespace detail;

Result<std::uint64_t> Repository::rotate_key(const std::string& role) {
  const Paths p(dir_);
  if (std::find_if(std::begin(kRoles), std::end(kRoles),
                   [&](const char* r) { return role == r; }) == std::end(kRoles)) {
    return fail(Errc::invalid_argument,
                "unknown role '" + role + "' (root, targets, snapshot, timestamp)");
  }
  auto lock = MOTA_TRY(DirLock::acquire(p.lock, true));
  State st = MOTA_TRY(load_state(p));
  const TimePoint now = now_();
  // The current root key signs the new root: clients chain from the root they trust.
  auto old_root_key = MOTA_TRY(load_key(p, "root", st.root.signed_));
  auto old_key = MOTA_TRY(load_key(p, role, st.root.signed_));
  auto new_key = MOTA_TRY(crypto::PrivateKey::generate(settings_.key_type));
  const tuf::Key new_pub = tuf::Key::from_public(new_key.public_key());
  const std::string new_id = new_pub.key_id();
  const std::string old_id = tuf::Key::from_public(old_key.public_key()).key_id();

  tuf::Root root = st.root.signed_;
  root.version += 1;
  root.expires = now + settings_.expiry.root;
  root.keys[new_id] = new_pub;
  auto& rk = root.roles[role];
  std::replace(rk.keyids.begin(), rk.keyids.end(), old_id, new_id);
  // Drop the old key from the key list when no role uses it any more.
  bool still_used = false;
  for (const auto& [r, keys] : root.roles) {
    still_used |= std::find(keys.keyids.begin(), keys.keyids.end(), old_id) != keys.keyids.end();
  }
  if (!still_used) root.keys.erase(old_id);

  std::vector<const crypto::PrivateKey*> signers{&old_root_key};
  if (role == "root") signers.push_back(&new_key);
  const std::string root_bytes = MOTA_TRY(tuf::sign_metadata(tuf::to_json(root), signers));

  // The new key goes beside the old one first, so a crash leaves both on disk.
  const std::string new_pem = MOTA_TRY(new_key.to_pem());
  const stdfs::path pending = p.keys / (role + ".pem.new");
  MOTA_TRY(fs::write_file_atomic(pending, new_pem, 0600));
  MOTA_TRY(fs::write_file_atomic(p.versioned(root.version, "root"), root_bytes, 0644));
  MOTA_TRY(fs::write_file_atomic(p.metadata / "root.json", root_bytes, 0644));
  const stdfs::path retired = p.keys / "retired";
  MOTA_TRY(fs::make_dirs(retired, 0700));
  const stdfs::path old_copy = retired / (role + "-" + short_id(old_id) + ".pem");
  if (::rename(p.key(role).c_str(), old_copy.c_str()) != 0 ||
      ::rename(pending.c_str(), p.key(role).c_str()) != 0) {
    return fail(errno_error("install new key", p.key(role).string(), errno));
  }
  MOTA_TRY(fs::fsync_dir(p.keys));
  MOTA_TRY(fs::fsync_dir(retired));

  // Re-sign what the rotated key signs so clients see metadata by the new key.
  st.root = MOTA_TRY(tuf::parse_root(root_bytes));
  Publish what;
  if (role == "targets") what.targets = st.targets.signed_;
  if (role == "targets" || role == "snapshot") what.snapshot = true;
  Cleanup cleanup;
  MOTA_TRY_CTX(publish(p, st, settings_, now, std::move(what), cleanup),
               "publish with the new key");
  return root.version;
}

}  // namespace mota::manager
