// The delta engine: round trips over generated weight pairs and the real ONNX models, method
// choice, zstd CLI interoperability of prefix chunks, and every rejection path (corrupt,
// truncated, another base, modified base) leaving nothing behind.
#include "delta/delta.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "bench/delta_gen.hpp"
#include "common/fs.hpp"
#include "delta/format.hpp"
#include "delta/layout.hpp"
#include "delta/package/package_delta.hpp"
#include "manifest/crypto.hpp"
#include "storage/package.hpp"
#include "tests/support/test_support.hpp"

namespace mota::delta {
namespace {

namespace stdfs = std::filesystem;
using test::read_file;
using test::TempDir;
using test::write_file;

DiffOptions fast() {
  DiffOptions o;
  o.level = 3;
  o.chunk_size = 256 << 10;
  o.threads = 2;
  return o;
}

std::uint64_t fsize(const stdfs::path& p) {
  return stdfs::file_size(p);
}

// Only the expected files: no temporary left over by a failed write.
std::vector<std::string> listing(const stdfs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : stdfs::directory_iterator(dir)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 g(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(g());
  return s;
}

void round_trip(const stdfs::path& old_p, const stdfs::path& new_p, const stdfs::path& dir,
                FileDeltaInfo* info_out = nullptr, const DiffOptions& opt = fast()) {
  const stdfs::path d = dir / "d.mdelta", out = dir / "out.bin";
  auto info = diff_files(old_p, new_p, d, opt);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->delta_size, fsize(d));
  auto r = apply_file(old_p, d, out);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(read_file(out), read_file(new_p));
  EXPECT_EQ(r->new_sha256, info->new_sha256);
  auto ins = inspect_file(d);
  ASSERT_TRUE(ins) << ins.error().message();
  ASSERT_TRUE(ins->file);
  EXPECT_EQ(ins->file->delta_size, info->delta_size);
  EXPECT_EQ(ins->file->new_sha256, info->new_sha256);
  if (info_out) *info_out = *info;
  stdfs::remove(out);
}

struct PairCase {
  bench::PairKind kind;
  const char* dtype;
  double max_ratio;  // delta size / new size must stay below
};

class GeneratedPairs : public ::testing::TestWithParam<PairCase> {};

TEST_P(GeneratedPairs, RoundTripAndSize) {
  const PairCase c = GetParam();
  TempDir t;
  ASSERT_TRUE(bench::write_pair(c.kind, c.dtype, 1 << 20, t / "old", t / "new"));
  FileDeltaInfo info;
  round_trip(t / "old", t / "new", t.path(), &info);
  EXPECT_EQ(info.layout, "safetensors");
  EXPECT_LT(double(info.delta_size), c.max_ratio * double(fsize(t / "new")))
      << bench::pair_kind_name(c.kind) << " " << c.dtype;
  // The parser-free path must round-trip too.
  DiffOptions raw = fast();
  raw.parse_formats = false;
  round_trip(t / "old", t / "new", t.path(), nullptr, raw);
}

using K = bench::PairKind;
INSTANTIATE_TEST_SUITE_P(
    Pairs, GeneratedPairs,
    ::testing::Values(PairCase{K::full_finetune, "F32", 0.75},
                      PairCase{K::full_finetune, "F16", 0.6}, PairCase{K::full_finetune, "I8", 0.7},
                      PairCase{K::partial_finetune, "F32", 0.3},
                      PairCase{K::head_replaced, "F32", 0.12}, PairCase{K::reordered, "F16", 0.35},
                      PairCase{K::grown, "F32", 0.4}, PairCase{K::shrunk, "F32", 0.02},
                      PairCase{K::requantised, "I8", 0.5}, PairCase{K::identical, "F16", 0.01},
                      PairCase{K::unrelated, "F32", 1.0}, PairCase{K::unrelated, "I8", 1.0}),
    [](const auto& info) {
      std::string n = std::string(bench::pair_kind_name(info.param.kind)) + "_" + info.param.dtype;
      std::replace(n.begin(), n.end(), '-', '_');
      return n;
    });

TEST(Delta, IdenticalIsAllCopies) {
  TempDir t;
  ASSERT_TRUE(bench::write_pair(K::identical, "F32", 1 << 20, t / "old", t / "new"));
  FileDeltaInfo info;
  round_trip(t / "old", t / "new", t.path(), &info);
  EXPECT_EQ(info.methods[int(Method::copy)].raw_bytes, fsize(t / "new"));
}

TEST(Delta, EmptyFiles) {
  TempDir t;
  write_file(t / "empty", "");
  write_file(t / "data", random_bytes(300000, 1));
  round_trip(t / "empty", t / "empty", t.path());
  round_trip(t / "empty", t / "data", t.path());
  round_trip(t / "data", t / "empty", t.path());
  // No base at all (a new file of a package).
  const stdfs::path d = t / "d";
  ASSERT_TRUE(diff_files("", t / "data", d, fast()));
  auto r = apply_file("", d, t / "out");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(read_file(t / "out"), read_file(t / "data"));
}

// Bytes inserted at the start shift everything: only the prefix method (or copies) can find
// the old bytes, and its frames are standard: the zstd CLI decodes them with --patch-from.
TEST(Delta, ShiftedDataUsesPrefixAndZstdCliDecodesIt) {
  TempDir t;
  const std::string base = random_bytes(600000, 2);
  write_file(t / "old", base);
  write_file(t / "new", "inserted header bytes!" + base.substr(0, 400000) + "tail");
  FileDeltaInfo info;
  DiffOptions o = fast();
  o.parse_formats = false;
  round_trip(t / "old", t / "new", t.path(), &info, o);
  EXPECT_GT(info.methods[int(Method::prefix)].chunks, 0u);
  EXPECT_LT(info.delta_size, 20000u);

  // Walk the delta and hand each prefix chunk to `zstd -d --patch-from`.
  ASSERT_TRUE(diff_files(t / "old", t / "new", t / "d", o));
  const std::string d = read_file(t / "d"), neu = read_file(t / "new");
  std::size_t pos = format::kFileHeaderSize, out_pos = 0;
  int checked = 0;
  while (pos + format::kRecordSize <= d.size() - format::kFileTrailerSize) {
    auto rec = format::decode_record(std::span<const std::byte, format::kRecordSize>(
        reinterpret_cast<const std::byte*>(d.data() + pos), format::kRecordSize));
    ASSERT_TRUE(rec);
    pos += format::kRecordSize;
    if (rec->method == Method::prefix) {
      write_file(t / "frame.zst", d.substr(pos, rec->payload_size));
      write_file(t / "region", base.substr(rec->ref_offset, rec->ref_size));
      auto r = test::run({"zstd", "-q", "-d", "-f", "--patch-from=" + (t / "region").string(),
                          (t / "frame.zst").string(), "-o", (t / "chunk").string()});
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(read_file(t / "chunk"), neu.substr(out_pos, rec->raw_size));
      ++checked;
    }
    pos += rec->payload_size;
    out_pos += rec->raw_size;
  }
  EXPECT_GT(checked, 0);
}

TEST(Delta, LargeChunksAndDefaultLevel) {
  TempDir t;
  ASSERT_TRUE(bench::write_pair(K::full_finetune, "F16", 1 << 20, t / "old", t / "new", 7));
  DiffOptions o;  // 4 MiB chunks, level 19 with the residual probe
  FileDeltaInfo info;
  round_trip(t / "old", t / "new", t.path(), &info, o);
  EXPECT_LT(double(info.delta_size), 0.6 * double(fsize(t / "new")));
}

// ---- real ONNX models ----

TEST(Delta, RealOnnxModels) {
  const auto slim = test::shared_model("ultraface/version-slim-320.onnx");
  const auto rfb = test::shared_model("ultraface/version-RFB-320.onnx");
  ASSERT_TRUE(stdfs::exists(slim)) << slim;
  auto in = mota::fs::File::open_read(slim);
  ASSERT_TRUE(in);
  auto layout = parse_layout(
      [&](std::span<std::byte> b, std::uint64_t off) { return in->pread_exact(b, off); },
      fsize(slim));
  EXPECT_EQ(layout.format, "onnx");
  EXPECT_GT(layout.tensors.size(), 20u);

  TempDir t;
  FileDeltaInfo info;
  round_trip(slim, rfb, t.path(), &info);
  EXPECT_EQ(info.layout, "onnx");
  round_trip(rfb, slim, t.path());
  // A "fine-tuned" slim: every float of every initializer nudged (bit 0..3 of the mantissa).
  std::string bytes = read_file(slim);
  for (const auto& ts : layout.tensors) {
    if (ts.width != 4) continue;
    for (std::uint64_t o = ts.offset; o + 4 <= ts.offset + ts.size; o += 4) bytes[o] ^= 0x05;
  }
  write_file(t / "tuned.onnx", bytes);
  round_trip(slim, t / "tuned.onnx", t.path(), &info);
  EXPECT_LT(double(info.delta_size), 0.4 * double(bytes.size()));
}

// ---- rejections ----

struct Fixture {
  TempDir t;
  stdfs::path old_p = t / "old", new_p = t / "new", d = t / "d.mdelta", out = t / "out";
  std::string delta;
  Fixture() {
    EXPECT_TRUE(bench::write_pair(K::partial_finetune, "F32", 1 << 20, old_p, new_p));
    auto info = diff_files(old_p, new_p, d, fast());
    EXPECT_TRUE(info);
    delta = read_file(d);
  }
  // Applies `bytes` as the delta; checks nothing is left at out or as a temporary.
  Error apply_bad(const std::string& bytes, const stdfs::path& base) {
    write_file(t / "bad.mdelta", bytes);
    auto before = listing(t.path());
    auto r = apply_file(base, t / "bad.mdelta", out);
    EXPECT_FALSE(r);
    EXPECT_FALSE(stdfs::exists(out));
    EXPECT_EQ(listing(t.path()), before);
    return r ? Error(Errc::internal, "applied") : r.error();
  }
};

TEST(DeltaReject, CorruptPayloadRecordAndHeader) {
  Fixture f;
  // A flipped byte anywhere: header, a record, a payload, the trailer.
  for (std::size_t at : {std::size_t(5), std::size_t(30), format::kFileHeaderSize + 9,
                         f.delta.size() / 2, f.delta.size() - 3}) {
    std::string bad = f.delta;
    bad[at] ^= 0x40;
    Error e = f.apply_bad(bad, f.old_p);
    EXPECT_TRUE(e.code() == Errc::parse || e.code() == Errc::verification)
        << at << ": " << e.message();
    EXPECT_FALSE(e.message().empty());
  }
  Error e = f.apply_bad(std::string(200, 'x'), f.old_p);
  EXPECT_EQ(e.code(), Errc::parse);
  EXPECT_NE(e.message().find("bad magic"), std::string::npos) << e.message();
}

TEST(DeltaReject, Truncated) {
  Fixture f;
  for (std::size_t len : {std::size_t(0), std::size_t(10), format::kFileHeaderSize,
                          format::kFileHeaderSize + 20, f.delta.size() / 3, f.delta.size() - 1}) {
    Error e = f.apply_bad(f.delta.substr(0, len), f.old_p);
    EXPECT_EQ(e.code(), Errc::parse) << len << ": " << e.message();
    EXPECT_NE(e.message().find("truncated"), std::string::npos) << e.message();
  }
  Error e = f.apply_bad(f.delta + "x", f.old_p);
  EXPECT_NE(e.message().find("after the end"), std::string::npos) << e.message();
}

TEST(DeltaReject, AnotherBaseAndModifiedBase) {
  Fixture f;
  // Another version of the same size (different weights everywhere).
  ASSERT_TRUE(bench::write_pair(K::full_finetune, "F32", 1 << 20, f.t / "o2", f.t / "other"));
  Error e = f.apply_bad(f.delta, f.t / "other");
  EXPECT_EQ(e.code(), Errc::verification) << e.message();
  EXPECT_NE(e.message().find("base"), std::string::npos) << e.message();
  // Another size.
  write_file(f.t / "short", "tiny");
  e = f.apply_bad(f.delta, f.t / "short");
  EXPECT_EQ(e.code(), Errc::verification);
  EXPECT_NE(e.message().find("a delta for another version"), std::string::npos) << e.message();
  // One byte of the base changed on disk, in the middle of a tensor.
  std::string old = read_file(f.old_p);
  old[old.size() / 2] ^= 1;
  write_file(f.t / "modified", old);
  e = f.apply_bad(f.delta, f.t / "modified");
  EXPECT_EQ(e.code(), Errc::verification) << e.message();
  EXPECT_NE(e.message().find("differ from the delta's base"), std::string::npos) << e.message();
  // verify_base catches a change the chunks never look at.
  ApplyOptions vb;
  vb.verify_base = true;
  auto r = apply_file(f.t / "modified", f.d, f.out, vb);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_FALSE(stdfs::exists(f.out));
}

TEST(DeltaReject, OptionsOutOfRange) {
  Fixture f;
  DiffOptions o = fast();
  o.level = 40;
  auto r = diff_files(f.old_p, f.new_p, f.t / "x", o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  o = fast();
  o.chunk_size = 1000;
  EXPECT_FALSE(diff_files(f.old_p, f.new_p, f.t / "x", o));
  EXPECT_FALSE(stdfs::exists(f.t / "x"));
  ApplyOptions small;
  small.max_new_size = 1000;
  auto a = apply_file(f.old_p, f.d, f.out, small);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code(), Errc::too_large);
}

// Apply streams: the delta is pulled in small, odd-sized reads (as from a download).
TEST(Delta, StreamingApplyWithOddReads) {
  Fixture f;
  std::size_t pos = 0;
  std::size_t step = 1;
  ReadFn src = [&](std::span<std::byte> b) -> Result<std::size_t> {
    step = step * 7 % 65521 + 1;
    std::size_t n = std::min({b.size(), f.delta.size() - pos, step});
    std::memcpy(b.data(), f.delta.data() + pos, n);
    pos += n;
    return n;
  };
  std::string out;
  auto r = apply(f.old_p, src, [&](std::span<const std::byte> b) -> Status {
    out.append(reinterpret_cast<const char*>(b.data()), b.size());
    return {};
  });
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(out, read_file(f.new_p));
  EXPECT_EQ(r->delta_bytes, f.delta.size());
}

// The decoding pipeline: every worker count gives the same bytes with the callbacks on the
// caller's thread; a failing sink or source stops it with that error (workers joined, nothing
// hangs); damage in two chunks is reported at the first one in order even when a later chunk
// is decoded first.
TEST(Delta, ApplyPipelineThreadsAndFailingCallbacks) {
  Fixture f;
  const std::string want = read_file(f.new_p);
  struct Mem {
    const std::string& bytes;
    std::size_t pos = 0, fail_at = std::string::npos;
    ReadFn fn() {
      return [this](std::span<std::byte> b) -> Result<std::size_t> {
        if (pos >= fail_at) return fail(Errc::io, "connection reset (test)");
        std::size_t n = std::min({b.size(), bytes.size() - pos, fail_at - pos});
        std::memcpy(b.data(), bytes.data() + pos, n);
        pos += n;
        return n;
      };
    }
  };
  const auto caller = std::this_thread::get_id();
  for (int threads : {1, 2, 3, 8, 64}) {
    ApplyOptions o;
    o.threads = threads;
    Mem m{f.delta};
    std::string out;
    bool other_thread = false;
    auto r = apply(
        f.old_p, m.fn(),
        [&](std::span<const std::byte> b) -> Status {
          other_thread |= std::this_thread::get_id() != caller;
          out.append(reinterpret_cast<const char*>(b.data()), b.size());
          return {};
        },
        o);
    ASSERT_TRUE(r) << threads << ": " << r.error().message();
    EXPECT_EQ(out, want) << threads;
    EXPECT_FALSE(other_thread) << threads;
    EXPECT_EQ(m.pos, f.delta.size());
  }
  {
    Mem m{f.delta};
    int calls = 0;
    auto r = apply(f.old_p, m.fn(), [&](std::span<const std::byte>) -> Status {
      if (++calls == 2) return fail(Errc::io, "disk full (test)");
      return {};
    });
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::io);
    EXPECT_NE(r.error().message().find("disk full (test)"), std::string::npos);
    EXPECT_EQ(calls, 2);
  }
  {
    Mem m{f.delta};
    m.fail_at = f.delta.size() / 2;
    auto r = apply(f.old_p, m.fn(), [](std::span<const std::byte>) { return Status{}; });
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::io);
    EXPECT_NE(r.error().message().find("connection reset (test)"), std::string::npos);
  }
  // Damage the payloads of the first and the last chunk that have one.
  std::vector<std::pair<std::size_t, std::uint64_t>> payloads;  // (offset, chunk index)
  std::size_t pos = format::kFileHeaderSize;
  for (std::uint64_t i = 0; pos + format::kRecordSize <= f.delta.size() - format::kFileTrailerSize;
       ++i) {
    auto rec = format::decode_record(std::span<const std::byte, format::kRecordSize>(
        reinterpret_cast<const std::byte*>(f.delta.data() + pos), format::kRecordSize));
    ASSERT_TRUE(rec);
    pos += format::kRecordSize;
    if (rec->payload_size > 16) payloads.emplace_back(pos + rec->payload_size / 2, i);
    pos += rec->payload_size;
  }
  ASSERT_GE(payloads.size(), 2u);
  std::string bad = f.delta;
  bad[payloads.front().first] ^= 0x55;
  bad[payloads.back().first] ^= 0x55;
  for (int threads : {1, 8}) {
    ApplyOptions o;
    o.threads = threads;
    Mem m{bad};
    std::uint64_t written = 0;
    auto r = apply(
        f.old_p, m.fn(),
        [&](std::span<const std::byte> b) -> Status {
          written += b.size();
          return {};
        },
        o);
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().code() == Errc::parse || r.error().code() == Errc::verification);
    EXPECT_NE(r.error().message().find("chunk " + std::to_string(payloads.front().second) + ":"),
              std::string::npos)
        << threads << ": " << r.error().message();
  }
}

