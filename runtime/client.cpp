// runtime/client.hpp on common/http.hpp (libcurl): one curl handle per Client, so its connection
// to the runtime is kept alive between requests; CURLOPT_UNIX_SOCKET_PATH for the Unix socket.

#include "runtime/client.hpp"

#include <cstdlib>

#include "common/http.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/json.hpp"

namespace mota::runtime {

namespace {

constexpr std::size_t kMaxJsonAnswer = 16u << 20;
// Outputs of one inference: generous (a model's outputs), but bounded.
constexpr std::size_t kMaxInferAnswer = std::size_t{1} << 30;

Result<std::vector<TensorInfo>> infos_from_json(const Json& arr) {
  std::vector<TensorInfo> out;
  if (!arr.is_array()) return out;
  for (const auto& t : arr) {
    TensorInfo i;
    i.name = json_get_or<std::string>(t, "name", "");
    auto dt = parse_dtype(json_get_or<std::string>(t, "dtype", ""));
    if (!dt) return fail(Errc::parse, "tensor \"" + i.name + "\": unknown dtype");
    i.dtype = *dt;
    if (auto shape = json_get_array(t, "shape")) {
      for (const auto& d : **shape) {
        if (auto v = json_as<std::int64_t>(d, "a dimension")) i.shape.push_back(*v);
      }
    }
    out.push_back(std::move(i));
  }
  return out;
}

// The runtime's answers are read with the typed accessor (manifest/json.hpp): a malformed one
// (another program on the socket, a newer runtime) is an error, never an exception.
Result<ModelStatus> status_from_json(const Json& j) {
  if (!j.is_object()) return fail(Errc::parse, "model status is not an object");
  ModelStatus s;
  s.name = MOTA_TRY_CTX(json_get<std::string>(j, "name"), "model status");
  s.version = MOTA_TRY_CTX(json_get<std::string>(j, "version"), "model status");
  s.slot = json_get_or<std::string>(j, "slot", "");
  s.framework = json_get_or<std::string>(j, "framework", "");
  s.backend = json_get_or<std::string>(j, "backend", "");
  s.loaded_at = json_get_or<std::string>(j, "loaded_at", "");
  s.generation = json_get_or<std::uint64_t>(j, "generation", 0);
  s.load_ms = json_get_or(j, "load_ms", 0.0);
  s.load_waited_ms = json_get_or(j, "load_waited_ms", 0.0);
  s.inferences = json_get_or<std::uint64_t>(j, "inferences", 0);
  s.errors = json_get_or<std::uint64_t>(j, "errors", 0);
  if (auto lat = json_get_object(j, "latency_ms")) {
    s.p50_ms = json_get_or(**lat, "p50", 0.0);
    s.p99_ms = json_get_or(**lat, "p99", 0.0);
  }
  if (j.contains("latency_histogram")) {
    const Json& h = j["latency_histogram"];
    if (!h.is_array()) return fail(Errc::parse, "model status: latency_histogram is not an array");
    std::vector<std::pair<std::uint64_t, std::uint64_t>> pairs;
    for (const auto& p : h) {
      if (!p.is_array() || p.size() != 2) {
        return fail(Errc::parse, "model status: latency_histogram holds a non-pair");
      }
      auto i = MOTA_TRY_CTX(json_as<std::uint64_t>(p[0], "a bucket"), "latency_histogram");
      auto n = MOTA_TRY_CTX(json_as<std::uint64_t>(p[1], "a count"), "latency_histogram");
      pairs.emplace_back(i, n);
    }
    auto parsed = LatencyHistogram::from_sparse(pairs);
    if (!parsed) return fail(Errc::parse, "model status: " + parsed.error().message());
    s.latency = *parsed;
  }
  if (j.contains("inputs")) s.inputs = MOTA_TRY(infos_from_json(j["inputs"]));
  if (j.contains("outputs")) s.outputs = MOTA_TRY(infos_from_json(j["outputs"]));
  return s;
}

Result<RegionStatus> region_from_json(const Json& j) {
  if (!j.is_object()) return fail(Errc::parse, "region is not an object");
  RegionStatus r;
  r.name = MOTA_TRY_CTX(json_get<std::string>(j, "name"), "region");
  r.path = MOTA_TRY_CTX(json_get<std::string>(j, "path"), "region");
  r.offset = MOTA_TRY_CTX(json_get<std::uint64_t>(j, "offset"), "region");
  r.byte_size = MOTA_TRY_CTX(json_get<std::uint64_t>(j, "byte_size"), "region");
  r.mapped = MOTA_TRY_CTX(json_get<bool>(j, "mapped"), "region");
  return r;
}

}  // namespace

const ModelStatus* Health::find(const std::string& name) const {
  for (const auto& m : models) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

struct Client::Impl {
  ClientOptions opts;
  std::string where;  // what error messages name: the socket path or HOST:PORT
  std::string base;   // URL prefix of every request
  std::unique_ptr<http::Client> http;

  explicit Impl(ClientOptions o) : opts(std::move(o)) {
    http::ClientConfig config;
    config.connect_timeout = opts.connect_timeout;
    // A load may take minutes without a byte moving: the per-request timeout is the bound.
    config.min_rate = 0;
    // Inputs are ~1 MB bodies sent back to back: one 1 MiB upload buffer, allocated once, sends
    // one in a few socket writes instead of 15 64 KiB turns of libcurl's loop (bench-runtime).
    config.upload_buffer_bytes = std::size_t{1} << 20;
    if (!opts.tcp.empty()) {
      where = opts.tcp;
      base = "http://" + opts.tcp;
    } else {
      where = opts.socket.string();
      base = "http://localhost";
      config.unix_socket = opts.socket.string();
    }
    http = http::make_http_client(config);
  }

  Error answer_error(const std::string& what, long status, std::string_view body) const {
    std::string msg;
    Json j = Json::parse(body, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_string()) {
      msg = j["error"].get<std::string>();
    } else {
      msg = std::string(body.substr(0, 200));
    }
    return Error(Errc::http,
                 what + ": mota-runtime answered " + std::to_string(status) + ": " + msg,
                 static_cast<int>(status));
  }

  // Sends one request; the answer on 2xx, else the runtime's {"error"} message as Errc::http.
  Result<http::Response> send(const std::string& what, const std::string& method,
                              const std::string& path, std::string_view body,
                              std::map<std::string, std::string> headers,
                              std::uint64_t max_answer = kMaxJsonAnswer) {
    http::Request req;
    req.method = method;
    req.url = base + path;
    req.body = body;
    req.headers = std::move(headers);
    req.max_response_bytes = max_answer;
    req.timeout = opts.timeout;
    auto r = http->request(req);
    if (!r) {
      if (r.error().code() == Errc::network) {
        return fail(Errc::network, what + ": mota-runtime is not reachable at " + where + ": " +
                                       r.error().message());
      }
      return fail(r.error().context(what));
    }
    if (r->status >= 200 && r->status < 300) return r;
    return fail(answer_error(what, r->status, r->body));
  }

  Result<Json> get_json(const std::string& path) {
    auto r = MOTA_TRY(send("GET " + path, "GET", path, {}, {}));
    Json j = Json::parse(r.body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return fail(Errc::parse, path + ": answer not JSON");
    return j;
  }

  Result<Json> post_json(const std::string& what, const std::string& path, const Json& body) {
    auto r =
        MOTA_TRY(send(what, "POST", path, body.dump(), {{"Content-Type", "application/json"}}));
    return Json::parse(r.body, nullptr, false);
  }

  Result<InferResult> infer(const std::string& name, std::string_view body,
                            std::map<std::string, std::string> headers) {
    std::string what = "infer " + name;
    headers.emplace("Content-Type", "application/octet-stream");
    auto r = MOTA_TRY(send(what, "POST", "/v1/models/" + http::percent_encode(name) + "/infer",
                           body, std::move(headers), kMaxInferAnswer));
    auto header = [&](const char* key) {
      auto it = r.headers.find(key);
      return it == r.headers.end() ? std::string() : it->second;
    };
    InferResult out;
    out.model = header("x-mota-model");
    out.version = header("x-mota-version");
    out.slot = header("x-mota-slot");
    out.generation = std::strtoull(header("x-mota-generation").c_str(), nullptr, 10);
    out.infer_ms = std::strtod(header("x-mota-infer-ms").c_str(), nullptr);
    auto specs = MOTA_TRY_CTX(parse_specs(header("x-mota-outputs")), what + ": X-Mota-Outputs");
    out.outputs = MOTA_TRY_CTX(split_raw(r.body, specs), what + ": answer");
    return out;
  }
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

Result<Health> Client::health() {
  auto j = MOTA_TRY(impl_->get_json("/v1/health"));
  Health h;
  // Typed reads (manifest/json.hpp): value() threw type_error on a field of another type.
  h.status = MOTA_TRY_CTX(json_get_optional<std::string>(j, "status"), "/v1/health").value_or("");
  h.uptime_s = MOTA_TRY_CTX(json_get_optional<double>(j, "uptime_s"), "/v1/health").value_or(0);
  h.instance =
      MOTA_TRY_CTX(json_get_optional<std::string>(j, "instance"), "/v1/health").value_or("");
  if (j.contains("models") && j["models"].is_array()) {
    for (const auto& m : j["models"])
      h.models.push_back(MOTA_TRY_CTX(status_from_json(m), "health"));
  }
  return h;
}

Result<std::vector<ModelStatus>> Client::models() {
  auto j = MOTA_TRY(impl_->get_json("/v1/models"));
  std::vector<ModelStatus> out;
  if (j.contains("models") && j["models"].is_array()) {
    for (const auto& m : j["models"]) out.push_back(MOTA_TRY_CTX(status_from_json(m), "models"));
  }
  return out;
}

Result<ModelStatus> Client::load(const std::string& name, const std::filesystem::path& slot) {
  Json j = MOTA_TRY(impl_->post_json("load " + name + " from " + slot.string(),
                                     "/v1/models/" + http::percent_encode(name) + "/load",
                                     {{"slot", slot.string()}}));
  return status_from_json(j).context("load " + name);
}

Result<InferResult> Client::infer(const std::string& name, const std::vector<Tensor>& inputs) {
  std::vector<TensorInfo> specs;
  for (const auto& t : inputs) specs.push_back(t.info());
  std::string body = join_raw(inputs);
  return impl_->infer(name, body, {{"X-Mota-Inputs", format_specs(specs)}});
}

Result<InferResult> Client::infer_raw(const std::string& name, const std::string& body) {
  return impl_->infer(name, body, {});
}

Result<RegionStatus> Client::register_region(const std::string& region,
                                             const std::filesystem::path& path,
                                             std::uint64_t offset, std::uint64_t byte_size) {
  std::string what = "register region " + region;
  Json body = {{"path", path.string()}, {"offset", offset}};
  if (byte_size) body["byte_size"] = byte_size;
  Json j = MOTA_TRY(
      impl_->post_json(what, "/v1/shm/" + http::percent_encode(region) + "/register", body));
  return region_from_json(j).context(what);
}

Status Client::unregister_region(const std::string& region) {
  MOTA_TRY(impl_->post_json("unregister region " + region,
                            "/v1/shm/" + http::percent_encode(region) + "/unregister",
                            Json::object()));
  return {};
}

Result<std::vector<RegionStatus>> Client::regions() {
  auto j = MOTA_TRY(impl_->get_json("/v1/shm"));
  std::vector<RegionStatus> out;
  if (j.contains("regions") && j["regions"].is_array()) {
    for (const auto& r : j["regions"]) out.push_back(MOTA_TRY(region_from_json(r)));
  }
  return out;
}

Result<InferResult> Client::infer_region(const std::string& name, const std::string& region,
                                         std::uint64_t offset) {
  return impl_->infer(
      name, {}, {{"X-Mota-Input-Region", region}, {"X-Mota-Input-Offset", std::to_string(offset)}});
}

}  // namespace mota::runtime
