#pragma once
// Signed offline bundles (.motab): one file that carries, for one model version, the TUF metadata
// a device needs (the root chain, timestamp, snapshot, targets and delegated roles, under the
// names the repository serves them) and the target files (the package, optional deltas, the
// model's channel files, under their consistent-snapshot names). docs/bundles.md describes the
// whole feature; this header is the container.
//
// Format: an uncompressed POSIX tar (ustar, plus pax "path"/"size" records for long names and
// files of 8 GiB or more) that `tar tvf` lists:
//   bundle.json                          the index (first entry; unsigned, see BundleIndex)
//   metadata/<file>                      exactly as under the repository's metadata/
//   targets/<dir>/<sha256>.<name>        exactly as under the repository's targets/
// Nothing in a bundle is trusted for what it says about itself: a device reads it through
// BundleSource (below), an http::Client, so the unchanged TUF client (manifest/tuf/client.hpp)
// verifies every byte it uses against the device's own trusted metadata, as in a poll.
//
// Reading is bounded and never loads a target into memory: opening a bundle walks the tar
// headers once, checks them (BundleLimits, names, checksums, sizes against the file's length,
// zero padding, the end-of-archive marker) and keeps an index of {name, offset, size}; entries
// are then streamed from the file by offset. Only regular files and pax extended headers are
// accepted: links, directories, devices, global pax headers, absolute or ".." paths, non-ASCII or
// control bytes in names and duplicate names are refused with the entry named.
//
// Thread-safety: a BundleReader may be read from several threads (pread only); a BundleSource and
// a BundleWriter are used by one thread at a time.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/fs.hpp"
#include "common/http.hpp"
#include "common/result.hpp"

namespace mota::storage {

// File name suffix of a bundle, and the URL scheme BundleSource answers ("bundle:<entry>").
inline constexpr std::string_view kBundleSuffix = ".motab";
inline constexpr std::string_view kBundleScheme = "bundle:";
inline constexpr int kBundleFormatVersion = 1;

struct BundleLimits {
  std::uint64_t max_entries = 4096;        // tar headers, pax headers included
  std::size_t max_name_bytes = 1024;       // one entry name
  std::uint64_t max_pax_bytes = 64 << 10;  // one pax extended header
  std::uint64_t max_index_bytes = 64 << 10;
};

struct BundleEntry {
  std::string name;          // checked: relative, '/'-separated, printable ASCII
  std::uint64_t offset = 0;  // of the data in the file
  std::uint64_t size = 0;
};

// bundle.json. Not signed: it only says which model version the operator meant, so that the
// device knows what to look up in its (verified) metadata. A bundle whose index names another
// version installs that version only if it is a signed target present in the bundle.
struct BundleDelta {
  std::string from;    // installed version the delta applies to
  std::string target;  // "deltas/<model>/<from>/<version>.mdelta"
};
struct BundleIndex {
  std::string model;
  std::string version;
  std::string package;  // target path "models/<model>/<version>/<model>-<version>.mota"
  std::vector<BundleDelta> deltas;
  std::string created;  // informational, as written by `mota bundle create`
  std::string expires;  // informational: the earliest expiry of the metadata inside

  std::string to_json() const;
  // Errc::parse naming the field; Errc::unsupported for a newer format_version.
  static Result<BundleIndex> parse(std::string_view text);
};

// Reads `size` bytes at `offset` into the span, or fails (a short read is Errc::parse).
using PreadFn = std::function<Status(std::span<std::byte> buf, std::uint64_t offset)>;

// Walks the tar in a file of `file_size` bytes and returns its regular-file entries in order,
// checked as described above. Errc::parse (with the entry and byte offset) for a malformed or
// truncated archive, Errc::unsupported for an entry type or encoding a bundle never holds,
// Errc::too_large over a limit. Memory: the entry list and one pax header, both bounded by
// `limits`. This is what tests/fuzz/bundle_fuzz.cpp fuzzes.
Result<std::vector<BundleEntry>> read_tar_index(const PreadFn& pread, std::uint64_t file_size,
                                                const BundleLimits& limits = {});

// Checks an entry name: non-empty, at most max_name_bytes, printable ASCII without spaces or
// backslashes, relative, no empty, "." or ".." components. The message quotes the name escaped.
Status check_entry_name(std::string_view name, std::size_t max_name_bytes);

// An open bundle. Move-only; the file stays open (and is the one read) for the object's life, so
// replacing the file by name meanwhile changes nothing for it.
class BundleReader {
 public:
  // Opens and indexes `path`. Besides read_tar_index()'s errors: a file that begins like a .mota
  // package (a zstd frame) is refused with Errc::unsupported, "PATH is a bare package, not a
  // signed bundle: make one with `mota bundle create MODEL VERSION`"; any other file that is not
  // a bundle with "PATH is not a mota bundle: <why>". The first entry must be bundle.json (parsed
  // with BundleIndex::parse); every other entry must be metadata/<file> or targets/<path>.
  static Result<BundleReader> open(const std::filesystem::path& path,
                                   const BundleLimits& limits = {});

