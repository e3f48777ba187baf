// Early exits (spec lines, exit heads, adaptive forward with real early exit and batch
// splitting, parallel heads) and anytime refinement (equal to a fresh run).
#include <dydnn/nn/dynamic_net.h>

#include <ATen/record_function.h>
#include <catch2/catch.hpp>

#include <atomic>

using namespace dydnn::nn;
using Catch::Matchers::Contains;

namespace {

std::string exit_spec(const std::string& connectivity, const std::string& head = "additive") {
  return "dydnn-spec 1\nname t\ninput 2 12 12\nclasses 5\ngroups 4\nconnectivity " + connectivity + "\nhead " + head +
         "\nconv 8 kernel=3 padding=1 bn relu maxpool=2\nexit after=1 avgpool=2\n"
         "conv 12 kernel=3 padding=1 groups=2,2,4,4 bn relu avgpool=2\nexit after=2\nlinear 16 relu\n";
}

// A net in eval mode whose BN layers hold non-trivial statistics.
DynamicNet trained_net(const std::string& text) {
  DynamicNet net(NetSpec::parse(text));
  net->train();
  for (const auto& c : net->configs()) net->forward(torch::randn({8, 2, 12, 12}), c);
  net->eval();
  return net;
}

// Counts convolutions run on this thread while alive.
struct ConvCounter {
  static std::atomic<int>& count() {
    static std::atomic<int> n{0};
    return n;
  }
  ConvCounter() {
    count() = 0;
    handle = at::addThreadLocalCallback(at::RecordFunctionCallback(
        [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
          const std::string name = fn.name();
          if (name == "aten::mkldnn_convolution" || name == "aten::_convolution" || name == "dydnn::conv2d") ++count();
          return nullptr;
        }));
  }
  ~ConvCounter() { at::removeCallback(handle); }
  at::CallbackHandle handle;
};

}  // namespace

TEST_CASE("Exit lines parse, print back and are validated", "[nn][spec][exits]") {
  auto spec = NetSpec::parse(exit_spec("incremental"));
  REQUIRE(spec.exits.size() == 2);
  CHECK(spec.exits[0].after == 1);
  CHECK(spec.exits[0].avg_pool == 2);
  CHECK(spec.exits[1].after == 2);
  CHECK(NetSpec::parse(spec.to_text()).to_text() == spec.to_text());
  const auto shapes = spec.exit_shapes();
  CHECK(shapes[0] == std::array<int64_t, 3>{8, 3, 3});
  CHECK(shapes[1] == std::array<int64_t, 3>{12, 3, 3});
  const std::string head = "dydnn-spec 1\ninput 1 8 8\nconv 4 kernel=3 padding=1\nconv 4 kernel=3\nlinear 8\n";
  CHECK_THROWS_WITH(NetSpec::parse(head + "exit after=3\n"), Contains("exit 0: after=3 is out of range (valid: 1..2)"));
  CHECK_THROWS_WITH(NetSpec::parse(head + "exit after=2\nexit after=1\n"),
                    Contains("exit 1: after=1 must be larger than the previous exit's (2)"));
  CHECK_THROWS_WITH(NetSpec::parse(head + "exit after=1 avgpool=9\n"), Contains("avgpool=9 is larger than the 8x8"));
  CHECK_THROWS_WITH(NetSpec::parse(head + "exit after=1 pool=2\n"),
                    Contains(":6: unknown exit option 'pool=2' (valid: after=K, avgpool=P)"));
  CHECK_THROWS_WITH(NetSpec::parse(head + "exit\n"), Contains("usage: exit after=K"));
  CHECK_THROWS_WITH(NetSpec::parse(head + "exit after=0\n"), Contains("exit after 0 is out of range (valid: >= 1)"));
}

