#include "storage/package.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "common/fs.hpp"
#include "common/semver.hpp"
#include "manifest/crypto.hpp"
#include "storage/platform/libarchive/tar.hpp"

namespace mota::storage {
namespace stdfs = std::filesystem;
namespace {

// SHA-256 on a worker thread, so hashing a big file overlaps decompressing and writing it (on a
// device with two cores that is the difference between one pass and two). Chunks are copied
// into a bounded queue (kAsyncDepth blocks), so memory stays constant.
class AsyncHasher {
 public:
  AsyncHasher() : worker_([this] { run(); }) {}
  ~AsyncHasher() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  AsyncHasher(const AsyncHasher&) = delete;
  AsyncHasher& operator=(const AsyncHasher&) = delete;

  void update(std::span<const std::byte> data) {
    std::vector<std::byte> chunk;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return queue_.size() < kAsyncDepth; });
      if (!spare_.empty()) {
        chunk = std::move(spare_.back());
        spare_.pop_back();
      }
    }
    chunk.assign(data.begin(), data.end());
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(chunk));
    }
    cv_.notify_all();
  }

  // Waits for every chunk given so far.
  std::string hex_digest() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
    return hasher_.hex_digest();
  }

 private:
  static constexpr std::size_t kAsyncDepth = 2;

  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return done_ || !queue_.empty(); });
      if (queue_.empty()) return;  // done_
      auto chunk = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      hasher_.update(chunk);
      lock.lock();
      busy_ = false;
      spare_.push_back(std::move(chunk));
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<std::byte>> queue_;
  std::vector<std::vector<std::byte>> spare_;
  crypto::Hasher hasher_;  // touched by the worker only, and by hex_digest once it is idle
  bool busy_ = false;
  bool done_ = false;
  std::thread worker_;
};

// Files at least this big are hashed on a worker thread; small ones are not worth a thread.
constexpr std::uint64_t kAsyncHashMin = 4u << 20;

// Files move through memory in blocks of this size: memory use is independent of file size.
constexpr std::size_t kBlock = 1 << 20;

std::string in_quotes(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

// mota's own temporary files (fs::AtomicFile) are ".<name>.tmp-XXXXXXXX". Packing one would
// ship a half-written file, so pack refuses them; other hidden files are ordinary content.
bool looks_like_temp_file(std::string_view name) {
  return name.size() > 1 && name[0] == '.' && name.find(".tmp-") != std::string_view::npos;
}

// Reads until `buf` is full or the file ends, so that block boundaries (and with them the
// compressor's input) do not depend on how the kernel splits reads.
Result<std::size_t> read_full(fs::File& f, std::span<std::byte> buf) {
  std::size_t got = 0;
  while (got < buf.size()) {
    auto n = MOTA_TRY(f.read_some(buf.subspan(got)));
    if (n == 0) break;
    got += n;
  }
  return got;
}

Result<fs::File> open_regular(const stdfs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ELOOP) return fail(Errc::unsupported, p.string() + " is a symlink");
    return fail(errno_error("open", p.string(), errno));
  }
  fs::File f(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(errno_error("stat", p.string(), errno));
  if (!S_ISREG(st.st_mode)) return fail(Errc::unsupported, p.string() + " is not a regular file");
  return f;
}

struct HashedFile {
  std::uint64_t size = 0;
  std::string sha256;
};

Result<HashedFile> hash_file(const stdfs::path& p, std::vector<std::byte>& buf) {
  auto f = MOTA_TRY(open_regular(p));
  crypto::Hasher h;
  HashedFile out;
  for (;;) {
    auto n = MOTA_TRY_CTX(read_full(f, buf), p.string());
    if (n == 0) break;
    h.update(std::span(buf.data(), n));
    out.size += n;
  }
  out.sha256 = h.hex_digest();
  return out;
}

