#include "agent/state.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

using test::TempDir;

// A clock the test moves by hand.
struct FakeClock {
  std::int64_t t = 1'700'000'000;
  std::function<TimePoint()> fn() {
    return [this] { return TimePoint(std::chrono::seconds(t)); };
  }
};

StateStore open_store(const std::filesystem::path& dir, StateOptions o = {}) {
  auto s = StateStore::open(dir, std::move(o));
  EXPECT_TRUE(s.has_value()) << s.error().message();
  if (!s) std::abort();
  return std::move(*s);
}

std::int64_t scalar(StateStore& s, const std::string& sql) {
  auto st = s.database().prepare(sql);
  EXPECT_TRUE(st.has_value()) << st.error().message();
  EXPECT_EQ(*st->step(), storage::Step::row);
  return st->column_int64(0);
}

InstallRecord record(const std::string& model, const std::string& to, Slot slot = Slot::b) {
  InstallRecord r;
  r.install_id = "inst-" + model + "-" + to;
  r.model = model;
  r.from_version = "1.0.0";
  r.to_version = to;
  r.target_slot = slot;
  r.step = "download";
  return r;
}

// --- schema -------------------------------------------------------------------------------------

TEST(StateStore, CreatesAgentDbAndAppliesMigrationsOnce) {
  TempDir tmp;
  const int latest = agent_migrations().back().version;
  {
    auto s = open_store(tmp.path());
    EXPECT_TRUE(std::filesystem::exists(tmp / "agent.db"));
    EXPECT_EQ(*storage::schema_version(s.database()), latest);
    ASSERT_TRUE(s.set_tuf_version("root", 3).has_value());
  }
  auto s = open_store(tmp.path());  // re-open: no migration re-run, data kept
  EXPECT_EQ(scalar(s, "SELECT COUNT(*) FROM schema_migrations"),
            static_cast<std::int64_t>(agent_migrations().size()));
  EXPECT_EQ(*s.tuf_version("root"), 3);
  EXPECT_EQ(scalar(s, "SELECT COUNT(*) FROM counters WHERE name = 'outbox_seq'"), 1);
}

