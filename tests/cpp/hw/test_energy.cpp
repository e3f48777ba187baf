// Energy meters on fake sysfs trees: RAPL (wrap-around, EACCES), hwmon (power files, V x I),
// Jetson INA3221 (IIO and hwmon), Odroid INA231, the model meter, faults and detection.
#include "hw/fake_meter_trees.h"

#include <dydnn/errors.h>
#include <dydnn/hw/clock.h>
#include <dydnn/hw/energy.h>
#include <dydnn/hw/sysfs.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>

using namespace dydnn::hw;
using namespace fake_meters;

namespace {

constexpr int64_t kSecond = 1000000000;

std::string denied(const std::string& path) { return path + ": " + std::strerror(EACCES); }

std::shared_ptr<FaultySysFs> faulty(const TempRoot& root) {
  return std::make_shared<FaultySysFs>(std::make_shared<RealSysFs>(root.path));
}

std::shared_ptr<SysFs> real(const TempRoot& root) { return std::make_shared<RealSysFs>(root.path); }

}  // namespace

// ---- RAPL ----------------------------------------------------------------------------

TEST_CASE("RAPL accumulates energy across the counter's wrap-around", "[hw][energy]") {
  TempRoot root;
  add_rapl_zone(root.path, "intel-rapl:0", "package-0", kRaplMaxRangeUj - 1000);
  VirtualClock clock;
  auto opened = open_rapl_meter(real(root), clock);
  REQUIRE(opened);
  EnergyMeter& meter = *opened.meter;
  CHECK(meter.source() == "rapl:package-0");
  CHECK(meter.refresh_interval_s() == Approx(0.001));
  CHECK_FALSE(meter.exclusive());
  CHECK_FALSE(meter.is_model());

  const EnergyReading start = meter.read();
  REQUIRE(start.ok);
  CHECK(start.energy_j == 0);
  CHECK(std::isnan(start.power_w));  // no time has passed since the probe reading

  clock.advance(kSecond);
  set_rapl_energy(root.path, "intel-rapl:0", 500);  // wrapped: 1000 uJ to the top, then 500
  const EnergyReading wrapped = meter.read();
  REQUIRE(wrapped.ok);
  CHECK(wrapped.energy_j == Approx(1500e-6));
  CHECK(wrapped.power_w == Approx(1500e-6));
  CHECK(wrapped.time_s == Approx(1.0));

  clock.advance(2 * kSecond);
  set_rapl_energy(root.path, "intel-rapl:0", 500 + 20000000);  // 20 J in 2 s
  const EnergyReading later = meter.read();
  REQUIRE(later.ok);
  CHECK(later.energy_j == Approx(20.0015));
  CHECK(later.power_w == Approx(10.0));

  const EnergyInterval spent = energy_between(start, later);
  REQUIRE(spent.ok);
  CHECK(spent.energy_j == Approx(20.0015));
  CHECK(spent.duration_s == Approx(3.0));
  CHECK(spent.average_power_w == Approx(20.0015 / 3));
}

TEST_CASE("RAPL sums the packages and leaves sub-zones and psys out by default", "[hw][energy]") {
  TempRoot root;
  add_rapl_zone(root.path, "intel-rapl:0", "package-0", 1000000);
  add_rapl_zone(root.path, "intel-rapl:0:0", "core", 500000);
  add_rapl_zone(root.path, "intel-rapl:0:1", "dram", 100000);
  add_rapl_zone(root.path, "intel-rapl:1", "package-1", 2000000);
  add_rapl_zone(root.path, "intel-rapl:2", "psys", 9000000);
  write_fake_file(root.path, "/sys/class/powercap/intel-rapl/enabled", "1");  // the control type itself
  VirtualClock clock;
  auto opened = open_rapl_meter(real(root), clock);
  REQUIRE(opened);
  CHECK(opened.meter->source() == "rapl:package-0+package-1");
  CHECK_THAT(opened.meter->coverage(), Catch::Contains("not exclusive"));

  clock.advance(kSecond);
  set_rapl_energy(root.path, "intel-rapl:0", 3000000);   // +2 J
  set_rapl_energy(root.path, "intel-rapl:0:0", 1500000); // ignored
  set_rapl_energy(root.path, "intel-rapl:1", 5000000);   // +3 J
  set_rapl_energy(root.path, "intel-rapl:2", 99000000);  // ignored
  const EnergyReading r = opened.meter->read();
  REQUIRE(r.ok);
  CHECK(r.energy_j == Approx(5.0));
  CHECK(r.power_w == Approx(5.0));

  SECTION("explicit zones, sub-zones included") {
    auto core = open_rapl_meter(real(root), clock, {"intel-rapl:0:0"});
    REQUIRE(core);
    CHECK(core.meter->source() == "rapl:core");
    auto missing = open_rapl_meter(real(root), clock, {"intel-rapl:7"});
    CHECK_FALSE(missing);
    CHECK(missing.reason == "no /sys/class/powercap/intel-rapl:7 (zones: intel-rapl:0, intel-rapl:0:0, intel-rapl:0:1, "
                            "intel-rapl:1, intel-rapl:2)");
  }
}

