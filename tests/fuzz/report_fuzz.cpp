// Differential libFuzzer harness for parse_report (manager/fleet/report_parser.hpp): every input
// is parsed by it and by the tree-based reference it replaced (tests/support/report_reference.hpp,
// nlohmann's DOM). They must agree on accept/refuse, status and message, and on every field
// taken apart; an accepted body must be a verbatim piece of the input with the same JSON value.
// The allowed differences: the parser refuses nesting deeper than 64 levels, and bytes after a
// NUL that follows the value. Any mismatch
// aborts (a finding), as does any crash or sanitizer report. Built with -DMOTA_FUZZ=ON and clang;
// run with `FUZZ_TARGET=report scripts/fuzz`.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "manager/fleet/report_parser.hpp"
#include "tests/support/report_reference.hpp"

namespace {

[[noreturn]] void mismatch(const std::string& what, const std::string& input) {
  std::fprintf(stderr, "report parser differs from the reference: %s\ninput: %s\n", what.c_str(),
               input.c_str());
  std::abort();
}

bool same_items(const mota::manager::ReportItem& g, const mota::manager::ReportItem& w) {
  if (g.seq != w.seq || g.event != w.event || g.created_at != w.created_at || g.model != w.model ||
      g.from != w.from || g.to != w.to || g.state != w.state || g.step != w.step ||
      g.error != w.error || g.channel != w.channel || g.slot != w.slot ||
      g.agent_version != w.agent_version || g.arch != w.arch ||
      g.models.size() != w.models.size()) {
    return false;
  }
  for (std::size_t i = 0; i < g.models.size(); ++i) {
    const auto &a = g.models[i], &b = w.models[i];
    if (a.model != b.model || a.version != b.version || a.slot != b.slot ||
        a.channel != b.channel || a.committed != b.committed) {
      return false;
    }
  }
  if (g.blocked.has_value() != w.blocked.has_value()) return false;
  if (g.blocked) {
    if (g.blocked->size() != w.blocked->size()) return false;
    for (std::size_t i = 0; i < g.blocked->size(); ++i) {
      const auto &a = (*g.blocked)[i], &b = (*w.blocked)[i];
      if (a.model != b.model || a.version != b.version || a.reason != b.reason ||
          a.since != b.since) {
        return false;
      }
    }
  }
  if (g.field.size() != w.field.size()) return false;
  for (std::size_t i = 0; i < g.field.size(); ++i) {
    const auto &a = g.field[i], &b = w.field[i];
    if (a.model != b.model || a.version != b.version || a.load != b.load ||
        a.inferences != b.inferences || a.errors != b.errors || a.latency != b.latency ||
        a.bad != b.bad) {
      return false;
    }
  }
  return nlohmann::json::parse(g.body) == nlohmann::json::parse(w.body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::size_t max_items = size % 7 == 0 ? 2 : 50;  // also exercise the item limit
  auto got = mota::manager::parse_report(input, "dev-1", max_items);
  if (!got && got.error().message().find("nested deeper") != std::string::npos) return 0;
  auto want = mota::test::reference_parse_report(input, "dev-1", max_items);
  // nlohmann stops reading at a NUL byte ("{...}\0junk" is valid to it); the parser refuses
  // anything after the value but whitespace, as RFC 8259 does.
  if (!got && got.error().message() == "report: body is not a JSON object" &&
      input.find('\0') != std::string::npos) {
    return 0;
  }
  if (got.has_value() != want.has_value()) {
    mismatch(got ? "accepted, reference refused: " + want.error().message()
                 : "refused (" + got.error().message() + "), reference accepted",
             input);
  }
  if (!want) {
    if (got.error().message() != want.error().message() ||
        got.error().http_status() != want.error().http_status()) {
      mismatch("refusal '" + got.error().message() + "' vs '" + want.error().message() + "'",
               input);
    }
    return 0;
  }
  if (got->items.size() != want->items.size()) mismatch("item count", input);
  for (std::size_t i = 0; i < got->items.size(); ++i) {
    if (!same_items(got->items[i], want->items[i])) mismatch("item " + std::to_string(i), input);
    if (input.find(got->items[i].body) == std::string::npos) mismatch("body not verbatim", input);
  }
  return 0;
}
