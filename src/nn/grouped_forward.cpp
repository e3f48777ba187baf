#include <dydnn/errors.h>
#include <dydnn/nn/detail/grouped_forward.h>

#include <torch/torch.h>

namespace dydnn {
namespace nn {
namespace detail {

void check_grouped_input(const GroupedLayout& layout, const torch::Tensor& input, Config config, int64_t rank,
                         const char* shape, const std::string& who) {
  DYDNN_CHECK_VALUE(input.defined(), "nn", "{}: the input tensor is undefined", who);
  DYDNN_CHECK_VALUE(input.dim() == rank, "nn", "{}: expected a {}D input {} (got a {}D input of shape {})", who, rank,
                    shape, input.dim(), fmt::join(input.sizes(), "x"));
  const int64_t expected = layout.in_groups.channels_in(layout.active_in(config));
  DYDNN_CHECK_VALUE(input.size(1) == expected, "nn",
                    "{}: input has {} channels, but config {} needs {} (the active groups of {}{})", who,
                    input.size(1), config.to_string(), expected, layout.in_groups.to_string(),
                    layout.dense_input ? ", a dense input" : "");
}

namespace {

// Where output group j's inputs sit inside the compact input of `config`.
torch::Tensor slice_compact_input(const GroupedLayout& layout, const torch::Tensor& input, Config active_in,
                                  Config wanted) {
  if (wanted == active_in) return input;
  std::vector<int64_t> indices;
  int64_t compact = 0;
  for (int64_t i = 0; i < layout.in_groups.num_groups(); ++i) {
    if (!active_in.contains(i)) continue;
    if (wanted.contains(i))
      for (int64_t c = 0; c < layout.in_groups.size(i); ++c) indices.push_back(compact + c);
    compact += layout.in_groups.size(i);
  }
  const bool contiguous = indices.back() - indices.front() + 1 == static_cast<int64_t>(indices.size());
  if (contiguous) return input.narrow(1, indices.front(), static_cast<int64_t>(indices.size()));
  return input.index_select(1, torch::tensor(indices, torch::TensorOptions().dtype(torch::kLong).device(input.device())));
}

}  // namespace

Execution resolve_auto(const GroupedLayout& layout, Config config, int64_t work) {
  // Smaller per-group calls parallelise worse: with more than one intra-op thread the
  // packed call won in every measured case.
  if (layout.dense_input || layout.dense_output || work < kPerGroupMinWork || at::get_num_threads() > 1)
    return Execution::Packed;
  for (int64_t j : config.groups())
    if ((config & layout.connectivity.inputs_of(j)) != config) return Execution::PerGroup;  // a zero block is active
  return Execution::Packed;
}

torch::Tensor run_grouped(GroupedWeight& weight, const torch::Tensor& input, Config config, Execution execution,
                          int64_t work, const GroupedOp& op) {
  if (torch::GradMode::is_enabled() && (weight.requires_grad() || input.requires_grad())) {
    // An optimiser step usually follows, and LibTorch's optimisers write through
    // `.data()`, which does not bump the version counters the caches check.
    weight.invalidate();
    auto [w, b] = weight.packed_for_training(config);
    return op(input, w, b);
  }
  const auto& layout = weight.layout();
  if (execution == Execution::Auto) execution = resolve_auto(layout, config, work);
  if (execution == Execution::PerGroup && !layout.dense_output) {
    const Config active_in = layout.active_in(config);
    std::vector<torch::Tensor> outputs;
    for (int64_t j : config.groups()) {
      auto [w, b] = weight.group_for_inference(j, config);
      outputs.push_back(op(slice_compact_input(layout, input, active_in, layout.inputs_of(j, config)), w, b));
    }
    return outputs.size() == 1 ? outputs.front() : torch::cat(outputs, 1);
  }
  auto [w, b] = weight.packed_for_inference(config);
  return op(input, w, b);
}

}  // namespace detail
}  // namespace nn
}  // namespace dydnn
