#pragma once
// The settings of a mota repository (DIR/mota.toml, docs/repository.md): key type, the lifetime of
// each role, the refresh rule, the zstd level and the delta policy of `mota release add`; and the
// duration words the CLI and mota.toml share. Plain values: no I/O, no state, thread-safe.

#include <chrono>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "manifest/crypto.hpp"

namespace mota::manager {

// Role lifetimes: each time a role is signed its expiry is set to now + its lifetime.
struct Expiry {
  std::chrono::seconds root{365 * 86400};
  std::chrono::seconds targets{90 * 86400};
  std::chrono::seconds snapshot{7 * 86400};
  std::chrono::seconds timestamp{86400};
};

// How far ahead of its expiry the root is flagged at the least: renewing it needs the offline root
// key (`mota key rotate root`), which takes a person, so a two-day margin would be too short.
inline constexpr std::chrono::seconds kRootWarnAhead{30 * 86400};

struct Settings {
  crypto::KeyType key_type = crypto::KeyType::ed25519;
  Expiry expiry;
  // The refresh rule (docs/repository.md, "Expiry and refresh"): a role is *due* when it expires
  // within its refresh window (refresh_window()). refresh() re-signs the due online roles;
  // verify(), `mota serve` and `mota timestamp refresh` warn about due roles they cannot renew.
  std::chrono::seconds refresh_margin{2 * 86400};
  int zstd_level = 10;
  // `mota release add` builds package deltas to the new version from up to this many lower
  // released versions of the model (0: none), and publishes one only when it is at most
  // delta_max_ratio times the full package (a bigger delta saves too little to be worth a
  // second code path on the device).
  unsigned delta_versions = 3;
  double delta_max_ratio = 0.8;

  // The lifetime of `role` ("root", "targets", "snapshot", "timestamp"; anything else: 0).
  std::chrono::seconds lifetime(std::string_view role) const;
  // The refresh window of `role`: min(refresh_margin, lifetime / 2) for the online roles
  // (timestamp, snapshot, targets), so a 20 s timestamp is re-signed when 10 s are left and a
  // 1d one 12 h ahead; for root min(max(refresh_margin, kRootWarnAhead), lifetime / 2). At least
  // 1 s.
  std::chrono::seconds refresh_window(std::string_view role) const;

  // mota.toml text (with comments) and its parser. Errc::parse names the key and the reason.
  std::string to_toml() const;
  static Result<Settings> from_toml(std::string_view text);
};

// Parses "root=1y,targets=3mo,snapshot=1w,timestamp=1d" (any subset) over `base`; durations as
// parse_duration ("20s", "12h", "3mo"). Errc::invalid_argument naming the item.
Result<Expiry> parse_expiry_spec(std::string_view spec, Expiry base = {});
// The largest unit that divides `s` exactly: "1y", "3mo", "2w", "1d", "12h", "5m", "20s"
// (parse_duration reads it back).
std::string format_duration(std::chrono::seconds s);

}  // namespace mota::manager
