#pragma once
/// \file
/// `DynamicNet`: a network of dynamic layers built from a `NetSpec`.

#include <dydnn/nn/dynamic_batch_norm2d.h>
#include <dydnn/nn/dynamic_conv2d.h>
#include <dydnn/nn/dynamic_linear.h>
#include <dydnn/nn/exits.h>
#include <dydnn/nn/spec.h>
#include <dydnn/nn/static_layer.h>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

#include <memory>
#include <utility>

namespace dydnn {
namespace detail {
class SideThread;
}  // namespace detail
namespace nn {

/// A dynamic DNN: one set of weights holding every valid config's sub-network.
///
/// Layer `k` of the spec is registered as `conv<k>` (+ `bn<k>`) or `linear<k>`; the
/// head as `head` (`head_<config name>`, e.g. `head_AB`, for `per_config`); early exit `e`
/// of the spec as `exit<e>` (`exit<e>_<config name>`). Exits are numbered 0 .. num_exits()-1,
/// the final head last. Shapes: input `[N, C, H, W]` of the spec -> logits `[N, classes]`
/// at the current config.
///
/// Example:
/// \code
///   dydnn::nn::DynamicNet net(dydnn::nn::NetSpec::load("fashion_mnist_default.spec"));
///   net->eval();
///   net->set_config(dydnn::nn::Config::prefix(2));   // groups A and B
///   torch::NoGradGuard no_grad;
///   auto logits = net->forward(torch::randn({1, 1, 28, 28}));
/// \endcode
/// Thread-safety: `forward` on one instance is not thread-safe; `set_config` between
/// calls is cheap (a validated assignment per layer, no allocation).
class DynamicNetImpl : public torch::nn::Module {
 public:
  explicit DynamicNetImpl(NetSpec spec);

  /// Selects the sub-network for later calls. Throws `ValueError`/`IndexError` listing
  /// the valid configs when `config` is not one of them.
  void set_config(Config config);
  /// The current config (the full one after construction).
  Config config() const { return config_; }
  /// The valid configs, smallest first for the presets.
  const std::vector<Config>& configs() const { return connectivity_.valid_configs(); }
  const Connectivity& connectivity() const { return connectivity_; }
  const NetSpec& spec() const { return spec_; }

  /// Logits at the current config.
  torch::Tensor forward(const torch::Tensor& input);
  /// Logits at `config` (validated), leaving the current config unchanged.
  torch::Tensor forward(const torch::Tensor& input, Config config);

  /// The number of layers of the spec (each is one `forward_block` step).
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  /// Runs layer `k` alone (conv or linear, its BN, ReLU and pooling) at `config`,
  /// computing only the output groups `rows` (a subset of `config`; all of them when
  /// empty). `input` holds every group of `config` in channel order
  /// (the image for layer 0); shapes `[N, C_in, H, W]` (or `[N, F]` for a linear layer,
  /// flattened here when needed) -> `[N, channels of rows, H', W']`. What distributed
  /// inference runs when each device holds some of the groups. Throws `IndexError` for
  /// `k` outside [0, num_blocks()) and `ValueError` for an invalid config.
  torch::Tensor forward_block(int64_t k, const torch::Tensor& input, Config config, Config rows = Config());
  /// The features the head reads at `config` (validated): every layer run, then
  /// flattened, `[N, C, H, W]` -> `[N, F]`. `forward(x, c)` is
  /// `forward_head(features(x, c), c)`.
  torch::Tensor features(const torch::Tensor& input, Config config);
  /// The head at `config` (validated) on `features` `[N, F]` (groups in channel order,
  /// e.g. the two islands' features concatenated: late fusion) -> logits `[N, classes]`.
  torch::Tensor forward_head(const torch::Tensor& features, Config config);
  /// The number of exits: the spec's early exits plus the final head (>= 1).
  int64_t num_exits() const { return static_cast<int64_t>(heads_.size()); }
  /// The number of feature layers that run before exit `exit`'s head. Throws
  /// `IndexError` for an exit outside 0 .. num_exits()-1.
  int64_t exit_depth(int64_t exit) const;
  /// Logits `[N, classes]` of exit `exit` at `config`: only the layers before the exit
  /// run. `exit = -1` is the final head.
  torch::Tensor forward_to_exit(const torch::Tensor& input, Config config, int64_t exit);
  /// Every exit's logits at `config` from one pass over the layers (joint training,
  /// calibration), in exit order.
  std::vector<torch::Tensor> forward_exits(const torch::Tensor& input, Config config);
  /// Early-exit inference at `config`: each sample stops at the first exit whose score
  /// is below its threshold in `policy` (the final head always answers). The batch is
  /// split by exit: only the samples still running go through later layers (at batch 1
  /// an exiting sample computes nothing more), and the answers are put back in input
  /// order. Throws `ValueError` when `policy.thresholds` does not have num_exits()-1
  /// entries or holds a NaN.
  AdaptiveOutput forward_adaptive(const torch::Tensor& input, Config config, const ExitPolicy& policy);
  /// Logits at (`config`, `exit`) together with the activations that `refine` reuses.
  /// No autograd (the cache holds plain activations); eval mode only (`ValueError` otherwise).
  std::pair<torch::Tensor, ActivationCache> forward_cached(const torch::Tensor& input, Config config,
                                                           int64_t exit = -1);
  /// Anytime refinement: the logits at (`config`, `exit`) for the input `cache` was made
  /// from, computing only the groups of `config` that the cache lacks (in the layers
  /// already computed) and the layers past the cache's exit; equal to a fresh
  /// `forward_to_exit` (up to float rounding of the kernels). Updates `cache` to the new
  /// point. Throws `ValueError` unless `can_refine(cache.config, config)` and `exit` is
  /// not shallower than the cache's.
  torch::Tensor refine(ActivationCache& cache, Config config, int64_t exit = -1);
  /// Whether activations at `from` stay valid at `to`: both valid, `from` a subset of
  /// `to`, no group of `from` reads a group added by `to`, and the layers' statistics
  /// are shared between configs (true under `incremental` and `fluid`, and for
  /// `independent`; never under `prefix`).
  bool can_refine(Config from, Config to) const;
  /// Multiply-accumulates of one image at `config` up to exit `exit` (its head included).
  int64_t macs(Config config, int64_t exit) const;
  /// Multiply-accumulates of one image for `refine` from (`from`, `from_exit`) to
  /// (`to`, `to_exit`): the new groups in the computed layers, every group of the
  /// layers past `from_exit`, and the head of `to_exit`.
  int64_t refine_macs(Config from, int64_t from_exit, Config to, int64_t to_exit) const;

