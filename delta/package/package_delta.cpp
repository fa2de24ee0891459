// Package deltas: one file delta (or copy instruction) per file of the new model version.
#include "delta/package/package_delta.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/fs.hpp"
#include "delta/format.hpp"
#include "delta/hash.hpp"
#include "delta/pipeline.hpp"
#include "manifest/crypto.hpp"

namespace mota::delta {
namespace {

using nlohmann::json;

FileEntry manifest_entry(std::string_view text) {
  return FileEntry{kManifestName, text.size(), crypto::sha256_hex(text)};
}

std::string digest_of(const ModelManifest& m, std::string_view text) {
  std::vector<FileEntry> entries = m.files;
  entries.push_back(manifest_entry(text));
  return tree_digest(std::move(entries));
}

struct Tree {
  std::string text;
  ModelManifest manifest;
  std::string digest;
};

Result<Tree> read_tree(const stdfs::path& dir) {
  Tree t;
  t.text = MOTA_TRY(fs::read_file(dir / kManifestName, kMaxManifestBytes));
  t.manifest = MOTA_TRY_CTX(ModelManifest::parse(t.text), (dir / kManifestName).string());
  t.digest = digest_of(t.manifest, t.text);
  return t;
}

json side_json(const PackageSide& s) {
  return json{{"name", s.name}, {"version", s.version}, {"tree_digest", s.tree_digest}};
}

template <class T>
void put(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
template <class T>
T get(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Parses and checks the JSON section against the new manifest it carries.
Result<PackageDeltaInfo> parse_package_json(const std::string& text) {
  PackageDeltaInfo info;
  try {
    json j = json::parse(text);
    auto side = [&](const char* key) -> Result<PackageSide> {
      const json& s = j.at(key);
      return PackageSide{s.at("name").get<std::string>(), s.at("version").get<std::string>(),
                         s.at("tree_digest").get<std::string>()};
    };
    info.from = MOTA_TRY(side("from"));
    info.to = MOTA_TRY(side("to"));
    info.manifest_text = j.at("manifest").get<std::string>();
    for (const json& f : j.at("files")) {
      PackageFileInfo pf;
      pf.path = f.at("path").get<std::string>();
      pf.kind = f.at("kind").get<std::string>();
      pf.base = f.value("base", std::string());
      info.files.push_back(std::move(pf));
    }
  } catch (const std::exception& e) {
    return fail(Errc::parse, std::string("package delta header: ") + e.what());
  }
  ModelManifest m =
      MOTA_TRY_CTX(ModelManifest::parse(info.manifest_text), "package delta header: model.json");
  if (m.files.size() != info.files.size())
    return fail(Errc::parse, "package delta header: file list differs from its model.json");
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    PackageFileInfo& pf = info.files[i];
    if (pf.path != m.files[i].path)
      return fail(Errc::parse, "package delta header: file list differs from its model.json");
    pf.size = m.files[i].size;
    info.new_total_size += pf.size;
    const bool needs_base = pf.kind == "copy" || pf.kind == "delta";
    if (!needs_base && pf.kind != "new")
      return fail(Errc::parse, "package delta header: " + pf.path + ": unknown kind " + pf.kind);
    if (needs_base != !pf.base.empty() || (needs_base && !valid_package_path(pf.base)))
      return fail(Errc::parse, "package delta header: " + pf.path + ": bad base path");
  }
  if (info.to.tree_digest != digest_of(m, info.manifest_text))
    return fail(Errc::parse, "package delta header: tree digest does not match its model.json");
  return info;
}

Result<PackageDeltaInfo> read_header_impl(const ReadFn& delta) {
  std::array<std::byte, format::kPackageHeaderSize> hb;
  MOTA_TRY(format::read_exact(delta, hb, "package header"));
  if (std::memcmp(hb.data(), format::kMagic.data(), 8) != 0)
    return fail(Errc::parse, "not a mota delta (bad magic)");
  if (get<std::uint32_t>(hb.data() + 8) != format::kVersion)
    return fail(Errc::unsupported, "delta format version " +
                                       std::to_string(get<std::uint32_t>(hb.data() + 8)) +
                                       ", this build reads 1");
  if (get<std::uint32_t>(hb.data() + 12) != format::kKindPackage)
    return fail(Errc::parse, "not a package delta (a file delta?)");
  const auto len = get<std::uint64_t>(hb.data() + 16);
  if (len > format::kMaxPackageJson)
    return fail(Errc::parse, "package delta header: " + std::to_string(len) + " bytes of JSON");
  std::string text(static_cast<std::size_t>(len), '\0');
  MOTA_TRY(format::read_exact(delta, std::as_writable_bytes(std::span(text)), "package header"));
  if (xxh64(std::as_bytes(std::span(text))) != get<std::uint64_t>(hb.data() + 24))
    return fail(Errc::parse, "package delta header is damaged (checksum mismatch)");
  auto info = MOTA_TRY(parse_package_json(text));
  info.delta_size = hb.size() + len;
  return info;
}

Status read_package_trailer(const ReadFn& delta) {
  std::array<std::byte, 8> end;
  MOTA_TRY(format::read_exact(delta, end, "package trailer"));
  if (std::memcmp(end.data(), format::kPackageEnd.data(), 8) != 0)
    return fail(Errc::parse, "package delta trailer is damaged");
  return {};
}

}  // namespace

Result<PackageDeltaInfo> diff_package_dirs(const stdfs::path& old_dir, const stdfs::path& new_dir,
                                           const stdfs::path& out_path,
                                           const DiffOptions& options) {
  // Both trees are hashed in full: a delta made from a tree that does not match its model.json
  // would fail on every device.
  MOTA_TRY_CTX(storage::verify_tree(old_dir), "old version");
  MOTA_TRY_CTX(storage::verify_tree(new_dir), "new version");
  const Tree old = MOTA_TRY(read_tree(old_dir));
  const Tree neu = MOTA_TRY(read_tree(new_dir));

  PackageDeltaInfo info;
  info.from = {old.manifest.name, old.manifest.version, old.digest};
  info.to = {neu.manifest.name, neu.manifest.version, neu.digest};
  info.manifest_text = neu.text;
  std::map<std::string, const FileEntry*> old_by_path, old_by_hash;
  for (const auto& f : old.manifest.files) {
    old_by_path[f.path] = &f;
    old_by_hash.emplace(f.sha256, &f);
  }
  json files = json::array();
  for (const auto& f : neu.manifest.files) {
    PackageFileInfo pf;
    pf.path = f.path;
    pf.size = f.size;
    auto same_path = old_by_path.find(f.path);
    if (same_path != old_by_path.end() && same_path->second->sha256 == f.sha256) {
      pf.kind = "copy";
      pf.base = f.path;
    } else if (auto h = old_by_hash.find(f.sha256); h != old_by_hash.end()) {
      pf.kind = "copy";
      pf.base = h->second->path;
    } else if (same_path != old_by_path.end()) {
      pf.kind = "delta";
      pf.base = f.path;
    } else {
      pf.kind = "new";
    }
    json e{{"path", pf.path}, {"kind", pf.kind}};
    if (!pf.base.empty()) e["base"] = pf.base;
    files.push_back(std::move(e));
    info.new_total_size += f.size;
    info.files.push_back(std::move(pf));
  }
  json j{{"format", 1},
         {"from", side_json(info.from)},
         {"to", side_json(info.to)},
         {"manifest", neu.text},
         {"files", files}};
  const std::string text = j.dump();

  auto out = MOTA_TRY(fs::AtomicFile::create(stdfs::absolute(out_path)));
  std::array<std::byte, format::kPackageHeaderSize> hb{};
  std::memcpy(hb.data(), format::kMagic.data(), 8);
  put<std::uint32_t>(hb.data() + 8, format::kVersion);
  put<std::uint32_t>(hb.data() + 12, format::kKindPackage);
  put<std::uint64_t>(hb.data() + 16, text.size());
  put<std::uint64_t>(hb.data() + 24, xxh64(std::as_bytes(std::span(text))));
  MOTA_TRY(out.write_all(hb));
  MOTA_TRY(out.write_all(text));
  info.delta_size = hb.size() + text.size();
  auto sink = [&](std::span<const std::byte> b) -> Status {
    info.delta_size += b.size();
    return out.write_all(b).context("write " + out_path.string());
  };
  for (std::size_t i = 0; i < info.files.size(); ++i) {
    PackageFileInfo& pf = info.files[i];
    if (pf.kind == "copy") continue;
    const stdfs::path base = pf.kind == "delta" ? old_dir / pf.base : stdfs::path();
    auto fi = MOTA_TRY_CTX(diff(base, new_dir / pf.path, sink, options), pf.path);
    if (fi.new_sha256 != neu.manifest.files[i].sha256)
      return fail(Errc::verification, pf.path + ": changed while the delta was made");
    pf.delta = std::move(fi);
  }
  MOTA_TRY(out.write_all(std::as_bytes(std::span(format::kPackageEnd))));
  info.delta_size += format::kPackageEnd.size();
  MOTA_TRY(out.commit());
  return info;
}

Result<PackageDeltaInfo> read_package_header(const ReadFn& delta) {
  return read_header_impl(delta);
}

namespace {

Status write_fsynced(const stdfs::path& p, const std::function<Status(fs::File&)>& fill) {
  auto f = MOTA_TRY(fs::File::open_write(p, O_CREAT | O_EXCL, 0644));
  if (::fchmod(f.fd(), 0644) != 0) return fail(errno_error("chmod", p.string(), errno));
  MOTA_TRY(fill(f));
  MOTA_TRY_CTX(f.sync(), p.string());
  return f.close();
}

Result<storage::UnpackResult> apply_into(const stdfs::path& old_dir, const ReadFn& delta,
                                         const stdfs::path& dest,
                                         const PackageApplyOptions& options) {
  const PackageDeltaInfo info = MOTA_TRY(read_header_impl(delta));
  const Tree old = MOTA_TRY_CTX(read_tree(old_dir), "base version");
  if (old.digest != info.from.tree_digest || old.manifest.name != info.from.name) {
    return fail(Errc::verification, "the delta applies to " + info.from.name + " " +
                                        info.from.version + " (tree " + info.from.tree_digest +
                                        "), the base is " + old.manifest.name + " " +
                                        old.manifest.version + " (tree " + old.digest + ")");
  }
  ModelManifest m = MOTA_TRY(ModelManifest::parse(info.manifest_text));
  if (m.files.size() > options.limits.max_files)
    return fail(Errc::too_large, "the delta's model.json lists too many files");
  if (info.new_total_size > options.limits.max_total_bytes)
    return fail(Errc::too_large, "the delta's model.json lists more than the byte limit");
  std::map<std::string, const FileEntry*> old_files;
  for (const auto& f : old.manifest.files) old_files[f.path] = &f;

  MOTA_TRY(fs::write_file_atomic(dest / kManifestName, info.manifest_text, 0644));
  std::set<stdfs::path> dirs{dest};
  std::uint64_t written = 0;
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    const FileEntry& want = m.files[i];
    const PackageFileInfo& pf = info.files[i];
    const stdfs::path out = dest / want.path;
    for (stdfs::path d = out.parent_path(); d != dest; d = d.parent_path()) dirs.insert(d);
    MOTA_TRY(fs::make_dirs(out.parent_path()));
    stdfs::path base;
    if (!pf.base.empty()) {
      if (!old_files.count(pf.base))
        return fail(Errc::parse, want.path + ": base " + pf.base + " is not in the base version");
      base = old_dir / pf.base;
    }
    // A copied file is hashed here; a decoded one is hashed by apply() (which checks it against
    // the delta's trailer), and that digest is compared below: hashing it twice would cost a
    // second sha256 pass over every byte on the writer's thread.
    crypto::Hasher hasher;
    std::string got;
    std::uint64_t size = 0;
    auto sink = [&](std::span<const std::byte> b) -> Status {
      if (b.size() > want.size - size)
        return fail(Errc::verification, want.path + ": longer than model.json says");
      size += b.size();
      return {};
    };
    MOTA_TRY(write_fsynced(out, [&](fs::File& f) -> Status {
      Writeback writeback(f.fd());
      auto to_file = [&](std::span<const std::byte> b) -> Status {
        MOTA_TRY(sink(b));
        MOTA_TRY(f.write_all(b).context("write " + out.string()));
        writeback.wrote(b.size());
        return {};
      };
      if (pf.kind == "copy") {
        auto in = MOTA_TRY(fs::File::open_read(base));
        std::vector<std::byte> buf(1 << 20);
        for (;;) {
          auto n = MOTA_TRY_CTX(in.read_some(buf), base.string());
          if (n == 0) break;
          hasher.update(std::span(buf.data(), n));
          MOTA_TRY(to_file(std::span(buf.data(), n)));
        }
        got = hasher.hex_digest();
        return {};
      }
      auto r = MOTA_TRY_CTX(apply(base, delta, to_file, options.file), want.path);
      got = r.new_sha256;
      return {};
    }));
    if (size != want.size || !crypto::digest_equal(got, want.sha256)) {
      return fail(Errc::verification, want.path + ": result is " + std::to_string(size) +
                                          " bytes with sha256 " + got + ", model.json says " +
                                          std::to_string(want.size) + " bytes, " + want.sha256 +
                                          (pf.kind == "copy" ? " (base file modified?)" : ""));
    }
    written += size;
  }
  MOTA_TRY(read_package_trailer(delta));
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) MOTA_TRY(fs::fsync_dir(*it));
  storage::UnpackResult result;
  result.tree_digest = digest_of(m, info.manifest_text);
  if (result.tree_digest != info.to.tree_digest)
    return fail(Errc::verification, "result tree digest differs from the delta's");
  result.manifest = std::move(m);
  result.bytes_written = written;
  return result;
}

}  // namespace

