#include "agent/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "common/fs.hpp"
#include "common/http.hpp"
#include "common/time.hpp"
#include "manifest/channel.hpp"
#include "manifest/model_manifest.hpp"
#include "protocol/identity.hpp"

namespace mota::agent {

std::string_view delta_policy_name(DeltaPolicy p) {
  switch (p) {
    case DeltaPolicy::prefer:
      return "prefer";
    case DeltaPolicy::only:
      return "only";
    case DeltaPolicy::never:
      return "never";
  }
  return "?";
}

std::string Config::api_url(std::string_view route) const {
  while (!route.empty() && route.front() == '/') route.remove_prefix(1);
  return report_url + "/v1/" + std::string(route);
}

namespace {

const std::set<std::string_view> kHealthKeys = {
    "enabled",        "runtime_binary", "hooks_dir",   "hook_timeout", "probe_timeout",
    "max_error_rate", "watch_interval", "max_retries", "retry_backoff"};

std::string_view type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date/time";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "nothing";
  }
}

std::string trim(std::string_view s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

const std::set<std::string_view> kModelKeys = {"name", "channel", "install_window", "activate",
                                               "probe"};

const std::set<std::string_view> kDownloadKeys = {
    "min_rate", "min_rate_window", "deadline_allowance", "max_deadline", "metadata_timeout"};

// Builds "<source>: <key>: <problem>" errors.
class Parser {
 public:
  Parser(std::string_view source, const ConfigOptions& options)
      : source_(source), options_(options) {}

  tl::unexpected<Error> bad(std::string_view key, std::string_view problem) const {
    return fail(Errc::invalid_argument,
                std::string(source_) + ": " + std::string(key) + ": " + std::string(problem));
  }

  Status check_keys(const toml::table& t, std::string_view prefix,
                    const std::set<std::string_view>& known) const {
    for (auto&& [k, v] : t) {
      if (!known.count(k.str())) {
        return bad(std::string(prefix) + std::string(k.str()),
                   "unknown key (known: " + join(known) + ")");
      }
    }
    return {};
  }

  Result<std::string> string(const toml::node& n, std::string_view key) const {
    if (auto s = n.as_string()) return s->get();
    return bad(key, "must be a string, not " + std::string(type_name(n)));
  }

  Result<std::chrono::seconds> duration(const toml::node& n, std::string_view key) const {
    if (!n.is_string())
      return bad(key, "must be a duration string like \"5m\", not " + std::string(type_name(n)));
    const std::string& s = n.as_string()->get();
    auto d = parse_duration(s);
    if (!d) return bad(key, "'" + s + "' is not a duration (use 30s, 5m, 1h)");
    return *d;
  }

  Result<std::filesystem::path> abs_path(const toml::node& n, std::string_view key) const {
    auto s = MOTA_TRY(string(n, key));
    if (s.empty() || s.front() != '/') return bad(key, "'" + s + "' must be an absolute path");
    if (s.find('\0') != std::string::npos) return bad(key, "contains a NUL byte");
    return std::filesystem::path(s);
  }

  Result<Config> parse(const toml::table& root) const {
    Config c;
    MOTA_TRY(check_keys(root, "",
                        {"server_url",
                         "device_id",
                         "state_dir",
                         "poll_interval",
                         "poll_jitter",
                         "model",
                         "bandwidth_limit",
                         "retry",
                         "runtime_socket",
                         "trusted_root",
                         "health",
                         "ca_file",
                         "delta",
                         "log_level",
                         "report_url",
                         "heartbeat_interval",
                         "field_interval",
                         "verify_at_start",
                         "accelerators",
                         "download",
                         "enrollment_key",
                         "labels",
                         "install_window",
                         "update_lock",
                         "update_lock_max_defer"}));

    // Unknown keys in sub-tables first: a top-level key written below [retry] or [[model]]
    // belongs to that table in TOML, and "retry.server_url: unknown key" says so where
    // "server_url: missing" would mislead.
    if (auto t = root["retry"].as_table())
      MOTA_TRY(check_keys(*t, "retry.", {"max_attempts", "base_delay", "max_delay"}));
    if (auto t = root["download"].as_table()) MOTA_TRY(check_keys(*t, "download.", kDownloadKeys));
    if (auto t = root["health"].as_table()) MOTA_TRY(check_keys(*t, "health.", kHealthKeys));
    if (auto arr = root["model"].as_array()) {
      for (std::size_t i = 0; i < arr->size(); ++i) {
        if (auto t = (*arr)[i].as_table())
          MOTA_TRY(check_keys(*t, "model[" + std::to_string(i) + "].", kModelKeys));
      }
    }

    const toml::node* n = root.get("server_url");
    if (!n) return bad("server_url", "missing (the repository root, e.g. https://updates.example)");
    c.server_url = MOTA_TRY(server_url(*n));
    c.report_url = c.server_url;
    if ((n = root.get("report_url"))) c.report_url = MOTA_TRY(server_url(*n, "report_url"));

    // device_id
    if ((n = root.get("device_id"))) {
      c.device_id = MOTA_TRY(string(*n, "device_id"));
      if (!protocol::valid_device_id(c.device_id))
        return bad("device_id", "'" + c.device_id + "' must be 1..128 of [A-Za-z0-9._:-]");
    } else {
      auto text = fs::read_file(options_.machine_id_file, 4096);
      if (!text) {
        return bad("device_id", "not set, and " + options_.machine_id_file.string() +
                                    " is unreadable: " + text.error().message());
      }
      c.device_id = trim(*text);
      if (!protocol::valid_device_id(c.device_id)) {
        return bad("device_id", "not set, and " + options_.machine_id_file.string() +
                                    " does not hold a usable id ('" + c.device_id + "')");
      }
    }

    if ((n = root.get("state_dir"))) c.state_dir = MOTA_TRY(abs_path(*n, "state_dir"));
    if ((n = root.get("runtime_socket")))
      c.runtime_socket = MOTA_TRY(abs_path(*n, "runtime_socket"));
    if ((n = root.get("trusted_root"))) c.trusted_root = MOTA_TRY(abs_path(*n, "trusted_root"));
    if ((n = root.get("ca_file"))) c.ca_file = MOTA_TRY(abs_path(*n, "ca_file"));
    if ((n = root.get("enrollment_key"))) {
      c.enrollment_key = MOTA_TRY(abs_path(*n, "enrollment_key"));
    }

    if ((n = root.get("poll_interval"))) {
      c.poll_interval = MOTA_TRY(duration(*n, "poll_interval"));
      if (c.poll_interval.count() < 1) return bad("poll_interval", "must be at least 1s");
    }
    c.poll_jitter = std::chrono::milliseconds(c.poll_interval) / 10;
    if ((n = root.get("poll_jitter"))) c.poll_jitter = MOTA_TRY(jitter(*n, c.poll_interval));
    if ((n = root.get("field_interval"))) {
      c.field_interval = MOTA_TRY(duration(*n, "field_interval"));
      if (c.field_interval.count() < 0) return bad("field_interval", "must not be negative");
    }
    if ((n = root.get("heartbeat_interval"))) {
      c.heartbeat_interval = MOTA_TRY(duration(*n, "heartbeat_interval"));
      if (c.heartbeat_interval.count() < 0)
        return bad("heartbeat_interval", "must not be negative");
    }

    if ((n = root.get("bandwidth_limit"))) {
      if (auto i = n->as_integer()) {
        if (i->get() < 0) return bad("bandwidth_limit", "must not be negative");
        c.bandwidth_limit = static_cast<std::uint64_t>(i->get());
      } else if (n->is_string()) {
        auto bw = parse_bandwidth(n->as_string()->get());
        if (!bw) return bad("bandwidth_limit", bw.error().message());
        c.bandwidth_limit = *bw;
      } else {
        return bad("bandwidth_limit",
                   "must be a string like \"2MB/s\", not " + std::string(type_name(*n)));
      }
    }

    if ((n = root.get("retry"))) c.retry = MOTA_TRY(retry(*n));
    if ((n = root.get("download"))) c.download = MOTA_TRY(download(*n));
    if (c.bandwidth_limit > 0 && c.download.min_rate >= c.bandwidth_limit) {
      return bad("download.min_rate", http::format_rate(c.download.min_rate) +
                                          " is not below bandwidth_limit " +
                                          http::format_rate(c.bandwidth_limit) +
                                          " (every limited download would be cut off as too slow)");
    }
    if ((n = root.get("health"))) c.health = MOTA_TRY(health(*n));
    if ((n = root.get("verify_at_start"))) {
      auto b = n->as_boolean();
      if (!b)
        return bad("verify_at_start", "must be true or false, not " + std::string(type_name(*n)));
      c.verify_at_start = b->get();
    }

    if ((n = root.get("accelerators"))) c.accelerators = MOTA_TRY(accelerators(*n));
    if ((n = root.get("labels"))) c.labels = MOTA_TRY(labels(*n));
    if ((n = root.get("install_window")))
      c.install_window = MOTA_TRY(windows(*n, "install_window"));
    if ((n = root.get("update_lock"))) {
      if (n->is_string() && n->as_string()->get().empty()) {
        c.update_lock.clear();
      } else {
        c.update_lock = MOTA_TRY(abs_path(*n, "update_lock"));
      }
    }
    if ((n = root.get("update_lock_max_defer"))) {
      c.update_lock_max_defer = MOTA_TRY(duration(*n, "update_lock_max_defer"));
      if (c.update_lock_max_defer.count() < 0) {
        return bad("update_lock_max_defer", "must not be negative");
      }
    }

    if ((n = root.get("delta"))) {
      auto s = MOTA_TRY(string(*n, "delta"));
      if (s == "prefer")
        c.delta = DeltaPolicy::prefer;
      else if (s == "only")
        c.delta = DeltaPolicy::only;
      else if (s == "never")
        c.delta = DeltaPolicy::never;
      else
        return bad("delta", "'" + s + "' is not one of prefer, only, never");
    }

    if ((n = root.get("log_level"))) {
      auto s = MOTA_TRY(string(*n, "log_level"));
      if (!log::parse_level(s, c.log_level))
        return bad("log_level", "'" + s + "' is not one of debug, info, warn, error");
    }

    n = root.get("model");
    if (!n) return bad("model", "missing: at least one [[model]] table (name, channel) is needed");
    c.models = MOTA_TRY(models(*n));
    return c;
  }

 private:
  static std::string join(const std::set<std::string_view>& s) {
    std::string out;
    for (auto k : s) {
      if (!out.empty()) out += ", ";
      out += k;
    }
    return out;
  }

  // install_window = "Mon-Fri 01:00-05:00" or an array of such (common/window.hpp).
  Result<WindowSet> windows(const toml::node& n, const std::string& key) const {
    std::vector<std::string> texts;
    if (n.is_string()) {
      texts.push_back(n.as_string()->get());
    } else if (auto arr = n.as_array()) {
      for (std::size_t i = 0; i < arr->size(); ++i) {
        texts.push_back(MOTA_TRY(string((*arr)[i], key + "[" + std::to_string(i) + "]")));
      }
    } else {
      return bad(key, "must be a string like \"Mon-Fri 01:00-05:00\" or an array of them, not " +
                          std::string(type_name(n)));
    }
    if (texts.empty()) return bad(key, "is empty (leave it out to allow any time)");
    auto set = WindowSet::parse(texts);
    if (!set) return bad(key, set.error().message());
    return std::move(*set);
  }

  // labels = { site = "plant-3", hw = "orin-nano" } (common/labels.hpp); the "mota/" prefix is
  // the agent's own facts.
  Result<Labels> labels(const toml::node& n) const {
    auto t = n.as_table();
    if (!t)
      return bad("labels",
                 "must be a table like { site = \"plant-3\" }, not " + std::string(type_name(n)));
    Labels out;
    for (const auto& [k, v] : *t) {
      const std::string key(k.str());
      const std::string where = "labels." + key;
      auto value = MOTA_TRY(string(v, where));
      if (auto ok = check_label(key, value); !ok) return bad(where, ok.error().message());
      if (key.starts_with(kFactPrefix)) {
        return bad(where, "the prefix " + std::string(kFactPrefix) +
                              " is reserved for the facts the agent reports itself");
      }
      out.emplace(key, std::move(value));
    }
    // Facts take a few of the device's labels (agent/requirements.hpp fact_labels).
    if (out.size() > kMaxLabels - 16) {
      return bad("labels", "more than " + std::to_string(kMaxLabels - 16) + " labels");
    }
    return out;
  }

  // An http(s) base URL: server_url, report_url.
  Result<std::string> server_url(const toml::node& n, std::string_view key = "server_url") const {
    auto url = MOTA_TRY(string(n, key));
    std::string_view rest;
    if (url.rfind("http://", 0) == 0)
      rest = std::string_view(url).substr(7);
    else if (url.rfind("https://", 0) == 0)
      rest = std::string_view(url).substr(8);
    else
      return bad(key, "'" + url + "' must start with http:// or https://");
    if (rest.empty() || rest.front() == '/') return bad(key, "'" + url + "' has no host");
    for (char c : url) {
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
        return bad(key, "'" + url + "' contains whitespace or a control character");
      if (c == '?' || c == '#') return bad(key, "'" + url + "' must not have a query or fragment");
    }
    while (url.back() == '/') url.pop_back();
    return url;
  }

  Result<std::chrono::milliseconds> jitter(const toml::node& n,
                                           std::chrono::seconds interval) const {
    double fraction = -1;
    if (auto f = n.as_floating_point())
      fraction = f->get();
    else if (auto i = n.as_integer())
      fraction = static_cast<double>(i->get());
    else if (n.is_string()) {
      const std::string& s = n.as_string()->get();
      auto d = parse_duration(s);
      if (!d)
        return bad("poll_jitter",
                   "'" + s + "' is not a duration (use 30s, 5m, 1h) or a fraction 0..1");
      return std::chrono::milliseconds(*d);
    } else {
      return bad("poll_jitter",
                 "must be a fraction 0..1 or a duration string, not " + std::string(type_name(n)));
    }
    if (!(fraction >= 0.0 && fraction <= 1.0)) {
      std::ostringstream os;
      os << fraction;
      return bad("poll_jitter", "fraction " + os.str() + " is not within 0..1");
    }
    return std::chrono::milliseconds(
        static_cast<std::int64_t>(std::llround(fraction * 1000.0 * double(interval.count()))));
  }

  Result<HealthConfig> health(const toml::node& n) const {
    auto t = n.as_table();
    if (!t) return bad("health", "must be a table ([health]), not " + std::string(type_name(n)));
    MOTA_TRY(check_keys(*t, "health.", kHealthKeys));
    HealthConfig h;
    if (auto v = t->get("enabled")) {
      auto b = v->as_boolean();
      if (!b)
        return bad("health.enabled", "must be true or false, not " + std::string(type_name(*v)));
      h.enabled = b->get();
    }
    if (auto v = t->get("runtime_binary"))
      h.runtime_binary = MOTA_TRY(abs_path(*v, "health.runtime_binary"));
    if (auto v = t->get("hooks_dir")) h.hooks_dir = MOTA_TRY(abs_path(*v, "health.hooks_dir"));
    if (auto v = t->get("hook_timeout")) {
      h.hook_timeout = MOTA_TRY(duration(*v, "health.hook_timeout"));
      if (h.hook_timeout.count() < 1) return bad("health.hook_timeout", "must be at least 1s");
    }
    if (auto v = t->get("probe_timeout")) {
      h.probe_timeout = MOTA_TRY(duration(*v, "health.probe_timeout"));
      if (h.probe_timeout.count() < 1) return bad("health.probe_timeout", "must be at least 1s");
    }
    if (auto v = t->get("watch_interval")) {
      h.watch_interval = MOTA_TRY(duration(*v, "health.watch_interval"));
    }
    if (auto v = t->get("max_retries")) {
      auto i = v->as_integer();
      if (!i) {
        return bad("health.max_retries", "must be an integer, not " + std::string(type_name(*v)));
      }
      if (i->get() < 0 || i->get() > 100) {
        return bad("health.max_retries", std::to_string(i->get()) + " is not within 0..100");
      }
      h.max_retries = static_cast<int>(i->get());
    }
    if (auto v = t->get("retry_backoff")) {
      h.retry_backoff = MOTA_TRY(duration(*v, "health.retry_backoff"));
      if (h.retry_backoff > std::chrono::hours(24)) {
        return bad("health.retry_backoff", "is more than 1d");
      }
    }
    if (auto v = t->get("max_error_rate")) {
      std::optional<double> d;
      if (auto f = v->as_floating_point()) d = f->get();
      if (auto i = v->as_integer()) d = static_cast<double>(i->get());
      if (!d)
        return bad("health.max_error_rate", "must be a number, not " + std::string(type_name(*v)));
      if (*d < 0 || *d > 1) return bad("health.max_error_rate", "must be within 0..1");
      h.max_error_rate = *d;
    }
    return h;
  }

  Result<std::vector<std::string>> accelerators(const toml::node& n) const {
    auto arr = n.as_array();
    if (!arr) {
      return bad("accelerators",
                 "must be an array of names like [\"cuda\"], not " + std::string(type_name(n)));
    }
    std::vector<std::string> out;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const std::string key = "accelerators[" + std::to_string(i) + "]";
      auto name = MOTA_TRY(string((*arr)[i], key));
      for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      // The model name rule: what a release's requirements.accelerators may name.
      if (!valid_model_name(name)) {
        return bad(key, "'" + name + "' is not an accelerator name ([a-z0-9][a-z0-9._-]*, <= 64)");
      }
      if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(std::move(name));
    }
    return out;
  }

  Result<DownloadConfig> download(const toml::node& n) const {
    auto t = n.as_table();
    if (!t)
      return bad("download", "must be a table ([download]), not " + std::string(type_name(n)));
    MOTA_TRY(check_keys(*t, "download.", kDownloadKeys));
    DownloadConfig d;
    if (auto v = t->get("min_rate")) {
      if (!v->is_string()) {
        return bad("download.min_rate",
                   "must be a string like \"1KB/s\", not " + std::string(type_name(*v)));
      }
      auto rate = parse_bandwidth(v->as_string()->get());
      if (!rate) return bad("download.min_rate", rate.error().message());
      d.min_rate = *rate;
    }
    // A duration of at least 1s, at most a day (a bound nobody means is a typo).
    auto positive = [&](const char* key, std::chrono::seconds& out) -> Status {
      auto v = t->get(key);
      if (!v) return {};
      const std::string name = std::string("download.") + key;
      auto dur = MOTA_TRY(duration(*v, name));
      if (dur.count() < 1) return bad(name, "must be at least 1s");
      if (dur > std::chrono::hours(24 * 7)) return bad(name, "is more than 1w");
      out = dur;
      return {};
    };
    MOTA_TRY(positive("min_rate_window", d.min_rate_window));
    MOTA_TRY(positive("max_deadline", d.max_deadline));
    MOTA_TRY(positive("metadata_timeout", d.metadata_timeout));
    if (auto v = t->get("deadline_allowance")) {
      d.deadline_allowance = MOTA_TRY(duration(*v, "download.deadline_allowance"));
      if (d.deadline_allowance > d.max_deadline) {
        return bad("download.deadline_allowance", "is longer than download.max_deadline");
      }
    }
    return d;
  }

  Result<RetryPolicy> retry(const toml::node& n) const {
    auto t = n.as_table();
    if (!t) return bad("retry", "must be a table ([retry]), not " + std::string(type_name(n)));
    MOTA_TRY(check_keys(*t, "retry.", {"max_attempts", "base_delay", "max_delay"}));
    RetryPolicy r;
    if (auto v = t->get("max_attempts")) {
      auto i = v->as_integer();
      if (!i)
        return bad("retry.max_attempts", "must be an integer, not " + std::string(type_name(*v)));
      if (i->get() < 1 || i->get() > 1000)
        return bad("retry.max_attempts", std::to_string(i->get()) + " is not within 1..1000");
      r.max_attempts = static_cast<unsigned>(i->get());
    }
    if (auto v = t->get("base_delay")) {
      auto d = MOTA_TRY(duration(*v, "retry.base_delay"));
      if (d.count() < 1) return bad("retry.base_delay", "must be at least 1s");
      r.base_delay = d;
    }
    if (auto v = t->get("max_delay")) r.max_delay = MOTA_TRY(duration(*v, "retry.max_delay"));
    if (r.max_delay > std::chrono::hours(24)) return bad("retry.max_delay", "is more than 1d");
    if (r.max_delay < r.base_delay)
      return bad("retry.max_delay", "is shorter than retry.base_delay");
    return r;
  }

  Result<std::vector<ModelSubscription>> models(const toml::node& n) const {
    auto arr = n.as_array();
    if (!arr || !arr->is_array_of_tables())
      return bad("model", "must be an array of tables ([[model]] with name and channel)");
    if (arr->empty()) return bad("model", "at least one [[model]] is needed");
    std::vector<ModelSubscription> out;
    std::map<std::string, std::size_t> seen;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const auto& t = *(*arr)[i].as_table();
      std::string prefix = "model[" + std::to_string(i) + "]";
      MOTA_TRY(check_keys(t, prefix + ".", kModelKeys));
      ModelSubscription m;
      auto name = t.get("name");
      if (!name) return bad(prefix + ".name", "missing");
      m.name = MOTA_TRY(string(*name, prefix + ".name"));
      if (!valid_model_name(m.name)) {
        return bad(prefix + ".name",
                   "'" + m.name + "' is not a valid model name ([a-z0-9][a-z0-9._-]*, <= 64)");
      }
      auto channel = t.get("channel");
      if (!channel) return bad(prefix + ".channel", "missing");
      m.channel = MOTA_TRY(string(*channel, prefix + ".channel"));
      if (!valid_channel_name(m.channel))
        return bad(prefix + ".channel", "'" + m.channel + "' is not a valid channel name");
      if (auto w = t.get("install_window")) {
        m.install_window = MOTA_TRY(windows(*w, prefix + ".install_window"));
      }
      if (auto a = t.get("activate")) m.activate = MOTA_TRY(abs_path(*a, prefix + ".activate"));
      if (auto p = t.get("probe")) m.probe = MOTA_TRY(abs_path(*p, prefix + ".probe"));
      auto [it, inserted] = seen.emplace(m.name, i);
      if (!inserted) {
        return bad(prefix + ".name", "'" + m.name + "' is already listed as model[" +
                                         std::to_string(it->second) + "]");
      }
      out.push_back(std::move(m));
    }
    return out;
  }

  std::string_view source_;
  const ConfigOptions& options_;
};

}  // namespace