TEST(StateStore, ConcurrentFirstOpensMigrateOnce) {
  TempDir tmp;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(4);
  for (std::size_t i = 0; i < errors.size(); ++i) {
    threads.emplace_back([&, i] {
      auto s = StateStore::open(tmp.path());  // one connection per thread
      if (!s) errors[i] = s.error().message();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  auto s = open_store(tmp.path());
  EXPECT_EQ(scalar(s, "SELECT COUNT(*) FROM schema_migrations"),
            static_cast<std::int64_t>(agent_migrations().size()));
}

TEST(StateStore, EmbeddedMigrationsAreTheSqlFiles) {
  ASSERT_FALSE(agent_migrations().empty());
  const auto& m = agent_migrations().front();
  EXPECT_EQ(m.version, 1);
  EXPECT_EQ(m.up, test::read_file(test::source_path("agent/migrations/0001_initial.up.sql")));
  EXPECT_EQ(m.down, test::read_file(test::source_path("agent/migrations/0001_initial.down.sql")));
}

TEST(StateStore, MissingStateDirIsNotFound) {
  TempDir tmp;
  auto s = StateStore::open(tmp / "nope");
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), Errc::not_found);
  EXPECT_FALSE(std::filesystem::exists(tmp / "nope"));
}

TEST(StateStore, StoredDownScriptsUndoTheWholeSchema) {
  TempDir tmp;
  auto s = open_store(tmp.path());
  ASSERT_TRUE(storage::migrate_down_to(s.database(), 0).has_value());
  EXPECT_EQ(scalar(s, "SELECT COUNT(*) FROM sqlite_master WHERE name <> 'schema_migrations'"), 0);
}

// What an agent that was rolled back (A/B of the agent itself) finds: a schema from its future.
TEST(StateStore, NewerSchemaIsMigratedDownWithItsStoredScript) {
  TempDir tmp;
  const int future = agent_migrations().back().version + 1;
  {
    auto s = open_store(tmp.path());
    ASSERT_TRUE(s.block("m", "2.0.0", "health check failed").has_value());
    ASSERT_TRUE(s.database().exec("CREATE TABLE future_things (x)").has_value());
    auto ins = s.database().prepare(
        "INSERT INTO schema_migrations (version, up, down, applied_at) VALUES (?, ?, ?, 0)");
    ASSERT_TRUE(ins.has_value());
    ASSERT_TRUE(ins->bind_all(future, "CREATE TABLE future_things (x)", "DROP TABLE future_things")
                    .has_value());
    ASSERT_TRUE(ins->run().has_value());
  }
  auto s = open_store(tmp.path());
  EXPECT_EQ(*storage::schema_version(s.database()), future - 1);
  EXPECT_EQ(scalar(s, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'future_things'"), 0);
  EXPECT_TRUE(*s.is_blocked("m", "2.0.0"));  // our own data survives
}

TEST(StateStore, NewerSchemaWithoutDownScriptRefusesToOpen) {
  TempDir tmp;
  const int future = agent_migrations().back().version + 1;
  {
    auto s = open_store(tmp.path());
    auto ins = s.database().prepare(
        "INSERT INTO schema_migrations (version, up, down, applied_at) VALUES (?, 'x', '', 0)");
    ASSERT_TRUE(ins.has_value());
    ASSERT_TRUE(ins->bind(1, future).has_value());
    ASSERT_TRUE(ins->run().has_value());
  }
  auto s = StateStore::open(tmp.path());
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), Errc::unsupported);
  EXPECT_NE(s.error().message().find("schema version " + std::to_string(future) +
                                     " is newer than this program knows"),
            std::string::npos)
      << s.error().message();
  EXPECT_NE(s.error().message().find("no stored down script"), std::string::npos);
  auto db = storage::Database::open(tmp / "agent.db");
  ASSERT_TRUE(db.has_value());
  EXPECT_EQ(*storage::schema_version(*db), future);  // untouched
}

// --- slots and active ---------------------------------------------------------------------------

TEST(StateStore, SlotsAndActiveRoundTrip) {
  TempDir tmp;
  FakeClock clock;
  StateOptions o;
  o.clock = clock.fn();
  auto s = open_store(tmp.path(), o);
  EXPECT_EQ(*s.slot("m", Slot::a), std::nullopt);
  EXPECT_EQ(*s.active("m"), std::nullopt);

  ASSERT_TRUE(s.put_slot({"m", Slot::a, "1.0.0", "sha256:aa", SlotStatus::valid, {}}).has_value());
  clock.t += 10;
  ASSERT_TRUE(s.put_slot({"m", Slot::b, "", "", SlotStatus::writing, {}}).has_value());
  ASSERT_TRUE(s.put_slot({"other", Slot::a, "9", "d", SlotStatus::bad, {}}).has_value());
  auto a = *s.slot("m", Slot::a);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->version, "1.0.0");
  EXPECT_EQ(a->tree_digest, "sha256:aa");
  EXPECT_EQ(a->status, SlotStatus::valid);
  EXPECT_EQ(a->updated_at.time_since_epoch().count(), 1'700'000'000);
  auto both = *s.slots("m");
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].slot, Slot::a);
  EXPECT_EQ(both[1].slot, Slot::b);
  EXPECT_EQ(both[1].status, SlotStatus::writing);
  EXPECT_EQ(both[1].updated_at.time_since_epoch().count(), 1'700'000'010);
  // Replace.
  ASSERT_TRUE(s.put_slot({"m", Slot::b, "2.0.0", "sha256:bb", SlotStatus::valid, {}}).has_value());
  EXPECT_EQ((*s.slot("m", Slot::b))->version, "2.0.0");

  ASSERT_TRUE(s.set_active("m", Slot::b, false).has_value());
  auto act = *s.active("m");
  ASSERT_TRUE(act.has_value());
  EXPECT_EQ(act->slot, Slot::b);
  EXPECT_FALSE(act->committed);
  ASSERT_TRUE(s.commit_active("m").has_value());
  EXPECT_TRUE((*s.active("m"))->committed);
  auto missing = s.commit_active("nobody");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), Errc::not_found);
  EXPECT_EQ(s.all_active()->size(), 1u);
}

