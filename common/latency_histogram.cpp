#include "common/latency_histogram.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace mota {

namespace {
constexpr double kFirstUpperMs = 0.01;
constexpr double kStepsPerDoubling = 4.0;
constexpr std::uint64_t kMaxExact = std::uint64_t{1} << 53;
}  // namespace

double latency_bucket_upper_ms(std::size_t i) {
  if (i + 1 >= kLatencyBuckets) return std::numeric_limits<double>::infinity();
  return kFirstUpperMs * std::exp2(static_cast<double>(i) / kStepsPerDoubling);
}

std::size_t latency_bucket(double ms) {
  if (std::isnan(ms)) return kLatencyBuckets - 1;
  if (ms <= kFirstUpperMs) return 0;
  // The first estimate from the logarithm, corrected for rounding at the boundaries.
  double est = std::ceil(std::log2(ms / kFirstUpperMs) * kStepsPerDoubling);
  std::size_t i = est >= static_cast<double>(kLatencyBuckets - 1) ? kLatencyBuckets - 1
                                                                  : static_cast<std::size_t>(est);
  while (i > 0 && ms <= latency_bucket_upper_ms(i - 1)) --i;
  while (i + 1 < kLatencyBuckets && ms > latency_bucket_upper_ms(i)) ++i;
  return i;
}

std::uint64_t LatencyHistogram::total() const {
  std::uint64_t t = 0;
  for (auto c : counts)
    t = c > std::numeric_limits<std::uint64_t>::max() - t
            ? std::numeric_limits<std::uint64_t>::max()
            : t + c;
  return t;
}

double LatencyHistogram::quantile(double q) const {
  const std::uint64_t n = total();
  if (n == 0) return 0;
  q = std::min(std::max(q, 0.0), 1.0);
  // The rank of the quantile, 1-based: the smallest latency with at least q*n at or below it.
  const double rank = std::max(1.0, std::ceil(q * static_cast<double>(n)));
  double seen = 0;
  for (std::size_t i = 0; i < kLatencyBuckets; ++i) {
    if (counts[i] == 0) continue;
    const double c = static_cast<double>(counts[i]);
    const double lower = i == 0 ? 0.0 : latency_bucket_upper_ms(i - 1);
    if (seen + c >= rank) {
      if (i + 1 == kLatencyBuckets) return lower;
      const double upper = latency_bucket_upper_ms(i);
      return lower + (upper - lower) * ((rank - seen) / c);
    }
    seen += c;
  }
  return latency_bucket_upper_ms(kLatencyBuckets - 2);  // not reached
}

void LatencyHistogram::add(const LatencyHistogram& other) {
  for (std::size_t i = 0; i < kLatencyBuckets; ++i) {
    const auto room = std::numeric_limits<std::uint64_t>::max() - counts[i];
    counts[i] = other.counts[i] > room ? std::numeric_limits<std::uint64_t>::max()
                                       : counts[i] + other.counts[i];
  }
}

std::optional<LatencyHistogram> LatencyHistogram::minus(const LatencyHistogram& earlier) const {
  LatencyHistogram d;
  for (std::size_t i = 0; i < kLatencyBuckets; ++i) {
    if (counts[i] < earlier.counts[i]) return std::nullopt;
    d.counts[i] = counts[i] - earlier.counts[i];
  }
  return d;
}

std::vector<std::pair<std::uint32_t, std::uint64_t>> LatencyHistogram::sparse() const {
  std::vector<std::pair<std::uint32_t, std::uint64_t>> out;
  for (std::size_t i = 0; i < kLatencyBuckets; ++i) {
    if (counts[i] != 0) out.emplace_back(static_cast<std::uint32_t>(i), counts[i]);
  }
  return out;
}

Result<LatencyHistogram> LatencyHistogram::from_sparse(
    const std::vector<std::pair<std::uint64_t, std::uint64_t>>& pairs) {
  LatencyHistogram h;
  std::uint64_t sum = 0;
  bool first = true;
  std::uint64_t prev = 0;
  for (const auto& [i, c] : pairs) {
    if (i >= kLatencyBuckets) {
      return fail(Errc::invalid_argument, "latency bucket " + std::to_string(i) +
                                              " is out of range (0.." +
                                              std::to_string(kLatencyBuckets - 1) + ")");
    }
    if (!first && i <= prev) {
      return fail(Errc::invalid_argument, "latency bucket " + std::to_string(i) +
                                              " does not follow bucket " + std::to_string(prev) +
                                              " (indexes must increase)");
    }
    if (c > kMaxExact || sum > kMaxExact - c) {
      return fail(Errc::invalid_argument, "latency counts add up to more than 2^53");
    }
    sum += c;
    h.counts[i] = c;
    prev = i;
    first = false;
  }
  return h;
}

}  // namespace mota
