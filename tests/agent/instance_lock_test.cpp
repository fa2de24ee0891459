// One agent per state directory (agent/instance_lock.hpp): the lock is exclusive, the refusal
// names the holder and what to do, the holder can be looked up without taking the lock, and the
// lock goes with its holder.

#include "agent/instance_lock.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

TEST(InstanceLock, SecondHolderIsRefusedNamingTheFirst) {
  test::TempDir tmp;
  const auto state = tmp / "state";  // created by acquire
  EXPECT_FALSE(lock_holder(state));
  auto first = InstanceLock::acquire(state, "run");
  ASSERT_TRUE(first) << first.error().message();
  const std::string pid = std::to_string(::getpid());

  auto second = InstanceLock::acquire(state, "check-once");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), Errc::already_exists);
  EXPECT_EQ(second.error().message(),
            "another mota-agent (pid " + pid + ", `mota-agent run`) is using " + state.string() +
                "; one agent per state directory: stop it first (systemctl stop mota-agent), or "
                "make the daemon poll now: kill -USR1 " +
                pid + " (systemctl kill -s USR1 mota-agent)");
  auto holder = lock_holder(state);
  ASSERT_TRUE(holder);
  EXPECT_EQ(holder->pid, ::getpid());
  EXPECT_EQ(holder->command, "run");

  // A one-shot holder: no daemon to ask.
  { InstanceLock gone = std::move(*first); }
  EXPECT_FALSE(lock_holder(state));
  auto once = InstanceLock::acquire(state, "check-once");
  ASSERT_TRUE(once) << once.error().message();
  auto refused = InstanceLock::acquire(state, "run");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("`mota-agent check-once`"), std::string::npos);
  EXPECT_EQ(refused.error().message().find("kill -USR1"), std::string::npos);
}

TEST(InstanceLock, TheLockGoesWithAKilledHolder) {
  test::TempDir tmp;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = InstanceLock::acquire(tmp.path(), "run");
    char c = lock ? 'y' : 'n';
    (void)::write(ready[1], &c, 1);
    ::pause();
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  auto holder = lock_holder(tmp.path());
  ASSERT_TRUE(holder);
  EXPECT_EQ(holder->pid, child);
  EXPECT_FALSE(InstanceLock::acquire(tmp.path(), "check-once"));
  ::kill(child, SIGKILL);  // a power cut of the holder leaves no stale lock
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(lock_holder(tmp.path()));
  EXPECT_TRUE(InstanceLock::acquire(tmp.path(), "check-once"));
  ::close(ready[0]);
  ::close(ready[1]);
}

}  // namespace
}  // namespace mota::agent
