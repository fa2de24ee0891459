// `mota verify`: the repository (or a served tree) checked as a client would
// (manager/verify/verify.hpp).
#include "manager/verify/verify.hpp"

#include <cstdio>
#include <string>

#include "manager/cli/commands.hpp"

namespace mota::manager {

void add_verify_command(CLI::App& app, CliAction& action, std::string& repo_flag) {
  auto verify_dir = std::make_shared<std::string>();
  auto* verify = app.add_subcommand("verify", "check a repository end to end as a client would");
  verify->add_option("DIR", *verify_dir, "repository (default: --repo)");
  add_repo_option(verify, repo_flag);
  verify->callback([&action, &repo_flag, verify_dir] {
    action = [&repo_flag, verify_dir]() -> Status {
      const std::string dir = verify_dir->empty() ? repo_dir(repo_flag) : *verify_dir;
      const VerifyReport report = MOTA_TRY_CTX(Repository::verify(dir), "verify " + dir);
      for (const auto& line : report.checked) std::printf("ok: %s\n", line.c_str());
      for (const auto& w : report.warnings) std::printf("warning: %s\n", w.c_str());
      std::printf("repository %s verified\n", dir.c_str());
      return {};
    };
  });
}

}  // namespace mota::manager
