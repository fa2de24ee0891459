#include "storage/platform/libarchive/tar.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <cerrno>
#include <optional>
#include <vector>

namespace mota::storage::tar {
namespace {

constexpr std::size_t kReadBlock = 1 << 20;
// Output is handed to the sink in blocks of this size; the last block is not padded.
constexpr int kWriteBlock = 64 << 10;

std::string archive_message(struct archive* a, std::string_view fallback) {
  const char* s = archive_error_string(a);
  return s && *s ? std::string(s) : std::string(fallback);
}

struct EntryDeleter {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};
using EntryPtr = std::unique_ptr<struct archive_entry, EntryDeleter>;

}  // namespace

// ---- Writer ----

struct Writer::Impl {
  struct archive* a = nullptr;
  SinkFn sink;
  std::optional<Error> sink_error;  // the sink's own error, reported instead of libarchive's
  bool closed = false;

  ~Impl() {
    if (a != nullptr) archive_write_free(a);
  }

  static la_ssize_t write_cb(struct archive* a, void* self, const void* buf, size_t n) {
    auto* impl = static_cast<Impl*>(self);
    auto st = impl->sink(std::span(static_cast<const std::byte*>(buf), n));
    if (!st) {
      impl->sink_error = std::move(st).error();
      archive_set_error(a, EIO, "%s", impl->sink_error->message().c_str());
      return -1;
    }
    return static_cast<la_ssize_t>(n);
  }

  tl::unexpected<Error> error(std::string_view what) {
    if (sink_error) return fail(*sink_error);
    return fail(Errc::io, std::string(what) + ": " + archive_message(a, "libarchive error"));
  }
};

Writer::Writer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Writer::~Writer() = default;

Result<std::unique_ptr<Writer>> Writer::open(SinkFn sink, int zstd_level, bool raw_names) {
  if (zstd_level < 1 || zstd_level > 19) {
    return fail(Errc::invalid_argument,
                "zstd compression level " + std::to_string(zstd_level) + " is not in 1..19");
  }
  auto impl = std::make_unique<Impl>();
  impl->sink = std::move(sink);
  impl->a = archive_write_new();
  if (impl->a == nullptr) return fail(Errc::internal, "archive_write_new failed");
  struct archive* a = impl->a;
  std::string level = std::to_string(zstd_level);
  if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
      (raw_names &&
       archive_write_set_format_option(a, "pax", "hdrcharset", "BINARY") != ARCHIVE_OK) ||
      archive_write_add_filter_zstd(a) != ARCHIVE_OK ||
      archive_write_set_filter_option(a, "zstd", "compression-level", level.c_str()) !=
          ARCHIVE_OK ||
      archive_write_set_bytes_per_block(a, kWriteBlock) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK) {
    return fail(Errc::internal, "configure tar.zst writer: " + archive_message(a, "failed"));
  }
  if (archive_write_open2(a, impl.get(), nullptr, &Impl::write_cb, nullptr, nullptr) !=
      ARCHIVE_OK) {
    return impl->error("open tar.zst writer");
  }
  return std::unique_ptr<Writer>(new Writer(std::move(impl)));
}

Status Writer::begin_file(const std::string& path, std::uint64_t size) {
  if (size > std::uint64_t(INT64_MAX)) return fail(Errc::too_large, path + ": file too large");
  EntryPtr e(archive_entry_new());
  if (!e) return fail(Errc::internal, "archive_entry_new failed");
  // Non-ASCII paths are stored as their raw bytes (UTF-8: they come from model.json), with
  // hdrcharset=BINARY set on the format: no conversion through the process locale, so the output
  // does not depend on LANG (and libarchive 3.6 crashes converting UTF-8 names in the C locale).
  archive_entry_copy_pathname(e.get(), path.c_str());
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0644);
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
  archive_entry_set_mtime(e.get(), 0, 0);
  archive_entry_set_uid(e.get(), 0);
  archive_entry_set_gid(e.get(), 0);
  int r = archive_write_header(impl_->a, e.get());
  if (r != ARCHIVE_OK) return impl_->error("write tar header for " + path);
  return {};
}

Status Writer::write(std::span<const std::byte> data) {
  while (!data.empty()) {
    la_ssize_t n = archive_write_data(impl_->a, data.data(), data.size());
    if (n <= 0) return impl_->error("write tar data");
    data = data.subspan(static_cast<std::size_t>(n));
  }
  return {};
}

Status Writer::close() {
  if (impl_->closed) return {};
  impl_->closed = true;
  if (archive_write_close(impl_->a) != ARCHIVE_OK) return impl_->error("finish tar.zst");
  return {};
}

// ---- Reader ----