// Every regular file under `root` except the top-level model.json, by relative path in byte
// order. Anything else that is not a directory is refused: a package holds files only.
Result<std::vector<std::string>> walk_model_dir(const stdfs::path& root) {
  std::vector<std::string> out;
  std::error_code ec;
  stdfs::recursive_directory_iterator it(root, stdfs::directory_options::none, ec);
  if (ec) return fail(Errc::io, "list " + root.string() + ": " + ec.message());
  for (; it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return fail(Errc::io, "list " + root.string() + ": " + ec.message());
    const stdfs::path& p = it->path();
    std::string rel = p.lexically_relative(root).generic_string();
    auto st = it->symlink_status(ec);
    if (ec) return fail(Errc::io, "stat " + p.string() + ": " + ec.message());
    if (stdfs::is_directory(st)) continue;
    if (stdfs::is_symlink(st)) {
      return fail(Errc::unsupported,
                  in_quotes(rel) + " is a symlink; packages hold regular files only");
    }
    if (!stdfs::is_regular_file(st)) {
      return fail(Errc::unsupported,
                  in_quotes(rel) +
                      " is a special file (device, fifo or socket); packages hold "
                      "regular files only");
    }
    if (rel == kManifestName) continue;
    if (looks_like_temp_file(p.filename().string())) {
      return fail(Errc::invalid_argument,
                  in_quotes(rel) + " looks like an interrupted temporary file; remove it first");
    }
    if (!valid_package_path(rel)) {
      return fail(Errc::invalid_argument, in_quotes(rel) + " is not a valid package path");
    }
    out.push_back(std::move(rel));
  }
  if (ec) return fail(Errc::io, "list " + root.string() + ": " + ec.message());
  std::sort(out.begin(), out.end());  // std::string compares bytes as unsigned char
  return out;
}

// Removes a directory tree on destruction unless disarmed: unpack leaves nothing on failure.
class RemoveOnFailure {
 public:
  explicit RemoveOnFailure(stdfs::path p) : path_(std::move(p)) {}
  ~RemoveOnFailure() {
    if (!path_.empty()) (void)fs::remove_all(path_);
  }
  void disarm() { path_.clear(); }

 private:
  stdfs::path path_;
};

bool all_zero(std::span<const std::byte> b) {
  return b.empty() ||
         (b[0] == std::byte{0} && std::memcmp(b.data(), b.data() + 1, b.size() - 1) == 0);
}

// Writes a file's bytes, turning runs of zero blocks into holes: a sparse model file stays
// sparse, and a large zero-filled file does not cost its size in disk writes.
class SparseWriter {
 public:
  explicit SparseWriter(fs::File& f) : f_(f) {}
  Status write(std::span<const std::byte> data) {
    if (all_zero(data)) {
      if (::lseek(f_.fd(), static_cast<off_t>(data.size()), SEEK_CUR) < 0) {
        return fail(errno_error("seek", "", errno));
      }
      hole_at_end_ = true;
      return {};
    }
    hole_at_end_ = false;
    return f_.write_all(data);
  }
  Status finish(std::uint64_t size) {
    if (hole_at_end_ && ::ftruncate(f_.fd(), static_cast<off_t>(size)) != 0) {
      return fail(errno_error("truncate", "", errno));
    }
    return {};
  }

 private:
  fs::File& f_;
  bool hole_at_end_ = false;
};

// Reads the first entry, which must be model.json, and returns its bytes.
Result<std::string> read_manifest_entry(tar::Reader& reader) {
  auto first = MOTA_TRY(reader.next());
  if (!first) return fail(Errc::parse, "package is empty (no model.json)");
  if (!reader.zstd_compressed()) {
    return fail(Errc::parse, "package is not a zstd-compressed tar");
  }
  if (first->path != kManifestName) {
    return fail(Errc::parse, "first entry " + in_quotes(first->path) +
                                 " is not model.json (model.json must come first)");
  }
  if (first->type != tar::EntryType::file) {
    return fail(Errc::parse, "model.json is a " + std::string(tar::entry_type_name(first->type)) +
                                 ", not a regular file");
  }
  if (first->size > kMaxManifestBytes) {
    return fail(Errc::too_large, "model.json is " + std::to_string(first->size) +
                                     " bytes, more than the limit of " +
                                     std::to_string(kMaxManifestBytes));
  }
  std::string text(static_cast<std::size_t>(first->size), '\0');
  std::size_t got = 0;
  for (;;) {
    std::byte extra[1];
    auto dst = got < text.size()
                   ? std::as_writable_bytes(std::span(text.data() + got, text.size() - got))
                   : std::span<std::byte>(extra);
    auto n = MOTA_TRY_CTX(reader.read(dst), "model.json");
    if (n == 0) break;
    if (got + n > text.size())
      return fail(Errc::parse, "model.json: more data than its header size");
    got += n;
  }
  if (got != text.size()) {
    return fail(Errc::parse, "model.json: " + std::to_string(got) + " bytes, header says " +
                                 std::to_string(text.size()));
  }
  return text;
}

