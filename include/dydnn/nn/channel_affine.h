#pragma once
/// \file
/// `ChannelAffine`: a per-output-channel affine map that a layer can fold into its weights.

#include <torch/types.h>

#include <cstdint>

namespace dydnn {
namespace nn {

/// `y = x * scale + shift` per channel (`scale`, `shift`: `[C]`): an eval-mode batch
/// normalisation (`DynamicBatchNorm2d::affine_for_inference`) that an inference path
/// folds into the preceding layer's cached weights. `version` changes whenever the
/// values do (a cache compares it rather than the tensors).
struct ChannelAffine {
  torch::Tensor scale, shift;
  uint64_t version = 0;
};

}  // namespace nn
}  // namespace dydnn
