// Bindings of the model artifact (dydnn::io). python/dydnn/io.py wraps them; the bytes
// are written and parsed only by the C++ code, so both languages share one format.
#include "bindings.h"

#include <dydnn/data/dataset.h>
#include <dydnn/io/artifact.h>

#include <pybind11/stl.h>
#include <torch/extension.h>

namespace py = pybind11;

namespace dydnn {
namespace python {

namespace {

using nn::DynamicNetImpl;

constexpr const char* kMetadataKeys = "dydnn_version, torch_version, method, dataset, created, accuracy, extra";

std::map<std::string, double> to_named(const py::handle& value, const char* what) {
  std::map<std::string, double> out;
  if (value.is_none()) return out;
  DYDNN_CHECK_VALUE(py::isinstance<py::dict>(value), "io", "{} must be a dict of name -> number, got {}", what,
                    py::repr(value).cast<std::string>());
  for (const auto& [k, v] : value.cast<py::dict>()) {
    DYDNN_CHECK_VALUE(py::isinstance<py::str>(k), "io", "{}: key {} is not a string", what,
                      py::repr(k).cast<std::string>());
    try {
      out[k.cast<std::string>()] = v.cast<double>();
    } catch (const py::cast_error&) {
      detail::throw_value_error("io", "{}: '{}' is {}, not a number", what, k.cast<std::string>(),
                                py::repr(v).cast<std::string>());
    }
  }
  return out;
}

io::Metadata to_metadata(const py::dict& d, int64_t groups) {
  io::Metadata m;
  for (const auto& [key, value] : d) {
    DYDNN_CHECK_VALUE(py::isinstance<py::str>(key), "io", "metadata key {} is not a string (valid: {})",
                      py::repr(key).cast<std::string>(), kMetadataKeys);
    const auto k = key.cast<std::string>();
    const auto text = [&] {
      if (value.is_none()) return std::string();
      DYDNN_CHECK_VALUE(py::isinstance<py::str>(value), "io", "metadata '{}' must be a string, got {}", k,
                        py::repr(value).cast<std::string>());
      return value.cast<std::string>();
    };
    if (k == "dydnn_version") m.dydnn_version = text();
    else if (k == "torch_version") m.torch_version = text();
    else if (k == "method") m.method = text();
    else if (k == "dataset") m.dataset = text();
    else if (k == "created") m.created = text();
    else if (k == "format_version") continue;  // read-only: save writes the current version
    else if (k == "accuracy") {
      if (value.is_none()) continue;
      DYDNN_CHECK_VALUE(py::isinstance<py::dict>(value), "io", "metadata 'accuracy' must be a dict config -> top-1");
      for (const auto& [config, top1] : value.cast<py::dict>()) {
        double value = 0;
        try {
          value = top1.cast<double>();
        } catch (const py::cast_error&) {
          detail::throw_value_error("io", "accuracy of config {} is {}, not a number in 0..1",
                                    py::str(config).cast<std::string>(), py::repr(top1).cast<std::string>());
        }
        m.accuracy[to_config(config, groups)] = value;
      }
    } else if (k == "extra") {
      if (value.is_none()) continue;
      DYDNN_CHECK_VALUE(py::isinstance<py::dict>(value), "io", "metadata 'extra' must be a dict str -> str");
      for (const auto& [ek, ev] : value.cast<py::dict>()) m.extra[py::str(ek)] = py::str(ev);
    } else {
      detail::throw_value_error("io", "unknown metadata key '{}' (valid: {}; put anything else in 'extra')", k,
                                kMetadataKeys);
    }
  }
  return m;
}

py::dict from_metadata(const io::Metadata& m) {
  py::dict d;
  d["format_version"] = m.format_version;
  d["dydnn_version"] = m.dydnn_version;
  d["torch_version"] = m.torch_version;
  d["method"] = m.method;
  d["dataset"] = m.dataset;
  d["created"] = m.created;
  py::dict accuracy;
  for (const auto& [config, top1] : m.accuracy) accuracy[py::str(config.name())] = top1;
  d["accuracy"] = accuracy;
  d["extra"] = m.extra;
  return d;
}

std::vector<io::OperatingPoint> to_points(const py::handle& value, int64_t groups) {
  std::vector<io::OperatingPoint> out;
  if (value.is_none()) return out;
  for (const auto& item : value) {
    DYDNN_CHECK_VALUE(py::isinstance<py::dict>(item), "io",
                      "an operating point must be a dict with 'config', 'knobs' and 'metrics', got {}",
                      py::repr(item).cast<std::string>());
    const auto d = item.cast<py::dict>();
    DYDNN_CHECK_VALUE(d.contains("config"), "io", "operating point {} has no 'config'", py::repr(d).cast<std::string>());
    io::OperatingPoint p;
    p.config = to_config(d["config"], groups);
    const auto entry = [&](const char* key) { return d.contains(key) ? py::object(d[key]) : py::object(py::none()); };
    p.knobs = to_named(entry("knobs"), "operating point 'knobs'");
    p.metrics = to_named(entry("metrics"), "operating point 'metrics'");
    out.push_back(std::move(p));
  }
  return out;
}

py::list from_points(const std::vector<io::OperatingPoint>& points) {
  py::list out;
  for (const auto& p : points) {
    py::dict d;
    d["config"] = p.config.name();
    d["knobs"] = p.knobs;
    d["metrics"] = p.metrics;
    out.append(d);
  }
  return out;
}

io::Artifact to_artifact(const std::shared_ptr<DynamicNetImpl>& net, const py::object& normalization,
                         const py::dict& metadata, const py::object& points) {
  io::Artifact a;
  a.net = nn::DynamicNet(net);
  if (!normalization.is_none()) a.normalization = normalization.cast<data::Normalization>();
  a.metadata = to_metadata(metadata, net->connectivity().num_groups());
  a.operating_points = to_points(points, net->connectivity().num_groups());
  return a;
}

py::tuple from_artifact(io::Artifact a) {
  return py::make_tuple(a.net.ptr(), a.normalization, from_metadata(a.metadata), from_points(a.operating_points));
}

}  // namespace

void bind_io(py::module_& m) {
  m.attr("ARTIFACT_FORMAT_VERSION") = io::kArtifactFormatVersion;
  m.def(
      "save_artifact",
      [](const std::shared_ptr<DynamicNetImpl>& net, const std::string& path, const py::object& normalization,
         const py::dict& metadata, const py::object& points) {
        auto a = to_artifact(net, normalization, metadata, points);
        py::gil_scoped_release release;
        io::save(a, path);
      },
      py::arg("net"), py::arg("path"), py::arg("normalization") = py::none(), py::arg("metadata") = py::dict(),
      py::arg("operating_points") = py::none(),
      "Writes a model file atomically (C++ dydnn::io::save).");
  m.def(
      "artifact_to_bytes",
      [](const std::shared_ptr<DynamicNetImpl>& net, const py::object& normalization, const py::dict& metadata,
         const py::object& points) {
        return py::bytes(io::to_bytes(to_artifact(net, normalization, metadata, points)));
      },
      py::arg("net"), py::arg("normalization") = py::none(), py::arg("metadata") = py::dict(),
      py::arg("operating_points") = py::none());
  m.def(
      "load_artifact",
      [](const std::string& path) {
        io::Artifact a;
        {
          py::gil_scoped_release release;
          a = io::load(path);
        }
        return from_artifact(std::move(a));
      },
      py::arg("path"), "Reads a model file: (net, normalization, metadata dict, operating points list).");
  m.def(
      "artifact_from_bytes",
      [](const py::bytes& data, const std::string& source) {
        const std::string bytes = data;
        return from_artifact(io::from_bytes(bytes.data(), bytes.size(), source));
      },
      py::arg("data"), py::arg("source") = "<bytes>");
  m.def(
      "describe_artifact",
      [](const std::shared_ptr<DynamicNetImpl>& net, const py::object& normalization, const py::dict& metadata,
         const py::object& points) {
        auto a = to_artifact(net, normalization, metadata, points);
        if (metadata.contains("format_version")) a.metadata.format_version = metadata["format_version"].cast<uint32_t>();
        return io::describe(a);
      },
      py::arg("net"), py::arg("normalization") = py::none(), py::arg("metadata") = py::dict(),
      py::arg("operating_points") = py::none());
}

}  // namespace python
}  // namespace dydnn
