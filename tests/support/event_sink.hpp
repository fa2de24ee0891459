#pragma once
// A repository server for agent integration tests (RepoServer, below), and its report endpoint: a
// POST /v1/devices/:id/events route on a test HTTP server that checks each batch's signature (as
// `mota serve` does), acknowledges it, and records every item once per seq (delivery is
// at-least-once). Header-only: only tests that already link the agent and manager include it.
//
// Thread-safety: the route runs on server threads; the accessors lock.

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "net/http_server.hpp"
#include "protocol/identity.hpp"

namespace mota::test {

class EventSink {
 public:
  // Adds the route to `server` (before it starts). `device_id` non-empty: batches from any other
  // id are refused with 400, as are unsigned or badly signed ones.
  void attach(net::HttpServer& server, std::string device_id = "") {
    server.route("POST", "/v1/devices/:id/events", [this, device_id](const net::HttpRequest& req) {
      net::HttpReply reply;
      Json body = Json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.contains("batch") ||
          (!device_id.empty() && req.path_params.at("id") != device_id) ||
          !protocol::verify_report(req.headers, req.path, req.body)) {
        reply.status = 400;
        return reply;
      }
      std::lock_guard lock(mu_);
      std::int64_t last = 0;
      for (const auto& item : body["batch"]) {
        last = item["seq"].get<std::int64_t>();
        if (last > last_seq_) {
          last_seq_ = last;
          items_.push_back(item);
        }
      }
      reply.body = Json{{"acked", last}}.dump();
      return reply;
    });
  }

  // Forgets everything received, including the last seq (for a device whose state directory a
  // test restored from a copy: its outbox numbers start again from there).
  void reset() {
    std::lock_guard lock(mu_);
    items_.clear();
    last_seq_ = 0;
  }

  // Every batch item received ({"seq", "kind", "created_at", "body"}), in seq order.
  std::vector<Json> items() const {
    std::lock_guard lock(mu_);
    return items_;
  }
  // The event bodies (heartbeats left out), in seq order.
  std::vector<Json> events() const {
    std::vector<Json> out;
    for (const auto& item : items()) {
      if (item["kind"] == "event") out.push_back(item["body"]);
    }
    return out;
  }
  std::size_t heartbeats() const {
    std::size_t n = 0;
    for (const auto& item : items()) n += item["kind"] == "heartbeat";
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Json> items_;
  std::int64_t last_seq_ = 0;
};

// What agent integration tests talk to: a fresh repository (manager::Repository::init in `dir`)
// served over loopback by the mota HTTP server, with an EventSink's events route. Use with
// ASSERT_NO_FATAL_FAILURE(fleet.start(...)).
struct RepoServer {
  std::unique_ptr<manager::Repository> repo;
  std::unique_ptr<net::HttpServer> server;
  EventSink sink;
  std::string url;                  // http://127.0.0.1:PORT
  std::filesystem::path root_json;  // the trusted root devices start from

  void start(const std::filesystem::path& dir, const std::string& device_id = "") {
    auto r = manager::Repository::init(dir, manager::Settings{});
    ASSERT_TRUE(r) << r.error().message();
    repo = std::make_unique<manager::Repository>(std::move(*r));
    root_json = dir / "repo" / "metadata" / "1.root.json";
    net::ServerConfig cfg;
    cfg.static_root = dir / "repo";
    server = net::make_http_server(cfg);
    sink.attach(*server, device_id);
    auto port = server->start();
    ASSERT_TRUE(port) << port.error().message();
    url = "http://127.0.0.1:" + std::to_string(*port);
  }
  // Points channel "stable" of `model` at `version`, for every device.
  void point_stable(const std::string& model, const std::string& version) {
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = model;
    req.version = version;
    auto ch = repo->set_channel(req);
    ASSERT_TRUE(ch) << ch.error().message();
  }
  ~RepoServer() {
    if (server) server->stop();
  }
};

}  // namespace mota::test
