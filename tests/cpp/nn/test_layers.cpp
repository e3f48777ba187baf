// The dynamic layers against naive per-block references, for every preset, G in 1..4,
// uneven groups, batch 1 and 8, forward and gradients; exactness; bad input.
//
// Tolerances: float32 rtol 1e-4 / atol 1e-5 (oneDNN vs the reference's summation order);
// float64 rtol 1e-10 / atol 1e-12.
#include "testutil.h"

#include <dydnn/nn/dynamic_batch_norm2d.h>
#include <dydnn/nn/dynamic_conv2d.h>
#include <dydnn/nn/dynamic_linear.h>
#include <dydnn/nn/kernels.h>

#include <catch2/catch.hpp>

using namespace dydnn::nn;
using namespace testutil;
using Catch::Matchers::Contains;

namespace {

constexpr double kRtol32 = 1e-4, kAtol32 = 1e-5, kRtol64 = 1e-10, kAtol64 = 1e-12;

// Forward (no grad) and gradients (autograd) of `run` against `reference`, at `config`.
template <typename Run, typename Reference>
void check_forward_and_grad(torch::nn::Module& module, Run run, Reference reference, const torch::Tensor& input,
                            torch::Dtype dtype) {
  const double rtol = dtype == torch::kDouble ? kRtol64 : kRtol32;
  const double atol = dtype == torch::kDouble ? kAtol64 : kAtol32;
  {
    torch::NoGradGuard no_grad;
    auto y = run(input);
    auto ref = reference(input, tensors_of(module));
    REQUIRE(close(y, ref, rtol, atol));
  }
  module.zero_grad();
  auto x = input.detach().clone().set_requires_grad(true);
  auto y = run(x);
  auto upstream = torch::randn_like(y);
  (y * upstream).sum().backward();
  auto copies = leaf_copies(tensors_of(module));
  auto x_ref = input.detach().clone().set_requires_grad(true);
  (reference(x_ref, copies) * upstream).sum().backward();
  REQUIRE(close(x.grad(), x_ref.grad(), rtol, atol));
  for (const auto& p : module.named_parameters()) {
    const auto& g_ref = copies.at(p.key()).grad();
    INFO("parameter " << p.key());
    if (!g_ref.defined()) {
      // Outside the config: never reached by autograd.
      CHECK((!p.value().grad().defined() || p.value().grad().abs().max().item<double>() == 0));
    } else {
      REQUIRE(p.value().grad().defined());
      CHECK(close(p.value().grad(), g_ref, rtol, atol));
    }
  }
}

}  // namespace

TEST_CASE("DynamicConv2d equals a per-block conv2d reference and materialize()", "[nn][conv]") {
  torch::manual_seed(0);
  for (const auto& mc : all_mask_cases()) {
    const int64_t g = mc.connectivity.num_groups();
    for (bool dense_input : {false, true}) {
      const GroupSpec in = dense_input ? GroupSpec::counts({3}) : uneven(g, 2);
      const GroupSpec out = uneven(g, 3);
      for (auto dtype : {torch::kFloat, torch::kDouble}) {
        DynamicConv2d conv(DynamicConv2dOptions(in, out, 3).padding(1).stride(dense_input ? 2 : 1)
                               .connectivity(mc.connectivity).dense_input(dense_input));
        conv->to(dtype);
        for (auto exec : {Execution::Packed, Execution::PerGroup}) {
          conv->options.execution(exec);
          for (const auto& config : mc.connectivity.valid_configs()) {
            for (int64_t batch : {1, 8}) {
              INFO(mc.name << " config " << config.to_string() << " batch " << batch << " dense_input " << dense_input
                           << " dtype " << dtype << " exec " << to_string(exec));
              auto x = torch::randn({batch, in.channels_in(dense_input ? Config(1) : config), 9, 9},
                                    torch::TensorOptions().dtype(dtype));
              auto run = [&](const torch::Tensor& t) { return conv->forward(t, config); };
              auto reference = [&](const torch::Tensor& t, const std::map<std::string, torch::Tensor>& p) {
                return reference_grouped(t, p, in, out, mc.connectivity, config, dense_input, false, false,
                                         [&](const torch::Tensor& xi, const torch::Tensor& w) {
                                           return torch::conv2d(xi, w, {}, dense_input ? 2 : 1, 1);
                                         });
              };
              check_forward_and_grad(*conv, run, reference, x, dtype);
              torch::NoGradGuard no_grad;
              auto materialized = conv->materialize(config);
              CHECK(close(materialized->forward(x), conv->forward(x, config), dtype == torch::kDouble ? kRtol64 : kRtol32,
                          dtype == torch::kDouble ? kAtol64 : kAtol32));
            }
          }
        }
      }
    }
  }
}

