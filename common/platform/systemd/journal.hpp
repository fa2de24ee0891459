#pragma once
// journald backend of the logging facade (libsystemd stays out of core headers).
#include <span>
#include <string_view>

#include "common/log.hpp"

namespace mota::log::platform {
// level: the facade's Level as int (debug..error), mapped to syslog priorities. Adds
// SYSLOG_IDENTIFIER=<program name> so `journalctl -t mota-agent` finds the records.
void journal_send(int level, std::string_view message, std::span<const Field> fields);
}  // namespace mota::log::platform
