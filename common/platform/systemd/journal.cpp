#include "common/platform/systemd/journal.hpp"

#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>

#include <cerrno>
#include <string>
#include <vector>

namespace mota::log::platform {

void journal_send(int level, std::string_view message, std::span<const Field> fields) {
  static constexpr int kPriority[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
  std::vector<std::string> items;
  items.reserve(fields.size() + 3);
  items.push_back("MESSAGE=" + std::string(message));
  items.push_back("PRIORITY=" + std::to_string(kPriority[level < 0 || level > 3 ? 1 : level]));
  // Native-protocol entries get no identifier from journald (unlike syslog or stderr lines).
  items.push_back(std::string("SYSLOG_IDENTIFIER=") + program_invocation_short_name);
  for (const auto& f : fields) items.push_back(std::string(f.key) + "=" + f.value);
  std::vector<iovec> iov;
  iov.reserve(items.size());
  for (auto& s : items) iov.push_back({s.data(), s.size()});
  sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
}

}  // namespace mota::log::platform
