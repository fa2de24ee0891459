#include "manager/fleet/field_health.hpp"

#include <algorithm>
#include <limits>

#include "manifest/canonical_json.hpp"

namespace mota::manager {

namespace {

std::uint64_t add_sat(std::uint64_t a, std::uint64_t b) {
  return b > std::numeric_limits<std::uint64_t>::max() - a
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

// inferences, errors, latency at columns i, i+1, i+2.
FieldTotals read_totals(const storage::Statement& st, int i) {
  FieldTotals t;
  t.devices = 1;
  t.inferences = std::uint64_t(std::max<std::int64_t>(0, st.column_int64(i)));
  t.errors = std::uint64_t(std::max<std::int64_t>(0, st.column_int64(i + 1)));
  t.latency = histogram_from_text(st.column_text(i + 2));
  return t;
}

}  // namespace

double FieldTotals::error_rate() const {
  const std::uint64_t n = runs();
  return n == 0 ? 0.0 : double(errors) / double(n);
}

void FieldTotals::add(const FieldTotals& other) {
  devices += other.devices;
  inferences = add_sat(inferences, other.inferences);
  errors = add_sat(errors, other.errors);
  latency.add(other.latency);
}

Json to_json(const FieldTotals& t) {
  return Json{{"devices", t.devices},
              {"inferences", t.inferences},
              {"errors", t.errors},
              {"error_rate", t.error_rate()},
              {"p50_ms", t.latency.quantile(0.5)},
              {"p99_ms", t.latency.quantile(0.99)}};
}

std::string histogram_text(const LatencyHistogram& h) {
  std::string out = "[";
  for (const auto& [i, n] : h.sparse()) {
    if (out.size() > 1) out += ',';
    out += '[' + std::to_string(i) + ',' + std::to_string(n) + ']';
  }
  return out + ']';
}

LatencyHistogram histogram_from_text(std::string_view text) {
  const Json j = Json::parse(text, nullptr, false);
  if (!j.is_array()) return {};
  std::vector<std::pair<std::uint64_t, std::uint64_t>> pairs;
  for (const auto& p : j) {
    if (!p.is_array() || p.size() != 2 || !p[0].is_number_unsigned() ||
        !p[1].is_number_unsigned()) {
      return {};
    }
    pairs.emplace_back(p[0].get<std::uint64_t>(), p[1].get<std::uint64_t>());
  }
  auto h = LatencyHistogram::from_sparse(pairs);
  return h ? *h : LatencyHistogram{};
}

Result<FieldTotals> field_totals(storage::Database& db, const std::string& model,
                                 const std::string& version) {
  auto st = MOTA_TRY(db.prepare(
      "SELECT f.inferences, f.errors, f.latency FROM field_health f JOIN devices d ON d.id = "
      "f.device AND d.admission = 'admitted' WHERE f.model = ? AND f.version = ?"));
  MOTA_TRY(st.bind_all(model, version));
  FieldTotals sum;
  while (MOTA_TRY(st.step()) == storage::Step::row) sum.add(read_totals(st, 0));
  return sum;
}

Result<std::vector<VersionField>> field_by_version(storage::Database& db,
                                                   const std::string& model) {
  auto st = MOTA_TRY(
      db.prepare("SELECT f.version, f.inferences, f.errors, f.latency FROM field_health f JOIN "
                 "devices d ON d.id = f.device AND d.admission = 'admitted' WHERE f.model = ?"));
  MOTA_TRY(st.bind_all(model));
  std::vector<VersionField> out;
  while (MOTA_TRY(st.step()) == storage::Step::row) {
    std::string version = st.column_text(0);
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const VersionField& v) { return v.version == version; });
    if (it == out.end()) it = out.insert(out.end(), VersionField{std::move(version), {}});
    it->totals.add(read_totals(st, 1));
  }
  return out;
}

Result<FieldComparison> field_compare(storage::Database& db, const std::string& model,
                                      const std::string& version, const std::string& baseline) {
  auto st = MOTA_TRY(db.prepare(
      "SELECT a.inferences, a.errors, a.latency, b.inferences, b.errors, b.latency FROM "
      "field_health a JOIN field_health b ON b.device = a.device AND b.model = a.model AND "
      "b.version = ? JOIN devices d ON d.id = a.device AND d.admission = 'admitted' WHERE "
      "a.model = ? AND a.version = ?"));
  MOTA_TRY(st.bind_all(baseline, model, version));
  FieldComparison c;
  while (MOTA_TRY(st.step()) == storage::Step::row) {
    c.version.add(read_totals(st, 0));
    c.baseline.add(read_totals(st, 3));
  }
  return c;
}

Result<std::vector<DeviceField>> device_field(storage::Database& db, const std::string& device) {
  auto st = MOTA_TRY(db.prepare(
      "SELECT model, version, inferences, errors, latency, updated_at FROM field_health WHERE "
      "device = ? ORDER BY model, updated_at DESC"));
  MOTA_TRY(st.bind_all(device));
  std::vector<DeviceField> out;
  while (MOTA_TRY(st.step()) == storage::Step::row) {
    DeviceField d;
    d.model = st.column_text(0);
    d.version = st.column_text(1);
    d.totals = read_totals(st, 2);
    d.updated_at = st.column_int64(5);
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace mota::manager