FileEntry manifest_entry(std::string_view text) {
  return FileEntry{kManifestName, text.size(), crypto::sha256_hex(text)};
}

}  // namespace

// ---- pack ----

Result<PackResult> pack(const stdfs::path& model_dir, const stdfs::path& out_path,
                        const PackOptions& options) {
  struct stat st {};
  if (::stat(model_dir.c_str(), &st) != 0)
    return fail(errno_error("stat", model_dir.string(), errno));
  if (!S_ISDIR(st.st_mode))
    return fail(Errc::invalid_argument, model_dir.string() + " is not a directory");
  if (options.compression_level < 1 || options.compression_level > 19) {
    return fail(
        Errc::invalid_argument,
        "compression level " + std::to_string(options.compression_level) + " is not in 1..19");
  }
  // The output must not land inside the tree being packed (it would pack itself next time, or
  // its temporary file would be walked).
  std::error_code ec;
  auto dir_abs = stdfs::weakly_canonical(model_dir, ec);
  auto out_abs = stdfs::weakly_canonical(stdfs::absolute(out_path, ec).parent_path(), ec);
  if (!ec) {
    auto rel = out_abs.lexically_relative(dir_abs);
    if (!rel.empty() && *rel.begin() != "..") {
      return fail(
          Errc::invalid_argument,
          "output " + out_path.string() + " is inside the model directory " + model_dir.string());
    }
  }

  // Source manifest: everything but the file list must be right already.
  stdfs::path manifest_path = model_dir / kManifestName;
  MOTA_TRY(open_regular(manifest_path));
  std::string source_text = MOTA_TRY(fs::read_file(manifest_path, kMaxManifestBytes));
  ModelManifest m = MOTA_TRY_CTX(ModelManifest::parse(source_text, /*require_files=*/false),
                                 manifest_path.string());
  bool source_lists_files = false;
  {
    auto doc = parse_json(source_text, kMaxManifestBytes);
    source_lists_files = doc && doc->contains("files");
  }
  if (!options.name.empty()) {
    if (!valid_model_name(options.name)) {
      return fail(Errc::invalid_argument,
                  "name " + in_quotes(options.name) +
                      ": must match [a-z0-9][a-z0-9._-]* and be at most 64 characters");
    }
    m.name = options.name;
  }
  if (!options.version.empty()) {
    MOTA_TRY_CTX(SemVer::parse(options.version), "version override");
    m.version = options.version;
  }
  if (m.name.empty()) {
    return fail(Errc::invalid_argument,
                manifest_path.string() + " has no \"name\" and none was given");
  }
  if (m.version.empty()) {
    return fail(Errc::invalid_argument,
                manifest_path.string() + " has no \"version\" and none was given");
  }

  // Created first so that an unwritable destination fails before the hashing pass; removed
  // again by its destructor on any failure.
  auto out = MOTA_TRY(fs::AtomicFile::create(out_path, 0644));

  // The file list as it is on disk.
  std::vector<std::byte> buf(kBlock);
  auto paths = MOTA_TRY(walk_model_dir(model_dir));
  std::vector<FileEntry> files;
  files.reserve(paths.size());
  std::uint64_t total = 0;
  for (auto& rel : paths) {
    auto h = MOTA_TRY(hash_file(model_dir / rel, buf));
    total += h.size;
    files.push_back(FileEntry{std::move(rel), h.size, std::move(h.sha256)});
  }
  if (source_lists_files) {
    std::map<std::string_view, const FileEntry*> on_disk;
    for (const auto& f : files) on_disk[f.path] = &f;
    for (const auto& want : m.files) {
      auto it = on_disk.find(want.path);
      if (it == on_disk.end()) {
        return fail(Errc::not_found, in_quotes(want.path) + " is listed in model.json but missing");
      }
      if (it->second->size != want.size) {
        return fail(Errc::verification, in_quotes(want.path) + ": listed with size " +
                                            std::to_string(want.size) + ", file has " +
                                            std::to_string(it->second->size) + " bytes");
      }
      if (it->second->sha256 != want.sha256) {
        return fail(Errc::verification, in_quotes(want.path) + ": listed with sha256 " +
                                            want.sha256 + ", file has " + it->second->sha256);
      }
      on_disk.erase(it);
    }
    if (!on_disk.empty()) {
      return fail(Errc::invalid_argument, in_quotes(on_disk.begin()->first) +
                                              " is in the directory but not listed in model.json");
    }
  }
  m.files = std::move(files);

  // Round-trip through the strict parser: entry, labels and health files must now be listed.
  std::string manifest_text = m.serialize();
  m = MOTA_TRY_CTX(ModelManifest::parse(manifest_text), "model.json");

  crypto::Hasher package_hash;
  std::uint64_t package_size = 0;
  auto writer = MOTA_TRY(tar::Writer::open(
      [&](std::span<const std::byte> data) -> Status {
        package_hash.update(data);
        package_size += data.size();
        return out.write_all(data).context("write " + out.temp_path().string());
      },
      options.compression_level,
      std::any_of(m.files.begin(), m.files.end(), [](const FileEntry& f) {
        return std::any_of(f.path.begin(), f.path.end(), [](char c) { return (c & 0x80) != 0; });
      })));

  MOTA_TRY(writer->begin_file(kManifestName, manifest_text.size()));
  MOTA_TRY(writer->write(std::as_bytes(std::span(manifest_text))));

  std::uint64_t done = 0;
  if (options.progress) options.progress(0, total);
  for (const auto& entry : m.files) {
    stdfs::path p = model_dir / entry.path;
    auto f = MOTA_TRY(open_regular(p));
    MOTA_TRY(writer->begin_file(entry.path, entry.size));
    crypto::Hasher h;
    std::uint64_t count = 0;
    for (;;) {
      auto n = MOTA_TRY_CTX(read_full(f, buf), p.string());
      if (n == 0) break;
      count += n;
      // Declared sizes went into model.json; a file that changed since must not be packed.
      if (count > entry.size) break;
      h.update(std::span(buf.data(), n));
      MOTA_TRY(writer->write(std::span(buf.data(), n)));
      done += n;
      if (options.progress) options.progress(done, total);
    }
    if (count != entry.size || h.hex_digest() != entry.sha256) {
      return fail(Errc::verification, p.string() + " changed while it was being packed");
    }
  }
  MOTA_TRY(writer->close());
  MOTA_TRY(out.commit());

  PackResult result;
  std::vector<FileEntry> digest_entries = m.files;
  digest_entries.push_back(manifest_entry(manifest_text));
  result.tree_digest = tree_digest(std::move(digest_entries));
  result.manifest = std::move(m);
  result.package_size = package_size;
  result.package_sha256 = package_hash.hex_digest();
  return result;
}

