#include "manager/repository.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>
#include <tuple>

#include "common/fs.hpp"
#include "common/hex.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "common/semver.hpp"
#include "delta/package/package_delta.hpp"
#include "manifest/model_manifest.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::seconds;

constexpr const char* kRoles[] = {"root", "targets", "snapshot", "timestamp"};
constexpr std::uint64_t kMaxMetadataBytes = 16u << 20;
constexpr std::uint64_t kMaxChannelBytes = 1u << 20;

struct Paths {
  explicit Paths(stdfs::path d)
      : dir(std::move(d)),
        settings(dir / "mota.toml"),
        keys(dir / "keys"),
        tmp(dir / "tmp"),
        lock(dir / ".lock"),
        repo(dir / "repo"),
        metadata(repo / "metadata"),
        targets(repo / "targets") {}
  stdfs::path dir, settings, keys, tmp, lock, repo, metadata, targets;

  stdfs::path key(std::string_view role) const { return keys / (std::string(role) + ".pem"); }
  stdfs::path versioned(std::uint64_t v, std::string_view role) const {
    return metadata / (std::to_string(v) + "." + std::string(role) + ".json");
  }
  // Consistent-snapshot file name of a target: "<dir>/<sha256>.<basename>".
  stdfs::path target_file(const std::string& target_path, const std::string& sha256) const {
    stdfs::path tp(target_path);
    return targets / tp.parent_path() / (sha256 + "." + tp.filename().string());
  }
};

// ---------------------------------------------------------------------------------------------
// Lock file

