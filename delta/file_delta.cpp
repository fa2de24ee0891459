// File deltas: planning chunks, choosing each chunk's method, encoding and decoding.
#include <fcntl.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "common/fs.hpp"
#include "common/hex.hpp"
#include "delta/codec.hpp"
#include "delta/delta.hpp"
#include "delta/format.hpp"
#include "delta/hash.hpp"
#include "delta/layout.hpp"
#include "delta/pipeline.hpp"
#include "delta/transform.hpp"
#include "manifest/crypto.hpp"

namespace mota::delta {
namespace {

using format::Record;

// The old (or new) file, read with pread from any thread. An empty path is an empty file.
struct Input {
  fs::File file;
  std::uint64_t size = 0;
  std::string path;

  static Result<Input> open(const stdfs::path& p) {
    Input in;
    if (p.empty()) return in;
    in.path = p.string();
    in.file = MOTA_TRY(fs::File::open_read(p));
    in.size = MOTA_TRY_CTX(in.file.size(), p.string());
    return in;
  }
  Status read(std::span<std::byte> buf, std::uint64_t offset) const {
    if (buf.empty()) return {};
    return const_cast<fs::File&>(file).pread_exact(buf, offset).context(path);
  }
  Result<std::vector<std::byte>> read(std::uint64_t offset, std::uint64_t n) const {
    std::vector<std::byte> v(static_cast<std::size_t>(n));
    MOTA_TRY(read(v, offset));
    return v;
  }
  // Asks the kernel to start reading a region a worker will need soon (advice only).
  void prefetch(std::uint64_t offset, std::uint64_t n) const {
    if (file.is_open())
      (void)::posix_fadvise(file.fd(), static_cast<off_t>(offset), static_cast<off_t>(n),
                            POSIX_FADV_WILLNEED);
  }
  PreadFn preader() const {
    return [this](std::span<std::byte> b, std::uint64_t off) { return read(b, off); };
  }
};

struct Span {
  std::uint64_t offset = 0, size = 0;
  int tensor = -1;  // index into the layout, -1 outside tensors
};

// Cuts a file into chunks of at most `chunk` bytes: tensors are cut relative to their start
// (so the same tensor at another offset gives the same chunks), the bytes between them on a grid.
std::vector<Span> plan_chunks(const Layout& layout, std::uint64_t size, std::uint64_t chunk) {
  std::vector<Span> out;
  auto cut = [&](std::uint64_t begin, std::uint64_t end, int tensor) {
    for (std::uint64_t o = begin; o < end; o += chunk)
      out.push_back(Span{o, std::min(chunk, end - o), tensor});
  };
  std::uint64_t pos = 0;
  for (std::size_t i = 0; i < layout.tensors.size(); ++i) {
    const Tensor& t = layout.tensors[i];
    cut(pos, t.offset, -1);
    cut(t.offset, t.offset + t.size, static_cast<int>(i));
    pos = t.offset + t.size;
  }
  cut(pos, size, -1);
  // Runs of small pieces (biases, norms, the bytes between tensors) become one chunk: a frame
  // and a record per few hundred bytes would cost more than they save.
  const std::uint64_t small = std::min<std::uint64_t>(chunk / 4, 64 << 10);
  std::vector<Span> merged;
  for (const Span& s : out) {
    if (!merged.empty() && s.size < small && merged.back().tensor == -1 &&
        merged.back().offset + merged.back().size == s.offset &&
        merged.back().size + s.size <= chunk) {
      merged.back().size += s.size;
      continue;
    }
    merged.push_back(s);
    if (s.size < small) merged.back().tensor = -1;
  }
  return merged;
}

struct Plan {
  Span span;
  std::uint64_t aligned_offset = 0, aligned_size = 0;  // old bytes at the same place
  std::uint64_t prefix_offset = 0, prefix_size = 0;    // old region for the prefix method
  int width = 0;
};

struct Encoded {
  Record rec;
  std::vector<std::byte> payload;
  std::vector<std::byte> raw;  // the new bytes (hashed in order by the consumer)
};

struct Candidate {
  Method method;
  int width;
  std::vector<std::byte> payload;
};

constexpr int kProbeLevel = 9;

std::uint64_t hash_of(std::span<const std::byte> b) {
  return b.empty() ? 0 : xxh64(b);
}

struct DiffContext {
  const Input& old;
  const Input& neu;
  const DiffOptions& opt;
  // (size, xxh64) of every old chunk -> its offset: copies "anywhere in the old file".
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> index;
  static std::uint64_t key(std::uint64_t size, std::uint64_t h) { return h ^ (size * 0x9E37u); }
};

Result<Encoded> encode_chunk(const DiffContext& ctx, const Plan& p) {
  Encoded e;
  e.raw = MOTA_TRY(ctx.neu.read(p.span.offset, p.span.size));
  const std::span<const std::byte> neu(e.raw);
  Record& r = e.rec;
  r.raw_size = p.span.size;
  r.out_hash = xxh64(neu);
  r.width = 1;

  auto copy_from = [&](std::uint64_t off) {
    r.method = Method::copy;
    r.ref_offset = off;
    r.ref_size = p.span.size;
    r.ref_hash = r.out_hash;
    r.payload_size = 0;
    return e;
  };
  std::vector<std::byte> aligned = MOTA_TRY(ctx.old.read(p.aligned_offset, p.aligned_size));
  if (aligned.size() == neu.size() && std::equal(aligned.begin(), aligned.end(), neu.begin()))
    return copy_from(p.aligned_offset);
  if (auto it = ctx.index.find(DiffContext::key(neu.size(), r.out_hash)); it != ctx.index.end()) {
    for (std::uint64_t off : it->second) {
      auto bytes = MOTA_TRY(ctx.old.read(off, neu.size()));
      if (std::equal(bytes.begin(), bytes.end(), neu.begin())) return copy_from(off);
    }
  }

  // Trials at a fast level pick the method; the winner (and near-winners) are then encoded at
  // the requested level.
  const int trial_level = std::min(ctx.opt.level, 1);
  std::vector<Candidate> cands;
  cands.push_back({Method::zstd, 1, MOTA_TRY(codec::compress(neu, trial_level))});
  std::vector<std::byte> prefix;
  if (p.prefix_size > 0) {
    prefix = MOTA_TRY(ctx.old.read(p.prefix_offset, p.prefix_size));
    cands.push_back({Method::prefix, 1, MOTA_TRY(codec::compress(neu, trial_level, prefix))});
  }
  std::vector<std::byte> residual(neu.size());
  if (!aligned.empty()) {
    std::vector<std::pair<bool, int>> transforms;
    if (p.width > 0) {
      transforms = {{false, p.width}, {true, p.width}};
    } else {
      transforms = {{false, 4}, {false, 2}, {true, 1}};
    }
    for (auto [sub, w] : transforms) {
      encode_residual(sub, w, neu, aligned, residual);
      cands.push_back(
          {sub ? Method::sub : Method::xor_, w, MOTA_TRY(codec::compress(residual, trial_level))});
    }
  }
  std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
    return a.payload.size() < b.payload.size();
  });
  Candidate best = std::move(cands.front());
  if (ctx.opt.level > trial_level) {
    const std::size_t trial_best = best.payload.size();
    std::vector<Candidate> finals;
    for (auto& c : cands) {
      if (c.payload.size() > trial_best + trial_best / 16 + 64) break;
      std::span<const std::byte> src = neu;
      std::span<const std::byte> pre;
      int level = ctx.opt.level;
      if (c.method == Method::xor_ || c.method == Method::sub) {
        encode_residual(c.method == Method::sub, c.width, neu, aligned, residual);
        src = residual;
        // Residuals of noisy weights are mostly entropy: the slow high levels rarely pay there
        // (int8 residuals are the exception). A sample decides, at 1/8 of a chunk's cost.
        if (level > kProbeLevel) {
          auto sample = src.first(std::min<std::size_t>(src.size(), 512 << 10));
          auto lo = MOTA_TRY(codec::compress(sample, kProbeLevel));
          auto hi = MOTA_TRY(codec::compress(sample, level));
          if (hi.size() * 100 > lo.size() * 98) level = kProbeLevel;
        }
      } else if (c.method == Method::prefix) {
        pre = prefix;
      }
      finals.push_back({c.method, c.width, MOTA_TRY(codec::compress(src, level, pre))});
    }
    std::sort(finals.begin(), finals.end(), [](const Candidate& a, const Candidate& b) {
      return a.payload.size() < b.payload.size();
    });
    best = std::move(finals.front());
  }
  r.method = best.method;
  r.width = static_cast<std::uint8_t>(best.width);
  if (best.method == Method::prefix) {
    r.ref_offset = p.prefix_offset;
    r.ref_size = p.prefix_size;
    r.ref_hash = hash_of(prefix);
  } else if (best.method == Method::xor_ || best.method == Method::sub) {
    r.ref_offset = p.aligned_offset;
    r.ref_size = p.aligned_size;
    r.ref_hash = hash_of(aligned);
  }
  r.payload_size = best.payload.size();
  e.payload = std::move(best.payload);
  return e;
}