std::string_view entry_type_name(EntryType t) {
  switch (t) {
    case EntryType::file:
      return "regular file";
    case EntryType::directory:
      return "directory";
    case EntryType::symlink:
      return "symlink";
    case EntryType::hardlink:
      return "hardlink";
    case EntryType::character_device:
      return "character device";
    case EntryType::block_device:
      return "block device";
    case EntryType::fifo:
      return "fifo";
    case EntryType::socket:
      return "socket";
    case EntryType::unknown:
      return "unknown entry type";
  }
  return "unknown entry type";
}

struct Reader::Impl {
  struct archive* a = nullptr;
  const ReadFn* source = nullptr;
  std::vector<std::byte> buf;
  std::optional<Error> source_error;
  bool at_end = false;

  ~Impl() {
    if (a != nullptr) archive_read_free(a);
  }

  static la_ssize_t read_cb(struct archive* a, void* self, const void** out) {
    auto* impl = static_cast<Impl*>(self);
    auto n = (*impl->source)(std::span(impl->buf));
    if (!n) {
      impl->source_error = std::move(n).error();
      archive_set_error(a, EIO, "%s", impl->source_error->message().c_str());
      return -1;
    }
    *out = impl->buf.data();
    return static_cast<la_ssize_t>(std::min(*n, impl->buf.size()));
  }

  tl::unexpected<Error> error(std::string_view what) {
    if (source_error) return fail(*source_error);
    return fail(Errc::parse, std::string(what) + ": " + archive_message(a, "malformed archive"));
  }
};

Reader::Reader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Reader::~Reader() = default;

Result<std::unique_ptr<Reader>> Reader::open(const ReadFn& source) {
  auto impl = std::make_unique<Impl>();
  impl->source = &source;
  impl->buf.resize(kReadBlock);
  impl->a = archive_read_new();
  if (impl->a == nullptr) return fail(Errc::internal, "archive_read_new failed");
  struct archive* a = impl->a;
  if (archive_read_support_filter_zstd(a) != ARCHIVE_OK ||
      archive_read_support_format_tar(a) != ARCHIVE_OK) {
    return fail(Errc::internal, "configure tar.zst reader: " + archive_message(a, "failed"));
  }
  if (archive_read_open(a, impl.get(), nullptr, &Impl::read_cb, nullptr) != ARCHIVE_OK) {
    return impl->error("open package");
  }
  return std::unique_ptr<Reader>(new Reader(std::move(impl)));
}

Result<std::optional<Entry>> Reader::next() {
  if (impl_->at_end) return std::optional<Entry>();
  struct archive_entry* e = nullptr;
  int r = archive_read_next_header(impl_->a, &e);
  if (r == ARCHIVE_EOF) {
    impl_->at_end = true;
    return std::optional<Entry>();
  }
  // ARCHIVE_WARN is e.g. a name that does not convert to the locale; the caller validates names.
  if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return impl_->error("read entry header");
  Entry out;
  const char* utf8 = archive_entry_pathname_utf8(e);
  const char* raw = archive_entry_pathname(e);
  out.path = utf8 ? utf8 : raw ? raw : "";
  out.size_known = archive_entry_size_is_set(e) != 0;
  la_int64_t size = archive_entry_size(e);
  out.size = size < 0 ? 0 : static_cast<std::uint64_t>(size);
  if (archive_entry_hardlink(e) != nullptr) {
    out.type = EntryType::hardlink;
  } else {
    switch (archive_entry_filetype(e)) {
      case AE_IFREG:
        out.type = EntryType::file;
        break;
      case AE_IFDIR:
        out.type = EntryType::directory;
        break;
      case AE_IFLNK:
        out.type = EntryType::symlink;
        break;
      case AE_IFCHR:
        out.type = EntryType::character_device;
        break;
      case AE_IFBLK:
        out.type = EntryType::block_device;
        break;
      case AE_IFIFO:
        out.type = EntryType::fifo;
        break;
      case AE_IFSOCK:
        out.type = EntryType::socket;
        break;
      default:
        out.type = EntryType::unknown;
        break;
    }
  }
  return std::optional<Entry>(std::move(out));
}

Result<std::size_t> Reader::read(std::span<std::byte> buf) {
  la_ssize_t n = archive_read_data(impl_->a, buf.data(), buf.size());
  if (n < 0) return impl_->error("read entry data");
  return static_cast<std::size_t>(n);
}

bool Reader::zstd_compressed() const {
  // Filters are listed outermost-format-first: [zstd, none] for a plain tar.zst.
  return archive_filter_count(impl_->a) == 2 &&
         archive_filter_code(impl_->a, 0) == ARCHIVE_FILTER_ZSTD;
}

}  // namespace mota::storage::tar
