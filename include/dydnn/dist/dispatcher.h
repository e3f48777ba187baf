#pragma once
/// \file
/// The dispatcher: receives requests, sends them to the devices, survives losing one.

#include <dydnn/dist/islands.h>
#include <dydnn/dist/options.h>
#include <dydnn/nn/dynamic_net.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dydnn {
namespace dist {

/// One request's answer.
struct Answer {
  int64_t id = 0;
  /// The config that produced it ("AB", "CD", "ABCD"); empty with `error`.
  std::string config;
  /// `[classes]` logits; undefined with `error`.
  torch::Tensor logits;
  /// Why the request could not be answered (only when no device, or no pair the mode
  /// needs, could serve for `request_timeout`: the Static baseline after a loss); empty otherwise.
  std::string error;
  /// How many times it was sent (1 + resubmissions after a device was lost).
  int64_t attempts = 0;
  /// Seconds since the dispatcher started when it was answered.
  double time_s = 0;
};

/// Something that happened to a device.
struct Event {
  double time_s = 0;   ///< seconds since the dispatcher started
  std::string kind;    ///< "up" (joined or rejoined) or "down" (lost)
  int64_t rank = 0;
  std::string detail;  ///< how it was seen to be lost ("link: ...", "heartbeat"), or the generation
};

/// Counters of a running dispatcher.
struct DispatcherStats {
  int64_t submitted = 0, answered = 0, pending = 0, in_flight = 0;
  /// Requests sent again because a device holding them was lost.
  int64_t resubmitted = 0;
  /// Answers that came for a request already answered or reassigned (dropped, never delivered).
  int64_t duplicates = 0;
  /// Bytes the dispatcher and the devices put on the pairs (headers, images, layer outputs, logits).
  int64_t bytes_sent = 0;
  /// Devices currently serving.
  int64_t devices_up = 0;
};

/// The dispatcher (rank 0): hosts the `TCPStore`, keeps one Gloo pair per device (a new
/// pair, under a new store prefix, each time a device (re)joins), schedules requests by
/// the mode's `Split` and delivers every request's answer exactly once.
///
/// A device is lost when its pair breaks (a killed process closes its sockets) or its
/// heartbeat counter stops for `failure_timeout_ms`; its requests in flight are sent
/// again to what still serves (in HT/HA/dynamic mode the survivor's standalone config),
/// and when it rejoins the mode's full schedule resumes. The lost generation is published
/// in the store, so that a device cut off by the network leaves that pair when it is back.
///
/// Example:
/// \code
///   dydnn::dist::ClusterOptions o;               // rank 0, world size 3, port 29500
///   dydnn::dist::Dispatcher d(artifact.net, dydnn::dist::Mode::HighThroughput, o);
///   d.wait_for_devices(2, std::chrono::seconds(10));
///   d.submit(0, image);                          // [C, H, W], normalised
///   auto a = d.next_answer(std::chrono::seconds(5));   // a->config == "AB" or "CD"
/// \endcode
/// Thread-safety: every member may be called from any thread.
class Dispatcher {
 public:
  /// Starts the store server at `options.master_addr:master_port` and the device slots.
  /// Throws `ValueError` for bad options or a mode the model cannot serve, and
  /// `std::runtime_error` when the store cannot start (the port is taken).
  Dispatcher(nn::DynamicNet net, Mode mode, ClusterOptions options,
             std::chrono::milliseconds request_timeout = std::chrono::seconds(30));
  /// Stops the devices and joins every thread (`stop`).
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  /// Queues request `id` with `input` `[C, H, W]` (normalised). Throws `ValueError`
  /// naming the shape for a wrong-shaped input and the id for one already submitted;
  /// the dispatcher goes on serving the others.
  void submit(int64_t id, const torch::Tensor& input);
  /// The next answer, or nothing after `timeout`.
  std::optional<Answer> next_answer(std::chrono::milliseconds timeout);
  /// Waits until `count` devices serve; false after `timeout`.
  bool wait_for_devices(int64_t count, std::chrono::milliseconds timeout);
  /// The device events since the last call.
  std::vector<Event> take_events();
  DispatcherStats stats() const;
  const Split& split() const;
  /// Seconds since the dispatcher started (the clock of `Answer::time_s` and `Event::time_s`).
  double seconds() const;
  /// Tells the devices to stop and joins every thread; idempotent.
  void stop();

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace dist
}  // namespace dydnn
