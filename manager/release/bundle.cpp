#include "manager/release/bundle.hpp"

#include <stdlib.h>

#include <algorithm>
#include <map>
#include <system_error>

#include "common/fs.hpp"
#include "manifest/crypto.hpp"
#include "manifest/tuf/client.hpp"
#include "manifest/tuf/metadata.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

constexpr std::uint64_t kMaxMetadataBytes = 16u << 20;

// A scratch directory for a TUF client's trusted metadata, removed with everything in it.
class ScratchDir {
 public:
  static Result<ScratchDir> create() {
    std::error_code ec;
    stdfs::path base = stdfs::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string tmpl = (base / "mota-bundle-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) return fail(errno_error("mkdtemp", tmpl, errno));
    ScratchDir d;
    d.path_ = tmpl;
    return d;
  }
  ScratchDir(ScratchDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir() {
    if (!path_.empty()) (void)fs::remove_all(path_);
  }
  const stdfs::path& path() const { return path_; }

 private:
  ScratchDir() = default;
  stdfs::path path_;
};

// Serves the repository's files to a TUF client ("repo:metadata/timestamp.json" is
// DIR/repo/metadata/timestamp.json) and keeps the bytes of every file served, in order: the
// bundle gets exactly the bytes that were verified, even if a publish replaces timestamp.json
// meanwhile.
class RecordingDirSource : public http::Client {
 public:
  static constexpr std::string_view kScheme = "repo:";
  explicit RecordingDirSource(stdfs::path root) : root_(std::move(root)) {}

  Result<http::ResponseInfo> get(const http::GetRequest& req, const http::Sink& sink) override {
    if (!req.url.starts_with(kScheme) || req.range_start) {
      return fail(Errc::internal, "unexpected request " + req.url);
    }
    const std::string rel = req.url.substr(kScheme.size());
    MOTA_TRY(storage::check_entry_name(rel, storage::BundleLimits{}.max_name_bytes));
    const stdfs::path file = root_ / rel;
    std::error_code ec;
    if (!stdfs::is_regular_file(file, ec)) {
      return tl::unexpected(Error(Errc::http, "GET " + req.url + ": 404", 404));
    }
    std::string bytes =
        MOTA_TRY(fs::read_file(file, req.max_bytes ? req.max_bytes : kMaxMetadataBytes));
    http::ResponseInfo info;
    info.status = 200;
    info.content_length = bytes.size();
    info.bytes_received = bytes.size();
    if (!bytes.empty()) {
      if (req.on_headers) MOTA_TRY(req.on_headers(info));
      MOTA_TRY(sink(std::as_bytes(std::span(bytes.data(), bytes.size()))));
    }
    files_.emplace_back(rel, std::move(bytes));
    return info;
  }
  Result<http::Response> post(const std::string& url, const std::string&,
                              const std::map<std::string, std::string>&, std::uint64_t) override {
    return fail(Errc::internal, "unexpected POST " + url);
  }
  const std::vector<std::pair<std::string, std::string>>& files() const { return files_; }

 private:
  stdfs::path root_;
  std::vector<std::pair<std::string, std::string>> files_;
};

std::string sha256_of(const tuf::TargetFile& t) {
  auto it = t.hashes.find("sha256");
  return it == t.hashes.end() ? std::string() : it->second;
}

// "targets/<dir>/<sha256>.<name>": where a target is in the repository and in a bundle.
std::string target_entry(const std::string& path, const std::string& sha256) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return "targets/" + sha256 + "." + path;
  return "targets/" + path.substr(0, slash + 1) + sha256 + "." + path.substr(slash + 1);
}

// "channels/<channel>/<model>.json".
bool is_channel_of(const std::string& path, const std::string& model) {
  const std::string tail = "/" + model + ".json";
  if (!path.starts_with("channels/") || !path.ends_with(tail)) return false;
  const std::string channel = path.substr(9, path.size() - 9 - tail.size());
  return !channel.empty() && channel.find('/') == std::string::npos;
}

std::vector<std::string> channel_paths(const tuf::Targets& targets, const std::string& model) {
  std::vector<std::string> out;
  for (const auto& [path, info] : targets.targets) {
    if (is_channel_of(path, model)) out.push_back(path);
  }
  return out;
}

void set_expiry(BundleInfo& info) {
  bool first = true;
  for (const auto& r : info.roles) {
    if (first || r.expires < info.expires) {
      info.expires = r.expires;
      info.expires_first = r.role;
      first = false;
    }
  }
}

std::string human(std::uint64_t n) {
  char buf[32];
  if (n >= (1u << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(n) / double(1u << 20));
  } else if (n >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", double(n) / 1024.0);
  } else {
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(n));
  }
  return buf;
}

