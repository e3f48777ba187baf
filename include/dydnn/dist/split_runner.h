#pragma once
/// \file
/// One device's share of a request that two devices compute together.

#include <dydnn/dist/islands.h>

#include <torch/types.h>

#include <functional>

namespace dydnn {
namespace nn {
class DynamicNetImpl;
}
namespace dist {

/// Hands this part's output of layer `k` to the other part.
using SendBlock = std::function<void(int64_t k, const torch::Tensor& output)>;
/// The other part's output of layer `k` (blocks until it is there; throws when it
/// cannot come, e.g. the other device was lost).
using ReceiveBlock = std::function<torch::Tensor(int64_t k)>;

/// Runs part `part` of `split` on `input` (`[N, C, H, W]`, normalised), calling `send`
/// and `receive` for the layer outputs the split exchanges. Returns the logits
/// `[N, classes]` at `split.combined` for part 1 (the combiner) and an undefined tensor
/// for part 0. The two parts together compute exactly `net.forward(input, split.combined)`
/// (tests/cpp/dist checks it for every flow). Not thread-safe on one `net`.
torch::Tensor run_part(nn::DynamicNetImpl& net, const Split& split, int64_t part, const torch::Tensor& input,
                       const SendBlock& send, const ReceiveBlock& receive);

}  // namespace dist
}  // namespace dydnn
