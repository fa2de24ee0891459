// The install state machine in process, with real packages, slots and database: success, the
// signed tree digest enforced, the loop guard (crashes during a download that makes progress do
// not count; an interrupted trial is tried again), the failure classes (retried with backoff,
// then blocked; blocked at once; never counted), abandoning a stale journal.

#include "agent/install.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <stdexcept>

#include "storage/package.hpp"
#include "tests/agent/install_fixture.hpp"
#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

namespace stdfs = std::filesystem;

class Install : public testing::InstallFixture {
 protected:
  InstallPlan pack(const std::string& version) {
    return InstallFixture::pack(version, "weights " + version);
  }
};

TEST(InstallSteps, TableIsOneChainEndingInCommit) {
  EXPECT_EQ(kInstallSteps[0].name, "download");
  for (std::size_t i = 0; i + 1 < std::size(kInstallSteps); ++i) {
    EXPECT_EQ(kInstallSteps[i].next, kInstallSteps[i + 1].step);
  }
  EXPECT_EQ(std::end(kInstallSteps)[-1].name, "commit");
  EXPECT_EQ(std::end(kInstallSteps)[-1].next, std::nullopt);
  EXPECT_TRUE(known_install_step("verify"));
  EXPECT_FALSE(known_install_step("unpack"));
}

TEST_F(Install, InstallsIntoInactiveSlotAndCommits) {
  std::vector<std::string> seen;
  InstallOptions opts;
  opts.before_step = [&](std::string_view s) { seen.emplace_back(s); };
  auto r = run_install(*state_, *slots_, pack("1.0.0"), opts);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->slot, Slot::a);
  EXPECT_EQ(seen, (std::vector<std::string>{"download", "stage", "verify", "probe", "ready",
                                            "switch", "trial", "commit"}));
  EXPECT_EQ(current(), Slot::a);
  auto active = state_->active("detector");
  ASSERT_TRUE(active && *active);
  EXPECT_TRUE((*active)->committed);
  auto slot = state_->slot("detector", Slot::a);
  ASSERT_TRUE(slot && *slot);
  EXPECT_EQ((*slot)->version, "1.0.0");
  EXPECT_EQ((*slot)->status, SlotStatus::valid);
  auto rec = state_->install("detector");
  ASSERT_TRUE(rec);
  EXPECT_FALSE(*rec);

  r = run_install(*state_, *slots_, pack("2.0.0"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(current(), Slot::b);
  EXPECT_EQ(test::read_file(slots_->path(Slot::a) / "model.onnx"), "weights 1.0.0");
}

TEST_F(Install, WrongSignedTreeDigestAbortsBlocksAndLeavesActiveAlone) {
  ASSERT_TRUE(run_install(*state_, *slots_, pack("1.0.0")));
  auto plan = pack("2.0.0");
  plan.tree_digest = std::string(64, '0');
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_NE(r.error().message().find("is not the signed " + std::string(64, '0')),
            std::string::npos)
      << r.error().message();
  EXPECT_EQ(current(), Slot::a);
  EXPECT_EQ(test::read_file(slots_->path(Slot::a) / "model.onnx"), "weights 1.0.0");
  EXPECT_FALSE(stdfs::exists(slots_->path(Slot::b)));  // no unverified tree left behind
  auto blocked = state_->is_blocked("detector", "2.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_TRUE(*blocked);
  auto rec = state_->install("detector");
  ASSERT_TRUE(rec);
  EXPECT_FALSE(*rec);
}

TEST_F(Install, PackageOfAnotherVersionIsRejected) {
  auto plan = pack("1.0.0");
  plan.to_version = "1.0.1";  // the package says 1.0.0
  plan.tree_digest.clear();
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("model.json says detector 1.0.0, expected detector 1.0.1"),
            std::string::npos)
      << r.error().message();
  EXPECT_FALSE(current());
}

// A fetch that writes `bytes` into plan.package in small pieces, announcing each like the
// downloader does (optionally a first pass of `first_pass` bytes, then a restart from byte 0).
std::function<Result<std::uint64_t>(const DownloadProgress&)> piecewise_fetch(
    std::filesystem::path to, std::string bytes, std::string first_pass = "") {
  return [to, bytes, first_pass](const DownloadProgress& progress) -> Result<std::uint64_t> {
    auto write_pass = [&](const std::string& data) {
      std::FILE* f = std::fopen(to.c_str(), "wb");
      for (std::size_t off = 0; off < data.size(); off += 333) {
        std::size_t n = std::min<std::size_t>(333, data.size() - off);
        std::fwrite(data.data() + off, 1, n, f);
        std::fflush(f);
        progress(off + n, bytes.size());
      }
      std::fclose(f);
    };
    if (!first_pass.empty()) {
      write_pass(first_pass);
      progress(0, bytes.size());  // the restart, announced before the truncation
    }
    write_pass(bytes);
    return bytes.size() + first_pass.size();
  };
}

TEST_F(Install, FetchedPackageIsUnpackedWhileItDownloads) {
  auto plan = pack("1.0.0");
  auto bytes = test::read_file(plan.package);
  plan.package = work_ / "downloads" / "p.part";
  stdfs::create_directories(plan.package.parent_path());
  plan.fetch = piecewise_fetch(plan.package, bytes);
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->streamed);
  EXPECT_EQ(r->bytes, bytes.size());
  EXPECT_EQ(current(), r->slot);
  EXPECT_EQ(test::read_file(slots_->path(r->slot) / "model.onnx"), "weights 1.0.0");
  auto tree = slots_->verify(r->slot);
  ASSERT_TRUE(tree) << tree.error().message();
  EXPECT_EQ(tree->tree_digest, plan.tree_digest);
}