// ---- packages ----

// A model tree as storage::unpack leaves it (model.json with its file list).
stdfs::path make_tree(const TempDir& t, const std::string& name,
                      const std::map<std::string, std::string>& files) {
  const stdfs::path src = t / (name + "-src");
  write_file(src / "model.json", R"({"name": "detector", "framework": "onnx", "entry": "model.onnx",
    "inputs": [{"name": "input", "shape": [1, 3], "dtype": "float32"}],
    "outputs": [{"name": "scores", "shape": [1, 2], "dtype": "float32"}]})");
  for (const auto& [p, c] : files) write_file(src / p, c);
  storage::PackOptions po;
  po.version = name;
  EXPECT_TRUE(storage::pack(src, t / (name + ".mota"), po));
  EXPECT_TRUE(storage::unpack_file(t / (name + ".mota"), t / name));
  return t / name;
}

struct PackageFixture {
  TempDir t;
  stdfs::path v1, v2, d = t / "p.mdelta", dest = t / "slot-b";
  PackageFixture() {
    EXPECT_TRUE(bench::write_pair(K::partial_finetune, "F32", 1 << 20, t / "w1", t / "w2"));
    const std::string w1 = read_file(t / "w1"), w2 = read_file(t / "w2");
    v1 = make_tree(t, "1.0.0",
                   {{"model.onnx", w1},
                    {"labels/classes.txt", "bg\nface\n"},
                    {"old.txt", "x"},
                    {"moved.bin", random_bytes(5000, 3)}});
    v2 = make_tree(t, "1.1.0",
                   {{"model.onnx", w2},
                    {"labels/classes.txt", "bg\nface\n"},
                    {"sub/renamed.bin", random_bytes(5000, 3)},
                    {"new.txt", "brand new"}});
  }
};

