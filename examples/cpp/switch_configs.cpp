// Builds a dynamic net from a spec, prints every config's size, switches configs in
// place and checks each against its materialized static model.
//
//   build/examples/switch_configs [path/to/net.spec]
#include <dydnn/dydnn.h>

#include <torch/torch.h>

#include <iostream>

int main(int argc, char** argv) try {
  const std::string spec_path = argc > 1 ? argv[1] : std::string(DYDNN_SPEC_DIR) + "/fashion_mnist_default.spec";
  dydnn::runtime::retain_freed_memory();
  dydnn::nn::DynamicNet net(dydnn::nn::NetSpec::load(spec_path));
  net->eval();
  const auto& spec = net->spec();
  std::cout << "spec '" << spec.name << "', connectivity '" << net->connectivity().name() << "':\n"
            << net->connectivity().mask_picture();

  c10::InferenceMode inference;
  auto image = torch::randn({1, spec.in_channels, spec.height, spec.width});
  for (const auto& config : net->configs()) {
    net->set_config(config);  // in place: no copy, no reload
    auto stats = dydnn::runtime::measure_latency([&] { net->forward(image); }, 10, 50);
    auto logits = net->forward(image);
    auto reference = net->materialize(config)->forward(image);
    std::cout << fmt::format("{:<6} params {:>7}  MACs {:>9}  latency {:>7.1f} us  max |dydnn - static| {:.2e}\n",
                             config.name(), net->parameter_count(config), net->macs(config), stats.median_us,
                             (logits - reference).abs().max().item<double>());
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "switch_configs: " << e.what() << "\n";
  return 1;
}
