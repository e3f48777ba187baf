// The inference convolutions run as oneDNN primitives created once (src/nn/onednn_conv.cpp):
// they must equal LibTorch's convolution for every shape the layers hand them, follow
// weight changes, and be safe to share between threads.
#include <dydnn/nn/kernels.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <thread>
#include <vector>

using namespace dydnn::nn;
using Catch::Matchers::Contains;

namespace {

bool close(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && torch::allclose(a, b, 1e-4, 1e-4);
}

}  // namespace

TEST_CASE("Inference convolutions equal LibTorch's for every shape, layout and view", "[nn][kernels][onednn]") {
  torch::manual_seed(21);
  torch::NoGradGuard no_grad;
  struct Case {
    int64_t n, ic, oc, hw, k, stride, padding;
    bool bias;
  };
  // Few input channels (plain source), many (blocked), odd counts (padded blocks), 1x1 and
  // 5x5 kernels, strides, no padding, no bias, batch 1 and larger.
  const std::vector<Case> cases{{1, 1, 8, 28, 3, 1, 1, true},   {1, 3, 5, 9, 3, 2, 1, true},
                                {1, 32, 16, 14, 3, 1, 1, true}, {4, 32, 64, 14, 3, 1, 1, false},
                                {2, 24, 40, 7, 1, 1, 0, true},  {3, 17, 9, 11, 5, 2, 2, true},
                                {1, 8, 8, 6, 3, 1, 0, false},   {5, 64, 10, 1, 1, 1, 0, true}};
  for (const auto& c : cases) {
    INFO("n " << c.n << " ic " << c.ic << " oc " << c.oc << " hw " << c.hw << " k " << c.k << " stride " << c.stride
              << " padding " << c.padding);
    const std::vector<int64_t> stride{c.stride, c.stride}, padding{c.padding, c.padding};
    auto x = torch::randn({c.n, c.ic, c.hw, c.hw});
    auto w = torch::randn({c.oc, c.ic, c.k, c.k});
    auto b = c.bias ? torch::randn({c.oc}) : torch::Tensor();
    const auto expected = conv2d_default(x, w, b, stride, padding);
    CHECK(close(conv2d_fast(x, w, b, stride, padding), expected));
    // Twice: the second call reuses the cached primitive.
    CHECK(close(conv2d_fast(x, w, b, stride, padding), expected));
    // A weight view into a larger storage (a config's rows and columns), a channels-last
    // and a sliced input (per-group execution hands channel slices).
    auto storage = torch::randn({c.oc + 3, c.ic + 2, c.k, c.k});
    storage.narrow(0, 1, c.oc).narrow(1, 2, c.ic).copy_(w);
    const auto view = storage.narrow(0, 1, c.oc).narrow(1, 2, c.ic);
    CHECK(close(conv2d_fast(x, view, b, stride, padding), expected));
    CHECK(close(conv2d_fast(x.contiguous(torch::MemoryFormat::ChannelsLast), w, b, stride, padding), expected));
    auto wide = torch::randn({c.n, c.ic + 4, c.hw, c.hw});
    wide.narrow(1, 4, c.ic).copy_(x);
    CHECK(close(conv2d_fast(wide.narrow(1, 4, c.ic), w, b, stride, padding), expected));
    // Prepared once, at this shape and at another batch.
    const PreparedConv2d prepared(w, b, stride, padding);
    CHECK(close(prepared(x), expected));
    auto x2 = torch::randn({c.n + 1, c.ic, c.hw, c.hw});
    CHECK(close(prepared(x2), conv2d_default(x2, w, b, stride, padding)));
    CHECK(close(prepared(x), expected));
  }
  // An expanded weight (a zero stride) is copied first: oneDNN has no layout for it.
  auto x = torch::randn({1, 3, 6, 6});
  auto expanded = torch::randn({1, 3, 3, 3}).expand({4, 3, 3, 3});
  CHECK(close(conv2d_fast(x, expanded, {}, {1, 1}, {1, 1}), conv2d_default(x, expanded.contiguous(), {}, {1, 1}, {1, 1})));
}

TEST_CASE("Convolutions with autograd keep LibTorch's path and its gradients", "[nn][kernels][onednn]") {
  torch::manual_seed(22);
  auto x = torch::randn({2, 4, 6, 6}, torch::requires_grad());
  auto w = torch::randn({3, 4, 3, 3}, torch::requires_grad());
  auto b = torch::randn({3}, torch::requires_grad());
  conv2d_fast(x, w, b, {1, 1}, {1, 1}).sum().backward();
  auto x_ref = x.detach().clone().requires_grad_(), w_ref = w.detach().clone().requires_grad_(),
       b_ref = b.detach().clone().requires_grad_();
  conv2d_default(x_ref, w_ref, b_ref, {1, 1}, {1, 1}).sum().backward();
  CHECK(close(x.grad(), x_ref.grad()));
  CHECK(close(w.grad(), w_ref.grad()));
  CHECK(close(b.grad(), b_ref.grad()));
}

