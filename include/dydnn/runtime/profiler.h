#pragma once
/// \file
/// The profiler: measures every valid config of a net under each hardware setting and
/// returns the operating-point table the selector decides from (and the artifact stores).
///
/// On this machine the real knobs are the intra-op thread count and the set of cores the
/// process may run on; where a `DvfsBackend` can set frequencies, the profiler also sweeps
/// the frequencies of the chosen domains. Per point it records the latency at batch 1
/// (warm-up, then repetitions: median and p95), the config's top-1 on validation data
/// (once per config: it does not depend on the hardware), and, when an energy source is
/// given, the energy per inference and the mean power, labelled with the source.

#include <dydnn/data/dataset.h>
#include <dydnn/hw/dvfs.h>
#include <dydnn/io/artifact.h>
#include <dydnn/nn/dynamic_net.h>
#include <dydnn/runtime/selector.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace dydnn {
namespace runtime {

/// Cumulative energy in joules since some fixed start (a meter's reading), or NaN when
/// it cannot be read now.
using EnergyReader = std::function<double()>;

/// What to sweep and how to measure.
struct ProfileOptions {
  /// Intra-op thread counts (`torch::set_num_threads`); each becomes knob `threads`.
  std::vector<int> threads = {1};
  /// CPU sets to pin the process to (`sched_setaffinity` on all its threads); each becomes
  /// knob `cores` (a bitmask). Empty: no pinning.
  std::vector<std::vector<int>> core_sets;
  /// Frequency sweeps: for each listed domain of `dvfs`, every table frequency (or the
  /// listed ones); each becomes knob `<domain>_hz`. Needs `dvfs`.
  hw::DvfsBackend* dvfs = nullptr;
  std::vector<std::string> domains;
  std::vector<uint64_t> frequencies_hz;  ///< empty: the domain's whole table
  /// Batch-1 calls before and during timing.
  int64_t warmup = 20;
  int64_t repetitions = 200;
  /// Cumulative energy source (a meter's reading); without one, power and energy are left
  /// unknown. Name its source where the table is kept (the Python profiler records it in
  /// the model file's metadata).
  EnergyReader energy;
  /// Nets with early exits: every config is also profiled stopping at each early exit
  /// (width x exit points, knob `exit` = e, measured like the final head's points,
  /// energy included; the final head's points carry no `exit` knob). Default: true.
  bool exit_points = true;
  /// Adaptive early exit: one point per config and threshold, knobs `exit_threshold`
  /// (the same threshold at every early exit) and `exit_criterion` (0 entropy, 1
  /// max_prob), metrics `exit_rate_<e>` measured on the validation data, `top1` of the
  /// adaptive answers, and latency expected from the exit rates: `sum_e rate_e x` the
  /// batch-1 latency of a sample answered by exit `e` (earlier heads computed and
  /// passed); with an energy source, energy expected the same way and power = that
  /// energy over that latency. Empty: none.
  std::vector<double> exit_thresholds;
  nn::ExitCriterion exit_criterion = nn::ExitCriterion::Entropy;
  /// A progress line on stderr.
  bool progress = true;
};

/// Profiles `net` (every valid config, and with exits every width x exit point and
/// adaptive point) on `validation` (normalised with `norm`): returns
/// one `io::OperatingPoint` per (config, setting) with metrics `latency_p50_us`,
/// `latency_p95_us`, `top1`, and with an energy source `energy_mj` and `power_w`.
/// Restores the thread count, the CPU set and any frequency it changed. Throws
/// `ValueError` for empty sweeps, a thread count < 1, a core outside the machine, or a
/// domain `dvfs` does not have.
std::vector<io::OperatingPoint> profile(nn::DynamicNet net, const data::ImageDataset& validation,
                                        const data::Normalization& norm, const ProfileOptions& options);

/// The selector's view of an artifact's table: latency from `latency_p50_us`, accuracy
/// from `top1`, power and energy when present. Throws `ValueError` for a point without
/// latency or accuracy.
std::vector<Point> to_points(const std::vector<io::OperatingPoint>& table);

/// How a point runs on the net: `exit` = -1 for the final head (or adaptive), else the
/// early exit it stops at; `adaptive` with `policy` for an `exit_threshold` point.
struct DepthKnobs {
  int64_t exit = -1;
  bool adaptive = false;
  nn::ExitPolicy policy;
};
/// Reads the depth knobs of `knobs` for a net with `num_exits` exits; throws `ValueError`
/// for an exit out of range or a threshold knob on a net without early exits.
DepthKnobs depth_knobs(const std::map<std::string, double>& knobs, int64_t num_exits);
/// Runs `input` on `net` at `config` as a point with `depth` does (the logits).
torch::Tensor run_at_depth(nn::DynamicNetImpl& net, const torch::Tensor& input, nn::Config config,
                           const DepthKnobs& depth);

/// Pins every thread of this process to `cpus` (Linux `sched_setaffinity` per task);
/// returns false (and changes nothing) where that is refused.
bool pin_process(const std::vector<int>& cpus);
/// The CPUs this process may run on now.
std::vector<int> allowed_cpus();

}  // namespace runtime
}  // namespace dydnn
