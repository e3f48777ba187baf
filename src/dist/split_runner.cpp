#include <dydnn/dist/split_runner.h>
#include <dydnn/errors.h>
#include <dydnn/nn/dynamic_net.h>

namespace dydnn {
namespace dist {

torch::Tensor run_part(nn::DynamicNetImpl& net, const Split& split, int64_t part, const torch::Tensor& input,
                       const SendBlock& send, const ReceiveBlock& receive) {
  DYDNN_CHECK_INDEX(part == 0 || part == 1, "dist", "part {} (valid: 0 or 1)", part);
  const nn::Config mine = split.parts[static_cast<size_t>(part)];
  const bool inside = split.reads_inside(part);
  // Channel order is part 0's groups first: the other part's output goes before ours only for part 1.
  auto join = [part](const torch::Tensor& theirs, const torch::Tensor& ours) {
    return part == 1 ? torch::cat({theirs, ours}, 1) : torch::cat({ours, theirs}, 1);
  };
  torch::Tensor x = input;
  for (int64_t k = 0; k < split.num_blocks; ++k) {
    if (k > 0 && split.receives(part, k - 1) && inside) x = join(receive(k - 1), x);
    x = inside ? net.forward_block(k, x, split.combined, mine) : net.forward_block(k, x, mine);
    if (split.sends(part, k)) send(k, x);
  }
  if (part == 0) return {};
  const int64_t last = split.num_blocks - 1;
  if (split.receives(part, last)) x = join(receive(last), x);
  return net.forward_head(x.dim() == 2 ? x : x.flatten(1), split.combined);
}

}  // namespace dist
}  // namespace dydnn
