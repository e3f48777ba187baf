#pragma once
// Builders for fake power-sensor trees (RAPL powercap, hwmon, Jetson INA3221, Odroid INA231)
// in a temporary directory, laid out as platforms.md describes the real ones. Rewrite a
// value with the same builder (or a set_* helper) to simulate time passing.

#include <dydnn/hw/sysfs.h>

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

namespace fake_meters {

using dydnn::hw::write_fake_file;

/// A fresh temporary directory per instance, removed with it.
struct TempRoot {
  TempRoot() {
    static std::atomic<int> counter{0};
    path = (std::filesystem::temp_directory_path() /
            ("dydnn_energy_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
               .string();
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempRoot() {
    std::error_code ec;  // a destructor must not throw
    std::filesystem::remove_all(path, ec);
  }
  TempRoot(const TempRoot&) = delete;
  TempRoot& operator=(const TempRoot&) = delete;
  std::string path;
};

// ---- RAPL powercap -------------------------------------------------------------------

/// A real package-0 range (Skylake client): about 262 kJ.
constexpr uint64_t kRaplMaxRangeUj = 262143328850ULL;

inline std::string rapl_dir(const std::string& zone) { return "/sys/class/powercap/" + zone; }

/// `/sys/class/powercap/<zone>/{name, energy_uj, max_energy_range_uj}`; zone is
/// "intel-rapl:N" or a sub-zone "intel-rapl:N:M".
inline void add_rapl_zone(const std::string& root, const std::string& zone, const std::string& name,
                          uint64_t energy_uj, uint64_t max_range_uj = kRaplMaxRangeUj) {
  write_fake_file(root, rapl_dir(zone) + "/name", name);
  write_fake_file(root, rapl_dir(zone) + "/energy_uj", std::to_string(energy_uj));
  write_fake_file(root, rapl_dir(zone) + "/max_energy_range_uj", std::to_string(max_range_uj));
  write_fake_file(root, rapl_dir(zone) + "/enabled", "1");
}

inline void set_rapl_energy(const std::string& root, const std::string& zone, uint64_t energy_uj) {
  write_fake_file(root, rapl_dir(zone) + "/energy_uj", std::to_string(energy_uj));
}

// ---- hwmon ---------------------------------------------------------------------------

inline std::string hwmon_dir(const std::string& device) { return "/sys/class/hwmon/" + device; }

/// A hwmon device with only a name (add channels with the helpers below).
inline void add_hwmon_device(const std::string& root, const std::string& device, const std::string& name) {
  write_fake_file(root, hwmon_dir(device) + "/name", name);
}

/// `powerK_input` in uW (and `powerK_label` when a label is given).
inline void set_hwmon_power(const std::string& root, const std::string& device, int k, long long microwatts,
                            const std::string& label = {}) {
  const std::string p = hwmon_dir(device) + "/power" + std::to_string(k);
  write_fake_file(root, p + "_input", std::to_string(microwatts));
  if (!label.empty()) write_fake_file(root, p + "_label", label);
}

/// `inK_input` (mV) and `currK_input` (mA), and `inK_label` when a label is given.
inline void set_hwmon_vi(const std::string& root, const std::string& device, int k, long long millivolts,
                         long long milliamps, const std::string& label = {}) {
  const std::string dir = hwmon_dir(device);
  write_fake_file(root, dir + "/in" + std::to_string(k) + "_input", std::to_string(millivolts));
  write_fake_file(root, dir + "/curr" + std::to_string(k) + "_input", std::to_string(milliamps));
  if (!label.empty()) write_fake_file(root, dir + "/in" + std::to_string(k) + "_label", label);
}

// ---- Jetson Nano: INA3221 through the L4T IIO driver -----------------------------------

constexpr const char* kNanoIio = "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0";

/// Channel k's power in mW.
inline void set_nano_power(const std::string& root, int k, long long milliwatts) {
  write_fake_file(root, std::string(kNanoIio) + "/in_power" + std::to_string(k) + "_input", std::to_string(milliwatts));
}

/// `rail_name_0..2` = POM_5V_IN, POM_5V_GPU, POM_5V_CPU with their powers (mW), voltages
/// and currents, plus the driver directory's other entries.
inline void add_jetson_nano_iio(const std::string& root, long long in_mw, long long gpu_mw, long long cpu_mw) {
  const std::string dir = kNanoIio;
  const char* names[] = {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"};
  const long long mw[] = {in_mw, gpu_mw, cpu_mw};
  for (int k = 0; k < 3; ++k) {
    write_fake_file(root, dir + "/rail_name_" + std::to_string(k), names[k]);
    set_nano_power(root, k, mw[k]);
    write_fake_file(root, dir + "/in_voltage" + std::to_string(k) + "_input", "5000");
    write_fake_file(root, dir + "/in_current" + std::to_string(k) + "_input", std::to_string(mw[k] / 5));
  }
  write_fake_file(root, dir + "/running_mode", "1");
  write_fake_file(root, "/sys/bus/i2c/drivers/ina3221x/uevent", "");
}

// ---- Jetson Xavier NX: INA3221 through the mainline hwmon driver -----------------------

/// Channel k (1..3) of a Xavier NX's ina3221 hwmon device.
inline void set_xavier_rail(const std::string& root, const std::string& device, int k, long long millivolts,
                            long long milliamps) {
  set_hwmon_vi(root, device, k, millivolts, milliamps);
}

/// An `ina3221` hwmon device with in1..3 labelled VDD_IN, VDD_CPU_GPU_CV, VDD_SOC (given
/// powers as mA at 5 V), the shunt voltages in4..6 (no current: not rails) and
/// `update_interval` (ms).
inline void add_xavier_nx_hwmon(const std::string& root, const std::string& device, long long in_ma,
                                long long cpu_gpu_cv_ma, long long soc_ma, int update_interval_ms = 20) {
  add_hwmon_device(root, device, "ina3221");
  set_hwmon_vi(root, device, 1, 5000, in_ma, "VDD_IN");
  set_hwmon_vi(root, device, 2, 5000, cpu_gpu_cv_ma, "VDD_CPU_GPU_CV");
  set_hwmon_vi(root, device, 3, 5000, soc_ma, "VDD_SOC");
  for (int k = 4; k <= 6; ++k) write_fake_file(root, hwmon_dir(device) + "/in" + std::to_string(k) + "_input", "12");
  write_fake_file(root, hwmon_dir(device) + "/update_interval", std::to_string(update_interval_ms));
}

// ---- Odroid XU3: four INA231 sensors ---------------------------------------------------

/// "0040" (A15), "0041" (memory), "0044" (GPU), "0045" (A7).
inline std::string odroid_dir(const std::string& address) { return "/sys/bus/i2c/drivers/INA231/3-" + address; }

inline void set_odroid_power(const std::string& root, const std::string& address, double watts) {
  write_fake_file(root, odroid_dir(address) + "/sensor_W", std::to_string(watts));
}

/// The four sensors with `enable` = `enabled`, `sensor_W`, `sensor_V`, `sensor_A` and
/// `update_period` (us), plus the driver directory's other entries.
inline void add_odroid_xu3(const std::string& root, double a15_w, double memory_w, double gpu_w, double a7_w,
                           long update_period_us = 263808, const std::string& enabled = "0") {
  const char* addresses[] = {"0040", "0041", "0044", "0045"};
  const double watts[] = {a15_w, memory_w, gpu_w, a7_w};
  for (int k = 0; k < 4; ++k) {
    const std::string dir = odroid_dir(addresses[k]);
    write_fake_file(root, dir + "/enable", enabled);
    set_odroid_power(root, addresses[k], watts[k]);
    write_fake_file(root, dir + "/sensor_V", "1.000000");
    write_fake_file(root, dir + "/sensor_A", std::to_string(watts[k]));
    write_fake_file(root, dir + "/update_period", std::to_string(update_period_us));
  }
  write_fake_file(root, "/sys/bus/i2c/drivers/INA231/bind", "");
  write_fake_file(root, "/sys/bus/i2c/drivers/INA231/uevent", "");
}

}  // namespace fake_meters
