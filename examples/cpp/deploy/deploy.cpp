// Runs a model file on a device from C++, without Python: loads the artifact, reads
// requests (IDX images or a text stream on stdin), answers each at a config given on the
// command line and prints the latency of each request and the config that answered it.
//
//   dydnn_deploy MODEL [--config AB] [--images IDX [--labels IDX]] [--limit N] [--threads N]
//                      [--warmup N] [--all-configs] [--logits FILE] [--info] [--quiet]
//   dydnn_deploy MODEL --stream [--config AB]      # one request per line on stdin
//
// A stream line is `ID [config=NAME] P1 P2 ... Pn`: an id, an optional config for this
// request, and the n = C x H x W raw pixel values (0..255, as in IDX files), normalised
// with the artifact's normalisation like the training data was. Each answer is one line
// `id=ID config=NAME class=K latency_us=T`, or `id=ID error=...` for a bad request (the
// stream goes on).
#include <dydnn/data/idx.h>
#include <dydnn/detail/parse.h>
#include <dydnn/io/artifact.h>
#include <dydnn/runtime/allocator.h>
#include <dydnn/runtime/latency.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

namespace {

struct Options {
  std::string model;
  std::string config;  // empty: the full config
  std::string images, labels, logits;
  int64_t limit = -1;
  int threads = 0;
  int warmup = 3;  // untimed runs per config before serving: the first call creates the kernels
  bool stream = false, all_configs = false, info = false, quiet = false;
};

const char* kUsage =
    "usage: dydnn_deploy MODEL [--config NAME] [--images IDX [--labels IDX]] [--limit N] [--threads N]\n"
    "                          [--warmup N] [--all-configs] [--logits FILE] [--info] [--quiet]\n"
    "       dydnn_deploy MODEL --stream [--config NAME]   (lines 'ID [config=NAME] P1 ... Pn' on stdin)\n";

int64_t integer(const std::string& option, const std::string& text, int64_t min_value) {
  return dydnn::detail::parse_integer(option, text, min_value);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int k = 1; k < argc; ++k) {
    const std::string a = argv[k];
    const auto value = [&]() -> std::string {
      if (k + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++k];
    };
    if (a == "--config") o.config = value();
    else if (a == "--images") o.images = value();
    else if (a == "--labels") o.labels = value();
    else if (a == "--logits") o.logits = value();
    else if (a == "--limit") o.limit = integer(a, value(), 1);
    else if (a == "--threads") o.threads = static_cast<int>(integer(a, value(), 0));
    else if (a == "--warmup") o.warmup = static_cast<int>(integer(a, value(), 0));
    else if (a == "--stream") o.stream = true;
    else if (a == "--all-configs") o.all_configs = true;
    else if (a == "--info") o.info = true;
    else if (a == "--quiet") o.quiet = true;
    else if (a == "-h" || a == "--help") throw std::invalid_argument("");
    else if (!a.empty() && a[0] != '-' && o.model.empty()) o.model = a;
    else throw std::invalid_argument("unknown argument '" + a + "'");
  }
  if (o.model.empty()) throw std::invalid_argument("no model file given");
  if (o.stream && !o.images.empty()) throw std::invalid_argument("--stream and --images exclude each other");
  return o;
}

// One request: normalise, run at `config`, time it. The returned logits are [1, classes].
struct Answer {
  torch::Tensor logits;
  double latency_us;
};

Answer answer(dydnn::io::Artifact& a, const torch::Tensor& raw_image, dydnn::nn::Config config) {
  const auto start = std::chrono::steady_clock::now();
  const auto x = a.normalization.apply(raw_image.unsqueeze(0));
  auto logits = a.net->forward(x, config);
  const auto end = std::chrono::steady_clock::now();
  return {logits, std::chrono::duration<double, std::micro>(end - start).count()};
}

void warm_up(dydnn::io::Artifact& a, dydnn::nn::Config config, int runs) {
  const auto& spec = a.net->spec();
  const auto image = torch::zeros({spec.in_channels, spec.height, spec.width});
  for (int k = 0; k < runs; ++k) answer(a, image, config);
}

