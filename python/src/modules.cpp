// Bindings of the dynamic modules. Python wraps each C++ module in a torch.nn.Module
// that registers the very same parameter and buffer tensors (python/dydnn/nn.py).
#include "bindings.h"

#include <dydnn/nn/dynamic_net.h>
#include <dydnn/runtime/allocator.h>
#include <dydnn/runtime/latency.h>

#include <torch/extension.h>

namespace py = pybind11;

namespace dydnn {
namespace python {
namespace {

using nn::Config;
using ModulePtr = std::shared_ptr<torch::nn::Module>;

py::dict to_dict(const nn::StaticLayer& layer) {
  py::dict d;
  d["kind"] = layer.kind;
  d["tensors"] = layer.tensors;
  d["ints"] = layer.ints;
  d["reals"] = layer.reals;
  return d;
}


// The Python mirror's view of a C++ module: its own tensors and children.
// (torch::nn::Module itself is already bound by torch, so these are per class.)
template <typename Impl, typename Class>
void bind_module_tree(Class& cls) {
  cls.def("_named_parameters",
          [](Impl& self) {
            std::vector<std::pair<std::string, torch::Tensor>> out;
            for (const auto& item : self.named_parameters(false)) out.emplace_back(item.key(), item.value());
            return out;
          })
      .def("_named_buffers",
           [](Impl& self) {
             std::vector<std::pair<std::string, torch::Tensor>> out;
             for (const auto& item : self.named_buffers(false)) out.emplace_back(item.key(), item.value());
             return out;
           })
      .def("_named_children",
           [](Impl& self) {
             std::vector<std::pair<std::string, ModulePtr>> out;
             for (const auto& item : self.named_children()) out.emplace_back(item.key(), item.value());
             return out;
           })
      .def("train", [](Impl& self, bool mode) { self.train(mode); }, pybind11::arg("mode") = true);
}

template <typename Impl>
int64_t groups_of(const Impl& m) {
  return m.options.connectivity().num_groups();
}

// Methods every grouped layer shares.
template <typename Impl, typename Class>
void bind_layer_common(Class& cls) {
  bind_module_tree<Impl>(cls);
  cls.def("set_config", [](Impl& m, const py::object& c) { m.set_config(to_config(c, groups_of(m))); })
      .def_property_readonly("config", [](const Impl& m) { return m.config(); })
      .def_property_readonly("connectivity", [](const Impl& m) { return m.options.connectivity(); })
      .def("forward", [](Impl& m, const torch::Tensor& x) { return m.forward(x); })
      .def("forward_at", [](Impl& m, const torch::Tensor& x, const py::object& c) {
        return m.forward(x, to_config(c, groups_of(m)));
      })
      .def("static_layer", [](Impl& m, const py::object& c) { return to_dict(m.static_layer(to_config(c, groups_of(m)))); })
      .def("__repr__", [](const Impl& m) {
        std::ostringstream s;
        m.pretty_print(s);
        return s.str();
      });
}

}  // namespace

py::dict to_dict(const runtime::LatencyStats& s) {
  py::dict d;
  d["median_us"] = s.median_us;
  d["p95_us"] = s.p95_us;
  d["mean_us"] = s.mean_us;
  d["min_us"] = s.min_us;
  d["repetitions"] = s.repetitions;
  return d;
}

void bind_modules(py::module_& m) {
  m.def("retain_freed_memory", &runtime::retain_freed_memory, py::arg("max_block_bytes") = size_t{256} << 20,
        "Keeps large freed blocks in the process (glibc mallopt) so repeated inference does not page-fault "
        "its activations again; process-wide, call once at start-up. Returns False where the C library is not glibc.");
  using nn::DynamicConv2dImpl;
  using nn::DynamicLinearImpl;
  using nn::DynamicBatchNorm2dImpl;
  using nn::DynamicNetImpl;

  py::class_<DynamicConv2dImpl, std::shared_ptr<DynamicConv2dImpl>> conv(m, "DynamicConv2d");
  conv.def(py::init([](nn::GroupSpec in, nn::GroupSpec out, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                       std::vector<int64_t> padding, bool bias, nn::Connectivity connectivity, bool dense_input,
                       nn::Execution execution) {
             auto pair = [](const std::vector<int64_t>& v, const char* what) {
               DYDNN_CHECK_VALUE(v.size() == 1 || v.size() == 2, "nn", "DynamicConv2d: {} needs 1 or 2 values (got {})",
                                 what, v.size());
               return torch::ExpandingArray<2>({v.front(), v.back()});
             };
             return std::make_shared<DynamicConv2dImpl>(nn::DynamicConv2dOptions(in, out, pair(kernel, "kernel_size"))
                                                            .stride(pair(stride, "stride"))
                                                            .padding(pair(padding, "padding"))
                                                            .bias(bias)
                                                            .connectivity(connectivity)
                                                            .dense_input(dense_input)
                                                            .execution(execution));
           }),
           py::arg("in_groups"), py::arg("out_groups"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
           py::arg("bias"), py::arg("connectivity"), py::arg("dense_input"), py::arg("execution"));
  bind_layer_common<DynamicConv2dImpl>(conv);

  py::class_<DynamicLinearImpl, std::shared_ptr<DynamicLinearImpl>> linear(m, "DynamicLinear");
  linear.def(py::init([](nn::GroupSpec in, nn::GroupSpec out, bool bias, nn::Connectivity connectivity, bool dense_input,
                         bool dense_output, bool bias_per_input_group, nn::Execution execution) {
               return std::make_shared<DynamicLinearImpl>(nn::DynamicLinearOptions(in, out)
                                                              .bias(bias)
                                                              .connectivity(connectivity)
                                                              .dense_input(dense_input)
                                                              .dense_output(dense_output)
                                                              .bias_per_input_group(bias_per_input_group)
                                                              .execution(execution));
             }),
             py::arg("in_groups"), py::arg("out_groups"), py::arg("bias"), py::arg("connectivity"),
             py::arg("dense_input"), py::arg("dense_output"), py::arg("bias_per_input_group"), py::arg("execution"));
  bind_layer_common<DynamicLinearImpl>(linear);

  py::class_<DynamicBatchNorm2dImpl, std::shared_ptr<DynamicBatchNorm2dImpl>> bn(m, "DynamicBatchNorm2d");
  bn.def(py::init([](nn::GroupSpec groups, nn::Connectivity connectivity, double eps, double momentum) {
           return std::make_shared<DynamicBatchNorm2dImpl>(
               nn::DynamicBatchNorm2dOptions(groups).connectivity(connectivity).eps(eps).momentum(momentum));
         }),
         py::arg("groups"), py::arg("connectivity"), py::arg("eps"), py::arg("momentum"))
      .def("set_frozen", py::overload_cast<int64_t, bool>(&DynamicBatchNorm2dImpl::set_frozen), py::arg("group"),
           py::arg("frozen") = true)
      .def("set_frozen_at",
           [](DynamicBatchNorm2dImpl& b, int64_t group, const py::object& c, bool frozen) {
             b.set_frozen(group, to_config(c, b.options.groups().num_groups()), frozen);
           },
           py::arg("group"), py::arg("config"), py::arg("frozen") = true)
      .def("frozen", py::overload_cast<int64_t>(&DynamicBatchNorm2dImpl::frozen, py::const_), py::arg("group"))
      .def("num_slots", &DynamicBatchNorm2dImpl::num_slots, py::arg("group"));
  bind_layer_common<DynamicBatchNorm2dImpl>(bn);

  py::class_<DynamicNetImpl, std::shared_ptr<DynamicNetImpl>> net(m, "DynamicNet");
  bind_module_tree<DynamicNetImpl>(net);
  net.def(py::init([](const nn::NetSpec& spec) { return std::make_shared<DynamicNetImpl>(spec); }), py::arg("spec"))
      .def("set_config", [](DynamicNetImpl& n, const py::object& c) {
        n.set_config(to_config(c, n.connectivity().num_groups()));
      })
      .def_property_readonly("config", &DynamicNetImpl::config)
      .def_property_readonly("configs", &DynamicNetImpl::configs)
      .def_property_readonly("connectivity", &DynamicNetImpl::connectivity)
      .def_property_readonly("spec", &DynamicNetImpl::spec)
      .def("forward", [](DynamicNetImpl& n, const torch::Tensor& x) { return n.forward(x); })
      .def("forward_at", [](DynamicNetImpl& n, const torch::Tensor& x, const py::object& c) {
        return n.forward(x, to_config(c, n.connectivity().num_groups()));
      })
      .def("parameter_count", [](const DynamicNetImpl& n, const py::object& c) {
        return n.parameter_count(to_config(c, n.connectivity().num_groups()));
      })
      .def("macs", [](const DynamicNetImpl& n, const py::object& c) {
        return n.macs(to_config(c, n.connectivity().num_groups()));
      })
      .def("static_layers",
           [](DynamicNetImpl& n, const py::object& c) {
             py::list out;
             for (const auto& l : n.static_layers(to_config(c, n.connectivity().num_groups()))) out.append(to_dict(l));
             return out;
           })
      .def("set_frozen_statistics", py::overload_cast<int64_t, bool>(&DynamicNetImpl::set_frozen_statistics),
           py::arg("group"), py::arg("frozen") = true)
      .def("set_frozen_statistics_of",
           [](DynamicNetImpl& n, const py::object& c, bool frozen) {
             n.set_frozen_statistics(to_config(c, n.connectivity().num_groups()), frozen);
           },
           py::arg("config"), py::arg("frozen") = true)
      .def("parameters_of", [](const DynamicNetImpl& n, const py::object& c) {
        return n.parameters_of(to_config(c, n.connectivity().num_groups()));
      })
      .def("frozen_part", [](const DynamicNetImpl& n, const py::object& c) {
        return n.frozen_part(to_config(c, n.connectivity().num_groups()));
      })
      .def("set_execution", &DynamicNetImpl::set_execution, py::arg("execution"))
      .def("measure_latency",
           [](DynamicNetImpl& n, const torch::Tensor& x, const py::object& c, int64_t warmup, int64_t repetitions) {
             const Config config = to_config(c, n.connectivity().num_groups());
             n.connectivity().check_valid(config, "DynamicNet.measure_latency");
             runtime::LatencyStats stats;
             {
               py::gil_scoped_release release;
               c10::InferenceMode guard;
               stats = runtime::measure_latency([&] { n.forward(x, config); }, warmup, repetitions);
             }
             return to_dict(stats);
           },
           py::arg("input"), py::arg("config"), py::arg("warmup") = 20, py::arg("repetitions") = 100,
           "Times forward(input) at config in C++ under inference mode: median/p95/mean/min in microseconds.");
}

}  // namespace python
}  // namespace dydnn
