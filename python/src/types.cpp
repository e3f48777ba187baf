// Bindings of the tensor-free types: Config, GroupSpec, Connectivity, Execution, NetSpec.
#include "bindings.h"

#include <dydnn/errors.h>
#include <dydnn/nn/connectivity.h>
#include <dydnn/nn/execution.h>
#include <dydnn/nn/group_spec.h>
#include <dydnn/nn/spec.h>

#include <pybind11/operators.h>
#include <pybind11/stl.h>

namespace py = pybind11;

namespace dydnn {
namespace python {

using nn::Config;
using nn::Connectivity;
using nn::GroupSpec;
using nn::NetSpec;

nn::Config to_config(const py::handle& value, int64_t num_groups) {
  if (py::isinstance<Config>(value)) return value.cast<Config>();
  if (py::isinstance<py::str>(value)) return Config::parse(value.cast<std::string>(), num_groups);
  if (py::isinstance<py::bool_>(value) || py::isinstance<py::int_>(value) || py::isinstance<py::float_>(value)) {
    detail::throw_value_error("nn",
                              "config {} is ambiguous: pass the active groups as a list ([0, 1]) or a string "
                              "(\"AB\"), or a dydnn.Config",
                              py::str(value).cast<std::string>());
  }
  if (py::isinstance<py::iterable>(value)) {
    std::vector<int64_t> groups;
    for (auto item : value) {
      if (!py::isinstance<py::int_>(item) || py::isinstance<py::bool_>(item))
        detail::throw_value_error("nn", "config entries must be group indices (ints), got {}",
                                  py::repr(item).cast<std::string>());
      groups.push_back(item.cast<int64_t>());
    }
    DYDNN_CHECK_VALUE(!groups.empty(), "nn", "config is empty: a sub-network needs at least one group");
    return Config::of(groups);
  }
  detail::throw_value_error("nn", "cannot read a config from {} (pass a list of groups, a string or a dydnn.Config)",
                            py::repr(value).cast<std::string>());
}

void bind_types(py::module_& m) {
  py::class_<Config>(m, "Config", "The set of active groups that selects one sub-network.")
      .def(py::init([](const py::object& value, int64_t num_groups) { return to_config(value, num_groups); }),
           py::arg("groups"), py::arg("num_groups") = nn::kMaxGroups,
           "A config from a list of groups ([0, 1]) or a string (\"AB\", \"C*D*\", \"0,1\").")
      .def_static("prefix", &Config::prefix, py::arg("count"), "Groups 0 .. count-1.")
      .def_static("from_mask", [](uint64_t mask) { return Config(mask); }, py::arg("mask"))
      .def_property_readonly("mask", &Config::mask)
      .def_property_readonly("groups", &Config::groups)
      .def_property_readonly("name", &Config::name, "The papers' letter name (\"AB\").")
      .def("__contains__", &Config::contains)
      .def("__len__", &Config::count)
      .def("__iter__", [](const Config& c) { return py::iter(py::cast(c.groups())); })
      .def("__str__", &Config::to_string)
      .def("__repr__", [](const Config& c) { return "dydnn.Config(" + c.name() + ")"; })
      .def("__hash__", [](const Config& c) { return std::hash<Config>()(c); })
      .def(py::self == py::self)
      .def(py::self != py::self)
      .def(py::self < py::self)
      .def(py::pickle([](const Config& c) { return c.mask(); }, [](uint64_t mask) { return Config(mask); }));

  py::class_<GroupSpec>(m, "GroupSpec", "How a layer's channels are split into groups.")
      .def_static("equal", &GroupSpec::equal, py::arg("channels"), py::arg("groups"))
      .def_static("ratios", &GroupSpec::ratios, py::arg("channels"), py::arg("ratios"))
      .def_static("counts", &GroupSpec::counts, py::arg("sizes"))
      .def_property_readonly("num_groups", &GroupSpec::num_groups)
      .def_property_readonly("channels", &GroupSpec::channels)
      .def_property_readonly("sizes", &GroupSpec::sizes)
      .def("size", &GroupSpec::size, py::arg("group"))
      .def("offset", &GroupSpec::offset, py::arg("group"))
      .def("channels_in", [](const GroupSpec& s, const py::object& c) { return s.channels_in(to_config(c, s.num_groups())); },
           py::arg("config"))
      .def("scaled", &GroupSpec::scaled, py::arg("factor"))
      .def("__repr__", [](const GroupSpec& s) { return "dydnn.GroupSpec(" + s.to_string() + ")"; })
      .def(py::self == py::self);

  py::enum_<nn::Execution>(m, "Execution")
      .value("Auto", nn::Execution::Auto)
      .value("Packed", nn::Execution::Packed)
      .value("PerGroup", nn::Execution::PerGroup);
  m.def("execution_from_string", &nn::execution_from_string);

  py::class_<Connectivity>(m, "Connectivity", "A G x G block mask and the declared valid configs.")
      .def_static("prefix", &Connectivity::prefix, py::arg("num_groups"))
      .def_static("incremental", &Connectivity::incremental, py::arg("num_groups"))
      .def_static("independent", &Connectivity::independent, py::arg("num_groups"))
      .def_static("fluid", &Connectivity::fluid, py::arg("islands"), py::arg("cross_edges") = true)
      .def_static("custom", &Connectivity::custom, py::arg("rows"), py::arg("valid_configs"))
      .def_static("from_name", &Connectivity::from_name, py::arg("name"), py::arg("num_groups"))
      .def("with_configs",
           [](const Connectivity& c, const py::iterable& configs) {
             std::vector<Config> out;
             for (auto item : configs) out.push_back(to_config(item, c.num_groups()));
             return c.with_configs(out);
           },
           py::arg("configs"))
      .def_property_readonly("name", &Connectivity::name)
      .def_property_readonly("num_groups", &Connectivity::num_groups)
      .def_property_readonly("valid_configs", &Connectivity::valid_configs)
      .def_property_readonly("islands", &Connectivity::islands)
      .def_property_readonly("cross_edges", &Connectivity::cross_edges)
      .def_property_readonly("full_config", &Connectivity::full_config)
      .def_property_readonly("mask",
                             [](const Connectivity& c) {
                               std::vector<std::vector<bool>> rows(c.num_groups(), std::vector<bool>(c.num_groups()));
                               for (int64_t j = 0; j < c.num_groups(); ++j)
                                 for (int64_t i = 0; i < c.num_groups(); ++i) rows[j][i] = c.reads(j, i);
                               return rows;
                             },
                             "mask[j][i]: output group j reads input group i.")
      .def("reads", &Connectivity::reads, py::arg("j"), py::arg("i"))
      .def("is_valid", [](const Connectivity& c, const py::object& v) { return c.is_valid(to_config(v, c.num_groups())); })
      .def("check_valid",
           [](const Connectivity& c, const py::object& v, const std::string& who) {
             c.check_valid(to_config(v, c.num_groups()), who);
           },
           py::arg("config"), py::arg("who") = "Connectivity")
      .def("context_of", [](const Connectivity& c, int64_t j, const py::object& v) {
        return c.context_of(j, to_config(v, c.num_groups()));
      })
      .def("group_is_exact", &Connectivity::group_is_exact)
      .def("mask_picture", &Connectivity::mask_picture)
      .def("__repr__", [](const Connectivity& c) {
        return "dydnn.Connectivity(" + c.name() + ", G=" + std::to_string(c.num_groups()) + ")";
      });

  py::class_<NetSpec>(m, "NetSpec", "The declarative description of a DynamicNet (docs/spec.md).")
      .def_static("parse", &NetSpec::parse, py::arg("text"), py::arg("source") = "<spec>")
      .def_static("load", &NetSpec::load, py::arg("path"))
      .def("to_text", &NetSpec::to_text)
      .def("make_connectivity", &NetSpec::make_connectivity)
      .def(
          "replace",
          [](const NetSpec& s, const py::object& name, const py::object& connectivity, const py::object& head,
             const py::object& cross_edges, const py::object& configs) {
            NetSpec out = s;
            if (!name.is_none()) out.name = name.cast<std::string>();
            if (!connectivity.is_none()) {
              out.connectivity = connectivity.cast<std::string>();
              if (out.connectivity != "fluid") out.islands.clear();
              out.configs.clear();
            }
            if (!head.is_none()) {
              const auto h = head.cast<std::string>();
              bool known = false;
              for (auto k : {nn::HeadKind::Additive, nn::HeadKind::PerConfig, nn::HeadKind::Prefix})
                if (nn::to_string(k) == h) {
                  out.head = k;
                  known = true;
                }
              DYDNN_CHECK_VALUE(known, "spec", "head '{}' (valid: additive, per_config, prefix)", h);
            }
            if (!cross_edges.is_none()) out.cross_edges = cross_edges.cast<bool>();
            if (!configs.is_none()) {
              out.configs.clear();
              for (const auto& c : configs) out.configs.push_back(to_config(c, out.groups));
            }
            out.validate();
            (void)out.make_connectivity();  // checks the declared configs against the mask
            return out;
          },
          py::kw_only(), py::arg("name") = py::none(), py::arg("connectivity") = py::none(),
          py::arg("head") = py::none(), py::arg("cross_edges") = py::none(), py::arg("configs") = py::none(),
          "A copy with some fields replaced (validated): e.g. the dense static twin of a spec is "
          "spec.replace(connectivity='prefix', head='prefix', configs=['ABCD']).")
      .def_readonly("cross_edges", &NetSpec::cross_edges)
      .def_readonly("name", &NetSpec::name)
      .def_readonly("in_channels", &NetSpec::in_channels)
      .def_readonly("height", &NetSpec::height)
      .def_readonly("width", &NetSpec::width)
      .def_readonly("classes", &NetSpec::classes)
      .def_readonly("groups", &NetSpec::groups)
      .def_readonly("connectivity", &NetSpec::connectivity)
      .def_property_readonly("head", [](const NetSpec& s) { return nn::to_string(s.head); })
      .def_property_readonly("num_layers", [](const NetSpec& s) { return s.layers.size(); })
      .def_property_readonly("exits",
                             [](const NetSpec& s) {
                               std::vector<std::pair<int64_t, int64_t>> out;
                               for (const auto& x : s.exits) out.emplace_back(x.after, x.avg_pool);
                               return out;
                             },
                             "The early exits as (after, avgpool) pairs (the final head not included).")
      .def("__repr__", [](const NetSpec& s) { return "dydnn.NetSpec(" + s.name + ")"; });
}

}  // namespace python
}  // namespace dydnn
