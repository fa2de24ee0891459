#pragma once
// The commands of the `mota` CLI, one group a file (manager/cli/<group>.cpp), so that independent
// features do not all edit one file. cli_main() (manager/cli/cli.cpp) runs over kCommandGroups:
// each group adds its subcommands to `app`; the command the user chose sets `action`, which
// cli_main() runs after parsing (usage errors never half-run an operation). `repo_flag` is the
// shared --repo value (see repo_dir()); `action` and `repo_flag` outlive the parse and the action,
// a group keeps its own flags alive (captured by its callbacks).

#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "common/result.hpp"

namespace mota::manager {

using CliAction = std::function<Status()>;
using AddCommands = void (*)(CLI::App& app, CliAction& action, std::string& repo_flag);

// --repo, else $MOTA_REPO, else ".".
std::string repo_dir(const std::string& flag);
// Adds --repo to a subcommand (given after the command it wins over one given before it).
void add_repo_option(CLI::App* cmd, std::string& repo_flag);
// "512 B", "3.4 KiB", "12.0 MiB".
std::string human_size(std::uint64_t n);

// manager/cli/init.cpp: `mota init`.
void add_init_command(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/release.cpp: `mota release add|list|deltas`.
void add_release_commands(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/channel.cpp: `mota channel set|show`.
void add_channel_commands(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/metadata.cpp: `mota timestamp refresh`, `mota key rotate`.
void add_metadata_commands(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/verify.cpp: `mota verify`.
void add_verify_command(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/serve.cpp: `mota serve` (the only command that installs signal handlers).
void add_serve_command(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/delta.cpp: `mota delta ...`.
void add_delta_commands(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/fleet.cpp: `mota devices`, `mota device`, `mota fleet`, `mota rollout ...`.
void add_fleet_commands(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/bundle.cpp: `mota bundle create|inspect`.
void add_bundle_commands(CLI::App& app, CliAction& action, std::string& repo_flag);

// Every group, in the order `mota --help` lists them.
inline constexpr AddCommands kCommandGroups[] = {
    add_init_command,      add_release_commands, add_channel_commands,
    add_metadata_commands, add_verify_command,   add_serve_command,
    add_delta_commands,    add_fleet_commands,   add_bundle_commands};

}  // namespace mota::manager
