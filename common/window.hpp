#pragma once
// Install windows: the local times at which a device may switch to a new model version
// (docs/agent.md, "Install windows and update locks"). Outside them the agent downloads, stages
// and probes, and waits before the switch.
//
//   "Mon-Fri 01:00-05:00"   weekdays, 1 to 5 in the morning
//   "daily 22:00-04:00"     every night: a window ending at or before its start ends the next day
//   "Sat,Sun 00:00-24:00"   all weekend
//   "Fri-Mon 23:30-00:30"   day ranges may wrap past Sunday
// Days: Mon Tue Wed Thu Fri Sat Sun (any case), ranges A-B, comma lists, or "daily" / "*". Times:
// HH:MM, 00:00..23:59, or 24:00 as an end. A window belongs to the day it opens on; it lasts 1 to
// 1440 minutes (AWS IoT's maintenance windows allow 1..1430). Times are the device's local time
// (its TZ or /etc/localtime): a window says when the plant is idle where the device is.
// A set of windows allows a time when any of them does. Windows come from agent.toml (device and
// per model) and from signed channel files (per rollout); all that apply must allow the switch.
//
// Parsing is of input signed by the operator but read by every device: bounded (kMaxWindows,
// kMaxWindowBytes), errors say which window and why. Thread-safety: values only.

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace mota {

inline constexpr std::size_t kMaxWindows = 32;
inline constexpr std::size_t kMaxWindowBytes = 64;

struct InstallWindow {
  std::uint8_t days = 0;  // bit 0 = Monday .. bit 6 = Sunday
  int start = 0;          // minutes after local midnight, 0..1439
  int length = 0;         // minutes, 1..1440

  // Errc::invalid_argument: "install window \"Mon 25:00-26:00\": 25:00 is not a time (HH:MM)".
  [[nodiscard]] static Result<InstallWindow> parse(std::string_view text);
  // Canonical form: "daily" for every day, else days as ranges ("Mon-Fri", "Sat,Sun").
  [[nodiscard]] std::string text() const;
  bool operator==(const InstallWindow&) const = default;
};

class WindowSet {
 public:
  WindowSet() = default;
  // Each of `texts` parsed (at most kMaxWindows); the error names the first bad one.
  [[nodiscard]] static Result<WindowSet> parse(const std::vector<std::string>& texts);

  bool empty() const { return windows_.empty(); }
  const std::vector<InstallWindow>& windows() const { return windows_; }
  // Whether `local` (a broken-down local time: tm_wday, tm_hour, tm_min) is inside a window. An
  // empty set allows every time.
  [[nodiscard]] bool allows(const std::tm& local) const;
  // The same at `t` in this process's local time zone.
  [[nodiscard]] bool allows(std::time_t t) const;
  // When the next window opens after `t` (within 8 days), in local time; nullopt for an empty set.
  [[nodiscard]] std::optional<std::time_t> next_open(std::time_t t) const;
  // "Mon-Fri 01:00-05:00, Sat 00:00-24:00".
  [[nodiscard]] std::string text() const;

 private:
  std::vector<InstallWindow> windows_;
};

// "Tue 01:00" in local time, for messages about when a window opens.
std::string format_local_minute(std::time_t t);

}  // namespace mota
