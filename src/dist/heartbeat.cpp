#include "heartbeat.h"

#include "pair_link.h"

#include <iostream>

namespace dydnn {
namespace dist {
namespace detail {

using Clock = std::chrono::steady_clock;

Heartbeat::Heartbeat(const ClusterOptions& options)
    : options_(options), last_ok_(Clock::now().time_since_epoch().count()), thread_([this] { run(); }) {}

Heartbeat::~Heartbeat() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

int64_t Heartbeat::silent_ms() const {
  const auto last = Clock::time_point(Clock::duration(last_ok_.load()));
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last).count();
}

bool Heartbeat::wait_for_contact() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    const int64_t silent = silent_ms();
    if (silent < options_.failure_timeout_ms) return true;
    if (silent >= options_.store_timeout_ms) return false;
    cv_.wait_for(lock, std::chrono::milliseconds(options_.heartbeat_ms));
  }
}

void Heartbeat::run() {
  const int64_t rank = options_.rank;
  c10::intrusive_ptr<c10d::Store> store;
  bool reported = false;  // the current outage is in the log
  std::unique_lock<std::mutex> lock(mutex_);
  while (!done_) {
    lock.unlock();
    try {
      if (!store) store = open_store(options_, false, std::chrono::milliseconds(options_.failure_timeout_ms));
      store->add(key("hb", rank), 1);
      lost_gen_ = counter(*store, key("lost", rank));
      last_ok_ = Clock::now().time_since_epoch().count();
      if (reported) std::cerr << "[dydnn.dist] device " << rank << ": the store answers again" << std::endl;
      reported = false;
    } catch (const std::exception& e) {
      // A late reply would be read as the answer to the next request: never reuse the connection.
      store.reset();
      if (!reported) {
        const std::string what = e.what();
        std::cerr << "[dydnn.dist] device " << rank << ": heartbeat failed (" << what.substr(0, what.find('\n'))
                  << "), connecting again" << std::endl;
      }
      reported = true;
    }
    lock.lock();
    cv_.notify_all();
    cv_.wait_for(lock, std::chrono::milliseconds(options_.heartbeat_ms), [&] { return done_; });
  }
}

}  // namespace detail
}  // namespace dist
}  // namespace dydnn
