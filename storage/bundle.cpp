// The .motab container: a strict reader of the POSIX tar subset mota writes, and its writer.
// Hand-written rather than libarchive: the reader must hand out data offsets (entries are
// streamed by offset, never extracted), refuse everything but regular files, and be small enough
// to fuzz on its own.

#include "storage/bundle.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <limits>

#include "manifest/canonical_json.hpp"

namespace mota::storage {

namespace {

namespace stdfs = std::filesystem;

constexpr std::size_t kBlock = 512;
constexpr std::uint64_t kMaxOctalSize = (std::uint64_t(1) << 33) - 1;  // 11 octal digits
// Bytes accepted after the end-of-archive marker (tar writers pad to 10 KiB records); all zero.
constexpr std::uint64_t kMaxTrailer = 20 * kBlock;
constexpr std::size_t kChunk = 256 << 10;

// ustar header field offsets and sizes (POSIX.1-2001, "ustar Interchange Format").
struct Field {
  std::size_t off, len;
};
constexpr Field kName{0, 100}, kMode{100, 8}, kUid{108, 8}, kGid{116, 8}, kSize{124, 12},
    kMtime{136, 12}, kChksum{148, 8}, kType{156, 1}, kMagic{257, 6}, kVersion{263, 2},
    kPrefix{345, 155};

using Block = std::array<std::byte, kBlock>;

std::string_view field(const Block& b, Field f) {
  const char* p = reinterpret_cast<const char*>(b.data()) + f.off;
  std::size_t n = 0;
  while (n < f.len && p[n] != '\0') ++n;
  return {p, n};
}

bool all_zero(std::span<const std::byte> s) {
  return std::all_of(s.begin(), s.end(), [](std::byte c) { return c == std::byte{0}; });
}

// Printable form of an untrusted name for messages: quoted, escaped, at most 200 bytes shown.
std::string shown(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (std::size_t i = 0; i < s.size() && i < 200; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > 200) out += "...";
  return out + "'";
}

// An octal numeric field: digits, then optional NULs/spaces (leading spaces tolerated as old
// writers emit them). Base-256 (GNU) encodings are refused: mota writes pax "size" instead.
Result<std::uint64_t> octal(const Block& b, Field f, std::string_view what) {
  const auto* p = reinterpret_cast<const unsigned char*>(b.data()) + f.off;
  if (p[0] & 0x80) {
    return fail(Errc::unsupported, std::string(what) + ": base-256 numbers are not supported");
  }
  std::size_t i = 0;
  while (i < f.len && p[i] == ' ') ++i;
  std::uint64_t v = 0;
  std::size_t digits = 0;
  for (; i < f.len && p[i] >= '0' && p[i] <= '7'; ++i, ++digits) {
    if (v > (std::numeric_limits<std::uint64_t>::max() >> 3)) {
      return fail(Errc::parse, std::string(what) + ": number too large");
    }
    v = (v << 3) | (p[i] - '0');
  }
  for (; i < f.len; ++i) {
    if (p[i] != ' ' && p[i] != '\0') {
      return fail(Errc::parse, std::string(what) + ": not an octal number");
    }
  }
  if (digits == 0) return fail(Errc::parse, std::string(what) + ": empty number");
  return v;
}

std::string_view type_name(char t) {
  switch (t) {
    case '1':
      return "a hard link";
    case '2':
      return "a symbolic link";
    case '3':
      return "a character device";
    case '4':
      return "a block device";
    case '5':
      return "a directory";
    case '6':
      return "a FIFO";
    case '7':
      return "a contiguous file";
    case 'g':
      return "a global pax header";
    case 'L':
    case 'K':
      return "a GNU long name";
    default:
      return "an entry of unknown type";
  }
}

struct Pax {
  std::optional<std::string> path;
  std::optional<std::uint64_t> size;
};

// pax extended header records: "<len> <key>=<value>\n", len counting the whole record.
Result<Pax> parse_pax(std::string_view data) {
  Pax pax;
  while (!data.empty()) {
    std::size_t i = 0;
    std::uint64_t len = 0;
    while (i < data.size() && i < 20 && data[i] >= '0' && data[i] <= '9') {
      len = len * 10 + std::uint64_t(data[i] - '0');
      ++i;
    }
    if (i == 0 || i >= data.size() || data[i] != ' ' || len <= i + 1 || len > data.size()) {
      return fail(Errc::parse, "malformed record");
    }
    std::string_view rec = data.substr(i + 1, len - i - 1);
    if (rec.back() != '\n') return fail(Errc::parse, "record without a newline");
    rec.remove_suffix(1);
    const auto eq = rec.find('=');
    if (eq == std::string_view::npos) return fail(Errc::parse, "record without '='");
    const std::string_view key = rec.substr(0, eq), value = rec.substr(eq + 1);
    if (key == "path") {
      pax.path = std::string(value);
    } else if (key == "size") {
      std::uint64_t n = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
        return fail(Errc::parse, "bad size " + shown(value));
      }
      pax.size = n;
    }  // other keys (mtime, uid, ...) say nothing a bundle uses
    data.remove_prefix(len);
  }
  return pax;
}

std::uint64_t round_up(std::uint64_t n) {
  return (n + kBlock - 1) / kBlock * kBlock;
}

}  // namespace

