// Runs a sub-network exported with `dydnn export --format torchscript` in plain LibTorch:
// this program links torch only, not dydnn, as a board without dydnn would.
//
//   run_torchscript MODEL.pt INPUT.f32 N C H W [OUTPUT.f32]
//
// INPUT.f32 holds N x C x H x W raw float32 values (already normalised); the logits are
// written to OUTPUT.f32 (raw float32, N x classes) and the predicted classes printed.
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8) {
    std::cerr << "usage: run_torchscript MODEL.pt INPUT.f32 N C H W [OUTPUT.f32]\n";
    return 2;
  }
  try {
    at::set_num_threads(1);
    std::vector<int64_t> shape;
    for (int k = 3; k < 7; ++k) {
      const std::string text = argv[k];
      size_t used = 0;
      int64_t v = 0;
      try {
        v = std::stoll(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != text.size() || v < 1 || v > (int64_t{1} << 20)) {
        std::cerr << "run_torchscript: dimension " << k - 2 << " '" << text << "' (valid: 1..1048576)\n";
        return 2;
      }
      shape.push_back(v);
    }
    const int64_t numel = shape[0] * shape[1] * shape[2] * shape[3];
    std::ifstream in(argv[2], std::ios::binary);
    std::vector<float> values(static_cast<size_t>(numel));
    in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(numel * sizeof(float)));
    if (in.gcount() != static_cast<std::streamsize>(numel * sizeof(float))) {
      std::cerr << "run_torchscript: " << argv[2] << " holds fewer than " << numel << " float32 values\n";
      return 1;
    }
    auto module = torch::jit::load(argv[1]);
    module.eval();
    c10::InferenceMode guard;
    const auto input = torch::from_blob(values.data(), shape, torch::kFloat).clone();
    const auto logits = module.forward({input}).toTensor().contiguous();
    std::cout << "logits " << logits.sizes() << ", classes " << logits.argmax(1).view(-1) << "\n";
    if (argc == 8) {
      std::ofstream out(argv[7], std::ios::binary);
      out.write(static_cast<const char*>(logits.data_ptr()), static_cast<std::streamsize>(logits.nbytes()));
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "run_torchscript: " << e.what() << "\n";
    return 1;
  }
}