TEST_CASE("DynamicLinear (hidden, additive head, prefix head) equals a per-block reference", "[nn][linear]") {
  torch::manual_seed(1);
  for (const auto& mc : all_mask_cases()) {
    const int64_t g = mc.connectivity.num_groups();
    struct Variant {
      const char* name;
      bool dense_output, bias_in;
    };
    for (auto v : {Variant{"hidden", false, false}, Variant{"additive head", true, true}, Variant{"prefix head", true, false}}) {
      const GroupSpec in = uneven(g, 3);
      const GroupSpec out = v.dense_output ? GroupSpec::counts({5}) : uneven(g, 2);
      DynamicLinear linear(DynamicLinearOptions(in, out)
                               .connectivity(mc.connectivity)
                               .dense_output(v.dense_output)
                               .bias_per_input_group(v.bias_in));
      for (const auto& config : mc.connectivity.valid_configs()) {
        for (int64_t batch : {1, 8}) {
          INFO(mc.name << " " << v.name << " config " << config.to_string() << " batch " << batch);
          auto x = torch::randn({batch, in.channels_in(config)});
          auto run = [&](const torch::Tensor& t) { return linear->forward(t, config); };
          auto reference = [&](const torch::Tensor& t, const std::map<std::string, torch::Tensor>& p) {
            auto y = reference_grouped(t, p, in, out, mc.connectivity, config, false, v.dense_output, v.bias_in,
                                       [](const torch::Tensor& xi, const torch::Tensor& w) { return torch::linear(xi, w); });
            return y;
          };
          check_forward_and_grad(*linear, run, reference, x, torch::kFloat);
          torch::NoGradGuard no_grad;
          CHECK(close(linear->materialize(config)->forward(x), linear->forward(x, config), kRtol32, kAtol32));
        }
      }
    }
  }
}

TEST_CASE("DynamicBatchNorm2d normalises per group with per-context statistics", "[nn][bn]") {
  torch::manual_seed(2);
  for (const auto& mc : all_mask_cases()) {
    const int64_t g = mc.connectivity.num_groups();
    const GroupSpec groups = uneven(g, 2);
    DynamicBatchNorm2d bn(DynamicBatchNorm2dOptions(groups).connectivity(mc.connectivity));
    for (int64_t j = 0; j < g; ++j) CHECK((bn->num_slots(j) == 1) == mc.connectivity.group_is_exact(j));
    for (const auto& config : mc.connectivity.valid_configs()) {
      INFO(mc.name << " config " << config.to_string());
      auto slot_name = [&](const std::string& what, int64_t j) {
        return mc.connectivity.group_is_exact(j)
                   ? what + "_" + std::to_string(j)
                   : what + "_" + std::to_string(j) + "_at_" + mc.connectivity.context_of(j, config).name();
      };
      auto reference = [&](const torch::Tensor& x, const std::map<std::string, torch::Tensor>& p, bool training) {
        std::vector<torch::Tensor> parts;
        for (int64_t j : config.groups()) {
          parts.push_back(torch::batch_norm(compact_group(x, groups, config, j), p.at(slot_name("weight", j)),
                                            p.at(slot_name("bias", j)), p.at(slot_name("running_mean", j)),
                                            p.at(slot_name("running_var", j)), training, 0.1, 1e-5, false));
        }
        return torch::cat(parts, 1);
      };
      auto x = torch::randn({8, groups.channels_in(config), 5, 5}) * 3 + 1;
      // Training: batch statistics, running statistics updated like the reference's.
      bn->train();
      auto before = leaf_copies(tensors_of(*bn));
      auto y = bn->forward(x, config);
      auto expected = reference(x, before, true);
      CHECK(close(y, expected, kRtol32, kAtol32));
      for (int64_t j : config.groups())
        CHECK(close(tensors_of(*bn).at(slot_name("running_mean", j)), before.at(slot_name("running_mean", j)),
                    kRtol32, kAtol32));
      // Eval: running statistics; the module must equal the reference and materialize().
      bn->eval();
      torch::NoGradGuard no_grad;
      CHECK(close(bn->forward(x, config), reference(x, tensors_of(*bn), false), kRtol32, kAtol32));
      CHECK(close(bn->materialize(config)->forward(x), bn->forward(x, config), kRtol32, kAtol32));
    }
  }
}