TEST(StateStore, SchemaRejectsInvalidRowsWritten) {
  TempDir tmp;
  auto s = open_store(tmp.path());
  // The CHECK constraints guard against a buggy writer (including a raw one).
  auto st = s.database().exec(
      "INSERT INTO slots (model, slot, status, updated_at) VALUES ('m', 'c', 'valid', 0)");
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().code(), Errc::invalid_argument);
  EXPECT_NE(st.error().message().find("agent.db: INSERT INTO slots"), std::string::npos);
}

// --- install journal ----------------------------------------------------------------------------

TEST(StateStore, JournalRoundTripAndLoopGuard) {
  TempDir tmp;
  FakeClock clock;
  StateOptions o;
  o.clock = clock.fn();
  {
    auto s = open_store(tmp.path(), o);
    ASSERT_TRUE(s.begin_install(record("m", "2.0.0")).has_value());
    auto again = s.begin_install(record("m", "3.0.0"));
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error().code(), Errc::already_exists);
    EXPECT_NE(again.error().message().find("inst-m-2.0.0 of 2.0.0 is still in progress"),
              std::string::npos)
        << again.error().message();

    auto r = *s.install("m");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->install_id, "inst-m-2.0.0");
    EXPECT_EQ(r->from_version, "1.0.0");
    EXPECT_EQ(r->to_version, "2.0.0");
    EXPECT_EQ(r->target_slot, Slot::b);
    EXPECT_EQ(r->step, "download");
    EXPECT_EQ(r->attempts, 1);
    EXPECT_EQ(r->started_at.time_since_epoch().count(), clock.t);

    clock.t += 5;
    ASSERT_TRUE(s.record_progress("m", 123456789012ull, true).has_value());
    EXPECT_EQ(*s.enter_step("m", "download"), 2);  // entered again without an outcome (a crash)
    // An orderly failure is an outcome: the loop guard starts over.
    ASSERT_TRUE(s.record_error("m", "network: connection reset").has_value());
    EXPECT_EQ((*s.install("m"))->attempts, 0);
    EXPECT_EQ((*s.install("m"))->last_error, "network: connection reset");
    EXPECT_EQ(*s.enter_step("m", "download"), 1);
    EXPECT_EQ(*s.enter_step("m", "download"), 2);
  }
  auto s = open_store(tmp.path(), o);  // the counter survives a restart
  EXPECT_EQ(*s.enter_step("m", "download"), 3);
  EXPECT_EQ(*s.enter_step("m", "unpack"), 1);  // a new step starts at 1
  EXPECT_EQ(*s.enter_step("m", "unpack"), 2);
  auto r = *s.install("m");
  EXPECT_EQ(r->step, "unpack");
  EXPECT_EQ(r->bytes_downloaded, 123456789012ull);
  EXPECT_TRUE(r->used_delta);
  EXPECT_EQ(r->last_error, "network: connection reset");
  EXPECT_EQ(r->started_at.time_since_epoch().count(), clock.t - 5);
  EXPECT_EQ(r->updated_at.time_since_epoch().count(), clock.t);

  auto none = s.enter_step("ghost", "download");
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), Errc::not_found);
  EXPECT_FALSE(s.enter_step("m", "").has_value());
  EXPECT_FALSE(s.record_progress("ghost", 1, false).has_value());
  EXPECT_EQ(s.installs()->size(), 1u);
}

