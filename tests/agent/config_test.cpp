#include "agent/config.hpp"

#include <gtest/gtest.h>

#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

using namespace std::chrono_literals;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::write_file(tmp_ / "machine-id", "0123456789abcdef0123456789abcdef\n");
    opts_.machine_id_file = tmp_ / "machine-id";
  }
  Result<Config> parse(const std::string& text) { return parse_config(text, "agent.toml", opts_); }
  // Parses `text` expecting failure; returns the message.
  std::string error_of(const std::string& text) {
    auto c = parse(text);
    EXPECT_FALSE(c.has_value()) << "accepted:\n" << text;
    return c ? std::string() : c.error().message();
  }

  test::TempDir tmp_;
  ConfigOptions opts_;
};

constexpr const char* kMinimal = R"(
server_url = "https://updates.example.com/fleet/"
[[model]]
name = "resnet"
channel = "stable"
)";

TEST_F(ConfigTest, MinimalConfigGetsDefaults) {
  auto c = parse(kMinimal);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->server_url, "https://updates.example.com/fleet");
  EXPECT_EQ(c->metadata_url(), "https://updates.example.com/fleet/metadata");
  EXPECT_EQ(c->targets_url(), "https://updates.example.com/fleet/targets");
  EXPECT_EQ(c->api_url("devices/x/status"),
            "https://updates.example.com/fleet/v1/devices/x/status");
  EXPECT_EQ(c->report_url, c->server_url);
  EXPECT_EQ(c->heartbeat_interval, 3600s);
  EXPECT_EQ(c->field_interval, 300s);
  EXPECT_TRUE(c->health.enabled);
  EXPECT_EQ(c->health.runtime_binary, "/usr/bin/mota-runtime");
  EXPECT_EQ(c->health.hooks_dir, "/etc/mota/health.d");
  EXPECT_EQ(c->health.watch_interval, 10s);
  EXPECT_EQ(c->health.max_retries, 3);
  EXPECT_EQ(c->health.retry_backoff, 600s);
  EXPECT_TRUE(c->accelerators.empty());
  EXPECT_TRUE(c->verify_at_start);
  EXPECT_EQ(c->device_id, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(c->state_dir, "/var/lib/mota");
  EXPECT_EQ(c->poll_interval, 300s);
  EXPECT_EQ(c->poll_jitter, 30000ms);
  ASSERT_EQ(c->models.size(), 1u);
  EXPECT_EQ(c->models[0].name, "resnet");
  EXPECT_EQ(c->models[0].channel, "stable");
  EXPECT_EQ(c->bandwidth_limit, 0u);
  EXPECT_EQ(c->retry.max_attempts, 5u);
  EXPECT_EQ(c->retry.base_delay, 1s);
  EXPECT_EQ(c->retry.max_delay, 60s);
  EXPECT_EQ(c->download.min_rate, 1000u);
  EXPECT_EQ(c->download.min_rate_window, 60s);
  EXPECT_EQ(c->download.deadline_allowance, 600s);
  EXPECT_EQ(c->download.max_deadline, 86400s);
  EXPECT_EQ(c->download.metadata_timeout, 60s);
  EXPECT_EQ(c->runtime_socket, "/run/mota/runtime.sock");
  EXPECT_EQ(c->trusted_root, "/etc/mota/root.json");
  EXPECT_TRUE(c->ca_file.empty());
  EXPECT_TRUE(c->enrollment_key.empty());
  EXPECT_EQ(c->delta, DeltaPolicy::prefer);
  EXPECT_EQ(c->log_level, log::Level::info);
  EXPECT_TRUE(c->install_window.empty());
  EXPECT_TRUE(c->models[0].install_window.empty());
  EXPECT_EQ(c->update_lock, "/run/mota-agent/update.lock");
  EXPECT_EQ(c->update_lock_max_defer, 6h);
}

