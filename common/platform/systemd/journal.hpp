#pragma once
// journald backend of the logging facade (libsystemd stays out of core headers).
#include <initializer_list>
#include <string_view>

#include "common/log.hpp"

namespace mota::log::platform {
// level: the facade's Level as int (debug..error), mapped to syslog priorities.
void journal_send(int level, std::string_view message, std::initializer_list<Field> fields);
}  // namespace mota::log::platform
