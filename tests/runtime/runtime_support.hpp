#pragma once
// Shared by tests/runtime/*_test.cpp: model slots built from the real ONNX models in
// ../shared/models/, a hand-encoded tiny ONNX writer for fault models (an unsupported op, a model
// that yields -Inf), a deterministic test image, and a mota-runtime process on a Unix socket.

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/http.hpp"
#include "manifest/canonical_json.hpp"
#include "runtime/client.hpp"
#include "tests/support/test_support.hpp"

namespace mota::runtime::testing {

namespace stdfs = std::filesystem;

inline std::string slim_onnx() {
  return test::read_file(test::shared_model("ultraface/version-slim-320.onnx"));
}
inline std::string rfb_onnx() {
  return test::read_file(test::shared_model("ultraface/version-RFB-320.onnx"));
}

// 1x3x240x320 float32, normalised like a real image ((v-127)/128), deterministic.
inline std::string test_image(int seed = 0) {
  std::string out(3 * 240 * 320 * 4, '\0');
  std::size_t i = 0;
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 240; ++y) {
      for (int x = 0; x < 320; ++x, ++i) {
        int v = (x * 7 + y * 13 + c * 31 + seed * 17 + (x / 40) * (y / 30) * 11) % 255;
        float f = (static_cast<float>(v) - 127.0f) / 128.0f;
        std::memcpy(out.data() + i * 4, &f, 4);
      }
    }
  }
  return out;
}

struct Health {
  std::string input;  // bytes of health/input.bin
  std::optional<std::string> expected;
  double tolerance = 1e-3;
  double latency_budget_ms = 5000;
};

struct SlotSpec {
  std::string name = "face";
  std::string version = "1.0.0";
  std::string onnx;
  Json inputs =
      Json::array({{{"name", "input"}, {"shape", {1, 3, 240, 320}}, {"dtype", "float32"}}});
  Json outputs = Json::array({{{"name", "scores"}, {"shape", {1, 4420, 2}}, {"dtype", "float32"}},
                              {{"name", "boxes"}, {"shape", {1, 4420, 4}}, {"dtype", "float32"}}});
  std::optional<Health> health;
};

// Writes an unpacked model tree: model.json + model.onnx (+ health files).
inline void make_slot(const stdfs::path& dir, const SlotSpec& s) {
  Json m = {{"name", s.name},        {"version", s.version}, {"framework", "onnx"},
            {"entry", "model.onnx"}, {"inputs", s.inputs},   {"outputs", s.outputs}};
  test::write_file(dir / "model.onnx", s.onnx);
  if (s.health) {
    Json h = {{"input", "health/input.bin"},
              {"tolerance", s.health->tolerance},
              {"latency_budget_ms", s.health->latency_budget_ms}};
    test::write_file(dir / "health" / "input.bin", s.health->input);
    if (s.health->expected) {
      h["expected_output"] = "health/expected.bin";
      test::write_file(dir / "health" / "expected.bin", *s.health->expected);
    }
    m["health"] = h;
  }
  test::write_file(dir / "model.json", m.dump(2));
}