Status check_entry_name(std::string_view name, std::size_t max_name_bytes) {
  if (name.empty()) return fail(Errc::parse, "an entry has an empty name");
  if (name.size() > max_name_bytes) {
    return fail(Errc::too_large, "entry " + shown(name) + ": name of " +
                                     std::to_string(name.size()) + " bytes (limit " +
                                     std::to_string(max_name_bytes) + ")");
  }
  for (char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f || c == '\\') {
      return fail(Errc::parse, "entry " + shown(name) +
                                   ": names hold printable ASCII only (no spaces, control "
                                   "bytes or backslashes)");
    }
  }
  if (name.front() == '/') {
    return fail(Errc::parse, "entry " + shown(name) + ": an absolute path");
  }
  std::size_t start = 0;
  for (;;) {
    const auto slash = name.find('/', start);
    const std::string_view part = name.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty() || part == ".") {
      return fail(Errc::parse, "entry " + shown(name) + ": an empty or '.' path component");
    }
    if (part == "..") {
      return fail(Errc::parse, "entry " + shown(name) + ": a '..' path component");
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return {};
}

Result<std::vector<BundleEntry>> read_tar_index(const PreadFn& pread, std::uint64_t file_size,
                                                const BundleLimits& limits) {
  std::vector<BundleEntry> entries;
  std::map<std::string, std::size_t, std::less<>> seen;
  std::uint64_t offset = 0;
  std::uint64_t headers = 0;
  std::optional<Pax> pending;
  Block b;
  auto at = [](std::uint64_t off) { return " (at byte " + std::to_string(off) + ")"; };
  for (;;) {
    if (file_size - offset < kBlock) {
      return fail(Errc::parse, "the archive ends without its end-of-archive marker" + at(offset) +
                                   ": truncated?");
    }
    MOTA_TRY_CTX(pread(b, offset), "read tar header" + at(offset));
    if (all_zero(b)) {
      if (pending) return fail(Errc::parse, "a pax header without its entry" + at(offset));
      if (file_size - offset < 2 * kBlock) {
        return fail(Errc::parse,
                    "the end-of-archive marker is cut short" + at(offset) + ": truncated?");
      }
      MOTA_TRY_CTX(pread(b, offset + kBlock), "read tar trailer" + at(offset + kBlock));
      if (!all_zero(b)) {
        return fail(Errc::parse, "a lone zero block inside the archive" + at(offset));
      }
      // Whatever follows the marker must be padding: a bundle is one archive, nothing appended.
      const std::uint64_t tail_start = offset + 2 * kBlock;
      const std::uint64_t tail = file_size - tail_start;
      if (tail > kMaxTrailer) {
        return fail(Errc::parse, std::to_string(tail) + " bytes follow the end-of-archive marker" +
                                     at(tail_start));
      }
      std::array<std::byte, kMaxTrailer> rest{};
      MOTA_TRY_CTX(pread(std::span(rest.data(), tail), tail_start), "read tar trailer");
      if (!all_zero(std::span(rest.data(), tail))) {
        return fail(Errc::parse, "data after the end-of-archive marker" + at(tail_start));
      }
      return entries;
    }
    if (++headers > limits.max_entries) {
      return fail(Errc::too_large,
                  "more than " + std::to_string(limits.max_entries) + " entries in the archive");
    }
    // Checksum: the unsigned byte sum with the checksum field read as spaces.
    const std::uint64_t stored =
        MOTA_TRY_CTX(octal(b, kChksum, "checksum"), "tar header" + at(offset));
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < kBlock; ++i) {
      sum += (i >= kChksum.off && i < kChksum.off + kChksum.len)
                 ? std::uint64_t(' ')
                 : std::uint64_t(std::to_integer<unsigned char>(b[i]));
    }
    if (sum != stored) {
      return fail(Errc::parse, "tar header checksum mismatch" + at(offset) + ": damaged file?");
    }
    if (field(b, kMagic) != "ustar" || field(b, kVersion) != "00") {
      return fail(Errc::unsupported, "not a POSIX ustar header" + at(offset));
    }
    const char type = static_cast<char>(b[kType.off]);
    std::uint64_t size = MOTA_TRY_CTX(octal(b, kSize, "size"), "tar header" + at(offset));
    std::string name;
    if (pending && pending->path) {
      name = *pending->path;
    } else {
      const std::string_view prefix = field(b, kPrefix);
      name = prefix.empty() ? std::string(field(b, kName))
                            : std::string(prefix) + "/" + std::string(field(b, kName));
    }
    if (pending && pending->size) size = *pending->size;
    const std::uint64_t data = offset + kBlock;
    if (type != 'x') MOTA_TRY(check_entry_name(name, limits.max_name_bytes));
    if (size > file_size - data) {
      return fail(Errc::parse,
                  (type == 'x' ? std::string("a pax header") : "entry " + shown(name)) +
                      " declares " + std::to_string(size) + " bytes, only " +
                      std::to_string(file_size - data) + " remain in the file: truncated?");
    }
    if (type == 'x') {
      if (pending) return fail(Errc::parse, "two pax headers in a row" + at(offset));
      if (size > limits.max_pax_bytes) {
        return fail(Errc::too_large, "a pax header of " + std::to_string(size) + " bytes (limit " +
                                         std::to_string(limits.max_pax_bytes) + ")" + at(offset));
      }
      std::string text(size, '\0');
      MOTA_TRY(pread(std::as_writable_bytes(std::span(text.data(), text.size())), data));
      pending = MOTA_TRY_CTX(parse_pax(text), "pax header at byte " + std::to_string(offset));
    } else if (type == '0' || type == '\0') {
      pending.reset();
      if (seen.count(name)) return fail(Errc::parse, "entry " + shown(name) + " appears twice");
      seen.emplace(name, entries.size());
      entries.push_back({name, data, size});
    } else {
      return fail(Errc::unsupported, "entry " + shown(name) + " is " +
                                         std::string(type_name(type)) +
                                         ": a bundle holds regular files only");
    }
    // Padding to the next block must be zero: the archive has one canonical form.
    const std::uint64_t pad = round_up(size) - size;
    if (pad > 0) {
      std::array<std::byte, kBlock> zeros{};
      MOTA_TRY(pread(std::span(zeros.data(), pad), data + size));
      if (!all_zero(std::span(zeros.data(), pad))) {
        return fail(Errc::parse, "non-zero padding after entry " + shown(name) + at(data + size));
      }
    }
    offset = data + round_up(size);
  }
}

