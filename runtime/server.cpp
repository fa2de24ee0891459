// runtime/server.hpp on the project's HTTP server (net/http_server.hpp): its event loops own the
// connections, so a slow or idle client costs a socket, never a thread; the handlers run on its
// worker pool (ServerOptions::threads), where an inference or a load may block.

#include "runtime/server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <random>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "manifest/model_manifest.hpp"
#include "net/http_server.hpp"
#include "runtime/shm.hpp"

namespace mota::runtime {

namespace {

using SteadyClock = std::chrono::steady_clock;

using net::HttpReply;
using net::HttpRequest;

HttpReply reply_json(int status, const Json& body) {
  HttpReply r;
  r.status = status;
  r.body = body.dump();
  return r;
}

HttpReply reply_error(int status, std::string_view message) {
  return reply_json(status, Json{{"error", message}});
}

int status_for(const Error& e) {
  switch (e.code()) {
    case Errc::invalid_argument:
    case Errc::parse:
      return 400;
    case Errc::too_large:
      return 413;
    case Errc::unsupported:
      return 415;
    default:
      return 500;
  }
}

Json tensor_infos_json(const std::vector<TensorInfo>& infos) {
  Json arr = Json::array();
  for (const auto& t : infos) {
    arr.push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}});
  }
  return arr;
}

Json status_json(const ServedModel& m, bool with_tensors) {
  const auto& i = m.info();
  auto s = m.stats();
  Json j = {{"name", i.name},
            {"version", i.version},
            {"slot", i.slot.string()},
            {"generation", i.generation},
            {"framework", i.framework},
            {"backend", i.backend},
            {"loaded_at", format_time(i.loaded_at)},
            {"load_ms", i.load_ms},
            {"load_waited_ms", i.load_waited_ms},
            {"inferences", s.inferences},
            {"errors", s.errors},
            {"latency_ms", {{"p50", s.p50_ms}, {"p99", s.p99_ms}}}};
  Json hist = Json::array();
  for (const auto& [i, n] : s.latency.sparse()) hist.push_back(Json::array({i, n}));
  j["latency_histogram"] = std::move(hist);
  if (with_tensors) {
    j["inputs"] = tensor_infos_json(i.inputs);
    j["outputs"] = tensor_infos_json(i.outputs);
  }
  return j;
}