// --- a minimal ONNX (protobuf) writer: one node, one float input, one float output ---
inline std::string pb_varint(std::uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
  return out;
}
inline std::string pb_int(int field, std::uint64_t v) {
  return pb_varint(static_cast<std::uint64_t>(field) << 3) + pb_varint(v);
}
inline std::string pb_bytes(int field, const std::string& s) {
  return pb_varint((static_cast<std::uint64_t>(field) << 3) | 2) + pb_varint(s.size()) + s;
}
inline std::string pb_value_info(const std::string& name, const std::vector<int>& dims) {
  std::string shape;
  for (int d : dims) shape += pb_bytes(1, pb_int(1, static_cast<std::uint64_t>(d)));
  std::string tensor_type = pb_int(1, 1) + pb_bytes(2, shape);  // elem_type FLOAT
  return pb_bytes(1, name) + pb_bytes(2, pb_bytes(1, tensor_type));
}
// y = op_type(x) for x, y of shape `dims`, opset `opset`.
inline std::string tiny_onnx(const std::string& op_type, const std::vector<int>& dims,
                             int opset = 13) {
  std::string node = pb_bytes(1, "x") + pb_bytes(2, "y") + pb_bytes(3, "n0") + pb_bytes(4, op_type);
  std::string graph = pb_bytes(1, node) + pb_bytes(2, "g") +
                      pb_bytes(11, pb_value_info("x", dims)) +
                      pb_bytes(12, pb_value_info("y", dims));
  return pb_int(1, 7) +
         pb_bytes(8, pb_bytes(1, "") + pb_int(2, static_cast<std::uint64_t>(opset))) +
         pb_bytes(7, graph);
}
inline SlotSpec tiny_slot(const std::string& op_type) {
  SlotSpec s;
  s.onnx = tiny_onnx(op_type, {1, 4});
  s.inputs = Json::array({{{"name", "x"}, {"shape", {1, 4}}, {"dtype", "float32"}}});
  s.outputs = Json::array({{{"name", "y"}, {"shape", {1, 4}}, {"dtype", "float32"}}});
  return s;
}

inline bool near(const std::string& a, const std::string& b, double tol) {
  if (a.size() != b.size() || a.size() % 4) return false;
  for (std::size_t i = 0; i < a.size(); i += 4) {
    float x, y;
    std::memcpy(&x, a.data() + i, 4);
    std::memcpy(&y, b.data() + i, 4);
    if (!(std::abs(x - y) <= tol)) return false;
  }
  return true;
}

// A mota-runtime serving on <dir>/runtime.sock, models loaded at start from `models`
// (NAME=SLOT). Waits until /v1/health answers.
class RuntimeProcess {
 public:
  RuntimeProcess(const stdfs::path& dir, const std::vector<std::string>& models,
                 const std::string& extra_toml = "")
      : socket_(dir / "runtime.sock"), log_(dir / "runtime.log") {
    test::write_file(dir / "runtime.toml", "socket = \"" + socket_.string() +
                                               "\"\npool_size = 2\nlog_level = \"warn\"\n" +
                                               extra_toml);
    std::vector<std::string> argv = {test::build_path("runtime/mota-runtime").string(), "serve",
                                     "--config", (dir / "runtime.toml").string()};
    for (const auto& m : models) {
      argv.push_back("--model");
      argv.push_back(m);
    }
    proc_ = std::make_unique<test::Process>(argv, log_);
    Client c(options());
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline && proc_->running()) {
      if (c.health()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "mota-runtime did not come up; log:\n" << log();
  }
  ClientOptions options() const {
    ClientOptions o;
    o.socket = socket_;
    o.timeout = std::chrono::milliseconds(120000);
    return o;
  }
  const stdfs::path& socket() const { return socket_; }
  std::string log() const { return stdfs::exists(log_) ? test::read_file(log_) : ""; }
  test::Process& process() { return *proc_; }

 private:
  stdfs::path socket_, log_;
  std::unique_ptr<test::Process> proc_;
};

// Requests the runtime Client never sends (any content type, any header), over the Unix socket.
class RawApi {
 public:
  explicit RawApi(const stdfs::path& socket) {
    http::ClientConfig config;
    config.unix_socket = socket.string();
    config.min_rate = 0;
    http_ = http::make_http_client(config);
  }
  Result<http::Response> post(const std::string& path, std::string_view body,
                              const std::string& type,
                              std::map<std::string, std::string> headers = {}) {
    http::Request req;
    req.method = "POST";
    req.url = "http://localhost" + path;
    req.body = body;
    req.headers = std::move(headers);
    req.headers["Content-Type"] = type;
    req.max_response_bytes = 64u << 20;
    req.timeout = std::chrono::seconds(120);
    return http_->request(req);
  }

 private:
  std::unique_ptr<http::Client> http_;
};

// The {"error"} message of an answer, or its body.
inline std::string error_of(const http::Response& r) {
  Json e = Json::parse(r.body, nullptr, false);
  return e.is_object() && e.contains("error") ? e["error"].get<std::string>() : r.body;
}

}  // namespace mota::runtime::testing
