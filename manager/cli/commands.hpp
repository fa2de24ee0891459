#pragma once
// Command groups of the `mota` CLI that live outside manager/cli/cli.cpp, one file each, so that
// independent features do not all edit one file. Each adds its subcommands to `app`; the command
// the user chose sets `action`, which cli_main() runs after parsing (usage errors never half-run
// an operation). `repo_flag` is the shared --repo value (see repo_dir()).

#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <string>

#include "common/result.hpp"

namespace mota::manager {

using CliAction = std::function<Status()>;

// --repo, else $MOTA_REPO, else ".".
std::string repo_dir(const std::string& flag);

// manager/cli/delta.cpp: `mota delta ...`.
void add_delta_commands(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/fleet.cpp: `mota devices`, `mota device`, `mota fleet`, `mota rollout ...`.
void add_fleet_commands(CLI::App& app, CliAction& action, std::string& repo_flag);
// manager/cli/bundle.cpp: `mota bundle create|inspect`.
void add_bundle_commands(CLI::App& app, CliAction& action, std::string& repo_flag);

}  // namespace mota::manager
