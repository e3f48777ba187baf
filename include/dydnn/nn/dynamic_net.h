#pragma once
/// \file
/// `DynamicNet`: a network of dynamic layers built from a `NetSpec`.

#include <dydnn/nn/dynamic_batch_norm2d.h>
#include <dydnn/nn/dynamic_conv2d.h>
#include <dydnn/nn/dynamic_linear.h>
#include <dydnn/nn/spec.h>
#include <dydnn/nn/static_layer.h>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

namespace dydnn {
namespace nn {

/// A dynamic DNN: one set of weights holding every valid config's sub-network.
///
/// Layer `k` of the spec is registered as `conv<k>` (+ `bn<k>`) or `linear<k>`; the
/// head as `head` (`head_<config name>`, e.g. `head_AB`, for `per_config`). Shapes: input `[N, C, H, W]` of the spec ->
/// logits `[N, classes]` at the current config.
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

  /// The parameters `config` uses (allowed blocks of its groups, their biases and
  /// BN affine parameters, its head), as a count of numbers.
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
  void check_config(Config config) const;
  torch::Tensor run(const torch::Tensor& input, Config config);
  torch::Tensor run_split(const torch::Tensor& input, Config config, Config frozen);
  torch::Tensor finish_block(const Block& b, torch::Tensor x) const;
  torch::Tensor run_head(torch::Tensor x, Config config);

  NetSpec spec_;
  Connectivity connectivity_;
  Config config_;
  std::vector<Block> blocks_;
  DynamicLinear head_{nullptr};
  std::vector<torch::nn::Linear> heads_;  // per_config
  GroupSpec head_groups_;
};

/// A `ModuleHolder` for `DynamicNetImpl`.
TORCH_MODULE(DynamicNet);

}  // namespace nn
}  // namespace dydnn