TEST_F(Install, RestartedDownloadFallsBackToUnpackingTheCompletePackage) {
  auto plan = pack("1.0.0");
  auto bytes = test::read_file(plan.package);
  plan.package = work_ / "downloads" / "p.part";
  stdfs::create_directories(plan.package.parent_path());
  // The first pass is garbage of the same length: it must never reach the slot.
  plan.fetch = piecewise_fetch(plan.package, bytes, std::string(bytes.size(), 'x'));
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->streamed);
  EXPECT_EQ(current(), r->slot);
  EXPECT_EQ(test::read_file(slots_->path(r->slot) / "model.onnx"), "weights 1.0.0");
}

// An error is not a crash: a download that keeps failing (network down for days) is retried at
// every poll and never blocks the version; the loop guard only counts entries without an outcome.
TEST_F(Install, FailingDownloadIsRetriedAtEveryPollWithoutBlocking) {
  auto plan = pack("1.0.0");
  int calls = 0;
  plan.fetch = [&](const DownloadProgress&) -> Result<std::uint64_t> {
    ++calls;
    return fail(Errc::network, "connection refused");
  };
  for (int i = 1; i <= 6; ++i) {
    auto r = run_install(*state_, *slots_, plan);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::network);
    auto rec = state_->install("detector");
    ASSERT_TRUE(rec && *rec);
    EXPECT_EQ((*rec)->step, "download");
    EXPECT_EQ((*rec)->attempts, 0);  // ended with an outcome
    EXPECT_NE((*rec)->last_error.find("connection refused"), std::string::npos);
  }
  EXPECT_EQ(calls, 6);
  auto blocked = state_->is_blocked("detector", "1.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_FALSE(*blocked);
  // Once the network is back, the same journal finishes the install.
  auto bytes = test::read_file(plan.package);
  plan.package = work_ / "downloads" / "p.part";
  stdfs::create_directories(plan.package.parent_path());
  plan.fetch = piecewise_fetch(plan.package, bytes);
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(current(), r->slot);
}

// Crashes are what the loop guard counts: a step entered over and over without an outcome (here
// the process "dies" in the test hook, after the entry is persisted) blocks the version.
TEST_F(Install, StepThatNeverFinishesTripsTheLoopGuard) {
  auto plan = pack("1.0.0");
  InstallOptions crashing;
  crashing.before_step = [](std::string_view step) {
    if (step == "stage") throw std::runtime_error("simulated crash");
  };
  for (int i = 0; i < 3; ++i) {
    EXPECT_THROW((void)run_install(*state_, *slots_, plan, crashing), std::runtime_error);
  }
  auto r = run_install(*state_, *slots_, plan, crashing);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("step stage entered 4 times (limit 3)"), std::string::npos)
      << r.error().message();
  auto blocked = state_->is_blocked("detector", "1.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_TRUE(*blocked);
  EXPECT_FALSE(current());
}