TEST(PackageDelta, RoundTripIsAFullInstall) {
  PackageFixture f;
  auto info = diff_package_dirs(f.v1, f.v2, f.d, fast());
  ASSERT_TRUE(info) << info.error().message();
  std::map<std::string, std::string> kinds;
  for (const auto& pf : info->files) kinds[pf.path] = pf.kind + ":" + pf.base;
  EXPECT_EQ(kinds["model.onnx"], "delta:model.onnx");
  EXPECT_EQ(kinds["labels/classes.txt"], "copy:labels/classes.txt");
  EXPECT_EQ(kinds["sub/renamed.bin"], "copy:moved.bin");
  EXPECT_EQ(kinds["new.txt"], "new:");
  EXPECT_LT(double(info->delta_size), 0.3 * double(info->new_total_size));

  auto r = apply_package_file(f.v1, f.d, f.dest);
  ASSERT_TRUE(r) << r.error().message();
  auto full = storage::verify_tree(f.v2);
  auto got = storage::verify_tree(f.dest);
  ASSERT_TRUE(full && got);
  EXPECT_EQ(r->tree_digest, full->tree_digest);
  EXPECT_EQ(got->tree_digest, full->tree_digest);
  EXPECT_EQ(read_file(f.dest / "model.json"), read_file(f.v2 / "model.json"));
  EXPECT_EQ(r->manifest.version, "1.1.0");

  auto ins = inspect_file(f.d);
  ASSERT_TRUE(ins) << ins.error().message();
  ASSERT_TRUE(ins->is_package);
  EXPECT_EQ(ins->package->delta_size, fsize(f.d));
  EXPECT_EQ(ins->package->from.version, "1.0.0");
  auto rd = file_reader(f.d);
  ASSERT_TRUE(rd);
  auto head = read_package_header(*rd);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->to.tree_digest, full->tree_digest);
}

