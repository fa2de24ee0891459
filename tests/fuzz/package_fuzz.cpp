// libFuzzer harness for package unpacking (storage/package.hpp unpack): a .mota file comes from
// a server or a USB stick and is unpacked before anything else checks it. The input's first byte
// picks the mode, the rest is the tar stream inside the package: bit 0 clear, the harness
// compresses it with zstd (so mutations reach the tar reader and the checks, not only zstd's
// frame checks); set, the bytes are the package as is. Bit 1 set turns off content hashing
// (UnpackLimits::check_file_hashes), so mutated files can get as far as a finished tree.
// Any crash, exception, sanitizer report, leak or hang is a bug; errors are fine. Invariants:
// nothing is ever written outside the destination directory (the harness unpacks into a sandbox
// and looks at all of it afterwards; no symlinks, nothing but regular files and directories), a
// failed unpack leaves nothing behind, and a finished tree passes verify_tree with the manifest
// the unpack returned. Built with -DMOTA_FUZZ=ON and clang; run with `FUZZ_TARGET=package
// scripts/fuzz`. With MOTA_FUZZ_SEEDS=<dir> set, initialisation packs small models with pack()
// and writes their tar streams (mode byte 0) there.
#include <unistd.h>
#include <zstd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "manifest/model_manifest.hpp"
#include "storage/package.hpp"

namespace {

namespace stdfs = std::filesystem;
using namespace mota;

stdfs::path g_sandbox;  // holds only "out" (the destination) while an input is unpacked

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "package: %s\n", what.c_str());
  std::abort();
}

std::string read_all(const stdfs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string decompress(const std::string& z) {
  std::string out;
  ZSTD_DStream* d = ZSTD_createDStream();
  ZSTD_inBuffer in{z.data(), z.size(), 0};
  std::string buf(1 << 16, '\0');
  while (in.pos < in.size) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    if (ZSTD_isError(ZSTD_decompressStream(d, &o, &in))) std::abort();
    out.append(buf.data(), o.pos);
  }
  ZSTD_freeDStream(d);
  return out;
}

void write_seed(const stdfs::path& dir, const std::string& name,
                const std::vector<std::pair<std::string, std::string>>& files,
                const std::string& manifest) {
  const stdfs::path src = g_sandbox.parent_path() / ("seed-" + name);
  stdfs::remove_all(src);
  for (const auto& [path, content] : files) {
    stdfs::create_directories((src / path).parent_path());
    std::ofstream(src / path, std::ios::binary) << content;
  }
  std::ofstream(src / "model.json") << manifest;
  const stdfs::path pkg = g_sandbox.parent_path() / (name + ".mota");
  auto packed = storage::pack(src, pkg, {});
  if (!packed) finding("seed " + name + ": " + packed.error().message());
  std::ofstream(dir / name, std::ios::binary) << '\0' << decompress(read_all(pkg));
  stdfs::remove_all(src);
  stdfs::remove(pkg);
}

void write_seeds(const stdfs::path& dir) {
  write_seed(dir, "small", {{"model.onnx", std::string(100, 'w')}, {"labels.txt", "a\nb\n"}},
             R"({"name": "det", "version": "1.0.0", "framework": "other", "entry": "model.onnx",
                 "labels": "labels.txt"})");
  write_seed(dir, "nested",
             {{"weights/a/b.bin", std::string(3000, '\0') + "x"},
              {"health/input.bin", std::string(48, '\1')},
              {"health/expected.bin", std::string(8, '\2')},
              {"r\xc3\xa9sum\xc3\xa9.txt", ""}},
             R"({"name": "seg", "version": "2.0.0-rc.1", "framework": "other",
                 "entry": "weights/a/b.bin", "health": {"input": "health/input.bin",
                 "expected_output": "health/expected.bin", "tolerance": 0.5}})");
  write_seed(dir, "long-name", {{std::string(120, 'd') + "/" + std::string(150, 'f'), "z"}},
             R"({"name": "l", "version": "0.0.1", "framework": "other", "entry": ")" +
                 std::string(120, 'd') + "/" + std::string(150, 'f') + R"("})");
}

// Everything under the sandbox must be inside out/, and only regular files and directories.
void check_sandbox(bool ok) {
  const stdfs::path out = g_sandbox / "out";
  for (const auto& e : stdfs::recursive_directory_iterator(g_sandbox)) {
    const auto rel = e.path().lexically_relative(g_sandbox);
    if (*rel.begin() != "out") finding("unpack wrote outside its directory: " + rel.string());
    if (!ok) finding("a failed unpack left " + rel.string() + " behind");
    const auto st = e.symlink_status();
    if (!stdfs::is_regular_file(st) && !stdfs::is_directory(st)) {
      finding("unpack made something other than a file or directory: " + rel.string());
    }
  }
  if (ok && !stdfs::is_directory(out)) finding("a finished unpack made no directory");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // On tmpfs where there is one: unpack fsyncs every file and directory.
  const stdfs::path base = stdfs::is_directory("/dev/shm") && ::access("/dev/shm", W_OK) == 0
                               ? stdfs::path("/dev/shm")
                               : stdfs::temp_directory_path();
  const stdfs::path dir = base / ("mota-fuzz-package-" + std::to_string(::getpid()));
  g_sandbox = dir / "sandbox";
  stdfs::remove_all(dir);
  stdfs::create_directories(g_sandbox);
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) write_seeds(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  std::string stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (!(mode & 1)) {
    std::string z(ZSTD_compressBound(stream.size()), '\0');
    const std::size_t n = ZSTD_compress(z.data(), z.size(), stream.data(), stream.size(), 1);
    if (ZSTD_isError(n)) std::abort();
    z.resize(n);
    stream = std::move(z);
  }
  std::size_t pos = 0;
  storage::ReadFn source = [&](std::span<std::byte> buf) -> Result<std::size_t> {
    // Odd read sizes: the reader must not depend on how the stream arrives.
    const std::size_t n = std::min({buf.size(), stream.size() - pos, std::size_t(4093)});
    std::memcpy(buf.data(), stream.data() + pos, n);
    pos += n;
    return n;
  };
  storage::UnpackLimits limits;
  limits.max_total_bytes = 64 << 20;
  limits.max_files = 1000;
  limits.check_file_hashes = !(mode & 2);
  const stdfs::path out = g_sandbox / "out";
  auto r = storage::unpack(source, out, limits);
  check_sandbox(bool(r));
  if (r && limits.check_file_hashes) {
    auto v = storage::verify_tree(out);
    if (!v) finding("an unpacked tree fails verify_tree: " + v.error().message());
    if (v->tree_digest != r->tree_digest) finding("unpack and verify_tree disagree on the digest");
  }
  std::error_code ec;
  stdfs::remove_all(out, ec);
  return 0;
}
