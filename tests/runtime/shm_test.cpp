// Shared-memory input regions: the registry on real memfds and /dev/shm files (what is mapped, what
// is read per request, every refused file and range, a file truncated under the runtime), then the
// real mota-runtime answering inferences from regions exactly as from the request body, and every
// bad region request refused with a clear 4xx that changes nothing.
#include "runtime/shm.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstring>
#include <limits>

#include "runtime/client.hpp"
#include "runtime/probe.hpp"
#include "tests/runtime/runtime_support.hpp"

namespace mota::runtime {
namespace {

namespace stdfs = std::filesystem;
using testing::make_slot;
using testing::near;
using testing::RuntimeProcess;
using testing::SlotSpec;

// A memfd holding `bytes`, optionally sealed against shrinking; closed at the end of the test.
class Memfd {
 public:
  Memfd(const std::string& bytes, bool seal) {
    fd_ = ::memfd_create("mota-test-region", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    EXPECT_GE(fd_, 0) << std::strerror(errno);
    EXPECT_EQ(::pwrite(fd_, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    if (seal) {
      EXPECT_EQ(::fcntl(fd_, F_ADD_SEALS, F_SEAL_SHRINK), 0) << std::strerror(errno);
    }
  }
  ~Memfd() { ::close(fd_); }
  // How another process (the runtime) opens it.
  stdfs::path path() const {
    return "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(fd_);
  }
  void write(std::size_t at, const std::string& bytes) {
    EXPECT_EQ(::pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(at)),
              static_cast<ssize_t>(bytes.size()));
  }

 private:
  int fd_ = -1;
};

// A file in /dev/shm (what shm_open creates), removed at the end of the test.
class ShmFile {
 public:
  explicit ShmFile(const std::string& bytes) {
    static int n = 0;
    path_ = "/dev/shm/mota-test-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
    test::write_file(path_, bytes);
  }
  ~ShmFile() {
    std::error_code ec;
    stdfs::remove(path_, ec);
  }
  const stdfs::path& path() const { return path_; }

 private:
  stdfs::path path_;
};

std::string pattern(std::size_t n, int seed = 0) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed * 7) % 251);
  return s;
}

bool on_tmpfs(const stdfs::path& p) {
  struct statfs s {};
  return ::statfs(p.c_str(), &s) == 0 && s.f_type == TMPFS_MAGIC;
}

TEST(RegionRegistry, SealedMemfdIsMappedAndReadWithoutCopy) {
  std::string bytes = pattern(3 * 4096 + 100);
  Memfd fd(bytes, /*seal=*/true);
  RegionRegistry reg;
  // An offset that is not page aligned: the mapping covers whole pages, the region does not.
  auto info = reg.add("cam0", fd.path(), 5000, 6000);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_TRUE(info->mapped);
  EXPECT_EQ(info->offset, 5000u);
  EXPECT_EQ(info->byte_size, 6000u);
  auto r = reg.get("cam0");
  ASSERT_NE(r, nullptr);
  std::string scratch;
  auto v = r->read(10, 5990, scratch);
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_EQ(*v, std::string_view(bytes).substr(5010, 5990));
  EXPECT_TRUE(scratch.empty());  // a view of the mapping, not a copy
  // What the owner writes next is what the next read sees (same pages).
  fd.write(5010, "hello");
  v = r->read(0, 15, scratch);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->substr(10, 5), "hello");
}

