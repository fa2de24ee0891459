#include "agent/slots.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <iostream>
#include <random>
#include <set>
#include <thread>

#include "common/fs.hpp"
#include "storage/package.hpp"
#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

namespace stdfs = std::filesystem;

// Packs a tiny model with `version` and returns the package path.
stdfs::path make_package(const test::TempDir& tmp, const std::string& version) {
  auto src = tmp / ("src-" + version);
  test::write_file(src / "model.json", R"({"name": "resnet", "version": ")" + version +
                                           R"(", "framework": "onnx", "entry": "model.onnx"})");
  test::write_file(src / "model.onnx", "weights of " + version);
  auto pkg = tmp / ("resnet-" + version + ".mota");
  auto r = storage::pack(src, pkg);
  EXPECT_TRUE(r) << r.error().message();
  return pkg;
}

// The install order of slots.hpp; returns the installed slot.
Slot install(const SlotSet& s, const stdfs::path& pkg) {
  auto target = s.inactive();
  EXPECT_TRUE(target) << target.error().message();
  auto st = s.prepare(*target);
  EXPECT_TRUE(st) << st.error().message();
  EXPECT_FALSE(stdfs::exists(s.path(*target)));
  auto u = storage::unpack_file(pkg, s.path(*target));
  EXPECT_TRUE(u) << u.error().message();
  auto v = s.verify(*target);
  EXPECT_TRUE(v) << v.error().message();
  st = s.switch_to(*target);
  EXPECT_TRUE(st) << st.error().message();
  return *target;
}

std::string link_target(const stdfs::path& p) {
  char buf[256];
  ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
  return n < 0 ? std::string("<not a link>") : std::string(buf, static_cast<std::size_t>(n));
}

std::set<std::string> entries(const stdfs::path& dir) {
  std::set<std::string> out;
  for (auto& e : stdfs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

TEST(Slots, OpenValidatesNameAndCreatesDir) {
  test::TempDir tmp;
  auto bad = SlotSet::open(tmp.path(), "../escape");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  EXPECT_TRUE(stdfs::is_empty(tmp.path()));

  auto s = SlotSet::open(tmp.path(), "resnet");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->dir(), tmp / "models/resnet");
  EXPECT_TRUE(stdfs::is_directory(s->dir()));
  EXPECT_EQ(s->path(Slot::a), tmp / "models/resnet/a");
  auto cur = s->current();
  ASSERT_TRUE(cur) << cur.error().message();
  EXPECT_FALSE(cur->has_value());
  EXPECT_EQ(*s->inactive(), Slot::a);
}

TEST(Slots, InstallSwitchAndRollback) {
  test::TempDir tmp;
  auto v1 = make_package(tmp, "1.0.0");
  auto v2 = make_package(tmp, "2.0.0");
  auto v3 = make_package(tmp, "3.0.0");
  auto s = *SlotSet::open(tmp / "state", "resnet");

  EXPECT_EQ(install(s, v1), Slot::a);
  EXPECT_EQ(link_target(s.current_link()), "a");
  EXPECT_EQ(**s.current(), Slot::a);
  EXPECT_EQ(test::read_file(s.current_link() / "model.onnx"), "weights of 1.0.0");

  EXPECT_EQ(install(s, v2), Slot::b);
  EXPECT_EQ(**s.current(), Slot::b);
  EXPECT_EQ(*s.inactive(), Slot::a);
  EXPECT_EQ(s.verify(Slot::b)->manifest.version, "2.0.0");
  EXPECT_EQ(test::read_file(s.current_link() / "model.onnx"), "weights of 2.0.0");

  // Rollback: the previous slot is intact and verifies.
  auto prev = s.verify(Slot::a);
  ASSERT_TRUE(prev) << prev.error().message();
  EXPECT_EQ(prev->manifest.version, "1.0.0");
  ASSERT_TRUE(s.switch_to(Slot::a));
  EXPECT_EQ(**s.current(), Slot::a);
  EXPECT_EQ(test::read_file(s.current_link() / "model.onnx"), "weights of 1.0.0");
  // Idempotent.
  ASSERT_TRUE(s.switch_to(Slot::a));
  EXPECT_EQ(link_target(s.current_link()), "a");

  // The next install goes into b again, replacing 2.0.0.
  EXPECT_EQ(install(s, v3), Slot::b);
  EXPECT_EQ(s.verify(Slot::b)->manifest.version, "3.0.0");
  EXPECT_EQ(entries(s.dir()), (std::set<std::string>{"a", "b", "current"}));

  // Removing the old slot after a good health check.
  ASSERT_TRUE(s.remove(Slot::a));
  EXPECT_FALSE(stdfs::exists(s.path(Slot::a)));
  ASSERT_TRUE(s.remove(Slot::a));  // missing is fine
  EXPECT_EQ(**s.current(), Slot::b);
}

TEST(Slots, CurrentSlotIsNeverTouched) {
  test::TempDir tmp;
  auto s = *SlotSet::open(tmp / "state", "resnet");
  install(s, make_package(tmp, "1.0.0"));
  auto before = test::read_file(s.path(Slot::a) / "model.onnx");

  auto st = s.prepare(Slot::a);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::invalid_argument);
  EXPECT_NE(st.error().message().find("current (active) slot"), std::string::npos)
      << st.error().message();
  st = s.remove(Slot::a);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::invalid_argument);
  EXPECT_EQ(test::read_file(s.path(Slot::a) / "model.onnx"), before);
  EXPECT_TRUE(s.verify(Slot::a));

  // prepare() of the other slot clears whatever was there (a half-written tree).
  test::write_file(s.path(Slot::b) / "junk/partial.bin", "half");
  ASSERT_TRUE(s.prepare(Slot::b));
  EXPECT_FALSE(stdfs::exists(s.path(Slot::b)));
  EXPECT_TRUE(s.verify(Slot::a));
}

