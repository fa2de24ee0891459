#pragma once
// Semantic versions (semver.org 2.0.0) for model versions: parse, compare by precedence, print.
#include <compare>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace mota {

struct SemVer {
  unsigned long long major = 0, minor = 0, patch = 0;
  std::vector<std::string> prerelease;  // dot-separated identifiers after '-'
  std::string build;                    // after '+'; ignored for precedence

  static Result<SemVer> parse(std::string_view s);
  std::string to_string() const;

  // Precedence per semver 2.0 section 11 (build metadata ignored).
  std::strong_ordering operator<=>(const SemVer& o) const;
  bool operator==(const SemVer& o) const { return (*this <=> o) == 0; }
};

}  // namespace mota