// The loop guard of the download step: an entry that finds the partial file bigger than the
// last entry did made progress (a power cut during a download that moves), so its count starts
// again; entries without progress count as crashes.
TEST(StateStore, DownloadEntriesCountOnlyWithoutProgress) {
  TempDir tmp;
  auto s = open_store(tmp.path());
  auto r = record("m", "2.0.0");
  r.bytes_downloaded = 1000;  // what the partial held at the first entry
  ASSERT_TRUE(s.begin_install(r).has_value());
  EXPECT_EQ(*s.enter_step("m", "download", 1000), 2);  // no progress: a crash counts
  EXPECT_EQ(*s.enter_step("m", "download", 5000), 1);  // grew: starts again
  EXPECT_EQ((*s.install("m"))->bytes_downloaded, 5000u);
  EXPECT_EQ(*s.enter_step("m", "download", 9000), 1);
  EXPECT_EQ(*s.enter_step("m", "download", 9000), 2);
  EXPECT_EQ(*s.enter_step("m", "download", 9000), 3);
  EXPECT_EQ(*s.enter_step("m", "download", 4000), 4);  // smaller (restarted): no progress
  EXPECT_EQ(*s.enter_step("m", "download", 4001), 1);
  // Another step: 1, with or without a measure of progress.
  EXPECT_EQ(*s.enter_step("m", "stage"), 1);
  EXPECT_EQ(*s.enter_step("m", "stage"), 2);
  EXPECT_EQ(*s.enter_step("m", "download", 0), 1);
}

TEST(StateStore, RewindPutsTheJournalBackForAnotherTry) {
  TempDir tmp;
  auto s = open_store(tmp.path());
  ASSERT_TRUE(s.begin_install(record("m", "2.0.0")).has_value());
  EXPECT_EQ(*s.enter_step("m", "trial"), 1);
  EXPECT_EQ(*s.enter_step("m", "trial"), 2);
  ASSERT_TRUE(s.rewind_install("m", "verify", "trial: soak: p99 latency").has_value());
  auto r = *s.install("m");
  EXPECT_EQ(r->step, "verify");
  EXPECT_EQ(r->attempts, 0);
  EXPECT_EQ(r->last_error, "trial: soak: p99 latency");
  EXPECT_EQ(*s.enter_step("m", "verify"), 1);
  EXPECT_EQ(s.rewind_install("ghost", "verify", "x").error().code(), Errc::not_found);
  EXPECT_EQ(s.rewind_install("m", "", "x").error().code(), Errc::invalid_argument);
}

// Failures that may pass on retry: counted per version across restarts, with the backoff the
// caller computes; cleared by blocking the version, by a successful install and by unblock.
TEST(StateStore, RetriesCountAcrossRestartsAndClear) {
  TempDir tmp;
  FakeClock clock;
  StateOptions o;
  o.clock = clock.fn();
  auto delay = [](int n) { return std::chrono::seconds(60 << (n - 1)); };
  {
    auto s = open_store(tmp.path(), o);
    EXPECT_FALSE(s.retry("m", "2.0.0")->has_value());
    auto r = s.count_failure("m", "2.0.0", "probe", "probe: latency: 300 ms", delay);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->failures, 1);
    EXPECT_EQ(r->next_at.time_since_epoch().count(), clock.t + 60);
    clock.t += 100;
  }
  auto s = open_store(tmp.path(), o);  // a restart keeps the count
  auto r = s.count_failure("m", "2.0.0", "trial", "trial: soak: p99", delay);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->failures, 2);
  EXPECT_EQ(r->next_at.time_since_epoch().count(), clock.t + 120);
  ASSERT_TRUE(s.count_failure("m", "3.0.0", "probe", "x", delay));
  ASSERT_TRUE(s.count_failure("n", "2.0.0", "probe", "x", delay));
  auto got = *s.retry("m", "2.0.0");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->step, "trial");
  EXPECT_EQ(got->last_error, "trial: soak: p99");
  EXPECT_EQ(s.retries("m")->size(), 2u);

  // Blocking 2.0.0 forgets its retries (only its own).
  ASSERT_TRUE(s.begin_install(record("m", "2.0.0")).has_value());
  ASSERT_TRUE(s.abort_install("m", "failed 4 times").has_value());
  EXPECT_FALSE(s.retry("m", "2.0.0")->has_value());
  EXPECT_TRUE(s.retry("m", "3.0.0")->has_value());
  // A successful install of the model forgets all of its retries.
  ASSERT_TRUE(s.begin_install(record("m", "3.0.0")).has_value());
  ASSERT_TRUE(s.put_slot({"m", Slot::b, "3.0.0", "d3", SlotStatus::writing, {}}).has_value());
  ASSERT_TRUE(s.complete_install("m").has_value());
  EXPECT_TRUE(s.retries("m")->empty());
  EXPECT_EQ(s.retries("n")->size(), 1u);
}

