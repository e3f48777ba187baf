#pragma once
/// \file
/// Energy meters: what a stretch of work cost in joules, read from the counters and power
/// sensors Linux exposes (RAPL powercap, hwmon, the Jetson INA3221, the Odroid XU3 INA231)
/// or, where none can be read, integrated from a power model.
///
/// Every meter reads through a `SysFs` (the real `/sys`, a fake tree, a fault injector) and
/// a `Clock` (steady or virtual). A read never throws for a failure of the system: it gives
/// an `EnergyReading` with `ok == false` and the reason, so an inference loop keeps running
/// when a sensor is busy or unreadable.
///
/// Typical use:
/// \code
///   SteadyClock clock;
///   auto found = detect_energy_meter(std::make_shared<RealSysFs>(), clock, model_power);
///   std::cerr << found.report();                 // what was tried, and why not
///   EnergyReading start = found.meter->read();
///   run_inference();
///   EnergyInterval spent = energy_between(start, found.meter->read());
///   if (spent) use(spent.energy_j);
/// \endcode
///
/// Plain C++17, no LibTorch.

#include <dydnn/hw/clock.h>
#include <dydnn/hw/platform.h>
#include <dydnn/hw/sysfs.h>

#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace dydnn {
namespace hw {

/// One sample of a meter, or why it could not be taken.
struct EnergyReading {
  bool ok = false;
  /// Joules since the meter's first good reading (the one taken when it was opened).
  /// NaN when `!ok`.
  double energy_j = std::numeric_limits<double>::quiet_NaN();
  /// Watts: the sensors' value now for power meters; the average since the previous good
  /// reading for energy counters (RAPL). NaN when `!ok`, and on a counter's first reading.
  double power_w = std::numeric_limits<double>::quiet_NaN();
  /// The meter's clock when the sample was taken (set also when `!ok`).
  double time_s = 0;
  /// Why not ok, as "<path>: <strerror>" (e.g. "/sys/class/powercap/intel-rapl:0/energy_uj:
  /// Permission denied (root-only since Linux 5.10)"); empty when ok.
  std::string error;

  explicit operator bool() const { return ok; }
};

/// The energy spent between two readings of one meter.
struct EnergyInterval {
  bool ok = false;
  double energy_j = std::numeric_limits<double>::quiet_NaN();  ///< NaN when `!ok`
  double duration_s = 0;
  /// `energy_j / duration_s`; NaN when `!ok` or the interval is empty.
  double average_power_w = std::numeric_limits<double>::quiet_NaN();
  std::string error;  ///< which end failed and why; empty when ok

  explicit operator bool() const { return ok; }
};

/// The energy and average power between two readings of the same meter. When either
/// reading failed the result fails too, with the reason (no exception). Throws
/// `dydnn::ValueError` when `end` was taken before `start` (swapped arguments).
EnergyInterval energy_between(const EnergyReading& start, const EnergyReading& end);

/// A source of energy readings. Not thread-safe: read it from one thread at a time. A meter
/// keeps a reference to its clock, which must outlive it.
class EnergyMeter {
 public:
  virtual ~EnergyMeter() = default;
  /// What is read: "rapl:package-0", "ina3221:POM_5V_IN", "ina231:A15+memory+GPU+A7",
  /// "hwmon:acpi_power_meter:power1", "model:exynos5422".
  virtual std::string source() const = 0;
  /// What the reading covers and what it leaves out, in words (for reports).
  virtual std::string coverage() const = 0;
  /// How often the underlying value changes, in seconds: about 0.001 for RAPL, the
  /// sensors' update period for INA231/INA3221, 0 for a model (continuous), NaN when the
  /// hardware does not say (a generic hwmon device without `update_interval`). Sampling
  /// faster than this repeats values; integrating power sampled slower misses changes.
  virtual double refresh_interval_s() const = 0;
  /// Whether the reading covers only this process's work. No hardware meter does: a RAPL
  /// package, a board input rail or a CPU cluster rail also carries every other process,
  /// the idle cores and the rest of the board. A model meter may (see `ModelMeterOptions`).
  virtual bool exclusive() const = 0;
  /// True when the energy is modelled rather than measured.
  virtual bool is_model() const = 0;
  /// Samples the meter at the clock's current time. Power meters integrate power over the
  /// caller's sampling times (trapezoid rule), so call it at least at the start and end
  /// of what is measured, and often enough to follow the load. A failed read leaves the
  /// meter's state as it was: the next good reading integrates across the gap.
  virtual EnergyReading read() = 0;
};

/// A meter, or why none could be opened: `meter` is null exactly when `reason` is set.
/// Opening probes one reading, so a meter that is returned has read once successfully.
struct OpenedMeter {
  std::unique_ptr<EnergyMeter> meter;
  std::string reason;

