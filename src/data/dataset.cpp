#include <dydnn/data/dataset.h>
#include <dydnn/errors.h>

#include <torch/torch.h>

#include <cmath>

namespace dydnn {
namespace data {

Normalization Normalization::fit(const torch::Tensor& images) {
  DYDNN_CHECK_VALUE(images.defined() && images.dim() == 4 && images.size(0) > 0, "data",
                    "Normalization.fit: expected non-empty images [N, C, H, W] (got shape [{}])",
                    images.defined() ? fmt::format("{}", fmt::join(images.sizes(), ", ")) : "undefined");
  torch::NoGradGuard no_grad;
  torch::Tensor x = images.scalar_type() == torch::kUInt8 ? images.to(torch::kDouble) / 255.0 : images.to(torch::kDouble);
  Normalization n;
  for (int64_t c = 0; c < x.size(1); ++c) {
    auto channel = x.select(1, c);
    n.mean.push_back(channel.mean().item<double>());
    n.std.push_back(std::max(channel.std(/*unbiased=*/false).item<double>(), 1e-6));
  }
  return n;
}

torch::Tensor Normalization::apply(const torch::Tensor& images) const {
  DYDNN_CHECK_VALUE(images.defined() && images.dim() == 4, "data", "Normalization.apply: expected images [N, C, H, W]");
  // A copy in every case: the in-place steps below must never write into the caller's
  // float images (`to(kFloat)` of a float tensor is the tensor itself).
  torch::Tensor x = images.scalar_type() == torch::kUInt8 ? images.to(torch::kFloat).div_(255.0f)
                                                          : images.to(torch::kFloat, false, /*copy=*/true);
  if (identity()) return x;
  DYDNN_CHECK_VALUE(static_cast<int64_t>(mean.size()) == x.size(1) && mean.size() == std.size(), "data",
                    "Normalization.apply: images have {} channels but the normalisation has {}", x.size(1),
                    mean.size());
  for (size_t c = 0; c < std.size(); ++c)
    DYDNN_CHECK_VALUE(std[c] > 0 && std::isfinite(std[c]) && std::isfinite(mean[c]), "data",
                      "Normalization.apply: channel {} has mean {} and std {} (valid: finite, std > 0)", c, mean[c],
                      std[c]);
  auto opts = torch::TensorOptions().dtype(torch::kFloat);
  auto m = torch::tensor(std::vector<float>(mean.begin(), mean.end()), opts).view({1, -1, 1, 1});
  auto s = torch::tensor(std::vector<float>(std.begin(), std.end()), opts).view({1, -1, 1, 1});
  return x.sub_(m).div_(s);
}

void check_dataset(const ImageDataset& data, const nn::NetSpec& spec, const std::string& what) {
  DYDNN_CHECK_VALUE(data.images.defined() && data.labels.defined(), "data", "{}: images or labels are missing", what);
  DYDNN_CHECK_VALUE(data.labels.dim() == 1, "data", "{}: labels must be 1-D [N] (got shape [{}])", what,
                    fmt::join(data.labels.sizes(), ", "));
  DYDNN_CHECK_VALUE(data.size() > 0, "data", "{}: the data set is empty (0 examples; need at least 1)", what);
  DYDNN_CHECK_VALUE(data.images.dim() == 4, "data", "{}: images must be [N, C, H, W] (got shape [{}])", what,
                    fmt::join(data.images.sizes(), ", "));
  DYDNN_CHECK_VALUE(data.images.size(0) == data.size(), "data", "{}: {} images but {} labels (they must match)", what,
                    data.images.size(0), data.size());
  DYDNN_CHECK_VALUE(data.images.size(1) == spec.in_channels, "data",
                    "{}: images have {} channels but spec '{}' expects {} (input {} {} {})", what, data.images.size(1),
                    spec.name, spec.in_channels, spec.in_channels, spec.height, spec.width);
  DYDNN_CHECK_VALUE(data.images.size(2) == spec.height && data.images.size(3) == spec.width, "data",
                    "{}: images are {}x{} but spec '{}' expects {}x{}", what, data.images.size(2), data.images.size(3),
                    spec.name, spec.height, spec.width);
  DYDNN_CHECK_VALUE(!data.labels.is_floating_point() && !data.labels.is_complex(), "data",
                    "{}: labels must be integers (got {})", what, c10::toString(data.labels.scalar_type()));
  const int64_t lo = data.labels.min().item<int64_t>(), hi = data.labels.max().item<int64_t>();
  DYDNN_CHECK_VALUE(lo >= 0 && hi < spec.classes, "data",
                    "{}: label {} is out of range (valid: 0..{} for the {} classes of spec '{}')", what,
                    lo < 0 ? lo : hi, spec.classes - 1, spec.classes, spec.name);
}

torch::Tensor augment(const torch::Tensor& images, int64_t max_shift, bool flip, at::Generator& generator) {
  DYDNN_CHECK_VALUE(max_shift >= 0, "data", "augment: max_shift {} (valid: >= 0)", max_shift);
  DYDNN_CHECK_VALUE(images.defined() && images.dim() == 4, "data", "augment: expected a batch [N, C, H, W]");
  torch::NoGradGuard no_grad;
  torch::Tensor x = images;
  const int64_t n = x.size(0);
  if (flip) {
    const auto mirror = torch::rand({n}, generator).lt(0.5).view({n, 1, 1, 1});
    x = torch::where(mirror, x.flip({3}), x);
  }
  if (max_shift > 0) {
    const auto padded = at::replication_pad2d(x, {max_shift, max_shift, max_shift, max_shift});
    const auto offsets = torch::randint(0, 2 * max_shift + 1, {n, 2}, generator, torch::kLong);
    const auto* o = offsets.data_ptr<int64_t>();
    auto out = torch::empty_like(x);
    for (int64_t k = 0; k < n; ++k)
      out[k].copy_(padded[k].narrow(1, o[2 * k], x.size(2)).narrow(2, o[2 * k + 1], x.size(3)));
    x = out;
  }
  return x;
}

uint64_t derive_seed(uint64_t seed, int64_t stage, int64_t epoch) {
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(seed) ^ static_cast<uint64_t>(stage)) ^ static_cast<uint64_t>(epoch));
}