// flock() on DIR/.lock; released when the object (its descriptor) goes away.
class DirLock {
 public:
  static Result<DirLock> acquire(const stdfs::path& file, bool exclusive) {
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
        return fail(Errc::io, file.parent_path().string() +
                                  " is locked by another mota process (waited 30 s)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

 private:
  fs::File file_;
};

// ---------------------------------------------------------------------------------------------
// Settings

Result<seconds> positive_duration(std::string_view what, std::string_view text) {
  auto d = parse_duration(text);
  if (!d) return fail(Errc::parse, std::string(what) + ": " + d.error().message());
  if (d->count() <= 0) return fail(Errc::parse, std::string(what) + ": must be positive");
  return *d;
}

// "45s", "12 min", "5h", "3d": a rough span for messages (format_duration is exact, for files).
std::string rough_duration(seconds s) {
  const long long n = s.count() < 0 ? -s.count() : s.count();
  if (n < 120) return std::to_string(n) + "s";
  if (n < 2 * 3600) return std::to_string(n / 60) + " min";
  if (n < 2 * 86400) return std::to_string(n / 3600) + "h";
  return std::to_string(n / 86400) + "d";
}

// ---------------------------------------------------------------------------------------------
// Repository state: the metadata clients currently see, reached from timestamp.json.

struct State {
  tuf::Signed<tuf::Root> root;
  tuf::Signed<tuf::Targets> targets;
  tuf::Signed<tuf::Snapshot> snapshot;
  tuf::Signed<tuf::Timestamp> timestamp;
};

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

// Reads keys/<role>.pem and checks root lists it for the role: signing with a key clients do not
// trust would publish metadata every client rejects.
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

// Files written by an operation that is not complete yet; removed unless dismissed. Metadata is
// only referenced once timestamp.json is replaced (last), so removing the rest is always safe.
class Cleanup {
 public:
  ~Cleanup() {
    if (done_) return;
    for (auto it = paths_.rbegin(); it != paths_.rend(); ++it) {
      std::error_code ec;
      stdfs::remove(*it, ec);  // directories only when empty
    }
  }
  void add(stdfs::path p) { paths_.push_back(std::move(p)); }
  void dismiss() { done_ = true; }

 private:
  std::vector<stdfs::path> paths_;
  bool done_ = false;
};

// Creates the missing directories of `dir` one by one, recording them for cleanup.
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

// Writes a new versioned role file (also recorded for cleanup until the timestamp lands).
Status write_meta(const stdfs::path& path, const std::string& bytes, Cleanup& cleanup) {
  cleanup.add(path);
  return fs::write_file_atomic(path, bytes, 0644).context("write " + path.string());
}

struct Publish {
  std::optional<tuf::Targets> targets;  // new targets content (version/expiry set here)
  bool snapshot = false;                // re-sign snapshot even if targets did not change
};

// The single publish path: target files are already in place; writes N.targets.json, then
// N.snapshot.json, then timestamp.json last, so a client sees the old set or the new one.
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

Result<std::string> random_salt() {
  std::string bytes = MOTA_TRY(crypto::random_bytes(8));
  return to_hex(bytes);
}

Result<std::string> read_text(const stdfs::path& path, std::uint64_t max) {
  return fs::read_file(path, max);
}

// Hashes a file with every algorithm a target lists; compares length first (cheap).
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
  return t.custom.is_object() && t.custom.value("kind", "") == "full";
}

Release release_from(const std::string& path, const tuf::TargetFile& t) {
  Release r;
  r.target_path = path;
  r.name = t.custom.value("name", "");
  r.version = t.custom.value("version", "");
  r.length = t.length;
  auto h = t.hashes.find("sha256");
  if (h != t.hashes.end()) r.sha256 = h->second;
  r.tree_digest = t.custom.value("tree_digest", "");
  r.framework = t.custom.value("framework", "");
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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Settings

seconds Settings::lifetime(std::string_view role) const {
  if (role == "root") return expiry.root;
  if (role == "targets") return expiry.targets;
  if (role == "snapshot") return expiry.snapshot;
  if (role == "timestamp") return expiry.timestamp;
  return seconds(0);
}

seconds Settings::refresh_window(std::string_view role) const {
  const seconds half = lifetime(role) / 2;
  // Half the lifetime at most: a margin as long as the lifetime would re-sign at every check.
  const seconds w = role == "root" ? std::min(std::max(refresh_margin, kRootWarnAhead), half)
                                   : std::min(refresh_margin, half);
  return std::max(w, seconds(1));
}

std::string Settings::to_toml() const {
  std::string s;
  s += "# mota repository settings (docs/repository.md)\n";
  s += "# Key type of newly generated keys: ed25519, ecdsa or rsa.\n";
  s += "key_type = \"" + std::string(crypto::keytype_name(key_type)) + "\"\n";
  s += "# zstd level (1..19) for packages built by `mota release add`.\n";
  s += "zstd_level = " + std::to_string(zstd_level) + "\n";
  s += "# Timestamp, snapshot and targets are re-signed (`mota timestamp refresh`, `mota serve`)\n";
  s += "# when they expire within min(refresh_margin, half their lifetime).\n";
  s += "refresh_margin = \"" + format_duration(refresh_margin) + "\"\n";
  s += "# `mota release add` builds package deltas from up to this many lower released versions\n";
  s +=
      "# (0: none) and publishes a delta only when it is at most delta_max_ratio of the package.\n";
  s += "delta_versions = " + std::to_string(delta_versions) + "\n";
  char ratio[32];
  std::snprintf(ratio, sizeof ratio, "%.4g", delta_max_ratio);
  std::string ratio_text = ratio;
  // TOML needs a float literal to read back as one.
  if (ratio_text.find_first_of(".e") == std::string::npos) ratio_text += ".0";
  s += "delta_max_ratio = " + ratio_text + "\n\n";
  s += "# Lifetime of each role's metadata from the moment it is signed.\n[expiry]\n";
  s += "root = \"" + format_duration(expiry.root) + "\"\n";
  s += "targets = \"" + format_duration(expiry.targets) + "\"\n";
  s += "snapshot = \"" + format_duration(expiry.snapshot) + "\"\n";
  s += "timestamp = \"" + format_duration(expiry.timestamp) + "\"\n";
  return s;
}

Result<Settings> Settings::from_toml(std::string_view text) {
  toml::table tbl;
  try {
    tbl = toml::parse(text, std::string_view("mota.toml"));
  } catch (const toml::parse_error& e) {
    return fail(Errc::parse, "mota.toml: line " + std::to_string(e.source().begin.line) +
                                 ", column " + std::to_string(e.source().begin.column) + ": " +
                                 std::string(e.description()));
  }
  Settings s;
  auto get_str = [](const toml::node& n, const std::string& key) -> Result<std::string> {
    auto v = n.value<std::string>();
    if (!v) return fail(Errc::parse, "mota.toml: " + key + ": not a string");
    return *v;
  };
  for (auto&& [k, node] : tbl) {
    const std::string key(k.str());
    if (key == "key_type") {
      const std::string v = MOTA_TRY(get_str(node, key));
      auto t = crypto::key_type_from_name(v);
      if (!t) return fail(Errc::parse, "mota.toml: key_type: " + t.error().message());
      s.key_type = *t;
    } else if (key == "zstd_level") {
      auto v = node.value<std::int64_t>();
      if (!v || *v < 1 || *v > 19) {
        return fail(Errc::parse, "mota.toml: zstd_level: not an integer in 1..19");
      }
      s.zstd_level = static_cast<int>(*v);
    } else if (key == "delta_versions") {
      auto v = node.value<std::int64_t>();
      if (!v || *v < 0 || *v > 100) {
        return fail(Errc::parse, "mota.toml: delta_versions: not an integer in 0..100");
      }
      s.delta_versions = static_cast<unsigned>(*v);
    } else if (key == "delta_max_ratio") {
      // value<double>() also accepts an integer literal (1 means "any delta smaller than the
      // package").
      auto v = node.value<double>();
      if (!v || !(*v > 0) || *v > 1) {
        return fail(Errc::parse, "mota.toml: delta_max_ratio: not a number in (0, 1]");
      }
      s.delta_max_ratio = *v;
    } else if (key == "refresh_margin") {
      const std::string v = MOTA_TRY(get_str(node, key));
      s.refresh_margin = MOTA_TRY(positive_duration("mota.toml: refresh_margin", v));
    } else if (key == "expiry") {
      const toml::table* et = node.as_table();
      if (!et) return fail(Errc::parse, "mota.toml: expiry: not a table");
      for (auto&& [ek, en] : *et) {
        const std::string role(ek.str());
        const std::string what = "mota.toml: expiry." + role;
        const std::string v = MOTA_TRY(get_str(en, "expiry." + role));
        const seconds d = MOTA_TRY(positive_duration(what, v));
        if (role == "root")
          s.expiry.root = d;
        else if (role == "targets")
          s.expiry.targets = d;
        else if (role == "snapshot")
          s.expiry.snapshot = d;
        else if (role == "timestamp")
          s.expiry.timestamp = d;
        else
          return fail(Errc::parse, what + ": unknown role (root, targets, snapshot, timestamp)");
      }
    } else {
      // Strict: a misspelt key silently ignored would leave a default the operator did not want.
      return fail(Errc::parse, "mota.toml: unknown key '" + key + "'");
    }
  }
  return s;
}

Result<Expiry> parse_expiry_spec(std::string_view spec, Expiry base) {
  Expiry e = base;
  std::size_t pos = 0;
  while (pos <= spec.size()) {
    std::size_t comma = spec.find(',', pos);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) {
      if (comma == spec.size()) break;
      continue;
    }
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) {
      return fail(Errc::invalid_argument,
                  "expiry '" + std::string(item) + "': want ROLE=DURATION (e.g. targets=3mo)");
    }
    const std::string role(item.substr(0, eq));
    auto d = parse_duration(item.substr(eq + 1));
    if (!d) return fail(Errc::invalid_argument, "expiry " + role + ": " + d.error().message());
    if (d->count() <= 0)
      return fail(Errc::invalid_argument, "expiry " + role + ": must be positive");
    if (role == "root")
      e.root = *d;
    else if (role == "targets")
      e.targets = *d;
    else if (role == "snapshot")
      e.snapshot = *d;
    else if (role == "timestamp")
      e.timestamp = *d;
    else {
      return fail(Errc::invalid_argument,
                  "expiry: unknown role '" + role + "' (root, targets, snapshot, timestamp)");
    }
  }
  return e;
}

