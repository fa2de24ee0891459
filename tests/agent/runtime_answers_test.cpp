// What the agent reads from mota-runtime's answers (runtime/client.hpp, used by the health gate
// and reconcile()): a field of another type is an error naming it, never an exception out of the
// daemon (nlohmann's value() threw type_error on {"status": 1}).

#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>

#include "runtime/client.hpp"
#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

// A runtime stand-in on a real AF_UNIX socket answering GET /v1/health with `body`.
class FakeRuntime {
 public:
  FakeRuntime(const std::filesystem::path& socket, std::string body) : socket_(socket) {
    server_.set_address_family(AF_UNIX);
    server_.Get("/v1/health", [body](const httplib::Request&, httplib::Response& res) {
      res.set_content(body, "application/json");
    });
    bound_ = server_.bind_to_port(socket.string(), 80);
    if (bound_) thread_ = std::thread([this] { server_.listen_after_bind(); });
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (bound_ && !server_.is_running() && std::chrono::steady_clock::now() < until) {
      std::this_thread::yield();
    }
  }
  ~FakeRuntime() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  bool bound() const { return bound_; }

 private:
  std::filesystem::path socket_;
  httplib::Server server_;
  bool bound_ = false;
  std::thread thread_;
};

Result<runtime::Health> health_of(const std::string& body) {
  test::TempDir dir;
  const auto socket = dir.path() / "rt.sock";
  FakeRuntime rt(socket, body);
  EXPECT_TRUE(rt.bound());
  runtime::ClientOptions co;
  co.socket = socket;
  runtime::Client client(co);
  return client.health();
}

TEST(RuntimeAnswers, HealthFieldsOfAnotherTypeAreAnErrorNotAnException) {
  auto r = health_of(R"({"status": 1, "uptime_s": 3})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::parse);
  EXPECT_EQ(r.error().message(), "/v1/health: field 'status' must be a string, got integer");

  r = health_of(R"({"status": "ok", "uptime_s": "long"})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "/v1/health: field 'uptime_s' must be a number, got string");
}

TEST(RuntimeAnswers, WellTypedHealthIsRead) {
  auto r = health_of(R"({"status": "ok", "uptime_s": 2.5, "models": []})");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, "ok");
  EXPECT_EQ(r->uptime_s, 2.5);
}

}  // namespace
}  // namespace mota::agent
