#include "common/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "common/platform/systemd/journal.hpp"
#include "common/text.hpp"
#include "common/time.hpp"

namespace mota::log {
namespace {

std::atomic<Level> g_level{Level::info};
std::mutex g_mutex;
std::vector<std::pair<std::string, std::string>> g_common;  // guarded by g_mutex

const char* level_name(Level l) {
  switch (l) {
    case Level::debug:
      return "DEBUG";
    case Level::info:
      return "INFO";
    case Level::warn:
      return "WARN";
    case Level::error:
      return "ERROR";
  }
  return "?";
}

// systemd sets JOURNAL_STREAM=<dev>:<ino> for a service whose stderr is the journal; the
// documented check is to compare it with stderr's own device and inode.
bool stderr_is_journal() {
  static const bool is = [] {
    const char* js = std::getenv("JOURNAL_STREAM");
    if (!js) return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0) return false;
    return st.st_dev == dev && st.st_ino == ino;
  }();
  return is;
}

}  // namespace

void set_level(Level level) {
  g_level = level;
}
Level level() {
  return g_level;
}

bool parse_level(std::string_view name, Level& out) {
  if (name == "debug")
    out = Level::debug;
  else if (name == "info")
    out = Level::info;
  else if (name == "warn" || name == "warning")
    out = Level::warn;
  else if (name == "error")
    out = Level::error;
  else
    return false;
  return true;
}

void set_common_fields(std::vector<std::pair<std::string, std::string>> fields) {
  std::lock_guard lock(g_mutex);
  g_common = std::move(fields);
}

// The message and every field value (the common ones too) carry text from devices and network
// clients (ids, paths, versions, error texts): in either mode they go out through printable(), so
// none can end the line, forge another record or drive the terminal that shows it. Keys are the
// program's own constants and go out as they are.
void write(Level level, std::string_view message, std::initializer_list<Field> own) {
  if (level < g_level.load()) return;
  const std::string text = printable(message);
  std::vector<Field> fields(own.begin(), own.end());
  std::lock_guard lock(g_mutex);
  for (const auto& [k, v] : g_common) fields.push_back({k, v});
  if (stderr_is_journal()) {
    for (auto& f : fields) f.value = printable(f.value);
    platform::journal_send(static_cast<int>(level), text, fields);
    return;
  }
  std::string line = format_time(Clock::now());
  line += ' ';
  line += level_name(level);
  line += ' ';
  line += text;
  for (const auto& f : fields) {
    line += ' ';
    line += f.key;
    line += '=';
    // Quoted as before escaping: a value with a space, a tab or a quote, or an empty one.
    bool quote = f.value.find_first_of(" \t\"") != std::string::npos || f.value.empty();
    if (quote) line += '"';
    line += printable(f.value);
    if (quote) line += '"';
  }
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace mota::log