// --------------------------------------------------------------------------------------------
// bundle.json

std::string BundleIndex::to_json() const {
  Json deltas_json = Json::array();
  for (const auto& d : deltas) deltas_json.push_back({{"from", d.from}, {"target", d.target}});
  Json j = {{"format", "mota-bundle"}, {"format_version", kBundleFormatVersion},
            {"model", model},          {"version", version},
            {"package", package},      {"deltas", deltas_json},
            {"created", created},      {"expires", expires}};
  return j.dump(2) + "\n";
}

Result<BundleIndex> BundleIndex::parse(std::string_view text) {
  const Json j = MOTA_TRY_CTX(parse_json(text, 64 << 10), "bundle.json");
  if (!j.is_object()) return fail(Errc::parse, "bundle.json: not a JSON object");
  auto str = [&](const char* key, bool required) -> Result<std::string> {
    auto it = j.find(key);
    if (it == j.end()) {
      if (!required) return std::string();
      return fail(Errc::parse, std::string("bundle.json: no \"") + key + "\"");
    }
    if (!it->is_string())
      return fail(Errc::parse, std::string("bundle.json: \"") + key + "\" is not a string");
    return it->get<std::string>();
  };
  if (MOTA_TRY(str("format", true)) != "mota-bundle") {
    return fail(Errc::parse, "bundle.json: \"format\" is not \"mota-bundle\"");
  }
  auto fv = j.find("format_version");
  if (fv == j.end() || !fv->is_number_integer()) {
    return fail(Errc::parse, "bundle.json: no integer \"format_version\"");
  }
  if (fv->get<std::int64_t>() != kBundleFormatVersion) {
    return fail(Errc::unsupported, "bundle format version " + fv->dump() +
                                       " (this build reads version " +
                                       std::to_string(kBundleFormatVersion) + ")");
  }
  BundleIndex idx;
  idx.model = MOTA_TRY(str("model", true));
  idx.version = MOTA_TRY(str("version", true));
  idx.package = MOTA_TRY(str("package", true));
  idx.created = MOTA_TRY(str("created", false));
  idx.expires = MOTA_TRY(str("expires", false));
  // Names end up in messages and paths: printable ASCII without spaces, bounded.
  auto plain = [](const std::string& v) {
    return !v.empty() && v.size() <= 255 && std::all_of(v.begin(), v.end(), [](char c) {
      return static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
    });
  };
  if (!plain(idx.model) || !plain(idx.version) || !plain(idx.package)) {
    return fail(Errc::parse,
                "bundle.json: model, version and package must be 1 to 255 printable ASCII bytes "
                "without spaces");
  }
  if (auto d = j.find("deltas"); d != j.end()) {
    if (!d->is_array()) return fail(Errc::parse, "bundle.json: \"deltas\" is not an array");
    if (d->size() > 64) return fail(Errc::too_large, "bundle.json: more than 64 deltas");
    for (const auto& e : *d) {
      if (!e.is_object() || !e.contains("from") || !e["from"].is_string() ||
          !e.contains("target") || !e["target"].is_string()) {
        return fail(Errc::parse, "bundle.json: a delta without \"from\" and \"target\" strings");
      }
      idx.deltas.push_back({e["from"].get<std::string>(), e["target"].get<std::string>()});
      if (!plain(idx.deltas.back().from) || !plain(idx.deltas.back().target)) {
        return fail(Errc::parse, "bundle.json: a delta's from and target must be printable ASCII");
      }
    }
  }
  return idx;
}