BundleInfo basics(const storage::BundleReader& r) {
  BundleInfo info;
  info.path = r.path();
  info.size = r.file_size();
  info.index = r.index();
  info.entries = r.entries();
  return info;
}

// What the bundle says about itself, read without trusting it.
Result<BundleInfo> describe(const storage::BundleReader& r) {
  BundleInfo info = basics(r);
  auto entry = [&](const std::string& name) -> Result<std::string> {
    const auto* e = r.find(name);
    if (!e) return fail(Errc::not_found, "the bundle has no " + name);
    return r.read(*e, kMaxMetadataBytes);
  };
  // The newest root in the bundle (none: the chain ends at the devices' own root 1).
  std::uint64_t root_version = 0;
  for (const auto& e : r.entries()) {
    const std::string& n = e.name;
    if (!n.starts_with("metadata/") || !n.ends_with(".root.json")) continue;
    const std::string num = n.substr(9, n.size() - 9 - 10);
    if (num.empty() || num.size() > 19 ||
        !std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    root_version = std::max<std::uint64_t>(root_version, std::stoull(num));
  }
  if (root_version > 0) {
    const std::string name = "metadata/" + std::to_string(root_version) + ".root.json";
    auto root = MOTA_TRY_CTX(tuf::parse_root(MOTA_TRY(entry(name))), name);
    info.roles.push_back({"root", root.signed_.version, root.signed_.expires});
  }
  auto ts = MOTA_TRY_CTX(tuf::parse_timestamp(MOTA_TRY(entry("metadata/timestamp.json"))),
                         "metadata/timestamp.json");
  const std::string snap_name =
      "metadata/" + std::to_string(ts.signed_.snapshot.version) + ".snapshot.json";
  auto snap = MOTA_TRY_CTX(tuf::parse_snapshot(MOTA_TRY(entry(snap_name))), snap_name);
  auto tmeta = snap.signed_.meta.find("targets.json");
  if (tmeta == snap.signed_.meta.end()) {
    return fail(Errc::parse, snap_name + " does not list targets.json");
  }
  const std::string targets_name =
      "metadata/" + std::to_string(tmeta->second.version) + ".targets.json";
  auto targets = MOTA_TRY_CTX(tuf::parse_targets(MOTA_TRY(entry(targets_name))), targets_name);
  info.roles.push_back({"timestamp", ts.signed_.version, ts.signed_.expires});
  info.roles.push_back({"snapshot", snap.signed_.version, snap.signed_.expires});
  info.roles.push_back({"targets", targets.signed_.version, targets.signed_.expires});
  set_expiry(info);

  auto add_target = [&](const std::string& kind, const std::string& path,
                        const std::string& from) -> Status {
    auto it = targets.signed_.targets.find(path);
    if (it == targets.signed_.targets.end()) {
      return fail(Errc::not_found,
                  "the bundle's targets metadata does not list its " + kind + " " + path);
    }
    BundleTarget t;
    t.kind = kind;
    t.path = path;
    t.length = it->second.length;
    t.sha256 = sha256_of(it->second);
    t.entry = target_entry(path, t.sha256);
    t.from = from;
    info.targets.push_back(std::move(t));
    return {};
  };
  MOTA_TRY(add_target("package", info.index.package, ""));
  for (const auto& d : info.index.deltas) MOTA_TRY(add_target("delta", d.target, d.from));
  for (const auto& path : channel_paths(targets.signed_, info.index.model)) {
    MOTA_TRY(add_target("channel", path, ""));
  }
  return info;
}

// Streams a target from the bundle through every hash its (verified) metadata lists.
Status check_target(const storage::BundleReader& r, const std::string& entry_name,
                    const std::string& path, const tuf::TargetFile& t) {
  const auto* e = r.find(entry_name);
  if (!e)
    return fail(Errc::not_found, "the bundle has no " + entry_name + " (target " + path + ")");
  if (e->size != t.length) {
    return fail(Errc::verification, path + ": length " + std::to_string(e->size) +
                                        " does not match the signed " + std::to_string(t.length));
  }
  std::vector<std::pair<std::string, crypto::Hasher>> hashers;
  for (const auto& [name, want] : t.hashes) {
    if (auto algo = crypto::hash_from_name(name)) hashers.emplace_back(name, crypto::Hasher(*algo));
  }
  if (hashers.empty()) return fail(Errc::unsupported, path + ": no supported hash is listed");
  MOTA_TRY(r.stream(*e, 0, [&](std::span<const std::byte> chunk) -> Status {
    for (auto& [name, h] : hashers) h.update(chunk);
    return {};
  }));
  for (auto& [name, h] : hashers) {
    const std::string got = h.hex_digest();
    if (!crypto::digest_equal(got, t.hashes.at(name))) {
      return fail(Errc::verification, path + ": " + name + " mismatch (got " + got + ", signed " +
                                          t.hashes.at(name) + ")");
    }
  }
  return {};
}

// Verifies a bundle as a device that trusts only `trusted_root` would at `now`; fills
// info.checked and the verified roles.
Status verify(const storage::BundleReader& r, std::string_view trusted_root, TimePoint now,
              BundleInfo& info) {
  auto scratch = MOTA_TRY(ScratchDir::create());
  const auto meta = scratch.path() / "metadata";
  MOTA_TRY_CTX(tuf::Client::init(meta, trusted_root), "trusted root");
  const auto start_root = MOTA_TRY(tuf::parse_root(trusted_root));
  storage::BundleSource source(r);
  tuf::ClientConfig tc;
  tc.metadata_dir = meta;
  tc.metadata_base_url = storage::BundleSource::url("metadata");
  tc.now = [now] { return now; };
  tuf::Client client(tc, source);
  MOTA_TRY_CTX(client.refresh(), "metadata");
  const tuf::Root& root = *client.root();
  info.roles = {{"root", root.version, root.expires},
                {"timestamp", client.timestamp()->version, client.timestamp()->expires},
                {"snapshot", client.snapshot()->version, client.snapshot()->expires},
                {"targets", client.targets()->version, client.targets()->expires}};
  set_expiry(info);
  info.checked.push_back("metadata: root " +
                         (root.version == start_root.signed_.version
                              ? "version " + std::to_string(root.version)
                              : "chain " + std::to_string(start_root.signed_.version) + " -> " +
                                    std::to_string(root.version)) +
                         ", timestamp " + std::to_string(client.timestamp()->version) +
                         ", snapshot " + std::to_string(client.snapshot()->version) + ", targets " +
                         std::to_string(client.targets()->version) +
                         ": signatures, thresholds, versions, lengths, hashes, expiry at " +
                         format_time(now));

  std::vector<BundleTarget> targets;
  auto check = [&](const std::string& kind, const std::string& path,
                   const std::string& from) -> Status {
    auto t = client.get_target(path);
    if (!t && t.error().code() == Errc::not_found) {
      return fail(Errc::not_found, "its " + kind + " " + path + " is not a signed target");
    }
    if (!t) return fail(std::move(t).error().context(path));
    const std::string url = client.target_url(storage::BundleSource::url("targets"), path, *t);
    const std::string entry = url.substr(storage::kBundleScheme.size());
    MOTA_TRY(check_target(r, entry, path, *t));
    targets.push_back({kind, path, entry, t->length, sha256_of(*t), from});
    info.checked.push_back(kind + " " + path + ": " + human(t->length) + ", every listed hash");
    return {};
  };
  const auto& idx = r.index();
  if (idx.package != release_target_path(idx.model, idx.version)) {
    return fail(Errc::verification, "bundle.json names package " + idx.package + " for " +
                                        idx.model + " " + idx.version);
  }
  MOTA_TRY(check("package", idx.package, ""));
  for (const auto& d : idx.deltas) {
    if (d.target != delta_target_path(idx.model, d.from, idx.version)) {
      return fail(Errc::verification, "bundle.json names delta " + d.target + " from " + d.from);
    }
    MOTA_TRY(check("delta", d.target, d.from));
  }
  for (const auto& path : channel_paths(*client.targets(), idx.model)) {
    MOTA_TRY(check("channel", path, ""));
  }
  info.targets = std::move(targets);
  info.verified_against = "root version " + std::to_string(start_root.signed_.version);
  return {};
}

}  // namespace

