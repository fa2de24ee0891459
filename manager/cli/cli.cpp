#include "manager/cli/cli.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/cli_words.hpp"
#include "common/version.hpp"
#include "manager/cli/commands.hpp"

namespace mota::manager {
namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

}  // namespace

std::string human_size(std::uint64_t n) {
  char buf[32];
  if (n >= (1u << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(n) / double(1u << 20));
  } else if (n >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", double(n) / 1024.0);
  } else {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  }
  return buf;
}

std::string repo_dir(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("MOTA_REPO");
  if (env && *env) return env;
  return ".";
}

void add_repo_option(CLI::App* cmd, std::string& repo_flag) {
  cmd->add_option("--repo", repo_flag, "repository directory (default: $MOTA_REPO or .)");
}

int cli_main(int argc, char** argv) {
  CLI::App app{"mota: publish ML models to fleets through a signed TUF repository", "mota"};
  app.set_version_flag("--version", std::string("mota ") + kVersion);
  app.require_subcommand(1);

  std::string repo_flag;
  // Before the command too (`mota --repo DIR release list`); one given after it wins.
  app.add_option("--repo", repo_flag,
                 "repository directory for every command (default: $MOTA_REPO or .); also "
                 "accepted after the command");
  // The chosen command runs after parsing, so usage errors never half-run an operation.
  CliAction action;
  for (const AddCommands add : kCommandGroups) add(app, action, repo_flag);

  // A mistyped command is named (common/cli_words.hpp).
  {
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
    const std::string why = cli::unknown_command(cli::command_word(argc, argv, {"--repo"}), names);
    if (!why.empty()) {
      std::fprintf(stderr, "mota: error: %s\nRun 'mota --help' for usage.\n", why.c_str());
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "mota: error: %s\nRun 'mota --help' for usage.\n", e.what());
    return kExitUsage;
  }
  if (!action) {
    std::fprintf(stderr, "mota: error: no command given\n");
    return kExitUsage;
  }
  Status s = action();
  std::fflush(stdout);
  if (!s) {
    std::fprintf(stderr, "mota: error: %s\n", s.error().message().c_str());
    return s.error().code() == Errc::invalid_argument ? kExitUsage : kExitFailed;
  }
  return 0;
}

}  // namespace mota::manager
