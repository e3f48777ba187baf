#pragma once
/// \file
/// Internal: running a grouped layer at a config (input checks, the execution strategy).

#include <dydnn/nn/detail/grouped_weight.h>

#include <functional>
#include <string>

namespace dydnn {
namespace nn {
namespace detail {

/// `(input, weight, bias) -> output` for one sub-layer.
using GroupedOp = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)>;

/// Checks `input` for a layer named `who` at `config`: rank `rank` and the channel
/// count of the active input groups; throws `ValueError` naming the bad value.
void check_grouped_input(const GroupedLayout& layout, const torch::Tensor& input, Config config, int64_t rank,
                         const char* shape, const std::string& who);

/// Runs a grouped layer's `op` (differentiable) at `config`: on the blocks packed with
/// `torch::cat` when a gradient is needed, otherwise with `execution` (`Auto` resolved
/// with `work`, the number of output positions per weight: N x H x W, or 0 for linear).
torch::Tensor run_grouped(GroupedWeight& weight, const torch::Tensor& input, Config config, Execution execution,
                          int64_t work, const GroupedOp& op);

/// The strategy `Auto` picks for `layout` at `config` with `work` positions per weight.
Execution resolve_auto(const GroupedLayout& layout, Config config, int64_t work);

}  // namespace detail
}  // namespace nn
}  // namespace dydnn
