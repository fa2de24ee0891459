#include "common/cli_words.hpp"

#include <algorithm>

namespace mota::cli {

std::string_view command_word(int argc, char** argv,
                              const std::vector<std::string_view>& value_options) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (std::find(value_options.begin(), value_options.end(), a) != value_options.end()) {
      ++i;  // its value
      continue;
    }
    if (a.starts_with("-")) {
      const auto eq = a.find('=');
      if (eq != std::string_view::npos && std::find(value_options.begin(), value_options.end(),
                                                    a.substr(0, eq)) != value_options.end()) {
        continue;
      }
      return {};  // another option first: leave it to the parser
    }
    return a;
  }
  return {};
}

std::string unknown_command(std::string_view word, const std::vector<std::string>& commands) {
  if (word.empty() || std::find(commands.begin(), commands.end(), word) != commands.end()) {
    return "";
  }
  std::string names;
  for (const auto& c : commands) names += (names.empty() ? "" : ", ") + c;
  return "unknown command '" + std::string(word) + "' (" + names + ")";
}

}  // namespace mota::cli