std::array<std::uint8_t, 32> unhex32(const std::string& h) {
  std::array<std::uint8_t, 32> out{};
  auto bytes = from_hex(h);
  if (bytes && bytes->size() == 32) std::memcpy(out.data(), bytes->data(), 32);
  return out;
}

std::string hex32(const std::array<std::uint8_t, 32>& b) {
  return to_hex(std::as_bytes(std::span(b)));
}

void count(FileDeltaInfo& info, const Record& r) {
  auto& m = info.methods[static_cast<int>(r.method)];
  m.chunks++;
  m.raw_bytes += r.raw_size;
  m.encoded_bytes += format::kRecordSize + r.payload_size;
}

}  // namespace

const char* method_name(Method m) {
  switch (m) {
    case Method::copy:
      return "copy";
    case Method::zstd:
      return "zstd";
    case Method::prefix:
      return "prefix";
    case Method::xor_:
      return "xor";
    case Method::sub:
      return "sub";
  }
  return "?";
}

Result<FileDeltaInfo> diff(const stdfs::path& old_path, const stdfs::path& new_path,
                           const WriteFn& sink, const DiffOptions& options) {
  if (options.level < 1 || options.level > 22)
    return fail(Errc::invalid_argument,
                "zstd level " + std::to_string(options.level) + " out of range 1..22");
  if (options.chunk_size < (64u << 10) || options.chunk_size > format::kMaxChunk) {
    return fail(Errc::invalid_argument, "chunk size " + std::to_string(options.chunk_size) +
                                            " out of range 64 KiB..32 MiB");
  }
  const Input old = MOTA_TRY(Input::open(old_path));
  const Input neu = MOTA_TRY(Input::open(new_path));
  const std::uint64_t chunk = options.chunk_size;
  int threads = options.threads > 0
                    ? options.threads
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  Layout old_layout, new_layout;
  if (options.parse_formats) {
    old_layout = parse_layout(old.preader(), old.size);
    new_layout = parse_layout(neu.preader(), neu.size);
  }

  // Index the old file by chunk hash (and hash it whole for the header) in one pass.
  DiffContext ctx{old, neu, options, {}};
  crypto::Hasher old_hash;
  {
    std::vector<Span> spans = plan_chunks(old_layout, old.size, chunk);
    std::vector<std::byte> buf;
    for (const Span& s : spans) {
      buf.resize(static_cast<std::size_t>(s.size));
      MOTA_TRY(old.read(buf, s.offset));
      old_hash.update(buf);
      ctx.index[DiffContext::key(s.size, xxh64(buf))].push_back(s.offset);
    }
  }

  std::unordered_map<std::string, const Tensor*> old_by_name;
  for (const Tensor& t : old_layout.tensors) old_by_name[t.name] = &t;
  std::vector<Span> spans = plan_chunks(new_layout, neu.size, chunk);
  const std::uint64_t margin = chunk / 2;
  auto plan_of = [&](const Span& s) {
    Plan p;
    p.span = s;
    std::uint64_t at = s.offset;  // where the matching old bytes start
    if (s.tensor >= 0) {
      const Tensor& t = new_layout.tensors[static_cast<std::size_t>(s.tensor)];
      p.width = t.width;
      if (auto it = old_by_name.find(t.name); it != old_by_name.end()) {
        const std::uint64_t rel = s.offset - t.offset;
        at = it->second->offset + rel;
        p.aligned_offset = at;
        p.aligned_size = rel < it->second->size ? std::min(s.size, it->second->size - rel) : 0;
      } else {
        p.aligned_offset = std::min(at, old.size);
        p.aligned_size = at < old.size ? std::min(s.size, old.size - at) : 0;
      }
    } else {
      p.aligned_offset = std::min(at, old.size);
      p.aligned_size = at < old.size ? std::min(s.size, old.size - at) : 0;
    }
    if (old.size > 0) {
      const std::uint64_t centre = std::min(at, old.size);
      p.prefix_offset = centre > margin ? centre - margin : 0;
      const std::uint64_t end = std::min(old.size, centre + s.size + margin);
      p.prefix_size = end - p.prefix_offset;
    }
    if (p.aligned_size == 0) p.aligned_offset = 0;
    return p;
  };

  FileDeltaInfo info;
  info.old_size = old.size;
  info.old_sha256 = old_hash.hex_digest();
  info.new_size = neu.size;
  info.chunks = spans.size();
  info.layout = new_layout.format;

  format::FileHeader h;
  h.old_size = old.size;
  h.old_sha256 = unhex32(info.old_sha256);
  h.new_size = neu.size;
  h.chunk_count = spans.size();
  h.max_chunk = static_cast<std::uint32_t>(chunk);
  h.layout = format::layout_code(new_layout.format);
  auto head = format::encode(h);
  MOTA_TRY(sink(head));
  info.delta_size = head.size();

  crypto::Hasher new_hash;
  std::size_t next = 0;
  MOTA_TRY(run_ordered<Encoded>(
      threads,
      [&]() -> Result<std::optional<Encoded>> {
        if (next == spans.size()) return std::optional<Encoded>();
        Encoded e;
        e.rec.raw_size = next++;  // the plan index until work() replaces it
        return std::optional<Encoded>(std::move(e));
      },
      [&](Encoded& e) -> Status {
        const Plan p = plan_of(spans[static_cast<std::size_t>(e.rec.raw_size)]);
        e = MOTA_TRY(encode_chunk(ctx, p));
        return {};
      },
      [&](Encoded& e) -> Status {
        new_hash.update(e.raw);
        auto rec = format::encode(e.rec);
        MOTA_TRY(sink(rec));
        if (!e.payload.empty()) MOTA_TRY(sink(e.payload));
        info.delta_size += rec.size() + e.payload.size();
        count(info, e.rec);
        e = Encoded{};
        return {};
      }));
  info.new_sha256 = new_hash.hex_digest();
  std::array<std::byte, format::kFileTrailerSize> tail{};
  std::memcpy(tail.data(), format::kFileEnd.data(), 8);
  auto digest = unhex32(info.new_sha256);
  std::memcpy(tail.data() + 8, digest.data(), 32);
  MOTA_TRY(sink(tail));
  info.delta_size += tail.size();
  return info;
}

