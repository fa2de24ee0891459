#include "manager/repo/settings.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cstdio>
#include <optional>

#include "common/time.hpp"

namespace mota::manager {
namespace {

using std::chrono::seconds;

Result<seconds> positive_duration(std::string_view what, std::string_view text) {
  auto d = parse_duration(text);
  if (!d) return fail(Errc::parse, std::string(what) + ": " + d.error().message());
  if (d->count() <= 0) return fail(Errc::parse, std::string(what) + ": must be positive");
  return *d;
}

}  // namespace

seconds Settings::lifetime(std::string_view role) const {
  if (role == "root") return expiry.root;
  if (role == "targets") return expiry.targets;
  if (role == "snapshot") return expiry.snapshot;
  if (role == "timestamp") return expiry.timestamp;
  return seconds(0);
}

seconds Settings::refresh_window(std::string_view role) const {
  const seconds half = lifetime(role) / 2;
  // Half the lifetime at most: a margin as long as the lifetime would re-sign at every check.
  const seconds w = role == "root" ? std::min(std::max(refresh_margin, kRootWarnAhead), half)
                                   : std::min(refresh_margin, half);
  return std::max(w, seconds(1));
}

std::string Settings::to_toml() const {
  std::string s;
  s += "# mota repository settings (docs/repository.md)\n";
  s += "# Key type of newly generated keys: ed25519, ecdsa or rsa.\n";
  s += "key_type = \"" + std::string(crypto::keytype_name(key_type)) + "\"\n";
  s += "# zstd level (1..19) for packages built by `mota release add`.\n";
  s += "zstd_level = " + std::to_string(zstd_level) + "\n";
  s += "# Timestamp, snapshot and targets are re-signed (`mota timestamp refresh`, `mota serve`)\n";
  s += "# when they expire within min(refresh_margin, half their lifetime).\n";
  s += "refresh_margin = \"" + format_duration(refresh_margin) + "\"\n";
  s += "# `mota release add` builds package deltas from up to this many lower released versions\n";
  s +=
      "# (0: none) and publishes a delta only when it is at most delta_max_ratio of the package.\n";
  s += "delta_versions = " + std::to_string(delta_versions) + "\n";
  char ratio[32];
  std::snprintf(ratio, sizeof ratio, "%.4g", delta_max_ratio);
  std::string ratio_text = ratio;
  // TOML needs a float literal to read back as one.
  if (ratio_text.find_first_of(".e") == std::string::npos) ratio_text += ".0";
  s += "delta_max_ratio = " + ratio_text + "\n\n";
  s += "# Lifetime of each role's metadata from the moment it is signed.\n[expiry]\n";
  s += "root = \"" + format_duration(expiry.root) + "\"\n";
  s += "targets = \"" + format_duration(expiry.targets) + "\"\n";
  s += "snapshot = \"" + format_duration(expiry.snapshot) + "\"\n";
  s += "timestamp = \"" + format_duration(expiry.timestamp) + "\"\n";
  return s;
}

Result<Settings> Settings::from_toml(std::string_view text) {
  toml::table tbl;
  try {
    tbl = toml::parse(text, std::string_view("mota.toml"));
  } catch (const toml::parse_error& e) {
    return fail(Errc::parse, "mota.toml: line " + std::to_string(e.source().begin.line) +
                                 ", column " + std::to_string(e.source().begin.column) + ": " +
                                 std::string(e.description()));
  }
  Settings s;
  auto get_str = [](const toml::node& n, const std::string& key) -> Result<std::string> {
    auto v = n.value<std::string>();
    if (!v) return fail(Errc::parse, "mota.toml: " + key + ": not a string");
    return *v;
  };
  // Integers by type, never node.value<int64_t>(): toml++ converts a float node to an integer
  // with a cast that is undefined when the float is out of range (zstd_level = 1e300).
  auto integer = [](const toml::node& n) -> std::optional<std::int64_t> {
    const auto* i = n.as_integer();
    if (!i) return std::nullopt;
    return i->get();
  };
  for (auto&& [k, node] : tbl) {
    const std::string key(k.str());
    if (key == "key_type") {
      const std::string v = MOTA_TRY(get_str(node, key));
      auto t = crypto::key_type_from_name(v);
      if (!t) return fail(Errc::parse, "mota.toml: key_type: " + t.error().message());
      s.key_type = *t;
    } else if (key == "zstd_level") {
      auto v = integer(node);
      if (!v || *v < 1 || *v > 19) {
        return fail(Errc::parse, "mota.toml: zstd_level: not an integer in 1..19");
      }
      s.zstd_level = static_cast<int>(*v);
    } else if (key == "delta_versions") {
      auto v = integer(node);
      if (!v || *v < 0 || *v > 100) {
        return fail(Errc::parse, "mota.toml: delta_versions: not an integer in 0..100");
      }
      s.delta_versions = static_cast<unsigned>(*v);
    } else if (key == "delta_max_ratio") {
      // value<double>() also accepts an integer literal (1 means "any delta smaller than the
      // package").
      auto v = node.value<double>();
      if (!v || !(*v > 0) || *v > 1) {
        return fail(Errc::parse, "mota.toml: delta_max_ratio: not a number in (0, 1]");
      }
      s.delta_max_ratio = *v;
    } else if (key == "refresh_margin") {
      const std::string v = MOTA_TRY(get_str(node, key));
      s.refresh_margin = MOTA_TRY(positive_duration("mota.toml: refresh_margin", v));
    } else if (key == "expiry") {
      const toml::table* et = node.as_table();
      if (!et) return fail(Errc::parse, "mota.toml: expiry: not a table");
      for (auto&& [ek, en] : *et) {
        const std::string role(ek.str());
        const std::string what = "mota.toml: expiry." + role;
        const std::string v = MOTA_TRY(get_str(en, "expiry." + role));
        const seconds d = MOTA_TRY(positive_duration(what, v));
        if (role == "root")
          s.expiry.root = d;
        else if (role == "targets")
          s.expiry.targets = d;
        else if (role == "snapshot")
          s.expiry.snapshot = d;
        else if (role == "timestamp")
          s.expiry.timestamp = d;
        else
          return fail(Errc::parse, what + ": unknown role (root, targets, snapshot, timestamp)");
      }
    } else {
      // Strict: a misspelt key silently ignored would leave a default the operator did not want.
      return fail(Errc::parse, "mota.toml: unknown key '" + key + "'");
    }
  }
  return s;
}

Result<Expiry> parse_expiry_spec(std::string_view spec, Expiry base) {
  Expiry e = base;
  std::size_t pos = 0;
  while (pos <= spec.size()) {
    std::size_t comma = spec.find(',', pos);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) {
      if (comma == spec.size()) break;
      continue;
    }
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) {
      return fail(Errc::invalid_argument,
                  "expiry '" + std::string(item) + "': want ROLE=DURATION (e.g. targets=3mo)");
    }
    const std::string role(item.substr(0, eq));
    auto d = parse_duration(item.substr(eq + 1));
    if (!d) return fail(Errc::invalid_argument, "expiry " + role + ": " + d.error().message());
    if (d->count() <= 0)
      return fail(Errc::invalid_argument, "expiry " + role + ": must be positive");
    if (role == "root")
      e.root = *d;
    else if (role == "targets")
      e.targets = *d;
    else if (role == "snapshot")
      e.snapshot = *d;
    else if (role == "timestamp")
      e.timestamp = *d;
    else {
      return fail(Errc::invalid_argument,
                  "expiry: unknown role '" + role + "' (root, targets, snapshot, timestamp)");
    }
  }
  return e;
}

std::string format_duration(seconds s) {
  struct Unit {
    long long secs;
    const char* name;
  };
  static constexpr Unit kUnits[] = {{365 * 86400, "y"}, {30 * 86400, "mo"}, {7 * 86400, "w"},
                                    {86400, "d"},       {3600, "h"},        {60, "m"}};
  const long long n = s.count();
  for (const auto& u : kUnits) {
    if (n > 0 && n % u.secs == 0) return std::to_string(n / u.secs) + u.name;
  }
  return std::to_string(n) + "s";
}

}  // namespace mota::manager
