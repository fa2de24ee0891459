#pragma once
// An ordered parallel pipeline: jobs are produced and consumed in order on the calling thread,
// while up to `threads` of them are worked on concurrently. Memory is bounded by the jobs in
// flight (threads + the one being consumed).

#include <cstddef>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "common/result.hpp"

namespace mota::delta {

// Reusable uninitialised byte buffers: a streaming apply would otherwise spend a large share of
// its time in page faults and zero-filling fresh multi-MiB vectors. Thread-safe.
class BufferPool {
 public:
  class Buf {
   public:
    Buf() = default;
    Buf(Buf&& o) noexcept { *this = std::move(o); }
    Buf& operator=(Buf&& o) noexcept {
      release();
      pool_ = o.pool_;
      data_ = std::move(o.data_);
      cap_ = o.cap_;
      size_ = o.size_;
      o.pool_ = nullptr;
      o.cap_ = o.size_ = 0;
      return *this;
    }
    ~Buf() { release(); }
    std::span<std::byte> span() { return {data_.get(), size_}; }
    std::span<const std::byte> span() const { return {data_.get(), size_}; }
    std::size_t size() const { return size_; }
    void release() {
      if (pool_ && data_) pool_->put(std::move(data_), cap_);
      data_.reset();
      pool_ = nullptr;
      cap_ = size_ = 0;
    }

   private:
    friend class BufferPool;
    BufferPool* pool_ = nullptr;
    std::unique_ptr<std::byte[]> data_;
    std::size_t cap_ = 0, size_ = 0;
  };

  // A buffer of n bytes (contents unspecified), returned to the pool when the Buf goes.
  Buf get(std::size_t n) {
    Buf b;
    b.pool_ = this;
    b.size_ = n;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (std::size_t i = 0; i < free_.size(); ++i) {
        if (free_[i].second >= n) {
          b.data_ = std::move(free_[i].first);
          b.cap_ = free_[i].second;
          free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
          return b;
        }
      }
    }
    b.data_.reset(new std::byte[n ? n : 1]);
    b.cap_ = n;
    return b;
  }

 private:
  void put(std::unique_ptr<std::byte[]> p, std::size_t cap) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < 8) free_.emplace_back(std::move(p), cap);
  }
  std::mutex mu_;
  std::vector<std::pair<std::unique_ptr<std::byte[]>, std::size_t>> free_;
};

template <class Job, class Produce, class Work, class Consume>
Status run_ordered(int threads, Produce produce, Work work, Consume consume) {
  if (threads < 1) threads = 1;
  struct Slot {
    std::unique_ptr<Job> job;
    std::future<Status> done;
  };
  std::deque<Slot> flight;
  // Futures from std::async join in their destructor, so an early return still waits for them.
  auto finish_front = [&]() -> Status {
    Slot s = std::move(flight.front());
    flight.pop_front();
    MOTA_TRY(s.done.get());
    return consume(*s.job);
  };
  for (;;) {
    std::optional<Job> next = MOTA_TRY(produce());
    if (!next) break;
    auto job = std::make_unique<Job>(std::move(*next));
    Job* raw = job.get();
    if (threads == 1) {
      MOTA_TRY(work(*raw));
      MOTA_TRY(consume(*raw));
      continue;
    }
    flight.push_back(
        Slot{std::move(job), std::async(std::launch::async, [&work, raw] { return work(*raw); })});
    while (flight.size() >= static_cast<std::size_t>(threads)) MOTA_TRY(finish_front());
  }
  while (!flight.empty()) MOTA_TRY(finish_front());
  return {};
}

}  // namespace mota::delta