TEST(RegionRegistry, UnsealedFileIsReadPerRequestAndATruncationIsAnErrorNotACrash) {
  std::string bytes = pattern(10000, 1);
  ShmFile shm(bytes);
  RegionRegistry reg;
  auto info = reg.add("frames", shm.path(), 0, 0);  // byte_size 0: to the end of the file
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_FALSE(info->mapped);
  EXPECT_EQ(info->byte_size, 10000u);
  auto r = reg.get("frames");
  std::string scratch;
  auto v = r->read(100, 9900, scratch);
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_EQ(*v, std::string_view(bytes).substr(100));
  EXPECT_EQ(v->data(), scratch.data());
  // An unsealed memfd is read the same way.
  Memfd unsealed(bytes, /*seal=*/false);
  auto u = reg.add("unsealed", unsealed.path(), 0, 0);
  ASSERT_TRUE(u) << u.error().message();
  EXPECT_FALSE(u->mapped);

  // The owner truncates the file: a mapping would SIGBUS here; the read says what happened.
  ASSERT_EQ(::truncate(shm.path().c_str(), 5000), 0);
  v = r->read(0, 9900, scratch);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code(), Errc::io);
  EXPECT_NE(v.error().message().find("region \"frames\""), std::string::npos);
  EXPECT_NE(v.error().message().find("shorter than registered"), std::string::npos)
      << v.error().message();
  // The part that is still there reads fine.
  v = r->read(0, 4000, scratch);
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, std::string_view(bytes).substr(0, 4000));
}

TEST(RegionRegistry, RangesOutsideTheRegionAreRefused) {
  Memfd fd(pattern(8192), true);
  RegionRegistry reg;
  ASSERT_TRUE(reg.add("r", fd.path(), 4096, 1000));
  auto r = reg.get("r");
  std::string scratch;
  for (auto [off, len] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
           {0, 1001},
           {1000, 1},
           {1001, 0},
           {std::numeric_limits<std::uint64_t>::max(), 2},
           {2, std::numeric_limits<std::uint64_t>::max()}}) {
    auto v = r->read(off, len, scratch);
    ASSERT_FALSE(v) << off << "+" << len;
    EXPECT_EQ(v.error().code(), Errc::invalid_argument);
    EXPECT_NE(v.error().message().find("not inside its 1000 bytes"), std::string::npos)
        << v.error().message();
  }
  EXPECT_TRUE(r->read(1000, 0, scratch));  // empty, at the very end: fine
}

TEST(RegionRegistry, BadRegistrationsAreRefusedAndRegisterNothing) {
  test::TempDir tmp;
  Memfd fd(pattern(4096), true);
  ShmFile empty("");
  RegionRegistry reg;
  ASSERT_TRUE(reg.add("taken", fd.path(), 0, 0));
  auto before = reg.list();

  struct Case {
    std::string name;
    stdfs::path path;
    std::uint64_t offset, size;
    Errc code;
    std::string says;
  };
  std::string fifo = "/dev/shm/mota-test-fifo-" + std::to_string(::getpid());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::vector<Case> cases = {
      {"../x", fd.path(), 0, 0, Errc::invalid_argument, "invalid region name"},
      {"", fd.path(), 0, 0, Errc::invalid_argument, "invalid region name"},
      {"rel", "dev/shm/x", 0, 0, Errc::invalid_argument, "path must be absolute"},
      // The kernel would open the path up to the NUL: the registered file, under another name.
      {"nul", stdfs::path(fd.path().string() + std::string(1, '\0') + "x"), 0, 0,
       Errc::invalid_argument, "the path contains a NUL byte"},
      {"missing", "/dev/shm/mota-test-does-not-exist", 0, 0, Errc::not_found,
       "No such file or directory"},
      {"dir", "/dev/shm", 0, 0, Errc::invalid_argument, "is not a regular file"},
      // A FIFO must be refused without waiting for a writer.
      {"fifo", fifo, 0, 0, Errc::invalid_argument, "is not a regular file"},
      {"past", fd.path(), 4097, 0, Errc::invalid_argument, "is past the end"},
      {"toolong", fd.path(), 100, 4000, Errc::invalid_argument, "do not fit in"},
      {"huge", fd.path(), 1, std::numeric_limits<std::uint64_t>::max(), Errc::invalid_argument,
       "do not fit in"},
      {"empty", empty.path(), 0, 0, Errc::invalid_argument, "the region is empty"},
      {"atend", fd.path(), 4096, 0, Errc::invalid_argument, "the region is empty"},
      {"taken", fd.path(), 0, 0, Errc::already_exists, "already registered"},
  };
  // A file on disk (not shared memory) is refused when the temp dir is indeed not tmpfs.
  if (!on_tmpfs(tmp.path())) {
    test::write_file(tmp / "disk.bin", pattern(100));
    cases.push_back(
        {"disk", tmp / "disk.bin", 0, 0, Errc::invalid_argument, "is not in shared memory"});
  }
  for (const auto& c : cases) {
    auto r = reg.add(c.name, c.path, c.offset, c.size);
    ASSERT_FALSE(r) << c.name;
    EXPECT_EQ(r.error().code(), c.code) << c.name << ": " << r.error().message();
    EXPECT_NE(r.error().message().find(c.says), std::string::npos)
        << c.name << ": " << r.error().message();
  }
  ::unlink(fifo.c_str());
  auto after = reg.list();
  ASSERT_EQ(after.size(), before.size());
  EXPECT_EQ(after[0].name, "taken");
  EXPECT_EQ(after[0].byte_size, 4096u);

  auto gone = reg.remove("nope");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), Errc::not_found);
  EXPECT_NE(gone.error().message().find("no region \"nope\""), std::string::npos);
}