Result<FileDeltaInfo> diff_files(const stdfs::path& old_path, const stdfs::path& new_path,
                                 const stdfs::path& out_path, const DiffOptions& options) {
  auto out = MOTA_TRY(fs::AtomicFile::create(stdfs::absolute(out_path)));
  auto info = MOTA_TRY(diff(
      old_path, new_path,
      [&](std::span<const std::byte> b) {
        return out.write_all(b).context("write " + out_path.string());
      },
      options));
  MOTA_TRY(out.commit());
  return info;
}

// ---- apply ----
//
// The decoder is a pipeline over (threads + 2) chunks in flight. The calling thread reads chunk
// records and payloads from the delta stream and pushes the decoded chunks to the sink in order
// (the callbacks stay on the caller's thread, as delta.hpp promises). `threads` workers decode
// chunks in any order: pread the old region straight into the output buffer, zstd-decompress
// with a context kept per worker, un-shuffle and combine in place, XXH64 once. Whichever worker
// is free also feeds decoded chunks, in order, to the output's sha256, so hashing overlaps both
// decoding and writing instead of sitting on the writer's critical path. Buffers come from a
// pool: no allocation or page faulting per chunk once the pipeline is warm.

namespace {

struct Job {
  Record rec;
  std::uint64_t index = 0;
  BufferPool::Buf payload;  // released once decoded
  BufferPool::Buf out;      // the chunk's new bytes
  Status status;            // of decoding
  bool decoded = false, written = false, hashed = false;
};

Status check_record(const Record& r, const format::FileHeader& h, std::uint64_t produced,
                    std::uint64_t index) {
  auto bad = [&](const std::string& why) {
    return fail(Errc::parse, "chunk " + std::to_string(index) + ": " + why);
  };
  if (r.raw_size == 0 || r.raw_size > h.max_chunk) return bad("size out of range");
  if (r.raw_size > h.new_size - produced) return bad("chunks exceed the new file size");
  if (r.ref_size > h.old_size || r.ref_offset > h.old_size - r.ref_size)
    return bad("refers to bytes past the end of the base file");
  const std::uint64_t max_payload = codec::bound(static_cast<std::size_t>(r.raw_size)) + 1024;
  switch (r.method) {
    case Method::copy:
      if (r.ref_size != r.raw_size || r.payload_size != 0) return bad("bad copy record");
      break;
    case Method::zstd:
      if (r.ref_size != 0) return bad("plain chunk with a reference");
      [[fallthrough]];
    case Method::prefix:
      if (r.method == Method::prefix &&
          (r.ref_size == 0 || r.ref_size > format::kMaxPrefixFactor * h.max_chunk))
        return bad("prefix size out of range");
      if (r.payload_size == 0 || r.payload_size > max_payload) return bad("payload size");
      break;
    case Method::xor_:
    case Method::sub:
      if (r.ref_size > r.raw_size) return bad("reference longer than the chunk");
      if (r.payload_size == 0 || r.payload_size > max_payload) return bad("payload size");
      break;
  }
  return {};
}

// What one decoding worker keeps between chunks.
struct Worker {
  codec::Decompressor zstd;
  std::unique_ptr<std::byte[]> scratch;  // a prefix region or a residual
  std::size_t cap = 0;
  std::span<std::byte> buf(std::size_t n) {
    if (n > cap) {
      scratch.reset();  // the old one goes first: peak memory is one buffer, not two
      scratch.reset(new std::byte[n]);
      cap = n;
    }
    return {scratch.get(), n};
  }
};

Status decode_chunk(const Input& old, BufferPool& pool, Worker& w, Job& j) {
  const Record& r = j.rec;
  auto where = [&]() { return "chunk " + std::to_string(j.index); };
  auto base_error = [&]() {
    return fail(Errc::verification,
                where() + ": base bytes [" + std::to_string(r.ref_offset) + ", " +
                    std::to_string(r.ref_offset + r.ref_size) +
                    ") differ from the delta's base (modified base, or a delta for another "
                    "version)");
  };
  auto out_error = [&]() {
    return fail(Errc::verification, where() + ": decoded bytes do not match the recorded hash");
  };
  const auto raw = static_cast<std::size_t>(r.raw_size);
  const auto ref_size = static_cast<std::size_t>(r.ref_size);
  j.out = pool.get(raw);
  const std::span<std::byte> out = j.out.span();
  switch (r.method) {
    case Method::copy: {
      MOTA_TRY(old.read(out, r.ref_offset));
      // The old bytes are the output: one hash serves both checks.
      const std::uint64_t h = xxh64(out);
      if (h != r.ref_hash) return base_error();
      if (h != r.out_hash) return out_error();
      return {};
    }
    case Method::zstd:
      MOTA_TRY_CTX(w.zstd.decompress(j.payload.span(), out), where());
      break;
    case Method::prefix: {
      const std::span<std::byte> ref = w.buf(ref_size);
      MOTA_TRY(old.read(ref, r.ref_offset));
      if (xxh64(ref) != r.ref_hash) return base_error();
      MOTA_TRY_CTX(w.zstd.decompress(j.payload.span(), out, ref), where());
      break;
    }
    case Method::xor_:
    case Method::sub: {
      // The aligned old bytes go straight into the output buffer (zero-padded past the
      // reference) and the residual is combined into them in place.
      const std::span<std::byte> ref = out.first(ref_size);
      if (ref_size > 0) {
        MOTA_TRY(old.read(ref, r.ref_offset));
        if (xxh64(ref) != r.ref_hash) return base_error();
      }
      std::memset(out.data() + ref_size, 0, raw - ref_size);
      const std::span<std::byte> residual = w.buf(raw);
      MOTA_TRY_CTX(w.zstd.decompress(j.payload.span(), residual), where());
      apply_residual(r.method == Method::sub, r.width, residual, out);
      break;
    }
  }
  j.payload.release();
  if (xxh64(out) != r.out_hash) return out_error();
  return {};
}

Result<format::FileHeader> read_header(const ReadFn& delta) {
  std::array<std::byte, format::kFileHeaderSize> hb;
  MOTA_TRY(format::read_exact(delta, hb, "file header"));
  return format::decode_file_header(hb);
}

// The shared state of one apply: the window of chunks in flight, in order, and the workers.
// Destruction stops and joins the workers before the window they work on goes away.
class Pipeline {
 public:
  Pipeline(const Input& old, crypto::Hasher& sha) : old_(old), sha_(sha) {}
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
  ~Pipeline() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  Status start(int n) {
    try {
      for (int i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
    } catch (const std::system_error& e) {
      if (threads_.empty()) return fail(Errc::internal, std::string("apply: ") + e.what());
    }
    return {};
  }

  // Runs the ordered loop on the calling thread: `read_next` gives the next chunk (nullopt at
  // the end), `sink` takes decoded chunks in order.
  Status run(std::size_t depth, const std::function<Result<std::optional<Job>>()>& read_next,
             const WriteFn& sink, std::uint64_t& written_bytes) {
    bool more = true;
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      while (!window_.empty() && window_.front()->written && window_.front()->hashed) {
        window_.pop_front();
        ++base_;
      }
      if (next_write_ < base_ + window_.size()) {
        Job& j = *window_[next_write_ - base_];
        if (j.decoded) {
          if (!j.status) return j.status;
          lk.unlock();
          MOTA_TRY(sink(j.out.span()));
          lk.lock();
          written_bytes += j.out.size();
          j.written = true;
          ++next_write_;
          continue;
        }
      }
      if (more && window_.size() < depth) {
        lk.unlock();
        std::optional<Job> next = MOTA_TRY(read_next());
        lk.lock();
        if (!next) {
          more = false;
          continue;
        }
        window_.push_back(std::make_unique<Job>(std::move(*next)));
        work_cv_.notify_one();
        continue;
      }
      if (!more && window_.empty()) return {};
      done_cv_.wait(lk);
    }
  }

