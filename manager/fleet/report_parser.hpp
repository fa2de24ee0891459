#pragma once
// The body of a device report (protocol/report.hpp's wire format), checked and taken apart in one
// pass without building a JSON tree:
//   {"device": "<id>", "batch": [{"seq": N, "kind": "event"|"heartbeat", "created_at": "...",
//                                 "body": {...}}, ...]}
// Why not nlohmann's parser: on the ingest path its DOM (a std::map per object), the re-serialised
// item bodies and then its SAX lexer (a push_back per character) took a third of `mota serve`'s
// CPU at 100 items per batch (bench/README.md, "Fleet", round 3). This scanner validates as
// nlohmann does (RFC 8259: syntax, UTF-8, escapes and surrogate pairs, numbers that fit a double;
// tests/manager/report_parser_test.cpp checks it against nlohmann on valid, odd and random input)
// and copies out only what the fleet tables need.
//
// Rules, each refusal an Error whose http_status() is the status to answer, checked in this
// order (the same order and wording as the tree-based parser this replaced):
//   400  JSON nested deeper than 64 levels (agents send 6; nlohmann has no limit); not a JSON
//        object (anything but whitespace after it too, a NUL byte included, where nlohmann
//        stops reading); "device" missing or not a string
//   403  "device" is not `route_device` (a forged id)
//   400  "batch" missing or not an array
//   413  more than `max_items` items
//   400  per item, in order: not an object; "seq" not a positive 64-bit integer or not above the
//        previous item's; "kind" neither "event" nor "heartbeat"; "body" not an object
//   413  per item, limits (so that one report cannot become a flood of rows or a stall of the
//        single writer: a 3.5 MB heartbeat once became 180,000 rows): a name-like field (model,
//        versions, state, step, slot, channel, agent_version, arch, the inventory's and block
//        list's fields) over kMaxReportField bytes; an error or reason over kMaxReportError; a
//        heartbeat listing more than kMaxInventory models or blocked versions; more than
//        kMaxReportInventory such entries in the whole report; more than kMaxLabels labels
//   400  per item: a name-like field (below) holding a control character; a label that breaks
//        common/labels.hpp's rules (or one under "mota/" that is not a string); a field health
//        entry whose counts are not integers in 0..2^53 or whose latency is not a valid sparse
//        histogram (common/latency_histogram.hpp)
//   (413 also: a heartbeat with more than kMaxInventory field health entries; they count
//        towards kMaxReportInventory)
// (These are checked after the item's other rules, on the fields its kind uses.)
// Members other than these are ignored; a member given twice counts as its last value (as
// nlohmann's DOM does). Each item's body is kept as the exact text the device sent, and the fields
// the fleet tables use are copied out of it (non-string values count as absent).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/labels.hpp"
#include "common/result.hpp"

namespace mota::manager {

// Per-report limits (above). An agent's names are far shorter, its errors a few hundred bytes, and
// a device runs a handful of models.
inline constexpr std::size_t kMaxReportField = 256;
inline constexpr std::size_t kMaxReportError = 8192;
inline constexpr std::size_t kMaxInventory = 256;
inline constexpr std::size_t kMaxReportInventory = 4096;

// One model of a heartbeat's inventory ("models": [{model, version, slot, channel, committed}]);
// entries that are not objects or have no "model" string are left out.
struct ReportModel {
  std::string model, version, slot, channel;
  bool committed = false;
};

// One entry of a heartbeat's block list ("blocked": [{model, version, reason, since}]); entries
// that are not objects or have no "model" string are left out.
struct ReportBlocked {
  std::string model, version, reason, since;
};

// One entry of a heartbeat's field health ("field": [{model, version, load, inferences, errors,
// latency}], agent/report.hpp): the runtime's running totals of one load. Entries that are not
// objects or have no "model" string are left out; a malformed count or histogram is kept with
// `bad` saying why (a 400).
// ReportField::bad for a "latency" that is not a list of [bucket, count] pairs of counts (or
// lists more than kLatencyBuckets).
inline constexpr const char* kBadLatency = "latency is not a list of [bucket, count] pairs";

struct ReportField {
  std::string model, version, load;
  std::uint64_t inferences = 0, errors = 0;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> latency;  // sparse, as sent
  std::string bad;
};

struct ReportItem {
  std::int64_t seq = 0;
  bool event = false;  // else a heartbeat
  std::string created_at;
  std::string body;  // the item's body object, as sent
  // Copied out of the body: model for both kinds; from..channel and slot for events only.
  std::string model, from, to, state, step, error, channel;
  // Events: the slot the model is served from after the event (nullopt = not reported, as by
  // agents older than the "slot" field; "" = none).
  std::optional<std::string> slot;
  // Heartbeats: device facts (nullopt = not reported) and the inventory.
  std::optional<std::string> agent_version, arch;
  std::vector<ReportModel> models;
  // Heartbeats: the block list; nullopt when "blocked" is absent or not an array (agents before
  // the list), which leaves the one on record alone.
  std::optional<std::vector<ReportBlocked>> blocked;
  // Heartbeats: the device's labels (common/labels.hpp; a non-string value is kept as "", which
  // no label may be); nullopt when "labels" is absent or not an object (agents before labels),
  // which leaves the ones on record alone.
  std::optional<Labels> labels;
  // Heartbeats: field health (empty when absent or not an array).
  std::vector<ReportField> field;
};

struct Report {
  std::string device;
  std::vector<ReportItem> items;
};

// The 413 limits of one item (above): the reason (to follow "report: batch[i]"), or nullopt.
// `inventory` carries the report's count of inventory and block list entries from item to item.
std::optional<std::string> report_item_over_limits(const ReportItem& item, std::size_t& inventory);
// The 400 of an item whose name-like field (the fields of kMaxReportField) holds a control
// character (C0 or DEL), or with an invalid label: the reason, or nullopt. Errors and reasons may
// hold line breaks (they are escaped wherever shown).
std::optional<std::string> report_item_bad_text(const ReportItem& item);

[[nodiscard]] Result<Report> parse_report(std::string_view body, std::string_view route_device,
                                          std::size_t max_items);

}  // namespace mota::manager