TEST(Slots, SwitchToMissingSlotFails) {
  test::TempDir tmp;
  auto s = *SlotSet::open(tmp / "state", "resnet");
  install(s, make_package(tmp, "1.0.0"));
  auto st = s.switch_to(Slot::b);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::not_found);
  EXPECT_NE(st.error().message().find("is not a directory"), std::string::npos);
  EXPECT_EQ(link_target(s.current_link()), "a");
  EXPECT_EQ(entries(s.dir()), (std::set<std::string>{"a", "current"}));
}

TEST(Slots, VerifyReportsTampering) {
  test::TempDir tmp;
  auto s = *SlotSet::open(tmp / "state", "resnet");
  install(s, make_package(tmp, "1.0.0"));
  test::write_file(s.path(Slot::a) / "model.onnx", "weights of 6.6.6");
  auto v = s.verify(Slot::a);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().message().find("verify slot a of resnet"), std::string::npos)
      << v.error().message();
  EXPECT_FALSE(s.verify(Slot::b));  // missing slot
}

// `current` in every broken shape: reported, never followed, nothing touched; switch_to repairs
// the shapes it can.
TEST(Slots, GarbageCurrent) {
  test::TempDir tmp;
  auto s = *SlotSet::open(tmp / "state", "resnet");
  install(s, make_package(tmp, "1.0.0"));
  install(s, make_package(tmp, "2.0.0"));
  // A directory outside that a followed link would reach.
  test::write_file(tmp / "outside/model.onnx", "outside");

  struct Shape {
    std::string name;
    std::function<void()> make;
    std::string expect;
    bool repairable = true;
  };
  auto link = s.current_link();
  const std::vector<Shape> shapes = {
      {"regular file", [&] { test::write_file(link, "a"); }, "is not a symlink"},
      {"relative escape", [&] { ::symlink("../../../outside", link.c_str()); },
       "points to '../../../outside'"},
      {"absolute", [&] { ::symlink((tmp / "outside").c_str(), link.c_str()); }, "points to '/"},
      {"other name", [&] { ::symlink("c", link.c_str()); }, "points to 'c'"},
      {"slash suffix", [&] { ::symlink("a/", link.c_str()); }, "points to 'a/'"},
      {"empty-ish", [&] { ::symlink(".", link.c_str()); }, "points to '.'"},
      {"dangling slot",
       [&] {
         stdfs::rename(s.path(Slot::a), tmp / "a-moved");
         ::symlink("a", link.c_str());
       },
       "is not a directory"},
      {"directory", [&] { stdfs::create_directory(link); }, "is not a symlink", false},
  };
  for (const auto& shape : shapes) {
    SCOPED_TRACE(shape.name);
    ASSERT_TRUE(fs::remove_all(link));
    shape.make();
    auto cur = s.current();
    ASSERT_FALSE(cur);
    EXPECT_EQ(cur.error().code(), Errc::verification);
    EXPECT_NE(cur.error().message().find(shape.expect), std::string::npos) << cur.error().message();
    EXPECT_FALSE(s.inactive());
    // Nothing is touched while `current` is unreadable.
    for (Slot slot : {Slot::a, Slot::b}) {
      auto st = s.prepare(slot);
      ASSERT_FALSE(st);
      EXPECT_NE(st.error().message().find("refusing to prepare slot"), std::string::npos)
          << st.error().message();
      EXPECT_FALSE(s.remove(slot));
    }
    EXPECT_EQ(test::read_file(tmp / "outside/model.onnx"), "outside");
    EXPECT_TRUE(s.verify(Slot::b));
    if (stdfs::exists(tmp / "a-moved")) stdfs::rename(tmp / "a-moved", s.path(Slot::a));
    EXPECT_TRUE(s.verify(Slot::a));

    auto st = s.switch_to(Slot::b);
    if (shape.repairable) {
      ASSERT_TRUE(st) << st.error().message();
      EXPECT_EQ(**s.current(), Slot::b);
      EXPECT_EQ(entries(s.dir()), (std::set<std::string>{"a", "b", "current"}));
    } else {
      ASSERT_FALSE(st);
      EXPECT_NE(st.error().message().find("rename"), std::string::npos) << st.error().message();
      EXPECT_EQ(entries(s.dir()), (std::set<std::string>{"a", "b", "current"}));
    }
  }
}

