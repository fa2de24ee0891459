// cpp-httplib backend of runtime/client.hpp (AF_UNIX via set_address_family, as the server).

#include <httplib.h>
#include <sys/socket.h>

#include "manifest/canonical_json.hpp"
#include "manifest/json.hpp"
#include "runtime/client.hpp"

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
    i.name = t.value("name", "");
    auto dt = parse_dtype(t.value("dtype", ""));
    if (!dt) return fail(Errc::parse, "tensor \"" + i.name + "\": unknown dtype");
    i.dtype = *dt;
    if (t.contains("shape") && t["shape"].is_array()) {
      for (const auto& d : t["shape"]) {
        if (d.is_number_integer()) i.shape.push_back(d.get<std::int64_t>());
      }
    }
    out.push_back(std::move(i));
  }
  return out;
}

Result<ModelStatus> status_from_json(const Json& j) {
  if (!j.is_object()) return fail(Errc::parse, "model status is not an object");
  try {
    ModelStatus s;
    s.name = j.at("name").get<std::string>();
    s.version = j.at("version").get<std::string>();
    s.slot = j.value("slot", "");
    s.framework = j.value("framework", "");
    s.backend = j.value("backend", "");
    s.loaded_at = j.value("loaded_at", "");
    s.generation = j.value("generation", std::uint64_t{0});
    s.load_ms = j.value("load_ms", 0.0);
    s.load_waited_ms = j.value("load_waited_ms", 0.0);
    s.inferences = j.value("inferences", std::uint64_t{0});
    s.errors = j.value("errors", std::uint64_t{0});
    if (j.contains("latency_ms") && j["latency_ms"].is_object()) {
      s.p50_ms = j["latency_ms"].value("p50", 0.0);
      s.p99_ms = j["latency_ms"].value("p99", 0.0);
    }
    if (j.contains("inputs")) s.inputs = MOTA_TRY(infos_from_json(j["inputs"]));
    if (j.contains("outputs")) s.outputs = MOTA_TRY(infos_from_json(j["outputs"]));
    return s;
  } catch (const std::exception& e) {
    return fail(Errc::parse, std::string("model status: ") + e.what());
  }
}