  const std::filesystem::path& path() const { return path_; }
  std::uint64_t file_size() const { return size_; }
  const BundleIndex& index() const { return index_; }
  const std::vector<BundleEntry>& entries() const { return entries_; }
  // The entry called `name` ("metadata/timestamp.json"), or null.
  const BundleEntry* find(std::string_view name) const;

  // The whole entry, refused (Errc::too_large) when it is larger than max_bytes.
  Result<std::string> read(const BundleEntry& entry, std::uint64_t max_bytes) const;
  // Streams the entry from byte `from` in chunks of at most 256 KiB. `cancel` may be null;
  // when it becomes true the call stops with Errc::cancelled. The sink's error stops it too.
  Status stream(const BundleEntry& entry, std::uint64_t from,
                const std::function<Status(std::span<const std::byte>)>& sink,
                const std::atomic<bool>* cancel = nullptr) const;

  BundleReader(BundleReader&&) noexcept = default;
  BundleReader& operator=(BundleReader&&) noexcept = default;

 private:
  BundleReader() = default;
  std::filesystem::path path_;
  mutable fs::File file_;  // pread only, which is safe from several threads
  std::uint64_t size_ = 0;
  BundleIndex index_;
  std::vector<BundleEntry> entries_;
  std::map<std::string, std::size_t, std::less<>> by_name_;
};

// An http::Client that answers GETs from a bundle, so the TUF client and the agent's downloader
// run unchanged on it: "bundle:metadata/timestamp.json" is the entry metadata/timestamp.json.
// A missing entry is Errc::http with status 404 (as a web server's: the TUF client's root probe
// relies on it); a range_start is honoured (206); max_bytes is enforced before anything is sent
// (Errc::too_large). post() is Errc::unsupported. `reader` must outlive the source.
class BundleSource : public http::Client {
 public:
  explicit BundleSource(const BundleReader& reader) : reader_(reader) {}
  // The URL of an entry.
  static std::string url(std::string_view entry) {
    return std::string(kBundleScheme) + std::string(entry);
  }

  Result<http::ResponseInfo> get(const http::GetRequest& req, const http::Sink& sink) override;
  Result<http::Response> post(const std::string& url, const std::string& body,
                              const std::map<std::string, std::string>& headers,
                              std::uint64_t max_response_bytes) override;

 private:
  const BundleReader& reader_;
};

// Writes a bundle atomically (temporary file beside `path`, renamed by commit()): entries in the
// order added, each a deterministic ustar header (mode 0644, uid/gid 0, mtime 0, no user names;
// a pax header first when the name or size does not fit ustar). Nothing is left behind unless
// commit() succeeds. The caller adds bundle.json first.
class BundleWriter {
 public:
  static Result<BundleWriter> create(const std::filesystem::path& path);
  Status add(const std::string& name, std::string_view bytes);
  // Streams a file into the bundle (constant memory); it must not change size meanwhile.
  Status add_file(const std::string& name, const std::filesystem::path& file);
  // The end-of-archive marker, fsync, rename.
  Status commit();
  std::uint64_t bytes_written() const { return offset_; }

 private:
  BundleWriter() = default;
  Status header(const std::string& name, std::uint64_t size);
  Status write(std::span<const std::byte> data);
  Status pad(std::uint64_t size);
  std::unique_ptr<fs::AtomicFile> out_;
  std::uint64_t offset_ = 0;
};

}  // namespace mota::storage
