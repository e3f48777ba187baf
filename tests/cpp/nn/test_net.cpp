// NetSpec parsing and DynamicNet: every shipped spec, every preset and head kind,
// materialize() equivalence, counts, errors.
#include <dydnn/nn/dynamic_net.h>

#include <catch2/catch.hpp>

using namespace dydnn::nn;
using Catch::Matchers::Contains;

namespace {

std::string spec_text(const std::string& connectivity, const std::string& head, const std::string& extra = "") {
  return "dydnn-spec 1\nname t\ninput 2 12 12\nclasses 5\ngroups 4\nconnectivity " + connectivity + "\nhead " + head +
         "\nconv 8 kernel=3 padding=1 bn relu maxpool=2\nconv 12 kernel=3 stride=1 padding=1 groups=2,2,4,4 bn relu "
         "avgpool=2\n" + extra;
}

void check_materialize(DynamicNet& net, int64_t batch) {
  net->eval();
  torch::NoGradGuard no_grad;
  const auto& s = net->spec();
  auto x = torch::randn({batch, s.in_channels, s.height, s.width});
  for (const auto& config : net->configs()) {
    INFO(s.name << " config " << config.to_string() << " batch " << batch);
    auto y = net->forward(x, config);
    CHECK(y.sizes() == torch::IntArrayRef({batch, s.classes}));
    CHECK(torch::allclose(net->materialize(config)->forward(x), y, 1e-4, 1e-5));
  }
}

}  // namespace

TEST_CASE("Every shipped spec builds a net equal to its materialized configs", "[nn][net]") {
  torch::manual_seed(4);
  for (const char* name : {"fashion_mnist_default", "mnist_small", "cifar10_alexnet"}) {
    auto spec = NetSpec::load(std::string(DYDNN_SPEC_DIR) + "/" + name + ".spec");
    CHECK(spec.name == name);
    CHECK(NetSpec::parse(spec.to_text()).to_text() == spec.to_text());
    DynamicNet net(spec);
    CHECK(net->configs().size() == 4);
    for (int64_t batch : {1, 8}) check_materialize(net, batch);
    int64_t total = 0;
    for (const auto& p : net->parameters()) total += p.numel();
    // Incremental + additive: the full config uses every parameter, smaller ones fewer.
    CHECK(net->parameter_count(net->configs().back()) == total);
    for (size_t k = 1; k < net->configs().size(); ++k) {
      CHECK(net->parameter_count(net->configs()[k]) > net->parameter_count(net->configs()[k - 1]));
      CHECK(net->macs(net->configs()[k]) > net->macs(net->configs()[k - 1]));
    }
  }
}

TEST_CASE("Nets of every preset and head kind equal their materialized configs", "[nn][net]") {
  torch::manual_seed(5);
  for (const std::string conn :
       {"prefix", "incremental", "independent", "fluid islands=0,1/2,3 cross=on", "fluid islands=0,1/2,3 cross=off"}) {
    for (const std::string head : {"additive", "per_config", "prefix"}) {
      INFO(conn << " head " << head);
      DynamicNet net(NetSpec::parse(spec_text(conn, head, "linear 16 relu\n")));
      // Give the BN layers non-trivial statistics first.
      net->train();
      for (const auto& c : net->configs()) net->forward(torch::randn({8, 2, 12, 12}), c);
      check_materialize(net, 1);
      check_materialize(net, 3);
    }
  }
}

TEST_CASE("set_config switches in place and execution strategies agree", "[nn][net]") {
  DynamicNet net(NetSpec::load(std::string(DYDNN_SPEC_DIR) + "/fashion_mnist_default.spec"));
  net->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({2, 1, 28, 28});
  net->set_config(Config::prefix(2));
  CHECK(net->config() == Config::prefix(2));
  auto packed = net->forward(x);
  net->set_execution(Execution::PerGroup);
  CHECK(torch::allclose(net->forward(x), packed, 1e-4, 1e-5));
  CHECK(torch::equal(net->forward(x), net->forward(x, Config::prefix(2))));
  CHECK(net->config() == Config::prefix(2));
  CHECK_THROWS_WITH(net->set_config(Config::of({1})), Contains("DynamicNet: config {1} is not valid"));
  CHECK_THROWS_WITH(net->forward(torch::randn({2, 3, 28, 28})),
                    Contains("expected input [N, 1, 28, 28] (got [2, 3, 28, 28])"));
}

TEST_CASE("MACs and parameter counts follow the block structure", "[nn][net]") {
  DynamicNet net(NetSpec::parse(
      "dydnn-spec 1\ninput 1 4 4\nclasses 2\ngroups 2\nconnectivity incremental\nhead additive\nconv 4 kernel=3 padding=1\n"));
  // conv: group 0 (2 ch) reads the image; group 1 too: 4*1*9 weights x 16 pixels; head: 4*16 features x 2.
  CHECK(net->macs(Config::prefix(2)) == 4 * 9 * 16 + 64 * 2);
  CHECK(net->macs(Config::prefix(1)) == 2 * 9 * 16 + 32 * 2);
  CHECK(net->parameter_count(Config::prefix(1)) == 2 * 9 + 2 + 32 * 2 + 2);
}

TEST_CASE("Malformed specs are rejected naming the line and the token", "[nn][spec][errors]") {
  CHECK_THROWS_WITH(NetSpec::parse("", "a.spec"), Contains("a.spec") && Contains("empty spec"));
  CHECK_THROWS_WITH(NetSpec::parse("name x\n", "a.spec"), Contains("a.spec:1: the first line must be 'dydnn-spec 1'"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 7\n"), Contains("format version 7 is newer"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\nlayers 3\n", "b.spec"), Contains("b.spec:2: unknown key 'layers'"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\ninput 1 x 28\n"), Contains("input height 'x' is not an integer"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\nconv 8 kernal=3\n"), Contains("unknown option 'kernal=3' for conv"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\ngroups 4\nconv 3\n"), Contains("4 groups for 3 channels"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\nconnectivity dense\nconv 8\n"), Contains("unknown connectivity 'dense'"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\nconv 8\nconfigs A | AC\n"),
                    Contains("config {0,2} is not valid for connectivity 'incremental'"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\nconnectivity fluid islands=0/1\nconv 8\n"),
                    Contains("the fluid islands hold 2 groups but 'groups' is 4"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\ninput 1 4 4\nconv 8 kernel=7\n"), Contains("leaves no output pixel"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\nconv 8 groups=1,1,2\n"), Contains("add up to 4 channels, but the layer has 8"));
  CHECK_THROWS_WITH(NetSpec::parse("dydnn-spec 1\nname x\n"), Contains("the spec has no layer"));
  CHECK_THROWS_WITH(NetSpec::load("/nonexistent/x.spec"), Contains("cannot read spec file '/nonexistent/x.spec'"));
  auto declared = NetSpec::parse("dydnn-spec 1\nconv 8\nconfigs A | ABCD\n");
  CHECK(DynamicNet(declared)->configs().size() == 2);
}
