#include "common/semver.hpp"

#include <algorithm>

namespace mota {
namespace {

bool is_numeric(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
bool valid_ident(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
  });
}
std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    auto p = s.find(sep, start);
    out.emplace_back(
        s.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return out;
}

}  // namespace

Result<SemVer> SemVer::parse(std::string_view s) {
  auto bad = [&](std::string_view why) {
    return fail(Errc::parse,
                "'" + std::string(s) + "' is not a semantic version (" + std::string(why) + ")");
  };
  if (s.size() > 256) return bad("too long");
  SemVer v;
  std::string_view core = s;
  if (auto plus = core.find('+'); plus != std::string_view::npos) {
    v.build = std::string(core.substr(plus + 1));
    core = core.substr(0, plus);
    for (auto& id : split(v.build, '.'))
      if (!valid_ident(id)) return bad("bad build metadata");
  }
  if (auto dash = core.find('-'); dash != std::string_view::npos) {
    v.prerelease = split(core.substr(dash + 1), '.');
    core = core.substr(0, dash);
    for (auto& id : v.prerelease) {
      if (!valid_ident(id)) return bad("bad pre-release identifier");
      if (is_numeric(id) && id.size() > 1 && id[0] == '0')
        return bad("leading zero in pre-release");
    }
  }
  auto parts = split(core, '.');
  if (parts.size() != 3) return bad("want MAJOR.MINOR.PATCH");
  unsigned long long* dst[3] = {&v.major, &v.minor, &v.patch};
  for (int i = 0; i < 3; ++i) {
    if (!is_numeric(parts[i])) return bad("non-numeric component");
    if (parts[i].size() > 1 && parts[i][0] == '0') return bad("leading zero");
    if (parts[i].size() > 18) return bad("component too large");
    *dst[i] = std::stoull(parts[i]);
  }
  return v;
}

std::string SemVer::to_string() const {
  std::string s = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  for (std::size_t i = 0; i < prerelease.size(); ++i) s += (i == 0 ? "-" : ".") + prerelease[i];
  if (!build.empty()) s += "+" + build;
  return s;
}

std::strong_ordering SemVer::operator<=>(const SemVer& o) const {
  if (auto c = major <=> o.major; c != 0) return c;
  if (auto c = minor <=> o.minor; c != 0) return c;
  if (auto c = patch <=> o.patch; c != 0) return c;
  // A version without pre-release ranks above one with it.
  if (prerelease.empty() || o.prerelease.empty()) {
    return prerelease.empty() <=> o.prerelease.empty();
  }
  for (std::size_t i = 0; i < std::min(prerelease.size(), o.prerelease.size()); ++i) {
    const auto &a = prerelease[i], &b = o.prerelease[i];
    bool an = is_numeric(a), bn = is_numeric(b);
    if (an && bn) {
      if (a.size() != b.size()) return a.size() <=> b.size();
      if (auto c = a.compare(b); c != 0) return c <=> 0;
    } else if (an != bn) {
      return an ? std::strong_ordering::less : std::strong_ordering::greater;
    } else if (auto c = a.compare(b); c != 0) {
      return c <=> 0;
    }
  }
  return prerelease.size() <=> o.prerelease.size();
}

}  // namespace mota
