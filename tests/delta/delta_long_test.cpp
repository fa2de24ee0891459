// Files past 4 GiB (sparse, so cheap on disk): 64-bit offsets end to end, and memory bounded by
// a few chunks whatever the size. Labelled "long" (see tests/CMakeLists.txt).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "delta/delta.hpp"
#include "manifest/crypto.hpp"
#include "tests/support/test_support.hpp"

namespace mota::delta {
namespace {

namespace stdfs = std::filesystem;

void sparse(const stdfs::path& p, std::uint64_t size,
            const std::vector<std::pair<std::uint64_t, std::string>>& writes) {
  int fd = ::open(p.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  for (const auto& [off, data] : writes) {
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)),
              static_cast<ssize_t>(data.size()));
  }
  ::close(fd);
}

TEST(DeltaLong, SparsePairPastFourGiB) {
  test::TempDir t;
  const std::uint64_t gib = std::uint64_t(1) << 30;
  std::string block(1 << 20, '\0');
  for (std::size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>(i * 131 + i / 7);
  std::string changed = block;
  for (std::size_t i = 0; i < changed.size(); i += 64) changed[i] ^= 0x11;
  // Old: 4.5 GiB with data below 2 GiB, across 4 GiB and at the end.
  sparse(t / "old", 4 * gib + gib / 2,
         {{1000, block}, {4 * gib - 4096, block}, {4 * gib + gib / 2 - block.size(), block}});
  // New: grown by 40 MiB, the block across 4 GiB changed, a new block at 4.5 GiB.
  sparse(t / "new", 4 * gib + gib / 2 + (40 << 20),
         {{1000, block},
          {4 * gib - 4096, changed},
          {4 * gib + gib / 2 - block.size(), block},
          {4 * gib + gib / 2 + (8 << 20), block}});

  DiffOptions o;
  o.level = 1;
  o.chunk_size = 4 << 20;  // the default
  o.threads = 2;
  auto info = diff_files(t / "old", t / "new", t / "d", o);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_LT(info->delta_size, 8u << 20);
  EXPECT_GT(info->methods[int(Method::copy)].raw_bytes, 4 * gib);

  test::reset_peak_rss();
  const long before = test::peak_rss_kib();
  ReadFn in = *file_reader(t / "d");
  crypto::Hasher h;
  ApplyOptions ao;
  ao.threads = 2;
  auto r = apply(
      t / "old", in,
      [&](std::span<const std::byte> b) -> Status {
        h.update(b);
        return {};
      },
      ao);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->new_size, 4 * gib + gib / 2 + (40 << 20));
  EXPECT_EQ(h.hex_digest(), info->new_sha256);
  // 4 MiB chunks, two workers: a few chunks (the 64 MiB apply target), not the file.
  EXPECT_LT(test::peak_rss_kib() - before, 64 * 1024);
}

}  // namespace
}  // namespace mota::delta
