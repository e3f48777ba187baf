// AnytimeRunner: "answer now, improve if time allows" over refinement steps.
#include <dydnn/errors.h>
#include <dydnn/runtime/anytime.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

namespace {

using namespace dydnn;
using Catch::Matchers::Contains;
using nn::Config;

nn::NetSpec spec_with(const std::string& connectivity, int64_t groups) {
  return nn::NetSpec::parse(fmt::format(
      "dydnn-spec 1\nname anytime\ninput 1 8 8\nclasses 4\ngroups {}\nconnectivity {}\n"
      "conv 8 kernel=3 padding=1 bn relu maxpool=2\nexit after=1\nconv 8 kernel=3 padding=1 bn relu maxpool=2\n",
      groups, connectivity));
}

nn::DynamicNet eval_net(const std::string& connectivity, int64_t groups) {
  torch::manual_seed(21);
  nn::DynamicNet net(spec_with(connectivity, groups));
  net->eval();
  return net;
}

std::vector<std::string> names(const std::vector<runtime::AnytimeStep>& steps) {
  std::vector<std::string> out;
  for (const auto& s : steps) out.push_back(fmt::format("{}@{}", s.config.name(), s.exit));
  return out;
}

}  // namespace

TEST_CASE("default anytime steps: the smallest config through every exit, then wider", "[runtime][anytime]") {
  auto net = eval_net("incremental", 4);
  CHECK(names(runtime::AnytimeRunner::default_steps(*net)) ==
        std::vector<std::string>{"A@0", "A@1", "AB@1", "ABC@1", "ABCD@1"});
  // Prefix refines nothing: one step, the full net.
  auto dense = eval_net("prefix", 2);
  CHECK(names(runtime::AnytimeRunner::default_steps(*dense)) == std::vector<std::string>{"AB@1"});
}

TEST_CASE("an anytime run with time to spare reaches the last step, equal to a fresh run", "[runtime][anytime]") {
  auto net = eval_net("incremental", 4);
  runtime::AnytimeRunner runner(net);
  const auto x = torch::randn({3, 1, 8, 8});
  std::vector<size_t> seen;
  const auto answer = runner.run(x, 1e9, [&](const runtime::AnytimeAnswer& a) {
    seen.push_back(a.step);
    return true;
  });
  CHECK(answer.complete);
  CHECK(answer.step == 4);
  CHECK(answer.config == Config::parse("ABCD", 4));
  CHECK(answer.exit == 1);
  CHECK(seen == std::vector<size_t>{0, 1, 2, 3, 4});
  torch::NoGradGuard no_grad;
  CHECK(torch::allclose(answer.logits, net->forward_to_exit(x, answer.config, 1), 1e-4, 1e-5));
  for (const double e : runner.expected_us()) CHECK(e > 0);
}

TEST_CASE("an anytime run stops when the next step would not fit the budget", "[runtime][anytime]") {
  auto net = eval_net("incremental", 4);
  runtime::AnytimeRunner runner(net);
  const auto x = torch::randn({1, 1, 8, 8});
  runner.calibrate(x, 3);
  // A budget already spent by the first answer: the first answer, nothing more.
  auto answer = runner.run(x, 1e-3);
  CHECK(answer.step == 0);
  CHECK_FALSE(answer.complete);
  torch::NoGradGuard no_grad;
  CHECK(torch::allclose(answer.logits, net->forward_to_exit(x, Config::parse("A", 4), 0), 1e-4, 1e-5));
  // The callback can stop it too.
  answer = runner.run(x, 1e9, [](const runtime::AnytimeAnswer& a) { return a.step < 2; });
  CHECK(answer.step == 2);
  CHECK(answer.config == Config::parse("AB", 4));
}

TEST_CASE("anytime steps are checked", "[runtime][anytime]") {
  auto net = eval_net("incremental", 2);
  using Steps = std::vector<runtime::AnytimeStep>;
  const Config a = Config::parse("A", 2), ab = Config::parse("AB", 2);
  CHECK_THROWS_AS(runtime::AnytimeRunner(net, Steps{{ab, 1}, {a, 1}}), ValueError);
  CHECK_THROWS_WITH(runtime::AnytimeRunner(net, Steps{{ab, 1}, {a, 1}}),
                    Contains("step 1 (A@1) cannot be refined to from step 0 (AB@1)"));
  CHECK_THROWS_WITH(runtime::AnytimeRunner(net, Steps{{a, 1}, {ab, 0}}),
                    Contains("step 1 (AB@0) goes back to a shallower exit than step 0 (A@1)"));
  CHECK_THROWS_WITH(runtime::AnytimeRunner(net, Steps{{a, 0}, {a, 0}}), Contains("repeats step 0"));
  CHECK_THROWS_WITH(runtime::AnytimeRunner(net, Steps{{a, 2}}), Contains("exit 2 (valid: 0..1, or -1"));
  CHECK_THROWS_WITH(runtime::AnytimeRunner(net, Steps{{Config::parse("B", 2), 1}}),
                    Contains("config B, not a valid config"));
  auto dense = eval_net("prefix", 2);
  CHECK_THROWS_WITH(runtime::AnytimeRunner(dense, Steps{{a, 1}, {ab, 1}}), Contains("under connectivity 'prefix'"));
  runtime::AnytimeRunner runner(net, Steps{{a, 0}, {ab, -1}});
  CHECK(runner.steps()[1].exit == 1);
  const auto x = torch::randn({1, 1, 8, 8});
  CHECK_THROWS_WITH(runner.run(x, 0.0), Contains("budget 0 us (valid: a positive number"));
  CHECK_THROWS_WITH(runner.run(x, std::nan("")), Contains("valid: a positive number"));
  CHECK_THROWS_WITH(runner.calibrate(x, 0), Contains("repetitions 0 (valid: >= 1)"));
  CHECK_THROWS_WITH(runner.set_window(0), Contains("window 0 (valid: >= 1)"));
  for (const double q : {0.0, 1.5, -0.1, std::nan("")})
    CHECK_THROWS_WITH(runner.set_quantile(q), Contains("(valid: 0 < quantile <= 1)"));
}

TEST_CASE("an anytime step is expected to take the chosen quantile of its recent times", "[runtime][anytime]") {
  auto net = eval_net("incremental", 4);
  runtime::AnytimeRunner runner(net);
  CHECK(runner.quantile() == 0.5);
  runner.calibrate(torch::randn({1, 1, 8, 8}), 9);
  // Changing the quantile or the window re-derives the expectations from the same times.
  runner.set_quantile(1.0);
  const auto slowest = runner.expected_us();
  runner.set_quantile(0.5);
  const auto median = runner.expected_us();
  runner.set_quantile(1e-9);
  const auto fastest = runner.expected_us();
  for (size_t k = 0; k < slowest.size(); ++k) {
    CHECK(fastest[k] > 0);
    CHECK(fastest[k] <= median[k]);
    CHECK(median[k] <= slowest[k]);
  }
  runner.set_window(1);  // only the last time is left: every quantile is that time
  const auto last = runner.expected_us();
  runner.set_quantile(1.0);
  CHECK(runner.expected_us() == last);
}
