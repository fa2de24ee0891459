#pragma once
// `mota ... --repo DIR` from integration tests: the command's result, or its --json answer
// (expected to succeed and to be JSON). Header-only, for the integration tests (they link
// everything; see tests/CMakeLists.txt on the layers of test support).

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "manifest/canonical_json.hpp"
#include "tests/support/test_support.hpp"

namespace mota::test {

inline RunResult mota_cli(const std::filesystem::path& repo, std::vector<std::string> args) {
  args.insert(args.begin(), build_path("manager/mota").string());
  args.push_back("--repo");
  args.push_back(repo.string());
  return run(args);
}

inline Json mota_cli_json(const std::filesystem::path& repo, std::vector<std::string> args) {
  args.push_back("--json");
  auto r = mota_cli(repo, std::move(args));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  auto j = Json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

}  // namespace mota::test