 private:
  void work() {
    Worker w;
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      if (stop_) return;
      // The sha256 is the one strictly sequential stage: it goes first.
      if (!hashing_ && next_hash_ < base_ + window_.size()) {
        Job& j = *window_[next_hash_ - base_];
        if (j.decoded && j.status) {
          hashing_ = true;
          lk.unlock();
          sha_.update(j.out.span());
          lk.lock();
          j.hashed = true;
          ++next_hash_;
          hashing_ = false;
          done_cv_.notify_one();
          continue;
        }
      }
      if (next_decode_ < base_ + window_.size()) {
        Job& j = *window_[next_decode_ - base_];
        ++next_decode_;
        lk.unlock();
        Status st = decode_chunk(old_, pool_, w, j);
        lk.lock();
        j.status = std::move(st);
        j.decoded = true;
        done_cv_.notify_one();
        continue;
      }
      work_cv_.wait(lk);
    }
  }

 public:
  BufferPool pool_;

 private:
  const Input& old_;
  crypto::Hasher& sha_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::unique_ptr<Job>> window_;  // front: the oldest chunk not yet released
  std::uint64_t base_ = 0;                   // chunk index of window_.front()
  std::uint64_t next_decode_ = 0, next_hash_ = 0, next_write_ = 0;
  bool hashing_ = false, stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace

Result<ApplyResult> apply(const stdfs::path& old_path, const ReadFn& delta, const WriteFn& sink,
                          const ApplyOptions& options) {
  const Input old = MOTA_TRY(Input::open(old_path));
  const format::FileHeader h = MOTA_TRY(read_header(delta));
  if (h.old_size != old.size) {
    return fail(Errc::verification,
                "the delta's base is " + std::to_string(h.old_size) + " bytes, " +
                    (old.path.empty() ? std::string("no base file") : old.path) + " is " +
                    std::to_string(old.size) + " (a delta for another version?)");
  }
  if (h.new_size > options.max_new_size) {
    return fail(Errc::too_large, "the delta produces " + std::to_string(h.new_size) +
                                     " bytes, more than the limit of " +
                                     std::to_string(options.max_new_size));
  }
  if (options.verify_base && old.size > 0) {
    crypto::Hasher hasher;
    std::vector<std::byte> buf(1 << 20);
    for (std::uint64_t off = 0; off < old.size; off += buf.size()) {
      std::span<std::byte> b(buf.data(), std::min<std::uint64_t>(buf.size(), old.size - off));
      MOTA_TRY(old.read(b, off));
      hasher.update(b);
    }
    const std::string got = hasher.hex_digest();
    if (got != hex32(h.old_sha256)) {
      return fail(Errc::verification,
                  old.path + ": sha256 " + got + ", the delta's base is " + hex32(h.old_sha256));
    }
  }

  ApplyResult result;
  result.delta_bytes = format::kFileHeaderSize;
  crypto::Hasher new_hash;
  {
    const int threads = std::clamp(options.threads, 1, 64);
    Pipeline pipe(old, new_hash);
    MOTA_TRY(pipe.start(threads));
    std::uint64_t produced_planned = 0, index = 0;
    auto read_next = [&]() -> Result<std::optional<Job>> {
      if (index == h.chunk_count) return std::optional<Job>();
      Job j;
      j.index = index;
      std::array<std::byte, format::kRecordSize> rb;
      MOTA_TRY(format::read_exact(delta, rb, "chunk record"));
      j.rec = MOTA_TRY_CTX(format::decode_record(rb), "chunk " + std::to_string(index));
      MOTA_TRY(check_record(j.rec, h, produced_planned, index));
      // Start reading the old region now, a few chunks before a worker needs it.
      if (j.rec.ref_size > 0) old.prefetch(j.rec.ref_offset, j.rec.ref_size);
      j.payload = pipe.pool_.get(static_cast<std::size_t>(j.rec.payload_size));
      MOTA_TRY(format::read_exact(delta, j.payload.span(), "chunk payload"));
      produced_planned += j.rec.raw_size;
      result.delta_bytes += format::kRecordSize + j.rec.payload_size;
      ++index;
      return std::optional<Job>(std::move(j));
    };
    MOTA_TRY(pipe.run(static_cast<std::size_t>(threads) + 2, read_next, sink, result.new_size));
  }
  if (result.new_size != h.new_size) {
    return fail(Errc::parse, "chunks produce " + std::to_string(result.new_size) +
                                 " bytes, the header says " + std::to_string(h.new_size));
  }
  std::array<std::byte, format::kFileTrailerSize> tail;
  MOTA_TRY(format::read_exact(delta, tail, "file trailer"));
  if (std::memcmp(tail.data(), format::kFileEnd.data(), 8) != 0)
    return fail(Errc::parse, "file delta trailer is damaged");
  result.delta_bytes += tail.size();
  result.new_sha256 = new_hash.hex_digest();
  std::array<std::uint8_t, 32> want;
  std::memcpy(want.data(), tail.data() + 8, 32);
  if (result.new_sha256 != hex32(want)) {
    return fail(Errc::verification,
                "result sha256 " + result.new_sha256 + ", the delta says " + hex32(want));
  }
  return result;
}

Result<ReadFn> file_reader(const stdfs::path& path) {
  auto f = std::make_shared<fs::File>(MOTA_TRY(fs::File::open_read(path)));
  std::string name = path.string();
  return ReadFn([f, name](std::span<std::byte> b) -> Result<std::size_t> {
    return f->read_some(b).context(name);
  });
}

Result<ApplyResult> apply_file(const stdfs::path& old_path, const stdfs::path& delta_path,
                               const stdfs::path& out_path, const ApplyOptions& options) {
  ReadFn in = MOTA_TRY(file_reader(delta_path));
  auto out = MOTA_TRY(fs::AtomicFile::create(stdfs::absolute(out_path)));
  Writeback writeback(out.file().fd());
  auto r = MOTA_TRY(apply(
                        old_path, in,
                        [&](std::span<const std::byte> b) -> Status {
                          MOTA_TRY(out.write_all(b).context("write " + out_path.string()));
                          writeback.wrote(b.size());
                          return {};
                        },
                        options)
                        .context(delta_path.string()));
  std::byte extra;
  if (MOTA_TRY(in(std::span(&extra, 1))) != 0)
    return fail(Errc::parse, delta_path.string() + ": bytes after the end of the delta");
  MOTA_TRY(out.commit());
  return r;
}

// ---- inspect (file part; packages in package_delta.cpp) ----

Result<FileDeltaInfo> inspect_file_delta(const ReadFn& delta) {
  const format::FileHeader h = MOTA_TRY(read_header(delta));
  FileDeltaInfo info;
  info.old_size = h.old_size;
  info.old_sha256 = hex32(h.old_sha256);
  info.new_size = h.new_size;
  info.chunks = h.chunk_count;
  info.layout = format::layout_name(h.layout);
  info.delta_size = format::kFileHeaderSize;
  std::uint64_t produced = 0;
  std::vector<std::byte> skip(1 << 16);
  for (std::uint64_t i = 0; i < h.chunk_count; ++i) {
    std::array<std::byte, format::kRecordSize> rb;
    MOTA_TRY(format::read_exact(delta, rb, "chunk record"));
    Record r = MOTA_TRY_CTX(format::decode_record(rb), "chunk " + std::to_string(i));
    MOTA_TRY(check_record(r, h, produced, i));
    produced += r.raw_size;
    for (std::uint64_t left = r.payload_size; left > 0;) {
      std::span<std::byte> b(skip.data(), std::min<std::uint64_t>(skip.size(), left));
      MOTA_TRY(format::read_exact(delta, b, "chunk payload"));
      left -= b.size();
    }
    count(info, r);
    info.delta_size += format::kRecordSize + r.payload_size;
  }
  if (produced != h.new_size) return fail(Errc::parse, "chunks do not cover the new file");
  std::array<std::byte, format::kFileTrailerSize> tail;
  MOTA_TRY(format::read_exact(delta, tail, "file trailer"));
  if (std::memcmp(tail.data(), format::kFileEnd.data(), 8) != 0)
    return fail(Errc::parse, "file delta trailer is damaged");
  std::array<std::uint8_t, 32> want;
  std::memcpy(want.data(), tail.data() + 8, 32);
  info.new_sha256 = hex32(want);
  info.delta_size += tail.size();
  return info;
}

}  // namespace mota::delta