TEST(StateStore, UnblockLiftsOneOrEveryVersionAndForgetsRetries) {
  TempDir tmp;
  FakeClock clock;
  StateOptions o;
  o.clock = clock.fn();
  auto s = open_store(tmp.path(), o);
  ASSERT_TRUE(s.block("m", "2.0.0", "probe: output").has_value());
  clock.t += 10;
  ASSERT_TRUE(s.block("m", "2.1.0", "trial: hook").has_value());
  ASSERT_TRUE(s.block("n", "1.0.0", "other").has_value());
  ASSERT_TRUE(s.count_failure("m", "2.2.0", "probe", "latency", {}));
  auto all = *s.all_blocked();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].version, "2.0.0");
  EXPECT_EQ(all[1].version, "2.1.0");
  EXPECT_EQ(all[2].model, "n");

  auto none = s.unblock("m", "9.9.9");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(s.all_blocked()->size(), 3u);

  auto one = s.unblock("m", "2.1.0");
  ASSERT_TRUE(one);
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ(one->at(0).reason, "trial: hook");
  EXPECT_TRUE(*s.is_blocked("m", "2.0.0"));
  EXPECT_FALSE(*s.is_blocked("m", "2.1.0"));
  EXPECT_TRUE(s.retry("m", "2.2.0")->has_value());  // another version's retries stay

  auto rest = s.unblock("m", "");
  ASSERT_TRUE(rest);
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_EQ(rest->at(0).version, "2.0.0");
  EXPECT_TRUE(s.blocked("m")->empty());
  EXPECT_TRUE(s.retries("m")->empty());
  EXPECT_TRUE(*s.is_blocked("n", "1.0.0"));
}

TEST(StateStore, CompleteInstallSwitchesCommitsAndClearsBlocklist) {
  TempDir tmp;
  auto s = open_store(tmp.path());
  ASSERT_TRUE(s.block("m", "1.5.0", "health check failed").has_value());
  ASSERT_TRUE(s.block("n", "1.5.0", "other model").has_value());
  ASSERT_TRUE(s.set_active("m", Slot::a, true).has_value());
  ASSERT_TRUE(s.begin_install(record("m", "2.0.0", Slot::b)).has_value());

  // The target slot must have been written first.
  auto early = s.complete_install("m");
  ASSERT_FALSE(early.has_value());
  EXPECT_EQ(early.error().code(), Errc::not_found);
  EXPECT_TRUE(s.install("m")->has_value());  // nothing changed
  EXPECT_EQ((*s.active("m"))->slot, Slot::a);
  EXPECT_TRUE(*s.is_blocked("m", "1.5.0"));

  ASSERT_TRUE(s.put_slot({"m", Slot::b, "2.0.0", "d2", SlotStatus::writing, {}}).has_value());
  ASSERT_TRUE(s.complete_install("m").has_value());
  EXPECT_FALSE(s.install("m")->has_value());
  EXPECT_EQ((*s.slot("m", Slot::b))->status, SlotStatus::valid);
  auto act = *s.active("m");
  EXPECT_EQ(act->slot, Slot::b);
  EXPECT_TRUE(act->committed);
  EXPECT_FALSE(*s.is_blocked("m", "1.5.0"));
  EXPECT_TRUE(*s.is_blocked("n", "1.5.0"));
  EXPECT_EQ(s.complete_install("m").error().code(), Errc::not_found);
}