TEST_CASE("RAPL energy_uj without permission leaves RAPL unavailable with the reason", "[hw][energy]") {
  TempRoot root;
  add_rapl_zone(root.path, "intel-rapl:0", "package-0", 1000);
  auto fs = faulty(root);
  fs->fail_read("/sys/class/powercap/intel-rapl:0/energy_uj", EACCES);
  VirtualClock clock;
  OpenedMeter opened;
  REQUIRE_NOTHROW(opened = open_rapl_meter(fs, clock));
  CHECK_FALSE(opened);
  CHECK(opened.meter == nullptr);
  CHECK(opened.reason == denied("/sys/class/powercap/intel-rapl:0/energy_uj") + " (root-only since Linux 5.10)");

  SECTION("no powercap at all") {
    TempRoot empty;
    auto none = open_rapl_meter(real(empty), clock);
    CHECK(none.reason == "no /sys/class/powercap/intel-rapl:* zones");
  }
}

TEST_CASE("RAPL read faults mid-run give failed readings, and the energy resumes", "[hw][energy]") {
  TempRoot root;
  add_rapl_zone(root.path, "intel-rapl:0", "package-0", 0);
  auto fs = faulty(root);
  VirtualClock clock;
  auto opened = open_rapl_meter(fs, clock);
  REQUIRE(opened);
  const std::string path = "/sys/class/powercap/intel-rapl:0/energy_uj";
  uint64_t counter = 0;
  for (int error : {EACCES, EBUSY, ENOENT}) {
    clock.advance(kSecond);
    counter += 1000000;
    set_rapl_energy(root.path, "intel-rapl:0", counter);
    fs->fail_read(path, error);
    EnergyReading r;
    REQUIRE_NOTHROW(r = opened.meter->read());
    CHECK_FALSE(r.ok);
    CHECK(std::isnan(r.energy_j));
    CHECK(r.time_s == Approx(clock.now_s()));
    CHECK_THAT(r.error, Catch::StartsWith(path + ": " + std::strerror(error)));
    fs->fail_read(path, 0);
  }
  write_fake_file(root.path, path, "garbage");
  const EnergyReading bad = opened.meter->read();
  CHECK_FALSE(bad.ok);
  CHECK(bad.error == path + ": not a counter: 'garbage'");

  clock.advance(kSecond);
  set_rapl_energy(root.path, "intel-rapl:0", counter + 1000000);
  const EnergyReading r = opened.meter->read();
  REQUIRE(r.ok);
  CHECK(r.energy_j == Approx(4.0));  // the counter kept counting while reads failed
}

// ---- hwmon ---------------------------------------------------------------------------