Result<storage::UnpackResult> apply_package(const stdfs::path& old_dir, const ReadFn& delta,
                                            const stdfs::path& dest_dir,
                                            const PackageApplyOptions& options) {
  struct stat st {};
  if (::lstat(dest_dir.c_str(), &st) == 0)
    return fail(Errc::already_exists, dest_dir.string() + " already exists");
  if (::mkdir(dest_dir.c_str(), 0755) != 0)
    return fail(errno_error("mkdir", dest_dir.string(), errno));
  auto r = apply_into(old_dir, delta, dest_dir, options);
  if (!r) {
    (void)fs::remove_all(dest_dir);
    return r;
  }
  if (auto parent = stdfs::absolute(dest_dir).parent_path(); !parent.empty())
    MOTA_TRY(fs::fsync_dir(parent));
  return r;
}

Result<storage::UnpackResult> apply_package_file(const stdfs::path& old_dir,
                                                 const stdfs::path& delta_path,
                                                 const stdfs::path& dest_dir,
                                                 const PackageApplyOptions& options) {
  ReadFn in = MOTA_TRY(file_reader(delta_path));
  bool extra = false;
  ReadFn checked = [&](std::span<std::byte> b) { return in(b); };
  auto r = apply_package(old_dir, checked, dest_dir, options);
  if (!r) return std::move(r).context(delta_path.string());
  std::byte one;
  if (MOTA_TRY(in(std::span(&one, 1))) != 0) extra = true;
  if (extra) {
    (void)fs::remove_all(dest_dir);
    return fail(Errc::parse, delta_path.string() + ": bytes after the end of the delta");
  }
  return r;
}

