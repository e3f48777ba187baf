// Bindings of the runtime (dydnn::runtime): selector, ladder, Pareto front, profiler and
// managers. python/dydnn/runtime.py wraps them; the decisions are made by the C++ code,
// so Python and a C++ deployment choose identically.
#include "bindings.h"

#include <dydnn/hw/energy.h>
#include <dydnn/hw/platform.h>
#include <dydnn/runtime/ladder.h>
#include <dydnn/runtime/manager.h>
#include <dydnn/runtime/profiler.h>
#include <dydnn/runtime/selector.h>

#include <pybind11/functional.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

namespace py = pybind11;

namespace dydnn {
namespace python {

namespace {

using namespace runtime;

py::dict to_dict(const Decision& d) {
  py::dict out;
  out["index"] = d.index;
  out["feasible"] = d.feasible;
  out["switched"] = d.switched;
  out["reason"] = to_string(d.reason);
  out["predicted_latency_s"] = d.predicted_latency_s;
  return out;
}

py::dict to_dict(const LogEntry& e, const std::vector<Point>& points) {
  py::dict out;
  out["time_s"] = e.time_s;
  out["max_latency_s"] = e.targets.constraints.max_latency_s;
  out["min_accuracy"] = e.targets.constraints.min_accuracy;
  out["max_power_w"] = e.targets.constraints.max_power_w;
  out["max_energy_j"] = e.targets.constraints.max_energy_j;
  out["objective"] = to_string(e.targets.objective);
  out["measured_latency_s"] = e.measured_latency_s;
  out["slowdown"] = e.slowdown;
  out["point"] = e.point;
  out["config"] = nn::Config(points[e.point].config).name();
  out["knobs"] = points[e.point].knobs;
  out["predicted_latency_s"] = points[e.point].latency_s * e.slowdown;
  out["accuracy"] = points[e.point].accuracy;
  out["feasible"] = e.feasible;
  out["switched"] = e.switched;
  out["reason"] = to_string(e.reason);
  out["knob_status"] = e.knob_status;
  return out;
}

Constraints make_constraints(double max_latency_s, double min_accuracy, double max_power_w, double max_energy_j) {
  Constraints c;
  c.max_latency_s = max_latency_s;
  c.min_accuracy = min_accuracy;
  c.max_power_w = max_power_w;
  c.max_energy_j = max_energy_j;
  return c;
}

constexpr double kInf = std::numeric_limits<double>::infinity();

}  // namespace

void bind_runtime(py::module_& m) {
  py::class_<Point>(m, "Point", "One operating point: a config under a hardware setting and its costs.")
      .def(py::init([](uint64_t config, double latency_s, double accuracy, std::string name,
                       std::map<std::string, double> knobs, double power_w, double energy_j) {
             Point p;
             p.config = config;
             p.latency_s = latency_s;
             p.accuracy = accuracy;
             p.name = std::move(name);
             p.knobs = std::move(knobs);
             p.power_w = power_w;
             p.energy_j = energy_j;
             return p;
           }),
           py::arg("config"), py::arg("latency_s"), py::arg("accuracy"), py::arg("name") = "",
           py::arg("knobs") = std::map<std::string, double>{},
           py::arg("power_w") = std::numeric_limits<double>::quiet_NaN(),
           py::arg("energy_j") = std::numeric_limits<double>::quiet_NaN())
      .def_readwrite("config", &Point::config)
      .def_readwrite("name", &Point::name)
      .def_readwrite("knobs", &Point::knobs)
      .def_readwrite("latency_s", &Point::latency_s)
      .def_readwrite("accuracy", &Point::accuracy)
      .def_readwrite("power_w", &Point::power_w)
      .def_readwrite("energy_j", &Point::energy_j)
      .def("energy_per_inference", &Point::energy_per_inference)
      .def("__repr__", [](const Point& p) {
        return fmt::format("Point({}, latency {:.1f} us, top-1 {:.4f})", p.name.empty() ? nn::Config(p.config).name() : p.name,
                           1e6 * p.latency_s, p.accuracy);
      });

  py::class_<SelectorOptions>(m, "SelectorOptions")
      .def(py::init([](double ewma_alpha, int feedback_window, double up_margin, double down_margin,
                       double min_dwell_s, double switch_cost) {
             SelectorOptions o;
             o.ewma_alpha = ewma_alpha;
             o.feedback_window = feedback_window;
             o.up_margin = up_margin;
             o.down_margin = down_margin;
             o.min_dwell_s = min_dwell_s;
             o.switch_cost = switch_cost;
             return o;
           }),
           py::arg("ewma_alpha") = 0.2, py::arg("feedback_window") = 5, py::arg("up_margin") = 0.1,
           py::arg("down_margin") = 0.0, py::arg("min_dwell_s") = 0.0, py::arg("switch_cost") = 0.0)
      .def_readwrite("ewma_alpha", &SelectorOptions::ewma_alpha)
      .def_readwrite("feedback_window", &SelectorOptions::feedback_window)
      .def_readwrite("up_margin", &SelectorOptions::up_margin)
      .def_readwrite("down_margin", &SelectorOptions::down_margin)
      .def_readwrite("min_dwell_s", &SelectorOptions::min_dwell_s)
      .def_readwrite("switch_cost", &SelectorOptions::switch_cost);

  py::class_<Selector>(m, "Selector")
      .def(py::init<std::vector<Point>, SelectorOptions>(), py::arg("points"), py::arg("options") = SelectorOptions{})
      .def(
          "decide",
          [](Selector& s, double max_latency_s, double min_accuracy, double max_power_w, double max_energy_j,
             const std::string& objective, double now_s) {
            return to_dict(s.decide(make_constraints(max_latency_s, min_accuracy, max_power_w, max_energy_j),
                                    objective_from_string(objective), now_s));
          },
          py::arg("max_latency_s") = kInf, py::arg("min_accuracy") = 0.0, py::arg("max_power_w") = kInf,
          py::arg("max_energy_j") = kInf, py::arg("objective") = "max_accuracy", py::arg("now_s") = 0.0)
      .def("observe", &Selector::observe, py::arg("index"), py::arg("measured_latency_s"))
      .def_property_readonly("slowdown", &Selector::slowdown)
      .def_property_readonly("points", &Selector::points);

  m.def("pareto_front", &pareto_front, py::arg("points"),
        "Indices of the points not dominated in (latency, energy, accuracy), fastest first.");

  py::class_<LadderPolicy>(m, "LadderPolicy")
      .def(py::init([](const std::vector<Point>& points, size_t window, double slack, double memory_s) {
             return LadderPolicy(points, LadderOptions{window, slack, memory_s});
           }),
           py::arg("points"), py::arg("window") = 20, py::arg("slack") = 0.8, py::arg("memory_s") = 1.0)
      .def("decide", &LadderPolicy::decide, py::arg("target_latency_s"), py::arg("min_accuracy"), py::arg("now_s"))
      .def("observe", &LadderPolicy::observe, py::arg("measured_latency_s"))
      .def_property_readonly("rungs", &LadderPolicy::rungs);

  m.def(
      "profile_net",
      [](const std::shared_ptr<nn::DynamicNetImpl>& net, const torch::Tensor& images, const torch::Tensor& labels,
         const data::Normalization& norm, std::vector<int> threads, std::vector<std::vector<int>> core_sets,
         int64_t warmup, int64_t repetitions, std::function<double()> energy, bool progress, bool exit_points,
         std::vector<double> exit_thresholds, const std::string& exit_criterion) {
        ProfileOptions o;
        o.exit_points = exit_points;
        o.exit_thresholds = std::move(exit_thresholds);
        o.exit_criterion = nn::parse_exit_criterion(exit_criterion);
        o.threads = std::move(threads);
        o.core_sets = std::move(core_sets);
        o.warmup = warmup;
        o.repetitions = repetitions;
        if (energy) {
          // The meter is Python: take the GIL only for its readings.
          o.energy = [energy] {
            py::gil_scoped_acquire gil;
            return energy();
          };
        }
        o.progress = progress;
        std::vector<io::OperatingPoint> table;
        {
          py::gil_scoped_release release;
          table = profile(nn::DynamicNet(net), data::ImageDataset{images, labels}, norm, o);
        }
        py::list out;
        for (const auto& p : table) {
          py::dict d;
          d["config"] = p.config.name();
          d["knobs"] = p.knobs;
          d["metrics"] = p.metrics;
          out.append(d);
        }
        return out;
      },
      py::arg("net"), py::arg("images"), py::arg("labels"), py::arg("normalization"),
      py::arg("threads") = std::vector<int>{1}, py::arg("core_sets") = std::vector<std::vector<int>>{},
      py::arg("warmup") = 20, py::arg("repetitions") = 200, py::arg("energy") = nullptr,
      py::arg("progress") = true, py::arg("exit_points") = true, py::arg("exit_thresholds") = std::vector<double>{},
      py::arg("exit_criterion") = "entropy");

  // The machine's energy meter, found the way the C++ runtime finds it.
  struct Meter {
    std::shared_ptr<hw::SteadyClock> clock = std::make_shared<hw::SteadyClock>();
    std::unique_ptr<hw::EnergyMeter> meter;
    std::vector<std::string> tried;
  };
  py::class_<Meter, std::shared_ptr<Meter>>(m, "EnergyMeter", "An energy meter of this machine (see detect_energy_meter).")
      .def_property_readonly("source", [](const Meter& e) { return e.meter->source(); })
      .def_property_readonly("coverage", [](const Meter& e) { return e.meter->coverage(); })
      .def_property_readonly("is_model", [](const Meter& e) { return e.meter->is_model(); })
      .def_property_readonly("exclusive", [](const Meter& e) { return e.meter->exclusive(); })
      .def_property_readonly("refresh_interval_s", [](const Meter& e) { return e.meter->refresh_interval_s(); })
      .def_property_readonly("tried", [](const Meter& e) { return e.tried; })
      .def(
          "energy_j",
          [](Meter& e) {
            const auto r = e.meter->read();
            return r.ok ? r.energy_j : std::numeric_limits<double>::quiet_NaN();
          },
          "Cumulative joules since the meter was opened (NaN when the reading failed).");
  m.def(
      "detect_energy_meter",
      [](const std::string& root, const std::string& platform, const std::string& domain) -> py::object {
        auto e = std::make_shared<Meter>();
        auto fs = std::make_shared<hw::RealSysFs>(root);
        auto found = hw::detect_energy_meter(fs, *e->clock, std::unique_ptr<hw::EnergyMeter>());
        if (!found.meter && !platform.empty()) {
          // The fallback: the platform's power model driven by this machine's CPU time.
          const auto model = hw::Platform::builtin(platform);
          const hw::PlatformDomain* chosen = nullptr;
          if (!domain.empty()) chosen = &model.domain(domain);
          for (const auto& d : model.domains)
            if (!chosen && !d.cpus.empty()) chosen = &d;
          DYDNN_CHECK_VALUE(chosen != nullptr, "runtime", "detect_energy_meter: platform '{}' has no CPU domain",
                            platform);
          auto opened = hw::open_cpu_model_meter(fs, *e->clock, model.name, *chosen);
          found.tried.back() = opened ? "model: using " + opened.meter->source() : "model: " + opened.reason;
          found.meter = std::move(opened.meter);
        }
        if (!found.meter) return py::make_tuple(py::none(), found.tried);
        e->meter = std::move(found.meter);
        e->tried = found.tried;
        return py::make_tuple(py::cast(e), found.tried);
      },
      py::arg("root") = "/", py::arg("platform") = "", py::arg("domain") = "",
      "(meter or None, what was tried): RAPL, Jetson INA3221, Odroid INA231, hwmon, in that order, then the "
      "platform's power model driven by /proc/stat when `platform` is given.");

  m.def("allowed_cpus", &allowed_cpus);
  m.def("pin_process", &pin_process, py::arg("cpus"));

  py::class_<ModelManager>(m, "ModelManager")
      .def(py::init([](const std::shared_ptr<nn::DynamicNetImpl>& net, std::vector<Point> points,
                       SelectorOptions options) {
             return std::make_unique<ModelManager>(nn::DynamicNet(net), std::move(points), options);
           }),
           py::arg("net"), py::arg("points"), py::arg("options") = SelectorOptions{})
      .def(
          "set_targets",
          [](ModelManager& mm, double max_latency_s, double min_accuracy, double max_power_w, double max_energy_j,
             const std::string& objective) {
            mm.set_targets({make_constraints(max_latency_s, min_accuracy, max_power_w, max_energy_j),
                            objective_from_string(objective)});
          },
          py::arg("max_latency_s") = kInf, py::arg("min_accuracy") = 0.0, py::arg("max_power_w") = kInf,
          py::arg("max_energy_j") = kInf, py::arg("objective") = "max_accuracy")
      .def(
          "infer",
          [](ModelManager& mm, const torch::Tensor& input) {
            py::gil_scoped_release release;
            c10::InferenceMode guard;
            return mm.infer(input);
          },
          py::arg("input"))
      .def("decide", &ModelManager::decide)
      .def("observe", &ModelManager::observe, py::arg("measured_latency_s"))
      .def("start", &ModelManager::start, py::arg("period_s"))
      .def("stop", &ModelManager::stop)
      .def_property_readonly("current", &ModelManager::current)
      .def_property_readonly("slowdown", &ModelManager::slowdown)
      .def_property_readonly("points", &ModelManager::points)
      .def("log",
           [](const ModelManager& mm) {
             py::list out;
             for (const auto& e : mm.log()) out.append(to_dict(e, mm.points()));
             return out;
           })
      .def("log_csv", &ModelManager::log_csv)
      .def("clear_log", &ModelManager::clear_log);

  py::class_<SystemManager>(m, "SystemManager")
      .def(py::init([](std::vector<std::string> shared_knobs) {
             return std::make_unique<SystemManager>(std::move(shared_knobs), std::make_shared<LocalKnobs>());
           }),
           py::arg("shared_knobs"))
      .def("add", &SystemManager::add, py::arg("model"), py::keep_alive<1, 2>())
      .def("decide", &SystemManager::decide)
      .def("states", &SystemManager::states)
      .def_property_readonly("state", &SystemManager::state);
}

}  // namespace python
}  // namespace dydnn
