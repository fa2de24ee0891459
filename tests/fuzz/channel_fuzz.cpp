// libFuzzer harness for channel targets (manifest/channel.hpp Channel::parse): the file that
// tells an agent which version to install. Any crash, exception, sanitizer report, leak or hang
// is a bug; errors are fine. What the parser accepts must hold its promises (valid names and
// versions, percent in 0..100, a fallback unless percent is 100 or absent) and survive a round
// trip: parse(serialize(c)) succeeds and serializes to the same bytes. Built with -DMOTA_FUZZ=ON
// and clang; run with `FUZZ_TARGET=channel scripts/fuzz`. With MOTA_FUZZ_SEEDS=<dir> set,
// initialisation writes example channel files there.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/semver.hpp"
#include "manifest/channel.hpp"
#include "manifest/model_manifest.hpp"

namespace {

namespace stdfs = std::filesystem;
using namespace mota;

[[noreturn]] void finding(const std::string& what, std::string_view input) {
  std::fprintf(stderr, "channel: %s\ninput: %.*s\n", what.c_str(), int(input.size()), input.data());
  std::abort();
}

void write_seeds(const stdfs::path& dir) {
  std::ofstream(dir / "staged") << R"({"model": "det", "channel": "stable", "version": "1.2.0",
 "rollout": {"percent": 25, "salt": "9f86d081884c7d65", "fallback_version": "1.1.0"},
 "min_version": "1.0.0", "allow_downgrade": false, "updated": "2026-11-21T10:00:00Z"})";
  std::ofstream(dir / "full")
      << R"({"model":"a.b-c_d","channel":"beta","version":"2.0.0-rc.1+x","allow_downgrade":true,)"
         R"("rollout":{"percent":100,"salt":"0000000000000000"},"updated":"2030-01-01T00:00:00Z",)"
         R"("future":{"x":[1,2.5,null]}})";
  std::ofstream(dir / "targeted")
      << R"({"model":"m","channel":"c","version":"1.0.0","targeted":{"select":"site=a,hw in )"
         R"((x,y),!canary","version":"1.1.0","percent":25,"salt":"0123456789abcdef"},)"
         R"("updated":"2026-02-28T23:59:59Z"})";
  std::ofstream(dir / "first") << R"({"model":"m","channel":"c","version":"0.0.1",)"
                                  R"("rollout":{"percent":0,"salt":"ffffffffffffffff"},)"
                                  R"("updated":"2026-02-28T23:59:59Z"})";
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) write_seeds(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto c = Channel::parse(input);
  if (!c) {
    if (c.error().message().empty()) finding("an error without a message", input);
    return 0;
  }
  if (!valid_model_name(c->model)) finding("accepted an invalid model name", input);
  if (!valid_channel_name(c->channel)) finding("accepted an invalid channel name", input);
  if (!SemVer::parse(c->version)) finding("accepted an invalid version", input);
  if (!c->min_version.empty() && !SemVer::parse(c->min_version)) {
    finding("accepted an invalid min_version", input);
  }
  if (c->rollout.percent > 100) finding("accepted a percent over 100", input);
  if (!c->rollout.fallback_version.empty() && !SemVer::parse(c->rollout.fallback_version)) {
    finding("accepted an invalid fallback_version", input);
  }
  if (c->targeted) {
    auto sel = Selector::parse(c->targeted->select);
    if (!sel) finding("accepted an invalid selector", input);
    if (sel->text() != c->targeted->select) finding("kept a selector that is not canonical", input);
    if (!SemVer::parse(c->targeted->version))
      finding("accepted an invalid targeted version", input);
    if (c->targeted->percent > 100) finding("accepted a targeted percent over 100", input);
    (void)wanted_version(*c, "dev-1", {{"site", "a"}, {"hw", "x"}});
  }
  (void)wanted_version(*c, "dev-1", {});
  const std::string out = c->serialize();
  auto again = Channel::parse(out);
  if (!again) finding("its own output does not parse: " + again.error().message(), out);
  if (again->serialize() != out) finding("the round trip changes the channel", input);
  return 0;
}
