#include "delta/codec.hpp"

#include <zstd.h>

#include <bit>
#include <memory>
#include <string>

namespace mota::delta::codec {
namespace {

struct CctxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DctxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// One context per thread, reused across chunks (allocation would dominate small chunks).
ZSTD_CCtx* thread_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CctxFree> c(ZSTD_createCCtx());
  return c.get();
}

std::string zerr(std::size_t code) {
  return ZSTD_getErrorName(code);
}

}  // namespace

std::size_t bound(std::size_t n) {
  return ZSTD_compressBound(n);
}

Result<std::vector<std::byte>> compress(std::span<const std::byte> src, int level,
                                        std::span<const std::byte> prefix) {
  ZSTD_CCtx* c = thread_cctx();
  if (!c) return fail(Errc::internal, "zstd: cannot allocate a compression context");
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  auto check = [](std::size_t r) -> Status {
    if (ZSTD_isError(r)) return fail(Errc::internal, "zstd: " + zerr(r));
    return {};
  };
  MOTA_TRY(check(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level)));
  MOTA_TRY(check(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1)));
  if (!prefix.empty()) {
    // The window must reach from the end of the frame back to the start of the prefix, as
    // zstd --patch-from sets it; long-distance matching finds the far, aligned matches.
    const std::uint64_t span = prefix.size() + src.size();
    int wlog = std::bit_width(span > 1 ? span - 1 : 1);
    if (wlog < 10) wlog = 10;
    if (wlog > 31) return fail(Errc::internal, "zstd: prefix too large");
    MOTA_TRY(check(ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, wlog)));
    MOTA_TRY(check(ZSTD_CCtx_setParameter(c, ZSTD_c_enableLongDistanceMatching, 1)));
    MOTA_TRY(check(ZSTD_CCtx_refPrefix(c, prefix.data(), prefix.size())));
  }
  std::vector<std::byte> out(ZSTD_compressBound(src.size()));
  std::size_t n = ZSTD_compress2(c, out.data(), out.size(), src.data(), src.size());
  MOTA_TRY(check(n));
  out.resize(n);
  return out;
}

struct Decompressor::Impl {
  std::unique_ptr<ZSTD_DCtx, DctxFree> dctx{ZSTD_createDCtx()};
};

Decompressor::Decompressor() : impl_(std::make_unique<Impl>()) {}
Decompressor::~Decompressor() = default;
Decompressor::Decompressor(Decompressor&&) noexcept = default;
Decompressor& Decompressor::operator=(Decompressor&&) noexcept = default;

Status decompress(std::span<const std::byte> frame, std::span<std::byte> out,
                  std::span<const std::byte> prefix) {
  thread_local Decompressor d;
  return d.decompress(frame, out, prefix);
}

Status Decompressor::decompress(std::span<const std::byte> frame, std::span<std::byte> out,
                                std::span<const std::byte> prefix) {
  ZSTD_DCtx* d = impl_ ? impl_->dctx.get() : nullptr;
  if (!d) return fail(Errc::internal, "zstd: cannot allocate a decompression context");
  ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
  unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN) {
    return fail(Errc::parse, "zstd frame: no valid header");
  }
  if (content != out.size()) {
    return fail(Errc::parse, "zstd frame: content size " + std::to_string(content) +
                                 ", the chunk record says " + std::to_string(out.size()));
  }
  std::size_t frame_size = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
  if (ZSTD_isError(frame_size)) return fail(Errc::parse, "zstd frame: " + zerr(frame_size));
  if (frame_size != frame.size()) {
    return fail(Errc::parse, "zstd frame: " + std::to_string(frame.size() - frame_size) +
                                 " bytes after the frame");
  }
  std::size_t r = ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 31);
  if (ZSTD_isError(r)) return fail(Errc::internal, "zstd: " + zerr(r));
  if (!prefix.empty()) {
    r = ZSTD_DCtx_refPrefix(d, prefix.data(), prefix.size());
    if (ZSTD_isError(r)) return fail(Errc::internal, "zstd: " + zerr(r));
  }
  std::size_t n = ZSTD_decompressDCtx(d, out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) return fail(Errc::parse, "zstd frame: " + zerr(n));
  if (n != out.size()) {
    return fail(Errc::parse, "zstd frame: decoded " + std::to_string(n) + " bytes, expected " +
                                 std::to_string(out.size()));
  }
  return {};
}

}  // namespace mota::delta::codec
