#pragma once
// The systemd service notification protocol (sd_notify(3)) for Type=notify units: READY=1 once
// the daemon is usable, STATUS=<text> for `systemctl status`, WATCHDOG=1 keep-alives while
// WatchdogSec= is set, STOPPING=1 when shutting down. Outside systemd ($NOTIFY_SOCKET unset)
// every call is a cheap no-op, so callers do not need to know how they were started.
//
// Thread-safety: the functions may be called from any thread.

#include <chrono>
#include <string>
#include <string_view>

namespace mota::notify {

// Sends `state` ("READY=1", "STATUS=...", newline-separated assignments) to $NOTIFY_SOCKET.
// Returns false if not running under a notifying service manager or the send failed.
bool send(std::string_view state);

inline bool ready(std::string_view status) {
  return send("READY=1\nSTATUS=" + std::string(status));
}
inline bool status(std::string_view text) {
  return send("STATUS=" + std::string(text));
}
inline bool stopping() {
  return send("STOPPING=1");
}

// The watchdog interval the service manager expects keep-alives within ($WATCHDOG_USEC, when
// $WATCHDOG_PID is unset or this process), or zero when the watchdog is off.
std::chrono::microseconds watchdog_interval();

// Sends WATCHDOG=1 if the watchdog is on and at least half its interval passed since the last
// one sent through this function; cheap enough to call from every loop iteration.
void watchdog_tick();

}  // namespace mota::notify