TEST_CASE("hwmon power files (uW) are integrated with the trapezoid rule", "[hw][energy]") {
  TempRoot root;
  add_hwmon_device(root.path, "hwmon0", "coretemp");
  write_fake_file(root.path, "/sys/class/hwmon/hwmon0/temp1_input", "45000");
  add_hwmon_device(root.path, "hwmon2", "ina226");
  set_hwmon_power(root.path, "hwmon2", 1, 2000000);
  add_hwmon_device(root.path, "hwmon10", "acpi_power_meter");  // after hwmon2 in numeric order
  write_fake_file(root.path, "/sys/class/hwmon/hwmon10/power1_average", "50000000");
  VirtualClock clock;
  auto opened = open_hwmon_meter(real(root), clock);
  REQUIRE(opened);
  EnergyMeter& meter = *opened.meter;
  CHECK(meter.source() == "hwmon:ina226:power1");
  CHECK(std::isnan(meter.refresh_interval_s()));  // the device does not say
  CHECK_FALSE(meter.exclusive());

  const EnergyReading r0 = meter.read();
  REQUIRE(r0.ok);
  CHECK(r0.power_w == Approx(2.0));
  CHECK(r0.energy_j == 0);

  clock.advance(kSecond);
  set_hwmon_power(root.path, "hwmon2", 1, 4000000);
  const EnergyReading r1 = meter.read();
  CHECK(r1.power_w == Approx(4.0));
  CHECK(r1.energy_j == Approx(3.0));  // (2 + 4) / 2 W x 1 s

  clock.advance(2 * kSecond);
  const EnergyReading r2 = meter.read();
  CHECK(r2.energy_j == Approx(11.0));  // + 4 W x 2 s
  CHECK(energy_between(r1, r2).average_power_w == Approx(4.0));

  SECTION("an explicit device, with power*_average and update_interval") {
    write_fake_file(root.path, "/sys/class/hwmon/hwmon10/update_interval", "500");
    auto acpi = open_hwmon_meter(real(root), clock, "hwmon10");
    REQUIRE(acpi);
    CHECK(acpi.meter->source() == "hwmon:acpi_power_meter:power1");
    CHECK(acpi.meter->refresh_interval_s() == Approx(0.5));
    CHECK(acpi.meter->read().power_w == Approx(50.0));
    CHECK(open_hwmon_meter(real(root), clock, "hwmon0").reason ==
          "hwmon0 (coretemp): no power*_input or in*_input x curr*_input");
    CHECK(open_hwmon_meter(real(root), clock, "hwmon9").reason == "no /sys/class/hwmon/hwmon9");
  }
}

TEST_CASE("hwmon with voltage and current only: P = V x I, rails picked by label", "[hw][energy]") {
  TempRoot root;
  add_hwmon_device(root.path, "hwmon0", "ina3221-like");
  write_fake_file(root.path, "/sys/class/hwmon/hwmon0/in0_input", "3300");  // a voltage with no current
  set_hwmon_vi(root.path, "hwmon0", 1, 5000, 400, "VBUS");                  // 2 W
  set_hwmon_vi(root.path, "hwmon0", 2, 12000, 250, "12V");                  // 3 W
  VirtualClock clock;

  auto all = open_hwmon_meter(real(root), clock);
  REQUIRE(all);
  CHECK(all.meter->source() == "hwmon:ina3221-like:VBUS+12V");
  CHECK(all.meter->read().power_w == Approx(5.0));

  auto one = open_hwmon_meter(real(root), clock, {}, {"12V"});
  REQUIRE(one);
  CHECK(one.meter->source() == "hwmon:ina3221-like:12V");
  clock.advance(kSecond / 2);
  set_hwmon_vi(root.path, "hwmon0", 2, 12000, 500);  // 6 W
  const EnergyReading r = one.meter->read();
  CHECK(r.power_w == Approx(6.0));
  CHECK(r.energy_j == Approx(0.5 * (3.0 + 6.0) * 0.5));

  auto none = open_hwmon_meter(real(root), clock, "hwmon0", {"VDD_IN"});
  CHECK_FALSE(none);
  CHECK(none.reason == "hwmon0 (ina3221-like): no rail labelled 'VDD_IN' (rails: VBUS, 12V)");
}

// ---- Jetson --------------------------------------------------------------------------

TEST_CASE("Jetson Nano IIO (mW): the total is POM_5V_IN alone, never the sum of rails", "[hw][energy]") {
  TempRoot root;
  add_jetson_nano_iio(root.path, 3000, 800, 1200);
  VirtualClock clock;
  auto opened = open_jetson_iio_meter(real(root), clock);
  REQUIRE(opened);
  EnergyMeter& meter = *opened.meter;
  CHECK(meter.source() == "ina3221:POM_5V_IN");
  CHECK(meter.refresh_interval_s() == Approx(0.0066));
  CHECK_FALSE(meter.exclusive());
  CHECK_THAT(meter.coverage(), Catch::Contains("whole board"));

  const EnergyReading r0 = meter.read();
  REQUIRE(r0.ok);
  CHECK(r0.power_w == Approx(3.0));  // not 3.0 + 0.8 + 1.2
  clock.advance(kSecond / 2);
  set_nano_power(root.path, 0, 5000);
  set_nano_power(root.path, 1, 2000);
  const EnergyReading r1 = meter.read();
  CHECK(r1.power_w == Approx(5.0));
  CHECK(r1.energy_j == Approx(0.5 * (3.0 + 5.0) * 0.5));

  SECTION("sub-rails on request") {
    auto rails = open_jetson_iio_meter(real(root), clock, {"POM_5V_GPU", "POM_5V_CPU"});
    REQUIRE(rails);
    CHECK(rails.meter->source() == "ina3221:POM_5V_GPU+POM_5V_CPU");
    CHECK(rails.meter->read().power_w == Approx(2.0 + 1.2));
    CHECK_THAT(rails.meter->coverage(), Catch::Contains("do not add them"));
  }
  SECTION("no driver") {
    TempRoot empty;
    CHECK(open_jetson_iio_meter(real(empty), clock).reason == "no /sys/bus/i2c/drivers/ina3221x");
  }
}