TEST(StateStore, AbortInstallMarksSlotBadAndBlocksVersion) {
  TempDir tmp;
  auto s = open_store(tmp.path());
  ASSERT_TRUE(s.set_active("m", Slot::a, true).has_value());
  ASSERT_TRUE(s.begin_install(record("m", "2.0.0", Slot::b)).has_value());
  ASSERT_TRUE(s.abort_install("m", "health check failed: latency 900 ms").has_value());
  EXPECT_FALSE(s.install("m")->has_value());
  auto b = *s.slot("m", Slot::b);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->status, SlotStatus::bad);
  EXPECT_EQ((*s.active("m"))->slot, Slot::a);
  auto blocked = *s.blocked("m");
  ASSERT_EQ(blocked.size(), 1u);
  EXPECT_EQ(blocked[0].version, "2.0.0");
  EXPECT_EQ(blocked[0].reason, "health check failed: latency 900 ms");

  // A download failure: no block.
  ASSERT_TRUE(s.begin_install(record("m", "2.1.0", Slot::b)).has_value());
  ASSERT_TRUE(s.abort_install("m", "").has_value());
  EXPECT_FALSE(*s.is_blocked("m", "2.1.0"));
}

// --- blocklist and tuf --------------------------------------------------------------------------

TEST(StateStore, BlocklistAddCheckClear) {
  TempDir tmp;
  auto s = open_store(tmp.path());
  EXPECT_FALSE(*s.is_blocked("m", "2.0.0"));
  ASSERT_TRUE(s.block("m", "2.0.0", "rolled back").has_value());
  ASSERT_TRUE(s.block("m", "2.0.0", "rolled back again").has_value());  // idempotent
  ASSERT_TRUE(s.block("m", "2.1.0", "crashed").has_value());
  EXPECT_TRUE(*s.is_blocked("m", "2.0.0"));
  EXPECT_FALSE(*s.is_blocked("m", "2.0.1"));
  EXPECT_FALSE(*s.is_blocked("other", "2.0.0"));
  EXPECT_EQ(s.blocked("m")->size(), 2u);
  ASSERT_TRUE(s.clear_blocklist("m").has_value());
  EXPECT_FALSE(*s.is_blocked("m", "2.0.0"));
  EXPECT_TRUE(s.blocked("m")->empty());
}

TEST(StateStore, TufVersions) {
  TempDir tmp;
  auto s = open_store(tmp.path());
  EXPECT_EQ(*s.tuf_version("root"), std::nullopt);
  ASSERT_TRUE(s.set_tuf_version("root", 2).has_value());
  ASSERT_TRUE(s.set_tuf_version("timestamp", 40).has_value());
  ASSERT_TRUE(s.set_tuf_version("timestamp", 41).has_value());
  auto all = *s.tuf_versions();
  EXPECT_EQ(all.size(), 2u);
  EXPECT_EQ(all["timestamp"], 41);
  EXPECT_EQ(all["root"], 2);
}

// --- outbox -------------------------------------------------------------------------------------

TEST(StateStore, OutboxOrderAckAndSeqNeverReused) {
  TempDir tmp;
  {
    auto s = open_store(tmp.path());
    for (int i = 1; i <= 5; ++i) {
      auto r = s.enqueue(i % 2 ? OutboxKind::event : OutboxKind::heartbeat,
                         R"({"n":)" + std::to_string(i) + "}");
      ASSERT_TRUE(r.has_value()) << r.error().message();
      EXPECT_EQ(r->seq, i);
      EXPECT_EQ(r->dropped_heartbeats, 0u);
    }
    auto items = *s.peek(3);
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[0].seq, 1);
    EXPECT_EQ(items[0].kind, OutboxKind::event);
    EXPECT_EQ(items[1].kind, OutboxKind::heartbeat);
    EXPECT_EQ(items[2].body, R"({"n":3})");
    ASSERT_TRUE(s.ack(3).has_value());
    items = *s.peek(10);
    ASSERT_EQ(items.size(), 2u);
    EXPECT_EQ(items[0].seq, 4);
    ASSERT_TRUE(s.ack(5).has_value());
    EXPECT_TRUE(s.peek(10)->empty());
    EXPECT_EQ(s.enqueue(OutboxKind::event, "{}")->seq, 6);  // not reused after deletes

    auto future = s.ack(7);
    ASSERT_FALSE(future.has_value());
    EXPECT_EQ(future.error().code(), Errc::invalid_argument);
    EXPECT_EQ(s.peek(10)->size(), 1u);  // nothing deleted
  }
  auto s = open_store(tmp.path());
  ASSERT_TRUE(s.ack(6).has_value());
  EXPECT_EQ(s.enqueue(OutboxKind::event, "{}")->seq, 7);  // across reopen, after acking all
  auto stats = *s.outbox_stats();
  EXPECT_EQ(stats.rows, 1u);
  EXPECT_EQ(stats.bytes, 2u);
  EXPECT_EQ(stats.last_seq, 7);
}

