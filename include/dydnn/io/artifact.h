#pragma once
/// \file
/// The model artifact: one file (`model.dydnn`) that carries a trained dynamic DNN from
/// Python to C++ (docs/artifact.md has the byte layout).
///
/// It holds the spec, every weight and BN statistics set, the valid configs, the
/// operating-point table, and metadata, each section with a CRC-32. Python's
/// `dydnn.save` / `dydnn.load` call this very code, so a file written by either side
/// loads bitwise-identical in the other.

#include <dydnn/data/dataset.h>
#include <dydnn/nn/dynamic_net.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dydnn {
namespace io {

/// The format version this build writes. It reads every version up to this one and
/// refuses newer files, naming both versions.
constexpr uint32_t kArtifactFormatVersion = 1;

/// How, when and from what the model was made, and how well each config does.
struct Metadata {
  /// The file's format version (set by `load`; `save` always writes the current one).
  uint32_t format_version = kArtifactFormatVersion;
  /// The dydnn that wrote the file; `save` fills it in when empty.
  std::string dydnn_version;
  /// The torch that trained the weights (Python passes `torch.__version__`); `save`
  /// fills in LibTorch's version when empty.
  std::string torch_version;
  /// The training method (`"incremental"`, `"nested"`, `"sandwich"`, `"static"`), or empty.
  std::string method;
  /// The data set the model was trained on, or empty.
  std::string dataset;
  /// Creation time, ISO 8601 in UTC (`2026-11-23T16:40:00Z`); `save` fills it in when empty.
  std::string created;
  /// Top-1 accuracy (0..1) per config; every key must be one of the net's configs.
  std::map<nn::Config, double> accuracy;
  /// Free-form string entries (a run id, the data split, a licence...).
  std::map<std::string, std::string> extra;
};

/// One row of the profiler's table: a config under one hardware setting and what was
/// measured there. Knobs and metrics are named so later tables can add columns;
/// the runtime reads `threads`, `cpu_khz`, ... and `latency_p50_us`, `energy_mj`, ...
struct OperatingPoint {
  nn::Config config;
  /// Hardware settings, e.g. `{"threads": 2}`.
  std::map<std::string, double> knobs;
  /// Measurements, e.g. `{"latency_p50_us": 310.5, "top1": 0.903}`.
  std::map<std::string, double> metrics;

  bool operator==(const OperatingPoint& other) const {
    return config == other.config && knobs == other.knobs && metrics == other.metrics;
  }
};

/// What a model file holds: the net (eval mode, full config, weights and statistics
/// loaded) and everything around it.
struct Artifact {
  nn::DynamicNet net{nullptr};
  /// What the net expects its input to be normalised with (the training set's
  /// per-channel mean and standard deviation); identity when empty. A deployment
  /// applies it to raw images before `net->forward`.
  data::Normalization normalization;
  Metadata metadata;
  /// Empty until the model is profiled.
  std::vector<OperatingPoint> operating_points;
};

/// The file's bytes for `artifact` (what `save` writes). Fills in the metadata that
/// `save` fills in. Throws `ValueError` when the metadata or operating points name a
/// config the net does not have, or a value is out of range.
std::string to_bytes(const Artifact& artifact);

/// Parses an artifact from memory; `source` names it in errors. Every problem
/// (truncation, a flipped bit, a wrong magic, a newer version, shapes that do not
/// match the spec, a config the spec does not allow) throws `ValueError` naming the
/// source, the section and what is wrong; nothing is allocated beyond what the
/// bytes themselves justify.
Artifact from_bytes(const void* data, size_t size, const std::string& source = "<memory>");

/// Writes `artifact` to `path` atomically: a temporary file in the same directory,
/// flushed to disk, then renamed over `path`. A failure (a full disk, no permission)
/// throws `ValueError` and leaves any previous file at `path` unchanged.
void save(const Artifact& artifact, const std::string& path);

/// `save` for a bare net with optional metadata.
void save(nn::DynamicNet net, const std::string& path, Metadata metadata = {});

/// Reads a model file. Throws `ValueError` naming the path and the problem (missing,
/// a directory, unreadable, or any of `from_bytes`'s).
Artifact load(const std::string& path);

/// A human-readable summary: format, versions, spec, per-config parameters, MFLOPs
/// and accuracy, the operating points and the metadata (what `dydnn info` prints).
std::string describe(const Artifact& artifact);

/// The artifact's metric names as used across dydnn (the profiler writes them).
namespace metric {
constexpr const char* kLatencyP50Us = "latency_p50_us";
constexpr const char* kLatencyP95Us = "latency_p95_us";
constexpr const char* kTop1 = "top1";
constexpr const char* kPowerW = "power_w";
constexpr const char* kEnergyMj = "energy_mj";
}  // namespace metric

}  // namespace io
}  // namespace dydnn