TEST_CASE("Jetson Xavier NX hwmon (mV x mA): the total is VDD_IN alone", "[hw][energy]") {
  TempRoot root;
  add_hwmon_device(root.path, "hwmon0", "thermal");
  add_xavier_nx_hwmon(root.path, "hwmon1", 1200, 400, 300);  // 6 W in; 2 W + 1.5 W fed from it
  VirtualClock clock;
  auto opened = open_jetson_hwmon_meter(real(root), clock);
  REQUIRE(opened);
  EnergyMeter& meter = *opened.meter;
  CHECK(meter.source() == "ina3221:VDD_IN");
  CHECK(meter.refresh_interval_s() == Approx(0.020));
  const EnergyReading r0 = meter.read();
  CHECK(r0.power_w == Approx(6.0));  // not 9.5
  clock.advance(2 * kSecond);
  set_xavier_rail(root.path, "hwmon1", 1, 5000, 2000);  // 10 W
  const EnergyReading r1 = meter.read();
  CHECK(r1.power_w == Approx(10.0));
  CHECK(r1.energy_j == Approx(16.0));

  // The generic hwmon meter leaves a Jetson INA3221 alone rather than sum its rails.
  auto generic = open_hwmon_meter(real(root), clock);
  CHECK_FALSE(generic);
  CHECK(generic.reason ==
        "hwmon0 (thermal): no power*_input or in*_input x curr*_input; hwmon1 (ina3221): skipped, a Jetson "
        "INA3221 with nested rails");
}

TEST_CASE("Jetson INA3221 without an input rail is refused rather than summed", "[hw][energy]") {
  TempRoot root;
  add_hwmon_device(root.path, "hwmon0", "ina3221");
  set_hwmon_vi(root.path, "hwmon0", 1, 5000, 1000, "VDD_GPU");
  set_hwmon_vi(root.path, "hwmon0", 2, 5000, 1000, "VDD_CPU");
  VirtualClock clock;
  auto opened = open_jetson_hwmon_meter(real(root), clock);
  CHECK_FALSE(opened);
  CHECK_THAT(opened.reason, Catch::StartsWith("no input rail (POM_5V_IN or VDD_IN) among: VDD_GPU, VDD_CPU"));
  auto explicit_rails = open_jetson_hwmon_meter(real(root), clock, {"VDD_GPU"});
  REQUIRE(explicit_rails);
  CHECK(explicit_rails.meter->read().power_w == Approx(5.0));
}

// ---- Odroid XU3 ----------------------------------------------------------------------

TEST_CASE("Odroid XU3 INA231: enable written, sensor_W summed over the four rails", "[hw][energy]") {
  TempRoot root;
  add_odroid_xu3(root.path, 1.5, 0.25, 0.5, 0.125);
  write_fake_file(root.path, odroid_dir("0044") + "/update_period", "300000");
  auto fs = faulty(root);
  VirtualClock clock;
  auto opened = open_odroid_meter(fs, clock);
  REQUIRE(opened);
  EnergyMeter& meter = *opened.meter;

  REQUIRE(fs->writes().size() == 4);
  for (const char* address : {"0040", "0041", "0044", "0045"}) {
    CHECK(fs->read(odroid_dir(address) + "/enable").text == "1");
    CHECK(std::count(fs->writes().begin(), fs->writes().end(),
                     std::make_pair(odroid_dir(address) + "/enable", std::string("1"))) == 1);
  }
  CHECK(meter.source() == "ina231:A15+memory+GPU+A7");
  CHECK(meter.refresh_interval_s() == Approx(0.3));  // the slowest sensor's update_period
  CHECK_FALSE(meter.exclusive());
  CHECK_THAT(meter.coverage(), Catch::Contains("separate rails"));

  const EnergyReading r0 = meter.read();
  CHECK(r0.power_w == Approx(2.375));
  clock.advance(263808000);  // one update period
  set_odroid_power(root.path, "0040", 3.5);
  const EnergyReading r1 = meter.read();
  CHECK(r1.power_w == Approx(4.375));
  CHECK(r1.energy_j == Approx(0.5 * (2.375 + 4.375) * 0.263808));

  SECTION("default update period") {
    TempRoot plain;
    add_odroid_xu3(plain.path, 1, 1, 1, 1, 263808);
    auto m = open_odroid_meter(real(plain), clock);
    REQUIRE(m);
    CHECK(m.meter->refresh_interval_s() == Approx(0.263808));
  }
}

