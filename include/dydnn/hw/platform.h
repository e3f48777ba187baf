#pragma once
/// \file
/// Platform models for the simulator: each frequency domain's operating points (frequency,
/// voltage), its dynamic-power coefficient, static power and transition latency, read from a
/// small text file (`data/platforms/*.platform`, format in `data/platforms/README.md`).
///
/// Plain C++17, no LibTorch. A `Platform` is a plain value: copy it and change fields to build
/// variants (e.g. a zero static power) in tests and studies.

#include <dydnn/hw/dvfs.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dydnn {
namespace hw {

/// One operating performance point of a domain.
struct Opp {
  uint64_t hz = 0;   ///< frequency (Hz)
  double volts = 0;  ///< supply voltage at that frequency (V)
};

/// One frequency domain of a platform (a CPU cluster or a device) and its power model.
///
/// Dynamic power of one busy core (or of the busy device) at an OPP:
/// `P = coeff_uw_per_mhz_v2 * V^2 * f_MHz * 1e-6` W (the Linux energy model's formula).
struct PlatformDomain {
  std::string name;   ///< the backend's domain name: "policy4", "57000000.gpu"
  std::string label;  ///< for people: "A15", "Mali-T628"
  DomainKind kind = DomainKind::CpuCluster;
  std::vector<int> cpus;            ///< the cluster's CPUs; empty for a device
  std::vector<Opp> opps;            ///< ascending by frequency, at least one
  double coeff_uw_per_mhz_v2 = 0;   ///< dynamic-power coefficient C (uW/MHz/V^2)
  double capacity = 1024;           ///< capacity-dmips-mhz (1024 = the biggest core)
  double static_w = 0;              ///< static power while powered (W), whatever the frequency
  double transition_latency_s = 0;  ///< how long a frequency change takes to act (s)
  std::string power_model;          ///< where C and V come from: "dts" (device tree), "assumed", "fitted"

  /// The OPP frequencies (Hz), ascending.
  std::vector<uint64_t> frequencies_hz() const;
  /// The voltage of the OPP at exactly `hz`; throws `ValueError` naming the valid frequencies
  /// when `hz` is not one of them.
  double volts_at(uint64_t hz) const;
  /// Dynamic power (W) at the OPP `hz` with `busy_cores` cores' worth of busy time
  /// (e.g. 2.5 = two cores always busy and one half of the time).
  double dynamic_power_w(uint64_t hz, double busy_cores) const;
  /// How many cores can run work: `cpus.size()` for a cluster, 1 for a device.
  int units() const;
};

/// A board: its name, where its numbers come from, and its frequency domains.
///
/// Example:
/// \code
///   auto board = dydnn::hw::Platform::builtin("exynos5422");
///   const auto& big = board.domain("policy4");
///   double w = big.dynamic_power_w(1200000000, 1.0);  // ~0.372 W
/// \endcode
struct Platform {
  std::string name;                     ///< "exynos5422"
  std::string description;              ///< one line for people
  std::vector<std::string> sources;     ///< citations, one per `source` line
  std::vector<PlatformDomain> domains;  ///< in file order

  /// Reads a platform file. Throws `ValueError` naming the file, the line and the token for
  /// any syntax or range error, and when the file cannot be read.
  static Platform load(const std::string& path);
  /// Parses platform text; `origin` names it in error messages (a file name).
  static Platform parse(const std::string& text, const std::string& origin = "<text>");
  /// Loads `<builtin_dir()>/<name>.platform`; throws `ValueError` listing the available names
  /// when there is no such platform.
  static Platform builtin(const std::string& name);
  /// The names of the platforms in `builtin_dir()`, sorted.
  static std::vector<std::string> builtin_names();
  /// Where the built-in platform files are: the `DYDNN_PLATFORM_DIR` environment variable when
  /// set, else the source tree's `data/platforms` (compiled in).
  static std::string builtin_dir();

  /// The index of the domain called `name` (or labelled `name`), or -1.
  int find(const std::string& name) const;
  /// The domain called (or labelled) `name`; throws `ValueError` listing the domains.
  const PlatformDomain& domain(const std::string& name) const;
};

}  // namespace hw
}  // namespace dydnn
