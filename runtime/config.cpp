#include "runtime/config.hpp"

#include <toml++/toml.h>

#include <charconv>
#include <optional>
#include <set>

#include "common/fs.hpp"
#include "manifest/model_manifest.hpp"

namespace mota::runtime {

namespace {

Result<std::int64_t> int_value(const toml::node& n, std::string_view key, std::int64_t lo,
                               std::int64_t hi) {
  // Type first: toml++'s value<int64_t>() converts a float node with a cast that is undefined
  // when the float is out of range (found by the toml fuzzer: max_body_bytes = 4.8e50).
  const auto* i = n.as_integer();
  if (!i) return fail(Errc::parse, std::string(key) + ": must be an integer");
  const std::optional<std::int64_t> v = i->get();
  if (*v < lo || *v > hi) {
    return fail(Errc::invalid_argument, std::string(key) + ": must be between " +
                                            std::to_string(lo) + " and " + std::to_string(hi));
  }
  return *v;
}

Result<std::string> str_value(const toml::node& n, std::string_view key) {
  if (!n.is_string()) return fail(Errc::parse, std::string(key) + ": must be a string");
  return *n.value<std::string>();
}

}  // namespace

Status parse_host_port(std::string_view text, std::string& host, int& port) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return fail(Errc::invalid_argument, "\"" + std::string(text) + "\": expected host:port");
  }
  std::string_view p = text.substr(colon + 1);
  int v = 0;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  if (ec != std::errc() || end != p.data() + p.size() || v < 0 || v > 65535) {
    return fail(Errc::invalid_argument, "\"" + std::string(text) + "\": bad port");
  }
  host = std::string(text.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  port = v;
  return {};
}