TEST_CASE("Odroid INA231: a refused enable is a reason unless the sensor is on already", "[hw][energy]") {
  TempRoot root;
  add_odroid_xu3(root.path, 1, 1, 1, 1);
  auto fs = faulty(root);
  fs->fail_write(odroid_dir("0040") + "/enable", EACCES);
  VirtualClock clock;
  auto refused = open_odroid_meter(fs, clock);
  CHECK_FALSE(refused);
  CHECK(refused.reason == denied(odroid_dir("0040") + "/enable"));

  write_fake_file(root.path, odroid_dir("0040") + "/enable", "1");
  auto on_already = open_odroid_meter(fs, clock);
  REQUIRE(on_already);
  CHECK(on_already.meter->read().power_w == Approx(4.0));

  TempRoot empty;
  CHECK(open_odroid_meter(real(empty), clock).reason == "no /sys/bus/i2c/drivers/INA231");
}

// ---- faults --------------------------------------------------------------------------

TEST_CASE("Sensor read faults give failed readings with the reason, never exceptions", "[hw][energy]") {
  TempRoot root;
  add_hwmon_device(root.path, "hwmon0", "ina226");
  set_hwmon_power(root.path, "hwmon0", 1, 1000000);
  add_xavier_nx_hwmon(root.path, "hwmon1", 1000, 100, 100);
  add_jetson_nano_iio(root.path, 2000, 500, 500);
  add_odroid_xu3(root.path, 1, 1, 1, 1);
  auto fs = faulty(root);
  VirtualClock clock;

  struct Case {
    const char* what;
    OpenedMeter opened;
    std::string path;  // a file the meter reads
  };
  Case cases[] = {
      {"hwmon", open_hwmon_meter(fs, clock), "/sys/class/hwmon/hwmon0/power1_input"},
      {"jetson hwmon", open_jetson_hwmon_meter(fs, clock), "/sys/class/hwmon/hwmon1/curr1_input"},
      {"jetson iio", open_jetson_iio_meter(fs, clock), std::string(kNanoIio) + "/in_power0_input"},
      {"odroid", open_odroid_meter(fs, clock), odroid_dir("0045") + "/sensor_W"},
  };
  for (auto& c : cases) {
    INFO(c.what);
    REQUIRE(c.opened);
    EnergyMeter& meter = *c.opened.meter;
    const EnergyReading before = meter.read();
    REQUIRE(before.ok);
    for (int error : {EACCES, EBUSY, ENOENT}) {
      fs->fail_read(c.path, error);
      clock.advance(kSecond);
      EnergyReading r;
      REQUIRE_NOTHROW(r = meter.read());
      CHECK_FALSE(r.ok);
      CHECK(std::isnan(r.energy_j));
      CHECK(std::isnan(r.power_w));
      CHECK(r.error == c.path + ": " + std::strerror(error));
      const EnergyInterval failed = energy_between(before, r);
      CHECK_FALSE(failed.ok);
      CHECK(failed.error == "end reading failed: " + r.error);
      fs->fail_read(c.path, 0);
    }
    clock.advance(kSecond);
    // The power held steady: the next good reading integrates across the 4 s gap.
    const EnergyReading after = meter.read();
    REQUIRE(after.ok);
    CHECK(energy_between(before, after).energy_j == Approx(before.power_w * 4.0));
  }

  SECTION("a file that is not a number") {
    write_fake_file(root.path, "/sys/class/hwmon/hwmon0/power1_input", "n/a");
    const EnergyReading r = cases[0].opened.meter->read();
    CHECK_FALSE(r.ok);
    CHECK(r.error == "/sys/class/hwmon/hwmon0/power1_input: not a number: 'n/a'");
  }
  SECTION("a probe that fails is a reason to open nothing") {
    fs->fail_read(std::string(kNanoIio) + "/in_power0_input", EBUSY);
    auto busy = open_jetson_iio_meter(fs, clock);
    CHECK_FALSE(busy);
    CHECK(busy.reason == std::string(kNanoIio) + "/in_power0_input: " + std::strerror(EBUSY));
  }
}

// ---- model ---------------------------------------------------------------------------