TEST_F(ConfigTest, AllKeys) {
  auto c = parse(R"(
server_url = "http://127.0.0.1:8080"
device_id = "edge-cam-0042"
state_dir = "/data/mota"
poll_interval = "1h"
poll_jitter = "2m"
bandwidth_limit = "512KiB/s"
runtime_socket = "/run/x.sock"
trusted_root = "/usr/share/mota/root.json"
ca_file = "/etc/ssl/fleet-ca.pem"
enrollment_key = "/etc/mota/enrollment.pem"
delta = "never"
log_level = "debug"
verify_at_start = false
accelerators = ["cuda", "TensorRT", "cuda"]
labels = { site = "plant-3", hw = "orin-nano" }
install_window = ["Mon-Fri 01:00-05:00", "sat,sun 00:00-24:00"]
update_lock = "/run/app/update.lock"
update_lock_max_defer = "30m"

[health]
watch_interval = "0s"
max_retries = 0
retry_backoff = "0s"

[retry]
max_attempts = 9
base_delay = "5s"
max_delay = "1h"

[download]
min_rate = "10KB/s"
min_rate_window = "2m"
deadline_allowance = "1m"
max_deadline = "6h"
metadata_timeout = "15s"

[[model]]
name = "resnet"
channel = "stable"

[[model]]
name = "yolo-v8.small"
channel = "beta"
install_window = "daily 22:00-04:00"
activate = "/etc/mota/activate.d/triton-load"
probe = "/usr/local/bin/check-yolo"
)");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->server_url, "http://127.0.0.1:8080");
  EXPECT_EQ(c->device_id, "edge-cam-0042");
  EXPECT_EQ(c->state_dir, "/data/mota");
  EXPECT_EQ(c->poll_interval, 3600s);
  EXPECT_EQ(c->poll_jitter, 120000ms);
  EXPECT_EQ(c->bandwidth_limit, 512u * 1024);
  EXPECT_EQ(c->runtime_socket, "/run/x.sock");
  EXPECT_EQ(c->trusted_root, "/usr/share/mota/root.json");
  EXPECT_EQ(c->ca_file, "/etc/ssl/fleet-ca.pem");
  EXPECT_EQ(c->enrollment_key, "/etc/mota/enrollment.pem");
  EXPECT_EQ(c->delta, DeltaPolicy::never);
  EXPECT_EQ(c->log_level, log::Level::debug);
  EXPECT_FALSE(c->verify_at_start);
  EXPECT_EQ(c->health.watch_interval, 0s);
  EXPECT_EQ(c->health.max_retries, 0);
  EXPECT_EQ(c->health.retry_backoff, 0s);
  EXPECT_EQ(c->accelerators, (std::vector<std::string>{"cuda", "tensorrt"}));
  EXPECT_EQ(c->labels, (Labels{{"hw", "orin-nano"}, {"site", "plant-3"}}));
  EXPECT_EQ(c->retry.max_attempts, 9u);
  EXPECT_EQ(c->retry.base_delay, 5s);
  EXPECT_EQ(c->retry.max_delay, 3600s);
  EXPECT_EQ(c->download.min_rate, 10000u);
  EXPECT_EQ(c->download.min_rate_window, 120s);
  EXPECT_EQ(c->download.deadline_allowance, 60s);
  EXPECT_EQ(c->download.max_deadline, 6 * 3600s);
  EXPECT_EQ(c->download.metadata_timeout, 15s);
  ASSERT_EQ(c->models.size(), 2u);
  EXPECT_EQ(c->models[1].name, "yolo-v8.small");
  EXPECT_EQ(c->models[1].channel, "beta");
  EXPECT_EQ(c->install_window.text(), "Mon-Fri 01:00-05:00, Sat,Sun 00:00-24:00");
  EXPECT_TRUE(c->models[0].install_window.empty());
  EXPECT_EQ(c->models[1].install_window.text(), "daily 22:00-04:00");
  EXPECT_FALSE(c->models[0].handed_over());
  EXPECT_TRUE(c->models[1].handed_over());
  EXPECT_EQ(c->models[1].activate, "/etc/mota/activate.d/triton-load");
  EXPECT_EQ(c->models[1].probe, "/usr/local/bin/check-yolo");
  EXPECT_EQ(c->update_lock, "/run/app/update.lock");
  EXPECT_EQ(c->update_lock_max_defer, 30min);
  auto off = parse(std::string("update_lock = \"\"\n") + kMinimal);
  ASSERT_TRUE(off) << off.error().message();
  EXPECT_TRUE(off->update_lock.empty());
}