// ---- unpack ----

namespace {

Result<UnpackResult> unpack_into(tar::Reader& reader, const stdfs::path& dest,
                                 const UnpackLimits& limits, const Progress& progress) {
  std::string manifest_text = MOTA_TRY(read_manifest_entry(reader));
  ModelManifest m = MOTA_TRY_CTX(ModelManifest::parse(manifest_text), "model.json");

  if (m.files.size() > limits.max_files) {
    return fail(Errc::too_large, "model.json lists " + std::to_string(m.files.size()) +
                                     " files, more than the limit of " +
                                     std::to_string(limits.max_files));
  }
  std::uint64_t total = 0;
  for (const auto& f : m.files) {
    if (f.size > limits.max_total_bytes - total) {
      return fail(Errc::too_large, "model.json lists more than the limit of " +
                                       std::to_string(limits.max_total_bytes) + " bytes");
    }
    total += f.size;
  }

  // Directories a listed file lives in: the only directory entries allowed.
  std::map<std::string_view, std::size_t> index;
  std::set<std::string> dirs;
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    std::string_view p = m.files[i].path;
    index[p] = i;
    for (auto s = p.find('/'); s != std::string_view::npos; s = p.find('/', s + 1)) {
      dirs.insert(std::string(p.substr(0, s)));
    }
  }

  MOTA_TRY(fs::write_file_atomic(dest / kManifestName, manifest_text, 0644));
  std::vector<bool> seen(m.files.size(), false);
  std::set<std::string> made_dirs;
  auto make_parent_dirs = [&](std::string_view rel) -> Status {
    for (auto s = rel.find('/'); s != std::string_view::npos; s = rel.find('/', s + 1)) {
      std::string d(rel.substr(0, s));
      if (made_dirs.count(d)) continue;
      if (::mkdir((dest / d).c_str(), 0755) != 0 && errno != EEXIST) {
        return fail(errno_error("mkdir", (dest / d).string(), errno));
      }
      // Exactly 0755 whatever the umask (files get exactly 0644 the same way).
      if (::chmod((dest / d).c_str(), 0755) != 0) {
        return fail(errno_error("chmod", (dest / d).string(), errno));
      }
      made_dirs.insert(std::move(d));
    }
    return {};
  };

