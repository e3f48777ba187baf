// Benchmark of the default dynamic net (issue 2, section 5): dydnn against the
// materialized static model at every config, batch 1 and 32, 1 and 2 threads; the
// latency range against the FLOPs range; switch time against loading a saved model;
// resident memory; and the per-layer kernel measurements behind `Execution::Auto`.
// Writes <out>/dynamic_net.json, <out>/dynamic_net.md and <out>/kernels.md.
#include <dydnn/dydnn.h>

#include <torch/script.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <thread>

#include <filesystem>
#include <fstream>
#include <iostream>

using namespace dydnn;
using nn::Config;

namespace {

struct Options {
  std::string spec = std::string(DYDNN_SPEC_DIR) + "/fashion_mnist_default.spec";
  std::string out = "build/bench";
  std::string docs;  // also write the kernel table here (docs/kernels.md)
  bool smoke = false;
};

struct Settings {
  int64_t warmup_small, reps_small, warmup_large, reps_large, rounds;
};

Options parse_args(int argc, char** argv) {
  Options o;
  for (int k = 1; k < argc; ++k) {
    std::string a = argv[k];
    auto value = [&]() -> std::string {
      DYDNN_CHECK_VALUE(k + 1 < argc, "bench", "{} needs a value", a);
      return argv[++k];
    };
    if (a == "--spec") o.spec = value();
    else if (a == "--out") o.out = value();
    else if (a == "--docs") o.docs = value();
    else if (a == "--smoke") o.smoke = true;
    else dydnn::detail::throw_value_error("bench", "unknown argument '{}' (valid: --spec PATH, --out DIR, --docs PATH, --smoke)", a);
  }
  return o;
}

// The fastest kernels LibTorch has for each static layer (design §7: the physical
// limit): oneDNN for convolutions (and for linear layers above a size), strided maxima
// for max pooling, the module's own forward for everything else.
torch::Tensor forward_fastest(torch::nn::Sequential& seq, torch::Tensor x) {
  for (auto& module : *seq) {
    if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(module.ptr())) {
      x = nn::conv2d_fast(x, conv->weight, conv->bias, *conv->options.stride(),
                          c10::get<torch::ExpandingArray<2>>(conv->options.padding()));
    } else if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(module.ptr())) {
      x = nn::linear_fast(x, linear->weight, linear->bias);
    } else if (auto pool = std::dynamic_pointer_cast<torch::nn::MaxPool2dImpl>(module.ptr())) {
      x = nn::max_pool2d_fast(x, (*pool->options.kernel_size())[0]);
    } else {
      x = module.forward(x);
    }
  }
  return x;
}

std::string progress_line(size_t done, size_t total, const std::string& what) {
  return fmt::format("\r[bench] {:3d}% {:<60}", total ? 100 * done / total : 100, what);
}

// Each candidate timed in `rounds` interleaved rounds; per candidate the best round
// median. Interleaving gives every candidate the same machine conditions, and the
// best round filters out rounds disturbed by other processes.
std::vector<double> compare(const std::vector<std::function<void()>>& candidates, int64_t warmup, int64_t reps,
                            int64_t rounds) {
  std::vector<double> best(candidates.size(), std::numeric_limits<double>::infinity());
  const int64_t per_round = std::max<int64_t>(1, reps / rounds);
  for (int64_t r = 0; r < rounds; ++r)
    for (size_t k = 0; k < candidates.size(); ++k)
      best[k] = std::min(best[k], runtime::measure_latency(candidates[k], r == 0 ? warmup : 2, per_round).median_us);
  return best;
}