std::string format_duration(seconds s) {
  struct Unit {
    long long secs;
    const char* name;
  };
  static constexpr Unit kUnits[] = {{365 * 86400, "y"}, {30 * 86400, "mo"}, {7 * 86400, "w"},
                                    {86400, "d"},       {3600, "h"},        {60, "m"}};
  const long long n = s.count();
  for (const auto& u : kUnits) {
    if (n > 0 && n % u.secs == 0) return std::to_string(n / u.secs) + u.name;
  }
  return std::to_string(n) + "s";
}

std::string release_target_path(const std::string& name, const std::string& version) {
  return "models/" + name + "/" + version + "/" + name + "-" + version + ".mota";
}

std::string delta_target_path(const std::string& name, const std::string& from,
                              const std::string& to) {
  return "deltas/" + name + "/" + from + "/" + to + ".mdelta";
}

Result<stdfs::path> find_runtime_binary() {
  auto usable = [](const stdfs::path& f) {
    std::error_code ec;
    return stdfs::is_regular_file(f, ec) && ::access(f.c_str(), X_OK) == 0;
  };
  std::vector<std::string> looked;
  std::error_code ec;
  const stdfs::path self = stdfs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const stdfs::path d = self.parent_path();
    for (const stdfs::path& c : {d / "mota-runtime", (d / ".." / "runtime" / "mota-runtime")}) {
      const stdfs::path n = c.lexically_normal();
      if (usable(n)) return n;
      looked.push_back(n.string());
    }
  }
  const char* path_env = std::getenv("PATH");
  std::string path = path_env ? path_env : "";
  std::size_t pos = 0;
  while (pos <= path.size()) {
    std::size_t colon = path.find(':', pos);
    if (colon == std::string::npos) colon = path.size();
    const std::string dir = path.substr(pos, colon - pos);
    pos = colon + 1;
    if (dir.empty()) continue;
    const stdfs::path c = stdfs::path(dir) / "mota-runtime";
    if (usable(c)) return c;
  }
  std::string where;
  for (const auto& l : looked) where += l + ", ";
  return fail(Errc::not_found, "mota-runtime not found (looked at " + where + "and $PATH=" + path +
                                   "); pass --runtime PATH");
}