  explicit operator bool() const { return meter != nullptr; }
};

/// Intel/AMD RAPL through powercap: `/sys/class/powercap/intel-rapl:N[:M]/{name,
/// energy_uj, max_energy_range_uj}`. `zones` are zone ids ("intel-rapl:0", "intel-rapl:0:2");
/// empty means every top-level zone named "package-*" (all sockets), or every top-level
/// zone where none is named so. Sub-zones (core, uncore, dram) and psys are left out by
/// default because core/uncore lie inside the package and psys contains it: adding them
/// double counts. The counters wrap at `max_energy_range_uj`; one wrap between two reads
/// is handled, so read at least once per wrap period (minutes at hundreds of watts).
/// `energy_uj` is root-only since Linux 5.10: then the reason says "Permission denied".
OpenedMeter open_rapl_meter(std::shared_ptr<SysFs> fs, const Clock& clock, std::vector<std::string> zones = {});

/// A generic hwmon device `/sys/class/hwmon/hwmonN`: its `powerK_input` (uW; else
/// `powerK_average`), or, when it has no power channel, `inK_input` (mV) x `currK_input`
/// (mA) for each K that has both. `device` is "hwmonN", or empty for the first device (in
/// numeric order) with such channels (and all `rails`), skipping `ina3221` devices (their
/// channels are nested rails: use `open_jetson_hwmon_meter`). `rails` are labels (`powerK_label`,
/// `inK_label`, `currK_label`, else "powerK"/"inK"); empty means every channel, summed.
/// The refresh interval is `update_interval` (ms) when the device has one, else NaN.
OpenedMeter open_hwmon_meter(std::shared_ptr<SysFs> fs, const Clock& clock, std::string device = {},
                             std::vector<std::string> rails = {});

/// The labels of a Jetson's board input rail, tried in order: "POM_5V_IN" (Nano),
/// "VDD_IN" (TX2, Xavier NX, Orin).
const std::vector<std::string>& jetson_input_rails();

/// A Jetson's INA3221 on older L4T (<= 32), through the IIO driver:
/// `/sys/bus/i2c/drivers/ina3221x/*/iio:device*/` with `rail_name_K` and `in_powerK_input`
/// (mW; else `in_voltageK_input` mV x `in_currentK_input` mA), channels from 0. `rails` are
/// labels; empty means the board input rail alone (`jetson_input_rails`): the other rails
/// are fed from it, so adding them double counts. The refresh interval is 6.6 ms, the
/// INA3221's power-on conversion time (3 channels x (1.1 + 1.1) ms, no averaging), since
/// the driver does not expose one.
OpenedMeter open_jetson_iio_meter(std::shared_ptr<SysFs> fs, const Clock& clock,
                                  std::vector<std::string> rails = {});

/// A Jetson's INA3221 on newer JetPack (>= 5), through the mainline hwmon driver: the
/// `/sys/class/hwmon/hwmonN` named "ina3221", with `inK_label`, `inK_input` (mV) and
/// `currK_input` (mA), channels from 1. `rails` as for `open_jetson_iio_meter` (empty: the
/// input rail alone). The refresh interval is the device's `update_interval` (ms), else 6.6 ms.
OpenedMeter open_jetson_hwmon_meter(std::shared_ptr<SysFs> fs, const Clock& clock,
                                    std::vector<std::string> rails = {});

/// The Odroid XU3's four INA231 sensors, `/sys/bus/i2c/drivers/INA231/3-00{40,41,44,45}/`:
/// writes 1 to each `enable` (accepted when the write is refused but `enable` already reads
/// 1; the sensors are left enabled, since another reader may rely on them), reads `sensor_W`
/// (W). 0x40 is the A15 cluster, 0x41 memory, 0x44 the GPU, 0x45 the A7 cluster. These are
/// separate rails, so the total is their sum; it leaves out the rest of the board (USB,
/// Ethernet, fan, eMMC). The refresh interval is the largest `update_period` (us), else
/// 263808 us. Sensors that are missing are left out of the sum and the source names those used.
OpenedMeter open_odroid_meter(std::shared_ptr<SysFs> fs, const Clock& clock);

/// How a model meter turns power samples into energy.
enum class PowerIntegration {
  /// The average of the power at the previous and the current reading, times the time
  /// between them: follows a power that moves smoothly between readings.
  Trapezoid,
  /// The power at the previous reading, held until the current one: exact for a
  /// piecewise-constant power (a simulator) when every change is followed by a reading.
  Hold,
};

/// How a model meter labels itself.
struct ModelMeterOptions {
  /// The model's name; the source reads "model:<name>". Must not be empty.
  std::string name = "power";
  /// Whether the modelled power is this process's work alone (a simulator's power of the
  /// work it runs), or the whole device's, idle and static power included (a platform
  /// model fitted to board readings: the default, which claims nothing it cannot know).
  bool exclusive = false;
  PowerIntegration integration = PowerIntegration::Trapezoid;
};

/// A meter that integrates `power_w()` (watts now, from a simulator or a platform model)
/// over `clock`. A power function that throws or returns a negative or non-finite value
/// gives a failed reading, not an exception. Throws `dydnn::ValueError` when `power_w` is
/// empty or `options.name` is empty.
std::unique_ptr<EnergyMeter> make_model_meter(const Clock& clock, std::function<double()> power_w,
                                              ModelMeterOptions options = {});

/// A platform model driven by this machine's CPU time: for a machine without a power sensor
/// (a VM, a container, a desktop without RAPL access). Energy since the first reading =
/// `domain.static_w` x elapsed time + the dynamic power of one busy core
/// (`domain.dynamic_power_w(f, 1)`) x the busy CPU time of the domain's CPUs, read from
/// `/proc/stat` (user + nice + system + irq + softirq; steal is left out: another guest ran).
/// `f` is the policy's `scaling_cur_freq` (`/sys/devices/system/cpu/cpufreq/<domain.name>/`)
/// snapped to the domain's table when it can be read, else the domain's highest frequency.
/// The busy time is cumulative, so the energy between any two readings is exact for the model
/// however far apart they are. It counts every process on those CPUs (not exclusive) and is
/// labelled a model: source "model:<platform>:<domain>". `ticks_per_s` is the kernel's
/// USER_HZ (0: `sysconf(_SC_CLK_TCK)`). The reason says why it cannot open: no `/proc/stat`,
/// none of the domain's CPUs listed there, a domain without CPUs.
///
/// Example:
/// \code
///   auto platform = Platform::builtin("generic_host");
///   auto opened = open_cpu_model_meter(std::make_shared<RealSysFs>(), clock, platform.name, platform.domains[0]);
/// \endcode
OpenedMeter open_cpu_model_meter(std::shared_ptr<SysFs> fs, const Clock& clock, const std::string& platform,
                                 const PlatformDomain& domain, double ticks_per_s = 0);

/// The meter `detect_energy_meter` chose and what it tried on the way.
struct DetectedMeter {
  /// The first meter that opened, else the fallback; null only when nothing opened and no
  /// fallback was given.
  std::unique_ptr<EnergyMeter> meter;
  /// One line per step tried, in order: "<step>: <why it was rejected>", and for the step
  /// that was taken "<step>: using <source>".
  std::vector<std::string> tried;

