// libFuzzer harness for the bundle reader (storage/bundle.hpp): the tar index and bundle.json, the
// first things a device parses of a file from a USB stick. Any crash, sanitizer report, leak,
// hang or unbounded allocation is a bug; errors are fine. What the reader accepts must hold its
// promises: every entry inside the file, every name valid and unique. Built with -DMOTA_FUZZ=ON
// and clang; run with `FUZZ_TARGET=bundle scripts/fuzz`. With MOTA_FUZZ_SEEDS=<dir> set,
// initialisation writes small bundles (ustar names, pax names, pax sizes, empty entries) there.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>

#include "storage/bundle.hpp"

namespace {

namespace stdfs = std::filesystem;
using namespace mota;

void write_seed(const stdfs::path& dir, const std::string& name,
                const std::vector<std::pair<std::string, std::string>>& entries) {
  auto w = storage::BundleWriter::create(dir / name);
  if (!w) std::abort();
  for (const auto& [n, data] : entries) {
    if (!w->add(n, data)) std::abort();
  }
  if (!w->commit()) std::abort();
}

void write_seeds(const stdfs::path& dir) {
  storage::BundleIndex idx;
  idx.model = "detector";
  idx.version = "1.1.0";
  idx.package = "models/detector/1.1.0/detector-1.1.0.mota";
  idx.deltas = {{"1.0.0", "deltas/detector/1.0.0/1.1.0.mdelta"}};
  const std::string index = idx.to_json();
  write_seed(dir, "small",
             {{"bundle.json", index},
              {"metadata/timestamp.json", "{\"signed\": {}}"},
              {"metadata/2.root.json", "{}"},
              {"targets/x", ""}});
  write_seed(dir, "long-names",
             {{"bundle.json", index},
              {"targets/models/detector/1.1.0/" + std::string(64, 'a') + "." +
                   std::string(80, 'n') + ".mota",
               std::string(700, 'p')},
              {"targets/" + std::string(140, 'd') + "/" + std::string(90, 'f'), "x"}});
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) write_seeds(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto pread = [&](std::span<std::byte> buf, std::uint64_t off) -> Status {
    if (off > size || buf.size() > size - off) return fail(Errc::parse, "unexpected end of file");
    if (!buf.empty()) std::memcpy(buf.data(), data + off, buf.size());
    return {};
  };
  storage::BundleLimits limits;
  limits.max_entries = 256;
  auto entries = storage::read_tar_index(pread, size, limits);
  if (!entries) return 0;
  std::set<std::string> names;
  for (const auto& e : *entries) {
    if (e.offset > size || e.size > size - e.offset) std::abort();  // inside the file
    if (!storage::check_entry_name(e.name, limits.max_name_bytes)) std::abort();
    if (!names.insert(e.name).second) std::abort();  // unique
  }
  if (!entries->empty() && entries->front().name == "bundle.json" &&
      entries->front().size <= limits.max_index_bytes) {
    const auto& e = entries->front();
    (void)storage::BundleIndex::parse(
        std::string_view(reinterpret_cast<const char*>(data) + e.offset, e.size));
  }
  return 0;
}