TEST_CASE("A prepared convolution follows in-place weight changes and bounds its shapes", "[nn][kernels][onednn]") {
  torch::manual_seed(23);
  torch::NoGradGuard no_grad;
  auto w = torch::randn({16, 8, 3, 3}), b = torch::randn({16});
  const PreparedConv2d prepared(w, b, {1, 1}, {1, 1});
  auto x = torch::randn({1, 8, 10, 10});
  CHECK(close(prepared(x), conv2d_default(x, w, b, {1, 1}, {1, 1})));
  if (direct_onednn_available()) CHECK(prepared.bytes() >= w.numel() * 4);  // a reordered copy
  w.mul_(-2);  // in place: the version counter moves, the reordered copy is made again
  CHECK(close(prepared(x), conv2d_default(x, w, b, {1, 1}, {1, 1})));
  // More input shapes than it keeps: the oldest are dropped and remade on demand.
  for (int64_t hw = 4; hw < 16; ++hw) {
    auto xs = torch::randn({1, 8, hw, hw});
    CHECK(close(prepared(xs), conv2d_default(xs, w, b, {1, 1}, {1, 1})));
  }
  if (direct_onednn_available()) CHECK(prepared.bytes() <= 8 * w.numel() * 4 * 2);
  CHECK(close(prepared(x), conv2d_default(x, w, b, {1, 1}, {1, 1})));
  // Not CPU float32: no prepared kernel; a double input goes to LibTorch, which names the mismatch.
  CHECK(prepare_conv2d(w.to(torch::kDouble), b.to(torch::kDouble), {1, 1}, {1, 1}) == nullptr);
  CHECK(prepare_conv2d(w, b, {1, 1}, {1, 1}) != nullptr);
  CHECK_THROWS_WITH(prepared(x.to(torch::kDouble)), Contains("double"));
}

TEST_CASE("Convolutions reject bad shapes with messages that name them", "[nn][kernels][onednn][errors]") {
  torch::NoGradGuard no_grad;
  auto w = torch::randn({4, 3, 3, 3});
  CHECK_THROWS_WITH(PreparedConv2d(torch::randn({4, 3, 3}), {}, {1, 1}, {1, 1}),
                    Contains("expected a 4D weight [C_out, C_in, kh, kw] (got 3D)"));
  CHECK_THROWS_WITH(PreparedConv2d(w.to(torch::kDouble), {}, {1, 1}, {1, 1}), Contains("CPU float32 tensor (got cpu Double)"));
  CHECK_THROWS_WITH(PreparedConv2d(w, {}, {1}, {1, 1}), Contains("2 values each (got 1 and 2)"));
  CHECK_THROWS_WITH(PreparedConv2d(w, torch::randn({4}, torch::kDouble), {1, 1}, {1, 1}),
                    Contains("the bias must be float32 like the weight (got Double)"));
  // A double bias with float data is never read as float: LibTorch's path names the mismatch.
  CHECK_THROWS(conv2d_fast(torch::randn({1, 3, 8, 8}), w, torch::randn({4}, torch::kDouble), {1, 1}, {1, 1}));
  const PreparedConv2d prepared(w, torch::randn({4}), {1, 1}, {1, 1});
  CHECK_THROWS_WITH(prepared(torch::randn({1, 5, 8, 8})), Contains("the input has 5 channels, the weight expects 3"));
  CHECK_THROWS_WITH(prepared(torch::randn({5, 8, 8})), Contains("expected a 4D input [N, C, H, W] (got 3D)"));
  CHECK_THROWS_WITH(conv2d_fast(torch::randn({1, 3, 8, 8}), w, torch::randn({5}), {1, 1}, {1, 1}),
                    Contains("bias of shape [5] for 4 output channels"));
  // A kernel larger than the padded input: LibTorch's own error, not a crash.
  CHECK_THROWS(conv2d_fast(torch::randn({1, 3, 1, 1}), w, {}, {1, 1}, {0, 0}));
  // An empty batch gives an empty output.
  CHECK(conv2d_fast(torch::randn({0, 3, 8, 8}), w, {}, {1, 1}, {1, 1}).sizes() == torch::IntArrayRef{0, 4, 8, 8});
}

TEST_CASE("A prepared convolution and the cached primitives serve several threads at once", "[nn][kernels][onednn]") {
  torch::manual_seed(24);
  torch::NoGradGuard no_grad;
  auto w = torch::randn({16, 8, 3, 3}), b = torch::randn({16});
  const PreparedConv2d prepared(w, b, {1, 1}, {1, 1});
  std::vector<torch::Tensor> inputs, expected;
  for (int64_t t = 0; t < 4; ++t) {
    inputs.push_back(torch::randn({1 + t % 2, 8, 6 + t, 6 + t}));
    expected.push_back(conv2d_default(inputs.back(), w, b, {1, 1}, {1, 1}));
  }
  std::vector<int> wrong(inputs.size(), 0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < inputs.size(); ++t)
    threads.emplace_back([&, t] {
      torch::NoGradGuard guard;
      for (int k = 0; k < 200; ++k) {
        if (!close(prepared(inputs[t]), expected[t])) ++wrong[t];
        if (!close(conv2d_fast(inputs[t], w, b, {1, 1}, {1, 1}), expected[t])) ++wrong[t];
      }
    });
  for (auto& t : threads) t.join();
  for (size_t t = 0; t < inputs.size(); ++t) CHECK(wrong[t] == 0);
}
