// The Odroid XU3's INA231 power sensors (Hardkernel's vendor driver): one sensor per rail,
// enabled through sysfs, reporting watts.
#include "energy_internal.h"

#include <dydnn/errors.h>

#include <algorithm>

namespace dydnn {
namespace hw {

namespace {

using namespace energy_detail;

struct Ina231Rail {
  const char* address;  // the i2c client suffix
  const char* label;
};

// Rail per I2C address as the PRiME framework and energymon read the XU3 (one other
// source swaps 0x41 and 0x45).
constexpr Ina231Rail kXu3Rails[] = {{"0040", "A15"}, {"0041", "memory"}, {"0044", "GPU"}, {"0045", "A7"}};

constexpr double kDefaultUpdatePeriodUs = 263808;

/// Turns a sensor on; fine when the write is refused but it is on already.
bool enable_sensor(SysFs& fs, const std::string& dir, std::string& error) {
  const std::string path = dir + "/enable";
  const IoResult written = fs.write(path, "1");
  if (written.ok() || read_text(fs, path) == "1") return true;
  error = io_error(path, written);
  return false;
}

}  // namespace

OpenedMeter open_odroid_meter(std::shared_ptr<SysFs> fs, const Clock& clock) {
  DYDNN_CHECK_VALUE(fs != nullptr, "hw", "open_odroid_meter: fs is null (valid: a SysFs)");
  const std::string driver = "/sys/bus/i2c/drivers/INA231";
  if (!fs->is_directory(driver)) return {nullptr, "no " + driver};

  // The client directories are "<bus>-00<addr>": the XU3 uses bus 3, which is not assumed.
  const std::vector<std::string> clients = fs->list(driver);
  std::vector<PowerRail> rails;
  double period_us = 0;
  for (const auto& rail : kXu3Rails) {
    const auto client = std::find_if(clients.begin(), clients.end(), [&](const std::string& name) {
      const size_t dash = name.find('-');
      return dash != std::string::npos && name.substr(dash + 1) == rail.address;
    });
    if (client == clients.end() || !fs->is_directory(driver + "/" + *client)) continue;
    const std::string dir = driver + "/" + *client;
    std::string why;
    if (!enable_sensor(*fs, dir, why)) return {nullptr, why};
    double us = 0;
    if (read_number(*fs, dir + "/update_period", us, why) && us > 0) period_us = std::max(period_us, us);
    rails.push_back(power_file_rail(rail.label, dir + "/sensor_W", 1.0));
  }
  if (rails.empty()) return {nullptr, "no INA231 sensor at 0x40, 0x41, 0x44 or 0x45 under " + driver};

  RailMeterInfo info;
  const std::string labels = join(rail_labels(rails), "+");
  info.source = "ina231:" + labels;
  info.coverage = "the " + join(rail_labels(rails), ", ") +
                  " rails (separate rails, so summed); not the rest of the board (USB, Ethernet, fan, "
                  "storage); every process on them and the idle cores (not exclusive)";
  info.refresh_interval_s = (period_us > 0 ? period_us : kDefaultUpdatePeriodUs) * 1e-6;
  return probe(make_rail_meter(std::move(fs), clock, std::move(rails), std::move(info)));
}

}  // namespace hw
}  // namespace dydnn