Result<BundleInfo> inspect_bundle(const stdfs::path& bundle,
                                  const std::optional<std::string>& trusted_root, NowFn now) {
  auto reader = MOTA_TRY(storage::BundleReader::open(bundle));
  if (!trusted_root) return describe(reader).context(bundle.string());
  // Verified: every fact shown comes from the checked metadata, nothing read before the check.
  BundleInfo info = basics(reader);
  MOTA_TRY_CTX(verify(reader, *trusted_root, now(), info), bundle.string() + " does not verify");
  return info;
}

Result<BundleInfo> create_bundle(const stdfs::path& repo_dir, const BundleRequest& req, NowFn now) {
  if (req.model.empty() || req.version.empty()) {
    return fail(Errc::invalid_argument, "bundle create: a model and a version are needed");
  }
  auto repository = MOTA_TRY(Repository::open(repo_dir, now));
  const TimePoint t0 = now();
  if (req.valid_for) {
    const auto roles = MOTA_TRY(repository.expiry_status());
    for (const auto& role : roles) {
      if (role.role == "root" && role.expires < t0 + *req.valid_for) {
        return fail(Errc::expired, "--valid-for " + format_duration(*req.valid_for) +
                                       ": the root (version " + std::to_string(role.version) +
                                       ") expires at " + format_time(role.expires) +
                                       ", sooner: " + renew_hint("root") + " first");
      }
    }
    RefreshOptions ro;
    ro.valid_for = req.valid_for;
    auto r = MOTA_TRY_CTX(repository.refresh(ro), "--valid-for: re-sign the metadata to last " +
                                                      format_duration(*req.valid_for));
    if (!r.missing_keys.empty()) {
      std::string what;
      for (const auto& m : r.missing_keys) what += (what.empty() ? "" : "; ") + m;
      return fail(Errc::not_found,
                  "--valid-for: cannot re-sign the metadata, no key here: " + what);
    }
  }

  const stdfs::path served = repo_dir / "repo";
  const std::string root1 =
      MOTA_TRY(fs::read_file(served / "metadata" / "1.root.json", kMaxMetadataBytes));
  auto scratch = MOTA_TRY(ScratchDir::create());
  MOTA_TRY_CTX(tuf::Client::init(scratch.path() / "metadata", root1), "1.root.json");
  RecordingDirSource source(served);
  tuf::ClientConfig tc;
  tc.metadata_dir = scratch.path() / "metadata";
  tc.metadata_base_url = std::string(RecordingDirSource::kScheme) + "metadata";
  tc.now = [t0] { return t0; };
  tuf::Client client(tc, source);
  if (auto st = client.refresh(); !st) {
    Error e = std::move(st).error().context("the repository's metadata, checked as a device would");
    if (e.code() == Errc::expired) {
      return fail(Errc::expired, e.message() +
                                     " (run `mota timestamp refresh`, or make the bundle with "
                                     "--valid-for to keep it installable longer)");
    }
    return fail(std::move(e));
  }

  // The targets, looked up through the (verified) metadata as a device does.
  struct Pick {
    std::string kind, path, from;
    tuf::TargetFile info;
  };
  std::vector<Pick> picks;
  const std::string package = release_target_path(req.model, req.version);
  {
    auto t = client.get_target(package);
    if (!t && t.error().code() == Errc::not_found) {
      return fail(Errc::not_found, req.model + " " + req.version + " is not released in " +
                                       repo_dir.string() + " (see `mota release list`)");
    }
    if (!t) return fail(std::move(t).error().context(package));
    picks.push_back({"package", package, "", std::move(*t)});
  }
  std::vector<std::string> froms = req.delta_from;
  std::sort(froms.begin(), froms.end());
  froms.erase(std::unique(froms.begin(), froms.end()), froms.end());
  for (const auto& from : froms) {
    const std::string path = delta_target_path(req.model, from, req.version);
    auto t = client.get_target(path);
    if (!t && t.error().code() == Errc::not_found) {
      return fail(Errc::not_found, "no delta from " + from + " to " + req.version + " of " +
                                       req.model + " is published (see `mota release deltas " +
                                       req.model + "`)");
    }
    if (!t) return fail(std::move(t).error().context(path));
    picks.push_back({"delta", path, from, std::move(*t)});
  }
  for (const auto& path : channel_paths(*client.targets(), req.model)) {
    auto t = MOTA_TRY_CTX(client.get_target(path), path);
    picks.push_back({"channel", path, "", std::move(t)});
  }

  storage::BundleIndex index;
  index.model = req.model;
  index.version = req.version;
  index.package = package;
  for (const auto& p : picks) {
    if (p.kind == "delta") index.deltas.push_back({p.from, p.path});
  }
  index.created = format_time(t0);
  {
    BundleInfo roles;
    const tuf::Root& root = *client.root();
    roles.roles = {{"root", root.version, root.expires},
                   {"timestamp", client.timestamp()->version, client.timestamp()->expires},
                   {"snapshot", client.snapshot()->version, client.snapshot()->expires},
                   {"targets", client.targets()->version, client.targets()->expires}};
    set_expiry(roles);
    index.expires = format_time(roles.expires);
  }

  const stdfs::path out =
      req.output.empty() ? stdfs::current_path() /
                               (req.model + "-" + req.version + std::string(storage::kBundleSuffix))
                         : req.output;
  {
    auto w = MOTA_TRY_CTX(storage::BundleWriter::create(out), out.string());
    MOTA_TRY(w.add("bundle.json", index.to_json()));
    // 1.root.json is never fetched by a device (it starts from its own); it lets `mota bundle
    // inspect` show where the chain starts.
    MOTA_TRY(w.add("metadata/1.root.json", root1));
    for (const auto& [name, bytes] : source.files()) MOTA_TRY(w.add(name, bytes));
    // Channels, then deltas, then the package (the big one last: `tar tvf` reads well).
    for (const char* kind : {"channel", "delta", "package"}) {
      for (const auto& p : picks) {
        if (p.kind != kind) continue;
        const std::string url = client.target_url("targets", p.path, p.info);
        MOTA_TRY_CTX(w.add_file(url, served / url), p.path);
      }
    }
    MOTA_TRY_CTX(w.commit(), out.string());
  }
  // The file as written, checked as a device that trusts only root 1 would check it.
  auto info = inspect_bundle(out, root1, [t0] { return t0; });
  if (!info) {
    std::error_code ec;
    stdfs::remove(out, ec);
    return fail(std::move(info).error().context("the bundle written does not verify (removed)"));
  }
  return info;
}

}  // namespace mota::manager