  std::vector<std::byte> buf(kBlock);
  std::uint64_t done = 0;
  if (progress) progress(0, total);
  std::string previous = kManifestName;
  for (;;) {
    // A damaged header has no usable name: say where in the archive it was.
    auto next = MOTA_TRY_CTX(reader.next(), "after entry " + in_quotes(previous));
    if (!next) break;
    const tar::Entry& e = *next;
    std::string name = in_quotes(e.path);
    previous = e.path;
    if (e.type == tar::EntryType::directory) {
      std::string d = e.path;
      if (!d.empty() && d.back() == '/') d.pop_back();
      if (!valid_package_path(d)) return fail(Errc::parse, "entry " + name + ": invalid path");
      if (!dirs.count(d)) {
        return fail(Errc::parse,
                    "entry " + name + ": directory holds no file listed in model.json");
      }
      MOTA_TRY(make_parent_dirs(d + "/"));
      continue;
    }
    if (e.type != tar::EntryType::file) {
      return fail(Errc::unsupported, "entry " + name + ": " +
                                         std::string(tar::entry_type_name(e.type)) +
                                         " not allowed (packages hold regular files only)");
    }
    if (!valid_package_path(e.path)) {
      return fail(Errc::parse, "entry " + name + ": invalid path (absolute, \"..\" or malformed)");
    }
    if (e.path == kManifestName) return fail(Errc::parse, "entry " + name + ": appears twice");
    auto it = index.find(e.path);
    if (it == index.end()) return fail(Errc::parse, "entry " + name + ": not listed in model.json");
    std::size_t i = it->second;
    const FileEntry& want = m.files[i];
    if (seen[i]) return fail(Errc::parse, "entry " + name + ": appears twice");
    seen[i] = true;
    if (!e.size_known || e.size != want.size) {
      return fail(Errc::verification, "entry " + name + ": header size " +
                                          (e.size_known ? std::to_string(e.size) : "unset") +
                                          ", model.json says " + std::to_string(want.size));
    }

    MOTA_TRY(make_parent_dirs(e.path));
    stdfs::path target = dest / e.path;
    int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return fail(errno_error("create", target.string(), errno));
    fs::File out(fd);
    if (::fchmod(fd, 0644) != 0) return fail(errno_error("chmod", target.string(), errno));
    SparseWriter writer(out);
    crypto::Hasher h;
    std::optional<AsyncHasher> async_h;
    if (limits.check_file_hashes && want.size >= kAsyncHashMin) async_h.emplace();
    std::uint64_t count = 0;
    for (;;) {
      auto n = MOTA_TRY_CTX(reader.read(buf), "entry " + name);
      if (n == 0) break;
      count += n;
      if (count > want.size) {
        return fail(Errc::verification, "entry " + name + ": more data than the " +
                                            std::to_string(want.size) + " bytes declared");
      }
      if (async_h) {
        async_h->update(std::span(buf.data(), n));
      } else if (limits.check_file_hashes) {
        h.update(std::span(buf.data(), n));
      }
      MOTA_TRY_CTX(writer.write(std::span(buf.data(), n)), "write " + target.string());
      done += n;
      if (progress) progress(done, total);
    }
    if (count != want.size) {
      return fail(Errc::verification, "entry " + name + ": " + std::to_string(count) +
                                          " bytes, model.json says " + std::to_string(want.size));
    }
    std::string got = async_h ? async_h->hex_digest() : h.hex_digest();
    if (limits.check_file_hashes && !crypto::digest_equal(got, want.sha256)) {
      return fail(Errc::verification,
                  "entry " + name + ": sha256 " + got + ", model.json says " + want.sha256);
    }
    MOTA_TRY_CTX(writer.finish(want.size), target.string());
    MOTA_TRY_CTX(out.sync(), target.string());
    MOTA_TRY_CTX(out.close(), target.string());
  }
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    if (!seen[i]) {
      return fail(Errc::verification, "file " + in_quotes(m.files[i].path) +
                                          " is listed in model.json but missing from the package");
    }
  }

  // Deepest first, so each directory's entry is durable before its parent's.
  std::vector<std::string> order(made_dirs.begin(), made_dirs.end());
  std::sort(order.begin(), order.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') > std::count(b.begin(), b.end(), '/');
  });
  for (const auto& d : order) MOTA_TRY(fs::fsync_dir(dest / d));
  MOTA_TRY(fs::fsync_dir(dest));

  UnpackResult result;
  std::vector<FileEntry> digest_entries = m.files;
  digest_entries.push_back(manifest_entry(manifest_text));
  result.tree_digest = tree_digest(std::move(digest_entries));
  result.bytes_written = total;
  result.manifest = std::move(m);
  return result;
}

