#pragma once
// A tiny learnable data set for training tests: four classes, each a bright quadrant of an
// 8x8 image, plus noise.

#include <dydnn/data/dataset.h>

#include <torch/torch.h>

inline dydnn::data::ImageDataset quadrants(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto labels = torch::randint(0, 4, {n}, gen, torch::kLong);
  auto images = torch::rand({n, 1, 8, 8}, gen) * 0.5;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t c = labels[k].item<int64_t>();
    images[k].narrow(1, (c / 2) * 4, 4).narrow(2, (c % 2) * 4, 4).add_(0.6);
  }
  return dydnn::data::ImageDataset{(images.clamp(0, 1) * 255).to(torch::kUInt8), labels};
}