TEST(RegionRegistry, AtMostKMaxRegionsAndARemovedRegionLivesWhileHeld) {
  Memfd fd(pattern(4096), true);
  RegionRegistry reg;
  for (std::size_t i = 0; i < RegionRegistry::kMaxRegions; ++i) {
    ASSERT_TRUE(reg.add("r" + std::to_string(i), fd.path(), 0, 0));
  }
  auto r = reg.add("one-more", fd.path(), 0, 0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large);
  EXPECT_NE(r.error().message().find("64 regions are registered already"), std::string::npos);
  EXPECT_EQ(reg.get("one-more"), nullptr);

  auto held = reg.get("r0");
  ASSERT_TRUE(reg.remove("r0"));
  EXPECT_EQ(reg.get("r0"), nullptr);
  std::string scratch;
  auto v = held->read(0, 4096, scratch);  // still mapped for whoever holds it
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, pattern(4096));
  EXPECT_TRUE(reg.add("one-more", fd.path(), 0, 0));  // the freed place is usable
}

class ShmServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SlotSpec v1;
    v1.onnx = testing::slim_onnx();
    make_slot(tmp_ / "v1", v1);
    image_ = testing::test_image();
    image2_ = testing::test_image(5);
  }
  std::string reference(const std::string& img) {
    auto out = run_raw(tmp_ / "v1", img);
    EXPECT_TRUE(out) << out.error().message();
    return out ? *out : std::string();
  }
  test::TempDir tmp_;
  std::string image_, image2_;
};

