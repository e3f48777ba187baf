// Consumes the installed dydnn package: builds a DynamicNet from an inline spec, runs a
// forward pass at every valid config and checks the logits' shape.
#include <dydnn/nn/dynamic_net.h>

#include <c10/core/InferenceMode.h>

#include <exception>
#include <iostream>

namespace {

// A small Fluid net (docs/spec.md): islands {A,B} and {C*,D*} with cross edges, one head
// per config, so the configs are sets rather than prefixes.
constexpr const char* kSpec = R"(dydnn-spec 1
name package_test
input 1 12 12
classes 5
groups 4
connectivity fluid islands=0,1/2,3 cross=on
head per_config
conv 8 kernel=3 padding=1 bn relu maxpool=2    # -> 8 x 6 x 6
linear 16 relu
)";

}  // namespace

int main() try {
  dydnn::nn::DynamicNet net(dydnn::nn::NetSpec::parse(kSpec, "package_test.spec"));
  net->eval();
  const auto& spec = net->spec();
  const int64_t batch = 3;
  c10::InferenceMode inference;
  auto input = torch::randn({batch, spec.in_channels, spec.height, spec.width});
  if (net->configs().empty()) {
    std::cerr << "dydnn_package_test: no valid config\n";
    return 1;
  }
  for (const auto& config : net->configs()) {
    net->set_config(config);
    auto logits = net->forward(input);
    const bool ok = logits.dim() == 2 && logits.size(0) == batch && logits.size(1) == spec.classes;
    std::cout << config.name() << ": logits " << logits.sizes() << (ok ? " ok" : " WRONG SHAPE") << "\n";
    if (!ok) return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "dydnn_package_test: " << e.what() << "\n";
  return 1;
}
