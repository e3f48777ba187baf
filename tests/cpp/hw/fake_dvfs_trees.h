#pragma once
// Fake cpufreq and devfreq trees for the DVFS tests, laid out as the kernel lays them out
// (policy directories, cpuN/cpufreq links, devfreq class links into /sys/devices, trailing
// spaces where cpufreq prints them), built in a temporary directory with write_fake_file.
//
// Frequency tables, CPU sets and latencies of the boards come from ../shared/platforms.md;
// values it does not give (governor lists, the Xavier NX tables, laptop frequencies) are
// illustrative and marked so. Being regular files, the fakes do not react to writes: the
// current frequency stays put, and devfreq's userspace/set_freq exists even before the
// userspace governor runs (the kernel creates it on the switch).

#include <dydnn/hw/sysfs.h>

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace dydnn {
namespace hw {
namespace fake {

/// A fresh temporary directory for one fake tree, removed on destruction.
class TempRoot {
 public:
  TempRoot() {
    static std::atomic<int> counter{0};
    path = (std::filesystem::temp_directory_path() /
            ("dydnn_dvfs_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
               .string();
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempRoot() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempRoot(const TempRoot&) = delete;
  TempRoot& operator=(const TempRoot&) = delete;

  std::string path;
};

/// One cpufreq policy, as `/sys/devices/system/cpu/cpufreq/policyN` shows it.
struct CpufreqPolicy {
  int number = 0;
  std::vector<int> cpus;
  std::vector<uint64_t> table_khz;  ///< empty: no scaling_available_frequencies (intel_pstate)
  uint64_t min_khz = 0, max_khz = 0;
  std::string governors = "conservative ondemand userspace powersave performance schedutil";
  std::string governor = "schedutil";
  std::string driver;           ///< scaling_driver; empty: no file
  int64_t latency_ns = -1;      ///< cpuinfo_transition_latency; negative: no file
  bool setspeed = true;         ///< whether scaling_setspeed exists
  bool descending = false;      ///< print the table highest first, as some drivers do
};

/// One devfreq device: its directory under the parent device, and the class link to it.
struct DevfreqDevice {
  std::string name;        ///< "57000000.gpu"
  std::string device_dir;  ///< the parent device, "/sys/devices/57000000.gpu"
  std::vector<uint64_t> table_hz;
  std::string governors = "userspace performance simple_ondemand";
  std::string governor = "simple_ondemand";
  std::string uevent;  ///< the parent device's uevent; empty: no file
};

inline std::string spaced(const std::vector<uint64_t>& values, bool trailing_space) {
  std::string out;
  for (const auto v : values) out += std::to_string(v) + " ";
  if (!trailing_space && !out.empty()) out.pop_back();
  return out;
}

inline std::vector<uint64_t> steps(uint64_t first, uint64_t last, uint64_t step) {
  std::vector<uint64_t> out;
  for (uint64_t v = first; v <= last; v += step) out.push_back(v);
  return out;
}

inline void write_cpufreq_policy(const std::string& root, const CpufreqPolicy& p) {
  const std::string cpu_dir = "/sys/devices/system/cpu";
  const std::string dir = cpu_dir + "/cpufreq/policy" + std::to_string(p.number);
  std::string cpus;
  for (const int c : p.cpus) cpus += std::to_string(c) + " ";  // cpufreq prints a trailing space
  write_fake_file(root, dir + "/affected_cpus", cpus);
  write_fake_file(root, dir + "/related_cpus", cpus);
  write_fake_file(root, dir + "/cpuinfo_min_freq", std::to_string(p.min_khz));
  write_fake_file(root, dir + "/cpuinfo_max_freq", std::to_string(p.max_khz));
  write_fake_file(root, dir + "/cpuinfo_cur_freq", std::to_string(p.max_khz));
  if (p.latency_ns >= 0) write_fake_file(root, dir + "/cpuinfo_transition_latency", std::to_string(p.latency_ns));
  if (!p.table_khz.empty()) {
    std::vector<uint64_t> table = p.table_khz;
    if (p.descending) table.assign(p.table_khz.rbegin(), p.table_khz.rend());
    write_fake_file(root, dir + "/scaling_available_frequencies", spaced(table, true));
  }
  write_fake_file(root, dir + "/scaling_available_governors", p.governors + " ");
  if (!p.driver.empty()) write_fake_file(root, dir + "/scaling_driver", p.driver);
  write_fake_file(root, dir + "/scaling_governor", p.governor);
  write_fake_file(root, dir + "/scaling_min_freq", std::to_string(p.min_khz));
  write_fake_file(root, dir + "/scaling_max_freq", std::to_string(p.max_khz));
  write_fake_file(root, dir + "/scaling_cur_freq", std::to_string(p.max_khz));
  if (p.setspeed)
    write_fake_file(root, dir + "/scaling_setspeed", p.governor == "userspace" ? std::to_string(p.max_khz) : "<unsupported>");
  for (const int c : p.cpus) {
    const std::string link = RealSysFs(root).resolve(cpu_dir + "/cpu" + std::to_string(c) + "/cpufreq");
    std::filesystem::create_directories(std::filesystem::path(link).parent_path());
    std::filesystem::create_directory_symlink("../cpufreq/policy" + std::to_string(p.number), link);
  }
}

inline void write_devfreq_device(const std::string& root, const DevfreqDevice& d) {
  // /sys/devices/X/devfreq/NAME holds the files; /sys/class/devfreq/NAME links to it.
  const std::string dir = d.device_dir + "/devfreq/" + d.name;
  // devfreq drops the trailing space that cpufreq keeps.
  write_fake_file(root, dir + "/available_frequencies", spaced(d.table_hz, false));
  write_fake_file(root, dir + "/available_governors", d.governors);
  write_fake_file(root, dir + "/governor", d.governor);
  write_fake_file(root, dir + "/cur_freq", std::to_string(d.table_hz.back()));
  write_fake_file(root, dir + "/target_freq", std::to_string(d.table_hz.back()));
  write_fake_file(root, dir + "/min_freq", std::to_string(d.table_hz.front()));
  write_fake_file(root, dir + "/max_freq", std::to_string(d.table_hz.back()));
  write_fake_file(root, dir + "/polling_interval", "50");  // illustrative
  write_fake_file(root, dir + "/userspace/set_freq", "undefined");
  if (!d.uevent.empty()) write_fake_file(root, d.device_dir + "/uevent", d.uevent);
  const RealSysFs fs(root);
  std::filesystem::create_directory_symlink("../..", fs.resolve(dir + "/device"));
  const std::string klass = fs.resolve("/sys/class/devfreq/" + d.name);
  std::filesystem::create_directories(std::filesystem::path(klass).parent_path());
  std::filesystem::create_directory_symlink("../../" + dir.substr(std::string("/sys/").size()), klass);
}

/// Odroid XU3/XU4: A7 cluster policy0 (CPUs 0-3, 200-1400 MHz) and A15 cluster policy4
/// (CPUs 4-7, 200-2000 MHz), 100 MHz steps, 140 us latency. The Mali-T628 is a misc device
/// (/sys/class/misc/mali0) on the vendor kernel, not devfreq, so it is no domain.
inline void build_exynos5422(const std::string& root) {
  CpufreqPolicy a7;
  a7.number = 0;
  a7.cpus = {0, 1, 2, 3};
  a7.table_khz = steps(200000, 1400000, 100000);
  a7.min_khz = 200000;
  a7.max_khz = 1400000;
  a7.driver = "cpufreq-dt";  // illustrative
  a7.latency_ns = 140000;
  write_cpufreq_policy(root, a7);
  CpufreqPolicy a15 = a7;
  a15.number = 4;
  a15.cpus = {4, 5, 6, 7};
  a15.table_khz = steps(200000, 2000000, 100000);
  a15.max_khz = 2000000;
  a15.descending = true;
  write_cpufreq_policy(root, a15);
  // A governor's system-wide tunables sit beside the policies (not a policy).
  write_fake_file(root, "/sys/devices/system/cpu/cpufreq/ondemand/sampling_rate", "20000");
  write_fake_file(root, "/sys/class/misc/mali0/device/clock", "600");
}

/// The Jetson Nano's CPU table (kHz), from platforms.md.
inline std::vector<uint64_t> jetson_nano_cpu_khz() {
  return {102000, 204000, 307200, 403200, 518400, 614400, 710400, 825600,
          921600, 1036800, 1132800, 1224000, 1326000, 1428000, 1479000};
}

/// Jetson Nano: policy0 (4x A57, the platforms.md table) and the GPU devfreq node
/// 57000000.gpu, 76.8-921.6 MHz in 76.8 MHz steps (Hz).
inline void build_jetson_nano(const std::string& root) {
  CpufreqPolicy cpu;
  cpu.number = 0;
  cpu.cpus = {0, 1, 2, 3};
  cpu.table_khz = jetson_nano_cpu_khz();
  cpu.min_khz = cpu.table_khz.front();
  cpu.max_khz = cpu.table_khz.back();
  cpu.governors = "interactive conservative ondemand userspace powersave performance schedutil";  // illustrative
  write_cpufreq_policy(root, cpu);
  DevfreqDevice gpu;
  gpu.name = "57000000.gpu";
  gpu.device_dir = "/sys/devices/57000000.gpu";
  gpu.table_hz = steps(76800000, 921600000, 76800000);
  gpu.governors = "wmark_active wmark_simple nvhost_podgov userspace performance simple_ondemand";  // illustrative
  gpu.governor = "nvhost_podgov";
  write_devfreq_device(root, gpu);
}

/// Jetson Xavier NX: 6 Carmel cores in three 2-core clusters (policy0, policy2, policy4)
/// and the GPU devfreq node 17000000.gv11b. Tables are illustrative, spanning the
/// platforms.md ranges (CPU 200 MHz-1.5 GHz, GPU 300 MHz-1.1 GHz).
inline void build_xavier_nx(const std::string& root) {
  for (const int first : {0, 2, 4}) {
    CpufreqPolicy cluster;
    cluster.number = first;
    cluster.cpus = {first, first + 1};
    cluster.table_khz = steps(200000, 1500000, 100000);
    cluster.min_khz = 200000;
    cluster.max_khz = 1500000;
    write_cpufreq_policy(root, cluster);
  }
  DevfreqDevice gpu;
  gpu.name = "17000000.gv11b";
  gpu.device_dir = "/sys/devices/17000000.gv11b";
  gpu.table_hz = steps(300000000, 1100000000, 100000000);
  gpu.governors = "wmark_active wmark_simple nvhost_podgov userspace performance simple_ondemand";  // illustrative
  gpu.governor = "nvhost_podgov";
  write_devfreq_device(root, gpu);
}

/// A laptop under intel_pstate (active mode): 12 one-CPU policies, no frequency table,
/// only the performance and powersave governors. Frequencies are illustrative.
inline void build_intel_laptop(const std::string& root) {
  for (int n = 0; n < 12; ++n) {
    CpufreqPolicy p;
    p.number = n;
    p.cpus = {n};
    p.min_khz = 400000;
    p.max_khz = 4700000;
    p.governors = "performance powersave";
    p.governor = "powersave";
    p.driver = "intel_pstate";
    write_cpufreq_policy(root, p);
  }
  write_fake_file(root, "/sys/devices/system/cpu/intel_pstate/status", "active");
}

}  // namespace fake
}  // namespace hw
}  // namespace dydnn