Result<std::uint64_t> parse_bandwidth(std::string_view s) {
  std::string text(s);
  auto bad = [&](std::string_view why) {
    return fail(Errc::invalid_argument, "'" + text + "' " + std::string(why) +
                                            " (use e.g. \"2MB/s\", \"512KiB/s\", \"0\")");
  };
  if (s.size() >= 2 && s.substr(s.size() - 2) == "/s") s.remove_suffix(2);
  std::size_t i = 0;
  while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
  if (i == 0) return bad("is not a bandwidth");
  double value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + i, value);
  if (ec != std::errc() || ptr != s.data() + i) return bad("is not a bandwidth");
  std::string_view unit = s.substr(i);
  static const std::map<std::string_view, double> kUnits = {
      {"", 1},         {"B", 1},           {"KB", 1e3},           {"MB", 1e6}, {"GB", 1e9},
      {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"kB", 1e3}};
  auto it = kUnits.find(unit);
  if (it == kUnits.end()) return bad("has an unknown unit (B, KB, MB, GB, KiB, MiB, GiB)");
  double bytes = value * it->second;
  if (!(bytes < 1e15)) return bad("is too large");
  // "0" means unlimited, so a tiny non-zero limit must not round to it.
  if (bytes > 0 && bytes < 1) return bad("is below 1 byte per second");
  return static_cast<std::uint64_t>(std::llround(bytes));
}

Result<Config> parse_config(std::string_view text, std::string_view source_name,
                            const ConfigOptions& options) {
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    return fail(Errc::parse, std::string(source_name) + ":" + std::to_string(b.line) + ":" +
                                 std::to_string(b.column) + ": " + std::string(e.description()));
  } catch (const std::exception& e) {
    return fail(Errc::parse, std::string(source_name) + ": " + e.what());
  }
  return Parser(source_name, options).parse(root);
}

Result<Config> load_config(const std::filesystem::path& path, const ConfigOptions& options) {
  auto text = MOTA_TRY_CTX(fs::read_file(path, 1u << 20), "read config");
  return parse_config(text, path.string(), options);
}

}  // namespace mota::agent
