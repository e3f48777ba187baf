// Joint training of early exits (weighted exit losses, the incremental invariant at every
// exit) and threshold calibration.
#include <dydnn/train/exits.h>
#include <dydnn/train/trainer.h>

#include <catch2/catch.hpp>

#include "quadrants.h"

namespace {

using namespace dydnn;
using Catch::Matchers::Contains;

nn::NetSpec exit_spec() {
  return nn::NetSpec::parse(
      "dydnn-spec 1\nname tiny_exits\ninput 1 8 8\nclasses 4\ngroups 4\nconnectivity incremental\nhead additive\n"
      "conv 8 kernel=3 padding=1 bn relu maxpool=2\nexit after=1 avgpool=2\nconv 16 kernel=3 padding=1 bn relu maxpool=2\n");
}


}  // namespace

TEST_CASE("Joint exit training trains every exit and keeps earlier configs exact", "[train][exits]") {
  torch::manual_seed(21);
  nn::DynamicNet net(exit_spec());
  train::TrainOptions o;
  o.epochs = {2};
  o.batch_size = 16;
  o.progress = false;
  o.exit_weights = {0.5, 1.0};
  train::Trainer trainer(net, o);
  const auto data = quadrants(128, 3);
  auto x = torch::rand({5, 1, 8, 8});
  std::vector<std::vector<torch::Tensor>> before;
  while (!trainer.finished()) {
    const size_t stage = trainer.stage();
    // Train one stage, then check that every earlier config's every exit is unchanged.
    auto snapshot = [&] {
      torch::NoGradGuard no_grad;
      net->eval();
      std::vector<std::vector<torch::Tensor>> out;
      for (const auto& c : net->configs()) out.push_back(net->forward_exits(x, c));
      net->train();
      return out;
    };
    before = snapshot();
    while (!trainer.finished() && trainer.stage() == stage) {
      const auto order = trainer.epoch_order(data.size());
      for (int64_t b = 0; b < data.size(); b += 16) {
        auto idx = order.slice(0, b, b + 16);
        trainer.step(trainer.normalization().apply(data.images.index_select(0, idx)), data.labels.index_select(0, idx));
      }
      trainer.end_epoch({});
    }
    const auto after = snapshot();
    for (size_t c = 0; c < stage; ++c)
      for (size_t e = 0; e < after[c].size(); ++e) {
        INFO("stage " << stage << " config " << c << " exit " << e);
        CHECK(torch::equal(after[c][e], before[c][e]));
      }
  }
  // The early exit learned (the quadrant task is easy even after one layer).
  const auto stats = train::exit_statistics(*net, data, trainer.normalization(), net->configs().back());
  double right = 0;
  for (auto c : stats.correct[0]) right += c;
  CHECK(right / static_cast<double>(stats.count()) > 0.5);
  o.exit_weights = {1.0};
  CHECK_THROWS_WITH(train::Trainer(net, o), Contains("exit_weights: 1 values but net 'tiny_exits' has 2 exit(s)"));
  o.exit_weights = {0.0, 0.0};
  CHECK_THROWS_WITH(train::Trainer(net, o), Contains("exit_weights: all 2 are 0"));
  o.exit_weights = {-1.0, 1.0};
  CHECK_THROWS_WITH(train::Trainer(net, o), Contains("exit_weights: -1 (valid: >= 0)"));
}

TEST_CASE("Calibration hits a target exit rate or accuracy", "[train][exits]") {
  train::ExitStatistics stats;
  // Exit 0: scores 0.1 .. 1.0; right on the 6 most confident, then alternating.
  stats.scores = {{0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 1.0f}, std::vector<float>(10, 0.5f)};
  stats.correct = {{1, 1, 1, 1, 1, 1, 0, 1, 0, 0}, std::vector<uint8_t>(10, 1)};
  stats.macs = {100, 300};
  auto rate = train::calibrate_exits(stats, train::CalibrationTarget::ExitRate, 0.3);
  CHECK(rate.exit_rates[0] == Approx(0.3));
  CHECK(rate.thresholds[0] == Approx(0.35));
  CHECK(rate.mean_macs == Approx(0.3 * 100 + 0.7 * 300));
  auto acc = train::calibrate_exits(stats, train::CalibrationTarget::Accuracy, 0.85);
  // 7 of the first 8 are right (0.875 >= 0.85); 7 of 9 are not.
  CHECK(acc.exit_rates[0] == Approx(0.8));
  CHECK(acc.accuracy == Approx(0.9));
  CHECK(train::calibrate_exits(stats, train::CalibrationTarget::Accuracy, 1.0).exit_rates[0] == Approx(0.6));
  CHECK(train::calibrate_exits(stats, train::CalibrationTarget::ExitRate, 0.0).thresholds[0] < 0);
  CHECK(train::calibrate_exits(stats, train::CalibrationTarget::ExitRate, 1.0).exit_rates[0] == Approx(1.0));
  CHECK_THROWS_WITH(train::calibrate_exits(stats, train::CalibrationTarget::ExitRate, 1.5),
                    Contains("exit_rate 1.5 is out of range (valid: 0..1)"));
  CHECK_THROWS_WITH(train::evaluate_thresholds(stats, {}), Contains("0 thresholds for 1 early exit(s)"));
  CHECK_THROWS_WITH(train::parse_calibration_target("speed"), Contains("unknown calibration target 'speed'"));
}