// ---- inspect ----

Result<DeltaInfo> inspect(const ReadFn& delta) {
  std::array<std::byte, 16> head;
  MOTA_TRY(format::read_exact(delta, head, "header"));
  if (std::memcmp(head.data(), format::kMagic.data(), 8) != 0)
    return fail(Errc::parse, "not a mota delta (bad magic)");
  // Replays the 16 bytes already read, then the rest of the stream.
  std::size_t replay = 0;
  ReadFn again = [&](std::span<std::byte> b) -> Result<std::size_t> {
    if (replay < head.size()) {
      std::size_t n = std::min(b.size(), head.size() - replay);
      std::memcpy(b.data(), head.data() + replay, n);
      replay += n;
      return n;
    }
    return delta(b);
  };
  DeltaInfo out;
  if (get<std::uint32_t>(head.data() + 12) == format::kKindPackage) {
    out.is_package = true;
    PackageDeltaInfo info = MOTA_TRY(read_header_impl(again));
    for (auto& pf : info.files) {
      if (pf.kind == "copy") continue;
      auto fi = MOTA_TRY_CTX(inspect_file_delta(again), pf.path);
      info.delta_size += fi.delta_size;
      pf.delta = std::move(fi);
    }
    MOTA_TRY(read_package_trailer(again));
    info.delta_size += 8;
    out.package = std::move(info);
  } else {
    out.file = MOTA_TRY(inspect_file_delta(again));
  }
  return out;
}

Result<DeltaInfo> inspect_file(const stdfs::path& delta_path) {
  ReadFn in = MOTA_TRY(file_reader(delta_path));
  return inspect(in).context(delta_path.string());
}

}  // namespace mota::delta