// --------------------------------------------------------------------------------------------
// BundleReader

Result<BundleReader> BundleReader::open(const stdfs::path& path, const BundleLimits& limits) {
  BundleReader r;
  r.path_ = path;
  r.file_ = MOTA_TRY(fs::File::open_read(path));
  struct stat st {};
  if (::fstat(r.file_.fd(), &st) != 0) return fail(errno_error("stat", path.string(), errno));
  if (!S_ISREG(st.st_mode)) return fail(Errc::invalid_argument, path.string() + " is not a file");
  r.size_ = static_cast<std::uint64_t>(st.st_size);
  const std::string what = path.string();
  // A .mota package is a zstd frame (magic 28 b5 2f fd): the commonest mistake, named as such.
  if (r.size_ >= 4) {
    std::array<std::byte, 4> magic{};
    MOTA_TRY(r.file_.pread_exact(magic, 0));
    if (magic == std::array<std::byte, 4>{std::byte{0x28}, std::byte{0xb5}, std::byte{0x2f},
                                          std::byte{0xfd}}) {
      return fail(Errc::unsupported,
                  what +
                      " is a bare package, not a signed bundle: make one with `mota bundle "
                      "create MODEL VERSION` on the repository host (docs/bundles.md)");
    }
  }
  auto pread = [&r](std::span<std::byte> buf, std::uint64_t off) -> Status {
    return r.file_.pread_exact(buf, off);
  };
  auto entries = read_tar_index(pread, r.size_, limits);
  if (!entries) return fail(std::move(entries).error().context(what + " is not a mota bundle"));
  r.entries_ = std::move(*entries);
  if (r.entries_.empty() || r.entries_.front().name != "bundle.json") {
    return fail(Errc::parse,
                what + " is not a mota bundle: its first entry is " +
                    (r.entries_.empty() ? std::string("missing") : shown(r.entries_.front().name)) +
                    ", not bundle.json");
  }
  for (std::size_t i = 0; i < r.entries_.size(); ++i) {
    const std::string& n = r.entries_[i].name;
    const bool ok = i == 0 || (n.starts_with("metadata/") && n.find('/', 9) == std::string::npos) ||
                    n.starts_with("targets/");
    if (!ok) {
      return fail(Errc::parse, what + ": unexpected entry " + shown(n) +
                                   " (a bundle holds bundle.json, metadata/FILE and targets/PATH)");
    }
    r.by_name_.emplace(n, i);
  }
  const std::string text = MOTA_TRY_CTX(r.read(r.entries_.front(), limits.max_index_bytes), what);
  r.index_ = MOTA_TRY_CTX(BundleIndex::parse(text), what);
  return r;
}