TEST_F(ConfigTest, MinimumRateOffOrBelowTheBandwidthLimit) {
  auto c = parse(std::string("bandwidth_limit = \"500B/s\"\n") + kMinimal +
                 "[download]\nmin_rate = \"0\"\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->download.min_rate, 0u);
  c = parse(std::string("bandwidth_limit = \"2MB/s\"\n") + kMinimal);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->download.min_rate, 1000u);
}

TEST_F(ConfigTest, JitterAsFraction) {
  auto c = parse(std::string("poll_interval = \"10m\"\npoll_jitter = 0.25\n") + kMinimal);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->poll_jitter, 150000ms);
  c = parse(std::string("poll_jitter = 0\n") + kMinimal);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->poll_jitter, 0ms);
}

TEST_F(ConfigTest, Bandwidth) {
  EXPECT_EQ(*parse_bandwidth("0"), 0u);
  EXPECT_EQ(*parse_bandwidth("2MB/s"), 2000000u);
  EXPECT_EQ(*parse_bandwidth("1.5MB/s"), 1500000u);
  EXPECT_EQ(*parse_bandwidth("512KiB/s"), 524288u);
  EXPECT_EQ(*parse_bandwidth("1GiB"), 1073741824u);
  EXPECT_EQ(*parse_bandwidth("100"), 100u);
  for (const char* bad : {"", "fast", "2 MB/s", "2mb/s", "MB/s", "2XB/s", "1..2MB", "-1MB/s"}) {
    auto r = parse_bandwidth(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_NE(r.error().message().find("2MB/s"), std::string::npos) << r.error().message();
    }
  }
  auto c = parse(std::string("bandwidth_limit = 4096\n") + kMinimal);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->bandwidth_limit, 4096u);
}

TEST_F(ConfigTest, LoadsFromFileAndNamesThePath) {
  auto path = tmp_ / "agent.toml";
  test::write_file(path, kMinimal);
  auto c = load_config(path, opts_);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->models[0].name, "resnet");

  test::write_file(path, std::string("poll_interval = \"soon\"\n") + kMinimal);
  c = load_config(path, opts_);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message(),
            path.string() + ": poll_interval: 'soon' is not a duration (use 30s, 5m, 1h)");

  c = load_config(tmp_ / "missing.toml", opts_);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("missing.toml"), std::string::npos) << c.error().message();
}

TEST_F(ConfigTest, SyntaxErrorHasLineAndColumn) {
  auto c = parse("server_url = \"http://x\"\n\nstate_dir = /var\n");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), Errc::parse);
  EXPECT_EQ(c.error().message().rfind("agent.toml:3:", 0), 0u) << c.error().message();
}

TEST_F(ConfigTest, DeviceIdFromMachineIdFile) {
  opts_.machine_id_file = tmp_ / "nope";
  auto msg = error_of(kMinimal);
  EXPECT_EQ(msg.rfind("agent.toml: device_id: not set, and ", 0), 0u) << msg;
  EXPECT_NE(msg.find("nope"), std::string::npos) << msg;

  test::write_file(tmp_ / "empty", "\n");
  opts_.machine_id_file = tmp_ / "empty";
  msg = error_of(kMinimal);
  EXPECT_EQ(msg.rfind("agent.toml: device_id: not set, and ", 0), 0u) << msg;

  // An explicit device_id needs no machine-id file.
  auto c = parse(std::string("device_id = \"d1\"\n") + kMinimal);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->device_id, "d1");
}

// Every rejection names the key; table-driven so each case is visible.
struct BadCase {
  std::string toml;  // prepended to (or replacing) the minimal config
  std::string expected_prefix;
  bool replace = false;  // use `toml` alone instead of toml + kMinimal
};

