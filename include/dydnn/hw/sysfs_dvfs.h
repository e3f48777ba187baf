#pragma once
/// \file
/// `SysfsDvfs`: the Linux `DvfsBackend`, on the kernel's cpufreq and devfreq sysfs files.
///
/// It scans `/sys/devices/system/cpu/cpufreq/policyN` (one CPU cluster each) and
/// `/sys/class/devfreq/*` (GPUs, memory controllers, buses) through a `SysFs`, so the same
/// code runs on a board and on a fake tree in a temporary directory. Every file it changes
/// is journaled with its original value and put back by `restore()` or the destructor.
/// (`scaling_max_freq` reads the effective limit, thermal caps included, so a
/// cap in force at the first change is what gets restored: the user's own request is not
/// readable.)
///
/// Plain C++17, no LibTorch. Not thread-safe: one owner turns the knobs.

#include <dydnn/hw/dvfs.h>
#include <dydnn/hw/sysfs.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace dydnn {
namespace hw {

/// The Linux sysfs DVFS backend.
///
/// Domains, in order: the cpufreq policies by number, then the devfreq devices by name.
/// A devfreq device is a `Gpu` when its name or its device's `uevent` (driver, device-tree
/// name and compatible) mentions a GPU or an accelerator (`gpu`, `gv11b`, `gp10b`, `gk20a`,
/// `gm20b`, `ga10b`, `mali`, `adreno`, `kgsl`, `panfrost`, `npu`, `dla`, ...); otherwise it is
/// `Memory`: memory controllers (`emc`, `dmc`, `memory`, ...) and every other devfreq
/// device (buses, interconnects, storage controllers), since those scale how data moves,
/// not how it is computed.
///
/// Capabilities are worked out at construction without changing anything: the governor
/// is written back with its current value (the kernel ignores a switch to the governor
/// already running); a fixed frequency needs the `userspace` governor and the setspeed
/// file (probed the same way when `userspace` already runs); limits need their files and
/// a writable governor file in the same directory, because writing a limit back could pin
/// a temporary (thermal) cap as a user limit.
///
/// Example:
/// \code
///   dydnn::hw::SysfsDvfs dvfs;                    // the machine's /sys
///   const int cpu = dvfs.find("policy0");
///   if (cpu >= 0 && dvfs.domains()[cpu].can_set_frequency.available)
///     dvfs.set_frequency(cpu, 1'000'000'000);      // -> 1036800 kHz on a Jetson Nano
///   dvfs.restore();                               // or let the destructor do it
/// \endcode
class SysfsDvfs : public DvfsBackend {
 public:
  /// Where cpufreq policies live.
  static constexpr const char* kCpufreqDir = "/sys/devices/system/cpu/cpufreq";
  /// Where devfreq devices are listed.
  static constexpr const char* kDevfreqDir = "/sys/class/devfreq";

  /// Discovers the domains under `fs` (the machine's `/sys` by default). Throws
  /// `dydnn::ValueError` when `fs` is null; a system without cpufreq or devfreq simply
  /// has no domains.
  explicit SysfsDvfs(std::shared_ptr<SysFs> fs = std::make_shared<RealSysFs>());
  /// Restores everything changed (never throws; failures are dropped).
  ~SysfsDvfs() override;
  SysfsDvfs(const SysfsDvfs&) = delete;
  SysfsDvfs& operator=(const SysfsDvfs&) = delete;

  /// "linux-sysfs".
  std::string name() const override { return "linux-sysfs"; }
  const std::vector<Domain>& domains() const override { return domains_; }

  /// Writes the governor (the write is skipped when it already runs). A governor the
  /// domain does not list is a failed `Status` naming the available ones.
  Status set_governor(size_t domain, const std::string& governor) override;
  /// Snaps `hz` up to the table, clamps it to the current limits (an ok `Status` whose
  /// reason says so), switches to `userspace` when needed and writes `scaling_setspeed`
  /// (kHz) or `userspace/set_freq` (Hz).
  Status set_frequency(size_t domain, uint64_t hz) override;
  /// Writes the limits (`scaling_{min,max}_freq` in kHz, devfreq `{min,max}_freq` in Hz):
  /// `min_hz` snaps up and `max_hz` down to the table, so the range never exceeds the
  /// request; when no entry lies between them both become the entry just above `min_hz`
  /// (an ok `Status` saying so). `min_hz > max_hz` is a failed `Status` with both values.
  Status set_limits(size_t domain, uint64_t min_hz, uint64_t max_hz) override;
  /// `scaling_cur_freq` (kHz, converted) or devfreq `cur_freq` (Hz); 0 when unreadable.
  uint64_t current_frequency(size_t domain) const override;
  std::string governor(size_t domain) const override;
  /// Writes back every original value, newest change first; a domain's min and max
  /// limits go back together, in the order that keeps min <= max. A value that cannot be
  /// written back stays journaled (a later call retries it) and is named in the `Status`.
  Status restore() override;

  /// The sysfs directory of a domain (`/sys/devices/system/cpu/cpufreq/policy4`,
  /// `/sys/class/devfreq/57000000.gpu`). Throws `dydnn::IndexError` when out of range.
  const std::string& directory(size_t domain) const;
  /// The files changed so far with their original values, oldest change first: what
  /// `restore()` would write back.
  std::vector<std::pair<std::string, std::string>> changes() const;

 private:
  /// Where one domain's files are, and their unit (1000 for cpufreq kHz, 1 for devfreq Hz).
  struct Files {
    std::string dir, governor, setspeed, min, max, cur;
    uint64_t unit = 1;
  };
  /// One journaled original value.
  struct Change {
    std::string path, original;
    size_t domain = 0;
    enum class Role { Other, Setspeed, Min, Max } role = Role::Other;
  };

  void discover_cpufreq();
  void discover_devfreq();
  void probe_capabilities(Domain& domain, const Files& files, bool cpufreq);
  uint64_t read_hz(const std::string& path, uint64_t unit) const;
  /// Writes `text`, journaling the file's original value on its first change.
  Status write_tracked(size_t domain, Change::Role role, const std::string& path, const std::string& text);
  /// Writes a journaled original back; false (with `failures` extended) when it fails.
  bool write_back(const Change& change, std::string& failures);

  std::shared_ptr<SysFs> fs_;
  std::vector<Domain> domains_;
  std::vector<Files> files_;
  std::vector<Change> journal_;
  std::set<std::string> journaled_;  ///< files whose original is known (journaled or nothing to restore)
};

}  // namespace hw
}  // namespace dydnn