TEST_CASE("A frozen BN group uses and keeps its running statistics in training mode", "[nn][bn]") {
  DynamicBatchNorm2d bn(DynamicBatchNorm2dOptions(GroupSpec::equal(8, 2)).connectivity(Connectivity::incremental(2)));
  bn->set_frozen(0, true);
  bn->train();
  auto mean0 = bn->named_buffers()["running_mean_0"].clone();
  auto mean1 = bn->named_buffers()["running_mean_1"].clone();
  auto x = torch::randn({16, 8, 4, 4}) + 5;
  auto y = bn->forward(x, Config::prefix(2));
  CHECK(torch::equal(bn->named_buffers()["running_mean_0"], mean0));
  CHECK_FALSE(torch::equal(bn->named_buffers()["running_mean_1"], mean1));
  // Group 0 used its running statistics (mean 0, var 1): the output is x itself.
  CHECK(close(y.narrow(1, 0, 4), x.narrow(1, 0, 4) / std::sqrt(1 + 1e-5), kRtol32, kAtol32));
  CHECK_THROWS_AS(bn->set_frozen(2, true), dydnn::IndexError);
}

TEST_CASE("A config's outputs are bitwise unchanged when other groups' weights change", "[nn][exactness]") {
  torch::manual_seed(3);
  for (const auto& mc : all_mask_cases()) {
    if (mc.connectivity.kind() == ConnectivityKind::Prefix) continue;  // prefix is not exact by design
    const int64_t g = mc.connectivity.num_groups();
    const GroupSpec in = uneven(g, 2), out = uneven(g, 3);
    DynamicConv2d conv(DynamicConv2dOptions(in, out, 3).padding(1).connectivity(mc.connectivity));
    DynamicBatchNorm2d bn(DynamicBatchNorm2dOptions(out).connectivity(mc.connectivity));
    DynamicLinear head(DynamicLinearOptions(out.scaled(16), GroupSpec::counts({4}))
                           .connectivity(mc.connectivity)
                           .dense_output(true)
                           .bias_per_input_group(true));
    conv->eval();
    bn->eval();
    head->eval();
    for (const auto& config : mc.connectivity.valid_configs()) {
      INFO(mc.name << " config " << config.to_string());
      torch::NoGradGuard no_grad;
      auto x = torch::randn({2, in.channels_in(config), 4, 4});
      auto forward = [&] { return head->forward(bn->forward(conv->forward(x, config), config).flatten(1), config); };
      auto before = forward();
      // Change every tensor that belongs to a group outside the config. Names end in the
      // group (`bias_<g>`, `running_mean_<g>`, head `bias_in<g>`) or hold it as `weight_<j>_<i>`;
      // the head's output index j is always 0 (dense), so only its input group counts.
      auto outside = [&](const std::string& name, bool head_module) {
        std::vector<int64_t> numbers;
        for (size_t k = 0; k < name.size();) {
          if (std::isdigit(static_cast<unsigned char>(name[k]))) {
            size_t used = 0;
            numbers.push_back(std::stoll(name.substr(k), &used));
            k += used;
          } else {
            ++k;
          }
        }
        if (numbers.empty()) return false;
        if (head_module || numbers.size() == 1) return !config.contains(numbers.back());
        return !config.contains(numbers[0]) || !config.contains(numbers[1]);
      };
      for (auto* m : std::vector<torch::nn::Module*>{conv.get(), bn.get(), head.get()}) {
        const bool head_module = m == head.get();
        for (auto& p : m->named_parameters())
          if (outside(p.key(), head_module)) p.value().add_(1.5);
        for (auto& b : m->named_buffers())
          if (outside(b.key(), head_module)) b.value().mul_(3.0);
      }
      CHECK(torch::equal(forward(), before));
    }
  }
}

TEST_CASE("Layers follow their parameters to another dtype and after replaced data", "[nn][conv]") {
  DynamicConv2d conv(DynamicConv2dOptions(GroupSpec::equal(4, 2), GroupSpec::equal(6, 2), 3).connectivity(
      Connectivity::incremental(2)));
  conv->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  auto x = torch::randn({1, 4, 5, 5}, torch::kDouble);
  auto y = conv->forward(x);
  CHECK(y.scalar_type() == torch::kDouble);
  // Replacing a block's data (what `module.to()` and `param.data = ...` do) is detected.
  auto w = conv->named_parameters()["weight_1_0"];
  w.set_data(torch::zeros_like(w));
  auto expected = conv->materialize(Config::prefix(2))->forward(x);
  CHECK(torch::allclose(conv->forward(x), expected));
  CHECK(conv->materialize(Config::prefix(2))->weight.narrow(0, 3, 3).narrow(1, 0, 2).abs().sum().item<double>() == 0);
}