int64_t tensor_bytes(const torch::nn::Module& m) {
  int64_t total = 0;
  for (const auto& p : m.parameters()) total += p.numel() * p.element_size();
  for (const auto& b : m.buffers()) total += b.numel() * b.element_size();
  return total;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options opt = parse_args(argc, argv);
  const Settings s = opt.smoke ? Settings{1, 3, 1, 2, 1} : Settings{50, 1000, 5, 100, 10};
  torch::manual_seed(0);
  // Without this, glibc returns large freed activations to the OS and repeated calls
  // page-fault them again: erratic 2-4x swings at batch 32 for static and dydnn alike.
  const bool retained = runtime::retain_freed_memory();

  nn::DynamicNet net(nn::NetSpec::load(opt.spec));
  net->eval();
  const auto& spec = net->spec();
  const auto configs = net->configs();
  const std::vector<int64_t> batches = opt.smoke ? std::vector<int64_t>{1} : std::vector<int64_t>{1, 32};
  const std::vector<int> threads = opt.smoke ? std::vector<int>{1} : std::vector<int>{1, 2};
  auto input = [&](int64_t batch) { return torch::randn({batch, spec.in_channels, spec.height, spec.width}); };

  std::vector<torch::nn::Sequential> statics;
  for (const auto& c : configs) statics.push_back(net->materialize(c));
  c10::InferenceMode inference;  // models are built first, as a deployment would load them

  // 1. Latency at every config against the static model.
  struct Row {
    std::string config;
    int64_t batch, threads, macs, params;
    double packed, per_group, automatic, static_default, static_fastest;
  };
  std::vector<Row> rows;
  const size_t total = batches.size() * threads.size() * configs.size();
  for (int t : threads) {
    torch::set_num_threads(t);
    for (int64_t batch : batches) {
      const bool small = batch == 1;
      const int64_t warmup = small ? s.warmup_small : s.warmup_large;
      const int64_t reps = small ? s.reps_small : s.reps_large;
      auto x = input(batch);
      for (size_t k = 0; k < configs.size(); ++k) {
        const Config c = configs[k];
        std::cerr << progress_line(rows.size(), total, fmt::format("latency {} batch {} threads {}", c.name(), batch, t));
        auto with = [&](nn::Execution e) {
          return [&, e] {
            net->set_execution(e);
            net->forward(x, c);
          };
        };
        auto& seq = statics[k];
        auto m = compare({with(nn::Execution::Packed), with(nn::Execution::PerGroup), with(nn::Execution::Auto),
                          [&] { seq->forward(x); }, [&] { forward_fastest(seq, x); }},
                         warmup, reps, s.rounds);
        rows.push_back(Row{c.name(), batch, t, net->macs(c), net->parameter_count(c), m[0], m[1], m[2], m[3], m[4]});
      }
    }
  }
  std::cerr << progress_line(total, total, "latency done") << "\n";
  torch::set_num_threads(1);
  net->set_execution(nn::Execution::Auto);

  // 2. Switch time: set_config plus the first forward's extra cost over the steady state.
  struct Switch {
    std::string from, to;
    double set_config_us, first_forward_us, steady_us, load_us;
  };
  std::vector<Switch> switches;
  std::filesystem::create_directories(opt.out);
  auto x1 = input(1);
  for (size_t k = 0; k < configs.size(); ++k) {
    const Config to = configs[k], from = configs[(k + 1) % configs.size()];
    std::cerr << progress_line(k, configs.size(), "switch to " + to.name());
    const double steady = runtime::measure_latency([&] { net->forward(x1, to); }, s.warmup_small, s.reps_small).median_us;
    std::vector<double> set_samples, first_samples;
    for (int64_t r = 0; r < s.reps_small / 4 + 1; ++r) {
      net->set_config(from);
      net->forward(x1);
      auto t0 = std::chrono::steady_clock::now();
      net->set_config(to);
      auto t1 = std::chrono::steady_clock::now();
      net->forward(x1);
      auto t2 = std::chrono::steady_clock::now();
      set_samples.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      first_samples.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
    }
    // What a user does today instead: load a separately saved static model of this size
    // (torch::save writes a TorchScript archive; torch::jit::load reads it without dydnn).
    const std::string path = opt.out + "/static_" + to.name() + ".pt";
    torch::save(statics[k], path);
    const double load = runtime::measure_latency([&] { torch::jit::load(path); }, 1, opt.smoke ? 2 : 20).median_us;
    switches.push_back({from.name(), to.name(), runtime::summarize(set_samples).median_us,
                        runtime::summarize(first_samples).median_us, steady, load});
  }
  std::cerr << progress_line(1, 1, "switch done") << "\n";

  // 3. Memory: everything dydnn holds to run every config (caches included, after use)
  //    against the parameter bytes of the largest config's static model.
  const int64_t dydnn_bytes = net->resident_bytes();
  const int64_t largest_bytes = tensor_bytes(*statics.back());
  int64_t all_static_bytes = 0;
  for (auto& seq : statics) all_static_bytes += tensor_bytes(*seq);

  // 4. Kernels per layer kind: packed vs per-group, torch's default conv2d vs oneDNN.
  struct KernelRow {
    std::string layer, kind, config;
    int64_t batch;
    double packed, per_group, conv_default, conv_mkldnn, conv_onednn;
  };
  std::vector<KernelRow> kernels;
  for (int64_t batch : batches) {
    const int64_t warmup = batch == 1 ? s.warmup_small : s.warmup_large;
    const int64_t reps = batch == 1 ? s.reps_small : s.reps_large;
    for (size_t k = 0; k < configs.size(); ++k) {
      const Config c = configs[k];
      std::cerr << progress_line(k, configs.size(), fmt::format("kernels {} batch {}", c.name(), batch));
      // Capture every conv/linear input by running the static model layer by layer.
      std::vector<torch::Tensor> inputs;
      torch::Tensor x = input(batch);
      for (auto& m : *statics[k]) {
        if (std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(m.ptr()) || std::dynamic_pointer_cast<torch::nn::LinearImpl>(m.ptr()))
          inputs.push_back(x);
        x = m.forward(x);
      }
      size_t next = 0;
      for (const auto& child : net->named_children()) {
        auto conv = std::dynamic_pointer_cast<nn::DynamicConv2dImpl>(child.value());
        auto lin = std::dynamic_pointer_cast<nn::DynamicLinearImpl>(child.value());
        if (!conv && !lin) continue;
        const auto& in = inputs.at(next++);
        auto with = [&](nn::Execution e) -> std::function<void()> {
          return [&, e] {
            if (conv) {
              conv->options.execution(e);
              conv->forward(in, c);
            } else {
              lin->options.execution(e);
              lin->forward(in, c);
            }
          };
        };
        std::vector<std::function<void()>> candidates{with(nn::Execution::Packed), with(nn::Execution::PerGroup)};
        torch::Tensor w, b;
        if (conv) {
          auto sl = conv->static_layer(c);
          w = sl.tensors.at("weight");
          if (sl.tensors.count("bias")) b = sl.tensors.at("bias");
          const auto stride = *conv->options.stride();
          const auto padding = *conv->options.padding();
          candidates.push_back([&, stride, padding] { nn::conv2d_default(in, w, b, stride, padding); });
          candidates.push_back([&, stride, padding] {
            const int64_t dilation[2] = {1, 1};
            at::mkldnn_convolution(in, w, b, padding, stride, dilation, 1);
          });
          candidates.push_back([&, stride, padding] { nn::conv2d_fast(in, w, b, stride, padding); });
        }
        auto m = compare(candidates, warmup, reps, s.rounds);
        KernelRow r{child.key(), conv ? "conv2d" : "linear", c.name(), batch, m[0], m[1], conv ? m[2] : 0,
                    conv ? m[3] : 0, conv ? m[4] : 0};
        if (conv) conv->options.execution(nn::Execution::Auto);
        else lin->options.execution(nn::Execution::Auto);
        kernels.push_back(r);
      }
    }
  }
  std::cerr << progress_line(1, 1, "kernels done") << "\n";

  // Derived goals.
  auto find = [&](const std::string& config, int64_t batch, int64_t t) -> const Row& {
    for (const auto& r : rows)
      if (r.config == config && r.batch == batch && r.threads == t) return r;
    throw std::logic_error("missing row");
  };
  const int64_t range_batch = batches.back();
  const auto& smallest = find(configs.front().name(), range_batch, 1);
  const auto& largest = find(configs.back().name(), range_batch, 1);
  const double latency_range = largest.automatic / smallest.automatic;
  const double flops_range = static_cast<double>(largest.macs) / static_cast<double>(smallest.macs);
  // The same range for the static models (their fastest kernels): what the hardware allows.
  const double static_range = std::min(largest.static_default, largest.static_fastest) /
                              std::min(smallest.static_default, smallest.static_fastest);
  double worst_ratio = 0, worst_switch = 0;
  for (const auto& r : rows) worst_ratio = std::max(worst_ratio, r.automatic / std::min(r.static_default, r.static_fastest));
  for (const auto& sw : switches) worst_switch = std::max(worst_switch, sw.set_config_us + sw.first_forward_us - sw.steady_us);

  // Output: JSON, Markdown tables, stdout.
  std::string json = fmt::format(
      "{{\n  \"spec\": \"{}\",\n  \"smoke\": {},\n  \"torch_threads_default\": {},\n  \"latency\": [\n", spec.name,
      opt.smoke, torch::get_num_threads());
  std::string md = fmt::format("# dydnn vs static at every config ({})\n\nMedian latency in microseconds; `ratio` = dydnn (auto) / "
                               "the faster of the static model under torch's default dispatch and under oneDNN.\n\n"
                               "| config | batch | threads | MACs | params | dydnn packed | dydnn per-group | dydnn auto | "
                               "static default | static oneDNN | ratio |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
                               spec.name);
  for (size_t k = 0; k < rows.size(); ++k) {
    const auto& r = rows[k];
    const double ratio = r.automatic / std::min(r.static_default, r.static_fastest);
    json += fmt::format(
        "    {{\"config\": \"{}\", \"batch\": {}, \"threads\": {}, \"macs\": {}, \"params\": {}, \"dydnn_packed_us\": {:.2f}, "
        "\"dydnn_per_group_us\": {:.2f}, \"dydnn_auto_us\": {:.2f}, \"static_default_us\": {:.2f}, "
        "\"static_onednn_us\": {:.2f}, \"ratio\": {:.3f}}}{}\n",
        r.config, r.batch, r.threads, r.macs, r.params, r.packed, r.per_group, r.automatic, r.static_default,
        r.static_fastest, ratio, k + 1 < rows.size() ? "," : "");
    md += fmt::format("| {} | {} | {} | {} | {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.3f} |\n", r.config, r.batch,
                      r.threads, r.macs, r.params, r.packed, r.per_group, r.automatic, r.static_default, r.static_fastest,
                      ratio);
  }
  json += "  ],\n  \"switch\": [\n";
  md += "\n## Switch time (batch 1, 1 thread)\n\n`extra` = set_config + first forward - steady forward; `load` = torch::jit::load of the "
        "same config saved as a static model (a TorchScript archive written by torch::save).\n\n| from | to | set_config us | first forward us | steady us "
        "| extra us | load saved static model us |\n|---|---|---|---|---|---|---|\n";
  for (size_t k = 0; k < switches.size(); ++k) {
    const auto& w = switches[k];
    const double extra = w.set_config_us + w.first_forward_us - w.steady_us;
    json += fmt::format("    {{\"from\": \"{}\", \"to\": \"{}\", \"set_config_us\": {:.3f}, \"first_forward_us\": {:.2f}, "
                        "\"steady_us\": {:.2f}, \"switch_extra_us\": {:.2f}, \"load_static_us\": {:.1f}}}{}\n",
                        w.from, w.to, w.set_config_us, w.first_forward_us, w.steady_us, extra, w.load_us,
                        k + 1 < switches.size() ? "," : "");
    md += fmt::format("| {} | {} | {:.3f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} |\n", w.from, w.to, w.set_config_us,
                      w.first_forward_us, w.steady_us, extra, w.load_us);
  }
  const double memory_ratio = static_cast<double>(dydnn_bytes) / static_cast<double>(largest_bytes);
  const double separate_ratio = static_cast<double>(all_static_bytes) / static_cast<double>(largest_bytes);
  json += fmt::format(
      "  ],\n  \"memory\": {{\"dydnn_resident_bytes\": {}, \"largest_static_bytes\": {}, \"all_static_models_bytes\": {}, "
      "\"ratio\": {:.4f}, \"separate_models_ratio\": {:.4f}}},\n",
      dydnn_bytes, largest_bytes, all_static_bytes, memory_ratio, separate_ratio);
  json += fmt::format(
      "  \"goals\": {{\"worst_latency_ratio\": {:.3f}, \"latency_ratio_goal\": 1.05, \"latency_range\": {:.3f}, "
      "\"flops_range\": {:.3f}, \"range_fraction\": {:.3f}, \"range_fraction_goal\": 0.8, \"range_batch\": {}, "
      "\"static_latency_range\": {:.3f}, "
      "\"worst_switch_extra_us\": {:.2f}, \"switch_goal_us\": 100, \"memory_ratio\": {:.4f}, \"memory_goal\": 1.10}},\n",
      worst_ratio, latency_range, flops_range, latency_range / flops_range, range_batch, static_range, worst_switch,
      memory_ratio);
  md += fmt::format("\n## Memory\n\ndydnn holding all {} configs (caches included): {} bytes; largest static model: {} bytes "
                    "-> **{:.3f}x** (N separate static models: {} bytes, {:.3f}x).\n",
                    configs.size(), dydnn_bytes, largest_bytes, memory_ratio, all_static_bytes, separate_ratio);
  md += fmt::format("\n## Goals\n\n| goal | measured | target |\n|---|---|---|\n| worst dydnn / static latency | {:.3f} | <= 1.05 "
                    "|\n| latency range / FLOPs range (batch {}) | {:.3f} / {:.3f} = {:.3f} | >= 0.8 |\n"
                    "| the same for the static models (fastest kernels) | {:.3f} / {:.3f} = {:.3f} | (reference) |\n"
                    "| worst switch extra | {:.1f} "
                    "us | <= 100 us |\n| memory ratio | {:.3f} | <= 1.10 |\n",
                    worst_ratio, range_batch, latency_range, flops_range, latency_range / flops_range, static_range,
                    flops_range, static_range / flops_range, worst_switch, memory_ratio);

  std::string kmd = fmt::format(
      "# Kernel measurements per layer ({})\n\nGenerated by `make bench` (benchmarks/bench_dynamic_net.cpp) on this machine; "
      "median microseconds, 1 thread. `packed` = one call over the active channels (a strided view of the dense storage); "
      "`per-group` = one call per active output group over exactly its allowed inputs; `default` / `mkldnn` / `oneDNN` = the "
      "packed convolution through torch's `conv2d` dispatch / LibTorch's `mkldnn_convolution` / `conv2d_fast` "
      "(oneDNN primitives created once and executed directly{}).\n\n"
      "| layer | kind | config | batch | packed | per-group | conv2d default | conv2d mkldnn | conv2d oneDNN |\n"
      "|---|---|---|---|---|---|---|---|---|\n",
      spec.name, nn::direct_onednn_available() ? "" : "; not in this build, so LibTorch's path");
  json += "  \"kernels\": [\n";
  for (size_t k = 0; k < kernels.size(); ++k) {
    const auto& r = kernels[k];
    json += fmt::format("    {{\"layer\": \"{}\", \"kind\": \"{}\", \"config\": \"{}\", \"batch\": {}, \"packed_us\": {:.2f}, "
                        "\"per_group_us\": {:.2f}, \"conv_default_us\": {:.2f}, \"conv_mkldnn_us\": {:.2f}, "
                        "\"conv_onednn_us\": {:.2f}}}{}\n",
                        r.layer, r.kind, r.config, r.batch, r.packed, r.per_group, r.conv_default, r.conv_mkldnn, r.conv_onednn,
                        k + 1 < kernels.size() ? "," : "");
    const auto us = [&](double v) { return r.kind == "conv2d" ? fmt::format("{:.1f}", v) : std::string("-"); };
    kmd += fmt::format("| {} | {} | {} | {} | {:.1f} | {:.1f} | {} | {} | {} |\n", r.layer, r.kind, r.config, r.batch,
                       r.packed, r.per_group, us(r.conv_default), us(r.conv_mkldnn), us(r.conv_onednn));
  }
  json += "  ]\n}\n";
  std::ofstream(opt.out + "/dynamic_net.json") << json;
  std::ofstream(opt.out + "/dynamic_net.md") << md;
  std::ofstream(opt.out + "/kernels.md") << kmd;
  if (!opt.docs.empty()) {
    std::ofstream docs(opt.docs);
    docs << "# Measured kernels and the execution rule\n\n"
         << "This page is written by `make bench` (benchmarks/bench_dynamic_net.cpp); every number below was "
            "measured by that run, none is typed. Run with LibTorch "
         << TORCH_VERSION << (at::hasMKLDNN() ? " (oneDNN enabled)" : " (no oneDNN)") << " on "
         << std::thread::hardware_concurrency() << " hardware threads, "
         << (retained ? "with `runtime::retain_freed_memory()` (glibc keeps freed blocks)" : "with the default allocator")
         << ".\n\n"
         << "What the numbers decided (see `Execution` in include/dydnn/nn/execution.h):\n\n"
         << "- Inference convolutions run as oneDNN primitives created once per shape and executed directly "
            "(`conv2d_fast`, src/nn/onednn_conv.cpp; built when oneDNN's headers, Debian's `libdnnl-dev`, are "
            "found): LibTorch's `mkldnn_convolution` creates the primitive, reorders and allocates on every call "
            "(column `conv2d mkldnn`), and torch's default `conv2d` dispatch is several times slower again at batch 1 "
            "for these channel counts (column `conv2d default`). With autograd, convolutions go through "
            "`mkldnn_convolution`, which has a backward.\n"
         << "- `Packed` (one call over a strided view of the dense storage) is the default: at batch 1 each "
            "extra call adds its fixed cost (column `per-group`), so one call per group loses.\n"
         << "- `PerGroup` skips the zero blocks of `incremental`; for the grouped-input convolution at batch 32 "
            "with one thread it wins at the widest configs and is within a few percent at the others, so `Auto` "
            "uses it there (N x H x W >= kPerGroupMinWork = 4096).\n"
         << "- The stem (dense input) and linear layers always run packed.\n"
         << "- Large activations must stay in the process (`runtime::retain_freed_memory()`, used here for the "
            "static models too): with glibc's defaults the stem convolution at batch 32 page-faulted its output "
            "on every call, 2-4x slower, depending on the allocation history.\n"
         << "- Max pooling uses strided maxima (`max_pool2d_fast`): LibTorch 1.13's CPU `max_pool2d` was the "
            "largest cost of the whole net at batch 32.\n"
         << "- The row slices that `refine` and distributed serving compute (`forward_rows_inference`) are "
            "cached copies anyway, so they are kept as a `PreparedConv2d` (weights reordered once into the "
            "layout of each primitive) with the eval-mode BN that follows folded in: one convolution call per "
            "layer with no weight reorder. Fresh runs keep zero-copy views of the dense storage (the memory "
            "goal below); see docs/depth.md.\n\n"
         << md.substr(md.find('\n') + 1) << "\n" << kmd.substr(kmd.find('\n') + 1);
  }
  std::cout << md << "\n" << kmd << "\nwritten: " << opt.out << "/dynamic_net.json, dynamic_net.md, kernels.md\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "\nbench_dynamic_net: " << e.what() << "\n";
  return 1;
}
