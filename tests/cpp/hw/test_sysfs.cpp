// The sysfs I/O layer: reads and writes under a root, listing, and injected faults.
#include <dydnn/hw/dvfs.h>
#include <dydnn/hw/sysfs.h>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace {

using namespace dydnn::hw;

struct FakeRoot {
  FakeRoot() : path((std::filesystem::temp_directory_path() / ("dydnn_sysfs_" + std::to_string(::getpid()))).string()) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~FakeRoot() { std::filesystem::remove_all(path); }
  std::string path;
};

}  // namespace

TEST_CASE("RealSysFs reads, writes and lists under its root", "[hw][sysfs]") {
  FakeRoot root;
  write_fake_file(root.path, "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor", "schedutil");
  write_fake_file(root.path, "/sys/devices/system/cpu/cpufreq/policy4/scaling_governor", "performance");
  RealSysFs fs(root.path);
  CHECK(fs.read("/sys/devices/system/cpu/cpufreq/policy0/scaling_governor").text == "schedutil");
  CHECK(fs.list("/sys/devices/system/cpu/cpufreq") == std::vector<std::string>{"policy0", "policy4"});
  CHECK(fs.is_directory("/sys/devices/system/cpu/cpufreq/policy0"));
  CHECK(fs.write("/sys/devices/system/cpu/cpufreq/policy0/scaling_governor", "userspace").ok());
  CHECK(fs.read("/sys/devices/system/cpu/cpufreq/policy0/scaling_governor").text == "userspace");
  // A missing attribute is ENOENT for reads and writes (writes never create files).
  CHECK(fs.read("/sys/nope").error == ENOENT);
  CHECK(fs.write("/sys/devices/system/cpu/cpufreq/policy0/scaling_setspeed", "1").error == ENOENT);
  CHECK_FALSE(fs.exists("/sys/devices/system/cpu/cpufreq/policy0/scaling_setspeed"));
  CHECK(fs.list("/sys/none").empty());
}

TEST_CASE("FaultySysFs injects errno per path and records the writes that happened", "[hw][sysfs]") {
  FakeRoot root;
  write_fake_file(root.path, "/sys/a", "1");
  auto faulty = std::make_shared<FaultySysFs>(std::make_shared<RealSysFs>(root.path));
  faulty->fail_write("/sys/a", EACCES);
  faulty->fail_read("/sys/a", EBUSY);
  CHECK(faulty->write("/sys/a", "2").error == EACCES);
  CHECK(faulty->read("/sys/a").error == EBUSY);
  CHECK(faulty->read("/sys/a").message() == std::string(std::strerror(EBUSY)));
  faulty->fail_write("/sys/a", 0);
  faulty->fail_read("/sys/a", 0);
  CHECK(faulty->write("/sys/a", "3").ok());
  CHECK(faulty->read("/sys/a").text == "3");
  REQUIRE(faulty->writes().size() == 1);
  CHECK(faulty->writes()[0] == std::make_pair(std::string("/sys/a"), std::string("3")));
}

TEST_CASE("snap_up picks the lowest table entry at or above a request", "[hw]") {
  const std::vector<uint64_t> table = {200, 400, 800};
  CHECK(snap_up(table, 1) == 200);
  CHECK(snap_up(table, 400) == 400);
  CHECK(snap_up(table, 401) == 800);
  CHECK(snap_up(table, 5000) == 800);
  CHECK(snap_up({}, 123) == 123);
}