TEST(PackageDelta, WrongBaseModifiedBaseCorruptLeaveNothing) {
  PackageFixture f;
  ASSERT_TRUE(diff_package_dirs(f.v1, f.v2, f.d, fast()));
  // A delta for another base version: refused before anything is written.
  auto r = apply_package_file(f.v2, f.d, f.dest);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_NE(r.error().message().find("the delta applies to detector 1.0.0"), std::string::npos)
      << r.error().message();
  EXPECT_FALSE(stdfs::exists(f.dest));

  // A base file modified on disk (its model.json unchanged): detected, slot removed.
  const std::string moved = read_file(f.v1 / "moved.bin");
  std::string bad = moved;
  bad[100] ^= 1;
  write_file(f.v1 / "moved.bin", bad);
  r = apply_package_file(f.v1, f.d, f.dest);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification) << r.error().message();
  EXPECT_NE(r.error().message().find("sub/renamed.bin"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(f.dest));
  write_file(f.v1 / "moved.bin", moved);

  std::string w = read_file(f.v1 / "model.onnx");
  w[w.size() / 3] ^= 1;
  write_file(f.v1 / "model.onnx", w);
  r = apply_package_file(f.v1, f.d, f.dest);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification) << r.error().message();
  EXPECT_FALSE(stdfs::exists(f.dest));
  w[w.size() / 3] ^= 1;
  write_file(f.v1 / "model.onnx", w);

  // Corrupt and truncated package deltas.
  const std::string good = read_file(f.d);
  for (std::size_t at : {std::size_t(3), std::size_t(40), good.size() / 2, good.size() - 2}) {
    std::string b = good;
    b[at] ^= 0x10;
    write_file(f.t / "bad.mdelta", b);
    r = apply_package_file(f.v1, f.t / "bad.mdelta", f.dest);
    ASSERT_FALSE(r) << at;
    EXPECT_TRUE(r.error().code() == Errc::parse || r.error().code() == Errc::verification)
        << r.error().message();
    EXPECT_FALSE(stdfs::exists(f.dest));
  }
  for (std::size_t len : {std::size_t(20), good.size() / 2, good.size() - 1}) {
    write_file(f.t / "bad.mdelta", good.substr(0, len));
    r = apply_package_file(f.v1, f.t / "bad.mdelta", f.dest);
    ASSERT_FALSE(r) << len;
    EXPECT_EQ(r.error().code(), Errc::parse) << r.error().message();
    EXPECT_FALSE(stdfs::exists(f.dest));
  }
  // The destination must not exist already (a slot is never overwritten in place).
  stdfs::create_directory(f.dest);
  r = apply_package_file(f.v1, f.d, f.dest);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::already_exists);
  // And after all that, the good delta still applies.
  stdfs::remove(f.dest);
  EXPECT_TRUE(apply_package_file(f.v1, f.d, f.dest));
}