TEST_F(ConfigTest, EveryErrorNamesItsKey) {
  const std::vector<BadCase> cases = {
      {"serverurl = \"http://x\"\n", "agent.toml: serverurl: unknown key"},
      {"[retry]\nmax_attempt = 3\n", "agent.toml: retry.max_attempt: unknown key"},
      {"poll_interval = \"soon\"\n",
       "agent.toml: poll_interval: 'soon' is not a duration (use 30s, 5m, 1h)"},
      {"poll_interval = 300\n", "agent.toml: poll_interval: must be a duration string"},
      {"poll_interval = \"0s\"\n", "agent.toml: poll_interval: must be at least 1s"},
      {"poll_jitter = 1.5\n", "agent.toml: poll_jitter: fraction 1.5 is not within 0..1"},
      {"poll_jitter = 2\n", "agent.toml: poll_jitter: fraction 2 is not within 0..1"},
      {"bandwidth_limit = \"0.2B/s\"\n",
       "agent.toml: bandwidth_limit: '0.2B/s' is below 1 byte per second"},
      {"poll_jitter = -0.1\n", "agent.toml: poll_jitter: fraction"},
      {"poll_jitter = \"later\"\n", "agent.toml: poll_jitter: 'later' is not a duration"},
      {"poll_jitter = true\n", "agent.toml: poll_jitter: must be a fraction"},
      {"bandwidth_limit = \"fast\"\n", "agent.toml: bandwidth_limit: 'fast' is not a bandwidth"},
      {"bandwidth_limit = -5\n", "agent.toml: bandwidth_limit: must not be negative"},
      {"bandwidth_limit = 1.5\n", "agent.toml: bandwidth_limit: must be a string"},
      {"state_dir = \"var/lib/mota\"\n",
       "agent.toml: state_dir: 'var/lib/mota' must be an absolute path"},
      {"state_dir = 5\n", "agent.toml: state_dir: must be a string, not an integer"},
      {"runtime_socket = \"sock\"\n", "agent.toml: runtime_socket: 'sock' must be an absolute"},
      {"trusted_root = \"root.json\"\n", "agent.toml: trusted_root: 'root.json' must be an abs"},
      {"ca_file = \"\"\n", "agent.toml: ca_file: '' must be an absolute path"},
      {"enrollment_key = \"key.pem\"\n",
       "agent.toml: enrollment_key: 'key.pem' must be an absolute path"},
      {"delta = \"sometimes\"\n",
       "agent.toml: delta: 'sometimes' is not one of prefer, only, never"},
      {"log_level = \"loud\"\n", "agent.toml: log_level: 'loud' is not one of debug, info"},
      {"heartbeat_interval = \"often\"\n",
       "agent.toml: heartbeat_interval: 'often' is not a duration"},
      {"field_interval = \"-5s\"\n", "agent.toml: field_interval:"},
      {"report_url = \"ftp://api\"\n",
       "agent.toml: report_url: 'ftp://api' must start with http:// or https://"},
      {"device_id = \"has space\"\n", "agent.toml: device_id: 'has space' must be 1..128"},
      {"device_id = \"\"\n", "agent.toml: device_id: '' must be 1..128"},
      {"retry = 3\n", "agent.toml: retry: must be a table"},
      {"[health]\nenabled = \"yes\"\n", "agent.toml: health.enabled: must be true or false"},
      {"[health]\nprobe = 1\n", "agent.toml: health.probe: unknown key"},
      {"[health]\nmax_error_rate = 2\n", "agent.toml: health.max_error_rate: must be within 0..1"},
      {"[health]\nwatch_interval = \"often\"\n",
       "agent.toml: health.watch_interval: 'often' is not a duration"},
      {"[health]\nwatch_interval = 10\n", "agent.toml: health.watch_interval: must be a duration"},
      {"verify_at_start = \"yes\"\n", "agent.toml: verify_at_start: must be true or false"},
      {"[health]\nmax_retries = -1\n", "agent.toml: health.max_retries: -1 is not within 0..100"},
      {"[health]\nmax_retries = \"3\"\n", "agent.toml: health.max_retries: must be an integer"},
      {"[health]\nretry_backoff = \"soon\"\n",
       "agent.toml: health.retry_backoff: 'soon' is not a duration"},
      {"[health]\nretry_backoff = \"2d\"\n", "agent.toml: health.retry_backoff: is more than 1d"},
      {"accelerators = \"cuda\"\n", "agent.toml: accelerators: must be an array of names"},
      {"labels = \"site\"\n", "agent.toml: labels: must be a table like { site = \"plant-3\" }"},
      {"labels = { site = 3 }\n", "agent.toml: labels.site: must be a string, not an integer"},
      {"labels = { site = \"plant 3\" }\n",
       "agent.toml: labels.site: label site value \"plant 3\": 1 to 63 of"},
      {"labels = { \"bad key\" = \"x\" }\n", "agent.toml: labels.bad key: label key \"bad key\""},
      {"labels = { \"mota/arch\" = \"x86_64\" }\n",
       "agent.toml: labels.mota/arch: the prefix mota/ is reserved for the facts the agent "
       "reports itself"},
      {"install_window = \"Mon 25:00-26:00\"\n",
       "agent.toml: install_window: install window \"Mon 25:00-26:00\": \"25:00\" is not a time"},
      {"install_window = []\n", "agent.toml: install_window: is empty (leave it out"},
      {"install_window = 3\n", "agent.toml: install_window: must be a string like"},
      {"install_window = [\"daily 01:00-02:00\", 4]\n",
       "agent.toml: install_window[1]: must be a string, not an integer"},
      {"update_lock = \"run/lock\"\n",
       "agent.toml: update_lock: 'run/lock' must be an absolute path"},
      {"update_lock_max_defer = \"forever\"\n",
       "agent.toml: update_lock_max_defer: 'forever' is not a duration"},
      {"accelerators = [\"cuda\", 7]\n",
       "agent.toml: accelerators[1]: must be a string, not an integer"},
      {"accelerators = [\"my gpu\"]\n",
       "agent.toml: accelerators[0]: 'my gpu' is not an accelerator name"},
      {"[health]\nhooks_dir = \"health.d\"\n",
       "agent.toml: health.hooks_dir: 'health.d' must be an absolute path"},
      {"[retry]\nmax_attempts = 0\n", "agent.toml: retry.max_attempts: 0 is not within 1..1000"},
      {"[retry]\nmax_attempts = \"3\"\n", "agent.toml: retry.max_attempts: must be an integer"},
      {"[retry]\nbase_delay = \"1x\"\n", "agent.toml: retry.base_delay: '1x' is not a duration"},
      {"[retry]\nmax_delay = \"2d\"\n", "agent.toml: retry.max_delay: is more than 1d"},
      {"[retry]\nbase_delay = \"2m\"\nmax_delay = \"1m\"\n",
       "agent.toml: retry.max_delay: is shorter than retry.base_delay"},
      {"download = 1\n", "agent.toml: download: must be a table ([download])"},
      {"[download]\nmin_speed = \"1KB/s\"\n", "agent.toml: download.min_speed: unknown key"},
      {"[download]\nmin_rate = \"quick\"\n",
       "agent.toml: download.min_rate: 'quick' is not a bandwidth"},
      {"[download]\nmin_rate = 1000\n", "agent.toml: download.min_rate: must be a string"},
      {"[download]\nmin_rate_window = \"0s\"\n",
       "agent.toml: download.min_rate_window: must be at least 1s"},
      {"[download]\nmin_rate_window = \"2w\"\n",
       "agent.toml: download.min_rate_window: is more than 1w"},
      {"[download]\nmetadata_timeout = \"soon\"\n",
       "agent.toml: download.metadata_timeout: 'soon' is not a duration"},
      {"[download]\nmetadata_timeout = \"0s\"\n",
       "agent.toml: download.metadata_timeout: must be at least 1s"},
      {"[download]\nmax_deadline = \"0s\"\n",
       "agent.toml: download.max_deadline: must be at least"},
      {"[download]\ndeadline_allowance = \"2h\"\nmax_deadline = \"1h\"\n",
       "agent.toml: download.deadline_allowance: is longer than download.max_deadline"},
      {"bandwidth_limit = \"1KB/s\"\n",
       "agent.toml: download.min_rate: 1 KB/s is not below bandwidth_limit 1 KB/s"},
      // server_url
      {"[[model]]\nname = \"m\"\nchannel = \"c\"\n", "agent.toml: server_url: missing", true},
      {"server_url = \"ftp://x\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\n",
       "agent.toml: server_url: 'ftp://x' must start with http:// or https://", true},
      {"server_url = \"https://\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\n",
       "agent.toml: server_url: 'https://' has no host", true},
      {"server_url = \"https://x/?a=b\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\n",
       "agent.toml: server_url: 'https://x/?a=b' must not have a query", true},
      {"server_url = \"https://x y\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\n",
       "agent.toml: server_url: 'https://x y' contains whitespace", true},
      // models
      {"server_url = \"http://x\"\n", "agent.toml: model: missing", true},
      {"server_url = \"http://x\"\nmodel = []\n", "agent.toml: model: ", true},
      {"server_url = \"http://x\"\n[model]\nname = \"m\"\nchannel = \"c\"\n",
       "agent.toml: model: must be an array of tables", true},
      {"server_url = \"http://x\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\n[[model]]\nname = "
       "\"n\"\n",
       "agent.toml: model[1].channel: missing", true},
      {"server_url = \"http://x\"\n[[model]]\nchannel = \"c\"\n",
       "agent.toml: model[0].name: missing", true},
      {"server_url = \"http://x\"\n[[model]]\nname = \"Bad Name\"\nchannel = \"c\"\n",
       "agent.toml: model[0].name: 'Bad Name' is not a valid model name", true},
      {"server_url = \"http://x\"\n[[model]]\nname = \"m\"\nchannel = \"no/slash\"\n",
       "agent.toml: model[0].channel: 'no/slash' is not a valid channel name", true},
      {"server_url = \"http://x\"\n[[model]]\nname = \"m\"\nchannel = 1\n",
       "agent.toml: model[0].channel: must be a string, not an integer", true},
      {"server_url = \"http://x\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\nchanel = \"d\"\n",
       "agent.toml: model[0].chanel: unknown key", true},
      {"server_url = \"http://x\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\n[[model]]\nname = "
       "\"m\"\nchannel = \"d\"\n",
       "agent.toml: model[1].name: 'm' is already listed as model[0]", true},
      {"server_url = \"http://x\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\ninstall_window = "
       "\"Mon\"\n",
       "agent.toml: model[0].install_window: install window \"Mon\": expected DAYS", true},
      {"server_url = \"http://x\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\nactivate = "
       "\"hooks/load\"\n",
       "agent.toml: model[0].activate: 'hooks/load' must be an absolute path", true},
      {"server_url = \"http://x\"\n[[model]]\nname = \"m\"\nchannel = \"c\"\nprobe = 3\n",
       "agent.toml: model[0].probe: must be a string, not an integer", true},
  };
  for (const auto& tc : cases) {
    // A [table] must come last or the keys after it would belong to it.
    std::string text = tc.replace          ? tc.toml
                       : tc.toml[0] == '[' ? kMinimal + tc.toml
                                           : tc.toml + kMinimal;
    auto c = parse(text);
    ASSERT_FALSE(c) << "accepted:\n" << text;
    EXPECT_EQ(c.error().message().rfind(tc.expected_prefix, 0), 0u)
        << "config:\n"
        << text << "\nwant prefix: " << tc.expected_prefix << "\ngot: " << c.error().message();
    EXPECT_NE(c.error().code(), Errc::internal);
  }
}

