// What the agent reads from mota-runtime's answers through the client (runtime/client.hpp, used by
// the health gate and reconcile()): a field of another type is an error naming it, never an
// exception out of the daemon (nlohmann's value() threw type_error on {"status": 1}).

#include <gtest/gtest.h>

#include "net/http_server.hpp"
#include "runtime/client.hpp"
#include "tests/support/test_support.hpp"

namespace mota::runtime {
namespace {

// A runtime stand-in: the same HTTP server as mota-runtime's, on a real Unix socket, answering
// GET /v1/health with `body`.
class FakeRuntime {
 public:
  FakeRuntime(const std::filesystem::path& socket, std::string body) {
    net::ServerConfig config;
    config.host.clear();  // no TCP
    config.unix_socket = socket;
    server_ = net::make_http_server(config);
    server_->route("GET", "/v1/health", [body](const net::HttpRequest&) {
      net::HttpReply reply;
      reply.body = body;
      return reply;
    });
    bound_ = server_->start().has_value();
  }
  bool bound() const { return bound_; }

 private:
  std::unique_ptr<net::HttpServer> server_;
  bool bound_ = false;
};

Result<Health> health_of(const std::string& body) {
  test::TempDir dir;
  const auto socket = dir.path() / "rt.sock";
  FakeRuntime rt(socket, body);
  EXPECT_TRUE(rt.bound());
  ClientOptions co;
  co.socket = socket;
  Client client(co);
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

TEST(RuntimeAnswers, ModelStatusIsReadByTypeWithoutExceptions) {
  // A required field of another type: an error naming it.
  auto r = health_of(R"({"status": "ok", "uptime_s": 1, "models": [{"name": 7, "version": "1"}]})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::parse);
  EXPECT_NE(r.error().message().find("model status: field 'name' must be a string, got integer"),
            std::string::npos)
      << r.error().message();
  // Optional fields of another type read as absent; shapes keep their integer dimensions only.
  r = health_of(R"({"status": "ok", "uptime_s": 1, "models": [{"name": "det", "version": "1.0",
      "generation": "two", "load_ms": [], "latency_ms": [1, 2], "slot": {"a": 1},
      "inputs": [{"name": 5, "dtype": "float32", "shape": [1, "x", 3.5, 4]}, 9]}]})");
  ASSERT_FALSE(r);  // the input that is a number, not an object, has no dtype
  EXPECT_NE(r.error().message().find("unknown dtype"), std::string::npos) << r.error().message();
  r = health_of(R"({"status": "ok", "uptime_s": 1, "models": [{"name": "det", "version": "1.0",
      "generation": "two", "load_ms": [], "latency_ms": [1, 2], "slot": {"a": 1},
      "inputs": [{"name": 5, "dtype": "float32", "shape": [1, "x", 3.5, 4]}]}]})");
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->models.size(), 1u);
  const ModelStatus& m = r->models[0];
  EXPECT_EQ(m.name, "det");
  EXPECT_EQ(m.generation, 0u);
  EXPECT_EQ(m.load_ms, 0.0);
  EXPECT_EQ(m.p50_ms, 0.0);
  EXPECT_EQ(m.slot, "");
  ASSERT_EQ(m.inputs.size(), 1u);
  EXPECT_EQ(m.inputs[0].name, "");
  EXPECT_EQ(m.inputs[0].shape, (std::vector<std::int64_t>{1, 4}));
}

}  // namespace
}  // namespace mota::runtime
