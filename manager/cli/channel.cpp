// `mota channel set|show`: release channels and staged rollouts (manager/repo/repository.hpp).
#include <cstdio>
#include <string>

#include "manager/cli/commands.hpp"
#include "manager/repo/repository.hpp"

namespace mota::manager {
namespace {

std::string share_text(const Share& s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g%%", s.share_bp() / 100.0);
  return buf;
}

void print_channel(const Channel& c) {
  std::string rollout;
  if (c.rollout.percent == 100) {
    rollout = "100%";
  } else {
    rollout = share_text(c.rollout) + ", others " +
              (c.rollout.fallback_version.empty() ? "unchanged" : c.rollout.fallback_version);
  }
  std::printf("%-12s %-24s %-12s %-28s%s%s\n", c.channel.c_str(), c.model.c_str(),
              c.version.c_str(), rollout.c_str(),
              c.min_version.empty() ? "" : (" min " + c.min_version).c_str(),
              c.allow_downgrade ? " downgrade-allowed" : "");
  if (c.targeted) {
    std::printf("%-12s %-24s %-12s %s of devices matching %s\n", "", "",
                c.targeted->version.c_str(), share_text(*c.targeted).c_str(),
                c.targeted->select.c_str());
  }
  if (!c.install_window.empty()) {
    std::string w;
    for (const auto& t : c.install_window) w += (w.empty() ? "" : ", ") + t;
    std::printf("%-12s %-24s switch inside %s (device local time)\n", "", "", w.c_str());
  }
}

struct ChannelFlags {
  ChannelRequest request;
  std::string show_channel;
  bool show_json = false;
};

}  // namespace

void add_channel_commands(CLI::App& app, CliAction& action, std::string& repo_flag) {
  auto f = std::make_shared<ChannelFlags>();
  auto* channel = app.add_subcommand("channel", "release channels and staged rollouts");
  channel->require_subcommand(1);
  ChannelRequest& creq = f->request;
  auto* cset = channel->add_subcommand("set", "point CHANNEL's MODEL at VERSION");
  cset->add_option("CHANNEL", creq.channel, "channel name, e.g. stable")->required();
  cset->add_option("MODEL", creq.model, "model name")->required();
  cset->add_option("VERSION", creq.version, "a released version")->required();
  cset->add_option("--percent", creq.percent, "share of devices getting VERSION (0..100)")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  cset->add_flag("--allow-downgrade", creq.allow_downgrade,
                 "devices on a newer version may install VERSION");
  cset->add_option("--min-version", creq.min_version, "devices below it update regardless");
  cset->add_option("--select", creq.select,
                   "only devices whose labels match (site=plant-3,hw in (orin,rpi5)) get VERSION; "
                   "the others keep theirs");
  cset->add_option("--install-window", creq.install_window,
                   "devices switch to VERSION only inside this window of their local time "
                   "('Sat,Sun 02:00-04:00'; repeat for several)");
  add_repo_option(cset, repo_flag);
  cset->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const Channel c = MOTA_TRY_CTX(repo.set_channel(f->request), "channel set");
      if (c.targeted) {
        std::printf("channel %s: %s -> %s for %u%% of devices matching %s (others: %s)\n",
                    c.channel.c_str(), c.model.c_str(), c.targeted->version.c_str(),
                    c.targeted->percent, c.targeted->select.c_str(),
                    c.rollout.percent == 100 ? c.version.c_str() : "no change");
        return {};
      }
      std::printf("channel %s: %s -> %s", c.channel.c_str(), c.model.c_str(), c.version.c_str());
      if (c.rollout.percent < 100) {
        std::printf(
            " for %u%% of devices (others: %s)", c.rollout.percent,
            c.rollout.fallback_version.empty() ? "no change" : c.rollout.fallback_version.c_str());
      }
      std::printf("\n");
      return {};
    };
  });
  auto* cshow = channel->add_subcommand("show", "show channels");
  cshow->add_option("CHANNEL", f->show_channel, "only this channel");
  cshow->add_flag("--json", f->show_json, "machine-readable output");
  add_repo_option(cshow, repo_flag);
  cshow->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const auto channels = MOTA_TRY(repo.show_channels(f->show_channel));
      if (f->show_json) {
        Json arr = Json::array();
        for (const auto& c : channels) arr.push_back(c.to_json());
        std::printf("%s\n", arr.dump(2).c_str());
        return {};
      }
      if (channels.empty()) {
        std::printf("no channels\n");
        return {};
      }
      std::printf("%-12s %-24s %-12s %s\n", "CHANNEL", "MODEL", "VERSION", "ROLLOUT");
      for (const auto& c : channels) print_channel(c);
      return {};
    };
  });
}

}  // namespace mota::manager