TEST_F(ConfigTest, TopLevelKeyBelowATableIsNamedAsSuch) {
  auto msg = error_of(
      "[retry]\nmax_attempts = 3\nserver_url = \"http://x\"\n[[model]]\nname = "
      "\"m\"\nchannel = \"c\"\n");
  EXPECT_EQ(msg.rfind("agent.toml: retry.server_url: unknown key", 0), 0u) << msg;
  msg = error_of(std::string(kMinimal) + "log_level = \"debug\"\n");
  EXPECT_EQ(msg.rfind("agent.toml: model[0].log_level: unknown key", 0), 0u) << msg;
}

TEST_F(ConfigTest, UnknownKeyListsKnownOnes) {
  auto msg = error_of(std::string("pol_interval = \"5m\"\n") + kMinimal);
  EXPECT_NE(msg.find("poll_interval"), std::string::npos) << msg;
}

TEST_F(ConfigTest, ExampleFileParses) {
  auto c = load_config(test::source_path("agent/agent.toml.example"), opts_);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_FALSE(c->models.empty());
}

TEST_F(ConfigTest, ReportUrlSendsReportsElsewhere) {
  auto c = parse("report_url = \"https://api.example.com/mota/\"\n" + std::string(kMinimal));
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->metadata_url(), "https://updates.example.com/fleet/metadata");
  EXPECT_EQ(c->api_url("devices/x/events"), "https://api.example.com/mota/v1/devices/x/events");
}

}  // namespace
}  // namespace mota::agent