void set_model_headers(HttpReply& res, const ModelInfo& i) {
  res.headers["X-Mota-Model"] = i.name;
  res.headers["X-Mota-Version"] = i.version;
  res.headers["X-Mota-Slot"] = i.slot.string();
  res.headers["X-Mota-Generation"] = std::to_string(i.generation);
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// A socket file nobody accepts on is stale (a crashed runtime); a live one belongs to another
// runtime and is left alone. Anything that is not a socket is never removed.
Status clear_stale_socket(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail(errno_error("stat", path.string(), errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return fail(Errc::already_exists, path.string() + ": exists and is not a socket");
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(errno_error("socket", path.string(), errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::close(fd);
  if (rc == 0) {
    return fail(Errc::already_exists,
                path.string() + ": another runtime is accepting connections on it");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return fail(errno_error("remove stale socket", path.string(), errno));
  }
  return {};
}

class Api {
 public:
  Api(ModelStore& store, std::size_t max_body)
      : store_(store), started_(SteadyClock::now()), max_body_(max_body) {
    // Names this process: a model's counters restart with each load (its generation) and with
    // each runtime process (this), and the fleet tells the two apart by the pair.
    std::random_device rd;
    std::uint64_t id = (std::uint64_t{rd()} << 32) ^ rd();
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
    instance_ = buf;
  }

  // Blocking handlers (route(): the worker pool). Path segments arrive percent-decoded.
  void install(net::HttpServer& svr) {
    svr.route("GET", "/v1/health", [this](const HttpRequest&) {
      Json models = Json::array();
      for (const auto& m : store_.all()) models.push_back(status_json(*m, false));
      double uptime = std::chrono::duration<double>(SteadyClock::now() - started_).count();
      return reply_json(200, {{"status", models.empty() ? "empty" : "ok"},
                              {"uptime_s", uptime},
                              {"instance", instance_},
                              {"models", std::move(models)}});
    });
    svr.route("GET", "/v1/models", [this](const HttpRequest&) {
      Json models = Json::array();
      for (const auto& m : store_.all()) models.push_back(status_json(*m, true));
      return reply_json(200, {{"models", std::move(models)}});
    });
    svr.route("GET", "/v1/models/:name", [this](const HttpRequest& req) {
      const std::string& name = req.path_params.at("name");
      auto m = store_.get(name);
      if (!m) return reply_error(404, "no model \"" + name + "\" loaded");
      return reply_json(200, status_json(*m, true));
    });
    svr.route("GET", "/v1/shm", [this](const HttpRequest&) {
      Json regions = Json::array();
      for (const auto& r : regions_.list()) regions.push_back(region_json(r));
      return reply_json(200, {{"regions", std::move(regions)}});
    });
    svr.route("POST", "/v1/shm/:name/register",
              [this](const HttpRequest& req) { return add_region(req); });
    svr.route("POST", "/v1/shm/:name/unregister", [this](const HttpRequest& req) {
      auto st = regions_.remove(req.path_params.at("name"));
      if (!st) return reply_error(404, st.error().message());
      return reply_json(200, Json::object());
    });
    svr.route("POST", "/v1/models/:name/load",
              [this](const HttpRequest& req) { return load(req); });
    svr.route("POST", "/v1/models/:name/infer",
              [this](const HttpRequest& req) { return infer(req); });
  }

 private:
  HttpReply load(const HttpRequest& req) {
    const std::string& name = req.path_params.at("name");
    if (!valid_model_name(name)) return reply_error(400, "invalid model name");
    Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("slot") ||
        !body["slot"].is_string()) {
      return reply_error(400, "load: body must be {\"slot\": \"/absolute/path\"}");
    }
    std::filesystem::path slot = body["slot"].get<std::string>();
    if (!slot.is_absolute()) return reply_error(400, "load: slot must be an absolute path");
    auto r = store_.load(name, slot);
    if (!r) return reply_error(422, r.error().message());
    auto m = store_.get(name);
    return reply_json(200, status_json(*m, true));
  }

  static Json region_json(const RegionInfo& r) {
    return {{"name", r.name},
            {"path", r.path.string()},
            {"offset", r.offset},
            {"byte_size", r.byte_size},
            {"mapped", r.mapped}};
  }

  HttpReply add_region(const HttpRequest& req) {
    Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("path") ||
        !body["path"].is_string()) {
      return reply_error(400,
                         "register: body must be {\"path\": \"/dev/shm/...\", \"offset\": N, "
                         "\"byte_size\": N} (offset and byte_size optional)");
    }
    std::uint64_t at[2] = {0, 0};
    const char* keys[2] = {"offset", "byte_size"};
    for (int k = 0; k < 2; ++k) {
      if (!body.contains(keys[k])) continue;
      const Json& v = body[keys[k]];
      if (!v.is_number_unsigned()) {
        return reply_error(400,
                           std::string("register: ") + keys[k] + " must be a non-negative integer");
      }
      at[k] = v.get<std::uint64_t>();
    }
    auto r =
        regions_.add(req.path_params.at("name"), body["path"].get<std::string>(), at[0], at[1]);
    if (!r) {
      // Everything but a taken name is about the file the client named (missing, not allowed,
      // not shared memory, too short...).
      int status = r.error().code() == Errc::already_exists ? 409 : 400;
      return reply_error(status, "register: " + r.error().message());
    }
    return reply_json(200, region_json(*r));
  }

  // A decimal byte count from a header; nullopt with `error` set when it is not one.
  // `key` as messages name it ("X-Mota-Input-Offset").
  static std::optional<std::uint64_t> header_u64(const HttpRequest& req, std::string_view key,
                                                 std::string& error) {
    std::string lower(key);
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const std::string* h = header(req, lower.c_str());
    if (!h) return std::nullopt;
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(h->data(), h->data() + h->size(), v);
    if (ec != std::errc() || p != h->data() + h->size()) {
      error = std::string(key) + ": \"" + *h + "\" is not a byte count";
      return std::nullopt;
    }
    return v;
  }

  // Per worker thread: the input views and the outputs of the last request. The answer is a
  // copy of the outputs (the reply is written by an event loop after the handler returned, when
  // this thread may already run the next request). Big ones are dropped after use (see trim()).
  struct Buffers {
    std::string region;  // an unsealed region's bytes, read per request
    std::vector<TensorView> inputs;
    OutputBuffer out;
    void trim() {
      constexpr std::size_t kKeep = 16u << 20;
      if (region.capacity() > kKeep) std::string().swap(region);
      if (out.bytes.capacity() > kKeep) std::string().swap(out.bytes);
    }
  };
  static Buffers& buffers() {
    thread_local Buffers b;
    return b;
  }

  // Header names arrive lower-cased (net/http_server.hpp); `key` is given in lower case.
  static const std::string* header(const HttpRequest& req, const char* key) {
    auto it = req.headers.find(key);
    return it == req.headers.end() ? nullptr : &it->second;
  }

  HttpReply infer(const HttpRequest& req) {
    Buffers& buf = buffers();
    buf.trim();
    // The server has read the whole body (and refused one over max_body_bytes with 413) before
    // this runs: the connection stays usable whatever the answer.
    const std::string& name = req.path_params.at("name");
    // Taking the pointer pins this model for the whole request, whatever is swapped in meanwhile.
    auto model = store_.get(name);
    if (!model) return reply_error(404, "no model \"" + name + "\" loaded");
    const std::string* type = header(req, "content-type");
    std::string_view ctype = type ? std::string_view(*type) : std::string_view();
    bool json = ctype.starts_with("application/json");
    if (!json && !ctype.empty() && !ctype.starts_with("application/octet-stream")) {
      return reply_error(415, "Content-Type must be application/octet-stream or application/json");
    }
    const std::string* region_name = header(req, "x-mota-input-region");
    if (!region_name && (header(req, "x-mota-input-offset") || header(req, "x-mota-input-bytes"))) {
      return reply_error(400, "infer: X-Mota-Input-Offset/-Bytes without X-Mota-Input-Region");
    }
    if (json) {
      if (region_name) {
        return reply_error(400, "infer: X-Mota-Input-Region takes raw inputs, not JSON");
      }
      return infer_json(req.body, buf, *model);
    }

    // Raw: the inputs are views of the body, the model's declared layout unless the header says.
    std::vector<TensorInfo> declared;
    const std::vector<TensorInfo>* specs = &model->info().inputs;
    if (const std::string* h = header(req, "x-mota-inputs")) {
      auto parsed = parse_specs(*h);
      if (!parsed) return reply_error(400, "infer: X-Mota-Inputs: " + parsed.error().message());
      declared = std::move(*parsed);
      specs = &declared;
    }
    std::string_view raw = req.body;
    // Or views of a shared-memory region (runtime/shm.hpp); held until the run is over.
    std::shared_ptr<const Region> region;
    if (region_name) {
      if (!req.body.empty()) {
        return reply_error(400,
                           "infer: a request naming X-Mota-Input-Region must have an empty body");
      }
      region = regions_.get(*region_name);
      if (!region) {
        return reply_error(404, "infer: no region \"" + *region_name + "\" is registered");
      }
      std::string bad;
      auto offset = header_u64(req, "X-Mota-Input-Offset", bad);
      auto length = header_u64(req, "X-Mota-Input-Bytes", bad);
      if (!bad.empty()) return reply_error(400, "infer: " + bad);
      if (!length) {  // the inputs' size, which split_raw_views checks anyway
        std::uint64_t total = 0;
        for (const auto& s : *specs) {
          auto n = byte_size(s.shape, s.dtype);
          if (!n)
            return reply_error(400, "infer: input \"" + s.name + "\": " + n.error().message());
          total += *n;
        }
        length = total;
      }
      // The same bound as a body: an unsealed region is copied into this thread's buffer.
      if (*length > max_body_) {
        return reply_error(413, "infer: X-Mota-Input-Bytes is over max_body_bytes (" +
                                    std::to_string(max_body_) + " bytes)");
      }
      auto view = region->read(offset.value_or(0), *length, buf.region);
      if (!view) return reply_error(400, "infer: " + view.error().message());
      raw = *view;
    }
    auto split = split_raw_views(raw, *specs, buf.inputs);
    if (!split) return reply_error(400, "infer: " + split.error().message());
    auto start = SteadyClock::now();
    auto st = model->infer(buf.inputs, buf.out);
    double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
    if (!st) return reply_error(status_for(st.error()), st.error().message());
    HttpReply res;
    set_model_headers(res, model->info());
    res.headers["X-Mota-Infer-Ms"] = std::to_string(ms);
    res.headers["X-Mota-Outputs"] = format_specs(buf.out.infos);
    res.content_type = "application/octet-stream";
    res.body = buf.out.bytes;
    return res;
  }

  HttpReply infer_json(const std::string& text, Buffers& buf, ServedModel& model) {
    // Bounded before parsing: a JSON tree costs some 20 times its text (a 62 MiB input once took
    // 1.5 GB), and no valid input holds more numbers than the model's declared inputs. So the
    // text may be at most kJsonBytesPerNumber per number plus some structure, and hold at most
    // that many values (counted by their separators, at memchr speed).
    std::uint64_t numbers = 0;
    for (const auto& s : model.info().inputs) {
      auto n = byte_size(s.shape, s.dtype);
      if (n) numbers += *n / dtype_size(s.dtype);
    }
    constexpr std::uint64_t kJsonBytesPerNumber = 32, kJsonSlackBytes = 64u << 10,
                            kJsonSlackValues = 1024;
    const std::uint64_t max_bytes = numbers * kJsonBytesPerNumber + kJsonSlackBytes;
    if (text.size() > max_bytes) {
      return reply_error(413, "infer: a JSON body of " + std::to_string(text.size()) +
                                  " bytes is more than the model's inputs (" +
                                  std::to_string(numbers) + " numbers) can need (at most " +
                                  std::to_string(max_bytes) +
                                  "); send big inputs raw (application/octet-stream)");
    }
    const auto separators = static_cast<std::uint64_t>(std::count(text.begin(), text.end(), ','));
    if (separators > numbers + kJsonSlackValues) {
      return reply_error(413, "infer: the JSON body holds more values (" +
                                  std::to_string(separators + 1) + ") than the model's inputs (" +
                                  std::to_string(numbers) + " numbers)");
    }
    Json body = Json::parse(text, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("inputs")) {
      return reply_error(400, "infer: JSON body must be {\"inputs\": [...]}");
    }
    auto inputs = tensors_from_json(body["inputs"]);
    if (!inputs) return reply_error(400, "infer: " + inputs.error().message());
    std::vector<TensorView> views;
    for (const auto& t : *inputs) views.push_back(TensorView::of(t));
    auto start = SteadyClock::now();
    auto st = model.infer(views, buf.out);
    double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
    if (!st) return reply_error(status_for(st.error()), st.error().message());
    const auto& i = model.info();
    HttpReply res = reply_json(200, {{"model", i.name},
                                     {"version", i.version},
                                     {"slot", i.slot.string()},
                                     {"generation", i.generation},
                                     {"infer_ms", ms},
                                     {"outputs", tensors_to_json(buf.out.tensors())}});
    set_model_headers(res, i);
    res.headers["X-Mota-Infer-Ms"] = std::to_string(ms);
    return res;
  }

  ModelStore& store_;
  RegionRegistry regions_;
  SteadyClock::time_point started_;
  std::string instance_;  // random, per process
  std::size_t max_body_;
};

class NetServer final : public Server {
 public:
  NetServer(ModelStore& store, const ServerOptions& options)
      : api_(store, options.max_body_bytes), opts_(options) {}
  ~NetServer() override { stop(); }

  Status start() {
    if (opts_.socket.empty() && opts_.tcp_host.empty()) {
      return fail(Errc::invalid_argument, "no listener: set a socket path or a TCP address");
    }
    if (!opts_.tcp_host.empty() && !is_loopback(opts_.tcp_host)) {
      return fail(Errc::invalid_argument,
                  "tcp: " + opts_.tcp_host + " is not a loopback address (the API has no auth)");
    }
    net::ServerConfig config;
    config.host = opts_.tcp_host;  // empty: no TCP
    config.port = opts_.tcp_port;
    config.unix_socket = opts_.socket;
    config.unix_socket_mode = opts_.socket_mode;
    config.max_body_bytes = opts_.max_body_bytes;
    // Two requests' worth of bodies in flight at most (a few local clients; a flood of big
    // uploads from one of them gets 503 instead of the device's memory).
    config.max_bodies_bytes = 2 * opts_.max_body_bytes;
    config.threads = std::max(1, opts_.threads);
    // One loop reads and writes every connection: the work is in the handlers, and a device has
    // a few local clients, not a fleet.
    config.io_threads = 1;
    // Local clients keep their connection for as long as they like (the agent, a camera loop).
    config.keep_alive_max_count = std::size_t{1} << 40;
    config.keep_alive_timeout_s = 30;  // an idle connection costs a socket, not a thread
    config.request_timeout_s = 30;
    config.write_timeout_s = 30;
    if (!opts_.socket.empty()) {
      if (opts_.socket.native().size() >= sizeof(sockaddr_un{}.sun_path)) {
        return fail(Errc::invalid_argument, opts_.socket.string() + ": socket path too long");
      }
      if (opts_.socket.has_parent_path()) {
        MOTA_TRY_CTX(fs::make_dirs(opts_.socket.parent_path()), "socket directory");
      }
      MOTA_TRY(clear_stale_socket(opts_.socket));
    }
    server_ = net::make_http_server(config);
    api_.install(*server_);
    auto port = server_->start();
    if (!port) {
      server_.reset();
      return fail(port.error());
    }
    tcp_port_ = *port;
    return {};
  }

  void stop() override {
    if (server_) server_->stop();  // also removes the socket file
  }

  int tcp_port() const override { return tcp_port_; }

 private:
  Api api_;
  ServerOptions opts_;
  std::unique_ptr<net::HttpServer> server_;
  int tcp_port_ = 0;
};

}  // namespace

Result<std::unique_ptr<Server>> Server::start(ModelStore& store, const ServerOptions& options) {
  auto s = std::make_unique<NetServer>(store, options);
  MOTA_TRY(s->start());
  return std::unique_ptr<Server>(std::move(s));
}

}  // namespace mota::runtime