TEST_F(ShmServerTest, InferFromRegionsAnswersAsFromTheBody) {
  RuntimeProcess rt(tmp_.path(), {"face=" + (tmp_ / "v1").string()});
  Client c(rt.options());
  // Two frames back to back in a sealed memfd (mapped), one in a /dev/shm file (read).
  Memfd fd(image_ + image2_, true);
  ShmFile shm(image2_);
  auto a = c.register_region("cam", fd.path());
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_TRUE(a->mapped);
  EXPECT_EQ(a->byte_size, 2 * image_.size());
  auto b = c.register_region("file", shm.path());
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_FALSE(b->mapped);
  auto list = c.regions();
  ASSERT_TRUE(list) << list.error().message();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "cam");
  EXPECT_EQ((*list)[1].name, "file");
  EXPECT_EQ((*list)[1].path, shm.path().string());

  std::string ref1 = reference(image_), ref2 = reference(image2_);
  ASSERT_NE(ref1, ref2);
  for (int i = 0; i < 2; ++i) {
    auto r = c.infer_region("face", "cam", 0);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->version, "1.0.0");
    EXPECT_TRUE(near(join_raw(r->outputs), ref1, 1e-4));
    r = c.infer_region("face", "cam", image_.size());
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_TRUE(near(join_raw(r->outputs), ref2, 1e-4));
    r = c.infer_region("face", "file");
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_TRUE(near(join_raw(r->outputs), ref2, 1e-4));
  }
  // The client rewrites the frame in place; the next request sees the new bytes.
  fd.write(0, image2_);
  auto r = c.infer_region("face", "cam", 0);
  ASSERT_TRUE(r);
  EXPECT_TRUE(near(join_raw(r->outputs), ref2, 1e-4));
  // Body requests are unaffected by regions.
  r = c.infer_raw("face", image_);
  ASSERT_TRUE(r);
  EXPECT_TRUE(near(join_raw(r->outputs), ref1, 1e-4));

  // A request with no body at all (no Content-Length: what `curl -X POST` sends) is fine too.
  {
    int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(sock, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, rt.socket().c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::string req =
        "POST /v1/models/face/infer HTTP/1.1\r\nHost: x\r\nX-Mota-Input-Region: file\r\n"
        "Connection: close\r\n\r\n";
    ASSERT_EQ(::write(sock, req.data(), req.size()), static_cast<ssize_t>(req.size()));
    std::string answer;
    char chunk[65536];
    for (ssize_t n; (n = ::read(sock, chunk, sizeof chunk)) > 0;) answer.append(chunk, n);
    ::close(sock);
    EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer.substr(0, 300);
    EXPECT_NE(answer.find("X-Mota-Version: 1.0.0"), std::string::npos);
  }

  ASSERT_TRUE(c.unregister_region("cam"));
  r = c.infer_region("face", "cam", 0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status(), 404);
  EXPECT_NE(r.error().message().find("no region \"cam\" is registered"), std::string::npos);
  auto h = c.health();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->find("face")->inferences, 9u);
  EXPECT_EQ(h->find("face")->errors, 0u);
}