TEST(StateStore, OutboxBoundsDropOldestHeartbeatsNeverEvents) {
  TempDir tmp;
  StateOptions o;
  o.outbox.max_rows = 4;
  o.outbox.max_bytes = 1000;
  auto s = open_store(tmp.path(), o);
  ASSERT_TRUE(s.enqueue(OutboxKind::heartbeat, "h1").has_value());
  ASSERT_TRUE(s.enqueue(OutboxKind::event, "e2").has_value());
  ASSERT_TRUE(s.enqueue(OutboxKind::heartbeat, "h3").has_value());
  ASSERT_TRUE(s.enqueue(OutboxKind::event, "e4").has_value());
  auto r = *s.enqueue(OutboxKind::event, "e5");  // 5 rows: drop h1
  EXPECT_EQ(r.seq, 5);
  EXPECT_EQ(r.dropped_heartbeats, 1u);
  EXPECT_FALSE(r.over_limit);
  auto seqs = [&] {
    std::vector<std::int64_t> v;
    auto items = s.peek(100);
    EXPECT_TRUE(items.has_value());
    for (auto& i : *items) v.push_back(i.seq);
    return v;
  };
  EXPECT_EQ(seqs(), (std::vector<std::int64_t>{2, 3, 4, 5}));
  r = *s.enqueue(OutboxKind::event, "e6");  // drop h3
  EXPECT_EQ(seqs(), (std::vector<std::int64_t>{2, 4, 5, 6}));
  // Only events left: a new heartbeat is itself the oldest heartbeat and goes.
  r = *s.enqueue(OutboxKind::heartbeat, "h7");
  EXPECT_EQ(r.dropped_heartbeats, 1u);
  EXPECT_FALSE(r.over_limit);
  EXPECT_EQ(seqs(), (std::vector<std::int64_t>{2, 4, 5, 6}));
  // A new event is kept even over the bound, and that is reported.
  r = *s.enqueue(OutboxKind::event, "e8");
  EXPECT_EQ(r.dropped_heartbeats, 0u);
  EXPECT_TRUE(r.over_limit);
  EXPECT_EQ(seqs(), (std::vector<std::int64_t>{2, 4, 5, 6, 8}));

  // Byte bound: one big heartbeat pushes out older heartbeats but no events.
  ASSERT_TRUE(s.ack(8).has_value());
  ASSERT_TRUE(s.enqueue(OutboxKind::heartbeat, std::string(400, 'h')).has_value());  // 9
  ASSERT_TRUE(s.enqueue(OutboxKind::event, std::string(400, 'e')).has_value());      // 10
  r = *s.enqueue(OutboxKind::heartbeat, std::string(300, 'h'));                      // 11
  EXPECT_EQ(r.dropped_heartbeats, 1u);
  EXPECT_EQ(seqs(), (std::vector<std::int64_t>{10, 11}));
  EXPECT_LE(s.outbox_stats()->bytes, 1000u);

  auto huge = s.enqueue(OutboxKind::event, std::string(1001, 'x'));
  ASSERT_FALSE(huge.has_value());
  EXPECT_EQ(huge.error().code(), Errc::too_large);
  EXPECT_EQ(s.outbox_stats()->last_seq, 11);  // no seq consumed
  EXPECT_EQ(seqs(), (std::vector<std::int64_t>{10, 11}));
}