namespace {

// A scratch directory below DIR/tmp, removed with its contents on every path out.
class ScratchDir {
 public:
  static Result<ScratchDir> create(const stdfs::path& path) {
    MOTA_TRY(fs::remove_all(path));  // a leftover of a crashed run with the same pid
    MOTA_TRY(fs::make_dirs(path, 0700));
    ScratchDir d;
    d.path_ = path;
    return d;
  }
  ScratchDir() = default;
  ScratchDir(ScratchDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir() {
    if (!path_.empty()) (void)fs::remove_all(path_);
  }
  const stdfs::path& path() const { return path_; }

 private:
  stdfs::path path_;
};

constexpr const char* kHealthInput = "health/input.bin";
constexpr const char* kHealthExpected = "health/expected.bin";

// Mirrors `src` into `dest` (which must not exist) with hard links, copying where linking is not
// possible (another filesystem). model.json and the two health files are left out: the caller
// writes its own. Nothing in `src` is ever opened for writing.
Status link_tree(const stdfs::path& src, const stdfs::path& dest) {
  MOTA_TRY(fs::make_dirs(dest, 0755));
  std::error_code ec;
  stdfs::recursive_directory_iterator it(src, ec), end;
  if (ec) return fail(Errc::io, "read " + src.string() + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return fail(Errc::io, "read " + src.string() + ": " + ec.message());
    const stdfs::path rel = it->path().lexically_relative(src);
    const std::string r = rel.generic_string();
    if (r == kManifestName || r == kHealthInput || r == kHealthExpected) continue;
    const auto st = it->symlink_status(ec);
    if (stdfs::is_symlink(st)) {
      return fail(Errc::invalid_argument,
                  it->path().string() + " is a symlink (packages hold regular files only)");
    }
    if (stdfs::is_directory(st)) {
      MOTA_TRY(fs::make_dirs(dest / rel, 0755));
    } else if (stdfs::is_regular_file(st)) {
      const stdfs::path out = dest / rel;
      if (::link(it->path().c_str(), out.c_str()) != 0) {
        stdfs::copy_file(it->path(), out, ec);
        if (ec) {
          return fail(Errc::io,
                      "copy " + it->path().string() + " to " + out.string() + ": " + ec.message());
        }
      }
    } else {
      return fail(Errc::invalid_argument,
                  it->path().string() + " is not a regular file or directory");
    }
  }
  return {};
}

// model.json text of a staged source: without a "files" key when it lists none (an empty list
// would be read as "this package has no files" and the packer fills it in anyway).
std::string source_manifest_text(const ModelManifest& m) {
  Json j = m.to_json();
  if (m.files.empty()) j.erase("files");
  return j.dump(2) + "\n";
}

// The last line of a child's stderr, without mota-runtime's "error:" prefix: its reason.
std::string child_reason(const ChildResult& r) {
  std::string err = r.err;
  while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
  const auto nl = err.rfind('\n');
  if (nl != std::string::npos) err = err.substr(nl + 1);
  for (const char* prefix : {"mota-runtime: error: ", "mota-runtime: "}) {
    if (err.rfind(prefix, 0) == 0) {
      err = err.substr(std::string_view(prefix).size());
      break;
    }
  }
  if (err.empty()) {
    err = r.signal ? "killed by signal " + std::to_string(r.signal)
                   : "exit status " + std::to_string(r.exit_code) + ", no message";
  }
  return err;
}

// Builds `dest`: a staged copy of `model_dir` with name/version set, the health input, the
// expected output recorded by running the model once through mota-runtime, and the health
// section. Errc::verification with mota-runtime's reason when the model does not run.
Status stage_with_health(const stdfs::path& model_dir, const stdfs::path& dest,
                         const std::string& name, const std::string& version,
                         const HealthRecording& h) {
  if ((h.tolerance && !(*h.tolerance >= 0)) ||
      (h.latency_budget_ms && !(*h.latency_budget_ms > 0)) || (h.soak_s && !(*h.soak_s >= 0))) {
    return fail(Errc::invalid_argument,
                "health: tolerance and soak must be >= 0 and the latency budget > 0");
  }
  const stdfs::path runtime = h.runtime.empty() ? MOTA_TRY(find_runtime_binary()) : h.runtime;
  if (!h.runtime.empty() && ::access(runtime.c_str(), X_OK) != 0) {
    return fail(errno_error("--runtime", runtime.string(), errno));
  }
  std::error_code ec;
  if (!stdfs::is_regular_file(h.input, ec)) {
    return fail(Errc::not_found, "health input " + h.input.string() + " is not a file");
  }
  const auto mj = model_dir / kManifestName;
  const std::string text = MOTA_TRY(fs::read_file(mj, kMaxManifestBytes));
  ModelManifest m = MOTA_TRY_CTX(ModelManifest::parse(text, /*require_files=*/false), mj.string());
  m.name = name;
  m.version = version;

  MOTA_TRY(link_tree(model_dir, dest));
  MOTA_TRY(fs::make_dirs(dest / "health", 0755));
  stdfs::copy_file(h.input, dest / kHealthInput, ec);
  if (ec) return fail(Errc::io, "copy health input " + h.input.string() + ": " + ec.message());
  // The runtime reads model.json (name, version, framework, entry, inputs); the health section
  // is written once the expected output exists.
  ModelManifest for_run = m;
  for_run.health.reset();
  for_run.files.clear();
  MOTA_TRY(fs::write_file_atomic(dest / kManifestName, source_manifest_text(for_run), 0644));

  const stdfs::path expected = dest / kHealthExpected;
  const auto run =
      MOTA_TRY_CTX(run_child({runtime.string(), "run", dest.string(), "--input",
                              (dest / kHealthInput).string(), "--output", expected.string()},
                             {}, std::chrono::duration_cast<std::chrono::milliseconds>(h.timeout)),
                   "health input: " + runtime.string());
  if (run.timed_out) {
    return fail(Errc::verification, "health input: mota-runtime run gave no output within " +
                                        std::to_string(h.timeout.count()) + " s");
  }
  if (run.exit_code != 0 || !stdfs::is_regular_file(expected, ec)) {
    // Name the publisher's directory, not the scratch copy that is about to disappear.
    std::string reason = child_reason(run);
    for (auto pos = reason.find(dest.string()); pos != std::string::npos;
         pos = reason.find(dest.string(), pos + model_dir.string().size())) {
      reason.replace(pos, dest.string().size(), model_dir.string());
    }
    return fail(Errc::verification, "health input: the model does not run: " + reason);
  }

  HealthSpec spec = m.health.value_or(HealthSpec{});
  spec.input = kHealthInput;
  spec.expected_output = kHealthExpected;
  if (h.tolerance) spec.tolerance = *h.tolerance;
  if (h.latency_budget_ms) spec.latency_budget_ms = *h.latency_budget_ms;
  if (h.soak_s) spec.soak_s = *h.soak_s;
  m.health = spec;
  if (!m.files.empty()) {
    // A source that lists its files must list the health files as they now are.
    std::erase_if(m.files, [](const FileEntry& f) {
      return f.path == kHealthInput || f.path == kHealthExpected;
    });
    for (const char* rel : {kHealthInput, kHealthExpected}) {
      const std::string sha = MOTA_TRY(crypto::file_sha256_hex((dest / rel).string()));
      m.files.push_back(FileEntry{rel, stdfs::file_size(dest / rel), sha});
    }
    std::sort(m.files.begin(), m.files.end(),
              [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  }
  const std::string final_text = source_manifest_text(m);
  MOTA_TRY_CTX(ModelManifest::parse(final_text, /*require_files=*/false),
               "internal check of the staged model.json");
  MOTA_TRY(fs::write_file_atomic(dest / kManifestName, final_text, 0644));
  return {};
}

// Builds `dest`: a staged copy of `model_dir` for the load check, its model.json with name and
// version set and without a health section (the probe then runs the model once on zeros).
Status stage_for_load_check(const stdfs::path& model_dir, const stdfs::path& dest,
                            const ModelManifest& source, const std::string& name,
                            const std::string& version) {
  ModelManifest m = source;
  m.name = name;
  m.version = version;
  m.health.reset();
  m.files.clear();
  MOTA_TRY(link_tree(model_dir, dest));
  MOTA_TRY(fs::write_file_atomic(dest / kManifestName, source_manifest_text(m), 0644));
  return {};
}

// The model's checks (manager/release_check.hpp), in `scratch`.
Status check_model(const stdfs::path& model_dir, const ModelManifest& m, const std::string& name,
                   const std::string& version, const ReleaseChecks& checks,
                   const stdfs::path& scratch, CheckReport& report) {
  MOTA_TRY(check_model_static(model_dir, m, report));
  if (!report.onnx) return {};
  if (!checks.load) {
    report.load = CheckReport::Load::skipped_by_flag;
    return {};
  }
  stdfs::path runtime = checks.runtime;
  if (runtime.empty()) {
    auto found = find_runtime_binary();
    if (!found) {
      // A publish host need not have OpenCV: the static checks stand, the release goes on, and
      // the output says what was not done.
      report.load = CheckReport::Load::skipped_no_runtime;
      report.warnings.push_back("load check skipped: " + found.error().message() +
                                "; the model was not loaded (--no-load-check silences this)");
      return {};
    }
    runtime = *found;
  } else if (::access(runtime.c_str(), X_OK) != 0) {
    return fail(errno_error("--runtime", runtime.string(), errno));
  }
  const stdfs::path slot = scratch / "load-check";
  MOTA_TRY(stage_for_load_check(model_dir, slot, m, name, version));
  MOTA_TRY(check_model_load(runtime, slot, model_dir, m, checks.timeout, report));
  MOTA_TRY(fs::remove_all(slot));
  return {};
}

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

// Deltas to the new release `to` from up to `n` lower released versions of its name, newest
// first. A delta that fails is a skipped outcome with a warning, never an error of the release.
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

DeltaTarget delta_from(const std::string& path, const tuf::TargetFile& t) {
  DeltaTarget d;
  d.target_path = path;
  d.length = t.length;
  if (auto h = t.hashes.find("sha256"); h != t.hashes.end()) d.sha256 = h->second;
  const Json& c = t.custom;
  auto str = [&](const char* k) {
    auto it = c.find(k);
    return it != c.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
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

bool is_delta(const tuf::TargetFile& t) {
  return t.custom.is_object() && t.custom.value("kind", "") == "delta";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Repository

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

Result<Channel> Repository::set_channel(const ChannelRequest& req) {
  const Paths p(dir_);
  if (!valid_channel_name(req.channel)) {
    return fail(Errc::invalid_argument,
                "channel name '" + req.channel + "' is not valid ([a-z0-9][a-z0-9._-]{0,63})");
  }
  if (!valid_model_name(req.model)) {
    return fail(Errc::invalid_argument, "model name '" + req.model + "' is not valid");
  }
  if (req.percent > 100) {
    return fail(Errc::invalid_argument,
                "percent " + std::to_string(req.percent) + " is not in 0..100");
  }
  if (!SemVer::parse(req.version)) {
    return fail(Errc::invalid_argument, "version '" + req.version + "' is not a semantic version");
  }
  if (!req.min_version.empty() && !SemVer::parse(req.min_version)) {
    return fail(Errc::invalid_argument,
                "min version '" + req.min_version + "' is not a semantic version");
  }

  auto lock = MOTA_TRY(DirLock::acquire(p.lock, true));
  State st = MOTA_TRY(load_state(p));
  const TimePoint now = now_();
  MOTA_TRY(check_root_usable(st, now));
  const auto& all = st.targets.signed_.targets;
  if (!all.count(release_target_path(req.model, req.version))) {
    return fail(Errc::not_found, "model " + req.model + " version " + req.version +
                                     " is not released (see `mota release list`)");
  }
  const std::string cp = channel_target_path(req.channel, req.model);
  std::optional<Channel> prev;
  if (auto it = all.find(cp); it != all.end()) {
    prev = MOTA_TRY_CTX(read_channel(p, cp, it->second), "read current channel");
  }

  Channel c;
  c.model = req.model;
  c.channel = req.channel;
  c.version = req.version;
  c.rollout.percent = req.percent;
  c.min_version = req.min_version;
  c.allow_downgrade = req.allow_downgrade;
  c.updated = format_time(now);
  if (prev && prev->version == req.version) {
    // Same release, new percentage: keep the sample (monotone rollout) and its fallback.
    c.rollout.salt = prev->rollout.salt;
    c.rollout.fallback_version = prev->rollout.fallback_version;
  } else {
    c.rollout.salt = MOTA_TRY(random_salt());
    if (prev) c.rollout.fallback_version = prev->version;
  }
  if (c.rollout.percent == 100) c.rollout.fallback_version.clear();
  if (!c.rollout.fallback_version.empty() && !c.min_version.empty() &&
      *SemVer::parse(c.rollout.fallback_version) < *SemVer::parse(c.min_version)) {
    return fail(Errc::invalid_argument, "the fallback for devices outside the rollout would be " +
                                            c.rollout.fallback_version +
                                            " (the channel's previous version), below min "
                                            "version " +
                                            c.min_version +
                                            "; use --percent 100 or a lower --min-version");
  }
  const std::string text = c.serialize();
  // Never publish what agents would refuse to parse.
  MOTA_TRY_CTX(Channel::parse(text), "internal check of the new channel file");

  Cleanup cleanup;
  const std::string sha = crypto::sha256_hex(text);
  const stdfs::path file = p.target_file(cp, sha);
  MOTA_TRY(make_dirs_tracked(file.parent_path(), cleanup));
  if (!stdfs::exists(file)) cleanup.add(file);
  MOTA_TRY(fs::write_file_atomic(file, text, 0644));

  tuf::TargetFile tf;
  tf.length = text.size();
  tf.hashes["sha256"] = sha;
  tf.custom =
      Json{{"kind", "channel"}, {"channel", c.channel}, {"model", c.model}, {"version", c.version}};
  tuf::Targets targets = st.targets.signed_;
  targets.targets[cp] = tf;
  MOTA_TRY_CTX(publish(p, st, settings_, now, Publish{std::move(targets), false}, cleanup),
               "publish");
  log::debug("channel updated",
             {{"CHANNEL", c.channel}, {"MODEL", c.model}, {"VERSION", c.version}});
  return c;
}

Result<std::vector<Channel>> Repository::show_channels(const std::string& channel) const {
  const Paths p(dir_);
  auto lock = MOTA_TRY(DirLock::acquire(p.lock, false));
  const State st = MOTA_TRY(load_state(p));
  std::vector<Channel> out;
  for (const auto& [path, t] : st.targets.signed_.targets) {
    if (path.rfind("channels/", 0) != 0) continue;
    Channel c = MOTA_TRY(read_channel(p, path, t));
    if (!channel.empty() && c.channel != channel) continue;
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const Channel& a, const Channel& b) {
    return std::tie(a.channel, a.model) < std::tie(b.channel, b.model);
  });
  return out;
}

Result<RefreshResult> Repository::refresh(const RefreshOptions& options) {
  const Paths p(dir_);
  auto lock = MOTA_TRY(DirLock::acquire(p.lock, true));
  State st = MOTA_TRY(load_state(p));
  const TimePoint now = now_();
  MOTA_TRY(check_root_usable(st, now));
  const std::vector<RoleExpiry> before = expiry_of(st, settings_, now);
  auto due = [&](std::string_view role) {
    for (const auto& e : before) {
      if (e.role == role)
        return e.due || (options.valid_for && e.expires < now + *options.valid_for);
    }
    return false;
  };
  Settings settings = settings_;
  if (options.valid_for) {
    for (auto* lifetime :
         {&settings.expiry.targets, &settings.expiry.snapshot, &settings.expiry.timestamp}) {
      *lifetime = std::max(*lifetime, *options.valid_for);
    }
  }
  // A new targets version needs a new snapshot, which needs a new timestamp.
  const bool want_targets = due("targets");
  const bool want_snapshot = want_targets || due("snapshot");
  const bool want_timestamp = want_snapshot || due("timestamp") || options.force;

  // Keys kept off this host leave their role (and what depends on it) as it is; the rest is
  // still renewed, so a host holding only the timestamp key keeps the timestamp fresh.
  std::map<std::string, std::string> missing;  // role -> why its key cannot be read
  auto key_here = [&](const char* role) {
    const stdfs::path key = p.key(role);
    if (::access(key.c_str(), R_OK) == 0) return true;
    missing[role] = key.string() + ": " + std::strerror(errno);
    return false;
  };
  const bool timestamp_key = !want_timestamp || key_here("timestamp");
  const bool snapshot_key = !want_snapshot || key_here("snapshot");
  const bool targets_key = !want_targets || key_here("targets");
  const bool targets = want_targets && targets_key && snapshot_key && timestamp_key;
  const bool snapshot = (targets || due("snapshot")) && snapshot_key && timestamp_key;
  const bool timestamp = (snapshot || due("timestamp") || options.force) && timestamp_key;

  RefreshResult r;
  // Each role that needed renewing and was not, with the keys it lacked (its own and those of
  // the roles that must be re-signed after it).
  for (const auto& [role, wanted, done, chain] :
       {std::tuple<const char*, bool, bool, int>{"targets", due("targets"), targets, 0},
        {"snapshot", due("snapshot"), snapshot, 1},
        {"timestamp", due("timestamp") || options.force, timestamp, 2}}) {
    if (!wanted || done) continue;
    std::string why;
    static constexpr const char* kChain[] = {"targets", "snapshot", "timestamp"};
    for (int k = chain; k < 3; ++k) {
      auto it = missing.find(kChain[k]);
      if (it != missing.end()) why += (why.empty() ? "" : "; ") + it->second;
    }
    r.missing_keys.push_back(std::string(role) + ": " + why);
  }
  if (timestamp) {
    Publish what;
    if (targets) what.targets = st.targets.signed_;
    what.snapshot = snapshot;
    Cleanup cleanup;
    MOTA_TRY_CTX(publish(p, st, settings, now, std::move(what), cleanup), "publish");
    r.resigned_timestamp = true;
    r.resigned_snapshot = snapshot;
    r.resigned_targets = targets;
    log::debug("metadata re-signed", {{"VERSION", std::to_string(st.timestamp.signed_.version)},
                                      {"ROLES", std::string(targets ? "targets,snapshot,timestamp"
                                                            : snapshot ? "snapshot,timestamp"
                                                                       : "timestamp")}});
  }
  r.timestamp_version = st.timestamp.signed_.version;
  r.roles = expiry_of(st, settings_, now);
  if (r.roles[0].due)
    r.warnings.push_back(describe_expiry(r.roles[0], now) + ": " + renew_hint("root"));
  return r;
}

Result<RefreshResult> Repository::refresh_timestamp() {
  return refresh(RefreshOptions{.force = true});
}

Result<std::vector<RoleExpiry>> Repository::expiry_status() const {
  const Paths p(dir_);
  const State st = MOTA_TRY(load_state(p));
  return expiry_of(st, settings_, now_());
}

std::string describe_expiry(const RoleExpiry& r, TimePoint now) {
  const std::string what = r.role + " version " + std::to_string(r.version);
  if (r.expired) {
    return what + " expired at " + format_time(r.expires) + " (" + rough_duration(now - r.expires) +
           " ago)";
  }
  return what + " expires " + format_time(r.expires) + " (in " + rough_duration(r.expires - now) +
         ", within its " + format_duration(r.window) + " refresh window)";
}

std::string renew_hint(std::string_view role) {
  if (role == "root") {
    return "sign a new root version with `mota key rotate root` (needs the offline root key)";
  }
  return "run `mota timestamp refresh` (or keep `mota serve` running with the " +
         std::string(role) + " key on its host)";
}

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

// ---------------------------------------------------------------------------------------------
// verify

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
        for (const std::string& v : {c.version, c.rollout.fallback_version}) {
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
