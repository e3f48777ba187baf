#pragma once
/// \file
/// Internal: the block-structured weight shared by `DynamicConv2d` and `DynamicLinear`.

#include <dydnn/nn/channel_affine.h>
#include <dydnn/nn/config.h>
#include <dydnn/nn/connectivity.h>
#include <dydnn/nn/execution.h>
#include <dydnn/nn/group_spec.h>
#include <dydnn/nn/kernels.h>

#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dydnn {
namespace nn {
namespace detail {

/// Geometry of a grouped layer: its input and output groups, whether a side is
/// dense (a single group that is always fully present: the image at the stem, the
/// logits at the head), and which blocks exist.
struct GroupedLayout {
  GroupSpec in_groups;   ///< one group when `dense_input`
  GroupSpec out_groups;  ///< one group when `dense_output`
  Connectivity connectivity;
  bool dense_input = false;
  bool dense_output = false;

  /// Throws `ValueError` naming `who` when the groups and the mask disagree.
  void validate(const std::string& who) const;
  /// Whether output group `j` reads input group `i` (layout coordinates).
  bool allowed(int64_t j, int64_t i) const;
  /// Layout groups active at `config` (group 0 of a dense side is always active).
  Config active_in(Config config) const { return dense_input ? Config(1) : config; }
  Config active_out(Config config) const { return dense_output ? Config(1) : config; }
  /// Output group `j`'s inputs at `config`.
  Config inputs_of(int64_t j, Config config) const;
};

/// A tensor's in-place version counter; 0 for inference tensors, which have none
/// (their in-place changes are not seen by caches: call `invalidate_cache()`).
inline uint64_t version_of(const torch::Tensor& t) { return t.is_inference() ? 0 : t._version(); }

/// A contiguous range of channels, or none when the selected groups are not adjacent.
struct ChannelRange {
  int64_t start = 0;
  int64_t length = 0;
  bool contiguous = false;
};

/// The channel range that the groups of `config` occupy in `spec`.
ChannelRange channel_range(const GroupSpec& spec, Config config);
/// The channel indices of the groups of `config` in `spec`, in group order.
std::vector<int64_t> channel_indices(const GroupSpec& spec, Config config);

/// A cached part of a weight for inference: `weight` and `bias` dense and contiguous,
/// `prepared` a convolution over them prepared once (its weights in the layout its kernel
/// reads), or null.
struct InferencePart {
  torch::Tensor weight, bias;
  std::shared_ptr<const PreparedConv2d> prepared;
};

/// Makes `InferencePart::prepared` from a part's dense weight and bias (once per cached
/// part); returns null when the layer's kernel reads the dense weight as it is.
using WeightPreparer =
    std::function<std::shared_ptr<const PreparedConv2d>(const torch::Tensor& weight, const torch::Tensor& bias)>;

/// One dense storage tensor `[out_channels, in_channels, *kernel]` (zeros where the
/// mask forbids a block) whose allowed blocks are registered as separate leaf
/// parameters (views into the storage), so that
/// - freezing a block is `requires_grad = false` and an optimiser sees only blocks;
/// - inference at a config with contiguous active channels is a zero-copy view.
class GroupedWeight {
 public:
  GroupedWeight() = default;
  /// Creates the storage, registers `weight_<j>_<i>` (and `bias_<j>`, or
  /// `bias_in<i>` for `bias_per_input_group`) on `owner`, initialised like
  /// `torch::nn::Conv2d`/`Linear` (Kaiming-uniform over the fan-in of the full layer).
  GroupedWeight(torch::nn::Module& owner, GroupedLayout layout, std::vector<int64_t> kernel, bool bias,
                bool bias_per_input_group);

  const GroupedLayout& layout() const { return layout_; }
  /// The weight and bias of the active sub-layer at `config` for autograd (built from
  /// the block parameters with `torch::cat`); only output groups `rows` when given.
  std::pair<torch::Tensor, torch::Tensor> packed_for_training(Config config, Config rows = Config()) const;
  /// The weight and bias of the active sub-layer at `config` without autograd: a view
  /// when the active channels are contiguous, else a gathered copy cached for the
  /// last config.
  std::pair<torch::Tensor, torch::Tensor> packed_for_inference(Config config);
  /// The weight of output group `j` over exactly its inputs at `config`, and its
  /// bias, without autograd (a view for contiguous inputs).
  std::pair<torch::Tensor, torch::Tensor> group_for_inference(int64_t j, Config config);
  /// The weight and bias of output groups `rows` over every active input at `config`,
  /// without autograd: contiguous copies cached per (config, rows) and revalidated by the
  /// parameters' versions. With `fold`, the per-channel affine map of the rows' outputs
  /// (an eval-mode BN) is folded in: `weight * scale`, `bias * scale + shift`. `prepare`
  /// (when given) makes `prepared` once per cached part. A dense-output layer's rows are
  /// its one output group whatever `rows` holds.
  InferencePart rows_for_inference(Config config, Config rows, const ChannelAffine* fold = nullptr,
                                   const WeightPreparer& prepare = {});
  /// For a dense-output layer with per-input-group biases (the additive head): the weight
  /// columns of input groups `columns` and the sum of their biases, without autograd.
  InferencePart columns_for_inference(Config config, Config columns);
  /// Whether any block parameter currently requires a gradient.
  bool requires_grad() const;
  /// The block and bias parameters that `config` uses (only output groups `rows` when
  /// given): the very tensors registered on the owner.
  std::vector<torch::Tensor> parameters_of(Config config, Config rows = Config()) const;
  /// Rebuilds the storage from the block parameters' current values (after `.to()` or
  /// after a parameter's data was replaced) and re-points them into it.
  void relayout();
  /// Drops cached copies (call after changing parameters through `.data`).
  void invalidate() {
    part_cache_.clear();
    cache_config_ = Config();
    cache_ = {};
    view_config_ = Config();
    views_ = {};
  }
  /// Bytes held: the dense storage, the biases and any cached gathered copy.
  int64_t resident_bytes() const;

 private:
  void sync();
  InferencePart part_for_inference(Config config, Config part, bool columns, const ChannelAffine* fold,
                                   const WeightPreparer& prepare);
  torch::Tensor bias_for(Config config);
  uint64_t version_sum() const;

  GroupedLayout layout_;
  std::vector<int64_t> kernel_;
  bool bias_per_input_group_ = false;
  torch::Tensor storage_;               // [O, I, *kernel]
  torch::Tensor bias_storage_;          // [O], or [G_in, O] per input group; undefined without bias
  std::vector<torch::Tensor> blocks_;   // views into storage_
  std::vector<std::pair<int64_t, int64_t>> block_ids_;  // (j, i) of each block
  std::vector<torch::Tensor> biases_;   // views into bias_storage_
  std::vector<const void*> expected_ptrs_;
  // The last config's weight/bias views: building them costs a few view ops per call,
  // which matters at batch 1; views share the storage, so in-place updates show.
  Config view_config_;
  std::pair<torch::Tensor, torch::Tensor> views_;
  Config cache_config_;
  uint64_t cache_version_ = 0;
  std::pair<torch::Tensor, torch::Tensor> cache_;
  // Contiguous copies of parts of the weight that refinements use, per (config, part).
  struct PartCache {
    Config config, part;
    bool columns = false;
    bool folded = false;
    uint64_t version = 0, fold_version = 0;
    InferencePart tensors;
  };
  static constexpr size_t kPartCacheSize = 16;
  std::vector<PartCache> part_cache_;
};

}  // namespace detail
}  // namespace nn
}  // namespace dydnn
