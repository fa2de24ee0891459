// The install state machine's table (agent/install.hpp, kInstallSteps): every step has one row,
// the wire names are the ones agent.db and the server know, the failure policy of each row is the
// one install.hpp documents, and run_install's decisions come from the table (a modified copy
// changes them).

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "agent/install.hpp"
#include "tests/agent/install_fixture.hpp"

namespace mota::agent {
namespace {

TEST(InstallTable, EveryStepHasOneRowInOrderWithTodaysWireNames) {
  ASSERT_EQ(std::size(kInstallSteps), std::size(kAllInstallSteps));
  const std::vector<std::string> wire = {"download", "stage",  "verify", "probe",
                                         "ready",    "switch", "trial",  "commit"};
  for (std::size_t i = 0; i < std::size(kAllInstallSteps); ++i) {
    const InstallStep step = kAllInstallSteps[i];
    EXPECT_EQ(std::count_if(std::begin(kInstallSteps), std::end(kInstallSteps),
                            [&](const InstallStepRow& r) { return r.step == step; }),
              1)
        << wire[i];
    EXPECT_EQ(kInstallSteps[i].step, step);
    EXPECT_EQ(install_step_name(step), wire[i]);
    EXPECT_EQ(parse_install_step(wire[i]), step);
    EXPECT_EQ(&install_row(step), &kInstallSteps[i]);
    // One chain: each step leads to the next, the last (commit) to none.
    if (i + 1 < std::size(kAllInstallSteps)) {
      EXPECT_EQ(kInstallSteps[i].next, kAllInstallSteps[i + 1]) << wire[i];
    } else {
      EXPECT_EQ(kInstallSteps[i].next, std::nullopt);
    }
  }
  EXPECT_EQ(parse_install_step("unpack"), std::nullopt);  // a step of no build
  EXPECT_EQ(parse_install_step(""), std::nullopt);
}

// "Failure classes" in install.hpp, row by row.
TEST(InstallTable, FailurePoliciesAreTheDocumentedOnes) {
  for (const auto& row : kInstallSteps) {
    SCOPED_TRACE(std::string(row.name));
    EXPECT_EQ(row.on(FailureClass::local), OnFailure::resume);
    EXPECT_EQ(row.on(FailureClass::transient), OnFailure::retry);
    EXPECT_EQ(row.on(FailureClass::permanent), OnFailure::block);
    // An unusable delta aborts without blocking wherever the step reads the delta's bytes.
    if (row.bytes != BytesCheck::none) {
      EXPECT_EQ(row.on(FailureClass::bad_delta), OnFailure::abort);
    }
    // Abort empties the slot without switching back: never on a step that may have switched.
    if (row.rolls_back) {
      for (auto c : {FailureClass::local, FailureClass::transient, FailureClass::permanent,
                     FailureClass::bad_delta}) {
        EXPECT_NE(row.on(c), OnFailure::abort);
      }
    }
    // Only the trial resumes elsewhere: from the slot on disk (verify, probe, switch).
    EXPECT_EQ(row.retry_at, row.step == InstallStep::trial ? InstallStep::verify : row.step);
  }
  using enum InstallStep;
  auto rows_where = [](auto pred) {
    std::vector<InstallStep> out;
    for (const auto& r : kInstallSteps) {
      if (pred(r)) out.push_back(r.step);
    }
    return out;
  };
  EXPECT_EQ(rows_where([](const auto& r) { return r.rolls_back; }),
            (std::vector<InstallStep>{switch_slot, trial}));
  EXPECT_EQ(rows_where([](const auto& r) { return r.gate_judges; }),
            (std::vector<InstallStep>{probe, trial}));
  EXPECT_EQ(rows_where([](const auto& r) { return r.bytes == BytesCheck::downloaded; }),
            (std::vector<InstallStep>{download}));
  EXPECT_EQ(rows_where([](const auto& r) { return r.bytes == BytesCheck::written; }),
            (std::vector<InstallStep>{stage, verify, ready}));
  EXPECT_EQ(rows_where([](const auto& r) { return r.crashes == CrashCount::progress; }),
            (std::vector<InstallStep>{download}));
  // Waiting at ready and the commit's one transaction cannot be the version's fault.
  EXPECT_EQ(rows_where([](const auto& r) { return r.crashes == CrashCount::never; }),
            (std::vector<InstallStep>{ready, commit}));
}

TEST(InstallTable, ClassesComeFromTheRow) {
  const Error sha(Errc::verification, "sha256 mismatch");
  const Error tar(Errc::parse, "bad tar");
  const Error gone(Errc::not_found, "no base file");
  const Error net(Errc::network, "reset");
  const auto& download = install_row(InstallStep::download);
  const auto& stage = install_row(InstallStep::stage);
  const auto& probe = install_row(InstallStep::probe);
  EXPECT_EQ(classify_failure(download, sha, false), FailureClass::transient);
  EXPECT_EQ(classify_failure(download, tar, false), FailureClass::local);     // not the bytes
  EXPECT_EQ(classify_failure(download, tar, true), FailureClass::permanent);  // as the stage
  EXPECT_EQ(classify_failure(stage, sha, false), FailureClass::permanent);
  EXPECT_EQ(classify_failure(stage, net, false), FailureClass::local);
  // A delta plan: its bytes or base being wrong says nothing about the version.
  EXPECT_EQ(classify_failure(download, sha, false, true), FailureClass::bad_delta);
  EXPECT_EQ(classify_failure(stage, gone, false, true), FailureClass::bad_delta);
  EXPECT_EQ(classify_failure(stage, net, false, true), FailureClass::local);
  // The gate judges its own steps, whatever the code.
  EXPECT_EQ(classify_failure(probe, sha, false, false, FailureClass::transient),
            FailureClass::transient);
  EXPECT_EQ(classify_failure(install_row(InstallStep::switch_slot), sha, false),
            FailureClass::local);

  // A modified table classifies differently: the class is read from the row.
  InstallStepRow quiet = download;
  quiet.bytes = BytesCheck::none;
  EXPECT_EQ(classify_failure(quiet, sha, false), FailureClass::local);
  InstallStepRow strict = download;
  strict.bytes = BytesCheck::written;
  EXPECT_EQ(classify_failure(strict, sha, false), FailureClass::permanent);
}

class InstallFromTable : public testing::InstallFixture {
 protected:
  // A plan whose download delivers bytes that do not match the signed sha256.
  InstallPlan bad_bytes() {
    auto plan = pack("1.0.0", "weights");
    plan.package = work_ / "downloads" / "p.part";
    plan.fetch = [](const DownloadProgress&) -> Result<std::uint64_t> {
      return fail(Errc::verification, "sha256 of the download differs from the signed one");
    };
    return plan;
  }
  std::array<InstallStepRow, std::size(kInstallSteps)> table() const {
    std::array<InstallStepRow, std::size(kInstallSteps)> t;
    std::copy(std::begin(kInstallSteps), std::end(kInstallSteps), t.begin());
    return t;
  }
};

// The stock table: a download of wrong bytes is transient, counted for a retry after a backoff.
TEST_F(InstallFromTable, StockTableRetriesWrongDownloadedBytes) {
  InstallFailure failure;
  auto r = run_install(*state_, *slots_, bad_bytes(), {}, &failure);
  ASSERT_FALSE(r);
  EXPECT_EQ(failure.failure_class, FailureClass::transient);
  EXPECT_FALSE(failure.blocked);
  EXPECT_EQ(failure.failures, 1);
  EXPECT_FALSE(*state_->is_blocked("detector", "1.0.0"));
  ASSERT_TRUE(state_->install("detector")->has_value());
}

// The same failure with the download row's transient policy set to block: blocked at once.
TEST_F(InstallFromTable, PolicyIsReadFromTheRow) {
  auto t = table();
  t[0].on_transient = OnFailure::block;
  InstallOptions opts;
  opts.steps = t;
  InstallFailure failure;
  auto r = run_install(*state_, *slots_, bad_bytes(), opts, &failure);
  ASSERT_FALSE(r);
  EXPECT_EQ(failure.failure_class, FailureClass::transient);
  EXPECT_TRUE(failure.blocked);
  EXPECT_EQ(failure.failures, 0);  // not counted: the row does not retry
  EXPECT_TRUE(*state_->is_blocked("detector", "1.0.0"));
  EXPECT_FALSE(state_->install("detector")->has_value());
}

// With the download row saying it checks no bytes, the same failure is local: resumed at the
// next poll, never counted.
TEST_F(InstallFromTable, ClassIsReadFromTheRow) {
  auto t = table();
  t[0].bytes = BytesCheck::none;
  InstallOptions opts;
  opts.steps = t;
  InstallFailure failure;
  auto r = run_install(*state_, *slots_, bad_bytes(), opts, &failure);
  ASSERT_FALSE(r);
  EXPECT_EQ(failure.failure_class, FailureClass::local);
  EXPECT_FALSE(state_->retry("detector", "1.0.0")->has_value());
  auto rec = *state_->install("detector");
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->step, "download");
}

// The retry edge is read from the row too: a transient stage failure resumed where retry_at says.
TEST_F(InstallFromTable, RetryResumesWhereTheRowSays) {
  auto t = table();
  t[0].retry_at = InstallStep::stage;  // a table where a bad download resumes at stage
  InstallOptions opts;
  opts.steps = t;
  ASSERT_FALSE(run_install(*state_, *slots_, bad_bytes(), opts));
  auto rec = *state_->install("detector");
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->step, "stage");
}

TEST_F(InstallFromTable, TableWithoutARowForEveryStepIsRefused) {
  auto t = table();
  InstallOptions opts;
  opts.steps = std::span<const InstallStepRow>(t.data(), t.size() - 1);  // no commit
  auto r = run_install(*state_, *slots_, pack("1.0.0", "weights"), opts);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::internal);
  EXPECT_FALSE(state_->install("detector")->has_value());  // nothing begun
}

}  // namespace
}  // namespace mota::agent