// ---- CLI ----

TEST(DeltaCli, DiffApplyInspectCreate) {
  PackageFixture f;
  const std::string mota = test::build_path("manager/mota").string();
  auto r = test::run({mota, "delta", "diff", "--level", "3", (f.t / "w1").string(),
                      (f.t / "w2").string(), (f.t / "w.mdelta").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run({mota, "delta", "apply", (f.t / "w1").string(), (f.t / "w.mdelta").string(),
                 (f.t / "w2.out").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(f.t / "w2.out"), read_file(f.t / "w2"));
  r = test::run({mota, "delta", "inspect", "--json", (f.t / "w.mdelta").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"layout\": \"safetensors\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"copy\""), std::string::npos) << r.out;

  // create from packages, apply onto a directory.
  r = test::run({mota, "delta", "create", "--level", "3", "--from", (f.t / "1.0.0.mota").string(),
                 "--to", (f.t / "1.1.0.mota").string(), (f.t / "p.mdelta").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("copy  sub/renamed.bin"), std::string::npos) << r.out;
  r = test::run(
      {mota, "delta", "apply", f.v1.string(), (f.t / "p.mdelta").string(), f.dest.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(storage::verify_tree(f.dest));
  r = test::run({mota, "delta", "inspect", (f.t / "p.mdelta").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("package delta: detector 1.0.0 -> detector 1.1.0"), std::string::npos)
      << r.out;
  // A wrong base through the CLI: exit code 1 and a message naming the cause.
  r = test::run({mota, "delta", "apply", f.v2.string(), (f.t / "p.mdelta").string(),
                 (f.t / "other").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("the delta applies to"), std::string::npos) << r.err;
  EXPECT_FALSE(stdfs::exists(f.t / "other"));
}

}  // namespace
}  // namespace mota::delta
