// cpp-httplib (0.11.4) backend of runtime/server.hpp. httplib 0.11 listens on AF_UNIX when the
// server's address family is set to it (the "host" is then the socket path).

#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <thread>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "manifest/model_manifest.hpp"
#include "runtime/server.hpp"
#include "runtime/shm.hpp"

namespace mota::runtime {

namespace {

using SteadyClock = std::chrono::steady_clock;

void reply_json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void reply_error(httplib::Response& res, int status, std::string_view message) {
  reply_json(res, status, Json{{"error", message}});
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
  if (with_tensors) {
    j["inputs"] = tensor_infos_json(i.inputs);
    j["outputs"] = tensor_infos_json(i.outputs);
  }
  return j;
}

void set_model_headers(httplib::Response& res, const ModelInfo& i) {
  res.set_header("X-Mota-Model", i.name);
  res.set_header("X-Mota-Version", i.version);
  res.set_header("X-Mota-Slot", i.slot.string());
  res.set_header("X-Mota-Generation", std::to_string(i.generation));
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
      : store_(store), started_(SteadyClock::now()), max_body_(max_body) {}

  void install(httplib::Server& svr) {
    svr.Get("/v1/health", [this](const httplib::Request&, httplib::Response& res) {
      Json models = Json::array();
      for (const auto& m : store_.all()) models.push_back(status_json(*m, false));
      double uptime = std::chrono::duration<double>(SteadyClock::now() - started_).count();
      reply_json(res, 200,
                 {{"status", models.empty() ? "empty" : "ok"},
                  {"uptime_s", uptime},
                  {"models", std::move(models)}});
    });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      Json models = Json::array();
      for (const auto& m : store_.all()) models.push_back(status_json(*m, true));
      reply_json(res, 200, {{"models", std::move(models)}});
    });
    svr.Get(R"(/v1/models/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      auto m = store_.get(req.matches[1]);
      if (!m)
        return reply_error(res, 404, "no model \"" + std::string(req.matches[1]) + "\" loaded");
      reply_json(res, 200, status_json(*m, true));
    });
    svr.Get("/v1/shm", [this](const httplib::Request&, httplib::Response& res) {
      Json regions = Json::array();
      for (const auto& r : regions_.list()) regions.push_back(region_json(r));
      reply_json(res, 200, {{"regions", std::move(regions)}});
    });
    svr.Post(R"(/v1/shm/([^/]+)/register)",
             [this](const httplib::Request& req, httplib::Response& res) { add_region(req, res); });
    svr.Post(R"(/v1/shm/([^/]+)/unregister)",
             [this](const httplib::Request& req, httplib::Response& res) {
               auto st = regions_.remove(req.matches[1]);
               if (!st) return reply_error(res, 404, st.error().message());
               reply_json(res, 200, Json::object());
             });
    svr.Post(R"(/v1/models/([^/]+)/load)",
             [this](const httplib::Request& req, httplib::Response& res) { load(req, res); });
    // The body is read by the handler itself (ContentReader), straight into a buffer reused by
    // this thread, instead of into a std::string that httplib grows 4 KiB at a time.
    svr.Post(R"(/v1/models/([^/]+)/infer)",
             [this](const httplib::Request& req, httplib::Response& res,
                    const httplib::ContentReader& reader) { infer(req, res, reader); });
  }

 private:
  void load(const httplib::Request& req, httplib::Response& res) {
    std::string name = req.matches[1];
    if (!valid_model_name(name)) return reply_error(res, 400, "invalid model name");
    Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("slot") ||
        !body["slot"].is_string()) {
      return reply_error(res, 400, "load: body must be {\"slot\": \"/absolute/path\"}");
    }
    std::filesystem::path slot = body["slot"].get<std::string>();
    if (!slot.is_absolute()) return reply_error(res, 400, "load: slot must be an absolute path");
    auto r = store_.load(name, slot);
    if (!r) return reply_error(res, 422, r.error().message());
    auto m = store_.get(name);
    reply_json(res, 200, status_json(*m, true));
  }

  static Json region_json(const RegionInfo& r) {
    return {{"name", r.name},
            {"path", r.path.string()},
            {"offset", r.offset},
            {"byte_size", r.byte_size},
            {"mapped", r.mapped}};
  }

  void add_region(const httplib::Request& req, httplib::Response& res) {
    Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("path") ||
        !body["path"].is_string()) {
      return reply_error(res, 400,
                         "register: body must be {\"path\": \"/dev/shm/...\", \"offset\": N, "
                         "\"byte_size\": N} (offset and byte_size optional)");
    }
    std::uint64_t at[2] = {0, 0};
    const char* keys[2] = {"offset", "byte_size"};
    for (int k = 0; k < 2; ++k) {
      if (!body.contains(keys[k])) continue;
      const Json& v = body[keys[k]];
      if (!v.is_number_unsigned()) {
        return reply_error(res, 400,
                           std::string("register: ") + keys[k] + " must be a non-negative integer");
      }
      at[k] = v.get<std::uint64_t>();
    }
    auto r = regions_.add(req.matches[1], body["path"].get<std::string>(), at[0], at[1]);
    if (!r) {
      // Everything but a taken name is about the file the client named (missing, not allowed,
      // not shared memory, too short...).
      int status = r.error().code() == Errc::already_exists ? 409 : 400;
      return reply_error(res, status, "register: " + r.error().message());
    }
    reply_json(res, 200, region_json(*r));
  }

  // A decimal byte count from a header; nullopt with `error` set when it is not one.
  static std::optional<std::uint64_t> header_u64(const httplib::Request& req, const char* key,
                                                 std::string& error) {
    const std::string* h = header(req, key);
    if (!h) return std::nullopt;
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(h->data(), h->data() + h->size(), v);
    if (ec != std::errc() || p != h->data() + h->size()) {
      error = std::string(key) + ": \"" + *h + "\" is not a byte count";
      return std::nullopt;
    }
    return v;
  }

  // Per serving thread: the request body and the outputs of the last request. httplib writes a
  // response on the thread that ran its handler, before that thread reads its next request, so
  // the response may point into these buffers. Big ones are dropped after use (see trim()).
  struct Buffers {
    std::string body;
    std::vector<TensorView> inputs;
    OutputBuffer out;
    void trim() {
      constexpr std::size_t kKeep = 16u << 20;
      if (body.capacity() > kKeep) std::string().swap(body);
      if (out.bytes.capacity() > kKeep) std::string().swap(out.bytes);
    }
  };
  static Buffers& buffers() {
    thread_local Buffers b;
    return b;
  }

  static const std::string* header(const httplib::Request& req, const char* key) {
    auto it = req.headers.find(key);  // case-insensitive, no copy
    return it == req.headers.end() ? nullptr : &it->second;
  }

  void infer(const httplib::Request& req, httplib::Response& res,
             const httplib::ContentReader& reader) {
    Buffers& buf = buffers();
    buf.trim();
    buf.body.clear();
    // The whole body is read before anything is checked, so the connection stays usable for the
    // next request whatever the answer. httplib has already refused a Content-Length over
    // max_body_bytes (413) by then.
    if (const std::string* len = header(req, "Content-Length")) {
      std::uint64_t n = 0;
      auto [p, ec] = std::from_chars(len->data(), len->data() + len->size(), n);
      if (ec == std::errc() && n <= max_body_) buf.body.reserve(n);
    }
    bool too_big = false;
    // A request without Content-Length or Transfer-Encoding has no body (a region request, as
    // `curl -X POST` sends it); httplib's reader would wait for one and fail.
    bool has_body = header(req, "Content-Length") || header(req, "Transfer-Encoding");
    bool read = !has_body || reader([&](const char* data, std::size_t n) {
      if (n > max_body_ - buf.body.size()) {
        too_big = true;
        return false;
      }
      buf.body.append(data, n);
      return true;
    });
    if (!read) {
      if (too_big || res.status == 413) {
        return reply_error(
            res, 413,
            "infer: the body is over max_body_bytes (" + std::to_string(max_body_) + " bytes)");
      }
      return reply_error(res, 400, "infer: could not read the request body");
    }

    std::string name = req.matches[1];
    // Taking the pointer pins this model for the whole request, whatever is swapped in meanwhile.
    auto model = store_.get(name);
    if (!model) return reply_error(res, 404, "no model \"" + name + "\" loaded");
    const std::string* type = header(req, "Content-Type");
    std::string_view ctype = type ? std::string_view(*type) : std::string_view();
    bool json = ctype.starts_with("application/json");
    if (!json && !ctype.empty() && !ctype.starts_with("application/octet-stream")) {
      return reply_error(res, 415,
                         "Content-Type must be application/octet-stream or application/json");
    }
    const std::string* region_name = header(req, "X-Mota-Input-Region");
    if (!region_name && (header(req, "X-Mota-Input-Offset") || header(req, "X-Mota-Input-Bytes"))) {
      return reply_error(res, 400, "infer: X-Mota-Input-Offset/-Bytes without X-Mota-Input-Region");
    }
    if (json) {
      if (region_name) {
        return reply_error(res, 400, "infer: X-Mota-Input-Region takes raw inputs, not JSON");
      }
      return infer_json(buf, *model, res);
    }

    // Raw: the inputs are views of the body, the model's declared layout unless the header says.
    std::vector<TensorInfo> declared;
    const std::vector<TensorInfo>* specs = &model->info().inputs;
    if (const std::string* h = header(req, "X-Mota-Inputs")) {
      auto parsed = parse_specs(*h);
      if (!parsed)
        return reply_error(res, 400, "infer: X-Mota-Inputs: " + parsed.error().message());
      declared = std::move(*parsed);
      specs = &declared;
    }
    std::string_view raw = buf.body;
    // Or views of a shared-memory region (runtime/shm.hpp); held until the run is over.
    std::shared_ptr<const Region> region;
    if (region_name) {
      if (!buf.body.empty()) {
        return reply_error(res, 400,
                           "infer: a request naming X-Mota-Input-Region must have an empty body");
      }
      region = regions_.get(*region_name);
      if (!region) {
        return reply_error(res, 404, "infer: no region \"" + *region_name + "\" is registered");
      }
      std::string bad;
      auto offset = header_u64(req, "X-Mota-Input-Offset", bad);
      auto length = header_u64(req, "X-Mota-Input-Bytes", bad);
      if (!bad.empty()) return reply_error(res, 400, "infer: " + bad);
      if (!length) {  // the inputs' size, which split_raw_views checks anyway
        std::uint64_t total = 0;
        for (const auto& s : *specs) {
          auto n = byte_size(s.shape, s.dtype);
          if (!n)
            return reply_error(res, 400, "infer: input \"" + s.name + "\": " + n.error().message());
          total += *n;
        }
        length = total;
      }
      // The same bound as a body: an unsealed region is copied into this thread's buffer.
      if (*length > max_body_) {
        return reply_error(res, 413,
                           "infer: X-Mota-Input-Bytes is over max_body_bytes (" +
                               std::to_string(max_body_) + " bytes)");
      }
      auto view = region->read(offset.value_or(0), *length, buf.body);
      if (!view) return reply_error(res, 400, "infer: " + view.error().message());
      raw = *view;
    }
    auto split = split_raw_views(raw, *specs, buf.inputs);
    if (!split) return reply_error(res, 400, "infer: " + split.error().message());
    auto start = SteadyClock::now();
    auto st = model->infer(buf.inputs, buf.out);
    double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
    if (!st) return reply_error(res, status_for(st.error()), st.error().message());
    set_model_headers(res, model->info());
    res.set_header("X-Mota-Infer-Ms", std::to_string(ms));
    res.set_header("X-Mota-Outputs", format_specs(buf.out.infos));
    res.status = 200;
    // Written from this thread's output buffer (where OpenCV put the outputs) by httplib right
    // after this handler returns: no copy into res.body.
    const std::string* bytes = &buf.out.bytes;
    res.set_content_provider(
        bytes->size(), "application/octet-stream",
        [bytes](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
          return sink.write(bytes->data() + offset, length);
        });
  }

  void infer_json(Buffers& buf, ServedModel& model, httplib::Response& res) {
    Json body = Json::parse(buf.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("inputs")) {
      return reply_error(res, 400, "infer: JSON body must be {\"inputs\": [...]}");
    }
    auto inputs = tensors_from_json(body["inputs"]);
    if (!inputs) return reply_error(res, 400, "infer: " + inputs.error().message());
    std::vector<TensorView> views;
    for (const auto& t : *inputs) views.push_back(TensorView::of(t));
    auto start = SteadyClock::now();
    auto st = model.infer(views, buf.out);
    double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
    if (!st) return reply_error(res, status_for(st.error()), st.error().message());
    set_model_headers(res, model.info());
    res.set_header("X-Mota-Infer-Ms", std::to_string(ms));
    const auto& i = model.info();
    reply_json(res, 200,
               {{"model", i.name},
                {"version", i.version},
                {"slot", i.slot.string()},
                {"generation", i.generation},
                {"infer_ms", ms},
                {"outputs", tensors_to_json(buf.out.tensors())}});
  }

  ModelStore& store_;
  RegionRegistry regions_;
  SteadyClock::time_point started_;
  std::size_t max_body_;
};

