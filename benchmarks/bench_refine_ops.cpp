// Where batch-1 refinement time goes: each call of `refine` from ABC to ABCD on
// fashion_mnist_exits (conv 1->32 at 28x28, conv 32->64 at 14x14, additive head over
// 64x7x7), beside the calls of a fresh ABCD run, at the shapes those calls see, on random
// data. Median thread CPU time over interleaved rounds, one intra-op thread. Prints a
// markdown table (docs/depth.md quotes it). Run: build/benchmarks/bench_refine_ops
#include <dydnn/nn/kernels.h>
#include <dydnn/runtime/allocator.h>

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

namespace {

double thread_us() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

struct Op {
  std::string side, name;
  std::function<void()> run;
  std::vector<double> us;
};

}  // namespace

int main() {
  using dydnn::nn::conv2d_fast;
  using dydnn::nn::max_pool2d_fast;
  dydnn::runtime::retain_freed_memory();
  torch::set_num_threads(1);
  c10::InferenceMode guard;
  torch::manual_seed(0);
  const std::vector<int64_t> one{1, 1};
  auto bn = [](const torch::Tensor& x) {
    const int64_t c = x.size(1);
    return torch::batch_norm(x, torch::ones({c}), torch::zeros({c}), torch::zeros({c}), torch::ones({c}), false, 0.1,
                             1e-5, true);
  };
  auto image = torch::randn({1, 1, 28, 28});
  // Refine ABC -> ABCD: group D's rows (8 of conv0, 16 of conv1), over all inputs.
  auto w0d = torch::randn({8, 1, 3, 3}), b0d = torch::randn({8});
  auto w1d = torch::randn({16, 32, 3, 3}), b1d = torch::randn({16});
  const dydnn::nn::PreparedConv2d conv0d(w0d, b0d, one, one), conv1d(w1d, b1d, one, one);
  // LibTorch's oneDNN path (mkldnn_convolution) with weights reordered once, for comparison.
  auto w0d_libtorch = dydnn::nn::prepare_conv2d_weight(w0d, one, one);
  auto w1d_libtorch = dydnn::nn::prepare_conv2d_weight(w1d, one, one);
  auto cached0 = torch::randn({1, 24, 14, 14}), cached1 = torch::randn({1, 48, 7, 7});
  auto in1 = torch::randn({1, 32, 14, 14});
  auto y0d = conv2d_fast(image, w0d, b0d, one, one), y1d = conv2d_fast(in1, w1d, b1d, one, one);
  auto p0d = max_pool2d_fast(y0d, 2), p1d = max_pool2d_fast(y1d, 2);
  auto head_cols = torch::randn({10, 784}), head_bias = torch::randn({10}), logits = torch::randn({1, 10});
  auto features_d = p1d.flatten(1);
  // Fresh ABCD.
  auto w0 = torch::randn({32, 1, 3, 3}), b0 = torch::randn({32});
  auto w1 = torch::randn({64, 32, 3, 3}), b1 = torch::randn({64});
  auto y0 = conv2d_fast(image, w0, b0, one, one), y1 = conv2d_fast(in1, w1, b1, one, one);
  auto p0 = max_pool2d_fast(y0, 2), p1 = max_pool2d_fast(y1, 2);
  auto head = torch::randn({10, 3136});
  auto features = p1.flatten(1);
  auto nhwc_in1 = in1.contiguous(at::MemoryFormat::ChannelsLast);
  auto nhwc_w1d = w1d.contiguous(at::MemoryFormat::ChannelsLast);

  std::vector<Op> ops = {
      {"refine", "conv0 rows D 1->8 @28x28 (prepared, BN folded)", [&] { conv0d(image); }},
      {"refine", "max pool 2 (8x28x28)", [&] { max_pool2d_fast(y0d, 2); }},
      {"refine", "relu_ (8x14x14)", [&] { p0d.relu_(); }},
      {"refine", "cat into the cache (24+8 x14x14)", [&] { torch::cat({cached0, p0d}, 1); }},
      {"refine", "conv1 rows D 32->16 @14x14 (prepared, BN folded)", [&] { conv1d(in1); }},
      {"refine", "max pool 2 (16x14x14)", [&] { max_pool2d_fast(y1d, 2); }},
      {"refine", "relu_ (16x7x7)", [&] { p1d.relu_(); }},
      {"refine", "cat into the cache (48+16 x7x7)", [&] { torch::cat({cached1, p1d}, 1); }},
      {"refine", "head columns of D (784->10, linear)", [&] { torch::linear(features_d, head_cols, head_bias); }},
      {"refine", "add to the cached logits", [&] { (void)(logits + head_bias); }},
      {"fresh", "conv0 1->32 @28x28", [&] { conv2d_fast(image, w0, b0, one, one); }},
      {"fresh", "BN (32x28x28)", [&] { bn(y0); }},
      {"fresh", "max pool 2 (32x28x28)", [&] { max_pool2d_fast(y0, 2); }},
      {"fresh", "relu_ (32x14x14)", [&] { p0.relu_(); }},
      {"fresh", "conv1 32->64 @14x14", [&] { conv2d_fast(in1, w1, b1, one, one); }},
      {"fresh", "BN (64x14x14)", [&] { bn(y1); }},
      {"fresh", "max pool 2 (64x14x14)", [&] { max_pool2d_fast(y1, 2); }},
      {"fresh", "relu_ (64x7x7)", [&] { p1.relu_(); }},
      {"fresh", "head (3136->10, linear)", [&] { torch::linear(features, head, head_bias); }},
      {"LibTorch", "conv0 rows D via mkldnn_convolution (prepared)", [&] { conv2d_fast(image, w0d_libtorch, b0d, one, one); }},
      {"LibTorch", "conv1 rows D via mkldnn_convolution (prepared)", [&] { conv2d_fast(in1, w1d_libtorch, b1d, one, one); }},
      {"LibTorch", "conv0 1->32 via mkldnn_convolution", [&] { at::mkldnn_convolution(image, w0, b0, one, one, one, 1); }},
      {"LibTorch", "conv1 32->64 via mkldnn_convolution", [&] { at::mkldnn_convolution(in1, w1, b1, one, one, one, 1); }},
      {"not adopted", "conv1 rows D, dense weight (reordered per call)", [&] { conv2d_fast(in1, w1d, b1d, one, one); }},
      {"not adopted", "conv1 rows D, channels-last input and weight", [&] { conv2d_fast(nhwc_in1, nhwc_w1d, b1d, one, one); }},
      {"not adopted", "BN of D's rows (16x14x14), now folded", [&] { bn(y1d); }},
      {"not adopted", "head columns as multiply + sum", [&] { (features_d.unsqueeze(1) * head_cols).sum(-1).add_(head_bias); }},
      {"not adopted", "fresh head as multiply + sum", [&] { (features.unsqueeze(1) * head).sum(-1).add_(head_bias); }},
  };
  constexpr int kRounds = 31, kCalls = 40;
  for (int round = 0; round < kRounds; ++round)
    for (auto& op : ops) {
      for (int k = 0; k < 5; ++k) op.run();
      const double start = thread_us();
      for (int k = 0; k < kCalls; ++k) op.run();
      op.us.push_back((thread_us() - start) / kCalls);
    }
  std::printf("| side | call | median us |\n| --- | --- | ---: |\n");
  double refine = 0, fresh = 0;
  for (auto& op : ops) {
    std::sort(op.us.begin(), op.us.end());
    const double median = op.us[op.us.size() / 2];
    if (op.side == "refine") refine += median;
    if (op.side == "fresh") fresh += median;
    std::printf("| %s | %s | %.1f |\n", op.side.c_str(), op.name.c_str(), median);
  }
  std::printf("\nsum of the calls: refine %.1f us, fresh %.1f us\n", refine, fresh);
  return 0;
}
