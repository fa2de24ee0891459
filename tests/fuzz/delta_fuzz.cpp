// libFuzzer harness for the delta decoder: the input is an untrusted .mdelta stream, decoded
// against a fixed base file (apply), inspected without one (inspect), and read as a package
// header. Any crash, sanitizer report, leak or unbounded allocation is a bug; errors are fine.
// Built with -DMOTA_FUZZ=ON and clang; run with scripts/fuzz. With MOTA_FUZZ_SEEDS=<dir> set,
// initialisation writes valid deltas against the same base into <dir> as a starting corpus.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "delta/format.hpp"
#include "delta/hash.hpp"
#include "delta/package/package_delta.hpp"

namespace {

namespace stdfs = std::filesystem;
stdfs::path g_base;

// Deterministic base: weight-like float32 values, then text, then random bytes.
std::string base_bytes() {
  std::string s;
  std::uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < 16384; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    float f = float(std::int64_t(x % 2001) - 1000) * 1e-4f;
    s.append(reinterpret_cast<const char*>(&f), 4);
  }
  for (int i = 0; i < 200; ++i) s += "layer " + std::to_string(i) + " weights and biases\n";
  for (int i = 0; i < 4096; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    s.push_back(static_cast<char>(x));
  }
  return s;
}

void write(const stdfs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
}

mota::delta::ReadFn reader(const std::uint8_t* data, std::size_t size, std::size_t& pos) {
  return [data, size, &pos](std::span<std::byte> b) -> mota::Result<std::size_t> {
    std::size_t n = std::min(b.size(), size - pos);
    if (n) std::memcpy(b.data(), data + pos, n);
    pos += n;
    return n;
  };
}

// The same input with the header and record checksums recomputed, so mutations reach the
// record checks, the zstd frames and the transforms instead of stopping at a checksum.
std::string with_fixed_checksums(const std::uint8_t* data, std::size_t size) {
  namespace f = mota::delta::format;
  std::string s(reinterpret_cast<const char*>(data), size);
  auto put_hash = [&](std::size_t at, std::size_t len) {
    std::uint64_t h = mota::delta::xxh64(std::as_bytes(std::span(s.data() + at, len)));
    std::memcpy(s.data() + at + len, &h, 8);
  };
  if (s.size() < f::kFileHeaderSize) return s;
  put_hash(0, 80);
  std::size_t pos = f::kFileHeaderSize;
  while (pos + f::kRecordSize <= s.size()) {
    put_hash(pos, 56);
    std::uint64_t payload;
    std::memcpy(&payload, s.data() + pos + 48, 8);
    pos += f::kRecordSize;
    if (payload > s.size() - pos) break;
    pos += payload;
  }
  return s;
}

void run_one(const std::uint8_t* data, std::size_t size) {
  mota::delta::ApplyOptions opt;
  opt.threads = 1;
  opt.max_new_size = 64 << 20;
  std::size_t pos = 0;
  std::uint64_t out = 0;
  (void)mota::delta::apply(
      g_base, reader(data, size, pos),
      [&](std::span<const std::byte> b) -> mota::Status {
        out += b.size();
        return {};
      },
      opt);
  pos = 0;
  (void)mota::delta::inspect(reader(data, size, pos));
  pos = 0;
  (void)mota::delta::read_package_header(reader(data, size, pos));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const stdfs::path dir = stdfs::temp_directory_path() / ("mota-fuzz-" + std::to_string(getpid()));
  stdfs::create_directories(dir);
  g_base = dir / "base";
  const std::string base = base_bytes();
  write(g_base, base);
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) {
    stdfs::create_directories(seeds);
    mota::delta::DiffOptions o;
    o.level = 3;
    o.chunk_size = 64 << 10;
    o.threads = 1;
    std::string shifted = "xx" + base.substr(0, base.size() - 100);
    std::string tweaked = base;
    for (std::size_t i = 0; i < 65536; i += 7) tweaked[i] ^= 1;
    std::string grown = base + base.substr(1000, 30000);
    int n = 0;
    for (const std::string& v : {base, shifted, tweaked, grown, std::string()}) {
      write(dir / "new", v);
      (void)mota::delta::diff_files(g_base, dir / "new",
                                    stdfs::path(seeds) / ("seed-" + std::to_string(n++)), o);
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  run_one(data, size);
  const std::string fixed = with_fixed_checksums(data, size);
  run_one(reinterpret_cast<const std::uint8_t*>(fixed.data()), fixed.size());
  return 0;
}
