#include "runtime/backend.hpp"

#include <algorithm>

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

namespace mota::runtime {

std::vector<Tensor> OutputBuffer::tensors() const {
  std::vector<Tensor> out;
  out.reserve(infos.size());
  for (std::size_t i = 0; i < infos.size(); ++i) {
    out.push_back({infos[i].name, infos[i].dtype, infos[i].shape, std::string(data(i))});
  }
  return out;
}

Result<std::vector<Tensor>> Model::run(const std::vector<Tensor>& inputs) {
  std::vector<TensorView> views;
  views.reserve(inputs.size());
  for (const auto& t : inputs) views.push_back(TensorView::of(t));
  OutputBuffer out;
  MOTA_TRY(run_into(views, out));
  return out.tensors();
}

Status check_inputs(const std::vector<TensorInfo>& want, std::span<const TensorView> got) {
  if (got.size() != want.size()) {
    return fail(Errc::invalid_argument, "model takes " + std::to_string(want.size()) +
                                            " input(s), got " + std::to_string(got.size()));
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& w = want[i];
    const auto& g = got[i];
    if (!g.name.empty() && g.name != w.name) {
      return fail(Errc::invalid_argument, "input " + std::to_string(i) + " is \"" + w.name +
                                              "\", got \"" + std::string(g.name) + "\"");
    }
    bool same_shape = std::equal(g.shape.begin(), g.shape.end(), w.shape.begin(), w.shape.end());
    if (g.dtype != w.dtype || !same_shape) {
      Shape gs(g.shape.begin(), g.shape.end());
      return fail(Errc::invalid_argument,
                  "input \"" + w.name + "\" must be " + std::string(dtype_name(w.dtype)) + " [" +
                      format_shape(w.shape) + "], got " + std::string(dtype_name(g.dtype)) + " [" +
                      format_shape(gs) + "]");
    }
    auto n = byte_size(w.shape, w.dtype);
    if (!n || g.data.size() != *n) {
      return fail(Errc::invalid_argument, "input \"" + w.name + "\" has " +
                                              std::to_string(g.data.size()) + " bytes, needs " +
                                              (n ? std::to_string(*n) : std::string("?")));
    }
  }
  return {};
}

}  // namespace mota::runtime
