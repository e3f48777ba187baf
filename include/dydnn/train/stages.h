#pragma once
/// \file
/// Training methods as stages, and the building blocks of a stage: which parameters it
/// trains, and freezing everything earlier stages trained (design §4.1, §4.2).

#include <dydnn/nn/dynamic_net.h>

#include <string>
#include <vector>

namespace dydnn {
namespace train {

/// How a dynamic net is trained.
enum class Method {
  Static,       ///< the full config alone, every parameter at once (the baseline)
  Incremental,  ///< one stage per valid config in order, earlier ones frozen (MLCAD'19)
  Nested,       ///< Fluid: the same rule over a fluid net's A, AB, C*, C*D*, ABC*, ABC*D* (design §4.2)
  Sandwich,     ///< slimmable: largest + smallest + random configs every step, in-place distillation
};

/// "static" | "incremental" | "nested" | "sandwich".
std::string to_string(Method method);
/// Parses a method name; throws `ValueError` listing the valid names.
Method method_from_string(const std::string& name);

/// One stage of training.
struct Stage {
  /// The config whose loss the stage trains (the largest one for joint methods).
  nn::Config config;
  /// Every config the stage trains: `{config}` for the staged methods; all valid
  /// configs for `sandwich` (it samples from them each step).
  std::vector<nn::Config> configs;
  /// A display name: the config's name ("AB", "C*D*"), or "joint".
  std::string name;
};

/// The stages `method` trains `net` in.
///
/// - `incremental` and `nested`: one stage per valid config, in the declared order.
///   A stage trains the parameters its config uses that no earlier stage's config
///   uses, and freezes the rest with their BN statistics, so every earlier config's
///   outputs stay bitwise identical. With the `fluid` mask this is exactly the nested
///   schedule of design §4.2 (A; B; C* alone; D*; the cross edges into C* with the
///   `ABC*` head; those into D*); `nested` requires a fluid net.
/// - `static` and `sandwich`: one stage over every parameter.
/// Throws `ValueError` naming the method and the net's connectivity when they do not fit.
std::vector<Stage> plan_stages(const nn::DynamicNetImpl& net, Method method);

/// The parameters stage `index` trains: those its configs use minus those any earlier
/// stage's configs use (the very tensors of `net->parameters()`). Empty when a stage
/// has nothing new (e.g. late fusion with an additive head). Throws `IndexError`.
std::vector<torch::Tensor> stage_parameters(const nn::DynamicNetImpl& net, const std::vector<Stage>& stages,
                                            size_t index);

/// Prepares `net` for stage `index`: `requires_grad` is true exactly for
/// `stage_parameters(...)`, and the BN statistics the earlier stages' configs use are
/// frozen (the rest learn). Returns the trainable parameters.
std::vector<torch::Tensor> freeze_for_stage(nn::DynamicNetImpl& net, const std::vector<Stage>& stages, size_t index);

/// Unfreezes every parameter and every BN statistics set.
void unfreeze_all(nn::DynamicNetImpl& net);

}  // namespace train
}  // namespace dydnn
