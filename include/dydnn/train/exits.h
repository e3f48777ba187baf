#pragma once
/// \file
/// Early-exit statistics on a data set and threshold calibration (design §4.5): every
/// exit's score and correctness per example, the outcome of a threshold set without
/// running the net again, and thresholds for a target accuracy or exit rate.

#include <dydnn/data/dataset.h>
#include <dydnn/nn/dynamic_net.h>

#include <string>
#include <vector>

namespace dydnn {
namespace train {

/// Every exit's confidence score and correctness on each example of a data set, at one
/// config: what calibration and threshold sweeps need (one pass over the data).
struct ExitStatistics {
  nn::Config config;
  nn::ExitCriterion criterion = nn::ExitCriterion::Entropy;
  /// `scores[e][i]`: exit `e`'s score on example `i` (lower = more confident).
  std::vector<std::vector<float>> scores;
  /// `correct[e][i]`: whether exit `e`'s top-1 is right on example `i`.
  std::vector<std::vector<uint8_t>> correct;
  /// Multiply-accumulates of one image up to each exit (`DynamicNet::macs(config, e)`).
  std::vector<int64_t> macs;

  int64_t num_exits() const { return static_cast<int64_t>(scores.size()); }
  int64_t count() const { return scores.empty() ? 0 : static_cast<int64_t>(scores.front().size()); }
};

/// Runs every exit of `net` at `config` on `data` (eval mode, no autograd, batches of
/// `batch_size`; the net's training mode is restored). Images are normalised with `norm`.
ExitStatistics exit_statistics(nn::DynamicNetImpl& net, const data::ImageDataset& data, const data::Normalization& norm,
                               nn::Config config, nn::ExitCriterion criterion = nn::ExitCriterion::Entropy,
                               int64_t batch_size = 500);

/// What a threshold set does on the examples of an `ExitStatistics`.
struct ExitOutcome {
  std::vector<double> thresholds;
  /// Top-1 of the adaptive answers.
  double accuracy = 0;
  /// The fraction of examples answered by each exit (sums to 1).
  std::vector<double> exit_rates;
  /// The mean multiply-accumulates per image (`sum_e rate_e * macs[e]`, the heads of the
  /// exits passed included in `macs` of the deeper exits only as their layers).
  double mean_macs = 0;
};

/// The outcome of `thresholds` (one per early exit, as in `nn::ExitPolicy`). Throws
/// `ValueError` when their number is not `stats.num_exits() - 1`.
ExitOutcome evaluate_thresholds(const ExitStatistics& stats, const std::vector<double>& thresholds);

/// What calibration aims at.
enum class CalibrationTarget {
  Accuracy,  ///< each early exit answers only while its answers' accuracy stays >= the target
  ExitRate,  ///< each early exit answers this fraction of the examples that reach it
};

/// "accuracy" | "exit_rate"; `parse_calibration_target` throws `ValueError` for others.
std::string to_string(CalibrationTarget target);
CalibrationTarget parse_calibration_target(const std::string& text);

/// Thresholds for `stats`' exits, greedily from the first: for `Accuracy`, the largest
/// threshold whose exiting examples (of those reaching the exit) are right at least
/// `value` of the time (0 .. 1); for `ExitRate`, the threshold that lets a fraction
/// `value` (0 .. 1) of the examples reaching the exit leave there. Calibrate on
/// validation data, not the test set. Throws `ValueError` for `value` outside [0, 1] or
/// statistics without examples.
ExitOutcome calibrate_exits(const ExitStatistics& stats, CalibrationTarget target, double value);

}  // namespace train
}  // namespace dydnn
