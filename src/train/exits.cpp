#include <dydnn/errors.h>
#include <dydnn/train/exits.h>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace dydnn {
namespace train {

ExitStatistics exit_statistics(nn::DynamicNetImpl& net, const data::ImageDataset& data, const data::Normalization& norm,
                               nn::Config config, nn::ExitCriterion criterion, int64_t batch_size) {
  DYDNN_CHECK_VALUE(batch_size >= 1, "train", "exit_statistics: batch_size {} (valid: >= 1)", batch_size);
  net.connectivity().check_valid(config, "exit_statistics");
  const bool was_training = net.is_training();
  net.eval();
  torch::NoGradGuard no_grad;
  ExitStatistics stats;
  stats.config = config;
  stats.criterion = criterion;
  const int64_t exits = net.num_exits();
  stats.scores.resize(exits);
  stats.correct.resize(exits);
  for (int64_t e = 0; e < exits; ++e) stats.macs.push_back(net.macs(config, e));
  const int64_t n = data.size();
  for (int64_t b = 0; b < n; b += batch_size) {
    const int64_t m = std::min(batch_size, n - b);
    const auto labels = data.labels.slice(0, b, b + m).to(torch::kLong);
    const auto all = net.forward_exits(norm.apply(data.images.slice(0, b, b + m)), config);
    for (int64_t e = 0; e < exits; ++e) {
      const auto s = nn::exit_scores(all[e], criterion).contiguous().to(torch::kFloat);
      const auto c = all[e].argmax(1).eq(labels).to(torch::kUInt8).contiguous();
      stats.scores[e].insert(stats.scores[e].end(), s.data_ptr<float>(), s.data_ptr<float>() + m);
      stats.correct[e].insert(stats.correct[e].end(), c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + m);
    }
  }
  if (was_training) net.train();
  return stats;
}

ExitOutcome evaluate_thresholds(const ExitStatistics& stats, const std::vector<double>& thresholds) {
  const int64_t exits = stats.num_exits(), n = stats.count();
  DYDNN_CHECK_VALUE(static_cast<int64_t>(thresholds.size()) == exits - 1, "train",
                    "evaluate_thresholds: {} thresholds for {} early exit(s) (valid: {})", thresholds.size(),
                    exits - 1, exits - 1);
  ExitOutcome out;
  out.thresholds = thresholds;
  out.exit_rates.assign(exits, 0.0);
  int64_t right = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t e = 0;
    while (e < exits - 1 && !(stats.scores[e][i] < thresholds[e])) ++e;
    out.exit_rates[e] += 1;
    right += stats.correct[e][i];
  }
  for (int64_t e = 0; e < exits; ++e) {
    out.exit_rates[e] /= std::max<double>(1.0, static_cast<double>(n));
    out.mean_macs += out.exit_rates[e] * static_cast<double>(stats.macs[e]);
  }
  out.accuracy = n ? static_cast<double>(right) / static_cast<double>(n) : 0.0;
  return out;
}

std::string to_string(CalibrationTarget target) {
  return target == CalibrationTarget::Accuracy ? "accuracy" : "exit_rate";
}

CalibrationTarget parse_calibration_target(const std::string& text) {
  if (text == "accuracy") return CalibrationTarget::Accuracy;
  if (text == "exit_rate") return CalibrationTarget::ExitRate;
  detail::throw_value_error("train", "unknown calibration target '{}' (valid: accuracy, exit_rate)", text);
}

ExitOutcome calibrate_exits(const ExitStatistics& stats, CalibrationTarget target, double value) {
  DYDNN_CHECK_VALUE(value >= 0 && value <= 1, "train", "calibrate_exits: {} {} is out of range (valid: 0..1)",
                    to_string(target), value);
  DYDNN_CHECK_VALUE(stats.count() > 0, "train", "calibrate_exits: the statistics hold no example");
  const int64_t exits = stats.num_exits(), n = stats.count();
  std::vector<int64_t> reaching(n);
  std::iota(reaching.begin(), reaching.end(), 0);
  std::vector<double> thresholds;
  for (int64_t e = 0; e + 1 < exits; ++e) {
    const auto& s = stats.scores[e];
    std::sort(reaching.begin(), reaching.end(), [&](int64_t a, int64_t b) { return s[a] < s[b]; });
    const auto m = static_cast<int64_t>(reaching.size());
    // The number of most confident examples that leave here.
    int64_t take = 0;
    if (target == CalibrationTarget::ExitRate) {
      take = std::min<int64_t>(m, static_cast<int64_t>(std::floor(value * static_cast<double>(m) + 1e-9)));
    } else {
      int64_t right = 0;
      for (int64_t k = 0; k < m; ++k) {
        right += stats.correct[e][reaching[k]];
        if (static_cast<double>(right) >= value * static_cast<double>(k + 1)) take = k + 1;
      }
    }
    // Ties cannot be split by a threshold: step back to the first of a run of equal scores.
    while (take > 0 && take < m && s[reaching[take]] == s[reaching[take - 1]]) --take;
    const double threshold = take == 0 ? -1.0
                             : take == m ? std::nextafter(static_cast<double>(s[reaching[m - 1]]),
                                                          std::numeric_limits<double>::infinity())
                                         : 0.5 * (static_cast<double>(s[reaching[take - 1]]) +
                                                  static_cast<double>(s[reaching[take]]));
    thresholds.push_back(threshold);
    reaching.erase(reaching.begin(), reaching.begin() + take);
  }
  return evaluate_thresholds(stats, thresholds);
}

}  // namespace train
}  // namespace dydnn