TEST_CASE("Dynamic layers reject bad input with messages that name the value", "[nn][errors]") {
  DynamicConv2d conv(DynamicConv2dOptions(GroupSpec::equal(8, 4), GroupSpec::equal(16, 4), 3).padding(1));
  CHECK_THROWS_WITH(conv->forward(torch::randn({1, 5, 8, 8}), Config::prefix(2)),
                    Contains("input has 5 channels, but config {0,1} needs 4"));
  CHECK_THROWS_WITH(conv->forward(torch::randn({5, 8, 8})), Contains("expected a 4D input") && Contains("got a 3D input"));
  CHECK_THROWS_WITH(conv->set_config(Config::of({0, 2})),
                    Contains("config {0,2} is not valid for connectivity 'incremental'") && Contains("valid: {0}, {0,1}"));
  CHECK_THROWS_AS(conv->set_config(Config::of({7})), dydnn::IndexError);
  CHECK_THROWS_WITH(DynamicConv2d(DynamicConv2dOptions(GroupSpec::equal(8, 4), GroupSpec::equal(16, 2), 3)
                                      .connectivity(Connectivity::incremental(2))),
                    Contains("DynamicConv2d: in_groups [2,2,2,2] has 4 groups but the connectivity 'incremental' has 2"));
  CHECK_THROWS_WITH(DynamicConv2d(DynamicConv2dOptions(GroupSpec::equal(8, 4), GroupSpec::equal(16, 4), 0)),
                    Contains("kernel size 0"));
  DynamicLinear linear(DynamicLinearOptions(GroupSpec::equal(8, 4), GroupSpec::equal(8, 4)));
  CHECK_THROWS_WITH(linear->forward(torch::randn({2, 3})), Contains("input has 3 channels, but config {0,1,2,3} needs 8"));
  CHECK_THROWS_WITH(DynamicLinear(DynamicLinearOptions(GroupSpec::equal(8, 4), GroupSpec::equal(8, 4)).bias_per_input_group(true)),
                    Contains("bias_per_input_group needs dense_output"));
  DynamicBatchNorm2d bn(DynamicBatchNorm2dOptions(GroupSpec::equal(8, 4)));
  CHECK_THROWS_WITH(bn->forward(torch::randn({2, 3, 4, 4})), Contains("input has 3 channels, but config {0,1,2,3} needs 8"));
  CHECK_THROWS_WITH(DynamicBatchNorm2d(DynamicBatchNorm2dOptions(GroupSpec::equal(8, 4)).momentum(2)),
                    Contains("momentum 2"));
}

TEST_CASE("The fast kernels equal LibTorch's default ones", "[nn][kernels]") {
  torch::manual_seed(6);
  for (int64_t k : {1, 2, 3}) {
    for (auto shape : {std::vector<int64_t>{1, 3, 7, 9}, std::vector<int64_t>{4, 5, 12, 12}}) {
      INFO("window " << k << " shape " << shape);
      auto x = torch::randn(shape);
      x.index_put_({0, 0, 0, 0}, std::numeric_limits<float>::quiet_NaN());
      auto expected = torch::max_pool2d(x, k, k);
      auto got = max_pool2d_fast(x, k);
      CHECK(got.sizes() == expected.sizes());
      CHECK(torch::equal(got.nan_to_num(-1), expected.nan_to_num(-1)));
    }
  }
  CHECK_THROWS_WITH(max_pool2d_fast(torch::randn({1, 1, 2, 2}), 3), Contains("window 3 is larger than the 2x2 input"));
  auto x = torch::randn({1, 8, 14, 14});
  auto w = torch::randn({16, 8, 3, 3});
  auto b = torch::randn({16});
  CHECK(torch::allclose(conv2d_fast(x, w, b, {1, 1}, {1, 1}), conv2d_default(x, w, b, {1, 1}, {1, 1}), 1e-4, 1e-4));
  // A strided (non-contiguous) weight view, as a config's slice of the dense storage.
  auto view = torch::randn({32, 16, 3, 3}).narrow(0, 0, 16).narrow(1, 0, 8);
  CHECK(torch::allclose(conv2d_fast(x, view, b, {1, 1}, {1, 1}), conv2d_default(x, view.contiguous(), b, {1, 1}, {1, 1}),
                        1e-4, 1e-4));
  // A weight reordered once for oneDNN, at batch 1 and 5, with stride and padding.
  for (int64_t stride : {1, 2}) {
    auto prepared = prepare_conv2d_weight(w, {stride, stride}, {1, 1});
    REQUIRE(prepared.defined() == uses_onednn(w));
    if (!prepared.defined()) continue;
    for (int64_t n : {1, 5}) {
      auto xn = torch::randn({n, 8, 14, 14});
      CHECK(torch::allclose(conv2d_fast(xn, prepared, b, {stride, stride}, {1, 1}),
                            conv2d_default(xn, w, b, {stride, stride}, {1, 1}), 1e-4, 1e-4));
    }
  }
  CHECK_FALSE(prepare_conv2d_weight(w.to(torch::kDouble), {1, 1}, {1, 1}).defined());
}