// The table carries the failure edges: which crashes count, where a retry resumes, which steps
// switch back.
TEST(InstallSteps, TableSaysHowCrashesCountAndWhereRetriesResume) {
  EXPECT_EQ(install_step("download")->crashes, CrashCount::progress);
  for (const char* step : {"stage", "verify", "probe", "switch", "trial"}) {
    EXPECT_EQ(install_step(step)->crashes, CrashCount::always) << step;
  }
  EXPECT_EQ(install_step("commit")->crashes, CrashCount::never);
  EXPECT_EQ(install_step("ready")->crashes, CrashCount::never);  // waiting cannot crash
  EXPECT_EQ(install_step("trial")->retry_at, InstallStep::verify);
  EXPECT_EQ(install_step("probe")->retry_at, InstallStep::probe);
  EXPECT_TRUE(install_step("trial")->rolls_back);
  EXPECT_FALSE(install_step("probe")->rolls_back);
  EXPECT_EQ(install_step("unpack"), nullptr);
}

TEST(InstallSteps, FailureClassesOfTheStepsWithoutTheGate) {
  const Error net(Errc::network, "connection reset");
  const Error sha(Errc::verification, "sha256 mismatch");
  const Error full(Errc::no_space, "disk full");
  EXPECT_EQ(classify_failure("download", net, false), FailureClass::local);
  EXPECT_EQ(classify_failure("download", full, false), FailureClass::local);
  EXPECT_EQ(classify_failure("download", sha, false), FailureClass::transient);
  EXPECT_EQ(classify_failure("download", Error(Errc::too_large, "x"), false),
            FailureClass::transient);
  EXPECT_EQ(classify_failure("download", Error(Errc::parse, "bad tar"), true),
            FailureClass::permanent);
  EXPECT_EQ(classify_failure("stage", Error(Errc::parse, "bad tar"), false),
            FailureClass::permanent);
  EXPECT_EQ(classify_failure("stage", full, false), FailureClass::local);
  EXPECT_EQ(classify_failure("verify", sha, false), FailureClass::permanent);
  EXPECT_EQ(classify_failure("switch", Error(Errc::io, "rename"), false), FailureClass::local);
  EXPECT_EQ(classify_failure("commit", Error(Errc::io, "database"), false), FailureClass::local);
}

// Power cuts during a download that makes progress are not a crash loop: the guard never trips,
// and each entry unpacks alongside the download again.
TEST_F(Install, CrashesDuringAProgressingDownloadNeverBlock) {
  auto plan = pack("1.0.0");
  const auto bytes = test::read_file(plan.package);
  plan.package = work_ / "downloads" / "p.part";
  stdfs::create_directories(plan.package.parent_path());
  plan.fetch = piecewise_fetch(plan.package, bytes);
  int crashes = 0;
  InstallOptions dying;
  dying.before_step = [&](std::string_view step) {
    if (step != "download" || crashes >= 6) return;
    ++crashes;
    std::FILE* f = std::fopen(plan.package.c_str(), "ab");  // some bytes landed, then the cut
    std::fputs("0123456789", f);
    std::fclose(f);
    throw std::runtime_error("power cut");
  };
  for (int i = 0; i < 6; ++i) {
    EXPECT_THROW((void)run_install(*state_, *slots_, plan, dying), std::runtime_error);
  }
  auto r = run_install(*state_, *slots_, plan, dying);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(crashes, 6);
  EXPECT_EQ(current(), r->slot);
  EXPECT_FALSE(*state_->is_blocked("detector", "1.0.0"));
}

// Crashes without progress do not count either, but the next entry downloads without unpacking
// alongside: if the version's bytes were what killed the unpacker, the crash repeats in stage,
// which counts every entry.
TEST_F(Install, CrashesWithoutProgressNeverBlockButMoveTheUnpackToStage) {
  auto plan = pack("1.0.0");
  const auto bytes = test::read_file(plan.package);
  plan.package = work_ / "downloads" / "p.part";
  stdfs::create_directories(plan.package.parent_path());
  plan.fetch = piecewise_fetch(plan.package, bytes);
  int crashes = 0;
  InstallOptions dying;
  dying.before_step = [&](std::string_view step) {
    if (step == "download" && crashes < 6) {
      ++crashes;
      throw std::runtime_error("power cut before any byte landed");
    }
  };
  for (int i = 0; i < 6; ++i) {
    EXPECT_THROW((void)run_install(*state_, *slots_, plan, dying), std::runtime_error);
  }
  auto r = run_install(*state_, *slots_, plan, dying);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->streamed);  // unpacked by the stage step, from the complete file
  EXPECT_EQ(current(), r->slot);
  EXPECT_EQ(test::read_file(slots_->path(r->slot) / "model.onnx"), "weights 1.0.0");
  EXPECT_FALSE(*state_->is_blocked("detector", "1.0.0"));

  // A version whose unpack kills the agent every time: the crash is in stage, which counts.
  auto bad = pack("2.0.0");
  const auto bad_bytes = test::read_file(bad.package);
  bad.package = work_ / "downloads" / "q.part";
  bad.fetch = piecewise_fetch(bad.package, bad_bytes);
  InstallOptions unpack_kills;
  unpack_kills.before_step = [](std::string_view step) {
    if (step == "stage") throw std::runtime_error("the unpacker crashed");
  };
  std::string last;
  for (int i = 0; i < 10 && last.empty(); ++i) {
    try {
      auto again = run_install(*state_, *slots_, bad, unpack_kills);
      ASSERT_FALSE(again);
      last = again.error().message();
    } catch (const std::runtime_error&) {
    }
  }
  EXPECT_NE(last.find("step stage entered 4 times (limit 3)"), std::string::npos) << last;
  EXPECT_TRUE(*state_->is_blocked("detector", "2.0.0"));
}

