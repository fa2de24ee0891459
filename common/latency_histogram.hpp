#pragma once
// Latency histograms of inferences in the field: mota-runtime fills one per loaded model version,
// the agent reports it in heartbeats as the runtime's running totals, and the server adds the
// differences per (device, model, version) and compares versions with them (docs/fleet.md,
// "Field health").
//
// Fixed log-spaced buckets (as Prometheus' native histograms and HdrHistogram do, at a coarser
// resolution): every party uses the same boundaries, so histograms from any number of devices add
// up bucket by bucket and a quantile of the sum is as exact as one of a single device.
//   bucket i < kLatencyBuckets - 1 holds latencies in (upper(i-1), upper(i)], upper(-1) = 0,
//   upper(i) = 0.01 ms * 2^(i/4): 19% wide, 0.01 ms .. ~84 s;
//   the last bucket holds everything slower.
// A quantile is exact to within its bucket's width (it is interpolated inside the bucket).
//
// Wire form: sparse [[index, count], ...] with increasing indexes and non-zero counts.
// Thread-safety: values only.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace mota {

inline constexpr std::size_t kLatencyBuckets = 94;

// Upper bound of bucket i in milliseconds (infinity for the last one).
double latency_bucket_upper_ms(std::size_t i);
// The bucket a latency (ms, >= 0; NaN counts as the slowest) falls into.
std::size_t latency_bucket(double ms);

struct LatencyHistogram {
  std::array<std::uint64_t, kLatencyBuckets> counts{};

  std::uint64_t total() const;
  // The q-quantile (0 < q <= 1) in ms, interpolated inside its bucket; 0 when empty. A quantile
  // in the last (unbounded) bucket is that bucket's lower bound.
  double quantile(double q) const;
  void add(const LatencyHistogram& other);  // saturating
  // this - earlier, bucket by bucket; nullopt when any bucket went down (the counts were reset:
  // another load or another runtime process).
  std::optional<LatencyHistogram> minus(const LatencyHistogram& earlier) const;

  std::vector<std::pair<std::uint32_t, std::uint64_t>> sparse() const;
  // Errc::invalid_argument for an index out of range or not above the previous one, or a total
  // over 2^53 (the most a JSON number carries exactly).
  [[nodiscard]] static Result<LatencyHistogram> from_sparse(
      const std::vector<std::pair<std::uint64_t, std::uint64_t>>& pairs);
};

}  // namespace mota
