#include "agent/slots.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/fs.hpp"
#include "manifest/model_manifest.hpp"

namespace mota::agent {

namespace {
constexpr const char* kTempLink = ".current.tmp";

Status unlink_if_exists(const std::filesystem::path& p) {
  if (::unlink(p.c_str()) != 0 && errno != ENOENT)
    return fail(errno_error("unlink", p.string(), errno));
  return {};
}
}  // namespace

Result<SlotSet> SlotSet::open(const std::filesystem::path& state_dir, const std::string& model) {
  if (!valid_model_name(model))
    return fail(Errc::invalid_argument, "slots: '" + model + "' is not a valid model name");
  SlotSet s(model, state_dir / "models" / model);
  MOTA_TRY_CTX(fs::make_dirs(s.dir_), "slots of " + model);
  MOTA_TRY_CTX(unlink_if_exists(s.dir_ / kTempLink), "slots of " + model);
  return s;
}

Result<std::optional<Slot>> SlotSet::current() const {
  const auto link = current_link();
  struct stat st {};
  if (::lstat(link.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::optional<Slot>();
    return fail(errno_error("lstat", link.string(), errno));
  }
  if (!S_ISLNK(st.st_mode)) {
    return fail(Errc::verification,
                link.string() + " is not a symlink (expected a link to \"a\" or \"b\")");
  }
  char buf[256];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  if (n < 0) return fail(errno_error("readlink", link.string(), errno));
  std::string target(buf, static_cast<std::size_t>(n));
  if (n == static_cast<ssize_t>(sizeof buf) || (target != "a" && target != "b")) {
    if (target.size() > 64) target = target.substr(0, 64) + "...";
    return fail(Errc::verification,
                link.string() + " points to '" + target + "' (expected \"a\" or \"b\")");
  }
  Slot slot = target == "a" ? Slot::a : Slot::b;
  struct stat sst {};
  if (::lstat(path(slot).c_str(), &sst) != 0 || !S_ISDIR(sst.st_mode)) {
    return fail(Errc::verification, link.string() + " points to '" + target + "' but " +
                                        path(slot).string() + " is not a directory");
  }
  return std::optional<Slot>(slot);
}

Result<Slot> SlotSet::inactive() const {
  auto cur = MOTA_TRY(current());
  return cur ? other(*cur) : Slot::a;
}

Status SlotSet::refuse_if_current(Slot s, std::string_view action) const {
  auto cur = MOTA_TRY_CTX(
      current(), "refusing to " + std::string(action) + " slot " + slot_name(s) + " of " + model_);
  if (cur && *cur == s) {
    return fail(Errc::invalid_argument, "refusing to " + std::string(action) + " slot " +
                                            slot_name(s) + " of " + model_ +
                                            ": it is the current (active) slot");
  }
  return {};
}

Status SlotSet::prepare(Slot s) const {
  MOTA_TRY(refuse_if_current(s, "prepare"));
  MOTA_TRY_CTX(fs::remove_all(path(s)), "prepare slot " + slot_name(s) + " of " + model_);
  return fs::fsync_dir(dir_);
}

Status SlotSet::switch_to(Slot s) const {
  const std::string ctx = "switch " + model_ + " to slot " + slot_name(s);
  struct stat st {};
  if (::lstat(path(s).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return fail(Errc::not_found, ctx + ": " + path(s).string() + " is not a directory");
  const auto tmp = dir_ / kTempLink;
  // A fixed temporary name: a link left by a crash is simply replaced here.
  MOTA_TRY_CTX(unlink_if_exists(tmp), ctx);
  if (::symlink(slot_name(s).c_str(), tmp.c_str()) != 0)
    return fail(errno_error("symlink", tmp.string(), errno).context(ctx));
  if (::rename(tmp.c_str(), current_link().c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return fail(
        errno_error("rename", tmp.string() + " -> " + current_link().string(), err).context(ctx));
  }
  return fs::fsync_dir(dir_).context(ctx);
}

Result<storage::UnpackResult> SlotSet::verify(Slot s) const {
  return storage::verify_tree(path(s)).context("verify slot " + slot_name(s) + " of " + model_);
}

Status SlotSet::remove(Slot s) const {
  MOTA_TRY(refuse_if_current(s, "remove"));
  MOTA_TRY_CTX(fs::remove_all(path(s)), "remove slot " + slot_name(s) + " of " + model_);
  return fs::fsync_dir(dir_);
}

Status SlotSet::clear_current() const {
  const std::string ctx = "clear current of " + model_;
  MOTA_TRY_CTX(unlink_if_exists(current_link()), ctx);
  return fs::fsync_dir(dir_).context(ctx);
}

}  // namespace mota::agent