// An agent that dies during the trial (a power cut) tries the trial again at its next start, as
// a bootloader boots a new slot again; a version that keeps taking the device down is rolled back
// and blocked once the guard runs out.
TEST_F(Install, InterruptedTrialIsTriedAgainThenRolledBackByTheGuard) {
  ASSERT_TRUE(run_install(*state_, *slots_, pack("1.0.0")));
  int deaths = 0;
  InstallOptions dying;
  dying.before_step = [&](std::string_view step) {
    if (step == "trial" && deaths < 2) {
      ++deaths;
      throw std::runtime_error("power cut");
    }
  };
  auto plan = pack("2.0.0");
  plan.from_version = "1.0.0";
  for (int i = 0; i < 2; ++i) {
    EXPECT_THROW((void)run_install(*state_, *slots_, plan, dying), std::runtime_error);
    EXPECT_EQ(current(), Slot::b);  // switched, on trial
  }
  auto r = run_install(*state_, *slots_, plan, dying);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(current(), Slot::b);

  auto plan3 = pack("3.0.0");
  plan3.from_version = "2.0.0";
  InstallOptions always;
  always.before_step = [](std::string_view step) {
    if (step == "trial") throw std::runtime_error("power cut");
  };
  for (int i = 0; i < 3; ++i) {
    EXPECT_THROW((void)run_install(*state_, *slots_, plan3, always), std::runtime_error);
  }
  auto over = run_install(*state_, *slots_, plan3, always);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code(), Errc::rollback);
  EXPECT_NE(over.error().message().find("rolled back to 2.0.0 (slot b)"), std::string::npos)
      << over.error().message();
  EXPECT_NE(over.error().message().find("step trial entered 4 times"), std::string::npos)
      << over.error().message();
  EXPECT_EQ(current(), Slot::b);
  EXPECT_TRUE(*state_->is_blocked("detector", "3.0.0"));
  EXPECT_FALSE(state_->install("detector")->has_value());
}

// The health gate's verdicts, with a stand-in for `mota-runtime probe` that answers like it.
class InstallJudgement : public Install {
 protected:
  // A probe that prints `json` and exits with `code` (or sleeps past the timeout).
  std::unique_ptr<HealthGate> gate(const std::string& json, int code, bool hang = false) {
    const auto script = work_ / ("probe-" + std::to_string(++probes_) + ".sh");
    test::write_file(script, "#!/bin/sh\n" + std::string(hang ? "exec sleep 30\n" : "") + "echo '" +
                                 json + "'\nexit " + std::to_string(code) + "\n");
    stdfs::permissions(script, stdfs::perms::owner_all);
    HealthConfig h;
    h.runtime_binary = script;
    h.probe_timeout = std::chrono::seconds(1);
    return std::make_unique<HealthGate>(h, work_ / "no-runtime.sock");
  }
  InstallOptions options(const HealthGate& g, int max_retries = 2) {
    InstallOptions o;
    o.health = &g;
    o.max_retries = max_retries;
    o.retry_backoff = std::chrono::seconds(60);
    return o;
  }
  int probes_ = 0;
};