Result<Config> parse_config(std::string_view text, std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    return fail(Errc::parse, std::string(source) + ":" + std::to_string(b.line) + ":" +
                                 std::to_string(b.column) + ": " + std::string(e.description()));
  }
  static const std::set<std::string_view> kKeys = {
      "socket",          "socket_mode",   "tcp",           "http_threads",  "pool_size",
      "engine_threads",  "warmup_runs",   "load_nice",     "log_level",     "max_body_bytes",
      "model",           "load_serial",   "load_idle",     "load_yield_ms", "load_idle_escalate_ms",
      "agent_state_dir", "isolate_loads", "load_timeout_s"};
  Config c;
  auto ctx = [&](Status s) -> Status {
    if (!s) return fail(std::move(s).error().context(source));
    return {};
  };
  for (const auto& entry : root) {
    // Not a structured binding: lambdas below capture `node`, which clang 14 (the fuzz build)
    // refuses for a binding.
    std::string_view key = entry.first.str();
    const toml::node& node = entry.second;
    if (!kKeys.count(key))
      return fail(Errc::parse, std::string(source) + ": unknown key \"" + std::string(key) + "\"");
    Status st = [&]() -> Status {
      if (key == "socket") {
        c.server.socket = MOTA_TRY(str_value(node, key));
        if (!c.server.socket.empty() && !c.server.socket.is_absolute()) {
          return fail(Errc::invalid_argument, "socket: must be an absolute path");
        }
      } else if (key == "socket_mode") {
        auto s = MOTA_TRY(str_value(node, key));
        unsigned v = 0;
        auto [e, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 8);
        if (ec != std::errc() || e != s.data() + s.size() || v > 0777) {
          return fail(Errc::invalid_argument, "socket_mode: must be an octal mode like \"0660\"");
        }
        c.server.socket_mode = static_cast<mode_t>(v);
      } else if (key == "agent_state_dir") {
        c.agent_state_dir = MOTA_TRY(str_value(node, key));
        if (!c.agent_state_dir.empty() && !c.agent_state_dir.is_absolute()) {
          return fail(Errc::invalid_argument, "agent_state_dir: must be an absolute path");
        }
      } else if (key == "tcp") {
        auto s = MOTA_TRY(str_value(node, key));
        if (!s.empty())
          MOTA_TRY_CTX(parse_host_port(s, c.server.tcp_host, c.server.tcp_port), "tcp");
      } else if (key == "http_threads") {
        c.server.threads = static_cast<int>(MOTA_TRY(int_value(node, key, 1, 256)));
      } else if (key == "pool_size") {
        c.store.load.pool_size = static_cast<int>(MOTA_TRY(int_value(node, key, 1, 64)));
      } else if (key == "engine_threads") {
        c.engine_threads = static_cast<int>(MOTA_TRY(int_value(node, key, 0, 256)));
      } else if (key == "warmup_runs") {
        c.store.load.warmup_runs = static_cast<int>(MOTA_TRY(int_value(node, key, 0, 100)));
      } else if (key == "load_nice") {
        c.store.load_nice = static_cast<int>(MOTA_TRY(int_value(node, key, 0, 19)));
      } else if (key == "load_serial") {
        const auto* b = node.as_boolean();  // strict: value<bool>() would take 1 as true
        if (!b) return fail(Errc::invalid_argument, "load_serial: must be true or false");
        c.store.load.serial = b->get();
      } else if (key == "isolate_loads") {
        const auto* b = node.as_boolean();  // strict: value<bool>() would take 1 as true
        if (!b) return fail(Errc::invalid_argument, "isolate_loads: must be true or false");
        c.isolate_loads = b->get();
      } else if (key == "load_timeout_s") {
        c.store.load_timeout = std::chrono::seconds(MOTA_TRY(int_value(node, key, 1, 86400)));
      } else if (key == "load_idle") {
        const auto* b = node.as_boolean();  // strict: value<bool>() would take 1 as true
        const auto* str = node.as_string();
        if (b) {
          c.store.load_idle = b->get() ? StoreOptions::Idle::on : StoreOptions::Idle::off;
        } else if (str && str->get() == "auto") {
          c.store.load_idle = StoreOptions::Idle::automatic;
        } else {
          return fail(Errc::invalid_argument, "load_idle: must be true or false (or \"auto\")");
        }
      } else if (key == "load_idle_escalate_ms") {
        c.store.load_idle_escalate =
            std::chrono::milliseconds(MOTA_TRY(int_value(node, key, 0, 3600000)));
      } else if (key == "load_yield_ms") {
        c.store.load_yield = std::chrono::milliseconds(MOTA_TRY(int_value(node, key, 0, 600000)));
      } else if (key == "max_body_bytes") {
        c.server.max_body_bytes =
            static_cast<std::size_t>(MOTA_TRY(int_value(node, key, 1024, std::int64_t{4} << 30)));
      } else if (key == "log_level") {
        auto s = MOTA_TRY(str_value(node, key));
        if (!log::parse_level(s, c.log_level)) {
          return fail(Errc::invalid_argument, "log_level: one of debug, info, warn, error");
        }
      } else if (key == "model") {
        const auto* arr = node.as_array();
        if (!arr) return fail(Errc::parse, "model: must be an array of tables ([[model]])");
        for (std::size_t i = 0; i < arr->size(); ++i) {
          std::string where = "model[" + std::to_string(i) + "]";
          const auto* t = (*arr)[i].as_table();
          if (!t) return fail(Errc::parse, where + ": must be a table");
          StartupModel m;
          for (const auto& [mk, mv] : *t) {
            if (mk.str() == "name") {
              m.name = MOTA_TRY(str_value(mv, where + ".name"));
            } else if (mk.str() == "slot") {
              m.slot = MOTA_TRY(str_value(mv, where + ".slot"));
            } else {
              return fail(Errc::parse, where + ": unknown key \"" + std::string(mk.str()) + "\"");
            }
          }
          if (!valid_model_name(m.name))
            return fail(Errc::invalid_argument, where + ".name: invalid");
          if (!m.slot.is_absolute()) {
            return fail(Errc::invalid_argument, where + ".slot: must be an absolute path");
          }
          c.models.push_back(std::move(m));
        }
      }
      return {};
    }();
    MOTA_TRY(ctx(std::move(st)));
  }
  return c;
}

Result<Config> load_config(const std::filesystem::path& path, bool must_exist) {
  std::error_code ec;
  if (!must_exist && !std::filesystem::exists(path, ec)) return Config{};
  auto text = MOTA_TRY(fs::read_file(path, 1 << 20));
  return parse_config(text, path.string());
}

}  // namespace mota::runtime
