// libFuzzer harness for the model-file loader (docs/artifact.md, "Fuzzing").
//
// Any input must either load or throw dydnn::ValueError; anything else (a crash, a
// sanitizer report, another exception, an allocation beyond libFuzzer's limit) is a
// finding. A file that loads must also save, load again and run.
#include <dydnn/io/artifact.h>

#include <torch/torch.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dydnn::io::Artifact artifact;
  try {
    artifact = dydnn::io::from_bytes(data, size, "fuzz-input");
  } catch (const dydnn::ValueError&) {
    return 0;  // refused with a message: the expected outcome for almost every input
  }
  // Accepted: it must round-trip and compute.
  const std::string again = dydnn::io::to_bytes(artifact);
  auto reloaded = dydnn::io::from_bytes(again.data(), again.size(), "fuzz-resaved");
  const auto& spec = reloaded.net->spec();
  if (spec.in_channels * spec.height * spec.width <= 4096) {
    torch::NoGradGuard no_grad;
    const auto logits = reloaded.net->forward(torch::zeros({1, spec.in_channels, spec.height, spec.width}));
    if (logits.size(1) != spec.classes) {
      std::fprintf(stderr, "logits have %lld columns, spec says %lld classes\n",
                   static_cast<long long>(logits.size(1)), static_cast<long long>(spec.classes));
      std::abort();
    }
  }
  return 0;
}
