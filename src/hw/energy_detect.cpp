// Chooses the best energy meter on this machine, recording why each candidate was passed over.
#include "energy_internal.h"

#include <dydnn/errors.h>

namespace dydnn {
namespace hw {

DetectedMeter detect_energy_meter(std::shared_ptr<SysFs> fs, const Clock& clock, std::unique_ptr<EnergyMeter> fallback) {
  DYDNN_CHECK_VALUE(fs != nullptr, "hw", "detect_energy_meter: fs is null (valid: a SysFs, e.g. RealSysFs(\"/\"))");
  using Opener = OpenedMeter (*)(std::shared_ptr<SysFs>, const Clock&);
  // The order is documented in energy.h: precise counters first, the Jetson sensors before
  // generic hwmon (which would sum their nested rails), the model last.
  const std::pair<const char*, Opener> steps[] = {
      {"rapl", [](std::shared_ptr<SysFs> f, const Clock& c) { return open_rapl_meter(std::move(f), c); }},
      {"jetson-ina3221-iio", [](std::shared_ptr<SysFs> f, const Clock& c) { return open_jetson_iio_meter(std::move(f), c); }},
      {"jetson-ina3221-hwmon",
       [](std::shared_ptr<SysFs> f, const Clock& c) { return open_jetson_hwmon_meter(std::move(f), c); }},
      {"odroid-ina231", [](std::shared_ptr<SysFs> f, const Clock& c) { return open_odroid_meter(std::move(f), c); }},
      {"hwmon", [](std::shared_ptr<SysFs> f, const Clock& c) { return open_hwmon_meter(std::move(f), c); }},
  };
  DetectedMeter out;
  for (const auto& step : steps) {
    OpenedMeter opened = step.second(fs, clock);
    if (opened) {
      out.tried.push_back(std::string(step.first) + ": using " + opened.meter->source());
      out.meter = std::move(opened.meter);
      return out;
    }
    out.tried.push_back(std::string(step.first) + ": " + opened.reason);
  }
  if (fallback) {
    out.tried.push_back("model: using " + fallback->source());
    out.meter = std::move(fallback);
  } else {
    out.tried.push_back("model: no fallback given");
  }
  return out;
}

DetectedMeter detect_energy_meter(std::shared_ptr<SysFs> fs, const Clock& clock, std::function<double()> model_power,
                                  ModelMeterOptions options) {
  DYDNN_CHECK_VALUE(fs != nullptr, "hw", "detect_energy_meter: fs is null (valid: a SysFs, e.g. RealSysFs(\"/\"))");
  DYDNN_CHECK_VALUE(!model_power || !options.name.empty(), "hw",
                    "detect_energy_meter: options.name is empty (valid: a model name such as 'exynos5422')");
  // The model meter is built only when no hardware meter opens: it reads the power
  // function when it is made.
  DetectedMeter found = detect_energy_meter(std::move(fs), clock, std::unique_ptr<EnergyMeter>());
  if (found.meter || !model_power) return found;
  found.meter = make_model_meter(clock, std::move(model_power), std::move(options));
  found.tried.back() = "model: using " + found.meter->source();
  return found;
}

}  // namespace hw
}  // namespace dydnn
