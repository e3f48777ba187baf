// The model-based meter: integrates a power function (a simulator's or a platform model's
// watts) over a clock, labelled as modelled.
#include "energy_internal.h"

#include <dydnn/errors.h>
#include <dydnn/hw/energy.h>

#include <cmath>
#include <exception>

namespace dydnn {
namespace hw {

namespace {

class ModelMeter : public EnergyMeter {
 public:
  ModelMeter(const Clock& clock, std::function<double()> power_w, ModelMeterOptions options)
      : clock_(&clock), power_w_(std::move(power_w)), options_(std::move(options)) {}

  std::string source() const override { return "model:" + options_.name; }
  std::string coverage() const override {
    return options_.exclusive ? "modelled power of this process's work (" + options_.name + "), not measured"
                              : "modelled power of the device (" + options_.name +
                                    "), idle and static power included, not measured (not exclusive)";
  }
  double refresh_interval_s() const override { return 0; }
  bool exclusive() const override { return options_.exclusive; }
  bool is_model() const override { return true; }

  EnergyReading read() override {
    EnergyReading out;
    out.time_s = clock_->now_s();
    double watts = 0;
    // The power function is the caller's code: its failure is reported, not propagated,
    // like a sensor's.
    try {
      watts = power_w_();
    } catch (const std::exception& e) {
      out.error = source() + ": the power function threw: " + e.what();
      return out;
    } catch (...) {
      out.error = source() + ": the power function threw";
      return out;
    }
    if (!std::isfinite(watts) || watts < 0) {
      out.error = source() + ": the power function returned " + std::to_string(watts) + " W (valid: finite, >= 0)";
      return out;
    }
    out.ok = true;
    out.energy_j = energy_.add(out.time_s, watts, options_.integration == PowerIntegration::Hold);
    out.power_w = watts;
    return out;
  }

 private:
  const Clock* clock_;
  std::function<double()> power_w_;
  ModelMeterOptions options_;
  energy_detail::PowerIntegrator energy_;
};

}  // namespace

std::unique_ptr<EnergyMeter> make_model_meter(const Clock& clock, std::function<double()> power_w,
                                              ModelMeterOptions options) {
  DYDNN_CHECK_VALUE(static_cast<bool>(power_w), "hw", "make_model_meter: power_w is empty (valid: a function giving watts)");
  DYDNN_CHECK_VALUE(!options.name.empty(), "hw", "make_model_meter: options.name is empty (valid: a model name such as "
                                                 "'exynos5422')");
  auto meter = std::make_unique<ModelMeter>(clock, std::move(power_w), std::move(options));
  // The first reading is the origin of the cumulative energy, as for the hardware meters.
  meter->read();
  return meter;
}

}  // namespace hw
}  // namespace dydnn
