#include "delta/format.hpp"

#include <cstring>

#include "delta/hash.hpp"

namespace mota::delta::format {
namespace {

template <class T>
void put(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof v);  // little-endian hosts only, see docs/delta.md
}
template <class T>
T get(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

std::array<std::byte, kFileHeaderSize> encode(const FileHeader& h) {
  std::array<std::byte, kFileHeaderSize> b{};
  std::memcpy(b.data(), kMagic.data(), 8);
  put<std::uint32_t>(b.data() + 8, kVersion);
  put<std::uint32_t>(b.data() + 12, kKindFile);
  put<std::uint64_t>(b.data() + 16, h.old_size);
  std::memcpy(b.data() + 24, h.old_sha256.data(), 32);
  put<std::uint64_t>(b.data() + 56, h.new_size);
  put<std::uint64_t>(b.data() + 64, h.chunk_count);
  put<std::uint32_t>(b.data() + 72, h.max_chunk);
  put<std::uint8_t>(b.data() + 76, h.layout);
  put<std::uint64_t>(b.data() + 80, xxh64(std::span(b.data(), 80)));
  return b;
}

Result<FileHeader> decode_file_header(std::span<const std::byte, kFileHeaderSize> b) {
  if (std::memcmp(b.data(), kMagic.data(), 8) != 0)
    return fail(Errc::parse, "not a mota delta (bad magic)");
  auto version = get<std::uint32_t>(b.data() + 8);
  if (version != kVersion) {
    return fail(Errc::unsupported,
                "delta format version " + std::to_string(version) + ", this build reads 1");
  }
  if (get<std::uint32_t>(b.data() + 12) != kKindFile)
    return fail(Errc::parse, "not a file delta (a package delta?)");
  if (get<std::uint64_t>(b.data() + 80) != xxh64(b.first(80)))
    return fail(Errc::parse, "file delta header is damaged (checksum mismatch)");
  FileHeader h;
  h.old_size = get<std::uint64_t>(b.data() + 16);
  std::memcpy(h.old_sha256.data(), b.data() + 24, 32);
  h.new_size = get<std::uint64_t>(b.data() + 56);
  h.chunk_count = get<std::uint64_t>(b.data() + 64);
  h.max_chunk = get<std::uint32_t>(b.data() + 72);
  h.layout = get<std::uint8_t>(b.data() + 76);
  if (h.max_chunk == 0 || h.max_chunk > kMaxChunk) {
    return fail(Errc::parse, "file delta header: chunk size " + std::to_string(h.max_chunk) +
                                 " out of range (1.." + std::to_string(kMaxChunk) + ")");
  }
  if (h.new_size > (std::uint64_t(1) << 62) || h.old_size > (std::uint64_t(1) << 62))
    return fail(Errc::parse, "file delta header: size out of range");
  // Every chunk carries at least one byte, so the count is bounded by the size.
  if (h.chunk_count > h.new_size || (h.new_size + h.max_chunk - 1) / h.max_chunk > h.chunk_count)
    return fail(Errc::parse, "file delta header: chunk count does not fit the new size");
  return h;
}

std::array<std::byte, kRecordSize> encode(const Record& r) {
  std::array<std::byte, kRecordSize> b{};
  put<std::uint8_t>(b.data(), static_cast<std::uint8_t>(r.method));
  put<std::uint8_t>(b.data() + 1, r.width);
  put<std::uint64_t>(b.data() + 8, r.raw_size);
  put<std::uint64_t>(b.data() + 16, r.ref_offset);
  put<std::uint64_t>(b.data() + 24, r.ref_size);
  put<std::uint64_t>(b.data() + 32, r.ref_hash);
  put<std::uint64_t>(b.data() + 40, r.out_hash);
  put<std::uint64_t>(b.data() + 48, r.payload_size);
  put<std::uint64_t>(b.data() + 56, xxh64(std::span(b.data(), 56)));
  return b;
}

Result<Record> decode_record(std::span<const std::byte, kRecordSize> b) {
  if (get<std::uint64_t>(b.data() + 56) != xxh64(b.first(56)))
    return fail(Errc::parse, "chunk record is damaged (checksum mismatch)");
  Record r;
  auto m = get<std::uint8_t>(b.data());
  if (m >= kMethodCount) return fail(Errc::parse, "unknown chunk method " + std::to_string(m));
  r.method = static_cast<Method>(m);
  r.width = get<std::uint8_t>(b.data() + 1);
  if (r.width != 1 && r.width != 2 && r.width != 4 && r.width != 8)
    return fail(Errc::parse, "chunk element width " + std::to_string(r.width));
  r.raw_size = get<std::uint64_t>(b.data() + 8);
  r.ref_offset = get<std::uint64_t>(b.data() + 16);
  r.ref_size = get<std::uint64_t>(b.data() + 24);
  r.ref_hash = get<std::uint64_t>(b.data() + 32);
  r.out_hash = get<std::uint64_t>(b.data() + 40);
  r.payload_size = get<std::uint64_t>(b.data() + 48);
  return r;
}

std::string layout_name(std::uint8_t code) {
  switch (code) {
    case 1:
      return "safetensors";
    case 2:
      return "onnx";
    case 3:
      return "gguf";
    default:
      return "raw";
  }
}

std::uint8_t layout_code(const std::string& name) {
  if (name == "safetensors") return 1;
  if (name == "onnx") return 2;
  if (name == "gguf") return 3;
  return 0;
}

Status read_exact(const ReadFn& in, std::span<std::byte> out, const char* what) {
  std::size_t got = 0;
  while (got < out.size()) {
    auto n = MOTA_TRY(in(out.subspan(got)));
    if (n == 0) {
      return fail(Errc::parse, std::string("truncated delta: stream ends inside the ") + what +
                                   " (" + std::to_string(got) + " of " +
                                   std::to_string(out.size()) + " bytes)");
    }
    got += n;
  }
  return {};
}

}  // namespace mota::delta::format