  /// The lines of `tried`, one per line.
  std::string report() const;
};

/// Finds the best energy meter on this machine. Steps, in order, the first that opens wins:
///  1. "rapl": `open_rapl_meter` (x86: package counters, the most precise source);
///  2. "jetson-ina3221-iio": `open_jetson_iio_meter` (older L4T);
///  3. "jetson-ina3221-hwmon": `open_jetson_hwmon_meter` (newer JetPack); both Jetson steps
///     come before generic hwmon, which would sum nested rails;
///  4. "odroid-ina231": `open_odroid_meter`;
///  5. "hwmon": `open_hwmon_meter` (the first hwmon device with a power channel);
///  6. "model": the fallback.
/// Each rejected step records why ("rapl: /sys/class/powercap/intel-rapl:0/energy_uj:
/// Permission denied (root-only since Linux 5.10)"). `fallback` may be null. Throws
/// `dydnn::ValueError` when `fs` is null.
DetectedMeter detect_energy_meter(std::shared_ptr<SysFs> fs, const Clock& clock,
                                  std::unique_ptr<EnergyMeter> fallback);

/// As above, with the fallback built from a power function (`make_model_meter`) only when
/// no hardware meter opens. An empty `model_power` means no fallback.
DetectedMeter detect_energy_meter(std::shared_ptr<SysFs> fs, const Clock& clock,
                                  std::function<double()> model_power, ModelMeterOptions options = {});

}  // namespace hw
}  // namespace dydnn
