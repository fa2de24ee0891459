#include "common/notify.hpp"

#include <systemd/sd-daemon.h>

#include <atomic>
#include <string>

namespace mota::notify {

bool send(std::string_view state) {
  // sd_notify() is a no-op returning 0 without $NOTIFY_SOCKET.
  return sd_notify(0, std::string(state).c_str()) > 0;
}

std::chrono::microseconds watchdog_interval() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) return std::chrono::microseconds{0};
  return std::chrono::microseconds{usec};
}

void watchdog_tick() {
  static const std::chrono::microseconds interval = watchdog_interval();
  if (interval.count() == 0) return;
  static std::atomic<std::int64_t> last{0};
  const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                       std::chrono::steady_clock::now().time_since_epoch())
                       .count();
  auto prev = last.load();
  if (now - prev < interval.count() / 2) return;
  if (last.compare_exchange_strong(prev, now)) send("WATCHDOG=1");
}

}  // namespace mota::notify
