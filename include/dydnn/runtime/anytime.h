#pragma once
/// \file
/// "Answer now, improve if time allows": a sequence of (config, exit) steps, each reached
/// from the one before by `DynamicNet::refine`, run against a time budget. The first step
/// always answers; each later step runs only when its expected time (the median, or another
/// quantile, of its recent times, from earlier runs or `calibrate`) still fits the budget.
/// docs/depth.md.

#include <dydnn/nn/dynamic_net.h>

#include <torch/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

namespace dydnn {
namespace runtime {

/// One step of an anytime run: a config and the exit to stop at (-1 = the final head).
struct AnytimeStep {
  nn::Config config;
  int64_t exit = -1;
};

/// The best answer an anytime run reached.
struct AnytimeAnswer {
  /// `[N, classes]`: the logits at `steps[step]`, equal to a fresh run there.
  torch::Tensor logits;
  /// The index of the step that answered.
  size_t step = 0;
  /// That step's config and exit (normalised: never -1).
  nn::Config config;
  int64_t exit = 0;
  /// Microseconds from the call to this answer.
  double elapsed_us = 0;
  /// Whether every step ran.
  bool complete = false;
};

/// Runs a fixed sequence of refinement steps against a time budget.
///
/// Example (answer within 300 us, as good as the time allows):
/// \code
///   dydnn::runtime::AnytimeRunner runner(net);           // the default steps
///   runner.calibrate(example_image);                      // learn each step's cost
///   auto answer = runner.run(image, 300.0);
///   // answer.logits, answer.config, answer.exit, answer.complete
/// \endcode
class AnytimeRunner {
 public:
  /// Checks `steps`: not empty; every exit in range; each step reachable from the one
  /// before (`can_refine`, and an exit no shallower) and better than it (new groups or a
  /// deeper exit). Throws `ValueError` naming the first step that is not. Empty `steps`
  /// = `default_steps(net)`. The net must be in eval mode when `run` is called.
  explicit AnytimeRunner(nn::DynamicNet net, std::vector<AnytimeStep> steps = {});

  /// The smallest config at each exit in turn (depth first: a narrow final head beats a
  /// wide early exit on the reference nets), then wider configs at the final exit, each
  /// the smallest valid config that can be refined to from the one before. A net whose
  /// connectivity refines nothing (`prefix`) gets one step: its full config.
  static std::vector<AnytimeStep> default_steps(const nn::DynamicNetImpl& net);

  /// Answers `input` at the first step, then refines step by step while the elapsed time
  /// plus the next step's expected time is within `budget_us`. A step that has never run
  /// has no expectation and is tried. `on_answer`, when given, sees every answer and
  /// stops the run by returning false. Throws `ValueError` for a budget that is not a
  /// positive number.
  AnytimeAnswer run(const torch::Tensor& input, double budget_us,
                    const std::function<bool(const AnytimeAnswer&)>& on_answer = {});

  /// Runs every step on `input` `repetitions` times (after one warm-up); each step's
  /// recent times become the last `window()` of them. Throws `ValueError` for
  /// `repetitions` < 1.
  void calibrate(const torch::Tensor& input, int64_t repetitions = 20);

  /// The steps, as given or the defaults (exits normalised: never -1).
  const std::vector<AnytimeStep>& steps() const { return steps_; }
  /// Each step's expected time in microseconds (for step 0: the first answer; later: its
  /// refinement from the step before): the `quantile()` (default the median) of its last
  /// `window()` times (nearest rank), so one slow run (an interrupt, a page fault) does not
  /// stop the next runs early; 0 = not known yet.
  const std::vector<double>& expected_us() const { return expected_us_; }
  /// How many recent times per step the expectation is taken over (>= 1). Default 15.
  void set_window(size_t window);
  size_t window() const { return window_; }
  /// Which quantile of the recent times a step is expected to take, in (0, 1]. Default
  /// 0.5, the median. A higher one keeps runs within their budget more often, but a step it
  /// skips is not timed again, so two slow runs in a window of 15 can keep a step out at
  /// 0.9 where the median needs eight (docs/depth_benchmark.md). Throws `ValueError` outside.
  void set_quantile(double quantile);
  double quantile() const { return quantile_; }

 private:
  void learn(size_t step, double micros);
  void update_expected(size_t step);

  nn::DynamicNet net_;
  std::vector<AnytimeStep> steps_;
  std::vector<double> expected_us_;
  std::vector<std::deque<double>> recent_us_;
  size_t window_ = 15;
  double quantile_ = 0.5;
};

}  // namespace runtime
}  // namespace dydnn
