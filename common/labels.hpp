#pragma once
// Device labels and label selectors (docs/fleet.md, "Labels and selectors").
//
// A label is key=value. Devices report their own (agent.toml `labels`, plus facts the agent knows
// under the reserved prefix "mota/": mota/arch, mota/agent, mota/ram-gb, mota/accel.NAME);
// operators add their own on the server (`mota devices label`), which win over a device's.
//   key    1..63 bytes of [A-Za-z0-9._/-], starting and ending with a letter or digit
//   value  1..63 bytes of [A-Za-z0-9._:+-]
// At most kMaxLabels labels per device.
//
// A selector is a comma-separated list of requirements, all of which must hold (the grammar of
// Kubernetes' set-based label selectors, so operators who know it read it as they expect):
//   key=value, key==value    the label is present with that value
//   key!=value               the label is absent or has another value
//   key in (v1,v2,...)       the label is present with one of the values
//   key notin (v1,v2,...)    the label is absent or has none of the values
//   key                      the label is present (any value)
//   !key                     the label is absent
// Spaces around tokens are ignored. An empty selector is an error (a flag given with nothing
// would otherwise select everything). Limits: kMaxSelectorBytes, kMaxRequirements, and
// kMaxSetValues per set. Selector::text() is the canonical form (requirements in the order given,
// "=" for equality, sets sorted, spaces only around in/notin): parse(text()) gives the same
// selector.
//
// Parsing is of untrusted input (a selector in signed channel data is parsed by every device;
// labels come from devices): bounded, no recursion, errors say which requirement and why.
// Thread-safety: values, no shared state.

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace mota {

using Labels = std::map<std::string, std::string, std::less<>>;

inline constexpr std::size_t kMaxLabels = 64;
inline constexpr std::size_t kMaxLabelBytes = 63;
inline constexpr std::size_t kMaxSelectorBytes = 4096;
inline constexpr std::size_t kMaxRequirements = 64;
inline constexpr std::size_t kMaxSetValues = 256;
// Keys under this prefix are the agent's facts: agent.toml and operators cannot set them.
inline constexpr std::string_view kFactPrefix = "mota/";

[[nodiscard]] bool valid_label_key(std::string_view key);
[[nodiscard]] bool valid_label_value(std::string_view value);
// Errc::invalid_argument naming the label and the rule it breaks ("label key \"a b\": ...").
[[nodiscard]] Status check_label(std::string_view key, std::string_view value);

// `over` on top of `base` (over wins on a shared key).
[[nodiscard]] Labels merge_labels(const Labels& base, const Labels& over);

struct Requirement {
  enum class Op { equals, not_equals, in, not_in, exists, not_exists };
  std::string key;
  Op op = Op::exists;
  std::vector<std::string> values;  // one for (not_)equals, the set for (not_)in, none otherwise
};

class Selector {
 public:
  // Errc::invalid_argument: what is wrong and where ("requirement 2 \"hw in orin\": expected
  // '(' after in").
  [[nodiscard]] static Result<Selector> parse(std::string_view text);

  [[nodiscard]] bool matches(const Labels& labels) const;
  [[nodiscard]] std::string text() const;
  [[nodiscard]] const std::vector<Requirement>& requirements() const { return reqs_; }

 private:
  std::vector<Requirement> reqs_;
};

}  // namespace mota
