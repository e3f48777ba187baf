#pragma once
/// \file
/// Wall-clock latency measurement with warm-up and repetitions (no LibTorch dependency).

#include <dydnn/errors.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace dydnn {
namespace runtime {

/// Summary of repeated latency samples, in microseconds.
struct LatencyStats {
  double median_us = 0;
  double p95_us = 0;
  double mean_us = 0;
  double min_us = 0;
  int64_t repetitions = 0;
};

/// Median, 95th percentile (nearest rank), mean and minimum of `samples_us`.
/// Throws `ValueError` for an empty list.
inline LatencyStats summarize(std::vector<double> samples_us) {
  DYDNN_CHECK_VALUE(!samples_us.empty(), "runtime", "summarize: no latency samples");
  std::sort(samples_us.begin(), samples_us.end());
  const size_t n = samples_us.size();
  LatencyStats s;
  s.repetitions = static_cast<int64_t>(n);
  s.median_us = n % 2 == 1 ? samples_us[n / 2] : 0.5 * (samples_us[n / 2 - 1] + samples_us[n / 2]);
  s.p95_us = samples_us[std::min(n - 1, static_cast<size_t>(std::ceil(0.95 * static_cast<double>(n))) - 1)];
  s.mean_us = std::accumulate(samples_us.begin(), samples_us.end(), 0.0) / static_cast<double>(n);
  s.min_us = samples_us.front();
  return s;
}

/// Calls `run()` `warmup` times untimed, then `repetitions` times timed one by one
/// with a steady clock. Throws `ValueError` for warmup < 0 or repetitions < 1.
/// Cost: warmup + repetitions calls of `run`.
template <typename Run>
LatencyStats measure_latency(Run&& run, int64_t warmup, int64_t repetitions) {
  DYDNN_CHECK_VALUE(warmup >= 0, "runtime", "measure_latency: warmup {} (valid: >= 0)", warmup);
  DYDNN_CHECK_VALUE(repetitions >= 1, "runtime", "measure_latency: repetitions {} (valid: >= 1)", repetitions);
  for (int64_t k = 0; k < warmup; ++k) run();
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(repetitions));
  for (int64_t k = 0; k < repetitions; ++k) {
    const auto start = std::chrono::steady_clock::now();
    run();
    const auto stop = std::chrono::steady_clock::now();
    samples.push_back(std::chrono::duration<double, std::micro>(stop - start).count());
  }
  return summarize(std::move(samples));
}

}  // namespace runtime
}  // namespace dydnn