TEST_CASE("The model meter integrates a power function over the clock, labelled as a model", "[hw][energy]") {
  VirtualClock clock;
  double watts = 2.0;
  int calls = 0;
  auto power = [&] {
    ++calls;
    return watts;
  };

  SECTION("trapezoid, not exclusive by default") {
    ModelMeterOptions options;
    options.name = "exynos5422";
    auto meter = make_model_meter(clock, power, options);
    CHECK(meter->source() == "model:exynos5422");
    CHECK(meter->is_model());
    CHECK_FALSE(meter->exclusive());
    CHECK(meter->refresh_interval_s() == 0);
    const EnergyReading r0 = meter->read();
    clock.advance(kSecond);
    watts = 4.0;
    const EnergyReading r1 = meter->read();
    CHECK(r1.energy_j == Approx(3.0));
    CHECK(energy_between(r0, r1).energy_j == Approx(3.0));
  }
  SECTION("hold, exclusive") {
    ModelMeterOptions options;
    options.name = "sim";
    options.exclusive = true;
    options.integration = PowerIntegration::Hold;
    auto meter = make_model_meter(clock, power, options);
    CHECK(meter->exclusive());
    clock.advance(kSecond);
    watts = 4.0;  // the simulator changed its configuration at t = 1 s, then reads
    CHECK(meter->read().energy_j == Approx(2.0));
    clock.advance(kSecond);
    CHECK(meter->read().energy_j == Approx(6.0));
  }
  SECTION("a power function that fails gives failed readings") {
    auto meter = make_model_meter(clock, power);
    watts = -1;
    EnergyReading r = meter->read();
    CHECK_FALSE(r.ok);
    CHECK_THAT(r.error, Catch::Contains("valid: finite, >= 0"));
    watts = std::nan("");
    CHECK_FALSE(meter->read().ok);
    int throwing_calls = 0;
    auto throwing = make_model_meter(clock, [&]() -> double {
      if (throwing_calls++ > 0) throw std::runtime_error("simulator stopped");
      return 1.0;
    });
    REQUIRE_NOTHROW(r = throwing->read());
    CHECK_FALSE(r.ok);
    CHECK(r.error == "model:power: the power function threw: simulator stopped");
  }
  SECTION("bad arguments are errors of the caller") {
    CHECK_THROWS_AS(make_model_meter(clock, std::function<double()>()), dydnn::ValueError);
    ModelMeterOptions unnamed;
    unnamed.name = "";
    CHECK_THROWS_WITH(make_model_meter(clock, power, unnamed), Catch::Contains("options.name is empty"));
  }
}

