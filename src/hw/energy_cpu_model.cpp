// A platform power model driven by the CPU time /proc/stat counts: the energy meter of a
// machine without a power sensor, labelled as a model.
#include "energy_internal.h"

#include <dydnn/errors.h>
#include <dydnn/hw/dvfs.h>
#include <dydnn/hw/energy.h>

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

namespace dydnn {
namespace hw {

namespace {

constexpr const char* kProcStat = "/proc/stat";

// Busy ticks (user + nice + system + irq + softirq) of `cpus` in /proc/stat text; `found`
// receives how many of them were listed.
uint64_t busy_ticks(const std::string& text, const std::set<int>& cpus, size_t& found) {
  std::istringstream lines(text);
  uint64_t busy = 0;
  found = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("cpu", 0) != 0 || line.size() < 4 || !std::isdigit(static_cast<unsigned char>(line[3]))) continue;
    std::istringstream fields(line.substr(3));
    int cpu = -1;
    // user nice system idle iowait irq softirq steal ...
    uint64_t v[7] = {0, 0, 0, 0, 0, 0, 0};
    fields >> cpu;
    for (auto& x : v) fields >> x;
    if (!fields || cpus.count(cpu) == 0) continue;
    busy += v[0] + v[1] + v[2] + v[5] + v[6];
    ++found;
  }
  return busy;
}

class CpuModelMeter : public EnergyMeter {
 public:
  CpuModelMeter(std::shared_ptr<SysFs> fs, const Clock& clock, std::string platform, PlatformDomain domain,
                double ticks_per_s)
      : fs_(std::move(fs)),
        clock_(&clock),
        platform_(std::move(platform)),
        domain_(std::move(domain)),
        cpus_(domain_.cpus.begin(), domain_.cpus.end()),
        ticks_per_s_(ticks_per_s),
        table_(domain_.frequencies_hz()),
        freq_path_("/sys/devices/system/cpu/cpufreq/" + domain_.name + "/scaling_cur_freq") {}

  std::string source() const override { return "model:" + platform_ + ":" + domain_.name; }
  std::string coverage() const override {
    return fmt::format("modelled, not measured: the busy CPU time of CPUs {} (/proc/stat, every process) x "
                       "{} uW/MHz/V^2 x V^2 x f, plus {} W static ({} power model, {}); not exclusive",
                       fmt::join(domain_.cpus, ","), domain_.coeff_uw_per_mhz_v2, domain_.static_w, platform_,
                       domain_.power_model);
  }
  double refresh_interval_s() const override { return 1.0 / ticks_per_s_; }
  bool exclusive() const override { return false; }
  bool is_model() const override { return true; }

  EnergyReading read() override {
    EnergyReading out;
    out.time_s = clock_->now_s();
    const IoResult stat = fs_->read(kProcStat);
    if (!stat.ok()) {
      out.error = source() + ": " + energy_detail::io_error(kProcStat, stat);
      return out;
    }
    size_t found = 0;
    const uint64_t ticks = busy_ticks(stat.text, cpus_, found);
    if (found == 0) {
      out.error = fmt::format("{}: {} lists none of CPUs {}", source(), kProcStat, fmt::join(domain_.cpus, ","));
      return out;
    }
    const uint64_t hz = frequency_hz();
    const double busy_w = domain_.dynamic_power_w(hz, 1.0);
    if (started_) {
      const double dt = out.time_s - last_time_s_;
      // A CPU going offline can make the sum fall: count no busy time rather than negative.
      const double busy_s = ticks >= last_ticks_ ? static_cast<double>(ticks - last_ticks_) / ticks_per_s_ : 0.0;
      // The frequency of the interval is taken as the one at its end.
      const double added = domain_.static_w * std::max(0.0, dt) + busy_w * busy_s;
      energy_j_ += added;
      out.power_w = dt > 0 ? added / dt : std::numeric_limits<double>::quiet_NaN();
    }
    started_ = true;
    last_ticks_ = ticks;
    last_time_s_ = out.time_s;
    out.ok = true;
    out.energy_j = energy_j_;
    return out;
  }

 private:
  uint64_t frequency_hz() const {
    double khz = 0;
    std::string error;
    if (energy_detail::read_number(*fs_, freq_path_, khz, error) && khz > 0)
      return snap_down(table_, static_cast<uint64_t>(std::llround(khz * 1e3)));
    return table_.back();
  }

  std::shared_ptr<SysFs> fs_;
  const Clock* clock_;
  std::string platform_;
  PlatformDomain domain_;
  std::set<int> cpus_;
  double ticks_per_s_;
  std::vector<uint64_t> table_;
  std::string freq_path_;
  bool started_ = false;
  uint64_t last_ticks_ = 0;
  double last_time_s_ = 0, energy_j_ = 0;
};

}  // namespace

OpenedMeter open_cpu_model_meter(std::shared_ptr<SysFs> fs, const Clock& clock, const std::string& platform,
                                 const PlatformDomain& domain, double ticks_per_s) {
  DYDNN_CHECK_VALUE(fs != nullptr, "hw", "open_cpu_model_meter: fs is null (valid: a SysFs, e.g. RealSysFs(\"/\"))");
  DYDNN_CHECK_VALUE(!platform.empty(), "hw", "open_cpu_model_meter: the platform name is empty");
  DYDNN_CHECK_VALUE(std::isfinite(ticks_per_s) && ticks_per_s >= 0, "hw",
                    "open_cpu_model_meter: ticks_per_s = {} (valid: > 0, or 0 for the kernel's USER_HZ)", ticks_per_s);
  OpenedMeter out;
  if (domain.cpus.empty()) {
    out.reason = fmt::format("{}:{} has no CPUs (a device domain cannot be driven by CPU time)", platform, domain.name);
    return out;
  }
  if (ticks_per_s == 0) ticks_per_s = static_cast<double>(sysconf(_SC_CLK_TCK));
  auto meter = std::make_unique<CpuModelMeter>(std::move(fs), clock, platform, domain, ticks_per_s);
  // The probe reading is the origin of the cumulative energy.
  const EnergyReading first = meter->read();
  if (!first.ok) {
    out.reason = first.error;
    return out;
  }
  out.meter = std::move(meter);
  return out;
}

}  // namespace hw
}  // namespace dydnn
