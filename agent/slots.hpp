#pragma once
// A/B slots of one model on disk, RAUC style:
//
//   <state_dir>/models/<name>/a/         one unpacked model tree (model.json + files)
//   <state_dir>/models/<name>/b/         the other
//   <state_dir>/models/<name>/current -> "a" | "b"   (relative symlink; absent before the first
//                                                      install)
//
// The runtime loads <model dir>/current. Install order (the caller's job):
//   s = inactive(); prepare(s); storage::unpack(..., path(s)); verify(s); switch_to(s)
// An inactive slot is by definition invalid until switch_to() makes it current, so a crash at any
// point leaves the previous model active and the half-written slot is prepared afresh next time.
// Rollback is switch_to(the other slot) after verify() of it.
//
// switch_to() is atomic: it writes a symlink under the fixed temporary name ".current.tmp" (a
// leftover from a crash is removed first, and also by open()), rename()s it over `current` and
// fsyncs the model directory. After a crash, `current` names the old slot or the new one.
//
// Safety rules: prepare() and remove() refuse (Errc::invalid_argument) to touch the slot `current`
// points to, and refuse anything while `current` is unreadable (the active model must never be
// touched on a guess). `current` is only ever read with readlink() and its target compared with
// "a"/"b": it is never followed, so a garbage link cannot lead outside the model directory.
//
// Thread-safety: none; one agent process owns a state directory. Cheap to copy (paths only).

#include <filesystem>
#include <optional>
#include <string>

#include "common/result.hpp"
#include "storage/package.hpp"

namespace mota::agent {

enum class Slot : char { a = 'a', b = 'b' };

inline constexpr Slot other(Slot s) {
  return s == Slot::a ? Slot::b : Slot::a;
}
inline std::string slot_name(Slot s) {
  return std::string(1, static_cast<char>(s));
}

class SlotSet {
 public:
  // Checks the model name (valid_model_name; Errc::invalid_argument otherwise), creates
  // <state_dir>/models/<model> if missing and removes a stale temporary link.
  static Result<SlotSet> open(const std::filesystem::path& state_dir, const std::string& model);

  const std::string& model() const { return model_; }
  const std::filesystem::path& dir() const { return dir_; }  // <state_dir>/models/<model>
  std::filesystem::path path(Slot s) const { return dir_ / slot_name(s); }
  std::filesystem::path current_link() const { return dir_ / "current"; }

  // The slot `current` points to, or nullopt when there is no `current` yet. Errc::verification
  // (with what was found) when `current` is not a symlink, points anywhere but "a" or "b", or
  // points to a slot directory that does not exist.
  Result<std::optional<Slot>> current() const;
  // The slot to install into: the one `current` does not point to, or 'a' when there is none.
  // Fails like current().
  Result<Slot> inactive() const;

  // Empties slot `s` for writing: removes whatever is there and leaves path(s) ABSENT (as
  // storage::unpack requires; a writer that is not unpack creates the directory itself), then
  // fsyncs the model directory. Refuses the current slot.
  Status prepare(Slot s) const;
  // Atomically points `current` at `s`; path(s) must be a directory. Also repairs a garbage
  // `current` (any non-directory there is replaced). Idempotent.
  Status switch_to(Slot s) const;
  // storage::verify_tree of the slot: its manifest and tree digest, or why it does not verify.
  Result<storage::UnpackResult> verify(Slot s) const;
  // Removes slot `s` (e.g. the previous version after a successful health check). Refuses the
  // current slot. A missing slot is success.
  Status remove(Slot s) const;
  // Removes `current` (the rollback of a first install: there is no previous model to point
  // at) and fsyncs the directory. A missing link is success.
  Status clear_current() const;

 private:
  SlotSet(std::string model, std::filesystem::path dir)
      : model_(std::move(model)), dir_(std::move(dir)) {}
  Status refuse_if_current(Slot s, std::string_view action) const;

  std::string model_;
  std::filesystem::path dir_;
};

}  // namespace mota::agent
