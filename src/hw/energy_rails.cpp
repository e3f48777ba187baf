// The meter behind every power sensor (hwmon, INA3221, INA231): sums its rails' power and
// integrates it over the caller's sampling times with the trapezoid rule.
#include "energy_internal.h"

#include <utility>

namespace dydnn {
namespace hw {
namespace energy_detail {

PowerRail power_file_rail(std::string label, std::string path, double scale) {
  PowerRail rail;
  rail.label = std::move(label);
  rail.power_path = std::move(path);
  rail.power_scale = scale;
  return rail;
}

PowerRail vi_rail(std::string label, std::string voltage_path, std::string current_path, double scale) {
  PowerRail rail;
  rail.label = std::move(label);
  rail.voltage_path = std::move(voltage_path);
  rail.current_path = std::move(current_path);
  rail.vi_scale = scale;
  return rail;
}

std::vector<std::string> rail_labels(const std::vector<PowerRail>& rails) {
  std::vector<std::string> out;
  for (const auto& rail : rails) out.push_back(rail.label);
  return out;
}

bool select_rails(const std::vector<PowerRail>& rails, const std::vector<std::string>& labels,
                  std::vector<PowerRail>& chosen, std::string& error) {
  chosen.clear();
  for (const auto& label : labels) {
    const PowerRail* found = nullptr;
    for (const auto& rail : rails)
      if (rail.label == label) found = &rail;
    if (!found) {
      error = "no rail labelled '" + label + "' (rails: " + (rails.empty() ? "none" : join(rail_labels(rails), ", ")) +
              ")";
      return false;
    }
    chosen.push_back(*found);
  }
  return true;
}

namespace {

class RailMeter : public EnergyMeter {
 public:
  RailMeter(std::shared_ptr<SysFs> fs, const Clock& clock, std::vector<PowerRail> rails, RailMeterInfo info)
      : fs_(std::move(fs)), clock_(&clock), rails_(std::move(rails)), info_(std::move(info)) {}

  std::string source() const override { return info_.source; }
  std::string coverage() const override { return info_.coverage; }
  double refresh_interval_s() const override { return info_.refresh_interval_s; }
  bool exclusive() const override { return false; }
  bool is_model() const override { return false; }

  EnergyReading read() override {
    EnergyReading out;
    out.time_s = clock_->now_s();
    double total_w = 0;
    for (const auto& rail : rails_) {
      double watts = 0;
      if (!read_rail(rail, watts, out.error)) return out;
      total_w += watts;
    }
    out.ok = true;
    out.energy_j = energy_.add(out.time_s, total_w);
    out.power_w = total_w;
    return out;
  }

 private:
  bool read_rail(const PowerRail& rail, double& watts, std::string& error) const {
    if (!rail.power_path.empty()) {
      double p = 0;
      if (!read_number(*fs_, rail.power_path, p, error)) return false;
      watts = p * rail.power_scale;
      return true;
    }
    double volts = 0, amps = 0;
    if (!read_number(*fs_, rail.voltage_path, volts, error)) return false;
    if (!read_number(*fs_, rail.current_path, amps, error)) return false;
    watts = volts * amps * rail.vi_scale;
    return true;
  }

  std::shared_ptr<SysFs> fs_;
  const Clock* clock_;
  std::vector<PowerRail> rails_;
  RailMeterInfo info_;
  PowerIntegrator energy_;
};

}  // namespace

std::unique_ptr<EnergyMeter> make_rail_meter(std::shared_ptr<SysFs> fs, const Clock& clock,
                                             std::vector<PowerRail> rails, RailMeterInfo info) {
  return std::make_unique<RailMeter>(std::move(fs), clock, std::move(rails), std::move(info));
}

}  // namespace energy_detail
}  // namespace hw
}  // namespace dydnn