const BundleEntry* BundleReader::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

Result<std::string> BundleReader::read(const BundleEntry& entry, std::uint64_t max_bytes) const {
  if (entry.size > max_bytes) {
    return fail(Errc::too_large, entry.name + ": " + std::to_string(entry.size) +
                                     " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  std::string out(entry.size, '\0');
  MOTA_TRY_CTX(
      file_.pread_exact(std::as_writable_bytes(std::span(out.data(), out.size())), entry.offset),
      "read " + entry.name + " from " + path_.string());
  return out;
}

Status BundleReader::stream(const BundleEntry& entry, std::uint64_t from,
                            const std::function<Status(std::span<const std::byte>)>& sink,
                            const std::atomic<bool>* cancel) const {
  const std::uint64_t left = entry.size - std::min(from, entry.size);
  std::vector<std::byte> buf(static_cast<std::size_t>(std::clamp<std::uint64_t>(left, 1, kChunk)));
  for (std::uint64_t pos = from; pos < entry.size;) {
    if (cancel && cancel->load()) return fail(Errc::cancelled, "stopped");
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), entry.size - pos));
    MOTA_TRY_CTX(file_.pread_exact(std::span(buf.data(), n), entry.offset + pos),
                 "read " + entry.name + " from " + path_.string());
    MOTA_TRY(sink(std::span<const std::byte>(buf.data(), n)));
    pos += n;
  }
  return {};
}

// --------------------------------------------------------------------------------------------
// BundleSource

Result<http::ResponseInfo> BundleSource::get(const http::GetRequest& req, const http::Sink& sink) {
  if (!req.url.starts_with(kBundleScheme)) {
    return fail(Errc::invalid_argument, "not a bundle URL: " + req.url);
  }
  const std::string name = req.url.substr(kBundleScheme.size());
  const BundleEntry* e = reader_.find(name);
  if (!e) {
    return tl::unexpected(Error(Errc::http,
                                "GET " + req.url + ": 404 (" + reader_.path().filename().string() +
                                    " has no entry " + name + ")",
                                404));
  }
  const std::uint64_t start = req.range_start.value_or(0);
  if (start > e->size) {
    return tl::unexpected(
        Error(Errc::http, "GET " + req.url + ": 416 (range starts past the entry's end)", 416));
  }
  http::ResponseInfo info;
  info.status = start > 0 ? 206 : 200;
  info.partial = start > 0;
  info.content_length = e->size - start;
  if (req.max_bytes > 0 && *info.content_length > req.max_bytes) {
    return fail(Errc::too_large, "GET " + req.url + ": " + std::to_string(*info.content_length) +
                                     " bytes, more than the limit of " +
                                     std::to_string(req.max_bytes));
  }
  bool first = true;
  MOTA_TRY(reader_.stream(
      *e, start,
      [&](std::span<const std::byte> chunk) -> Status {
        if (req.cancel && req.cancel->load()) return fail(Errc::cancelled, "stopped");
        if (first) {
          first = false;
          if (req.on_headers) MOTA_TRY(req.on_headers(info));
        }
        info.bytes_received += chunk.size();
        return sink(chunk);
      },
      req.cancel));
  return info;
}

Result<http::Response> BundleSource::post(const std::string& url, const std::string&,
                                          const std::map<std::string, std::string>&,
                                          std::uint64_t) {
  return fail(Errc::unsupported, "POST " + url + ": a bundle answers GETs only");
}

// --------------------------------------------------------------------------------------------
// BundleWriter

