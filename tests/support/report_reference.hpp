#pragma once
// The tree-based report parser that manager/fleet/report_parser.cpp replaced, kept as the reference
// for its tests (tests/manager/report_parser_test.cpp) and its differential fuzz harness
// (tests/fuzz/report_fuzz.cpp): nlohmann's DOM, the same checks, order and messages.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/latency_histogram.hpp"
#include "manager/fleet/report_parser.hpp"

namespace mota::test {

using manager::Report;
using manager::ReportItem;
using manager::ReportModel;

inline std::string ref_str_field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
inline std::optional<std::string> ref_opt_str(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

// The reference: the checks and field extraction of the DOM-based parser, verbatim in behaviour.
inline Result<Report> reference_parse_report(const std::string& body, const std::string& id,
                                             std::size_t max_items) {
  auto bad = [](int status, Errc code, std::string m) { return fail(Error(code, m, status)); };
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return bad(400, Errc::parse, "report: body is not a JSON object");
  }
  if (!doc.contains("device") || !doc["device"].is_string()) {
    return bad(400, Errc::parse, "report: \"device\" is missing or not a string");
  }
  if (doc["device"].get<std::string>() != id) {
    return bad(403, Errc::verification,
               "report: body names device '" + doc["device"].get<std::string>() +
                   "', not the device '" + id + "' of the route");
  }
  if (!doc.contains("batch") || !doc["batch"].is_array()) {
    return bad(400, Errc::parse, "report: \"batch\" is missing or not an array");
  }
  auto& batch = doc["batch"];
  if (batch.size() > max_items) {
    return bad(413, Errc::too_large,
               "report: " + std::to_string(batch.size()) + " items is over the limit of " +
                   std::to_string(max_items));
  }
  Report out;
  out.device = id;
  std::int64_t prev = 0;
  std::size_t inventory = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto& it = batch[i];
    const std::string where = "report: batch[" + std::to_string(i) + "]";
    if (!it.is_object()) return bad(400, Errc::parse, where + " is not an object");
    auto seq = it.find("seq");
    if (seq == it.end() || !seq->is_number_integer() || seq->get<std::int64_t>() <= 0) {
      return bad(400, Errc::parse, where + ".seq is not a positive integer");
    }
    ReportItem item;
    item.seq = seq->get<std::int64_t>();
    if (item.seq <= prev) {
      return bad(400, Errc::parse,
                 where + ".seq " + std::to_string(item.seq) + " is not above " +
                     std::to_string(prev) + " (items must be in increasing seq order)");
    }
    prev = item.seq;
    const std::string kind = ref_str_field(it, "kind");
    if (kind != "event" && kind != "heartbeat") {
      return bad(400, Errc::parse, where + ".kind must be \"event\" or \"heartbeat\"");
    }
    item.event = kind == "event";
    item.created_at = ref_str_field(it, "created_at");
    auto b = it.find("body");
    if (b == it.end() || !b->is_object()) {
      return bad(400, Errc::parse, where + ".body is not an object");
    }
    item.body = b->dump();
    item.model = ref_str_field(*b, "model");
    if (item.event) {
      item.from = ref_str_field(*b, "from");
      item.to = ref_str_field(*b, "to");
      item.state = ref_str_field(*b, "state");
      item.step = ref_str_field(*b, "step");
      item.error = ref_str_field(*b, "error");
      item.channel = ref_str_field(*b, "channel");
      item.slot = ref_opt_str(*b, "slot");
    } else {
      item.agent_version = ref_opt_str(*b, "agent_version");
      item.arch = ref_opt_str(*b, "arch");
      auto models = b->find("models");
      if (models != b->end() && models->is_array()) {
        for (const auto& m : *models) {
          if (!m.is_object()) continue;
          ReportModel r;
          r.model = ref_str_field(m, "model");
          if (r.model.empty()) continue;
          r.version = ref_str_field(m, "version");
          r.slot = ref_str_field(m, "slot");
          r.channel = ref_str_field(m, "channel");
          auto c = m.find("committed");
          r.committed = c != m.end() && c->is_boolean() && c->get<bool>();
          item.models.push_back(std::move(r));
        }
      }
      auto blocked = b->find("blocked");
      if (blocked != b->end() && blocked->is_array()) {
        item.blocked.emplace();
        for (const auto& e : *blocked) {
          if (!e.is_object()) continue;
          manager::ReportBlocked r;
          r.model = ref_str_field(e, "model");
          if (r.model.empty()) continue;
          r.version = ref_str_field(e, "version");
          r.reason = ref_str_field(e, "reason");
          r.since = ref_str_field(e, "since");
          item.blocked->push_back(std::move(r));
        }
      }
      auto field = b->find("field");
      if (field != b->end() && field->is_array()) {
        auto count = [](const nlohmann::json& v, std::uint64_t& out) {
          out = 0;
          if (!v.is_number_unsigned() || v.get<std::uint64_t>() > (std::uint64_t{1} << 53)) {
            return false;
          }
          out = v.get<std::uint64_t>();
          return true;
        };
        for (const auto& e : *field) {
          if (!e.is_object()) continue;
          manager::ReportField f;
          f.model = ref_str_field(e, "model");
          if (f.model.empty()) continue;
          f.version = ref_str_field(e, "version");
          f.load = ref_str_field(e, "load");
          bool bad_inferences = false, bad_errors = false, bad_latency = false;
          if (auto n = e.find("inferences"); n != e.end())
            bad_inferences = !count(*n, f.inferences);
          if (auto n = e.find("errors"); n != e.end()) bad_errors = !count(*n, f.errors);
          if (auto l = e.find("latency"); l != e.end()) {
            bad_latency = !l->is_array() || l->size() > kLatencyBuckets;
            if (l->is_array()) {
              for (const auto& p : *l) {
                std::uint64_t v[2] = {0, 0};
                if (!p.is_array() || p.size() != 2 || !count(p[0], v[0]) || !count(p[1], v[1])) {
                  bad_latency = true;
                }
                if (f.latency.size() < kLatencyBuckets) f.latency.emplace_back(v[0], v[1]);
              }
            }
          }
          if (bad_inferences) {
            f.bad = "inferences is not an integer in 0..2^53";
          } else if (bad_errors) {
            f.bad = "errors is not an integer in 0..2^53";
          } else if (bad_latency) {
            f.bad = manager::kBadLatency;
          }
          item.field.push_back(std::move(f));
        }
      }
      auto labels = b->find("labels");
      if (labels != b->end() && labels->is_object()) {
        item.labels.emplace();
        for (const auto& [k, v] : labels->items()) {
          (*item.labels)[k] = v.is_string() ? v.get<std::string>() : std::string();
        }
      }
    }
    // The limits are shared, not re-implemented: this reference checks the scanning.
    if (auto why = manager::report_item_bad_text(item)) {
      return bad(400, Errc::parse, where + *why);
    }
    if (auto why = manager::report_item_over_limits(item, inventory)) {
      return bad(413, Errc::too_large, where + *why);
    }
    out.items.push_back(std::move(item));
  }
  return out;
}

}  // namespace mota::test