TEST_F(InstallJudgement, LatencyBudgetMissedIsRetriedWithBackoffThenBlocked) {
  auto g =
      gate(R"({"ok":false,"step":"latency","reason":"median 40 ms over the budget of 10 ms"})", 9);
  auto plan = pack("1.0.0");
  for (int n = 1; n <= 2; ++n) {
    InstallFailure failure;
    auto r = run_install(*state_, *slots_, plan, options(*g), &failure);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("probe: latency: median 40 ms"), std::string::npos)
        << r.error().message();
    EXPECT_NE(r.error().message().find("(failure " + std::to_string(n) +
                                       " of at most 2 that may pass on retry; next try after"),
              std::string::npos)
        << r.error().message();
    EXPECT_EQ(failure.failure_class, FailureClass::transient);
    EXPECT_FALSE(failure.blocked);
    EXPECT_EQ(failure.failures, n);
    auto retry = *state_->retry("detector", "1.0.0");
    ASSERT_TRUE(retry);
    EXPECT_EQ(retry->failures, n);
    // The backoff doubles: 60 s, then 120 s.
    EXPECT_EQ((retry->next_at - retry->updated_at).count(), 60 << (n - 1));
    auto rec = *state_->install("detector");
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->step, "probe");  // resumes at the probe: nothing downloaded or staged again
    EXPECT_FALSE(*state_->is_blocked("detector", "1.0.0"));
  }
  InstallFailure failure;
  auto r = run_install(*state_, *slots_, plan, options(*g), &failure);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("failed 3 times in a way that may pass on retry, more than "
                                     "max_retries = 2: version blocked"),
            std::string::npos)
      << r.error().message();
  EXPECT_TRUE(failure.blocked);
  EXPECT_TRUE(*state_->is_blocked("detector", "1.0.0"));
  EXPECT_FALSE(state_->retry("detector", "1.0.0")->has_value());
  EXPECT_FALSE(state_->install("detector")->has_value());
  EXPECT_FALSE(stdfs::exists(slots_->path(Slot::a)));  // nothing unproven left behind
}

TEST_F(InstallJudgement, WrongOutputIsBlockedAtOnce) {
  auto g = gate(R"({"ok":false,"step":"output","reason":"scores[0] is 0.5, expected 0.1"})", 8);
  InstallFailure failure;
  auto r = run_install(*state_, *slots_, pack("1.0.0"), options(*g), &failure);
  ASSERT_FALSE(r);
  EXPECT_EQ(failure.failure_class, FailureClass::permanent);
  EXPECT_TRUE(failure.blocked);
  EXPECT_TRUE(*state_->is_blocked("detector", "1.0.0"));
  auto blocked = *state_->blocked("detector");
  ASSERT_EQ(blocked.size(), 1u);
  EXPECT_NE(blocked[0].reason.find("probe: output: scores[0] is 0.5"), std::string::npos)
      << blocked[0].reason;
  EXPECT_FALSE(state_->retry("detector", "1.0.0")->has_value());
}

// The probe's answer is read without trusting its types (nlohmann's value() threw type_error on
// a number where a string belongs, out of the install): a verdict whose step is not a string is
// not a verdict but a probe that could not run; a reason of another type is left out.
TEST_F(InstallJudgement, ProbeAnswerOfOtherTypesIsAnErrorNotAnException) {
  InstallFailure failure;
  auto odd_step = gate(R"({"ok":false,"step":7,"reason":"x"})", 8);
  auto r = run_install(*state_, *slots_, pack("1.0.0"), options(*odd_step), &failure);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("mota-runtime exited with 8: {\"ok\":false,\"step\":7"),
            std::string::npos)
      << r.error().message();
  EXPECT_EQ(failure.failure_class, FailureClass::local);
  EXPECT_FALSE(*state_->is_blocked("detector", "1.0.0"));

  auto odd_reason = gate(R"({"ok":false,"step":"output","reason":{"max_diff":0.5}})", 8);
  r = run_install(*state_, *slots_, pack("1.0.0"), options(*odd_reason), &failure);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("probe: output: "), std::string::npos) << r.error().message();
  EXPECT_EQ(failure.failure_class, FailureClass::permanent);
  EXPECT_TRUE(*state_->is_blocked("detector", "1.0.0"));
}