namespace {

void put(Block& b, Field f, std::string_view s) {
  if (s.empty()) return;  // an empty view may have a null data(), which memcpy must not get
  std::memcpy(reinterpret_cast<char*>(b.data()) + f.off, s.data(), std::min(s.size(), f.len));
}
void put_octal(Block& b, Field f, std::uint64_t v) {
  // f.len - 1 digits, zero-padded, then a NUL.
  std::string digits(f.len - 1, '0');
  for (std::size_t i = digits.size(); i-- > 0 && v > 0; v >>= 3) digits[i] = char('0' + (v & 7));
  put(b, f, digits);
}

Block make_header(std::string_view name, std::string_view prefix, std::uint64_t size, char type) {
  Block b{};
  put(b, kName, name);
  put(b, kPrefix, prefix);
  put_octal(b, kMode, 0644);
  put_octal(b, kUid, 0);
  put_octal(b, kGid, 0);
  put_octal(b, kSize, size);
  put_octal(b, kMtime, 0);
  b[kType.off] = std::byte(type);
  put(b, kMagic, std::string_view("ustar\0", 6));
  put(b, kVersion, "00");
  std::memset(reinterpret_cast<char*>(b.data()) + kChksum.off, ' ', kChksum.len);
  std::uint64_t sum = 0;
  for (auto c : b) sum += std::to_integer<unsigned char>(c);
  std::string chk(6, '0');
  for (std::size_t i = 6; i-- > 0; sum >>= 3) chk[i] = char('0' + (sum & 7));
  put(b, kChksum, chk + std::string("\0 ", 2));
  return b;
}

std::string pax_record(std::string_view key, std::string_view value) {
  // The length prefix counts itself.
  const std::size_t body = 1 + key.size() + 1 + value.size() + 1;  // ' ' key '=' value '\n'
  std::size_t len = body + 1;
  while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
  return std::to_string(len) + " " + std::string(key) + "=" + std::string(value) + "\n";
}

}  // namespace

Result<BundleWriter> BundleWriter::create(const stdfs::path& path) {
  BundleWriter w;
  w.out_ = std::make_unique<fs::AtomicFile>(MOTA_TRY(fs::AtomicFile::create(path)));
  return w;
}

Status BundleWriter::write(std::span<const std::byte> data) {
  MOTA_TRY(out_->write_all(data));
  offset_ += data.size();
  return {};
}

Status BundleWriter::pad(std::uint64_t size) {
  const std::uint64_t n = round_up(size) - size;
  const Block zeros{};
  return write(std::span(zeros.data(), static_cast<std::size_t>(n)));
}

Status BundleWriter::header(const std::string& name, std::uint64_t size) {
  MOTA_TRY(check_entry_name(name, BundleLimits{}.max_name_bytes));
  // ustar: the name, or a prefix and a name split at a '/'.
  std::string_view n = name, prefix;
  bool fits = name.size() <= kName.len;
  if (!fits) {
    for (auto slash = name.find('/'); slash != std::string::npos;
         slash = name.find('/', slash + 1)) {
      if (slash <= kPrefix.len && name.size() - slash - 1 <= kName.len) {
        prefix = std::string_view(name).substr(0, slash);
        n = std::string_view(name).substr(slash + 1);
        fits = true;
        break;
      }
    }
  }
  const bool big = size > kMaxOctalSize;
  if (!fits || big) {
    std::string pax;
    if (!fits) pax += pax_record("path", name);
    if (big) pax += pax_record("size", std::to_string(size));
    const Block x = make_header("PaxHeaders/entry", "", pax.size(), 'x');
    MOTA_TRY(write(x));
    MOTA_TRY(write(std::as_bytes(std::span(pax.data(), pax.size()))));
    MOTA_TRY(pad(pax.size()));
    if (!fits) n = std::string_view(name).substr(0, kName.len), prefix = {};
  }
  const Block h = make_header(n, prefix, big ? 0 : size, '0');
  return write(h);
}

Status BundleWriter::add(const std::string& name, std::string_view bytes) {
  MOTA_TRY(header(name, bytes.size()));
  MOTA_TRY(write(std::as_bytes(std::span(bytes.data(), bytes.size()))));
  return pad(bytes.size());
}

Status BundleWriter::add_file(const std::string& name, const stdfs::path& file) {
  auto in = MOTA_TRY(fs::File::open_read(file));
  const std::uint64_t size = MOTA_TRY_CTX(in.size(), file.string());
  MOTA_TRY(header(name, size));
  std::vector<std::byte> buf(1 << 20);
  std::uint64_t done = 0;
  while (done < size) {
    const std::size_t n = MOTA_TRY_CTX(
        in.read_some(std::span(buf.data(), std::min<std::uint64_t>(buf.size(), size - done))),
        file.string());
    if (n == 0) return fail(Errc::io, file.string() + ": shrank while being copied");
    MOTA_TRY(write(std::span(buf.data(), n)));
    done += n;
  }
  std::byte extra{};
  if (MOTA_TRY_CTX(in.read_some(std::span(&extra, 1)), file.string()) != 0) {
    return fail(Errc::io, file.string() + ": grew while being copied");
  }
  return pad(size);
}

Status BundleWriter::commit() {
  const std::array<std::byte, 2 * kBlock> end{};
  MOTA_TRY(write(end));
  return out_->commit();
}

}  // namespace mota::storage
