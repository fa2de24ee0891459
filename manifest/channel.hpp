#pragma once
// Channel targets: which model version a channel ("stable", "beta", ...) wants, with a staged
// rollout. The repository publishes one as the TUF target `channels/<channel>/<model>.json`, so it
// is signed by the targets role like any model package; the agent reads it to decide what to
// install.
//
// {"model": "det", "channel": "stable", "version": "1.2.0",
//  "rollout": {"percent": 25, "salt": "9f86d081884c7d65", "fallback_version": "1.1.0"},
//  "min_version": "1.0.0", "allow_downgrade": false, "updated": "2026-11-21T10:00:00Z"}
//
// Rollout: `percent` is an integer 0..100. A device is in the rollout when its bucket
// (rollout_bucket(salt, device_id), uniform in 0..9999) is below the share (percent * 100, or
// `bp` when present, below); it then wants
// `version`, otherwise `fallback_version`. The fallback is absent when percent is 100, and may be
// absent for a first rollout (devices outside it then want nothing new). Because the bucket only
// depends on the salt and the device, raising the percentage keeps every device already in; the
// repository picks a new salt whenever `version` changes so each release samples other devices
// first.
//
// `min_version` (optional): devices below it must update regardless of the rollout; versions
// below it are never offered. `allow_downgrade`: whether an agent on a newer version than the
// wanted one may install the older one (rolling a bad release back).
//
// Targeting (optional; docs/fleet.md, "Targeted rollouts"):
//  "targeted": {"select": "site=plant-3,hw in (orin-nano,rpi5)", "version": "1.2.0",
//               "percent": 25, "salt": "0c1d2e3f40516273", "fallback_version": "1.1.0"}
// A device whose labels (agent/requirements.hpp device_labels) match `select` (a label selector,
// common/labels.hpp, stored in its canonical text) and whose bucket under this salt is below
// percent * 100 wants targeted.version; a matching device outside the percentage wants
// targeted.fallback_version (what the target ran before: optional, absent at 100%), or without
// one follows the rest of the file, as every other device does: the rest then describes what
// the devices outside the target keep. The section is separate from
// "rollout" so that an agent from before targeting, which ignores it, follows the rest of the
// file: it keeps the version of the devices outside the target (fail closed), never takes the
// targeted one.
//
// Finer shares (paced rollouts, docs/fleet.md "Pacing"): "rollout" and "targeted" may carry
// "bp", the share in basis points (0..10000, 1/100 of a percent), which then decides; `percent`
// must be bp / 100 rounded down. An agent from before "bp" reads `percent`, a share never larger
// than bp: it may join a paced rollout later than the others, never earlier (fail closed). "bp" is
// written only when it is not a whole percentage, so files without pacing stay as they were.
//
// Install window (optional; docs/fleet.md "Install windows"): "install_window": ["Sat,Sun
// 02:00-04:00"], the local times (common/window.hpp) at which devices may switch to what this file
// gives them; each device also keeps its own agent.toml windows. An agent from before install
// windows ignores the field and switches at any time: windows are a courtesy to the devices'
// owners, not a safety property.
//
// Unknown fields are ignored (a newer manager may add some; the file is signed either way).

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/labels.hpp"
#include "common/result.hpp"
#include "common/window.hpp"
#include "manifest/canonical_json.hpp"

namespace mota {

// The share of a sample: a whole percentage, or a finer one in basis points ("bp" above).
struct Share {
  unsigned percent = 100;      // 0..100; bp / 100 rounded down when bp is set
  std::optional<unsigned> bp;  // 0..10000, set only when not a multiple of 100

  unsigned share_bp() const { return bp ? *bp : percent * 100; }
  // Sets both from basis points (clamped to 10000).
  void set_share_bp(unsigned value);
};

struct Rollout : Share {
  std::string salt;              // 16 lower-case hex digits
  std::string fallback_version;  // semver; empty when absent
};

struct Targeted : Share {
  std::string select;            // canonical selector text (Selector::parse succeeds)
  std::string version;           // semver, not below min_version
  std::string salt;              // 16 lower-case hex digits
  std::string fallback_version;  // semver; empty when absent (always at 100%)
};

struct Channel {
  std::string model;    // valid_model_name()
  std::string channel;  // valid_channel_name()
  std::string version;  // semver
  Rollout rollout;
  std::optional<Targeted> targeted;
  std::string min_version;  // semver; empty when absent
  bool allow_downgrade = false;
  std::vector<std::string> install_window;  // canonical window texts; empty: any time
  std::string updated;                      // YYYY-MM-DDTHH:MM:SSZ

  // Parses and validates untrusted JSON. Errors are Errc::parse and name the field:
  // "channel: rollout.percent: 120 is not an integer in 0..100".
  static Result<Channel> parse(std::string_view json_text);
  Json to_json() const;
  // Pretty JSON (2-space indent, sorted keys, trailing newline): deterministic bytes.
  std::string serialize() const;
};

// Same rule as model names: [a-z0-9][a-z0-9._-]{0,63}.
bool valid_channel_name(std::string_view name);

// The target path of a channel file: "channels/<channel>/<model>.json".
std::string channel_target_path(std::string_view channel, std::string_view model);

// Whether a device with `bucket` is inside `share` (bucket < share_bp(); everyone at 10000).
bool in_share(const Share& share, unsigned bucket);

// First 8 bytes of sha256(salt + ":" + device_id) as a big-endian integer, modulo 10000.
unsigned rollout_bucket(std::string_view salt, std::string_view device_id);

// The version `device_id` with `labels` should run: targeted.version inside the target (above),
// else `version` inside the rollout, else the fallback (which may be empty: nothing wanted).
std::string wanted_version(const Channel& channel, std::string_view device_id,
                           const Labels& labels);
// Whether `device_id` with `labels` is inside the channel's target (false without one).
bool in_target(const Channel& channel, std::string_view device_id, const Labels& labels);

}  // namespace mota