TEST(StateStore, DiskFullIsNoSpaceAndLeavesStateConsistent) {
  TempDir tmp;
  auto s = open_store(tmp.path());
  ASSERT_TRUE(s.enqueue(OutboxKind::event, "before").has_value());
  auto pages = scalar(s, "PRAGMA page_count");
  ASSERT_TRUE(s.database().exec("PRAGMA max_page_count = " + std::to_string(pages + 1)));
  // Pages are 4 KiB: a body of several pages cannot fit.
  auto r = s.enqueue(OutboxKind::event, std::string(100000, 'x'));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::no_space);
  EXPECT_NE(r.error().message().find("agent.db: INSERT INTO outbox: database or disk is full"),
            std::string::npos)
      << r.error().message();
  auto stats = *s.outbox_stats();
  EXPECT_EQ(stats.last_seq, 1);  // the counter bump was rolled back with the insert
  EXPECT_EQ(stats.rows, 1u);
  EXPECT_TRUE(s.database().autocommit());
  ASSERT_TRUE(s.database().exec("PRAGMA max_page_count = 1073741823"));
  EXPECT_EQ(s.enqueue(OutboxKind::event, "after")->seq, 2);
}

// A child writes in a loop and is killed with SIGKILL at a random moment; every committed
// transaction must be there and the database must be consistent.
TEST(StateStore, SigkillMidTransactionsLeavesConsistentDatabase) {
  TempDir tmp;
  { auto s = open_store(tmp.path()); }
  for (int round = 0; round < 3; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      auto s = StateStore::open(tmp.path());
      if (!s) _exit(2);
      (void)s->begin_install(record("m", "2.0.0"));
      for (std::int64_t i = 0;; ++i) {
        auto r = s->enqueue(OutboxKind::event, R"({"i":)" + std::to_string(i) + "}");
        if (!r) _exit(3);
        if (i % 7 == 6 && !s->ack(r->seq - 3)) _exit(4);
        if (!s->enter_step("m", "download")) _exit(5);
        // Report the committed seq to the parent (8 bytes: atomic for a pipe).
        if (write(fds[1], &r->seq, sizeof r->seq) != sizeof r->seq) _exit(6);
      }
    }
    close(fds[1]);
    std::int64_t last_reported = 0, v = 0;
    // Let it run a little (at least a few transactions), then kill it mid-flight.
    while (last_reported < 20 * (round + 1) && read(fds[0], &v, sizeof v) == sizeof v)
      last_reported = v;
    std::this_thread::sleep_for(std::chrono::milliseconds(3 * round));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
    while (read(fds[0], &v, sizeof v) == sizeof v) last_reported = v;
    close(fds[0]);

    auto s = open_store(tmp.path());
    auto check = s.database().prepare("PRAGMA integrity_check");
    ASSERT_TRUE(check.has_value());
    ASSERT_EQ(*check->step(), storage::Step::row);
    EXPECT_EQ(check->column_text(0), "ok");
    auto stats = *s.outbox_stats();
    EXPECT_GE(stats.last_seq, last_reported);  // committed means durable
    // Contiguous seqs ending at the counter: no gap, no half-applied enqueue.
    auto max_seq = scalar(s, "SELECT COALESCE(MAX(seq), 0) FROM outbox");
    auto min_seq = scalar(s, "SELECT COALESCE(MIN(seq), 0) FROM outbox");
    EXPECT_EQ(max_seq, stats.last_seq);
    EXPECT_EQ(static_cast<std::int64_t>(stats.rows), max_seq - min_seq + 1);
    // Every enqueue is followed by one enter_step (attempts starts at 1), so attempts ==
    // 1 + enqueues, less one for each round whose kill fell between the two transactions.
    auto rec = *s.install("m");
    ASSERT_TRUE(rec.has_value());
    EXPECT_LE(rec->attempts, stats.last_seq + 1);
    EXPECT_GE(rec->attempts, stats.last_seq + 1 - (round + 1))
        << rec->attempts << " vs " << stats.last_seq << " after round " << round;
  }
}

}  // namespace
}  // namespace mota::agent
