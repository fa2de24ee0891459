// libFuzzer harness for install windows (common/window.hpp InstallWindow::parse): every device
// parses the windows of its agent.toml and of a rollout's signed channel file. Any crash,
// exception, sanitizer report, leak or hang is a bug; errors are fine. What the parser accepts
// must keep its promises: days set, start and length in range, and a canonical text that parses
// back to the same window; asking an accepted window about any time must not crash. Built with
// -DMOTA_FUZZ=ON and clang; run with `FUZZ_TARGET=window scripts/fuzz`. With MOTA_FUZZ_SEEDS=<dir>
// set, initialisation writes example windows there.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/window.hpp"

namespace {

using namespace mota;

[[noreturn]] void finding(const std::string& what, std::string_view input) {
  std::fprintf(stderr, "window: %s\ninput: %.*s\n", what.c_str(), int(input.size()), input.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) {
    const std::filesystem::path dir = seeds;
    std::ofstream(dir / "weekdays") << "Mon-Fri 01:00-05:00";
    std::ofstream(dir / "wrap") << "Fri-Mon 23:30-00:30";
    std::ofstream(dir / "list") << "sat,SUN 00:00-24:00";
    std::ofstream(dir / "daily") << "daily 22:00-04:00";
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto w = InstallWindow::parse(input);
  if (!w) {
    if (w.error().message().empty()) finding("an error without a message", input);
    return 0;
  }
  if (w->days == 0 || w->days > 0x7f) finding("days out of range", input);
  if (w->start < 0 || w->start >= 1440) finding("start out of range", input);
  if (w->length < 1 || w->length > 1440) finding("length out of range", input);
  const std::string text = w->text();
  auto again = InstallWindow::parse(text);
  if (!again) finding("canonical text does not parse: " + text, input);
  if (!(*again == *w)) finding("canonical text is another window: " + text, input);
  if (again->text() != text) finding("canonical text is not stable: " + text, input);
  auto set = WindowSet::parse({std::string(input)});
  if (!set) finding("a window alone is refused as a set", input);
  std::tm t{};
  for (int day = 0; day < 7; ++day) {
    t.tm_wday = day;
    t.tm_hour = int(size % 24);
    t.tm_min = int(size % 60);
    (void)set->allows(t);
  }
  (void)set->next_open(std::time_t(1796472000));
  return 0;
}
