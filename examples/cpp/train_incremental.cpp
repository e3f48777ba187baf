// Trains a dynamic net incrementally on Fashion-MNIST from C++ (the same trainer the
// Python package drives), evaluates every config, writes the results JSON and the model
// file (model.dydnn) that examples/cpp/deploy runs.
//
//   build/examples/train_incremental [--spec path.spec] [--method incremental] [--epochs 2]
//                                    [--limit N] [--threads N] [--out DIR]
#include <dydnn/dydnn.h>

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>

namespace {

std::string option(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int k = 1; k + 1 < argc; ++k)
    if (argv[k] == name) return argv[k + 1];
  return fallback;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string spec_path =
      option(argc, argv, "--spec", std::string(DYDNN_SPEC_DIR) + "/fashion_mnist_default.spec");
  const int64_t limit = std::stoll(option(argc, argv, "--limit", "-1"));
  const int64_t threads = std::stoll(option(argc, argv, "--threads", "0"));
  const std::filesystem::path out = option(argc, argv, "--out", "train_incremental");
  if (threads > 0) torch::set_num_threads(static_cast<int>(threads));

  torch::manual_seed(0);
  dydnn::nn::DynamicNet net(dydnn::nn::NetSpec::load(spec_path));
  dydnn::train::TrainOptions options;
  options.method = dydnn::train::method_from_string(option(argc, argv, "--method", "incremental"));
  options.epochs = {std::stoll(option(argc, argv, "--epochs", "2"))};
  options.checkpoint_dir = out.string();
  std::filesystem::create_directories(out);

  const auto train = dydnn::data::fashion_mnist("train", limit);
  const auto test = dydnn::data::fashion_mnist("test", limit < 0 ? -1 : std::max<int64_t>(limit / 2, 100));
  dydnn::train::Trainer trainer(net, options);
  if (trainer.resume()) std::cout << "resumed from " << trainer.checkpoint_path() << "\n";
  trainer.fit(train);

  const auto table = dydnn::train::evaluate_configs(*net, test, trainer.normalization());
  std::cout << fmt::format("{:<6} {:>7} {:>8} {:>10} {:>9}\n", "config", "top-1", "conf.", "MFLOPs", "params");
  for (const auto& e : table)
    std::cout << fmt::format("{:<6} {:>7.4f} {:>8.4f} {:>10.2f} {:>9}\n", e.config.name(), e.metrics.top1(),
                             e.normalised_confidence, 2.0 * static_cast<double>(e.macs) / 1e6, e.parameters);
  std::ofstream(out / "results.json") << trainer.results_json(table, "fashion_mnist");

  // The model file a deployment loads (examples/cpp/deploy), with what it needs to know.
  dydnn::io::Artifact artifact;
  artifact.net = net;
  artifact.normalization = trainer.normalization();
  artifact.metadata.method = dydnn::train::to_string(options.method);
  artifact.metadata.dataset = "fashion_mnist";
  for (const auto& e : table) artifact.metadata.accuracy[e.config] = e.metrics.top1();
  dydnn::io::save(artifact, (out / "model.dydnn").string());
  std::cout << "wrote " << (out / "results.json").string() << ", " << (out / "model.dydnn").string() << " and "
            << trainer.checkpoint_path() << "\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "train_incremental: " << e.what() << "\n";
  return 2;
}
