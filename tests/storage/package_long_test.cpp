// Slow: packs and unpacks a model file over 8 GiB (sparse on disk). Over 8 GiB a tar size no
// longer fits the ustar header and needs a pax "size" record; over 4 GiB any 32-bit size or
// offset would wrap. Skipped unless MOTA_LONG_TESTS=1 (ctest label "long": run with TEST_ARGS="-L
// long" scripts/test; the test CMake labels *_long_test binaries).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "manifest/crypto.hpp"
#include "storage/package.hpp"
#include "tests/support/test_support.hpp"

namespace mota::storage {
namespace {

namespace stdfs = std::filesystem;

constexpr std::uint64_t kBigSize = (std::uint64_t(8) << 30) + (1 << 20) + 123;

bool long_tests_enabled() {
  const char* v = std::getenv("MOTA_LONG_TESTS");
  return v != nullptr && std::string(v) == "1";
}

using test::peak_rss_kib;
using test::reset_peak_rss;

void write_at(int fd, std::uint64_t offset, std::string_view data) {
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(data.size()));
}

// Runs in a fresh process (see BigSparseFile) so its peak RSS covers only pack + unpack.
TEST(PackageLongChild, PackUnpack) {
  const char* dir = std::getenv("MOTA_PACKAGE_LONG_DIR");
  if (dir == nullptr) GTEST_SKIP() << "helper for PackageLong.BigSparseFile";
  stdfs::path d = dir;
  long before = peak_rss_kib();
  auto p = pack(d / "src", d / "big.mota");
  ASSERT_TRUE(p) << p.error().message();
  long pack_peak = peak_rss_kib();
  reset_peak_rss();
  long before_unpack = peak_rss_kib();
  auto u = unpack_file(d / "big.mota", d / "out");
  ASSERT_TRUE(u) << u.error().message();
  EXPECT_EQ(u->tree_digest, p->tree_digest);
  EXPECT_EQ(u->bytes_written, kBigSize + 5);
  std::printf("MEM before=%ld pack=%ld unpack=%ld package=%llu\n", before, pack_peak,
              peak_rss_kib() - before_unpack + before,
              static_cast<unsigned long long>(p->package_size));
}

TEST(PackageLong, BigSparseFile) {
  if (!long_tests_enabled()) GTEST_SKIP() << "set MOTA_LONG_TESTS=1 to run";
  test::TempDir t;
  test::write_file(t / "src/model.json",
                   R"({"name": "big", "version": "1.0.0", "framework": "gguf",
                       "entry": "model.gguf"})");
  test::write_file(t / "src/small.bin", "small");
  {
    int fd = ::open((t / "src/model.gguf").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(kBigSize)), 0);
    // Data at the start, across the 4 GiB boundary and at the very end, so that a size or
    // offset that wraps at 32 bits changes the hash.
    write_at(fd, 0, "GGUF-head");
    write_at(fd, (std::uint64_t(4) << 30) - 3, "across-4GiB");
    write_at(fd, kBigSize - 4, "tail");
    ::close(fd);
  }
  auto r = test::run({"/proc/self/exe", "--gtest_filter=PackageLongChild.PackUnpack"},
                     {{"MOTA_PACKAGE_LONG_DIR", t.path().string()}}, std::chrono::seconds(1800));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  long before = 0, pack_peak = 0, unpack_peak = 0;
  unsigned long long package = 0;
  auto pos = r.out.find("MEM ");
  ASSERT_NE(pos, std::string::npos) << r.out;
  ASSERT_EQ(std::sscanf(r.out.c_str() + pos, "MEM before=%ld pack=%ld unpack=%ld package=%llu",
                        &before, &pack_peak, &unpack_peak, &package),
            4);
  std::printf("peak RSS KiB: start %ld, pack %ld, unpack %ld; package %llu bytes\n", before,
              pack_peak, unpack_peak, package);
  // Both phases stay far below the file size; 64 MiB over the process's starting size.
  EXPECT_LT(pack_peak - before, 64 * 1024);
  EXPECT_LT(unpack_peak - before, 64 * 1024);
  EXPECT_EQ(stdfs::file_size(t / "out/model.gguf"), kBigSize);

  // The unpacked copy has the same content (compared through hashes, in constant memory).
  auto a = crypto::file_sha256_hex((t / "src/model.gguf").string());
  auto b = crypto::file_sha256_hex((t / "out/model.gguf").string());
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, *b);
  // ... and is sparse: unpack turns zero runs into holes.
  struct stat st {};
  ASSERT_EQ(::stat((t / "out/model.gguf").c_str(), &st), 0);
  EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512, std::uint64_t(64) << 20);
}

}  // namespace
}  // namespace mota::storage