int run_stream(dydnn::io::Artifact& a, dydnn::nn::Config fallback, int warmup) {
  for (const auto config : a.net->configs()) warm_up(a, config, warmup);
  const auto& spec = a.net->spec();
  const int64_t n = spec.in_channels * spec.height * spec.width;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::istringstream in(line);
    std::string id, token;
    in >> id;
    try {
      auto config = fallback;
      std::vector<float> pixels;
      pixels.reserve(static_cast<size_t>(n));
      while (in >> token) {
        if (token.rfind("config=", 0) == 0) {
          config = dydnn::nn::Config::parse(token.substr(7), spec.groups);
          continue;
        }
        size_t used = 0;
        const double v = std::stod(token, &used);
        if (used != token.size() || !(v >= 0 && v <= 255))
          throw std::invalid_argument("pixel '" + token + "' (valid: 0..255)");
        pixels.push_back(static_cast<float>(v));
      }
      if (static_cast<int64_t>(pixels.size()) != n)
        throw std::invalid_argument(fmt::format("{} pixel values (valid: exactly {} = {}x{}x{})", pixels.size(), n,
                                                spec.in_channels, spec.height, spec.width));
      const auto image = torch::tensor(pixels).div_(255.0f).view({spec.in_channels, spec.height, spec.width});
      const auto r = answer(a, image, config);
      std::cout << fmt::format("id={} config={} class={} latency_us={:.1f}\n", id, config.name(),
                               r.logits.argmax(1).item<int64_t>(), r.latency_us);
    } catch (const std::exception& e) {
      std::string message = e.what();
      for (auto& ch : message)
        if (ch == '\n') ch = ' ';
      std::cout << fmt::format("id={} error={}\n", id, message);
    }
    std::cout.flush();
  }
  return 0;
}

int run_images(dydnn::io::Artifact& a, const Options& o, dydnn::nn::Config chosen) {
  auto images = dydnn::data::read_idx(o.images);
  const auto& spec = a.net->spec();
  if (images.dim() == 3) images = images.unsqueeze(1);  // IDX images are [N, H, W]
  DYDNN_CHECK_VALUE(images.dim() == 4 && images.size(1) == spec.in_channels && images.size(2) == spec.height &&
                        images.size(3) == spec.width,
                    "deploy", "{} holds images of shape [{}] but the model takes [N, {}, {}, {}]", o.images,
                    fmt::join(images.sizes(), ", "), spec.in_channels, spec.height, spec.width);
  torch::Tensor labels;
  if (!o.labels.empty()) labels = dydnn::data::read_idx(o.labels).to(torch::kLong);
  const int64_t n = o.limit < 0 ? images.size(0) : std::min(o.limit, images.size(0));
  images = images.slice(0, 0, n).to(torch::kFloat).div_(255.0f);
  const std::vector<dydnn::nn::Config> configs =
      o.all_configs ? a.net->configs() : std::vector<dydnn::nn::Config>{chosen};
  std::ofstream logits_out;
  if (!o.logits.empty()) {
    logits_out.open(o.logits, std::ios::binary);
    DYDNN_CHECK_VALUE(logits_out.good(), "deploy", "cannot write {}", o.logits);
  }
  for (const auto config : configs) {
    warm_up(a, config, o.warmup);
    std::vector<double> latencies;
    int64_t correct = 0;
    for (int64_t i = 0; i < n; ++i) {
      const auto r = answer(a, images[i], config);
      latencies.push_back(r.latency_us);
      const int64_t predicted = r.logits.argmax(1).item<int64_t>();
      const bool labelled = labels.defined() && i < labels.size(0);
      if (labelled) correct += predicted == labels[i].item<int64_t>();
      if (logits_out.is_open()) {
        const auto row = r.logits.contiguous();
        logits_out.write(static_cast<const char*>(row.data_ptr()), static_cast<std::streamsize>(row.nbytes()));
      }
      if (!o.quiet)
        std::cout << fmt::format("request {}: config {}, class {}{}, latency {:.1f} us\n", i, config.name(), predicted,
                                 labelled ? fmt::format(" (label {})", labels[i].item<int64_t>()) : "",
                                 r.latency_us);
    }
    const auto stats = dydnn::runtime::summarize(latencies);
    std::cout << fmt::format("config {}: {} requests, latency median {:.1f} us, p95 {:.1f} us{}\n", config.name(), n,
                             stats.median_us, stats.p95_us,
                             labels.defined() ? fmt::format(", top-1 {:.2f}%", 100.0 * correct / std::max<int64_t>(n, 1))
                                              : "");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    if (*e.what()) std::cerr << "dydnn_deploy: " << e.what() << "\n";
    std::cerr << kUsage;
    return 2;
  }
  try {
    dydnn::runtime::retain_freed_memory();
    if (o.threads > 0) torch::set_num_threads(o.threads);
    auto artifact = dydnn::io::load(o.model);
    const auto config = o.config.empty() ? artifact.net->configs().back()
                                         : dydnn::nn::Config::parse(o.config, artifact.net->spec().groups);
    artifact.net->set_config(config);  // validates it against the model's configs
    if (o.info || (!o.stream && o.images.empty())) std::cout << dydnn::io::describe(artifact);
    c10::InferenceMode inference;
    if (o.stream) return run_stream(artifact, config, o.warmup);
    if (!o.images.empty()) return run_images(artifact, o, config);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "dydnn_deploy: " << e.what() << "\n";
    return 1;
  }
}
