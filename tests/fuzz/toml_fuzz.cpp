// libFuzzer harness for the two TOML configs: agent.toml (agent/config.hpp parse_config) and
// runtime.toml (runtime/config.hpp parse_config). A config comes from an image or an operator's
// tool, so it is untrusted in the sense that matters: a bad one must be a clear error at start,
// never a crash. Every input goes to both parsers. Any crash, exception, sanitizer report, leak
// or hang is a bug; errors are fine but must name their source. Built with -DMOTA_FUZZ=ON and
// clang; run with `FUZZ_TARGET=toml scripts/fuzz` (from the repository root). With
// MOTA_FUZZ_SEEDS=<dir> set, initialisation copies agent/agent.toml.example and
// packaging/etc/runtime.toml there, plus a few small configs.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "agent/config.hpp"
#include "runtime/config.hpp"

namespace {

namespace stdfs = std::filesystem;
using namespace mota;

[[noreturn]] void finding(const std::string& what, std::string_view input) {
  std::fprintf(stderr, "toml: %s\ninput: %.*s\n", what.c_str(), int(input.size()), input.data());
  std::abort();
}

agent::ConfigOptions g_agent_options;

void write_seeds(const stdfs::path& dir) {
  std::error_code ec;
  stdfs::copy_file("agent/agent.toml.example", dir / "agent.toml.example",
                   stdfs::copy_options::overwrite_existing, ec);
  stdfs::copy_file("packaging/etc/runtime.toml", dir / "runtime.toml",
                   stdfs::copy_options::overwrite_existing, ec);
  std::ofstream(dir / "agent-small") << R"(server_url = "https://repo.example.com/"
device_id = "dev-1"
poll_interval = "30s"
poll_jitter = "5s"
bandwidth_limit = "1.5MB/s"
accelerators = ["cuda"]
[retry]
max_attempts = 3
[download]
min_rate = "0"
[health]
enabled = false
retry_backoff = "0s"
[[model]]
name = "det"
channel = "stable"
[[model]]
name = "seg"
channel = "beta"
)";
  std::ofstream(dir / "runtime-small") << R"(socket = "/tmp/r.sock"
socket_mode = "0600"
tcp = "127.0.0.1:8700"
load_idle = "auto"
max_body_bytes = 1024
[[model]]
name = "det"
slot = "/var/lib/mota/models/det/current"
)";
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // device_id's default comes from a machine-id file: one of our own, not the host's.
  const stdfs::path dir =
      stdfs::temp_directory_path() / ("mota-fuzz-toml-" + std::to_string(getpid()));
  stdfs::create_directories(dir);
  std::ofstream(dir / "machine-id") << "0123456789abcdef0123456789abcdef\n";
  g_agent_options.machine_id_file = dir / "machine-id";
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) write_seeds(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto a = agent::parse_config(input, "agent.toml", g_agent_options);
  if (!a && !a.error().message().starts_with("agent.toml")) {
    finding("an agent.toml error that does not name the file: " + a.error().message(), input);
  }
  auto r = runtime::parse_config(input, "runtime.toml");
  if (!r && !r.error().message().starts_with("runtime.toml")) {
    finding("a runtime.toml error that does not name the file: " + r.error().message(), input);
  }
  return 0;
}
