#pragma once
// A point-to-point link between the dispatcher and one device: a two-rank Gloo group
// built on its own store prefix, carrying framed messages. Internal to dydnn_dist.

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <dydnn/dist/options.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

namespace dydnn {
namespace nn {
class DynamicNetImpl;
}
namespace dist {
namespace detail {

enum class MessageType : int64_t { Request = 1, Feature = 2, Answer = 3, Drop = 4, Stop = 5 };

/// One framed message. `k`: the layer of a Feature, the part of a Request (-1: standalone).
struct Message {
  MessageType type = MessageType::Request;
  int64_t id = 0;
  int64_t attempt = 0;
  int64_t k = 0;
  uint64_t mask = 0;        // the config of a Request or Answer
  torch::Tensor payload;    // float32, up to 4-D; undefined when none
};

/// The cluster's store: the server (the dispatcher) or a client connection to it.
/// Throws `std::runtime_error` naming the address when it cannot be reached within
/// `store_timeout_ms`. A client waits at most `reply_timeout` for each reply (default:
/// `store_timeout_ms`) and then throws: a partitioned network never blocks it for longer.
c10::intrusive_ptr<c10d::Store> open_store(const ClusterOptions& options, bool server,
                                           std::chrono::milliseconds reply_timeout = std::chrono::milliseconds(0));
/// The address Gloo binds here: `bind_host`; else 127.0.0.1 for a loopback master; else
/// the address this host reaches the master from (its route's source); else this host's name.
std::string gloo_host(const ClusterOptions& options);
/// Throws `ValueError` naming `bind_host` when it is set but is no address of this host.
void check_bind_host(const ClusterOptions& options);
/// Store keys: "dydnn/<what>/<rank>".
std::string key(const std::string& what, int64_t rank);
/// A store counter's value (0 when missing), without changing it.
inline int64_t counter(c10d::Store& store, const std::string& k) { return store.add(k, 0); }

/// The largest payload (floats) a message of `net` carries at batch 1: the image, any
/// layer's output at the full config, the logits. Both ends size their frames by it.
int64_t max_payload(nn::DynamicNetImpl& net);

/// A Gloo pair. Every message is one fixed-size frame (header and payload), and the
/// receiving end always has `kPosted` receives posted: a sender never waits for the peer
/// to post one. (Two transfers per message, with the payload's receive posted only after
/// its header arrived, kept Gloo's send queue waiting and cost ~10x the throughput.)
/// `send` from one thread and `receive` from another may run at once.
class PairLink {
 public:
  /// Rendezvous under `prefix` in `store` (both ends use the same prefix); `rank` 0 is the
  /// dispatcher, 1 the device; frames hold up to `max_payload` floats; `bytes`, when given,
  /// counts what the messages hold (header and payload, not the frames' padding) both ways.
  /// Throws when the other end does not come (or cannot be connected to) within `rendezvous_timeout`.
  PairLink(const c10::intrusive_ptr<c10d::Store>& store, const std::string& prefix, int rank,
           const std::string& bind_host, std::chrono::milliseconds rendezvous_timeout,
           std::chrono::milliseconds op_timeout, int64_t max_payload, std::atomic<int64_t>* bytes = nullptr);
  ~PairLink();
  /// Queues one message (sends complete in order, asynchronously: a message does not wait for
  /// the one before to be received); throws when the link is broken or more than
  /// `kMaxOutstanding` sends have waited over the op timeout.
  void send(const Message& m);
  /// The next message; throws when the link is broken or was aborted.
  Message receive();
  /// Unblocks a waiting `receive` (it throws) and makes later calls throw.
  void abort();

 private:
  struct Posted {
    c10::intrusive_ptr<c10d::Work> work;
    torch::Tensor frame;
  };
  void post_receive();  // recv_mutex_ held
  static constexpr size_t kMaxOutstanding = 64;
  static constexpr size_t kPosted = 8;
  static constexpr int64_t kHeader = 10;  // type, id, attempt, k, mask, ndim, 4 dims
  static constexpr int64_t kHeaderBytes = kHeader * 8;

  // Declared before the group so that they outlive it: an aborted receive's buffer stays
  // registered with the Gloo pair until the pair is closed.
  std::deque<Posted> receives_;
  std::deque<c10::intrusive_ptr<c10d::Work>> sends_;  // posted, maybe not yet completed (they hold their tensors)
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
  int peer_;
  std::chrono::milliseconds op_timeout_;
  int64_t frame_bytes_;
  std::mutex recv_mutex_;
  std::atomic<bool> aborted_{false};
  std::atomic<int64_t>* bytes_;  // sent and received, when counted
};

}  // namespace detail
}  // namespace dist
}  // namespace dydnn