Result<RegionStatus> region_from_json(const Json& j) {
  if (!j.is_object()) return fail(Errc::parse, "region is not an object");
  try {
    RegionStatus r;
    r.name = j.at("name").get<std::string>();
    r.path = j.at("path").get<std::string>();
    r.offset = j.at("offset").get<std::uint64_t>();
    r.byte_size = j.at("byte_size").get<std::uint64_t>();
    r.mapped = j.at("mapped").get<bool>();
    return r;
  } catch (const std::exception& e) {
    return fail(Errc::parse, std::string("region: ") + e.what());
  }
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
  std::string where;
  std::unique_ptr<httplib::Client> http;

  explicit Impl(ClientOptions o) : opts(std::move(o)) {
    if (!opts.tcp.empty()) {
      where = opts.tcp;
      http = std::make_unique<httplib::Client>("http://" + opts.tcp);
    } else {
      where = opts.socket.string();
      http = std::make_unique<httplib::Client>(opts.socket.string());
      http->set_address_family(AF_UNIX);
    }
    http->set_keep_alive(true);
    // Headers and body are separate writes: no Nagle delay on loopback TCP.
    http->set_tcp_nodelay(true);
    auto ms = [](std::chrono::milliseconds d) {
      return std::pair<time_t, time_t>(static_cast<time_t>(d.count() / 1000),
                                       static_cast<time_t>((d.count() % 1000) * 1000));
    };
    auto [cs, cu] = ms(opts.connect_timeout);
    http->set_connection_timeout(cs, cu);
    auto [rs, ru] = ms(opts.timeout);
    http->set_read_timeout(rs, ru);
    http->set_write_timeout(rs, ru);
  }

  Error transport_error(const std::string& what, httplib::Error e) const {
    return Error(Errc::network, what + ": mota-runtime is not reachable at " + where + ": " +
                                    httplib::to_string(e));
  }

  Error answer_error(const std::string& what, int status, std::string_view body) const {
    std::string msg;
    Json j = Json::parse(body, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_string()) {
      msg = j["error"].get<std::string>();
    } else {
      msg = std::string(body.substr(0, 200));
    }
    return Error(Errc::http,
                 what + ": mota-runtime answered " + std::to_string(status) + ": " + msg, status);
  }

  // The answer's body on 2xx; else the runtime's {"error"} message as Errc::http.
  Result<httplib::Result> check(const std::string& what, httplib::Result r) const {
    if (!r) return fail(transport_error(what, r.error()));
    if (r->status >= 200 && r->status < 300) return r;
    return fail(answer_error(what, r->status, r->body));
  }

  Result<Json> get_json(const std::string& path) {
    auto r = MOTA_TRY(check("GET " + path, http->Get(path.c_str())));
    if (r->body.size() > kMaxJsonAnswer) return fail(Errc::too_large, path + ": answer too big");
    Json j = Json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return fail(Errc::parse, path + ": answer not JSON");
    return j;
  }

  // Reused by every inference of this client (one client per thread): the answer's bytes.
  std::string answer;

  Result<InferResult> infer(const std::string& name, std::string_view body,
                            httplib::Headers headers) {
    std::string what = "infer " + name;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/models/" + name + "/infer";
    req.headers = std::move(headers);
    req.headers.emplace("Content-Type", "application/octet-stream");
    // The body goes out straight from the caller's buffer (Post(body) would copy it into the
    // request first) and the answer lands in a buffer this client keeps. httplib 0.11 offers
    // both only through these Request members.
    if (!body.empty()) {
      req.content_length_ = body.size();
      req.content_provider_ = [body](std::size_t offset, std::size_t length,
                                     httplib::DataSink& sink) {
        return sink.write(body.data() + offset, length);
      };
    }
    answer.clear();
    bool too_big = false;
    req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t,
                               std::uint64_t total) {
      if (n > kMaxInferAnswer - answer.size()) {
        too_big = true;
        return false;
      }
      if (answer.empty() && total > 0 && total <= kMaxInferAnswer) answer.reserve(total);
      answer.append(data, n);
      return true;
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    if (!http->send(req, res, err)) {
      if (too_big) {
        return fail(Errc::too_large, what + ": the answer is over " +
                                         std::to_string(kMaxInferAnswer >> 20) + " MiB");
      }
      return fail(transport_error(what, err));
    }
    if (res.status < 200 || res.status >= 300) return fail(answer_error(what, res.status, answer));
    InferResult out;
    out.model = res.get_header_value("X-Mota-Model");
    out.version = res.get_header_value("X-Mota-Version");
    out.slot = res.get_header_value("X-Mota-Slot");
    out.generation = std::strtoull(res.get_header_value("X-Mota-Generation").c_str(), nullptr, 10);
    out.infer_ms = std::strtod(res.get_header_value("X-Mota-Infer-Ms").c_str(), nullptr);
    auto specs = MOTA_TRY_CTX(parse_specs(res.get_header_value("X-Mota-Outputs")),
                              what + ": X-Mota-Outputs");
    out.outputs = MOTA_TRY_CTX(split_raw(answer, specs), what + ": answer");
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
  std::string path = "/v1/models/" + name + "/load";
  Json body = {{"slot", slot.string()}};
  auto r = MOTA_TRY(impl_->check("load " + name + " from " + slot.string(),
                                 impl_->http->Post(path.c_str(), body.dump(), "application/json")));
  Json j = Json::parse(r->body, nullptr, false);
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
  std::string url = "/v1/shm/" + region + "/register";
  auto r =
      MOTA_TRY(impl_->check(what, impl_->http->Post(url.c_str(), body.dump(), "application/json")));
  return region_from_json(Json::parse(r->body, nullptr, false)).context(what);
}

Status Client::unregister_region(const std::string& region) {
  std::string url = "/v1/shm/" + region + "/unregister";
  MOTA_TRY(impl_->check("unregister region " + region,
                        impl_->http->Post(url.c_str(), "{}", "application/json")));
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
