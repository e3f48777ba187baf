#pragma once
// Shared by the energy meter sources (energy_*.cpp): sysfs number reading, error text, and
// the meter that sums power rails and integrates them over the caller's sampling times.

#include <dydnn/hw/energy.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dydnn {
namespace hw {
namespace energy_detail {

/// "<path>: <strerror>".
std::string io_error(const std::string& path, const IoResult& result);

/// Reads `path` as a decimal number (surrounding blanks allowed). On failure returns false
/// and sets `error` to "<path>: <strerror>" or "<path>: not a number: '<text>'".
bool read_number(const SysFs& fs, const std::string& path, double& value, std::string& error);
/// As `read_number`, for an unsigned 64-bit counter (exact beyond 2^53). `io_errno`, when
/// given, receives the read's errno (0 when the read worked).
bool read_counter(const SysFs& fs, const std::string& path, uint64_t& value, std::string& error,
                  int* io_errno = nullptr);
/// Reads a text attribute; empty when it cannot be read.
std::string read_text(const SysFs& fs, const std::string& path);

/// `items` joined with `separator`.
std::string join(const std::vector<std::string>& items, const std::string& separator);
/// The trailing decimal number of a name ("hwmon12" -> 12), or -1.
long trailing_number(const std::string& name);
/// `names` sorted by their trailing number ("hwmon2" before "hwmon10").
std::vector<std::string> sorted_numerically(std::vector<std::string> names);

/// One power rail: either one file holding power, or a voltage and a current file.
/// Energy from power samples at the times they were taken: the trapezoid rule, or
/// holding each sample until the next (for a power that changes in steps).
class PowerIntegrator {
 public:
  /// Adds a sample; returns the energy (J) since the first one.
  double add(double time_s, double watts, bool hold = false) {
    if (started_) {
      const double dt = time_s - last_time_s_;
      energy_j_ += hold ? last_watts_ * dt : 0.5 * (last_watts_ + watts) * dt;
    }
    started_ = true;
    last_watts_ = watts;
    last_time_s_ = time_s;
    return energy_j_;
  }

 private:
  bool started_ = false;
  double energy_j_ = 0, last_watts_ = 0, last_time_s_ = 0;
};

struct PowerRail {
  std::string label;
  std::string power_path;  ///< empty when the rail is read as V x I
  double power_scale = 0;  ///< the power file's unit in watts (1e-6 for uW)
  std::string voltage_path, current_path;
  double vi_scale = 0;     ///< (voltage x current) unit in watts (1e-6 for mV x mA)
};

/// A rail that carries power from a file in the given unit.
PowerRail power_file_rail(std::string label, std::string path, double scale);
/// A rail whose power is voltage x current.
PowerRail vi_rail(std::string label, std::string voltage_path, std::string current_path, double scale);

/// How a rail meter describes itself.
struct RailMeterInfo {
  std::string source;
  std::string coverage;
  double refresh_interval_s = 0;
};

/// A meter reporting the sum of `rails`, integrated with the trapezoid rule.
std::unique_ptr<EnergyMeter> make_rail_meter(std::shared_ptr<SysFs> fs, const Clock& clock,
                                             std::vector<PowerRail> rails, RailMeterInfo info);

/// Takes the probe reading: the meter when it succeeds, else its error as the reason.
OpenedMeter probe(std::unique_ptr<EnergyMeter> meter);

/// The rails of the hwmon device in `dir`: power channels (`powerK_input`, else
/// `powerK_average`, uW) when it has any, else V x I for each K with `inK_input` and
/// `currK_input` (mV, mA). Labels from `*_label`, else "powerK" / "inK".
std::vector<PowerRail> hwmon_rails(const SysFs& fs, const std::string& dir);

/// Picks the rails labelled `labels` (in that order) from `rails`; on a missing label
/// returns false and says which, listing the labels there are.
bool select_rails(const std::vector<PowerRail>& rails, const std::vector<std::string>& labels,
                  std::vector<PowerRail>& chosen, std::string& error);

/// The labels of `rails`.
std::vector<std::string> rail_labels(const std::vector<PowerRail>& rails);

}  // namespace energy_detail
}  // namespace hw
}  // namespace dydnn
