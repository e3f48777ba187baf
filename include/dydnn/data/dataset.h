#pragma once
/// \file
/// In-memory image data sets for training: checks against a spec, normalisation, a
/// seeded train/validation split and the deterministic batch order of an epoch.

#include <dydnn/data/idx.h>
#include <dydnn/nn/spec.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace dydnn {
namespace data {

/// Per-channel normalisation `(x - mean) / std`, where `x` is the image in [0, 1]
/// (uint8 images are divided by 255 first; float images are taken as they are).
///
/// Example:
/// \code
///   auto train = dydnn::data::fashion_mnist("train");
///   auto norm = dydnn::data::Normalization::fit(train.images);   // mean 0.286, std 0.353
///   torch::Tensor x = norm.apply(train.images.slice(0, 0, 64));   // float [64, 1, 28, 28]
/// \endcode
struct Normalization {
  std::vector<double> mean;  ///< one per channel; empty = identity
  std::vector<double> std;   ///< one per channel, > 0

  /// The mean and standard deviation of each channel of `images` (`[N, C, H, W]`).
  /// Throws `ValueError` for an empty or non-4-D tensor.
  static Normalization fit(const torch::Tensor& images);
  /// Float32 `[N, C, H, W]`, normalised. Throws `ValueError` when the channel count
  /// differs from `mean.size()`.
  torch::Tensor apply(const torch::Tensor& images) const;
  bool identity() const { return mean.empty(); }
};

/// Checks `data` against `spec`: images `[N, C, H, W]` with the spec's channels and
/// size, labels `[N]` of integers in `[0, classes)`, `N > 0`. Throws `ValueError`
/// naming `what` (e.g. "training data"), the bad value and the valid range.
void check_dataset(const ImageDataset& data, const nn::NetSpec& spec, const std::string& what);

/// A seeded split into `{train, validation}`: `validation_fraction` of the examples
/// (rounded down, at least 1 when the fraction is > 0), chosen by a permutation that
/// depends only on `seed`. Throws `ValueError` for a fraction outside [0, 1).
std::pair<ImageDataset, ImageDataset> split(const ImageDataset& data, double validation_fraction, uint64_t seed);

/// The order in which epoch `epoch` of stage `stage` visits `n` examples: a
/// permutation that depends only on `(seed, stage, epoch)`, so a resumed run sees the
/// same batches as an uninterrupted one.
torch::Tensor epoch_order(int64_t n, uint64_t seed, int64_t stage, int64_t epoch);

/// Training augmentation of a float batch `[N, C, H, W]`: each image is mirrored left to
/// right with probability 1/2 (when `flip`) and shifted by up to `max_shift` pixels in x and
/// y (edges replicated), drawn from `generator`. Returns a new tensor; `max_shift` 0 and no
/// flip return the input. Throws `ValueError` for a negative shift or a non-4-D batch.
torch::Tensor augment(const torch::Tensor& images, int64_t max_shift, bool flip, at::Generator& generator);

/// A generator seed derived from `(seed, stage, epoch)` (splitmix64 mixing).
uint64_t derive_seed(uint64_t seed, int64_t stage, int64_t epoch);

}  // namespace data
}  // namespace dydnn