Result<ReadFn> file_source(const stdfs::path& package, std::shared_ptr<fs::File>& holder) {
  holder = std::make_shared<fs::File>(MOTA_TRY(fs::File::open_read(package)));
  return ReadFn([f = holder](std::span<std::byte> b) { return f->read_some(b); });
}

}  // namespace

Result<UnpackResult> unpack(const ReadFn& source, const stdfs::path& dest_dir,
                            const UnpackLimits& limits, const Progress& progress) {
  if (dest_dir.empty()) return fail(Errc::invalid_argument, "unpack: empty destination");
  // mkdir is the existence check: it fails with EEXIST instead of racing a separate stat.
  if (::mkdir(dest_dir.c_str(), 0755) != 0) {
    return fail(errno_error("create unpack directory", dest_dir.string(), errno));
  }
  RemoveOnFailure cleanup(dest_dir);
  if (::chmod(dest_dir.c_str(), 0755) != 0) {
    return fail(errno_error("chmod", dest_dir.string(), errno));
  }
  auto parent = dest_dir.has_parent_path() ? dest_dir.parent_path() : stdfs::path(".");
  auto reader = MOTA_TRY(tar::Reader::open(source));
  auto result = MOTA_TRY(unpack_into(*reader, dest_dir, limits, progress));
  MOTA_TRY(fs::fsync_dir(parent));
  cleanup.disarm();
  return result;
}

Result<UnpackResult> unpack_file(const stdfs::path& package, const stdfs::path& dest_dir,
                                 const UnpackLimits& limits, const Progress& progress) {
  std::shared_ptr<fs::File> holder;
  auto source = MOTA_TRY(file_source(package, holder));
  return unpack(source, dest_dir, limits, progress).context("unpack " + package.string());
}

Result<ModelManifest> read_manifest(const stdfs::path& package) {
  std::shared_ptr<fs::File> holder;
  auto source = MOTA_TRY(file_source(package, holder));
  auto reader = MOTA_TRY_CTX(tar::Reader::open(source), package.string());
  auto text = MOTA_TRY_CTX(read_manifest_entry(*reader), package.string());
  return ModelManifest::parse(text).context(package.string() + ": model.json");
}

// ---- verify ----

Result<UnpackResult> verify_tree(const stdfs::path& dir) {
  stdfs::path manifest_path = dir / kManifestName;
  MOTA_TRY(open_regular(manifest_path));
  std::string text = MOTA_TRY(fs::read_file(manifest_path, kMaxManifestBytes));
  ModelManifest m = MOTA_TRY_CTX(ModelManifest::parse(text), manifest_path.string());
  auto paths = MOTA_TRY(walk_model_dir(dir).context("verify " + dir.string()));

  std::set<std::string_view> listed;
  for (const auto& f : m.files) listed.insert(f.path);
  for (const auto& p : paths) {
    if (!listed.count(p)) {
      return fail(Errc::verification,
                  dir.string() + ": " + in_quotes(p) + " is not listed in model.json");
    }
  }
  std::vector<std::byte> buf(kBlock);
  std::uint64_t total = 0;
  for (const auto& want : m.files) {
    stdfs::path p = dir / want.path;
    auto got = hash_file(p, buf);
    if (!got) {
      if (got.error().code() == Errc::not_found) {
        return fail(Errc::verification, dir.string() + ": " + in_quotes(want.path) + " is missing");
      }
      return fail(std::move(got).error());
    }
    if (got->size != want.size) {
      return fail(Errc::verification, p.string() + ": " + std::to_string(got->size) +
                                          " bytes, model.json says " + std::to_string(want.size));
    }
    if (!crypto::digest_equal(got->sha256, want.sha256)) {
      return fail(Errc::verification,
                  p.string() + ": sha256 " + got->sha256 + ", model.json says " + want.sha256);
    }
    total += want.size;
  }

  UnpackResult result;
  std::vector<FileEntry> digest_entries = m.files;
  digest_entries.push_back(manifest_entry(text));
  result.tree_digest = tree_digest(std::move(digest_entries));
  result.bytes_written = total;
  result.manifest = std::move(m);
  return result;
}

}  // namespace mota::storage