TEST_CASE("The CPU-time model meter: static power plus busy time from /proc/stat at C V^2 f", "[hw][energy]") {
  TempRoot root;
  VirtualClock clock;
  // generic_host: CPUs 0-1, C = 1000 uW/MHz/V^2, 2 W static; 2 W per busy core at 2 GHz (1.0 V),
  // 4.32 W at 3 GHz (1.2 V). USER_HZ 100 here.
  const auto platform = Platform::builtin("generic_host");
  const auto& domain = platform.domains[0];
  const auto stat = [&](uint64_t user0, uint64_t system1, uint64_t steal1) {
    // cpu  user nice system idle iowait irq softirq steal
    write_fake_file(root.path, "/proc/stat",
                    fmt::format("cpu  1 1 1 1 1 1 1 1 0 0\ncpu0 {} 0 0 500 0 0 0 0 0 0\n"
                                "cpu1 0 0 {} 500 0 0 0 {} 0 0\ncpu2 900 0 0 0 0 0 0 0 0 0\nintr 5\n",
                                user0, system1, steal1));
  };
  stat(100, 0, 0);

  SECTION("at f_max without cpufreq") {
    auto opened = open_cpu_model_meter(real(root), clock, platform.name, domain, 100);
    REQUIRE(opened);
    auto& meter = *opened.meter;
    CHECK(meter.source() == "model:generic_host:policy0");
    CHECK(meter.is_model());
    CHECK_FALSE(meter.exclusive());
    CHECK(meter.refresh_interval_s() == Approx(0.01));
    CHECK_THAT(meter.coverage(), Catch::Contains("CPUs 0,1") && Catch::Contains("not exclusive"));
    // One second: CPU 0 busy 0.5 s, CPU 1 0.25 s (+ 0.3 s stolen, not counted); CPU 2 is not in the domain.
    clock.advance(kSecond);
    stat(150, 25, 30);
    const EnergyReading r = meter.read();
    REQUIRE(r.ok);
    CHECK(r.energy_j == Approx(2.0 + 4.32 * 0.75));  // 3 GHz = f_max, 1.2 V
    CHECK(r.power_w == Approx(2.0 + 4.32 * 0.75));
  }
  SECTION("at scaling_cur_freq, snapped to the table") {
    write_fake_file(root.path, "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "2000123\n");
    auto opened = open_cpu_model_meter(real(root), clock, platform.name, domain, 100);
    REQUIRE(opened);
    clock.advance(2 * kSecond);
    stat(200, 100, 0);  // 1 s + 1 s busy
    CHECK(opened.meter->read().energy_j == Approx(2.0 * 2 + 2.0 * 2));
  }
  SECTION("no /proc/stat, or none of the domain's CPUs: a reason, not a meter") {
    TempRoot empty;
    auto none = open_cpu_model_meter(real(empty), clock, platform.name, domain, 100);
    CHECK_FALSE(none);
    CHECK_THAT(none.reason, Catch::Contains("/proc/stat"));
    auto other = domain;
    other.cpus = {6, 7};
    auto missing = open_cpu_model_meter(real(root), clock, platform.name, other, 100);
    CHECK_FALSE(missing);
    CHECK_THAT(missing.reason, Catch::Contains("lists none of CPUs 6,7"));
    CHECK_THROWS_WITH(open_cpu_model_meter(real(root), clock, platform.name, domain, -1),
                      Catch::Contains("ticks_per_s = -1"));
  }
  SECTION("this machine's /proc/stat opens (a real reading, energy never falls)") {
    SteadyClock steady;
    auto opened = open_cpu_model_meter(std::make_shared<RealSysFs>("/"), steady, platform.name, domain);
    if (opened) {
      const EnergyReading a = opened.meter->read();
      const EnergyReading b = opened.meter->read();
      CHECK(a.ok);
      CHECK(b.energy_j >= a.energy_j);
    }
  }
}

TEST_CASE("energy_between refuses swapped readings and reports failed ones", "[hw][energy]") {
  EnergyReading a, b;
  a.ok = b.ok = true;
  a.time_s = 1;
  a.energy_j = 10;
  b.time_s = 3;
  b.energy_j = 14;
  const EnergyInterval i = energy_between(a, b);
  CHECK(i.ok);
  CHECK(i.energy_j == Approx(4));
  CHECK(i.duration_s == Approx(2));
  CHECK(i.average_power_w == Approx(2));
  CHECK(std::isnan(energy_between(a, a).average_power_w));
  CHECK_THROWS_WITH(energy_between(b, a), Catch::Contains("end reading at 1 s precedes start reading at 3 s"));
  a.ok = false;
  a.error = "x: Permission denied";
  const EnergyInterval failed = energy_between(a, b);
  CHECK_FALSE(failed.ok);
  CHECK(failed.error == "start reading failed: x: Permission denied");
}

// ---- detection -----------------------------------------------------------------------

TEST_CASE("Detection falls back to the model and says why each source was rejected", "[hw][energy]") {
  TempRoot root;
  VirtualClock clock;
  ModelMeterOptions options;
  options.name = "exynos5422";
  const DetectedMeter found = detect_energy_meter(real(root), clock, [] { return 3.0; }, options);
  REQUIRE(found.meter);
  CHECK(found.meter->source() == "model:exynos5422");
  CHECK(found.meter->is_model());
  CHECK(found.tried == std::vector<std::string>{
                           "rapl: no /sys/class/powercap/intel-rapl:* zones",
                           "jetson-ina3221-iio: no /sys/bus/i2c/drivers/ina3221x",
                           "jetson-ina3221-hwmon: no /sys/class/hwmon/hwmon* device named ina3221",
                           "odroid-ina231: no /sys/bus/i2c/drivers/INA231",
                           "hwmon: no /sys/class/hwmon/hwmon* devices",
                           "model: using model:exynos5422",
                       });
  CHECK(found.report() == "rapl: no /sys/class/powercap/intel-rapl:* zones\n"
                          "jetson-ina3221-iio: no /sys/bus/i2c/drivers/ina3221x\n"
                          "jetson-ina3221-hwmon: no /sys/class/hwmon/hwmon* device named ina3221\n"
                          "odroid-ina231: no /sys/bus/i2c/drivers/INA231\n"
                          "hwmon: no /sys/class/hwmon/hwmon* devices\n"
                          "model: using model:exynos5422\n");

  SECTION("no fallback: no meter, and the reasons") {
    const DetectedMeter nothing = detect_energy_meter(real(root), clock, std::function<double()>());
    CHECK(nothing.meter == nullptr);
    CHECK(nothing.tried.back() == "model: no fallback given");
  }
  SECTION("a fallback meter") {
    const DetectedMeter given = detect_energy_meter(real(root), clock, make_model_meter(clock, [] { return 1.0; }));
    REQUIRE(given.meter);
    CHECK(given.tried.back() == "model: using model:power");
  }
  SECTION("a null file system is the caller's error") {
    CHECK_THROWS_AS(detect_energy_meter(nullptr, clock, std::unique_ptr<EnergyMeter>()), dydnn::ValueError);
  }
}

TEST_CASE("Detection order: RAPL, Jetson IIO, Jetson hwmon, Odroid, hwmon", "[hw][energy]") {
  VirtualClock clock;
  int model_calls = 0;
  auto model = [&] {
    ++model_calls;
    return 1.0;
  };

  SECTION("RAPL refused (EACCES), a Xavier NX hwmon used, the model never built") {
    TempRoot root;
    add_rapl_zone(root.path, "intel-rapl:0", "package-0", 1000);
    add_hwmon_device(root.path, "hwmon0", "thermal");
    add_xavier_nx_hwmon(root.path, "hwmon1", 1000, 200, 200);
    auto fs = faulty(root);
    fs->fail_read("/sys/class/powercap/intel-rapl:0/energy_uj", EACCES);
    const DetectedMeter found = detect_energy_meter(fs, clock, model);
    REQUIRE(found.meter);
    CHECK(found.meter->source() == "ina3221:VDD_IN");
    CHECK(found.tried == std::vector<std::string>{
                             "rapl: /sys/class/powercap/intel-rapl:0/energy_uj: Permission denied (root-only since "
                             "Linux 5.10)",
                             "jetson-ina3221-iio: no /sys/bus/i2c/drivers/ina3221x",
                             "jetson-ina3221-hwmon: using ina3221:VDD_IN",
                         });
    CHECK(model_calls == 0);
  }
  SECTION("RAPL readable comes first") {
    TempRoot root;
    add_rapl_zone(root.path, "intel-rapl:0", "package-0", 1000);
    add_hwmon_device(root.path, "hwmon0", "ina226");
    set_hwmon_power(root.path, "hwmon0", 1, 1000000);
    const DetectedMeter found = detect_energy_meter(real(root), clock, model);
    REQUIRE(found.meter);
    CHECK(found.meter->source() == "rapl:package-0");
    CHECK(found.tried == std::vector<std::string>{"rapl: using rapl:package-0"});
  }
  SECTION("Jetson IIO before the Odroid sensors") {
    TempRoot root;
    add_jetson_nano_iio(root.path, 3000, 800, 1200);
    add_odroid_xu3(root.path, 1, 1, 1, 1);
    const DetectedMeter found = detect_energy_meter(real(root), clock, model);
    REQUIRE(found.meter);
    CHECK(found.meter->source() == "ina3221:POM_5V_IN");
    CHECK(found.tried.size() == 2);
  }
  SECTION("Odroid before generic hwmon") {
    TempRoot root;
    add_odroid_xu3(root.path, 1, 1, 1, 1);
    add_hwmon_device(root.path, "hwmon0", "ina226");
    set_hwmon_power(root.path, "hwmon0", 1, 1000000);
    const DetectedMeter found = detect_energy_meter(real(root), clock, model);
    REQUIRE(found.meter);
    CHECK(found.meter->source() == "ina231:A15+memory+GPU+A7");
    CHECK(found.tried.back() == "odroid-ina231: using ina231:A15+memory+GPU+A7");
  }
  SECTION("generic hwmon last among the sensors; a Jetson INA3221 without an input rail is not summed") {
    TempRoot root;
    add_hwmon_device(root.path, "hwmon0", "ina3221");
    set_hwmon_vi(root.path, "hwmon0", 1, 5000, 1000, "VDD_GPU");
    add_hwmon_device(root.path, "hwmon1", "ina226");
    set_hwmon_power(root.path, "hwmon1", 1, 1000000);
    const DetectedMeter found = detect_energy_meter(real(root), clock, model);
    REQUIRE(found.meter);
    CHECK(found.meter->source() == "hwmon:ina226:power1");
    REQUIRE(found.tried.size() == 5);
    CHECK_THAT(found.tried[2], Catch::StartsWith("jetson-ina3221-hwmon: no input rail (POM_5V_IN or VDD_IN) among: "
                                                 "VDD_GPU"));
    CHECK(found.tried[4] == "hwmon: using hwmon:ina226:power1");
  }
}
