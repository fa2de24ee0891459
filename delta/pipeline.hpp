#pragma once
// An ordered parallel pipeline: jobs are produced and consumed in order on the calling thread,
// while up to `threads` of them are worked on concurrently. Memory is bounded by the jobs in
// flight (threads + the one being consumed).

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "common/result.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define MOTA_DELTA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOTA_DELTA_ASAN 1
#endif
#endif
#ifndef MOTA_DELTA_ASAN
#define MOTA_DELTA_ASAN 0
#endif

namespace mota::delta {

// Reusable uninitialised byte buffers: a streaming apply would otherwise spend a large share of
// its time in page faults and zero-filling fresh multi-MiB buffers. Sizes are rounded up to
// 64 KiB so that chunks of slightly different sizes share buffers; the smallest free buffer
// that fits is reused; at most kKeep free buffers are kept. Blocks are mapped and unmapped
// directly (not through malloc, whose arenas would keep freed multi-MiB blocks resident), so the
// peak RSS is the buffers in use plus kKeep. Thread-safe.
class BufferPool {
 public:
  static constexpr std::size_t kKeep = 4;

  // One mapped block; owns it.
  class Block {
   public:
    Block() = default;
    explicit Block(std::size_t cap) : cap_(cap) {
#if MOTA_DELTA_ASAN
      p_ = new std::byte[cap];
#else
      void* p = ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();  // as operator new would
      p_ = static_cast<std::byte*>(p);
#endif
    }
    Block(Block&& o) noexcept : p_(std::exchange(o.p_, nullptr)), cap_(std::exchange(o.cap_, 0)) {}
    Block& operator=(Block&& o) noexcept {
      if (this != &o) {
        reset();
        p_ = std::exchange(o.p_, nullptr);
        cap_ = std::exchange(o.cap_, 0);
      }
      return *this;
    }
    ~Block() {
      reset();
    }
    void reset() {
#if MOTA_DELTA_ASAN
      delete[] p_;
#else
      if (p_) ::munmap(p_, cap_);
#endif
      p_ = nullptr;
      cap_ = 0;
    }
    std::byte* data() const {
      return p_;
    }
    std::size_t cap() const {
      return cap_;
    }

   private:
    std::byte* p_ = nullptr;
    std::size_t cap_ = 0;
  };

  class Buf {
   public:
    Buf() = default;
    Buf(Buf&& o) noexcept { *this = std::move(o); }
    Buf& operator=(Buf&& o) noexcept {
      if (this == &o) return *this;
      release();
      pool_ = std::exchange(o.pool_, nullptr);
      block_ = std::move(o.block_);
      size_ = std::exchange(o.size_, 0);
      return *this;
    }
    ~Buf() { release(); }
    std::span<std::byte> span() { return {block_.data(), size_}; }
    std::span<const std::byte> span() const { return {block_.data(), size_}; }
    std::size_t size() const { return size_; }
    void release() {
      if (pool_ && block_.data()) pool_->put(std::move(block_));
      block_.reset();
      pool_ = nullptr;
      size_ = 0;
    }

   private:
    friend class BufferPool;
    BufferPool* pool_ = nullptr;
    Block block_;
    std::size_t size_ = 0;
  };

  // A buffer of n bytes (contents unspecified), returned to the pool when the Buf goes.
  Buf get(std::size_t n) {
    Buf b;
    b.pool_ = this;
    b.size_ = n;
    // Under ASan: exact sizes from the heap, so an overrun hits a redzone (tests, fuzzing).
    const std::size_t cap = kAsan ? std::max<std::size_t>(n, 1)
                                  : (std::max<std::size_t>(n, 1) + kGrain - 1) / kGrain * kGrain;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::size_t best = free_.size();
      for (std::size_t i = 0; i < free_.size(); ++i) {
        if (free_[i].cap() >= cap && (best == free_.size() || free_[i].cap() < free_[best].cap()))
          best = i;
      }
      if (best != free_.size()) {
        b.block_ = std::move(free_[best]);
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
        return b;
      }
    }
    b.block_ = Block(cap);
    return b;
  }

 private:
  static constexpr std::size_t kGrain = std::size_t(64) << 10;
  static constexpr bool kAsan = MOTA_DELTA_ASAN;
  void put(Block blk) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() >= kKeep) {
      // Drop the smallest (this one or a kept one): big blocks serve every request.
      auto smallest =
          std::min_element(free_.begin(), free_.end(),
                           [](const Block& a, const Block& b) { return a.cap() < b.cap(); });
      if (smallest->cap() >= blk.cap()) return;  // blk is unmapped here
      free_.erase(smallest);
    }
    free_.push_back(std::move(blk));
  }
  std::mutex mu_;
  std::vector<Block> free_;
};

// Starts the kernel's writeback of a file written sequentially every `step` bytes
// (sync_file_range, asynchronous): the disk then writes while the CPU decodes, and the final
// fsync finds little left to do instead of a whole multi-GiB file in the page cache.
class Writeback {
 public:
  explicit Writeback(int fd, std::uint64_t step = std::uint64_t(16) << 20) : fd_(fd), step_(step) {}
  void wrote(std::size_t n) {
    pos_ += n;
    if (pos_ - started_ < step_) return;
    // Advice only: an error here shows up again, and is reported, at the fsync.
    (void)::sync_file_range(fd_, static_cast<off_t>(started_), static_cast<off_t>(pos_ - started_),
                            SYNC_FILE_RANGE_WRITE);
    started_ = pos_;
  }

 private:
  int fd_;
  std::uint64_t step_, pos_ = 0, started_ = 0;
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
