// Jetson power meters on the INA3221: the IIO driver of older L4T and the hwmon driver of
// newer JetPack. Both resolve rails by label and default to the board input rail alone.
#include "energy_internal.h"

#include <dydnn/errors.h>

#include <algorithm>

namespace dydnn {
namespace hw {

const std::vector<std::string>& jetson_input_rails() {
  static const std::vector<std::string> rails = {"POM_5V_IN", "VDD_IN"};
  return rails;
}

namespace {

using namespace energy_detail;

// The INA3221's power-on configuration (datasheet: 7127h): 3 channels, 1 sample, 1.1 ms
// bus + 1.1 ms shunt conversion each.
constexpr double kIna3221DefaultRefreshS = 3 * (1.1e-3 + 1.1e-3);

/// Chooses the rails (`requested`, or the input rail) among `rails` and opens the meter.
OpenedMeter open_jetson_rails(std::shared_ptr<SysFs> fs, const Clock& clock, const std::vector<PowerRail>& rails,
                              const std::vector<std::string>& requested, double refresh_s) {
  std::vector<std::string> labels = requested;
  const bool input_rail = labels.empty();
  if (input_rail) {
    for (const auto& candidate : jetson_input_rails())
      if (std::any_of(rails.begin(), rails.end(), [&](const PowerRail& r) { return r.label == candidate; })) {
        labels.push_back(candidate);
        break;
      }
    if (labels.empty())
      return {nullptr, "no input rail (" + join(jetson_input_rails(), " or ") +
                           ") among: " + join(rail_labels(rails), ", ") +
                           "; adding the other rails would double count, name them explicitly to use them"};
  }
  std::vector<PowerRail> chosen;
  std::string why;
  if (!select_rails(rails, labels, chosen, why)) return {nullptr, why};
  RailMeterInfo info;
  const std::string joined = join(labels, "+");
  info.source = "ina3221:" + joined;
  info.coverage = input_rail ? "the board input rail " + joined +
                                   ": the whole board (CPU, GPU, memory, SoC, peripherals) for every process "
                                   "and at idle (not exclusive)"
                             : "INA3221 rail(s) " + joined +
                                   ", summed: rails fed from the input rail overlap it, so do not add them to it; "
                                   "every process on them (not exclusive)";
  info.refresh_interval_s = refresh_s;
  return probe(make_rail_meter(std::move(fs), clock, std::move(chosen), std::move(info)));
}

}  // namespace

OpenedMeter open_jetson_iio_meter(std::shared_ptr<SysFs> fs, const Clock& clock, std::vector<std::string> rails) {
  DYDNN_CHECK_VALUE(fs != nullptr, "hw", "open_jetson_iio_meter: fs is null (valid: a SysFs)");
  const std::string driver = "/sys/bus/i2c/drivers/ina3221x";
  if (!fs->is_directory(driver)) return {nullptr, "no " + driver};
  std::vector<PowerRail> found;
  for (const auto& client : fs->list(driver)) {
    const std::string client_dir = driver + "/" + client;
    if (client.find('-') == std::string::npos || !fs->is_directory(client_dir)) continue;
    for (const auto& device : sorted_numerically(fs->list(client_dir))) {
      const std::string dir = client_dir + "/" + device;
      if (device.compare(0, 10, "iio:device") != 0 || !fs->is_directory(dir)) continue;
      std::vector<std::string> names;
      for (const auto& file : fs->list(dir))
        if (file.compare(0, 10, "rail_name_") == 0 && trailing_number(file) >= 0) names.push_back(file);
      for (const auto& name_file : sorted_numerically(names)) {
        const std::string k = std::to_string(trailing_number(name_file));
        const std::string label = read_text(*fs, dir + "/" + name_file);
        const std::string power = dir + "/in_power" + k + "_input";
        const std::string volts = dir + "/in_voltage" + k + "_input", amps = dir + "/in_current" + k + "_input";
        if (label.empty()) continue;
        if (fs->exists(power))
          found.push_back(power_file_rail(label, power, 1e-3));
        else if (fs->exists(volts) && fs->exists(amps))
          found.push_back(vi_rail(label, volts, amps, 1e-6));
      }
    }
  }
  if (found.empty()) return {nullptr, "no rail_name_K with in_powerK_input under " + driver + "/*/iio:device*"};
  return open_jetson_rails(std::move(fs), clock, found, rails, kIna3221DefaultRefreshS);
}

OpenedMeter open_jetson_hwmon_meter(std::shared_ptr<SysFs> fs, const Clock& clock, std::vector<std::string> rails) {
  DYDNN_CHECK_VALUE(fs != nullptr, "hw", "open_jetson_hwmon_meter: fs is null (valid: a SysFs)");
  const std::string base = "/sys/class/hwmon";
  std::vector<PowerRail> found;
  bool any_device = false;
  double refresh_s = 0;
  for (const auto& device : sorted_numerically(fs->list(base))) {
    const std::string dir = base + "/" + device;
    if (read_text(*fs, dir + "/name") != "ina3221") continue;
    any_device = true;
    for (auto& rail : hwmon_rails(*fs, dir)) found.push_back(std::move(rail));
    double interval_ms = 0;
    std::string ignored;
    if (read_number(*fs, dir + "/update_interval", interval_ms, ignored) && interval_ms > 0)
      refresh_s = std::max(refresh_s, interval_ms * 1e-3);
  }
  if (!any_device) return {nullptr, "no " + base + "/hwmon* device named ina3221"};
  if (found.empty()) return {nullptr, "ina3221 hwmon device(s) without inK_input x currK_input channels"};
  return open_jetson_rails(std::move(fs), clock, found, rails, refresh_s > 0 ? refresh_s : kIna3221DefaultRefreshS);
}

}  // namespace hw
}  // namespace dydnn
