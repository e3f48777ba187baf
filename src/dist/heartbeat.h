#pragma once
// A device's heartbeat and its view of the dispatcher through the store. Internal to dydnn_dist.

#include <dydnn/dist/options.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace dydnn {
namespace dist {
namespace detail {

/// Bumps the device's heartbeat counter every `heartbeat_ms` from its own thread, over its
/// own store connection; after any store error (the network is down, a reply is late) it
/// drops that connection and connects again, so it outlives a network outage. Each beat
/// also reads the last generation the dispatcher declared lost.
class Heartbeat {
 public:
  explicit Heartbeat(const ClusterOptions& options);
  /// Stops and joins the thread (within one store timeout).
  ~Heartbeat();
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  /// Milliseconds since the store last answered a beat (since the start before the first).
  int64_t silent_ms() const;
  /// The last generation of this device the dispatcher declared lost (0: none), as last read.
  int64_t lost_generation() const { return lost_gen_; }
  /// Waits until the store answers a beat again: true at once when the silence is under
  /// `failure_timeout_ms`; false when it has lasted `store_timeout_ms`.
  bool wait_for_contact();

 private:
  void run();
  ClusterOptions options_;
  std::atomic<std::chrono::steady_clock::rep> last_ok_;
  std::atomic<int64_t> lost_gen_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace detail
}  // namespace dist
}  // namespace dydnn
