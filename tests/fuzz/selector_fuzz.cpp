// libFuzzer harness for label selectors (common/labels.hpp Selector::parse): every device parses
// the selector of a targeted rollout from its channel file, and the server parses operators' and
// stored ones. Any crash, exception, sanitizer report, leak or hang is a bug; errors are fine.
// What the parser accepts must keep its promises: valid keys and values, the limits, and a
// canonical text that parses back to itself; matching an accepted selector against labels built
// from the input must not crash. Built with -DMOTA_FUZZ=ON and clang; run with
// `FUZZ_TARGET=selector scripts/fuzz`. With MOTA_FUZZ_SEEDS=<dir> set, initialisation writes
// example selectors there.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/labels.hpp"

namespace {

using namespace mota;

[[noreturn]] void finding(const std::string& what, std::string_view input) {
  std::fprintf(stderr, "selector: %s\ninput: %.*s\n", what.c_str(), int(input.size()),
               input.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) {
    const std::filesystem::path dir = seeds;
    std::ofstream(dir / "all") << "site=plant-3,hw in (orin-nano,rpi5),!canary,x!=1,y notin (a),z";
    std::ofstream(dir / "spaces") << " a == b , c in ( d , e ) ";
    std::ofstream(dir / "fact") << "mota/arch=aarch64,mota/accel.cuda";
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto s = Selector::parse(input);
  if (!s) {
    if (s.error().message().empty()) finding("an error without a message", input);
    return 0;
  }
  if (s->requirements().empty()) finding("accepted an empty selector", input);
  if (s->requirements().size() > kMaxRequirements) finding("too many requirements", input);
  Labels labels;
  for (const auto& r : s->requirements()) {
    if (!valid_label_key(r.key)) finding("accepted an invalid key", input);
    if (r.values.size() > kMaxSetValues) finding("too many values", input);
    for (const auto& v : r.values) {
      if (!valid_label_value(v)) finding("accepted an invalid value", input);
    }
    if (!r.values.empty()) labels[r.key] = r.values.front();
  }
  (void)s->matches(labels);
  (void)s->matches({});
  const std::string text = s->text();
  auto again = Selector::parse(text);
  if (!again) finding("its own text does not parse: " + again.error().message(), text);
  if (again->text() != text) finding("the round trip changes the selector", input);
  if (again->matches(labels) != s->matches(labels))
    finding("the round trip changes matching", input);
  return 0;
}
