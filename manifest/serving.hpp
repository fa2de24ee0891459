#pragma once
// The serving manifest: <agent state_dir>/serving.json, what a device has committed to serve.
//
// mota-agent writes it (atomically: temp + fsync + rename + fsync dir) whenever the committed
// slot of a model changes and at every start, from its state database, which stays the source of
// truth. mota-runtime reads it at its own start (runtime.toml `agent_state_dir`) and loads each
// model's committed slot, so serving resumes after a restart even before the agent runs; the
// agent then checks that the runtime serves exactly these slots and corrects it when not.
//
//   {"format": 1,
//    "models": [{"name": "face", "slot": "/var/lib/mota/models/face/b", "version": "1.1.0",
//                "fallback": {"slot": "/var/lib/mota/models/face/a", "version": "1.0.0"}}]}
//
// `fallback` (optional) is the previous good slot, which the runtime loads when the committed one
// does not load (the agent then reports it and makes it official, or repairs the model). Paths are
// absolute. The file is written by the agent's user only; the reader still treats it as input
// that may be damaged: size-bounded, strict types, every problem an Errc::parse naming the field.

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace mota {

inline constexpr const char* kServingFile = "serving.json";

struct ServingSlot {
  std::filesystem::path slot;  // absolute
  std::string version;         // semver
};

struct ServingModel {
  std::string name;  // valid_model_name()
  ServingSlot committed;
  std::optional<ServingSlot> fallback;
};

struct ServingManifest {
  std::vector<ServingModel> models;  // unique names, sorted by name when written

  static Result<ServingManifest> parse(std::string_view json_text);
  // Deterministic pretty JSON with a trailing newline.
  std::string serialize() const;
  const ServingModel* find(std::string_view name) const;
};

// Reads <state_dir>/serving.json. std::nullopt when the file does not exist (nothing committed
// yet); errors name the file.
Result<std::optional<ServingManifest>> read_serving_manifest(
    const std::filesystem::path& state_dir);
// Replaces <state_dir>/serving.json atomically, unless it already holds exactly these bytes (no
// write, no fsync: the agent calls this after every poll).
Status write_serving_manifest(const std::filesystem::path& state_dir, const ServingManifest& m);

}  // namespace mota