  /// The parameters `config` uses (allowed blocks of its groups, their biases and
  /// BN affine parameters, its heads, every exit's included), as a count of numbers.
  int64_t parameter_count(Config config) const;
  /// Multiply-accumulates of one image at `config`, counting only allowed blocks.
  int64_t macs(Config config) const;
  /// The static layers of `config` (plain tensors; see `StaticLayer`).
  std::vector<StaticLayer> static_layers(Config config);
  /// A plain `torch::nn::Sequential` computing what `forward` computes at `config`
  /// (eval-mode semantics), holding only that sub-network's weights.
  torch::nn::Sequential materialize(Config config);

  /// Bytes the net holds to run every config: weight storages, biases, BN statistics
  /// and every cache (what N separate static models would replace).
  int64_t resident_bytes() const;
  /// Freezes (or unfreezes) group `g`'s BN running statistics in every layer.
  void set_frozen_statistics(int64_t group, bool frozen);
  /// Freezes (or unfreezes) the BN statistics sets that `config` uses, in every layer
  /// (what a stage of incremental or nested training freezes once it is done).
  void set_frozen_statistics(Config config, bool frozen);
  /// The parameter tensors `config` uses (the same tensors as `parameters()`): its
  /// allowed blocks, biases, BN affine parameters and head. Freezing them all (and
  /// their statistics) keeps `config`'s outputs bitwise unchanged by later training.
  std::vector<torch::Tensor> parameters_of(Config config) const;
  /// The groups of `config` whose outputs depend only on frozen parameters and frozen
  /// statistics, closed under the mask (a group is in it only if everything it reads
  /// is). Training at `config` runs that part once without autograd and only the rest
  /// with it ("frozen groups need no weight gradients"); empty when nothing is frozen.
  Config frozen_part(Config config) const;
  /// Drops every layer's inference caches. Needed only after changing parameters
  /// through `.data()` outside a training forward (LibTorch's optimisers do; a forward
  /// with autograd before the step drops them too); `Trainer` calls it after each step.
  void invalidate_caches();
  /// Sets the inference strategy of every grouped layer.
  void set_execution(Execution execution);

 private:
  struct Block {
    DynamicConv2d conv{nullptr};
    DynamicBatchNorm2d bn{nullptr};
    DynamicLinear linear{nullptr};
    LayerSpec spec;
    int64_t conv_h = 0, conv_w = 0;  // the conv's output size before its pool, for MACs
  };
  // One classifier: an early exit, or the final head (the last one).
  struct Head {
    int64_t after = 0;     // feature layers before it
    int64_t avg_pool = 0;  // pooling before it (0 = none)
    DynamicLinear linear{nullptr};
    std::vector<torch::nn::Linear> per_config;
    GroupSpec groups;  // its input features' groups
  };
  void check_config(Config config) const;
  void check_input(const torch::Tensor& input) const;
  int64_t check_exit(int64_t exit) const;
  torch::Tensor run(const torch::Tensor& input, Config config, int64_t exit);
  torch::Tensor run_split(const torch::Tensor& input, Config config, Config frozen, int64_t exit);
  torch::Tensor run_block(Block& b, torch::Tensor x, Config config);
  torch::Tensor finish_block(const Block& b, torch::Tensor x) const;
  // Output groups `rows` of block `b` at `config` (its layer and BN; no pooling or activation).
  torch::Tensor run_rows(Block& b, const torch::Tensor& x, Config config, Config rows);
  Head make_head(const std::string& name, int64_t after, int64_t avg_pool, GroupSpec groups);
  torch::Tensor run_head(int64_t exit, torch::Tensor x, Config config);
  int64_t block_macs(const Block& b, Config config, Config rows) const;

  NetSpec spec_;
  Connectivity connectivity_;
  Config config_;
  std::vector<Block> blocks_;
  std::vector<Head> heads_;  // the early exits in order, then the final head
  std::shared_ptr<dydnn::detail::SideThread> side_;  // made by the first parallel-head forward
};

/// A `ModuleHolder` for `DynamicNetImpl`.
TORCH_MODULE(DynamicNet);

}  // namespace nn
}  // namespace dydnn
