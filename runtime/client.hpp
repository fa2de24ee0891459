#pragma once
// Client of mota-runtime's HTTP API (runtime/server.hpp), for the agent and for tests/benchmarks.
// Speaks HTTP/1.1 over the Unix socket (or loopback TCP) with keep-alive.
//
// Errors: Errc::network when the runtime cannot be reached ("mota-runtime is not running at
// /run/mota/runtime.sock: ..."), Errc::http (with http_status()) when it answers with an error —
// the message is the runtime's own reason, e.g. a failed load's cause — and Errc::parse for an
// answer that does not follow the API.
//
// Thread-safety: one Client per thread (it owns one connection).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/latency_histogram.hpp"
#include "common/result.hpp"
#include "runtime/tensor.hpp"

namespace mota::runtime {

struct ClientOptions {
  std::filesystem::path socket = "/run/mota/runtime.sock";
  std::string tcp;  // "127.0.0.1:8700": use TCP instead of the socket when set
  std::chrono::milliseconds connect_timeout{2000};
  // Per request. A load of a big model can take a while: the agent may pass a longer one.
  std::chrono::milliseconds timeout{60000};
};

// A model as the runtime reports it (GET /v1/health, /v1/models, a load's answer).
struct ModelStatus {
  std::string name, version, slot, framework, backend, loaded_at;
  std::uint64_t generation = 0;
  double load_ms = 0;
  double load_waited_ms = 0;  // of load_ms: waiting for in-flight inferences (load_yield_ms)
  std::uint64_t inferences = 0, errors = 0;
  double p50_ms = 0, p99_ms = 0;
  LatencyHistogram latency;  // since the load ("latency_histogram"; empty from older runtimes)
  std::vector<TensorInfo> inputs, outputs;  // filled by models() and load() only
};

struct Health {
  std::string status;  // "ok" (at least one model served) or "empty"
  double uptime_s = 0;
  std::string instance;  // random per runtime process ("" from older runtimes)
  std::vector<ModelStatus> models;
  const ModelStatus* find(const std::string& name) const;
};

// One inference's answer, attributed to the exact load that produced it.
struct InferResult {
  std::string model, version, slot;
  std::uint64_t generation = 0;
  double infer_ms = 0;  // time in the engine, measured by the runtime
  std::vector<Tensor> outputs;
};

// A shared-memory input region as the runtime registered it (see runtime/shm.hpp).
struct RegionStatus {
  std::string name, path;
  std::uint64_t offset = 0, byte_size = 0;
  bool mapped = false;  // zero-copy (the file is sealed against shrinking) or read per request
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Result<Health> health();
  Result<std::vector<ModelStatus>> models();
  // Asks the runtime to load `slot` (absolute path of an unpacked model tree) as `name` and swap
  // to it. Returns the new status; on failure the runtime keeps serving the old model and the
  // error (Errc::http, status 422) carries its reason.
  Result<ModelStatus> load(const std::string& name, const std::filesystem::path& slot);
  // Raw encoding. `inputs` in the model's input order; names may be empty.
  Result<InferResult> infer(const std::string& name, const std::vector<Tensor>& inputs);
  // Raw body of the model's inputs in declared order and shape (no X-Mota-Inputs header).
  Result<InferResult> infer_raw(const std::string& name, const std::string& body);

  // Shared-memory inputs (runtime/shm.hpp). Registers [offset, offset + byte_size) of `path` (a
  // tmpfs file or /proc/PID/fd/N of a memfd; byte_size 0: to the end) as `region`. Errc::http
  // with the runtime's reason when it refuses (400, 409 name taken).
  Result<RegionStatus> register_region(const std::string& region, const std::filesystem::path& path,
                                       std::uint64_t offset = 0, std::uint64_t byte_size = 0);
  Status unregister_region(const std::string& region);  // Errc::http 404 if unknown
  Result<std::vector<RegionStatus>> regions();
  // Inference on inputs the caller wrote into a registered region (raw encoding, declared order),
  // starting `offset` bytes into it; the body is empty. The answer is as infer_raw()'s.
  Result<InferResult> infer_region(const std::string& name, const std::string& region,
                                   std::uint64_t offset = 0);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mota::runtime
