#pragma once
// Helpers of the agent's integration tests. Header-only: only tests that link the agent
// include it (see tests/CMakeLists.txt on the layers of test support).

#include <sys/utsname.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>

#include "agent/requirements.hpp"

namespace mota::test {

// This machine's architecture as the agent names it in requirements (agent::canonical_arch).
inline std::string this_arch() {
  struct utsname u {};
  ::uname(&u);
  return agent::canonical_arch(u.machine);
}

// `n` bytes that zstd cannot compress (a download and an unpack move them all), then `tag`; the
// same for the same `n` and `tag`.
inline std::string incompressible(std::size_t n, const std::string& tag) {
  std::mt19937_64 rng(std::hash<std::string>{}(tag));
  std::string s(n, '\0');
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  return s + tag;
}

}  // namespace mota::test