TEST_CASE("forward_rows without autograd equals it with autograd; a folded BN equals the BN", "[nn][rows]") {
  torch::manual_seed(8);
  for (const auto& mc : all_mask_cases()) {
    const int64_t g = mc.connectivity.num_groups();
    DynamicConv2d conv(DynamicConv2dOptions(uneven(g, 3), uneven(g, 2), 3).padding(1).connectivity(mc.connectivity));
    DynamicLinear linear(DynamicLinearOptions(uneven(g, 3), uneven(g, 2)).connectivity(mc.connectivity));
    DynamicBatchNorm2d bn(DynamicBatchNorm2dOptions(uneven(g, 2)).connectivity(mc.connectivity));
    bn->train();
    for (const auto& config : mc.connectivity.valid_configs())
      bn->forward(torch::randn({6, uneven(g, 2).channels_in(config), 4, 4}) * 2 + 1, config);
    bn->eval();
    {
      torch::NoGradGuard no_grad;
      for (auto& p : bn->named_parameters()) p.value().uniform_(0.5, 1.5);
    }
    for (const auto& config : mc.connectivity.valid_configs()) {
      // Every non-empty subset of the config's groups, adjacent or not, and "all" (empty).
      std::vector<Config> subsets{Config()};
      for (uint64_t m = 1; m <= config.mask(); ++m)
        if ((m & ~config.mask()) == 0) subsets.push_back(Config(m));
      for (int64_t n : {1, 3}) {
        auto x = torch::randn({n, uneven(g, 3).channels_in(config), 6, 6});
        auto xl = torch::randn({n, uneven(g, 3).channels_in(config)});
        for (const auto& rows : subsets) {
          INFO(mc.name << " config " << config.to_string() << " rows " << rows.to_string() << " batch " << n);
          auto with_grad = conv->forward_rows(x, config, rows).detach();
          auto linear_with_grad = linear->forward_rows(xl, config, rows).detach();
          torch::NoGradGuard no_grad;
          CHECK(close(conv->forward_rows(x, config, rows), with_grad, kRtol32, kAtol32));
          CHECK(close(linear->forward_rows(xl, config, rows), linear_with_grad, kRtol32, kAtol32));
          if (rows.empty()) continue;
          const auto affine = bn->affine_for_inference(config, rows);
          CHECK(close(conv->forward_rows_inference(x, config, rows, &affine), bn->forward_groups(with_grad, config, rows),
                      kRtol32, kAtol32));
        }
      }
    }
  }
}

TEST_CASE("Cached row weights follow in-place changes of the layer and of a folded BN", "[nn][rows]") {
  torch::manual_seed(9);
  const auto conn = Connectivity::incremental(2);
  DynamicConv2d conv(DynamicConv2dOptions(GroupSpec::equal(4, 2), GroupSpec::equal(6, 2), 3).padding(1).connectivity(conn));
  DynamicBatchNorm2d bn(DynamicBatchNorm2dOptions(GroupSpec::equal(6, 2)).connectivity(conn));
  bn->eval();
  torch::NoGradGuard no_grad;
  const Config all = conn.full_config(), second(2);
  auto x = torch::randn({1, 4, 5, 5});
  auto folded = [&] {
    const auto affine = bn->affine_for_inference(all, second);
    return conv->forward_rows_inference(x, all, second, &affine);
  };
  folded();  // fills the caches
  for (auto& p : conv->named_parameters()) p.value().mul_(1.5);
  for (auto& b : bn->named_buffers()) b.value().add_(0.25);
  for (auto& p : bn->named_parameters()) p.value().mul_(0.5);
  CHECK(close(folded(), bn->forward_groups(conv->forward_rows(x, all, second), all, second), kRtol32, kAtol32));
}
