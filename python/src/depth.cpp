// Bindings of depth: early exits and refinement on DynamicNet, exit statistics and
// threshold calibration (docs/depth.md).
#include "bindings.h"

#include <dydnn/nn/dynamic_net.h>
#include <dydnn/runtime/anytime.h>
#include <dydnn/runtime/latency.h>
#include <dydnn/train/exits.h>

#include <torch/extension.h>

#include <chrono>

namespace py = pybind11;

namespace dydnn {
namespace python {
namespace {

using nn::Config;
using nn::DynamicNetImpl;

nn::ExitPolicy to_policy(std::vector<double> thresholds, const std::string& criterion, bool parallel) {
  return nn::ExitPolicy{nn::parse_exit_criterion(criterion), std::move(thresholds), parallel};
}

}  // namespace

void bind_depth(py::module_& m) {
  py::class_<nn::ActivationCache>(m, "ActivationCache",
                                  "The activations forward_cached computed, for DynamicNet.refine.")
      .def_readonly("config", &nn::ActivationCache::config)
      .def_readonly("exit", &nn::ActivationCache::exit)
      .def_readonly("batch", &nn::ActivationCache::batch)
      .def_readonly("logits", &nn::ActivationCache::logits)
      .def_property_readonly("depth", [](const nn::ActivationCache& c) { return c.blocks.size(); })
      .def("__repr__", [](const nn::ActivationCache& c) {
        return fmt::format("dydnn.ActivationCache(config={}, exit={}, batch={})", c.config.name(), c.exit, c.batch);
      });

  auto net = py::reinterpret_borrow<py::class_<DynamicNetImpl, std::shared_ptr<DynamicNetImpl>>>(m.attr("DynamicNet"));
  auto cfg = [](const DynamicNetImpl& n, const py::object& c) { return to_config(c, n.connectivity().num_groups()); };
  net.def_property_readonly("num_exits", &DynamicNetImpl::num_exits)
      .def("exit_depth", &DynamicNetImpl::exit_depth, py::arg("exit"))
      .def("forward_to_exit",
           [cfg](DynamicNetImpl& n, const torch::Tensor& x, const py::object& c, int64_t exit) {
             return n.forward_to_exit(x, cfg(n, c), exit);
           },
           py::arg("input"), py::arg("config"), py::arg("exit") = -1)
      .def("forward_exits",
           [cfg](DynamicNetImpl& n, const torch::Tensor& x, const py::object& c) { return n.forward_exits(x, cfg(n, c)); },
           py::arg("input"), py::arg("config"))
      .def("forward_adaptive",
           [cfg](DynamicNetImpl& n, const torch::Tensor& x, const py::object& c, std::vector<double> thresholds,
                 const std::string& criterion, bool parallel_heads) {
             auto out = n.forward_adaptive(x, cfg(n, c), to_policy(std::move(thresholds), criterion, parallel_heads));
             return std::make_pair(out.logits, out.exits);
           },
           py::arg("input"), py::arg("config"), py::arg("thresholds"), py::arg("criterion") = "entropy",
           py::arg("parallel_heads") = false)
      .def("forward_cached",
           [cfg](DynamicNetImpl& n, const torch::Tensor& x, const py::object& c, int64_t exit) {
             return n.forward_cached(x, cfg(n, c), exit);
           },
           py::arg("input"), py::arg("config"), py::arg("exit") = -1)
      .def("refine",
           [cfg](DynamicNetImpl& n, nn::ActivationCache& cache, const py::object& c, int64_t exit) {
             return n.refine(cache, cfg(n, c), exit);
           },
           py::arg("cache"), py::arg("config"), py::arg("exit") = -1)
      .def("can_refine",
           [cfg](const DynamicNetImpl& n, const py::object& from, const py::object& to) {
             return n.can_refine(cfg(n, from), cfg(n, to));
           },
           py::arg("from_config"), py::arg("to_config"))
      .def("macs_to_exit",
           [cfg](const DynamicNetImpl& n, const py::object& c, int64_t exit) { return n.macs(cfg(n, c), exit); },
           py::arg("config"), py::arg("exit"))
      .def("refine_macs",
           [cfg](const DynamicNetImpl& n, const py::object& from, int64_t from_exit, const py::object& to,
                 int64_t to_exit) { return n.refine_macs(cfg(n, from), from_exit, cfg(n, to), to_exit); },
           py::arg("from_config"), py::arg("from_exit"), py::arg("to_config"), py::arg("to_exit"))
      .def("measure_adaptive",
           [cfg](DynamicNetImpl& n, const torch::Tensor& images, const py::object& c, std::vector<double> thresholds,
                 const std::string& criterion, bool parallel_heads, int64_t warmup) {
             const Config config = cfg(n, c);
             const auto policy = to_policy(std::move(thresholds), criterion, parallel_heads);
             DYDNN_CHECK_VALUE(images.dim() == 4 && images.size(0) >= 1, "nn",
                               "measure_adaptive: expected images [N >= 1, C, H, W] (got {}D)", images.dim());
             DYDNN_CHECK_VALUE(warmup >= 0, "nn", "measure_adaptive: warmup {} (valid: >= 0)", warmup);
             const int64_t count = images.size(0);
             std::vector<double> micros;
             std::vector<int64_t> exits;
             torch::Tensor logits;
             {
               py::gil_scoped_release release;
               c10::InferenceMode guard;
               for (int64_t k = 0; k < warmup; ++k) n.forward_adaptive(images.narrow(0, k % count, 1), config, policy);
               std::vector<torch::Tensor> answers;
               for (int64_t k = 0; k < count; ++k) {
                 const auto x = images.narrow(0, k, 1);
                 const auto start = std::chrono::steady_clock::now();
                 auto out = n.forward_adaptive(x, config, policy);
                 const auto stop = std::chrono::steady_clock::now();
                 micros.push_back(std::chrono::duration<double, std::micro>(stop - start).count());
                 exits.push_back(out.exits[0].item<int64_t>());
                 answers.push_back(out.logits);
               }
               logits = torch::cat(answers, 0);
             }
             py::dict d;
             d["latencies_us"] = micros;
             d["exits"] = exits;
             d["logits"] = logits;
             return d;
           },
           py::arg("images"), py::arg("config"), py::arg("thresholds"), py::arg("criterion") = "entropy",
           py::arg("parallel_heads") = false, py::arg("warmup") = 20,
           "Runs every image alone (batch 1) through forward_adaptive in C++ under inference mode: "
           "'latencies_us' and 'exits' per image, 'logits' [N, classes].")
      .def("measure_refine",
           [cfg](DynamicNetImpl& n, const torch::Tensor& x, const py::object& from, int64_t from_exit,
                 const py::object& to, int64_t to_exit, int64_t warmup, int64_t repetitions) {
             const Config a = cfg(n, from), b = cfg(n, to);
             DYDNN_CHECK_VALUE(warmup >= 0 && repetitions >= 1, "nn",
                               "measure_refine: warmup {} (valid: >= 0), repetitions {} (valid: >= 1)", warmup,
                               repetitions);
             std::vector<double> micros;
             {
               py::gil_scoped_release release;
               c10::InferenceMode guard;
               for (int64_t k = 0; k < warmup + repetitions; ++k) {
                 auto cache = n.forward_cached(x, a, from_exit).second;  // untimed
                 const auto start = std::chrono::steady_clock::now();
                 n.refine(cache, b, to_exit);
                 const auto stop = std::chrono::steady_clock::now();
                 if (k >= warmup) micros.push_back(std::chrono::duration<double, std::micro>(stop - start).count());
               }
             }
             return to_dict(runtime::summarize(std::move(micros)));
           },
           py::arg("input"), py::arg("from_config"), py::arg("from_exit"), py::arg("to_config"), py::arg("to_exit"),
           py::arg("warmup") = 20, py::arg("repetitions") = 100,
           "Times refine from (from_config, from_exit) to (to_config, to_exit) in C++ under inference mode; "
           "each repetition starts from a fresh forward_cached (untimed).");

  m.def("exit_scores",
        [](const torch::Tensor& logits, const std::string& criterion) {
          return nn::exit_scores(logits, nn::parse_exit_criterion(criterion));
        },
        py::arg("logits"), py::arg("criterion") = "entropy",
        "Per-sample confidence score of logits [N, classes]: 'entropy' (nats) or 'max_prob' (1 - max softmax).");

  py::class_<train::ExitStatistics>(m, "ExitStatistics",
                                    "Every exit's score and correctness per example (exit_statistics).")
      .def_readonly("config", &train::ExitStatistics::config)
      .def_property_readonly("criterion", [](const train::ExitStatistics& s) { return nn::to_string(s.criterion); })
      .def_readonly("scores", &train::ExitStatistics::scores)
      .def_readonly("correct", &train::ExitStatistics::correct)
      .def_readonly("macs", &train::ExitStatistics::macs)
      .def_property_readonly("num_exits", &train::ExitStatistics::num_exits)
      .def_property_readonly("count", &train::ExitStatistics::count);
  py::class_<train::ExitOutcome>(m, "ExitOutcome", "What a threshold set does on an ExitStatistics.")
      .def_readonly("thresholds", &train::ExitOutcome::thresholds)
      .def_readonly("accuracy", &train::ExitOutcome::accuracy)
      .def_readonly("exit_rates", &train::ExitOutcome::exit_rates)
      .def_readonly("mean_macs", &train::ExitOutcome::mean_macs)
      .def("__repr__", [](const train::ExitOutcome& o) {
        return fmt::format("dydnn.ExitOutcome(thresholds=[{}], accuracy={:.4f}, exit_rates=[{:.3f}])",
                           fmt::join(o.thresholds, ", "), o.accuracy, fmt::join(o.exit_rates, ", "));
      });
  m.def(
      "exit_statistics",
      [](DynamicNetImpl& net, const torch::Tensor& images, const torch::Tensor& labels,
         const data::Normalization& norm, const py::object& config, const std::string& criterion, int64_t batch_size) {
        const auto c = to_config(config, net.connectivity().num_groups());
        const auto crit = nn::parse_exit_criterion(criterion);
        py::gil_scoped_release release;
        return train::exit_statistics(net, data::ImageDataset{images, labels}, norm, c, crit, batch_size);
      },
      py::arg("net"), py::arg("images"), py::arg("labels"), py::arg("normalization"), py::arg("config"),
      py::arg("criterion") = "entropy", py::arg("batch_size") = 500);
  m.def("evaluate_thresholds", &train::evaluate_thresholds, py::arg("stats"), py::arg("thresholds"));
  m.def(
      "calibrate_exits",
      [](const train::ExitStatistics& stats, const std::string& target, double value) {
        return train::calibrate_exits(stats, train::parse_calibration_target(target), value);
      },
      py::arg("stats"), py::arg("target"), py::arg("value"),
      "Thresholds for a target 'accuracy' (of each exit's answers) or 'exit_rate' (of the examples reaching it).");

  py::class_<runtime::AnytimeAnswer>(m, "AnytimeAnswer", "The best answer an AnytimeRunner run reached.")
      .def_readonly("logits", &runtime::AnytimeAnswer::logits)
      .def_readonly("step", &runtime::AnytimeAnswer::step)
      .def_readonly("config", &runtime::AnytimeAnswer::config)
      .def_readonly("exit", &runtime::AnytimeAnswer::exit)
      .def_readonly("elapsed_us", &runtime::AnytimeAnswer::elapsed_us)
      .def_readonly("complete", &runtime::AnytimeAnswer::complete)
      .def("__repr__", [](const runtime::AnytimeAnswer& a) {
        return fmt::format("dydnn.AnytimeAnswer(step={}, config={}, exit={}, elapsed_us={:.1f}, complete={})", a.step,
                           a.config.name(), a.exit, a.elapsed_us, a.complete ? "True" : "False");
      });
  py::class_<runtime::AnytimeRunner>(m, "AnytimeRunner", "Refinement steps run against a time budget.")
      .def(py::init([](std::shared_ptr<DynamicNetImpl> net, const std::vector<std::pair<py::object, int64_t>>& steps) {
             std::vector<runtime::AnytimeStep> s;
             for (const auto& [config, exit] : steps)
               s.push_back({to_config(config, net->connectivity().num_groups()), exit});
             return runtime::AnytimeRunner(nn::DynamicNet(std::move(net)), std::move(s));
           }),
           py::arg("net"), py::arg("steps"))
      .def_property_readonly("steps",
                             [](const runtime::AnytimeRunner& r) {
                               std::vector<std::pair<Config, int64_t>> out;
                               for (const auto& s : r.steps()) out.emplace_back(s.config, s.exit);
                               return out;
                             })
      .def_property_readonly("expected_us", &runtime::AnytimeRunner::expected_us)
      .def_property("window", &runtime::AnytimeRunner::window, &runtime::AnytimeRunner::set_window)
      .def_property("quantile", &runtime::AnytimeRunner::quantile, &runtime::AnytimeRunner::set_quantile)
      .def("calibrate",
           [](runtime::AnytimeRunner& r, const torch::Tensor& x, int64_t repetitions) {
             py::gil_scoped_release release;
             c10::InferenceMode guard;
             r.calibrate(x, repetitions);
           },
           py::arg("input"), py::arg("repetitions") = 20)
      .def("run",
           [](runtime::AnytimeRunner& r, const torch::Tensor& x, double budget_us, const py::object& callback) {
             c10::InferenceMode guard;
             if (callback.is_none()) {
               py::gil_scoped_release release;
               return r.run(x, budget_us);
             }
             return r.run(x, budget_us, [&](const runtime::AnytimeAnswer& a) {
               const py::object go_on = callback(a);  // None (no return statement) goes on
               return go_on.is_none() || static_cast<bool>(py::bool_(go_on));
             });
           },
           py::arg("input"), py::arg("budget_us"), py::arg("callback") = py::none());
}

}  // namespace python
}  // namespace dydnn
