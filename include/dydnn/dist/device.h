#pragma once
/// \file
/// A device process: holds the whole model file, serves its part of the requests.

#include <dydnn/dist/options.h>
#include <dydnn/nn/dynamic_net.h>

namespace dydnn {
namespace dist {

/// Serves as device `options.rank` (1 or 2) until the dispatcher says stop: connects to
/// the store, reads the dispatcher's mode there, then joins (a fresh Gloo pair with the
/// dispatcher under a new generation) and answers requests; when the pair breaks
/// (the dispatcher replaced it) it joins again. Device `r` holds part `r - 1` of the
/// mode's `Split` (island `{A,B}` or `{C*,D*}`). A heartbeat thread bumps a store counter
/// every `heartbeat_ms`, connecting again after any store error. When no heartbeat is
/// answered for `failure_timeout_ms` (a network partition: the pair itself sees no error),
/// or the dispatcher declared the pair lost, the device leaves the pair and joins again
/// once the store answers. Progress goes to stderr.
///
/// Returns 0 after a stop. Throws `ValueError` for bad options (a rank outside
/// 1..world_size-1, a mode the model cannot serve, a `bind_host` that is not this host's)
/// and `std::runtime_error` when the store cannot be reached within `store_timeout_ms`, or
/// has not answered for `store_timeout_ms` (the dispatcher is gone or out of reach; the
/// throw comes within about twice that): nothing waits forever.
int run_device(nn::DynamicNet net, const ClusterOptions& options);

}  // namespace dist
}  // namespace dydnn