namespace {
torch::Tensor seeded_permutation(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randperm(n, gen, torch::TensorOptions().dtype(torch::kLong));
}
ImageDataset take(const ImageDataset& data, const torch::Tensor& index) {
  return ImageDataset{data.images.index_select(0, index), data.labels.index_select(0, index)};
}
}  // namespace

std::pair<ImageDataset, ImageDataset> split(const ImageDataset& data, double validation_fraction, uint64_t seed) {
  DYDNN_CHECK_VALUE(validation_fraction >= 0.0 && validation_fraction < 1.0, "data",
                    "split: validation fraction {} is out of range (valid: 0 <= fraction < 1)", validation_fraction);
  const int64_t n = data.size();
  int64_t n_val = static_cast<int64_t>(validation_fraction * static_cast<double>(n));
  if (validation_fraction > 0 && n_val == 0) n_val = 1;
  DYDNN_CHECK_VALUE(n - n_val > 0, "data", "split: {} examples leave none for training at fraction {}", n,
                    validation_fraction);
  if (n_val == 0) return {data, ImageDataset{}};
  const auto order = seeded_permutation(n, derive_seed(seed, -1, -1));
  return {take(data, order.slice(0, n_val)), take(data, order.slice(0, 0, n_val))};
}

torch::Tensor epoch_order(int64_t n, uint64_t seed, int64_t stage, int64_t epoch) {
  DYDNN_CHECK_VALUE(n > 0, "data", "epoch_order: {} examples (need at least 1)", n);
  return seeded_permutation(n, derive_seed(seed, stage, epoch));
}

}  // namespace data
}  // namespace dydnn
