#include <algorithm>
#include <tuple>

#include "common/hex.hpp"
#include "common/log.hpp"
#include "common/semver.hpp"
#include "manager/repo/repository.hpp"
#include "manager/repo/store.hpp"

namespace mota::manager {

using namespace detail;

namespace {

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char ch) { return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'); });
}

Result<std::string> random_salt() {
  std::string bytes = MOTA_TRY(crypto::random_bytes(8));
  return to_hex(bytes);
}

}  // namespace

Result<Channel> Repository::set_channel(const ChannelRequest& req) {
  const Paths p(dir_);
  if (!valid_channel_name(req.channel)) {
    return fail(Errc::invalid_argument,
                "channel name '" + req.channel + "' is not valid ([a-z0-9][a-z0-9._-]{0,63})");
  }
  if (!valid_model_name(req.model)) {
    return fail(Errc::invalid_argument, "model name '" + req.model + "' is not valid");
  }
  if (req.percent > 100) {
    return fail(Errc::invalid_argument,
                "percent " + std::to_string(req.percent) + " is not in 0..100");
  }
  if (req.bp && *req.bp > 10000) {
    return fail(Errc::invalid_argument,
                "share " + std::to_string(*req.bp) + " basis points is not in 0..10000");
  }
  const unsigned share = req.bp ? *req.bp : req.percent * 100;
  if (!SemVer::parse(req.version)) {
    return fail(Errc::invalid_argument, "version '" + req.version + "' is not a semantic version");
  }
  if (!req.min_version.empty() && !SemVer::parse(req.min_version)) {
    return fail(Errc::invalid_argument,
                "min version '" + req.min_version + "' is not a semantic version");
  }

  auto lock = MOTA_TRY(DirLock::acquire(p.lock, true));
  State st = MOTA_TRY(load_state(p));
  const TimePoint now = now_();
  MOTA_TRY(check_root_usable(st, now));
  const auto& all = st.targets.signed_.targets;
  if (!all.count(release_target_path(req.model, req.version))) {
    return fail(Errc::not_found, "model " + req.model + " version " + req.version +
                                     " is not released (see `mota release list`)");
  }
  const std::string cp = channel_target_path(req.channel, req.model);
  std::optional<Channel> prev;
  if (auto it = all.find(cp); it != all.end()) {
    prev = MOTA_TRY_CTX(read_channel(p, cp, it->second), "read current channel");
  }

  if (!req.salt.empty() && (req.salt.size() != 16 || !is_hex(req.salt))) {
    return fail(Errc::invalid_argument, "salt '" + req.salt + "' is not 16 lower-case hex digits");
  }
  auto new_salt = [&]() -> Result<std::string> {
    if (!req.salt.empty()) return req.salt;
    return random_salt();
  };
  Channel c;
  c.model = req.model;
  c.channel = req.channel;
  c.version = req.version;
  c.rollout.set_share_bp(share);
  c.min_version = req.min_version;
  c.allow_downgrade = req.allow_downgrade;
  c.updated = format_time(now);
  if (!req.install_window.empty()) {
    auto set = WindowSet::parse(req.install_window);
    if (!set) return fail(Errc::invalid_argument, set.error().message());
    for (const auto& w : set->windows()) c.install_window.push_back(w.text());
  }
  if (!req.select.empty()) {
    // Targeted: the rest of the file says what the devices outside the target keep, which is
    // also all that agents from before targeting read (they never take the targeted version).
    auto sel = Selector::parse(req.select);
    if (!sel) return fail(Errc::invalid_argument, "select: " + sel.error().message());
    std::string others;
    if (prev)
      others = prev->rollout.percent == 100 ? prev->version : prev->rollout.fallback_version;
    if (others == req.version) {
      return fail(Errc::invalid_argument, "every device on channel " + req.channel + " runs " +
                                              req.model + " " + req.version +
                                              " already: nothing to target");
    }
    Targeted t;
    t.select = sel->text();
    t.version = req.version;
    t.set_share_bp(share);
    const bool same_target = prev && prev->targeted && prev->targeted->select == t.select;
    if (same_target && prev->targeted->version == req.version) {
      // Same release, new percentage: keep the sample and its fallback.
      t.salt = prev->targeted->salt;
      t.fallback_version = prev->targeted->fallback_version;
    } else {
      t.salt = MOTA_TRY(new_salt());
      // The target's devices outside the percentage keep what the target ran.
      if (same_target && prev->targeted->percent == 100) {
        t.fallback_version = prev->targeted->version;
      }
    }
    if (t.percent == 100) t.fallback_version.clear();
    if (others.empty()) {
      // A first release: devices outside the target want nothing yet.
      c.rollout.set_share_bp(0);
      c.rollout.salt = t.salt;
    } else {
      c.version = others;
      c.rollout.set_share_bp(10000);
      c.rollout.salt = prev->version == others ? prev->rollout.salt : t.salt;
    }
    c.targeted = std::move(t);
  } else if (prev && prev->version == req.version) {
    // Same release, new percentage: keep the sample (monotone rollout) and its fallback.
    c.rollout.salt = prev->rollout.salt;
    c.rollout.fallback_version = prev->rollout.fallback_version;
  } else {
    c.rollout.salt = MOTA_TRY(new_salt());
    if (prev) c.rollout.fallback_version = prev->version;
  }
  if (c.rollout.percent == 100) c.rollout.fallback_version.clear();
  if (!c.rollout.fallback_version.empty() && !c.min_version.empty() &&
      *SemVer::parse(c.rollout.fallback_version) < *SemVer::parse(c.min_version)) {
    return fail(Errc::invalid_argument, "the fallback for devices outside the rollout would be " +
                                            c.rollout.fallback_version +
                                            " (the channel's previous version), below min "
                                            "version " +
                                            c.min_version +
                                            "; use --percent 100 or a lower --min-version");
  }
  const std::string text = c.serialize();
  // Never publish what agents would refuse to parse.
  MOTA_TRY_CTX(Channel::parse(text), "internal check of the new channel file");

  Cleanup cleanup;
  const std::string sha = crypto::sha256_hex(text);
  const stdfs::path file = p.target_file(cp, sha);
  MOTA_TRY(make_dirs_tracked(file.parent_path(), cleanup));
  if (!stdfs::exists(file)) cleanup.add(file);
  MOTA_TRY(fs::write_file_atomic(file, text, 0644));

  tuf::TargetFile tf;
  tf.length = text.size();
  tf.hashes["sha256"] = sha;
  tf.custom =
      Json{{"kind", "channel"}, {"channel", c.channel}, {"model", c.model}, {"version", c.version}};
  if (c.targeted) tf.custom["targeted_version"] = c.targeted->version;
  tuf::Targets targets = st.targets.signed_;
  targets.targets[cp] = tf;
  MOTA_TRY_CTX(publish(p, st, settings_, now, Publish{std::move(targets), false}, cleanup),
               "publish");
  log::debug("channel updated",
             {{"CHANNEL", c.channel}, {"MODEL", c.model}, {"VERSION", c.version}});
  return c;
}

Result<std::vector<Channel>> Repository::show_channels(const std::string& channel) const {
  const Paths p(dir_);
  auto lock = MOTA_TRY(DirLock::acquire(p.lock, false));
  const State st = MOTA_TRY(load_state(p));
  std::vector<Channel> out;
  for (const auto& [path, t] : st.targets.signed_.targets) {
    if (path.rfind("channels/", 0) != 0) continue;
    Channel c = MOTA_TRY(read_channel(p, path, t));
    if (!channel.empty() && c.channel != channel) continue;
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const Channel& a, const Channel& b) {
    return std::tie(a.channel, a.model) < std::tie(b.channel, b.model);
  });
  return out;
}

}  // namespace mota::manager