TEST_CASE("Exit heads: every exit's logits, the final head as the last exit", "[nn][exits]") {
  torch::manual_seed(11);
  for (const std::string head : {"additive", "per_config", "prefix"}) {
    INFO("head " << head);
    auto net = trained_net(exit_spec("incremental", head));
    CHECK(net->num_exits() == 3);
    CHECK(net->exit_depth(0) == 1);
    CHECK(net->exit_depth(-1) == 3);
    torch::NoGradGuard no_grad;
    auto x = torch::randn({3, 2, 12, 12});
    for (const auto& c : net->configs()) {
      auto all = net->forward_exits(x, c);
      REQUIRE(all.size() == 3);
      for (int64_t e = 0; e < 3; ++e) CHECK(torch::allclose(all[e], net->forward_to_exit(x, c, e)));
      CHECK(torch::equal(net->forward_to_exit(x, c, -1), net->forward(x, c)));
      CHECK(net->macs(c, 0) < net->macs(c, 1));
      CHECK(net->macs(c, 2) == net->macs(c));
    }
    CHECK_THROWS_WITH(net->forward_to_exit(x, net->config(), 3), Contains("exit 3 is out of range (valid: 0..2"));
  }
  auto net = trained_net(exit_spec("incremental"));
  bool found = false;
  for (const auto& p : net->named_parameters()) found |= p.key().rfind("exit0.", 0) == 0;
  CHECK(found);
}

TEST_CASE("Adaptive forward: answers from the right exit, in input order", "[nn][exits]") {
  torch::manual_seed(12);
  auto net = trained_net(exit_spec("incremental"));
  torch::NoGradGuard no_grad;
  auto x = torch::randn({16, 2, 12, 12}) * 3;
  const Config c = Config::prefix(3);
  auto all = net->forward_exits(x, c);
  auto s0 = exit_scores(all[0], ExitCriterion::Entropy), s1 = exit_scores(all[1], ExitCriterion::Entropy);
  // Thresholds at the medians: some samples leave at each exit.
  const double t0 = s0.median().item<double>(), t1 = s1.median().item<double>();
  for (bool parallel : {false, true}) {
    INFO("parallel " << parallel);
    ExitPolicy policy;
    policy.thresholds = {t0, t1};
    policy.parallel_heads = parallel;
    auto out = net->forward_adaptive(x, c, policy);
    for (int64_t i = 0; i < 16; ++i) {
      const int64_t e = s0[i].item<double>() < t0 ? 0 : (s1[i].item<double>() < t1 ? 1 : 2);
      INFO("sample " << i);
      CHECK(out.exits[i].item<int64_t>() == e);
      CHECK(torch::allclose(out.logits[i], all[e][i], 1e-4, 1e-5));
    }
    // Batch 1 agrees with the batch.
    for (int64_t i : {0, 5}) {
      auto one = net->forward_adaptive(x.narrow(0, i, 1), c, policy);
      CHECK(one.exits[0].item<int64_t>() == out.exits[i].item<int64_t>());
      CHECK(torch::allclose(one.logits[0], out.logits[i], 1e-4, 1e-5));
    }
  }
  ExitPolicy none;
  auto full = net->forward_adaptive(x, c, none);
  CHECK(torch::equal(full.logits, net->forward(x, c)));
  CHECK((full.exits == 2).all().item<bool>());
  ExitPolicy max_prob{ExitCriterion::MaxProb, {2.0, -1.0}, false};  // everyone leaves at exit 0
  auto early = net->forward_adaptive(x, c, max_prob);
  CHECK((early.exits == 0).all().item<bool>());
  CHECK(torch::allclose(early.logits, all[0]));
  CHECK_THROWS_WITH(net->forward_adaptive(x, c, ExitPolicy{ExitCriterion::Entropy, {0.5}, false}),
                    Contains("1 exit thresholds for 2 early exit(s) (valid: 2 or none"));
  CHECK_THROWS_WITH(net->forward_adaptive(x, c, ExitPolicy{ExitCriterion::Entropy, {NAN, 1.0}, false}),
                    Contains("exit threshold 0 is NaN"));
  CHECK_THROWS_WITH(parse_exit_criterion("margin"), Contains("unknown exit criterion 'margin' (valid: entropy, max_prob)"));
}

