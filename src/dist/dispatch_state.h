#pragma once
// The dispatcher's shared state: requests, device slots and the scheduling rules.
// One mutex guards everything but the links themselves. Internal to dydnn_dist.

#include "pair_link.h"

#include <dydnn/dist/dispatcher.h>

#include <condition_variable>
#include <optional>
#include <deque>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace dydnn {
namespace dist {

using Clock = std::chrono::steady_clock;

struct PendingRequest {
  torch::Tensor input;  // [1, C, H, W]
  int64_t attempt = 0;  // the current assignment; answers of older ones are dropped
  std::vector<size_t> slots;  // the slots working on it now (empty: waiting)
};

// One device rank: its current pair generation, what it holds, what waits to be sent.
struct Slot {
  int64_t rank = 0;
  int64_t part = 0;
  bool up = false;
  int64_t gen = 0;
  std::set<int64_t> in_flight;
  std::deque<detail::Message> outbox;
  bool outbox_closed = true;
  std::condition_variable outbox_cv;
  std::thread manager;
};

struct Dispatcher::State {
  nn::DynamicNet net{nullptr};
  Mode mode;
  ClusterOptions options;
  Split split;
  int64_t max_payload = 0;  // floats per frame (detail::max_payload)
  std::chrono::milliseconds request_timeout;
  c10::intrusive_ptr<c10d::Store> server;
  Clock::time_point start = Clock::now();

  mutable std::mutex mutex;
  std::condition_variable answers_cv, devices_cv;
  std::unordered_map<int64_t, PendingRequest> requests;
  std::unordered_set<int64_t> answered_ids;
  std::deque<int64_t> pending;
  std::deque<Answer> answers;
  std::vector<Event> events;
  std::vector<std::unique_ptr<Slot>> slots;
  DispatcherStats counts;
  std::atomic<int64_t> bytes{0};
  std::atomic<bool> stopping{false};
  bool stopped = false;
  std::thread watchdog;
  // Since when no device (or pair) could take a request; unset while one can.
  std::optional<Clock::time_point> incapable_since;

  double now_s() const { return std::chrono::duration<double>(Clock::now() - start).count(); }
  // Hands waiting requests to devices with room, by the mode's rules. Lock held.
  void schedule();
  // Marks `slot`'s generation `gen` lost and requeues what it held (no-op when already).
  void lose(size_t slot, int64_t gen, const std::string& how);
  void on_message(size_t slot, int64_t gen, detail::Message m);
  // Pairs with each (re)joining generation of a device, watches its heartbeat.
  void manage(size_t slot);
  // Answers with an error what waits while no device could take it for `request_timeout`.
  void expire();
  // Whether some device (HT, a survivor) or both (the fused modes) can take requests now. Lock held.
  bool capable() const;

 private:
  void assign(int64_t id, PendingRequest& r, const std::vector<size_t>& to);
  void push(Slot& s, detail::Message m);
};

}  // namespace dist
}  // namespace dydnn
