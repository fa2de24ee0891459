#pragma once
// Field health (docs/fleet.md, "Field health"): what mota-runtime counted while devices served a
// model version — inferences, failed inferences and their latency histogram — summed from
// heartbeats into the field_health table (migration 0008, written by the ingest writer), and read
// here for `mota fleet`, `mota device show` and the rollouts' field gates
// (manager/fleet/rollout.hpp).
//
// Only admitted devices count (manager/fleet/fleet_db.hpp, Admission): a device nobody vouched for
// could otherwise halt a rollout with made-up latencies, or hide a regression under good ones.
// device_field() shows any device's own.
// Thread-safety: functions of a Database handle, used by one thread at a time.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/latency_histogram.hpp"
#include "common/result.hpp"
#include "manifest/canonical_json.hpp"
#include "storage/sqlite.hpp"

namespace mota::manager {

struct FieldTotals {
  std::int64_t devices = 0;  // devices that reported this version
  std::uint64_t inferences = 0, errors = 0;
  LatencyHistogram latency;
  std::uint64_t runs() const { return inferences + errors; }
  // errors / (inferences + errors); 0 without runs.
  double error_rate() const;
  void add(const FieldTotals& other);
};

// {"devices", "inferences", "errors", "error_rate" (0..1), "p50_ms", "p99_ms"}: how every view
// (`mota fleet`, `device show`, `rollout status`) shows field health in JSON.
Json to_json(const FieldTotals& t);

// A histogram as stored (its sparse form as JSON) and back; text that is not such a form reads as
// an empty histogram (the table is written by the server alone).
std::string histogram_text(const LatencyHistogram& h);
LatencyHistogram histogram_from_text(std::string_view text);

// The sums of model/version over every device that reported it.
[[nodiscard]] Result<FieldTotals> field_totals(storage::Database& db, const std::string& model,
                                               const std::string& version);

// The sums per version of one model, versions in no particular order.
struct VersionField {
  std::string version;
  FieldTotals totals;
};
[[nodiscard]] Result<std::vector<VersionField>> field_by_version(storage::Database& db,
                                                                 const std::string& model);

// `version` against `baseline` on the same devices: the sums of each over the devices that
// reported both (a regression is judged by the same hardware and inputs, not by which devices
// happened to update first).
struct FieldComparison {
  FieldTotals version, baseline;  // devices: the same count in both
};
[[nodiscard]] Result<FieldComparison> field_compare(storage::Database& db, const std::string& model,
                                                    const std::string& version,
                                                    const std::string& baseline);

// One device's field health per model and version.
struct DeviceField {
  std::string model, version;
  FieldTotals totals;
  std::int64_t updated_at = 0;
};
[[nodiscard]] Result<std::vector<DeviceField>> device_field(storage::Database& db,
                                                            const std::string& device);

}  // namespace mota::manager