TEST_CASE("Early exit at batch 1 does not compute the later layers", "[nn][exits]") {
  auto net = trained_net(exit_spec("incremental"));
  torch::NoGradGuard no_grad;
  auto x = torch::randn({1, 2, 12, 12});
  for (bool parallel : {false, true}) {
    ExitPolicy policy{ExitCriterion::Entropy, {100.0, 100.0}, parallel};
    ConvCounter counter;
    auto out = net->forward_adaptive(x, net->config(), policy);
    CHECK(out.exits[0].item<int64_t>() == 0);
    // Sequential: only the first conv; parallel: the next one ran beside the head.
    CHECK(ConvCounter::count() == (parallel ? 2 : 1));
  }
  ConvCounter counter;
  net->forward_adaptive(x, net->config(), ExitPolicy{ExitCriterion::Entropy, {-1.0, -1.0}, false});
  CHECK(ConvCounter::count() == 2);
}

TEST_CASE("Refine equals a fresh run and computes only the new groups", "[nn][refine]") {
  torch::manual_seed(13);
  for (const std::string conn :
       {"incremental", "independent", "fluid islands=0,1/2,3 cross=on", "fluid islands=0,1/2,3 cross=off"}) {
    INFO(conn);
    auto net = trained_net(exit_spec(conn));
    torch::NoGradGuard no_grad;
    // Batch 1 too: refinement's kernels differ there (oneDNN reorders, folded BN).
    for (int64_t n : {3, 1}) {
      auto x = torch::randn({n, 2, 12, 12});
      int pairs = 0;
      for (const auto& from : net->configs())
        for (const auto& to : net->configs()) {
          if (!net->can_refine(from, to)) continue;
          INFO(from.name() << " -> " << to.name() << " batch " << n);
          ++pairs;
          auto [logits, cache] = net->forward_cached(x, from);
          CHECK(torch::equal(logits, net->forward(x, from)));
          CHECK(torch::allclose(net->refine(cache, to), net->forward(x, to), 1e-4, 1e-5));
          CHECK(cache.config == to);
          // Width and depth together: exit 0 at `from`, then the final head at `to`.
          auto [early, shallow] = net->forward_cached(x, from, 0);
          CHECK(torch::allclose(early, net->forward_to_exit(x, from, 0)));
          CHECK(torch::allclose(net->refine(shallow, to, -1), net->forward(x, to), 1e-4, 1e-5));
          CHECK(net->refine_macs(from, 0, to, -1) < net->macs(to));
        }
      CHECK(pairs >= 4);
      // A chain of refinements on one cache, each step equal to a fresh run.
      auto [first, chain] = net->forward_cached(x, net->configs().front());
      for (const auto& to : net->configs()) {
        if (!net->can_refine(chain.config, to) || to == chain.config) continue;
        INFO("chain " << chain.config.name() << " -> " << to.name() << " batch " << n);
        CHECK(torch::allclose(net->refine(chain, to), net->forward(x, to), 1e-4, 1e-5));
      }
      // resident_bytes counts the row caches, prepared oneDNN copies included.
      CHECK(net->resident_bytes() > 0);
    }
  }
  auto net = trained_net(exit_spec("incremental"));
  CHECK(net->refine_macs(Config::prefix(1), -1, Config::prefix(2), -1) < net->macs(Config::prefix(2)));
  auto [logits, cache] = net->forward_cached(torch::randn({1, 2, 12, 12}), Config::prefix(2));
  CHECK_THROWS_WITH(net->refine(cache, Config::prefix(1)),
                    Contains("cannot refine from config AB to A under connectivity 'incremental'") &&
                        Contains("valid targets: ABC, ABCD"));
  auto [l2, deep] = net->forward_cached(torch::randn({1, 2, 12, 12}), Config::prefix(2), 1);
  CHECK_THROWS_WITH(net->refine(deep, Config::prefix(3), 0), Contains("cannot refine from exit 1 to the shallower exit 0"));
  net->train();
  CHECK_THROWS_WITH(net->forward_cached(torch::randn({1, 2, 12, 12}), Config::prefix(1)), Contains("needs eval mode"));
  net->eval();
  auto prefix = trained_net(exit_spec("prefix"));
  CHECK_FALSE(prefix->can_refine(Config::prefix(1), Config::prefix(2)));
}
