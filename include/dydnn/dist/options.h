#pragma once
/// \file
/// Options of distributed serving: the mode, where the store is, who this process is,
/// and the time bounds of failure detection.

#include <cstdint>
#include <string>

namespace dydnn {
namespace dist {

/// How the devices share the requests (design §4.2).
enum class Mode {
  HighThroughput,  ///< "ht": each device answers different requests with its standalone island (AB or C*D*)
  HighAccuracy,    ///< "ha": both islands work on each request (late or cross fusion, from the model)
  Static,          ///< "static": the baseline, a dense net split by channels; stops when a device is lost
  Dynamic,         ///< "dynamic": the baseline A, AB, ABC, ABCD net; survives only the loss of C,D's device
};

/// "ht", "ha", "static" or "dynamic".
std::string to_string(Mode mode);
/// Parses "ht" | "ha" | "static" | "dynamic". Throws `ValueError` naming the text and the valid names.
Mode parse_mode(const std::string& text);

/// Where the cluster's store is and who this process is, as torch.distributed has it:
/// rank 0 is the dispatcher (it hosts the `TCPStore`), ranks 1 .. world_size-1 are devices.
///
/// Example:
/// \code
///   auto o = dydnn::dist::ClusterOptions::from_env();   // MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
///   o.failure_timeout_ms = 300;
///   o.validate();
/// \endcode
struct ClusterOptions {
  /// The store's host (the dispatcher's address). Default "127.0.0.1".
  std::string master_addr = "127.0.0.1";
  /// The store's TCP port, 1..65535. Default 29500 (torch.distributed's).
  int64_t master_port = 29500;
  /// This process: 0 = dispatcher, 1 .. world_size-1 = device. Default 0.
  int64_t rank = 0;
  /// A dispatcher and one device per island: 2 (one device) or 3. Default 3.
  int64_t world_size = 3;
  /// How often a device bumps its heartbeat counter in the store, in ms. Default 50.
  int64_t heartbeat_ms = 50;
  /// A device whose heartbeat has not moved for this long is declared lost, in ms
  /// (a killed process is usually seen sooner: its TCP connection closes). Default 500.
  int64_t failure_timeout_ms = 500;
  /// The longest wait for the store (connecting, a key, a pair's rendezvous), in ms. Default 5000.
  int64_t store_timeout_ms = 5000;
  /// Requests in flight per device (sent, not yet answered). Default 4.
  int64_t window = 4;
  /// The address Gloo binds on this host (the pairs' sockets; the others connect to it);
  /// empty: 127.0.0.1 when the master is on loopback, else the source address of this
  /// host's route to the master, else what this host's name resolves to. One of this
  /// host's addresses (checked when serving starts).
  std::string bind_host;

  /// Throws `ValueError` naming the field, its value and the valid range.
  void validate() const;
  /// The defaults overridden by MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE and
  /// DYDNN_BIND_HOST where set.
  /// Throws `ValueError` naming the variable for a value that is not an integer in range.
  static ClusterOptions from_env();
};

}  // namespace dist
}  // namespace dydnn
