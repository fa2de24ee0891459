// mota-bench-delta-gen KIND DTYPE SIZE_MIB OLD NEW [SEED]: writes a generated safetensors pair
// (see bench/delta_gen.hpp) for bench/delta.sh. KIND: full-finetune, partial-finetune,
// head-replaced, reordered, grown, shrunk, requantised, identical, unrelated. DTYPE: F32 F16 I8.
#include "bench/delta_gen.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  using namespace mota::bench;
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s KIND DTYPE SIZE_MIB OLD NEW [SEED]\n", argv[0]);
    return 2;
  }
  const std::string kind = argv[1], dtype = argv[2];
  PairKind k{};
  bool found = false;
  for (int i = 0; i <= static_cast<int>(PairKind::unrelated); ++i) {
    if (kind == pair_kind_name(static_cast<PairKind>(i))) {
      k = static_cast<PairKind>(i);
      found = true;
    }
  }
  if (!found || (dtype != "F32" && dtype != "F16" && dtype != "I8")) {
    std::fprintf(stderr, "%s: unknown kind or dtype\n", argv[0]);
    return 2;
  }
  const std::uint64_t mib = std::strtoull(argv[3], nullptr, 10);
  const std::uint64_t seed = argc > 6 ? std::strtoull(argv[6], nullptr, 10) : 1;
  if (!write_pair(k, dtype, mib << 20, argv[4], argv[5], seed)) {
    std::perror("write");
    return 1;
  }
  return 0;
}
