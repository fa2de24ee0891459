#include "manager/repo/store.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <span>
#include <thread>

#include "common/semver.hpp"
#include "manifest/json.hpp"

namespace mota::manager::detail {

// ---------------------------------------------------------------------------------------------
// Lock file

Result<DirLock> DirLock::acquire(const stdfs::path& file, bool exclusive) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno_error("open lock file", file.string(), errno));
  DirLock l;
  l.file_ = fs::File(fd);
  // Poll rather than block: a hung mota process must not hang a cron job forever.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    if (::flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) return l;
    if (errno != EWOULDBLOCK && errno != EINTR) {
      return fail(errno_error("flock", file.string(), errno));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return fail(Errc::io,
                  file.parent_path().string() + " is locked by another mota process (waited 30 s)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// ---------------------------------------------------------------------------------------------
// State and keys

Result<std::uint64_t> latest_root_version(const Paths& p) {
  std::uint64_t v = 0;
  while (stdfs::exists(p.versioned(v + 1, "root"))) ++v;
  if (v == 0) {
    return fail(Errc::not_found, p.versioned(1, "root").string() + " is missing");
  }
  return v;
}

Result<State> load_state(const Paths& p) {
  State st;
  const std::uint64_t rv = MOTA_TRY(latest_root_version(p));
  {
    const auto path = p.versioned(rv, "root");
    std::string bytes = MOTA_TRY(fs::read_file(path, kMaxMetadataBytes));
    st.root = MOTA_TRY_CTX(tuf::parse_root(bytes), path.string());
  }
  {
    const auto path = p.metadata / "timestamp.json";
    std::string bytes = MOTA_TRY(fs::read_file(path, kMaxMetadataBytes));
    st.timestamp = MOTA_TRY_CTX(tuf::parse_timestamp(bytes), path.string());
  }
  {
    const auto path = p.versioned(st.timestamp.signed_.snapshot.version, "snapshot");
    std::string bytes = MOTA_TRY(fs::read_file(path, kMaxMetadataBytes));
    st.snapshot = MOTA_TRY_CTX(tuf::parse_snapshot(bytes), path.string());
  }
  {
    auto it = st.snapshot.signed_.meta.find("targets.json");
    if (it == st.snapshot.signed_.meta.end()) {
      return fail(Errc::parse, "snapshot version " + std::to_string(st.snapshot.signed_.version) +
                                   " has no targets.json entry");
    }
    const auto path = p.versioned(it->second.version, "targets");
    std::string bytes = MOTA_TRY(fs::read_file(path, kMaxMetadataBytes));
    st.targets = MOTA_TRY_CTX(tuf::parse_targets(bytes), path.string());
  }
  return st;
}

RoleExpiry role_expiry(const Settings& s, const std::string& role, const tuf::Common& c,
                       TimePoint now) {
  RoleExpiry e;
  e.role = role;
  e.version = c.version;
  e.expires = c.expires;
  e.window = s.refresh_window(role);
  e.due = c.expires <= now + e.window;
  e.expired = now >= c.expires;  // as tuf::check_expiry
  return e;
}

// Root, targets, snapshot, timestamp.
std::vector<RoleExpiry> expiry_of(const State& st, const Settings& s, TimePoint now) {
  return {role_expiry(s, "root", st.root.signed_, now),
          role_expiry(s, "targets", st.targets.signed_, now),
          role_expiry(s, "snapshot", st.snapshot.signed_, now),
          role_expiry(s, "timestamp", st.timestamp.signed_, now)};
}

std::string short_id(const std::string& keyid) {
  return keyid.substr(0, 16);
}

Result<crypto::PrivateKey> load_key(const Paths& p, std::string_view role, const tuf::Root& root) {
  const auto path = p.key(role);
  std::string pem = MOTA_TRY(fs::read_file(path, 1u << 20));
  auto key = crypto::PrivateKey::from_pem(pem);
  if (!key) return fail(std::move(key).error().context(path.string()));
  const std::string id = tuf::Key::from_public(key->public_key()).key_id();
  auto role_it = root.roles.find(std::string(role));
  if (role_it == root.roles.end()) {
    return fail(Errc::parse, "root version " + std::to_string(root.version) + " has no " +
                                 std::string(role) + " role");
  }
  const auto& ids = role_it->second.keyids;
  if (std::find(ids.begin(), ids.end(), id) == ids.end()) {
    std::string listed;
    for (const auto& k : ids) listed += (listed.empty() ? "" : ", ") + short_id(k);
    return fail(Errc::verification, path.string() + " holds key " + short_id(id) +
                                        ", which is not a " + std::string(role) +
                                        " key of root version " + std::to_string(root.version) +
                                        " (it lists " + listed + "): wrong or replaced key file");
  }
  return std::move(*key);
}

tuf::MetaFile meta_for(std::uint64_t version, const std::string& bytes) {
  tuf::MetaFile m;
  m.version = version;
  m.length = bytes.size();
  m.hashes["sha256"] = crypto::sha256_hex(bytes);
  return m;
}

Status make_dirs_tracked(const stdfs::path& dir, Cleanup& cleanup) {
  std::vector<stdfs::path> missing;
  for (stdfs::path d = dir; !d.empty() && !stdfs::exists(d); d = d.parent_path()) {
    missing.push_back(d);
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    MOTA_TRY(fs::make_dirs(*it, 0755));
    cleanup.add(*it);
  }
  return {};
}

Result<std::string> sign(const Json& signed_json, const crypto::PrivateKey& key) {
  return tuf::sign_metadata(signed_json, {&key});
}

namespace {

// Writes a new versioned role file (also recorded for cleanup until the timestamp lands).
Status write_meta(const stdfs::path& path, const std::string& bytes, Cleanup& cleanup) {
  cleanup.add(path);
  return fs::write_file_atomic(path, bytes, 0644).context("write " + path.string());
}

Result<std::string> read_text(const stdfs::path& path, std::uint64_t max) {
  return fs::read_file(path, max);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Publishing

Status publish(const Paths& p, State& st, const Settings& settings, TimePoint now, Publish what,
               Cleanup& cleanup) {
  std::optional<crypto::PrivateKey> targets_key, snapshot_key;
  const bool new_snapshot = what.targets.has_value() || what.snapshot;
  if (what.targets) targets_key = MOTA_TRY(load_key(p, "targets", st.root.signed_));
  if (new_snapshot) snapshot_key = MOTA_TRY(load_key(p, "snapshot", st.root.signed_));
  auto timestamp_key = MOTA_TRY(load_key(p, "timestamp", st.root.signed_));

  State next = st;
  if (what.targets) {
    tuf::Targets t = std::move(*what.targets);
    t.type = "targets";
    t.version = st.targets.signed_.version + 1;
    t.expires = now + settings.expiry.targets;
    const std::string bytes = MOTA_TRY(sign(tuf::to_json(t), *targets_key));
    MOTA_TRY(write_meta(p.versioned(t.version, "targets"), bytes, cleanup));
    next.targets = MOTA_TRY(tuf::parse_targets(bytes));
    next.snapshot.signed_.meta["targets.json"] = meta_for(t.version, bytes);
  }
  if (new_snapshot) {
    tuf::Snapshot s = next.snapshot.signed_;
    s.version = st.snapshot.signed_.version + 1;
    s.expires = now + settings.expiry.snapshot;
    const std::string bytes = MOTA_TRY(sign(tuf::to_json(s), *snapshot_key));
    MOTA_TRY(write_meta(p.versioned(s.version, "snapshot"), bytes, cleanup));
    next.snapshot = MOTA_TRY(tuf::parse_snapshot(bytes));
    next.timestamp.signed_.snapshot = meta_for(s.version, bytes);
  }
  tuf::Timestamp ts = next.timestamp.signed_;
  ts.version = st.timestamp.signed_.version + 1;
  ts.expires = now + settings.expiry.timestamp;
  const std::string bytes = MOTA_TRY(sign(tuf::to_json(ts), timestamp_key));
  // The commit point: everything before is unreferenced until this rename.
  MOTA_TRY(fs::write_file_atomic(p.metadata / "timestamp.json", bytes, 0644)
               .context("write timestamp.json"));
  cleanup.dismiss();
  next.timestamp = MOTA_TRY(tuf::parse_timestamp(bytes));
  st = std::move(next);
  return {};
}

// Mutating operations refuse to publish under an expired root: every client would reject it.
Status check_root_usable(const State& st, TimePoint now) {
  auto s = tuf::check_expiry(st.root.signed_, "root", now);
  if (!s) {
    return fail(std::move(s).error().context(
        "cannot publish (clients reject an expired root; run `mota key rotate root` to sign a "
        "new root version)"));
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Targets

Status check_target_file(const stdfs::path& file, const std::string& target_path,
                         const tuf::TargetFile& info) {
  std::error_code ec;
  if (!stdfs::is_regular_file(file, ec)) {
    return fail(Errc::not_found,
                "target " + target_path + ": file " + file.string() + " is missing");
  }
  const auto size = stdfs::file_size(file, ec);
  if (ec)
    return fail(Errc::io,
                "target " + target_path + ": stat " + file.string() + ": " + ec.message());
  if (size != info.length) {
    return fail(Errc::verification, "target " + target_path + ": length " + std::to_string(size) +
                                        " differs from the " + std::to_string(info.length) +
                                        " bytes in targets.json");
  }
  for (const auto& [algo_name, expected] : info.hashes) {
    auto algo = crypto::hash_from_name(algo_name);
    if (!algo) continue;  // an algorithm this build does not know; sha256 is always present
    crypto::Hasher h(*algo);
    auto f = MOTA_TRY(fs::File::open_read(file));
    std::string buf(1 << 16, '\0');
    for (;;) {
      const std::size_t n = MOTA_TRY(f.read_some(std::as_writable_bytes(std::span(buf))));
      if (n == 0) break;
      h.update(std::string_view(buf.data(), n));
    }
    const std::string got = h.hex_digest();
    if (!crypto::digest_equal(got, expected)) {
      return fail(Errc::verification, "target " + target_path + ": " + algo_name + " " + got +
                                          " differs from " + expected + " in targets.json");
    }
  }
  return {};
}

bool is_release(const tuf::TargetFile& t) {
  return json_get_or<std::string>(t.custom, "kind", "") == "full";
}

Release release_from(const std::string& path, const tuf::TargetFile& t) {
  Release r;
  r.target_path = path;
  r.name = json_get_or<std::string>(t.custom, "name", "");
  r.version = json_get_or<std::string>(t.custom, "version", "");
  r.length = t.length;
  auto h = t.hashes.find("sha256");
  if (h != t.hashes.end()) r.sha256 = h->second;
  r.tree_digest = json_get_or<std::string>(t.custom, "tree_digest", "");
  r.framework = json_get_or<std::string>(t.custom, "framework", "");
  return r;
}

bool semver_less(const std::string& a, const std::string& b) {
  auto sa = SemVer::parse(a);
  auto sb = SemVer::parse(b);
  if (sa && sb) return *sa < *sb;
  return a < b;
}

Result<Channel> read_channel(const Paths& p, const std::string& path, const tuf::TargetFile& t) {
  auto h = t.hashes.find("sha256");
  if (h == t.hashes.end()) return fail(Errc::parse, "target " + path + " has no sha256 hash");
  const auto file = p.target_file(path, h->second);
  std::string text = MOTA_TRY_CTX(read_text(file, kMaxChannelBytes), "channel " + path);
  return Channel::parse(text).context(path);
}

bool is_delta(const tuf::TargetFile& t) {
  return json_get_or<std::string>(t.custom, "kind", "") == "delta";
}

DeltaTarget delta_from(const std::string& path, const tuf::TargetFile& t) {
  DeltaTarget d;
  d.target_path = path;
  d.length = t.length;
  if (auto h = t.hashes.find("sha256"); h != t.hashes.end()) d.sha256 = h->second;
  const Json& c = t.custom;
  auto str = [&](const char* k) { return json_get_or<std::string>(c, k, ""); };
  d.name = str("name");
  d.from = str("from");
  d.to = str("to");
  d.from_tree_digest = str("from_tree_digest");
  d.tree_digest = str("tree_digest");
  d.full_target = str("full_target");
  d.full_sha256 = str("full_sha256");
  if (auto it = c.find("full_length"); it != c.end() && it->is_number_unsigned()) {
    d.full_length = it->get<std::uint64_t>();
  }
  return d;
}

}  // namespace mota::manager::detail