TEST_F(ShmServerTest, BadRegionRequestsAreRefusedWithAReasonAndChangeNothing) {
  RuntimeProcess rt(tmp_.path(), {"face=" + (tmp_ / "v1").string()});
  Client c(rt.options());
  testing::RawApi http(rt.socket());
  auto error_of = [](const Result<http::Response>& res) { return testing::error_of(*res); };
  Memfd fd(image_ + std::string(100, '\0'), true);
  ShmFile shm(image_);
  ASSERT_TRUE(c.register_region("cam", fd.path()));
  ASSERT_TRUE(c.register_region("file", shm.path()));
  // A sparse 80 MiB file (no memory used): a request may not read more than max_body_bytes.
  ShmFile big("");
  ASSERT_EQ(::truncate(big.path().c_str(), 80 << 20), 0);
  ASSERT_TRUE(c.register_region("big", big.path()));

  struct Case {
    std::map<std::string, std::string> headers;
    std::string body, type;
    int status;
    std::string says;
  };
  std::vector<Case> infer_cases = {
      {{{"X-Mota-Input-Region", "nope"}},
       "",
       "application/octet-stream",
       404,
       "no region \"nope\" is registered"},
      {{{"X-Mota-Input-Region", "cam"}},
       "xyz",
       "application/octet-stream",
       400,
       "must have an empty body"},
      {{{"X-Mota-Input-Region", "cam"}}, "", "application/json", 400, "not JSON"},
      {{{"X-Mota-Input-Region", "cam"}, {"X-Mota-Input-Offset", "101"}},
       "",
       "application/octet-stream",
       400,
       "are not inside its 921700 bytes"},
      {{{"X-Mota-Input-Region", "cam"}, {"X-Mota-Input-Offset", "-1"}},
       "",
       "application/octet-stream",
       400,
       "X-Mota-Input-Offset: \"-1\" is not a byte count"},
      {{{"X-Mota-Input-Region", "cam"}, {"X-Mota-Input-Bytes", "12abc"}},
       "",
       "application/octet-stream",
       400,
       "X-Mota-Input-Bytes: \"12abc\" is not a byte count"},
      {{{"X-Mota-Input-Region", "cam"}, {"X-Mota-Input-Bytes", "1000"}},
       "",
       "application/octet-stream",
       400,
       "needs 921600 bytes"},
      {{{"X-Mota-Input-Offset", "0"}},
       image_,
       "application/octet-stream",
       400,
       "without X-Mota-Input-Region"},
      {{{"X-Mota-Input-Region", "big"}, {"X-Mota-Input-Bytes", std::to_string(65 << 20)}},
       "",
       "application/octet-stream",
       413,
       "over max_body_bytes (67108864 bytes)"},
      {{{"X-Mota-Input-Region", "cam"}, {"X-Mota-Inputs", "input:float32:1,3,10,10"}},
       "",
       "application/octet-stream",
       400,
       "must be float32 [1,3,240,320]"},
  };
  for (const auto& k : infer_cases) {
    auto r = http.post("/v1/models/face/infer", k.body, k.type, k.headers);
    ASSERT_TRUE(r) << k.says;
    EXPECT_EQ(r->status, k.status) << k.says << ": " << r->body;
    EXPECT_NE(error_of(r).find(k.says), std::string::npos) << error_of(r);
  }

  std::string disk = (tmp_ / "disk.bin").string();
  test::write_file(disk, image_);
  std::vector<std::tuple<std::string, std::string, int, std::string>> register_cases = {
      {"x", "{", 400, "body must be"},
      {"x", R"({"path": 3})", 400, "body must be"},
      {"x", R"({"path": "dev/shm/x"})", 400, "path must be absolute"},
      {"x", R"({"path": "/dev/shm/mota-test-nothing-here"})", 400, "No such file"},
      {"x", Json{{"path", shm.path().string()}, {"offset", -5}}.dump(), 400,
       "offset must be a non-negative integer"},
      {"x", Json{{"path", shm.path().string()}, {"byte_size", "big"}}.dump(), 400,
       "byte_size must be a non-negative integer"},
      {"x", Json{{"path", shm.path().string()}, {"byte_size", 1u << 30}}.dump(), 400,
       "do not fit in"},
      {"cam", Json{{"path", shm.path().string()}}.dump(), 409, "already registered"},
      {"bad%20name", Json{{"path", shm.path().string()}}.dump(), 400, "invalid region name"},
  };
  if (!on_tmpfs(tmp_.path())) {
    register_cases.push_back({"x", Json{{"path", disk}}.dump(), 400, "not in shared memory"});
  }
  for (const auto& [name, body, status, says] : register_cases) {
    auto r = http.post("/v1/shm/" + name + "/register", body, "application/json");
    ASSERT_TRUE(r) << says;
    EXPECT_EQ(r->status, status) << says << ": " << r->body;
    EXPECT_NE(error_of(r).find(says), std::string::npos) << error_of(r);
  }
  auto r = http.post("/v1/shm/nope/unregister", "{}", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_NE(error_of(r).find("no region \"nope\""), std::string::npos);

  // The /dev/shm file is truncated under the runtime: a clear 400, and the runtime lives on.
  ASSERT_EQ(::truncate(shm.path().c_str(), 1000), 0);
  auto t = c.infer_region("face", "file");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().http_status(), 400);
  EXPECT_NE(t.error().message().find("shorter than registered"), std::string::npos)
      << t.error().message();

  // Nothing changed: the same regions, the model served, no engine error counted.
  auto list = c.regions();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].name, "big");
  EXPECT_EQ((*list)[1].name, "cam");
  EXPECT_EQ((*list)[1].path, fd.path().string());
  EXPECT_EQ((*list)[2].name, "file");
  auto ok = c.infer_region("face", "cam", 0);
  ASSERT_TRUE(ok) << ok.error().message();
  auto h = c.health();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->find("face")->errors, 0u);
  EXPECT_EQ(h->find("face")->inferences, 1u);
}

}  // namespace
}  // namespace mota::runtime