TEST(Slots, LeftoverTempLinkIsCleaned) {
  test::TempDir tmp;
  auto s = *SlotSet::open(tmp / "state", "resnet");
  install(s, make_package(tmp, "1.0.0"));
  install(s, make_package(tmp, "2.0.0"));
  auto temp = s.dir() / ".current.tmp";
  ASSERT_EQ(::symlink("a", temp.c_str()), 0);
  EXPECT_EQ(**s.current(), Slot::b);  // the temp link is not `current`
  ASSERT_TRUE(s.switch_to(Slot::a));
  EXPECT_EQ(entries(s.dir()), (std::set<std::string>{"a", "b", "current"}));

  // A garbage temp (a regular file) is removed too, and open() cleans it up front.
  test::write_file(temp, "junk");
  ASSERT_TRUE(s.switch_to(Slot::b));
  EXPECT_FALSE(stdfs::exists(stdfs::symlink_status(temp)));
  ASSERT_EQ(::symlink("zzz", temp.c_str()), 0);
  auto reopened = SlotSet::open(tmp / "state", "resnet");
  ASSERT_TRUE(reopened);
  EXPECT_EQ(entries(s.dir()), (std::set<std::string>{"a", "b", "current"}));
  EXPECT_EQ(**reopened->current(), Slot::b);
}

