#pragma once
// Declarations shared by the binding translation units (one per bound area).

#include <pybind11/pybind11.h>

namespace dydnn {
namespace nn {
class Config;
}
namespace runtime {
struct LatencyStats;
}
namespace python {

/// Config, GroupSpec, Connectivity, Execution, NetSpec (no tensors).
void bind_types(pybind11::module_& m);
/// DynamicConv2d, DynamicLinear, DynamicBatchNorm2d, DynamicNet and measurement helpers.
void bind_modules(pybind11::module_& m);
/// Trainer, stages, metrics, normalisation and the C++ data loaders.
void bind_train(pybind11::module_& m);
/// Depth: exits and refinement on DynamicNet (after bind_modules), calibration.
void bind_depth(pybind11::module_& m);
/// The model artifact: save/load/describe.
void bind_io(pybind11::module_& m);
/// The runtime: selector, ladder, Pareto front, profiler, managers.
void bind_runtime(pybind11::module_& m);

/// Accepts a `Config`, an iterable of group indices, or a string ("AB", "C*D*", "0,1").
/// Throws `ValueError` for anything else (a bare int is ambiguous).
nn::Config to_config(const pybind11::handle& value, int64_t num_groups);
/// A latency summary as {"median_us", "p95_us", "mean_us", "min_us", "repetitions"}.
pybind11::dict to_dict(const runtime::LatencyStats& stats);

}  // namespace python
}  // namespace dydnn