class HttplibServer final : public Server {
 public:
  HttplibServer(ModelStore& store, const ServerOptions& options)
      : api_(store, options.max_body_bytes), opts_(options) {}
  ~HttplibServer() override { stop(); }

  Status start() {
    if (opts_.socket.empty() && opts_.tcp_host.empty()) {
      return fail(Errc::invalid_argument, "no listener: set a socket path or a TCP address");
    }
    if (!opts_.tcp_host.empty() && !is_loopback(opts_.tcp_host)) {
      return fail(Errc::invalid_argument,
                  "tcp: " + opts_.tcp_host + " is not a loopback address (the API has no auth)");
    }
    if (!opts_.socket.empty()) {
      if (opts_.socket.native().size() >= sizeof(sockaddr_un{}.sun_path)) {
        return fail(Errc::invalid_argument, opts_.socket.string() + ": socket path too long");
      }
      if (opts_.socket.has_parent_path()) {
        MOTA_TRY_CTX(fs::make_dirs(opts_.socket.parent_path()), "socket directory");
      }
      MOTA_TRY(clear_stale_socket(opts_.socket));
      auto& svr = add_server();
      svr.set_address_family(AF_UNIX);
      // httplib takes the socket path as the host; the port is ignored for AF_UNIX.
      if (!svr.bind_to_port(opts_.socket.string(), 80)) {
        return fail(Errc::io, "bind " + opts_.socket.string() + ": failed (directory writable?)");
      }
      unix_bound_ = true;
      if (::chmod(opts_.socket.c_str(), opts_.socket_mode) != 0) {
        return fail(errno_error("chmod", opts_.socket.string(), errno));
      }
    }
    if (!opts_.tcp_host.empty()) {
      auto& svr = add_server();
      if (opts_.tcp_port == 0) {
        tcp_port_ = svr.bind_to_any_port(opts_.tcp_host);
        if (tcp_port_ <= 0) return fail(Errc::io, "bind " + opts_.tcp_host + ": failed");
      } else {
        if (!svr.bind_to_port(opts_.tcp_host, opts_.tcp_port)) {
          return fail(Errc::io, "bind " + opts_.tcp_host + ":" + std::to_string(opts_.tcp_port) +
                                    ": failed (port in use?)");
        }
        tcp_port_ = opts_.tcp_port;
      }
    }
    for (auto& s : servers_) {
      httplib::Server* p = s.get();
      threads_.emplace_back([p] { p->listen_after_bind(); });
    }
    // stop() only reaches a server that is already running: wait for it, so an immediate stop()
    // cannot miss a listener that has not entered its accept loop yet.
    for (auto& s : servers_) {
      while (!s->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return {};
  }

  void stop() override {
    for (auto& s : servers_) s->stop();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    threads_.clear();
    if (unix_bound_) {
      ::unlink(opts_.socket.c_str());
      unix_bound_ = false;
    }
  }

  int tcp_port() const override { return tcp_port_; }

 private:
  httplib::Server& add_server() {
    auto svr = std::make_unique<httplib::Server>();
    int n = std::max(1, opts_.threads);
    svr->new_task_queue = [n] { return new httplib::ThreadPool(static_cast<std::size_t>(n)); };
    svr->set_payload_max_length(opts_.max_body_bytes);
    svr->set_keep_alive_max_count(100000);
    svr->set_keep_alive_timeout(2);
    svr->set_read_timeout(30, 0);
    svr->set_write_timeout(30, 0);
    // Headers and body go out in two writes: without TCP_NODELAY, Nagle holds the second one back
    // until the client's delayed ACK (up to 40 ms) on the loopback TCP listener.
    svr->set_tcp_nodelay(true);
    api_.install(*svr);
    servers_.push_back(std::move(svr));
    return *servers_.back();
  }

  Api api_;
  ServerOptions opts_;
  std::vector<std::unique_ptr<httplib::Server>> servers_;
  std::vector<std::thread> threads_;
  int tcp_port_ = 0;
  bool unix_bound_ = false;
};

}  // namespace

Result<std::unique_ptr<Server>> Server::start(ModelStore& store, const ServerOptions& options) {
  auto s = std::make_unique<HttplibServer>(store, options);
  MOTA_TRY(s->start());
  return std::unique_ptr<Server>(std::move(s));
}

}  // namespace mota::runtime