// A child switches back and forth as fast as it can; SIGKILL lands at random moments. After every
// kill `current` must be exactly "a" or "b" and the next switch must succeed and leave no stray.
TEST(Slots, SigkillDuringSwitchNeverBreaksCurrent) {
  test::TempDir tmp;
  auto s = *SlotSet::open(tmp / "state", "resnet");
  stdfs::create_directories(s.path(Slot::a));
  stdfs::create_directories(s.path(Slot::b));
  ASSERT_TRUE(s.switch_to(Slot::a));

  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_us(0, 3000);
  const int kIterations = 300;
  int saw_temp = 0;
  std::set<std::string> seen_targets;
  for (int i = 0; i < kIterations; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: only the SlotSet API, then _exit (no gtest teardown in the child).
      auto child = SlotSet::open(tmp / "state", "resnet");
      if (!child) ::_exit(2);
      for (int n = 0; n < 1000000; ++n) {
        if (!child->switch_to(n % 2 ? Slot::a : Slot::b)) ::_exit(3);
      }
      ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with status " << status;

    struct stat st {};
    ASSERT_EQ(::lstat(s.current_link().c_str(), &st), 0) << "iteration " << i;
    ASSERT_TRUE(S_ISLNK(st.st_mode)) << "iteration " << i;
    std::string target = link_target(s.current_link());
    ASSERT_TRUE(target == "a" || target == "b") << "iteration " << i << ": " << target;
    seen_targets.insert(target);
    auto cur = s.current();
    ASSERT_TRUE(cur) << cur.error().message();

    auto names = entries(s.dir());
    if (names.count(".current.tmp")) ++saw_temp;
    names.erase(".current.tmp");
    ASSERT_EQ(names, (std::set<std::string>{"a", "b", "current"})) << "iteration " << i;

    // The next switch works from whatever state the kill left, and leaves no temp link.
    Slot next = target == "a" ? Slot::b : Slot::a;
    auto sw = s.switch_to(next);
    ASSERT_TRUE(sw) << sw.error().message();
    ASSERT_EQ(link_target(s.current_link()), slot_name(next));
    ASSERT_EQ(entries(s.dir()), (std::set<std::string>{"a", "b", "current"}));
  }
  // Both outcomes occurred, so kills really landed mid-loop.
  EXPECT_EQ(seen_targets, (std::set<std::string>{"a", "b"}));
  std::cout << "kills leaving a temp link: " << saw_temp << " of " << kIterations << "\n";
}

}  // namespace
}  // namespace mota::agent

namespace mota::agent {
namespace {

// SIGKILL while the inactive slot is being cleared and rewritten: the current slot stays intact
// and verifiable, and the next prepare() starts from whatever was left.
TEST(Slots, SigkillDuringPrepareLeavesCurrentIntact) {
  test::TempDir tmp;
  auto s = *SlotSet::open(tmp / "state", "resnet");
  install(s, make_package(tmp, "1.0.0"));
  auto pkg = make_package(tmp, "2.0.0");
  std::mt19937 rng(777);
  std::uniform_int_distribution<int> delay_us(0, 5000);
  for (int i = 0; i < 30; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto child = SlotSet::open(tmp / "state", "resnet");
      if (!child) ::_exit(2);
      for (int n = 0; n < 100000; ++n) {
        if (!child->prepare(Slot::b)) ::_exit(3);
        if (!storage::unpack_file(pkg, child->path(Slot::b))) ::_exit(4);
        for (int f = 0; f < 20; ++f) {
          int fd = ::open((child->path(Slot::b) / ("extra" + std::to_string(f))).c_str(),
                          O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
          if (fd < 0) ::_exit(5);
          ::close(fd);
        }
      }
      ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with status " << status;
    ASSERT_EQ(link_target(s.current_link()), "a") << "iteration " << i;
    auto v = s.verify(Slot::a);
    ASSERT_TRUE(v) << "iteration " << i << ": " << v.error().message();
    ASSERT_EQ(v->manifest.version, "1.0.0");
  }
  // Whatever the kills left in b (or beside it) does not stop the next install.
  ASSERT_TRUE(s.prepare(Slot::b));
  ASSERT_TRUE(storage::unpack_file(pkg, s.path(Slot::b)));
  ASSERT_TRUE(s.verify(Slot::b));
  ASSERT_TRUE(s.switch_to(Slot::b));
  EXPECT_EQ(s.verify(Slot::b)->manifest.version, "2.0.0");
}

}  // namespace
}  // namespace mota::agent
