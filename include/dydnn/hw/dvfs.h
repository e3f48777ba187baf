#pragma once
/// \file
/// `DvfsBackend`: the hardware knobs a runtime turns (frequency domains and their
/// governors and limits), behind one interface with a Linux sysfs implementation
/// (`sysfs_dvfs.h`) and a simulated one (`sim_backend.h`).
///
/// Actions never throw for a refusal of the system (no permission, a busy device, a
/// missing file): they return a `Status` with the reason, so an inference loop keeps
/// running when a knob cannot be turned. What a domain allows is known up front as
/// `Capability`s. Plain C++17, no LibTorch.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dydnn {
namespace hw {

/// The outcome of an action: ok, or why not.
struct Status {
  bool ok = true;
  std::string reason;  ///< why not; when ok, empty or a note (e.g. "clamped to the limits")

  static Status success() { return {}; }
  static Status failure(std::string why) { return {false, std::move(why)}; }
  explicit operator bool() const { return ok; }
};

/// Whether something can be done here, and if not, why (e.g. "scaling_setspeed: Permission
/// denied (run as root or see docs/runtime.md for udev rules)").
struct Capability {
  bool available = false;
  std::string reason;

  static Capability yes() { return {true, {}}; }
  static Capability no(std::string why) { return {false, std::move(why)}; }
};

/// What a frequency domain clocks.
enum class DomainKind { CpuCluster, Gpu, Memory };

/// "cpu" | "gpu" | "memory".
const char* to_string(DomainKind kind);

/// One frequency domain: a cpufreq policy (a CPU cluster), or a devfreq device.
/// Frequencies are in Hz everywhere in this API (cpufreq's kHz are converted).
struct Domain {
  std::string name;   ///< "policy4", "57000000.gpu"
  DomainKind kind = DomainKind::CpuCluster;
  std::vector<int> cpus;                   ///< the CPUs of a cluster (empty for devices)
  std::vector<uint64_t> frequencies_hz;    ///< ascending; empty when continuous (intel_pstate)
  uint64_t min_hz = 0, max_hz = 0;         ///< the hardware's range
  std::vector<std::string> governors;      ///< available governors
  double transition_latency_s = 0;         ///< how long a frequency change takes to act
  Capability can_set_governor;
  Capability can_set_frequency;            ///< needs the userspace governor and a writable setspeed
  Capability can_set_limits;
};

/// The lowest entry of `table` (ascending) that is >= `hz`; the highest entry when `hz`
/// is above them all; `hz` itself when the table is empty.
uint64_t snap_up(const std::vector<uint64_t>& table, uint64_t hz);
/// The highest entry of `table` (ascending) that is <= `hz`; the lowest entry when none
/// is (cpufreq resolves a max limit so); `hz` itself when the table is empty.
uint64_t snap_down(const std::vector<uint64_t>& table, uint64_t hz);

/// Hardware knobs: frequency domains with governors, frequencies and limits.
class DvfsBackend {
 public:
  virtual ~DvfsBackend() = default;
  /// "linux-sysfs", "sim:exynos5422", ...
  virtual std::string name() const = 0;
  virtual const std::vector<Domain>& domains() const = 0;
  /// The index of the domain called `name`, or -1.
  int find(const std::string& name) const;

  /// Switches a domain's governor. Throws `dydnn::IndexError` for a domain index out of
  /// range (a programming error); every refusal of the system is a failed `Status`.
  virtual Status set_governor(size_t domain, const std::string& governor) = 0;
  /// Runs a domain at a fixed frequency (snapped up to its table), switching it to the
  /// `userspace` governor first where needed.
  virtual Status set_frequency(size_t domain, uint64_t hz) = 0;
  /// Sets the domain's min and max limits (snapped to the table; min <= max required),
  /// writing them in the order that never makes min > max on the way.
  virtual Status set_limits(size_t domain, uint64_t min_hz, uint64_t max_hz) = 0;
  /// The frequency the domain runs at now (Hz), or 0 when it cannot be read.
  virtual uint64_t current_frequency(size_t domain) const = 0;
  /// The domain's governor now, or "" when it cannot be read.
  virtual std::string governor(size_t domain) const = 0;
  /// Puts back everything this backend changed (governors, limits, frequencies), in
  /// reverse order. Implementations also call it on destruction.
  virtual Status restore() = 0;

 protected:
  void check_domain(size_t domain) const;
};

}  // namespace hw
}  // namespace dydnn
