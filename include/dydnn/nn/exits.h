#pragma once
/// \file
/// Early exits and anytime refinement: the policy deciding where a sample stops, what an
/// adaptive forward returns, and the activations a refinement reuses (docs/depth.md).

#include <dydnn/nn/config.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dydnn {
namespace nn {

/// How confident an exit's answer is; a sample stops at the first exit whose score is
/// below that exit's threshold.
enum class ExitCriterion {
  Entropy,  ///< softmax entropy in nats, 0 .. ln(classes)
  MaxProb,  ///< 1 - the largest softmax probability, 0 .. 1 - 1/classes
};

/// "entropy" | "max_prob".
std::string to_string(ExitCriterion criterion);
/// Parses "entropy" | "max_prob"; throws `ValueError` naming the text and the valid names.
ExitCriterion parse_exit_criterion(const std::string& text);
/// The per-sample score of `logits` `[N, classes]` under `criterion`: `[N]`, lower =
/// more confident.
at::Tensor exit_scores(const at::Tensor& logits, ExitCriterion criterion);

/// Where each sample of an adaptive forward stops.
///
/// Example (exit 0 answers when its entropy is below 0.6 nats, else the final head):
/// \code
///   dydnn::nn::ExitPolicy policy;
///   policy.thresholds = {0.6};
///   auto out = net->forward_adaptive(images, net->config(), policy);
/// \endcode
struct ExitPolicy {
  /// The confidence score compared with the thresholds. Default: `Entropy`.
  ExitCriterion criterion = ExitCriterion::Entropy;
  /// One threshold per early exit (the final head always answers, so it has none);
  /// a sample stops at exit `e` when its score is `< thresholds[e]`. A negative
  /// threshold disables that exit. Empty = no early exit.
  std::vector<double> thresholds;
  /// Runs each exit head on a second thread while the main thread computes the next
  /// blocks (the CPU analogue of the FPGA's parallel decision head); the next blocks'
  /// work is dropped for the samples that exit. Default: false (sequential: measured
  /// faster at batch 1 on 2 cores, docs/depth_benchmark.md).
  bool parallel_heads = false;
};

/// The result of `DynamicNet::forward_adaptive`.
struct AdaptiveOutput {
  /// `[N, classes]`, in input order: each sample's logits at the exit that answered.
  at::Tensor logits;
  /// `[N]` int64: the exit that answered each sample (0 .. num_exits - 1).
  at::Tensor exits;
};

/// The activations of the groups and blocks a forward computed, so that `refine` can
/// take its answer to a wider config (computing only the new groups) or a deeper exit
/// (computing only the remaining blocks) on the same input.
///
/// Holds references to the activations (one tensor per computed block, the active
/// groups' channels in group order): its memory is that of one forward's activations.
/// Not thread-safe; belongs to the net that made it.
struct ActivationCache {
  /// The config the cached activations were computed at.
  Config config;
  /// The exit whose answer `logits` holds.
  int64_t exit = -1;
  /// The output of each computed block (`blocks.size()` = the exit's depth).
  std::vector<at::Tensor> blocks;
  /// The logits at (`config`, `exit`).
  at::Tensor logits;
  /// The input's batch size.
  int64_t batch = 0;
  /// The input (its new groups' first layer reads it).
  at::Tensor input;
};

}  // namespace nn
}  // namespace dydnn
