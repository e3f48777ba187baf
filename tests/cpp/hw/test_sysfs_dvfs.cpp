// SysfsDvfs on fake cpufreq/devfreq trees: discovery, snapping, limit ordering, restore,
// and every refusal of the system as a Status or a capability, never an exception.
#include "hw/fake_dvfs_trees.h"

#include <dydnn/errors.h>
#include <dydnn/hw/sysfs_dvfs.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>

namespace {

using namespace dydnn::hw;
using fake::TempRoot;
using Writes = std::vector<std::pair<std::string, std::string>>;

const std::string kCpufreq = "/sys/devices/system/cpu/cpufreq";
const std::string kPolicy0 = kCpufreq + "/policy0";
const std::string kPolicy4 = kCpufreq + "/policy4";
const std::string kNanoGpu = "/sys/class/devfreq/57000000.gpu";

std::vector<uint64_t> times(std::vector<uint64_t> values, uint64_t factor) {
  for (auto& v : values) v *= factor;
  return values;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string errtext(int error) { return std::strerror(error); }

/// The writes a FaultySysFs saw from index `mark` on.
Writes since(const FaultySysFs& fs, size_t mark) { return Writes(fs.writes().begin() + mark, fs.writes().end()); }

std::string first_word(const std::string& text) {
  std::istringstream in(text);
  std::string word;
  in >> word;
  return word;
}

bool listed(const std::string& list, const std::string& word) {
  std::istringstream in(list);
  for (std::string w; in >> w;)
    if (w == word) return true;
  return false;
}

/// Refuses what older kernels refuse: a min limit above the max (or a max below the min),
/// setspeed outside the userspace governor, and governors that are not listed. Newer
/// kernels resolve min > max through PM QoS instead; the order must suit both.
class KernelLikeSysFs : public SysFs {
 public:
  explicit KernelLikeSysFs(std::shared_ptr<SysFs> inner) : inner_(std::move(inner)) {}

  IoResult read(const std::string& path) const override { return inner_->read(path); }
  IoResult write(const std::string& path, const std::string& text) override {
    const std::filesystem::path p(path);
    const std::string dir = p.parent_path().string(), file = p.filename().string();
    const auto number = [&](const std::string& f) { return std::stoull(first_word(read(dir + "/" + f).text)); };
    if ((file == "scaling_min_freq" && std::stoull(text) > number("scaling_max_freq")) ||
        (file == "scaling_max_freq" && std::stoull(text) < number("scaling_min_freq")) ||
        (file == "min_freq" && std::stoull(text) > number("max_freq")) ||
        (file == "max_freq" && std::stoull(text) < number("min_freq")))
      return {EINVAL, {}};
    if (file == "scaling_setspeed" && read(dir + "/scaling_governor").text != "userspace") return {EINVAL, {}};
    if (file == "set_freq" && read(p.parent_path().parent_path().string() + "/governor").text != "userspace")
      return {EINVAL, {}};
    if ((file == "scaling_governor" && !listed(read(dir + "/scaling_available_governors").text, text)) ||
        (file == "governor" && !listed(read(dir + "/available_governors").text, text)))
      return {EINVAL, {}};
    return inner_->write(path, text);
  }
  std::vector<std::string> list(const std::string& dir) const override { return inner_->list(dir); }
  bool exists(const std::string& path) const override { return inner_->exists(path); }
  bool is_directory(const std::string& path) const override { return inner_->is_directory(path); }
  std::string root() const override { return inner_->root(); }

 private:
  std::shared_ptr<SysFs> inner_;
};

/// A fake tree with a recording FaultySysFs over it, optionally behind KernelLikeSysFs.
struct Rig {
  explicit Rig(void (*build)(const std::string&)) { build(root.path); }
  std::shared_ptr<FaultySysFs> faulty() {
    if (!faulty_) faulty_ = std::make_shared<FaultySysFs>(std::make_shared<RealSysFs>(root.path));
    return faulty_;
  }
  std::shared_ptr<SysFs> kernel_like() { return std::make_shared<KernelLikeSysFs>(faulty()); }
  std::string read(const std::string& path) const { return RealSysFs(root.path).read(path).text; }
  void write(const std::string& path, const std::string& text) const { write_fake_file(root.path, path, text); }

  TempRoot root;

 private:
  std::shared_ptr<FaultySysFs> faulty_;
};

void empty_tree(const std::string&) {}

}  // namespace

TEST_CASE("SysfsDvfs discovers the Exynos 5422 clusters and ignores the Mali misc device", "[hw][dvfs]") {
  Rig rig(fake::build_exynos5422);
  auto fs = rig.faulty();
  SysfsDvfs dvfs(fs);
  CHECK(dvfs.name() == "linux-sysfs");
  REQUIRE(dvfs.domains().size() == 2);
  const Domain& a7 = dvfs.domains()[0];
  const Domain& a15 = dvfs.domains()[1];
  CHECK(a7.name == "policy0");
  CHECK(a15.name == "policy4");
  CHECK(a7.kind == DomainKind::CpuCluster);
  CHECK(a15.kind == DomainKind::CpuCluster);
  CHECK(a7.cpus == std::vector<int>{0, 1, 2, 3});
  CHECK(a15.cpus == std::vector<int>{4, 5, 6, 7});
  CHECK(a7.frequencies_hz == fake::steps(200000000, 1400000000, 100000000));
  // policy4 prints its table highest first: the domain's table is ascending anyway.
  CHECK(a15.frequencies_hz == fake::steps(200000000, 2000000000, 100000000));
  CHECK(a7.min_hz == 200000000);
  CHECK(a15.max_hz == 2000000000);
  CHECK(a15.governors ==
        std::vector<std::string>{"conservative", "ondemand", "userspace", "powersave", "performance", "schedutil"});
  CHECK(a15.transition_latency_s == Approx(140e-6));
  for (const Domain& d : dvfs.domains()) {
    CHECK(d.can_set_governor.available);
    CHECK(d.can_set_frequency.available);
    CHECK(d.can_set_limits.available);
  }
  CHECK(dvfs.find("policy4") == 1);
  CHECK(dvfs.find("mali0") == -1);
  CHECK(dvfs.find("ondemand") == -1);
  CHECK(dvfs.directory(1) == kPolicy4);
  CHECK(dvfs.governor(1) == "schedutil");
  CHECK(dvfs.current_frequency(1) == 2000000000);

  // Probing changed nothing: every write at discovery put back the value the file held.
  CHECK(dvfs.changes().empty());
  REQUIRE_FALSE(fs->writes().empty());
  for (const auto& [path, text] : fs->writes()) {
    CHECK(contains(path, "scaling_governor"));
    CHECK(rig.read(path) == text);
  }
}

TEST_CASE("SysfsDvfs discovers the Jetson Nano CPU cluster and its devfreq GPU in Hz", "[hw][dvfs]") {
  Rig rig(fake::build_jetson_nano);
  SysfsDvfs dvfs(rig.faulty());
  REQUIRE(dvfs.domains().size() == 2);
  const Domain& cpu = dvfs.domains()[0];
  const Domain& gpu = dvfs.domains()[1];
  CHECK(cpu.name == "policy0");
  CHECK(cpu.cpus == std::vector<int>{0, 1, 2, 3});
  CHECK(cpu.frequencies_hz == times(fake::jetson_nano_cpu_khz(), 1000));
  CHECK(cpu.min_hz == 102000000);
  CHECK(cpu.max_hz == 1479000000);
  CHECK(cpu.transition_latency_s == 0);  // no cpuinfo_transition_latency: unknown
  CHECK(gpu.name == "57000000.gpu");
  CHECK(gpu.kind == DomainKind::Gpu);
  CHECK(gpu.cpus.empty());
  REQUIRE(gpu.frequencies_hz.size() == 12);
  CHECK(gpu.frequencies_hz.front() == 76800000);
  CHECK(gpu.frequencies_hz.back() == 921600000);
  CHECK(gpu.min_hz == 76800000);
  CHECK(gpu.max_hz == 921600000);
  CHECK(gpu.governors.size() == 6);
  CHECK(gpu.can_set_governor.available);
  CHECK(gpu.can_set_frequency.available);
  CHECK(gpu.can_set_limits.available);
  CHECK(dvfs.directory(1) == kNanoGpu);
  CHECK(dvfs.governor(1) == "nvhost_podgov");
  CHECK(dvfs.current_frequency(0) == 1479000000);
  CHECK(dvfs.current_frequency(1) == 921600000);
}

TEST_CASE("SysfsDvfs discovers the Xavier NX clusters and the gv11b GPU", "[hw][dvfs]") {
  Rig rig(fake::build_xavier_nx);
  SysfsDvfs dvfs(rig.faulty());
  REQUIRE(dvfs.domains().size() == 4);
  CHECK(dvfs.domains()[0].name == "policy0");
  CHECK(dvfs.domains()[1].name == "policy2");
  CHECK(dvfs.domains()[2].name == "policy4");
  CHECK(dvfs.domains()[1].cpus == std::vector<int>{2, 3});
  CHECK(dvfs.domains()[2].cpus == std::vector<int>{4, 5});
  CHECK(dvfs.domains()[2].frequencies_hz.back() == 1500000000);
  const Domain& gpu = dvfs.domains()[3];
  CHECK(gpu.name == "17000000.gv11b");
  CHECK(gpu.kind == DomainKind::Gpu);
  CHECK(gpu.frequencies_hz == fake::steps(300000000, 1100000000, 100000000));
}

TEST_CASE("SysfsDvfs on intel_pstate: continuous range, no fixed frequency, limits work", "[hw][dvfs]") {
  Rig rig(fake::build_intel_laptop);
  auto fs = rig.faulty();
  SysfsDvfs dvfs(fs);
  REQUIRE(dvfs.domains().size() == 12);
  // Policies in numeric order: policy10 comes after policy9.
  for (size_t k = 0; k < 12; ++k) CHECK(dvfs.domains()[k].name == "policy" + std::to_string(k));
  const Domain& d = dvfs.domains()[10];
  CHECK(d.cpus == std::vector<int>{10});
  CHECK(d.frequencies_hz.empty());
  CHECK(d.min_hz == 400000000);
  CHECK(d.max_hz == 4700000000);
  CHECK(d.governors == std::vector<std::string>{"performance", "powersave"});
  CHECK(d.can_set_governor.available);
  CHECK(d.can_set_limits.available);
  CHECK_FALSE(d.can_set_frequency.available);
  CHECK(contains(d.can_set_frequency.reason, "userspace"));
  CHECK(contains(d.can_set_frequency.reason, "intel_pstate"));
  CHECK(contains(d.can_set_frequency.reason, "set_limits"));

  const size_t mark = fs->writes().size();
  const Status refused = dvfs.set_frequency(10, 2000000000);
  CHECK_FALSE(refused.ok);
  CHECK(contains(refused.reason, "policy10"));
  CHECK(since(*fs, mark).empty());

  // No table: limits are written as asked, in kHz; lowering the max writes the min first.
  const Status limited = dvfs.set_limits(10, 1200000000, 2500000000);
  CHECK(limited.ok);
  CHECK(since(*fs, mark) == Writes{{kCpufreq + "/policy10/scaling_min_freq", "1200000"},
                                   {kCpufreq + "/policy10/scaling_max_freq", "2500000"}});
  // Out of the hardware's range: clamped to it.
  CHECK(dvfs.set_limits(10, 100000000, 9000000000).ok);
  CHECK(rig.read(kCpufreq + "/policy10/scaling_min_freq") == "400000");
  CHECK(rig.read(kCpufreq + "/policy10/scaling_max_freq") == "4700000");

  CHECK(dvfs.set_governor(10, "performance").ok);
  CHECK(dvfs.governor(10) == "performance");
  const Status unknown = dvfs.set_governor(10, "userspace");
  CHECK_FALSE(unknown.ok);
  CHECK(contains(unknown.reason, "'userspace' is not available (available: performance powersave)"));

  CHECK(dvfs.restore().ok);
  CHECK(dvfs.governor(10) == "powersave");
  CHECK(rig.read(kCpufreq + "/policy10/scaling_min_freq") == "400000");
  CHECK(rig.read(kCpufreq + "/policy10/scaling_max_freq") == "4700000");
}

TEST_CASE("SysfsDvfs classifies devfreq devices by name, then by the device's uevent", "[hw][dvfs]") {
  TempRoot root;
  auto device = [&](const std::string& name, const std::string& uevent = "") {
    fake::DevfreqDevice d;
    d.name = name;
    d.device_dir = "/sys/devices/platform/" + name;
    d.table_hz = {100000000, 200000000};
    d.uevent = uevent;
    fake::write_devfreq_device(root.path, d);
  };
  device("10c20000.memory-controller");  // Exynos 5422 DMC on mainline
  device("7000f800.emc");
  device("soc:bus-wcore");
  device("fde60000.gpu");
  device("fdab0000.npu");
  device("11800000.g3d", "DRIVER=mali\nOF_NAME=gpu\nOF_COMPATIBLE_0=arm,mali-t628");
  device("1d84000.ufshc", "DRIVER=ufshcd-qcom");  // neither: Memory by the documented rule
  write_fake_file(root.path, "/sys/class/devfreq/not_a_device", "x");  // a stray file is skipped
  // A cluster that is wholly offline: affected_cpus is empty, related_cpus still lists it,
  // and the driver does not know its latency (CPUFREQ_ETERNAL).
  fake::CpufreqPolicy p;
  p.number = 2;
  p.cpus = {2, 3};
  p.table_khz = {500000, 1000000};
  p.min_khz = 500000;
  p.max_khz = 1000000;
  p.latency_ns = 4294967295LL;
  fake::write_cpufreq_policy(root.path, p);
  write_fake_file(root.path, kCpufreq + "/policy2/affected_cpus", "");

  SysfsDvfs dvfs(std::make_shared<RealSysFs>(root.path));
  const auto kind = [&](const std::string& name) {
    const int k = dvfs.find(name);
    REQUIRE(k >= 0);
    return dvfs.domains()[static_cast<size_t>(k)].kind;
  };
  CHECK(dvfs.domains().size() == 8);
  CHECK(kind("10c20000.memory-controller") == DomainKind::Memory);
  CHECK(kind("7000f800.emc") == DomainKind::Memory);
  CHECK(kind("soc:bus-wcore") == DomainKind::Memory);
  CHECK(kind("fde60000.gpu") == DomainKind::Gpu);
  CHECK(kind("fdab0000.npu") == DomainKind::Gpu);
  CHECK(kind("11800000.g3d") == DomainKind::Gpu);
  CHECK(kind("1d84000.ufshc") == DomainKind::Memory);
  CHECK(dvfs.find("not_a_device") == -1);
  CHECK(dvfs.domains()[0].cpus == std::vector<int>{2, 3});
  CHECK(dvfs.domains()[0].transition_latency_s == 0);
}

TEST_CASE("SysfsDvfs::set_frequency snaps up, switches to userspace once, and writes kHz or Hz", "[hw][dvfs]") {
  Rig rig(fake::build_jetson_nano);
  auto fs = rig.faulty();
  SysfsDvfs dvfs(rig.kernel_like());
  size_t mark = fs->writes().size();

  // 1 GHz is not in the table: the next entry up is 1036.8 MHz.
  const Status s = dvfs.set_frequency(0, 1000000000);
  CHECK(s.ok);
  CHECK(s.reason.empty());
  CHECK(since(*fs, mark) ==
        Writes{{kPolicy0 + "/scaling_governor", "userspace"}, {kPolicy0 + "/scaling_setspeed", "1036800"}});
  CHECK(dvfs.governor(0) == "userspace");
  CHECK(rig.read(kPolicy0 + "/scaling_setspeed") == "1036800");

  // Already under userspace: only the setspeed is written; an exact entry is kept.
  mark = fs->writes().size();
  CHECK(dvfs.set_frequency(0, 1326000000).ok);
  CHECK(since(*fs, mark) == Writes{{kPolicy0 + "/scaling_setspeed", "1326000"}});
  // Above the table: its highest entry.
  CHECK(dvfs.set_frequency(0, 3000000000).ok);
  CHECK(rig.read(kPolicy0 + "/scaling_setspeed") == "1479000");

  // The GPU takes Hz through userspace/set_freq.
  mark = fs->writes().size();
  CHECK(dvfs.set_frequency(1, 500000000).ok);
  CHECK(since(*fs, mark) ==
        Writes{{kNanoGpu + "/governor", "userspace"}, {kNanoGpu + "/userspace/set_freq", "537600000"}});
  CHECK(dvfs.governor(1) == "userspace");

  // The fakes do not move by themselves: the current frequency is what the files say.
  CHECK(dvfs.current_frequency(0) == 1479000000);
  CHECK(dvfs.current_frequency(1) == 921600000);
}

TEST_CASE("SysfsDvfs::set_frequency clamps to the current limits and says so", "[hw][dvfs]") {
  Rig rig(fake::build_jetson_nano);
  rig.write(kPolicy0 + "/scaling_min_freq", "518400");
  rig.write(kPolicy0 + "/scaling_max_freq", "921600");
  rig.write(kNanoGpu + "/max_freq", "614400000");
  SysfsDvfs dvfs(rig.kernel_like());

  const Status high = dvfs.set_frequency(0, 1400000000);
  CHECK(high.ok);
  CHECK(contains(high.reason, "clamped to the max limit 921600000 Hz"));
  CHECK(rig.read(kPolicy0 + "/scaling_setspeed") == "921600");

  const Status low = dvfs.set_frequency(0, 100000000);
  CHECK(low.ok);
  CHECK(contains(low.reason, "clamped to the min limit 518400000 Hz"));
  CHECK(rig.read(kPolicy0 + "/scaling_setspeed") == "518400");

  const Status gpu = dvfs.set_frequency(1, 900000000);
  CHECK(gpu.ok);
  CHECK(contains(gpu.reason, "57000000.gpu"));
  CHECK(rig.read(kNanoGpu + "/userspace/set_freq") == "614400000");

  const Status inside = dvfs.set_frequency(0, 700000000);
  CHECK(inside.ok);
  CHECK(inside.reason.empty());
  CHECK(rig.read(kPolicy0 + "/scaling_setspeed") == "710400");
}

TEST_CASE("SysfsDvfs::set_limits snaps to the table and orders writes so min never exceeds max", "[hw][dvfs]") {
  Rig rig(fake::build_exynos5422);
  auto fs = rig.faulty();
  SysfsDvfs dvfs(rig.kernel_like());  // refuses min > max, as older kernels do

  // From [200, 2000] MHz down to [1100, 1700]: the max drops, so the min goes first.
  size_t mark = fs->writes().size();
  CHECK(dvfs.set_limits(1, 1050000000, 1750000000).ok);
  CHECK(since(*fs, mark) ==
        Writes{{kPolicy4 + "/scaling_min_freq", "1100000"}, {kPolicy4 + "/scaling_max_freq", "1700000"}});

  // Up to [1900, 2000]: the new min is above the current max, so the max goes first.
  mark = fs->writes().size();
  CHECK(dvfs.set_limits(1, 1900000000, 2000000000).ok);
  CHECK(since(*fs, mark) ==
        Writes{{kPolicy4 + "/scaling_max_freq", "2000000"}, {kPolicy4 + "/scaling_min_freq", "1900000"}});

  // Down to [200, 500]: the new max is below the current min, so the min goes first.
  mark = fs->writes().size();
  CHECK(dvfs.set_limits(1, 200000000, 500000000).ok);
  CHECK(since(*fs, mark) ==
        Writes{{kPolicy4 + "/scaling_min_freq", "200000"}, {kPolicy4 + "/scaling_max_freq", "500000"}});

  // No entry lies in [1010, 1020] MHz: both limits take the entry above.
  const Status gap = dvfs.set_limits(1, 1010000000, 1020000000);
  CHECK(gap.ok);
  CHECK(contains(gap.reason, "no frequency lies in [1010000000, 1020000000] Hz"));
  CHECK(rig.read(kPolicy4 + "/scaling_min_freq") == "1100000");
  CHECK(rig.read(kPolicy4 + "/scaling_max_freq") == "1100000");

  // min > max is refused with both values, before anything is written.
  mark = fs->writes().size();
  const Status bad = dvfs.set_limits(1, 1500000000, 1200000000);
  CHECK_FALSE(bad.ok);
  CHECK(contains(bad.reason, "min 1500000000 Hz > max 1200000000 Hz"));
  CHECK(since(*fs, mark).empty());

  // The originals come back, max first here (it rises back to 2000 MHz).
  CHECK(dvfs.changes() == Writes{{kPolicy4 + "/scaling_min_freq", "200000"}, {kPolicy4 + "/scaling_max_freq", "2000000"}});
  mark = fs->writes().size();
  CHECK(dvfs.restore().ok);
  CHECK(since(*fs, mark) ==
        Writes{{kPolicy4 + "/scaling_max_freq", "2000000"}, {kPolicy4 + "/scaling_min_freq", "200000"}});
  CHECK(dvfs.changes().empty());
}

TEST_CASE("SysfsDvfs::restore puts limits back in a safe order after several changes", "[hw][dvfs]") {
  Rig rig(fake::build_exynos5422);
  rig.write(kPolicy4 + "/scaling_min_freq", "800000");
  rig.write(kPolicy4 + "/scaling_max_freq", "1400000");
  auto fs = rig.faulty();
  SysfsDvfs dvfs(rig.kernel_like());
  CHECK(dvfs.set_limits(1, 1500000000, 2000000000).ok);  // journals the max, then the min
  CHECK(dvfs.set_limits(1, 200000000, 500000000).ok);
  // Newest-first alone would write min 800 MHz above the current max of 500 MHz.
  const size_t mark = fs->writes().size();
  CHECK(dvfs.restore().ok);
  CHECK(since(*fs, mark) ==
        Writes{{kPolicy4 + "/scaling_max_freq", "1400000"}, {kPolicy4 + "/scaling_min_freq", "800000"}});
  CHECK(rig.read(kPolicy4 + "/scaling_min_freq") == "800000");
  CHECK(rig.read(kPolicy4 + "/scaling_max_freq") == "1400000");
}

TEST_CASE("SysfsDvfs::restore writes the original values back, newest change first", "[hw][dvfs]") {
  SECTION("governors, limits and frequencies of the Nano") {
    Rig rig(fake::build_jetson_nano);
    auto fs = rig.faulty();
    SysfsDvfs dvfs(rig.kernel_like());
    CHECK(dvfs.set_frequency(0, 1000000000).ok);
    CHECK(dvfs.set_limits(0, 300000000, 1200000000).ok);
    CHECK(dvfs.set_frequency(1, 500000000).ok);
    // The setspeed files held no frequency ("<unsupported>", "undefined"): restoring the
    // governors is enough for them.
    CHECK(dvfs.changes() == Writes{{kPolicy0 + "/scaling_governor", "schedutil"},
                                   {kPolicy0 + "/scaling_min_freq", "102000"},
                                   {kPolicy0 + "/scaling_max_freq", "1479000"},
                                   {kNanoGpu + "/governor", "nvhost_podgov"}});
    const size_t mark = fs->writes().size();
    CHECK(dvfs.restore().ok);
    CHECK(since(*fs, mark) == Writes{{kNanoGpu + "/governor", "nvhost_podgov"},
                                     {kPolicy0 + "/scaling_max_freq", "1479000"},
                                     {kPolicy0 + "/scaling_min_freq", "102000"},
                                     {kPolicy0 + "/scaling_governor", "schedutil"}});
    CHECK(dvfs.governor(0) == "schedutil");
    CHECK(dvfs.governor(1) == "nvhost_podgov");
    CHECK(dvfs.changes().empty());
    // Nothing left to do; later changes journal afresh.
    CHECK(dvfs.restore().ok);
    CHECK(fs->writes().size() == mark + 4);
    CHECK(dvfs.set_governor(0, "performance").ok);
    CHECK(dvfs.changes() == Writes{{kPolicy0 + "/scaling_governor", "schedutil"}});
  }

  SECTION("a policy that ran userspace gets its governor back before its frequency") {
    Rig rig(fake::build_exynos5422);
    rig.write(kPolicy4 + "/scaling_governor", "userspace");
    rig.write(kPolicy4 + "/scaling_setspeed", "1800000");
    auto fs = rig.faulty();
    SysfsDvfs dvfs(rig.kernel_like());
    CHECK(dvfs.domains()[1].can_set_frequency.available);  // probed by writing 1800000 back
    CHECK(dvfs.set_frequency(1, 1000000000).ok);
    CHECK(dvfs.set_governor(1, "performance").ok);
    CHECK(dvfs.changes() ==
          Writes{{kPolicy4 + "/scaling_setspeed", "1800000"}, {kPolicy4 + "/scaling_governor", "userspace"}});
    const size_t mark = fs->writes().size();
    CHECK(dvfs.restore().ok);  // setspeed first would be refused under performance
    CHECK(since(*fs, mark) ==
          Writes{{kPolicy4 + "/scaling_governor", "userspace"}, {kPolicy4 + "/scaling_setspeed", "1800000"}});
  }
}

TEST_CASE("SysfsDvfs restores on destruction, and a failing restore never throws", "[hw][dvfs]") {
  Rig rig(fake::build_jetson_nano);
  auto fs = rig.faulty();
  {
    SysfsDvfs dvfs(fs);
    CHECK(dvfs.set_frequency(0, 1000000000).ok);
    CHECK(dvfs.set_limits(1, 153600000, 460800000).ok);
    CHECK(rig.read(kNanoGpu + "/max_freq") == "460800000");
  }
  CHECK(rig.read(kPolicy0 + "/scaling_governor") == "schedutil");
  CHECK(rig.read(kNanoGpu + "/min_freq") == "76800000");
  CHECK(rig.read(kNanoGpu + "/max_freq") == "921600000");

  REQUIRE_NOTHROW([&] {
    SysfsDvfs dvfs(fs);
    CHECK(dvfs.set_frequency(0, 1000000000).ok);
    fs->fail_write(kPolicy0 + "/scaling_governor", EACCES);
  }());
  CHECK(rig.read(kPolicy0 + "/scaling_governor") == "userspace");
}

TEST_CASE("SysfsDvfs: a failed restore is reported and retried by the next call", "[hw][dvfs]") {
  Rig rig(fake::build_jetson_nano);
  auto fs = rig.faulty();
  SysfsDvfs dvfs(fs);
  CHECK(dvfs.set_frequency(0, 1000000000).ok);
  CHECK(dvfs.set_frequency(1, 500000000).ok);
  fs->fail_write(kPolicy0 + "/scaling_governor", EACCES);
  const Status failed = dvfs.restore();
  CHECK_FALSE(failed.ok);
  CHECK(contains(failed.reason, kPolicy0 + "/scaling_governor"));
  CHECK(contains(failed.reason, errtext(EACCES)));
  CHECK(dvfs.governor(1) == "nvhost_podgov");  // the others went back
  CHECK(dvfs.changes() == Writes{{kPolicy0 + "/scaling_governor", "schedutil"}});
  fs->fail_write(kPolicy0 + "/scaling_governor", 0);
  CHECK(dvfs.restore().ok);
  CHECK(dvfs.governor(0) == "schedutil");
}

TEST_CASE("SysfsDvfs: EACCES on scaling_setspeed fails each call without throwing", "[hw][dvfs]") {
  SECTION("not under userspace at discovery: found on the first call") {
    Rig rig(fake::build_jetson_nano);
    auto fs = rig.faulty();
    fs->fail_write(kPolicy0 + "/scaling_setspeed", EACCES);
    SysfsDvfs dvfs(fs);
    // The setspeed file cannot be probed without switching the governor.
    CHECK(dvfs.domains()[0].can_set_frequency.available);
    int failures = 0;
    REQUIRE_NOTHROW([&] {
      for (int i = 0; i < 100; ++i) {
        const Status s = dvfs.set_frequency(0, 500000000 + 10000000 * static_cast<uint64_t>(i));
        if (!s.ok) ++failures;
        if (i == 0) {
          CHECK(contains(s.reason, kPolicy0 + "/scaling_setspeed"));
          CHECK(contains(s.reason, errtext(EACCES)));
          CHECK(contains(s.reason, "run as root"));
        }
      }
    }());
    CHECK(failures == 100);
    // The governor switch did happen and goes back.
    CHECK(dvfs.governor(0) == "userspace");
    CHECK(dvfs.restore().ok);
    CHECK(dvfs.governor(0) == "schedutil");
  }

  SECTION("under userspace at discovery: the probe finds it") {
    Rig rig(fake::build_jetson_nano);
    rig.write(kPolicy0 + "/scaling_governor", "userspace");
    rig.write(kPolicy0 + "/scaling_setspeed", "1479000");
    auto fs = rig.faulty();
    fs->fail_write(kPolicy0 + "/scaling_setspeed", EACCES);
    SysfsDvfs dvfs(fs);
    const Capability& cap = dvfs.domains()[0].can_set_frequency;
    CHECK_FALSE(cap.available);
    CHECK(contains(cap.reason, kPolicy0 + "/scaling_setspeed"));
    CHECK(contains(cap.reason, errtext(EACCES)));
    const size_t mark = fs->writes().size();
    REQUIRE_NOTHROW([&] {
      for (int i = 0; i < 100; ++i) CHECK_FALSE(dvfs.set_frequency(0, 1000000000).ok);
    }());
    CHECK(since(*fs, mark).empty());
    CHECK(dvfs.changes().empty());
  }
}

TEST_CASE("SysfsDvfs: a read-only governor (not root) makes every knob unavailable", "[hw][dvfs]") {
  Rig rig(fake::build_exynos5422);
  auto fs = rig.faulty();
  fs->fail_write(kPolicy0 + "/scaling_governor", EACCES);
  SysfsDvfs dvfs(fs);
  const Domain& d = dvfs.domains()[0];
  for (const Capability* cap : {&d.can_set_governor, &d.can_set_frequency, &d.can_set_limits}) {
    CHECK_FALSE(cap->available);
    CHECK(contains(cap->reason, kPolicy0 + "/scaling_governor"));
    CHECK(contains(cap->reason, errtext(EACCES)));
    CHECK(contains(cap->reason, "run as root"));
  }
  CHECK(dvfs.domains()[1].can_set_frequency.available);  // policy4 is not affected
  const size_t mark = fs->writes().size();
  REQUIRE_NOTHROW([&] {
    CHECK_FALSE(dvfs.set_governor(0, "performance").ok);
    CHECK_FALSE(dvfs.set_frequency(0, 1000000000).ok);
    CHECK_FALSE(dvfs.set_limits(0, 200000000, 1000000000).ok);
  }());
  CHECK(since(*fs, mark).empty());
  CHECK(contains(dvfs.set_frequency(0, 1).reason, "policy0: cannot set a fixed frequency"));
}

TEST_CASE("SysfsDvfs: EINVAL and EBUSY on a write are failed Statuses naming the file", "[hw][dvfs]") {
  Rig rig(fake::build_jetson_nano);
  auto fs = rig.faulty();
  SysfsDvfs dvfs(fs);

  fs->fail_write(kPolicy0 + "/scaling_max_freq", EINVAL);
  const Status limits = dvfs.set_limits(0, 300000000, 1200000000);  // min first, then max fails
  CHECK_FALSE(limits.ok);
  CHECK(contains(limits.reason, kPolicy0 + "/scaling_max_freq: write '1132800' failed: " + errtext(EINVAL)));
  CHECK(rig.read(kPolicy0 + "/scaling_min_freq") == "307200");
  CHECK(dvfs.changes() == Writes{{kPolicy0 + "/scaling_min_freq", "102000"}});

  fs->fail_write(kNanoGpu + "/userspace/set_freq", EBUSY);
  Status busy;
  REQUIRE_NOTHROW(busy = dvfs.set_frequency(1, 300000000));
  CHECK_FALSE(busy.ok);
  CHECK(contains(busy.reason, kNanoGpu + "/userspace/set_freq"));
  CHECK(contains(busy.reason, errtext(EBUSY)));

  CHECK(dvfs.restore().ok);
  CHECK(rig.read(kPolicy0 + "/scaling_min_freq") == "102000");
  CHECK(dvfs.governor(1) == "nvhost_podgov");
}

TEST_CASE("SysfsDvfs: missing files make capabilities unavailable with the file named", "[hw][dvfs]") {
  TempRoot root;
  fake::CpufreqPolicy p;
  p.cpus = {0, 1};
  p.table_khz = {500000, 1000000};
  p.min_khz = 500000;
  p.max_khz = 1000000;
  p.setspeed = false;
  fake::write_cpufreq_policy(root.path, p);
  p.number = 2;
  p.cpus = {2, 3};
  p.setspeed = true;
  fake::write_cpufreq_policy(root.path, p);
  std::filesystem::remove(RealSysFs(root.path).resolve(kCpufreq + "/policy2/scaling_governor"));
  fake::DevfreqDevice gpu;
  gpu.name = "57000000.gpu";
  gpu.device_dir = "/sys/devices/57000000.gpu";
  gpu.table_hz = {100000000, 200000000};
  gpu.governors = "performance simple_ondemand";
  fake::write_devfreq_device(root.path, gpu);
  std::filesystem::remove(RealSysFs(root.path).resolve("/sys/devices/57000000.gpu/devfreq/57000000.gpu/min_freq"));

  SysfsDvfs dvfs(std::make_shared<RealSysFs>(root.path));
  REQUIRE(dvfs.domains().size() == 3);
  const Domain& no_setspeed = dvfs.domains()[0];
  CHECK(no_setspeed.can_set_governor.available);
  CHECK_FALSE(no_setspeed.can_set_frequency.available);
  CHECK(contains(no_setspeed.can_set_frequency.reason, kPolicy0 + "/scaling_setspeed"));
  CHECK(contains(no_setspeed.can_set_frequency.reason, errtext(ENOENT)));

  const Domain& no_governor = dvfs.domains()[1];
  CHECK_FALSE(no_governor.can_set_governor.available);
  CHECK(contains(no_governor.can_set_governor.reason, kCpufreq + "/policy2/scaling_governor"));
  CHECK_FALSE(no_governor.can_set_frequency.available);
  CHECK(no_governor.can_set_limits.available);  // a missing file is no permission problem
  CHECK(dvfs.governor(1).empty());

  const Domain& g = dvfs.domains()[2];
  CHECK_FALSE(g.can_set_frequency.available);  // no userspace governor
  CHECK(contains(g.can_set_frequency.reason, "no 'userspace' governor (available: performance simple_ondemand)"));
  CHECK_FALSE(g.can_set_limits.available);
  CHECK(contains(g.can_set_limits.reason, kNanoGpu + "/min_freq"));
  CHECK(contains(g.can_set_limits.reason, errtext(ENOENT)));

  REQUIRE_NOTHROW([&] {
    for (size_t k = 0; k < 3; ++k) {
      dvfs.set_frequency(k, 150000000);
      dvfs.set_limits(k, 100000000, 200000000);
    }
  }());
}

TEST_CASE("SysfsDvfs: unreadable files read as 0 or empty, and are not changed blind", "[hw][dvfs]") {
  Rig rig(fake::build_jetson_nano);
  auto fs = rig.faulty();
  SysfsDvfs dvfs(fs);
  fs->fail_read(kPolicy0 + "/scaling_cur_freq", EACCES);
  fs->fail_read(kNanoGpu + "/cur_freq", EIO);
  CHECK(dvfs.current_frequency(0) == 0);
  CHECK(dvfs.current_frequency(1) == 0);
  rig.write(kPolicy0 + "/scaling_cur_freq", "garbage");
  fs->fail_read(kPolicy0 + "/scaling_cur_freq", 0);
  CHECK(dvfs.current_frequency(0) == 0);

  // Without the original value there would be nothing to restore: the file is left alone.
  fs->fail_read(kNanoGpu + "/max_freq", EIO);
  const Status s = dvfs.set_limits(1, 76800000, 460800000);
  CHECK_FALSE(s.ok);
  CHECK(contains(s.reason, kNanoGpu + "/max_freq: not changed"));
  CHECK(rig.read(kNanoGpu + "/max_freq") == "921600000");

  fs->fail_read(kPolicy0 + "/scaling_governor", EIO);
  CHECK(dvfs.governor(0).empty());
  CHECK_FALSE(dvfs.set_frequency(0, 1000000000).ok);
}

TEST_CASE("SysfsDvfs: bad arguments and empty systems", "[hw][dvfs]") {
  CHECK_THROWS_AS(SysfsDvfs(nullptr), dydnn::ValueError);

  Rig none(empty_tree);
  SysfsDvfs empty(none.faulty());
  CHECK(empty.domains().empty());
  CHECK(empty.restore().ok);

  Rig rig(fake::build_jetson_nano);
  SysfsDvfs dvfs(rig.faulty());
  CHECK_THROWS_AS(dvfs.set_frequency(2, 1), dydnn::IndexError);
  CHECK_THROWS_AS(dvfs.set_limits(7, 1, 2), dydnn::IndexError);
  CHECK_THROWS_AS(dvfs.set_governor(2, "performance"), dydnn::IndexError);
  CHECK_THROWS_AS(dvfs.current_frequency(2), dydnn::IndexError);
  CHECK_THROWS_AS(dvfs.governor(2), dydnn::IndexError);
  CHECK_THROWS_AS(dvfs.directory(2), dydnn::IndexError);
  CHECK_THROWS_WITH(dvfs.set_frequency(9, 1), Catch::Contains("domain 9 is out of range (valid: 0..1)"));
}
