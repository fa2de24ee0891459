#include "runtime/backend.hpp"

#include "common/fs.hpp"

namespace mota::runtime {

Result<std::unique_ptr<Backend>> backend_for(std::string_view framework) {
  if (framework == "onnx") return make_opencv_backend();
  return fail(Errc::unsupported, "framework \"" + std::string(framework) +
                                     "\" has no backend in this mota-runtime (supported: onnx)");
}

Result<ModelManifest> read_slot_manifest(const std::filesystem::path& dir) {
  auto path = dir / kManifestName;
  auto text = MOTA_TRY_CTX(fs::read_file(path, kMaxManifestBytes), path.string());
  auto m = MOTA_TRY_CTX(ModelManifest::parse(text, /*require_files=*/false), path.string());
  if (m.name.empty()) return fail(Errc::parse, path.string() + ": name: required");
  if (m.version.empty()) return fail(Errc::parse, path.string() + ": version: required");
  return m;
}

}  // namespace mota::runtime
