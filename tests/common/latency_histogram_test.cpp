#include "common/latency_histogram.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace mota {
namespace {

TEST(LatencyHistogram, BucketsAreLogSpacedAndEveryLatencyFallsInItsOwn) {
  EXPECT_DOUBLE_EQ(latency_bucket_upper_ms(0), 0.01);
  EXPECT_DOUBLE_EQ(latency_bucket_upper_ms(4), 0.02);
  EXPECT_TRUE(std::isinf(latency_bucket_upper_ms(kLatencyBuckets - 1)));
  EXPECT_EQ(latency_bucket(0), 0u);
  EXPECT_EQ(latency_bucket(-1), 0u);
  EXPECT_EQ(latency_bucket(0.01), 0u);
  EXPECT_EQ(latency_bucket(std::nan("")), kLatencyBuckets - 1);
  EXPECT_EQ(latency_bucket(1e12), kLatencyBuckets - 1);
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> exponent(-3, 6);
  for (int i = 0; i < 100000; ++i) {
    const double ms = std::pow(10.0, exponent(rng));
    const std::size_t b = latency_bucket(ms);
    ASSERT_LE(ms, latency_bucket_upper_ms(b)) << ms;
    if (b > 0) {
      ASSERT_GT(ms, latency_bucket_upper_ms(b - 1)) << ms;
    }
  }
  // Exactly on a boundary: the bucket it bounds.
  for (std::size_t b = 0; b + 1 < kLatencyBuckets; ++b) {
    EXPECT_EQ(latency_bucket(latency_bucket_upper_ms(b)), b);
  }
}

TEST(LatencyHistogram, QuantilesAreWithinABucketOfTheExactOnes) {
  std::mt19937_64 rng(11);
  std::lognormal_distribution<double> dist(1.0, 0.6);  // ~2.7 ms median, a long tail
  LatencyHistogram h;
  std::vector<double> all;
  for (int i = 0; i < 50000; ++i) {
    const double ms = dist(rng);
    all.push_back(ms);
    ++h.counts[latency_bucket(ms)];
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(h.total(), all.size());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const double exact = all[std::size_t(std::ceil(q * double(all.size()))) - 1];
    const double got = h.quantile(q);
    EXPECT_LT(std::abs(got / exact - 1.0), 0.19) << "q " << q << ": " << got << " vs " << exact;
  }
  EXPECT_EQ(LatencyHistogram{}.quantile(0.99), 0);
}

TEST(LatencyHistogram, AddsSubtractsAndRoundTripsItsSparseForm) {
  LatencyHistogram a, b;
  a.counts[3] = 10;
  a.counts[40] = 5;
  b.counts[40] = 2;
  LatencyHistogram sum = a;
  sum.add(b);
  EXPECT_EQ(sum.counts[40], 7u);
  auto d = sum.minus(b);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->counts, a.counts);
  EXPECT_FALSE(b.minus(a)) << "a bucket went down: counts were reset";
  const auto sparse = sum.sparse();
  ASSERT_EQ(sparse.size(), 2u);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> pairs(sparse.begin(), sparse.end());
  auto back = LatencyHistogram::from_sparse(pairs);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->counts, sum.counts);
}

TEST(LatencyHistogram, MalformedSparseFormsAreRefusedWithTheReason) {
  using Pairs = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  struct Case {
    Pairs pairs;
    const char* words;
  };
  for (const Case& c :
       {Case{{{kLatencyBuckets, 1}}, "out of range"},
        Case{{{5, 1}, {5, 1}}, "does not follow bucket 5"},
        Case{{{6, 1}, {5, 1}}, "does not follow bucket 6"}, Case{{{1, (1ull << 53) + 1}}, "2^53"},
        Case{{{1, 1ull << 53}, {2, 1}}, "2^53"}}) {
    auto h = LatencyHistogram::from_sparse(c.pairs);
    ASSERT_FALSE(h);
    EXPECT_EQ(h.error().code(), Errc::invalid_argument);
    EXPECT_NE(h.error().message().find(c.words), std::string::npos) << h.error().message();
  }
  EXPECT_TRUE(LatencyHistogram::from_sparse({}));
}

}  // namespace
}  // namespace mota