TEST_F(InstallJudgement, NoVerdictInTimeIsTransientAndAProbeThatCannotRunIsNotCounted) {
  auto slow = gate("{}", 0, /*hang=*/true);
  InstallFailure failure;
  auto r = run_install(*state_, *slots_, pack("1.0.0"), options(*slow), &failure);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("no verdict within 1s"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(failure.failure_class, FailureClass::transient);
  EXPECT_EQ((*state_->retry("detector", "1.0.0"))->failures, 1);

  // Exit 1: the probe could not run at all. Nothing learnt about the model: retried at every
  // poll, never counted, never blocked.
  auto broken = gate("", 1);
  for (int i = 0; i < 5; ++i) {
    r = run_install(*state_, *slots_, pack("1.0.0"), options(*broken), &failure);
    ASSERT_FALSE(r);
    EXPECT_EQ(failure.failure_class, FailureClass::local);
  }
  EXPECT_EQ((*state_->retry("detector", "1.0.0"))->failures, 1);
  EXPECT_FALSE(*state_->is_blocked("detector", "1.0.0"));
  EXPECT_EQ((*state_->install("detector"))->step, "probe");
}

TEST_F(Install, JournalOfAnotherVersionIsAbandonedWithoutBlocking) {
  auto stale = pack("1.0.0");
  stale.fetch = [](const DownloadProgress&) -> Result<std::uint64_t> {
    return fail(Errc::network, "down");
  };
  ASSERT_FALSE(run_install(*state_, *slots_, stale));
  auto r = run_install(*state_, *slots_, pack("1.1.0"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(current(), Slot::a);
  auto blocked = state_->is_blocked("detector", "1.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_FALSE(*blocked);
}

// The switch gate (install windows, update locks): "not now" leaves the new version staged and
// probed with the journal at ready, counts nothing, and touches neither `current` nor the
// active slot; the next run asks again from ready (no download, stage or probe again), re-reads
// the slot from disk, and switches.
TEST_F(Install, SwitchGateDefersAtReadyAndTheNextRunSwitchesFromThere) {
  ASSERT_TRUE(run_install(*state_, *slots_, pack("1.0.0")));
  std::string gate = "outside this device's install window";
  std::vector<std::string> seen;
  InstallOptions opts;
  opts.may_switch = [&] { return gate; };
  opts.before_step = [&](std::string_view s) { seen.emplace_back(s); };
  InstallFailure failure;
  for (int poll = 0; poll < 3; ++poll) {
    auto r = run_install(*state_, *slots_, pack("2.0.0"), opts, &failure);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::deferred);
    EXPECT_NE(r.error().message().find("outside this device's install window"), std::string::npos)
        << r.error().message();
    EXPECT_TRUE(failure.deferred);
    EXPECT_FALSE(failure.blocked);
    EXPECT_EQ(failure.step, InstallStep::ready);
    EXPECT_EQ(current(), Slot::a);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"download", "stage", "verify", "probe", "ready",
                                            "ready", "ready"}));
  auto journal = state_->install("detector");
  ASSERT_TRUE(journal && *journal);
  EXPECT_EQ((*journal)->step, "ready");
  auto retries = state_->retry("detector", "2.0.0");
  ASSERT_TRUE(retries);
  EXPECT_FALSE(*retries) << "a deferral counted as a failure";
  auto blocked = state_->is_blocked("detector", "2.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_FALSE(*blocked);

  gate.clear();
  seen.clear();
  auto r = run_install(*state_, *slots_, pack("2.0.0"), opts, &failure);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(seen, (std::vector<std::string>{"ready", "switch", "trial", "commit"}));
  EXPECT_EQ(current(), Slot::b);
}

// Days may pass at ready: a staged slot changed on disk meanwhile is not switched to (judged as
// at verify: blocked), and the active model keeps serving.
TEST_F(Install, ASlotChangedWhileWaitingIsNotSwitchedTo) {
  ASSERT_TRUE(run_install(*state_, *slots_, pack("1.0.0")));
  std::string gate = "the update lock is held";
  InstallOptions opts;
  opts.may_switch = [&] { return gate; };
  InstallFailure failure;
  ASSERT_FALSE(run_install(*state_, *slots_, pack("2.0.0"), opts, &failure));
  ASSERT_TRUE(failure.deferred);
  test::write_file(slots_->path(Slot::b) / "model.onnx", "weights changed on disk");
  gate.clear();
  auto r = run_install(*state_, *slots_, pack("2.0.0"), opts, &failure);
  ASSERT_FALSE(r);
  EXPECT_FALSE(failure.deferred);
  EXPECT_TRUE(failure.blocked) << r.error().message();
  EXPECT_EQ(failure.step, InstallStep::ready);
  EXPECT_EQ(current(), Slot::a);
}

}  // namespace
}  // namespace mota::agent
