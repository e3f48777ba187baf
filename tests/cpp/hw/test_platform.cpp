// Platform files: the built-in boards hold platforms.md's tables, and bad files are refused
// with the file, the line and the token.
#include <dydnn/errors.h>
#include <dydnn/hw/platform.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

namespace {

using namespace dydnn::hw;

constexpr uint64_t kMHz = 1000000;

/// A minimal valid file; tests swap one line for a broken one.
std::string valid_text() {
  return "platform tiny\n"
         "cluster policy0 cpus=0-1 coeff_uw_per_mhz_v2=100 static_w=0.1 latency_us=10 power_model=assumed\n"
         "opp 500 0.9\n"
         "opp 1000 1.0\n";
}

}  // namespace

TEST_CASE("The built-in platforms are listed and load", "[hw][platform]") {
  const auto names = Platform::builtin_names();
  for (const char* name : {"exynos5422", "jetson_nano", "generic_host"}) {
    INFO(name);
    CHECK(std::find(names.begin(), names.end(), name) != names.end());
    const Platform p = Platform::builtin(name);
    CHECK(p.name == name);
    CHECK_FALSE(p.description.empty());
    CHECK_FALSE(p.sources.empty());
  }
}

TEST_CASE("Exynos 5422: clusters, OPP tables and coefficients from the device tree", "[hw][platform]") {
  const Platform p = Platform::builtin("exynos5422");
  REQUIRE(p.domains.size() == 3);

  const PlatformDomain& big = p.domain("policy4");
  CHECK(big.label == "A15");
  CHECK(&p.domain("A15") == &big);
  CHECK(big.kind == DomainKind::CpuCluster);
  CHECK(big.cpus == std::vector<int>{4, 5, 6, 7});
  CHECK(big.coeff_uw_per_mhz_v2 == 310);
  CHECK(big.capacity == 1024);
  CHECK(big.transition_latency_s == Approx(140e-6));
  CHECK(big.power_model == "dts");
  REQUIRE(big.opps.size() == 19);
  for (size_t k = 0; k < big.opps.size(); ++k) CHECK(big.opps[k].hz == (200 + 100 * k) * kMHz);
  CHECK(big.volts_at(800 * kMHz) == 0.900);
  CHECK(big.volts_at(900 * kMHz) == 1.000);
  CHECK(big.volts_at(1500 * kMHz) == 1.100);
  CHECK(big.volts_at(1700 * kMHz) == 1.250);
  CHECK(big.volts_at(1800 * kMHz) == 1.2375);
  CHECK(big.volts_at(1900 * kMHz) == 1.2625);
  CHECK(big.volts_at(2000 * kMHz) == 1.3125);

  const PlatformDomain& little = p.domain("policy0");
  CHECK(little.label == "A7");
  CHECK(little.cpus == std::vector<int>{0, 1, 2, 3});
  CHECK(little.coeff_uw_per_mhz_v2 == 90);
  CHECK(little.capacity == 539);
  REQUIRE(little.opps.size() == 13);
  CHECK(little.opps.front().hz == 200 * kMHz);
  CHECK(little.opps.back().hz == 1400 * kMHz);
  CHECK(little.volts_at(300 * kMHz) == 0.900);
  CHECK(little.volts_at(700 * kMHz) == 1.000);
  CHECK(little.volts_at(1000 * kMHz) == 1.100);
  CHECK(little.volts_at(1300 * kMHz) == 1.250);
  CHECK(little.volts_at(1400 * kMHz) == 1.275);

  const PlatformDomain& gpu = p.domain("mali0");
  CHECK(gpu.kind == DomainKind::Gpu);
  CHECK(gpu.cpus.empty());
  CHECK(gpu.units() == 1);
  CHECK(gpu.power_model == "assumed");
  CHECK(gpu.frequencies_hz() ==
        std::vector<uint64_t>{177 * kMHz, 266 * kMHz, 350 * kMHz, 420 * kMHz, 480 * kMHz, 543 * kMHz, 600 * kMHz});
  // Static power must be there (platforms.md), or the lowest frequency always looks cheapest.
  for (const auto& d : p.domains) CHECK(d.static_w > 0);
}

TEST_CASE("Exynos 5422: per-core dynamic power matches platforms.md", "[hw][platform]") {
  const Platform p = Platform::builtin("exynos5422");
  const auto& a15 = p.domain("A15");
  const auto& a7 = p.domain("A7");
  CHECK(a15.dynamic_power_w(200 * kMHz, 1) == Approx(0.050).margin(0.0005));
  CHECK(a15.dynamic_power_w(1200 * kMHz, 1) == Approx(0.372).margin(0.0005));
  CHECK(a15.dynamic_power_w(2000 * kMHz, 1) == Approx(1.07).margin(0.005));
  CHECK(a7.dynamic_power_w(200 * kMHz, 1) == Approx(0.015).margin(0.0005));
  CHECK(a7.dynamic_power_w(1400 * kMHz, 1) == Approx(0.205).margin(0.0005));
  // Linear in the busy cores.
  CHECK(a15.dynamic_power_w(1200 * kMHz, 2.5) == Approx(2.5 * 0.372));
  CHECK(a15.dynamic_power_w(1200 * kMHz, 0) == 0);
  CHECK_THROWS_WITH(
      a15.dynamic_power_w(1250 * kMHz, 1),
      Catch::Contains("policy4: 1250000000 Hz is not an operating point") && Catch::Contains("1200000000, 1300000000"));
}

TEST_CASE("Jetson Nano: kHz table, 76.8 MHz GPU steps, an assumed power model", "[hw][platform]") {
  const Platform p = Platform::builtin("jetson_nano");
  REQUIRE(p.domains.size() == 2);
  const auto& cpu = p.domain("policy0");
  CHECK(cpu.cpus == std::vector<int>{0, 1, 2, 3});
  const std::vector<uint64_t> khz = {102000, 204000,  307200,  403200,  518400,  614400,  710400, 825600,
                                     921600, 1036800, 1132800, 1224000, 1326000, 1428000, 1479000};
  std::vector<uint64_t> hz;
  for (auto k : khz) hz.push_back(k * 1000);
  CHECK(cpu.frequencies_hz() == hz);
  CHECK(cpu.power_model == "assumed");

  const auto& gpu = p.domain("57000000.gpu");
  CHECK(gpu.kind == DomainKind::Gpu);
  CHECK(gpu.power_model == "assumed");
  REQUIRE(gpu.opps.size() == 12);
  for (size_t k = 0; k < gpu.opps.size(); ++k) CHECK(gpu.opps[k].hz == 76800000 * (k + 1));
  // The assumed model stays within the MaxN budget (10 W): every unit busy at its maximum.
  const double full = cpu.dynamic_power_w(cpu.opps.back().hz, 4) + cpu.static_w +
                      gpu.dynamic_power_w(gpu.opps.back().hz, 1) + gpu.static_w;
  CHECK(full < 10.0);
  CHECK(full > 3.0);
}

TEST_CASE("generic_host: a 2-core test host with round numbers", "[hw][platform]") {
  const Platform p = Platform::builtin("generic_host");
  REQUIRE(p.domains.size() == 1);
  const auto& d = p.domains[0];
  CHECK(d.units() == 2);
  CHECK(d.frequencies_hz() == std::vector<uint64_t>{1000 * kMHz, 1500 * kMHz, 2000 * kMHz, 2500 * kMHz, 3000 * kMHz});
  CHECK(d.dynamic_power_w(2000 * kMHz, 1) == Approx(2.0));
  CHECK(p.find("policy0") == 0);
  CHECK(p.find("host") == 0);
  CHECK(p.find("gpu") == -1);
  CHECK_THROWS_WITH(p.domain("gpu"),
                    Catch::Contains("platform 'generic_host' has no domain 'gpu' (valid: policy0 (host))"));
}

TEST_CASE("Platform::parse accepts comments, CPU lists and decimal MHz", "[hw][platform]") {
  const Platform p = Platform::parse(
      "# a comment\n\n  platform t\r\n"
      "description two words\n"
      "source one\nsource two\n"
      "cluster c0 label=L cpus=0,2-3 coeff_uw_per_mhz_v2=1 capacity=512 static_w=0 "
      "latency_us=0 power_model=fitted\n"
      "   # indented comment\n"
      "opp 76.8 0.8\n"
      "gpu g coeff_uw_per_mhz_v2=2 static_w=0.5 latency_us=1.5 power_model=dts\n"
      "opp 1 1\n");
  CHECK(p.name == "t");
  CHECK(p.description == "two words");
  CHECK(p.sources == std::vector<std::string>{"one", "two"});
  REQUIRE(p.domains.size() == 2);
  CHECK(p.domains[0].cpus == std::vector<int>{0, 2, 3});
  CHECK(p.domains[0].capacity == 512);
  CHECK(p.domains[0].opps[0].hz == 76800000);
  CHECK(p.domains[1].label == "g");
  CHECK(p.domains[1].transition_latency_s == Approx(1.5e-6));
}

TEST_CASE("Platform::parse names the file, line and token of every error", "[hw][platform]") {
  const auto broken = [](const std::string& line3) {
    std::string text = valid_text();
    const auto third = text.find("opp 500");
    return text.substr(0, third) + line3 + "\n" + text.substr(third);
  };
  struct Case {
    std::string line;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"frequency 5",
       "bad.platform:3: unknown keyword (valid: platform, description, source, cluster, gpu, opp) (at 'frequency')"},
      {"opp fast 1.0", "bad.platform:3: frequency (MHz) must be a number (at 'fast')"},
      {"opp 400 9", "bad.platform:3: voltage (V) = 9 is out of range (valid: 0.1 to 3) (at '9')"},
      {"opp 400", "bad.platform:3: expected 'opp <MHz> <volts>' (at 'opp')"},
      {"opp 1500 1.0\nopp 700 1.0",
       "bad.platform:4: OPPs must be in ascending frequency (previous: 1500 MHz) (at '700')"},
      {"platform again", "bad.platform:3: a second 'platform' line (the first named 'tiny') (at 'again')"},
      {"description", "bad.platform:3: 'description' needs a text after it (at 'description')"},
  };
  for (const auto& c : cases) {
    INFO(c.line);
    CHECK_THROWS_WITH(Platform::parse(broken(c.line), "bad.platform"), Catch::Contains(c.message));
  }
  // The OPP at line 3 of valid_text() is the first one, so an ascending error is also on line 4.
  CHECK_THROWS_AS(Platform::parse(broken("opp 2000 1.0"), "bad.platform"), dydnn::ValueError);

  const std::vector<Case> headers = {
      {"cluster policy0 cpus=0-1 coeff_uw_per_mhz_v2=100 static_w=0.1 latency_us=10", "needs power_model=..."},
      {"cluster policy0 coeff_uw_per_mhz_v2=100 static_w=0.1 latency_us=10 power_model=dts", "needs cpus=..."},
      {"cluster policy0 cpus=0-1 coeff_uw_per_mhz_v2=100 static_w=-1 latency_us=10 power_model=dts",
       "static_w = -1 is out of range (valid: 0 to 1000) (at 'static_w=-1')"},
      {"cluster policy0 cpus=3-1 coeff_uw_per_mhz_v2=100 static_w=1 latency_us=10 power_model=dts",
       "CPU range 3-1 is backwards (at 'cpus=3-1')"},
      {"cluster policy0 cpus=0-x coeff_uw_per_mhz_v2=100 static_w=1 latency_us=10 power_model=dts",
       "cpus must be a list of CPU numbers and ranges"},
      {"cluster policy0 cpus=0-1 coeff_uw_per_mhz_v2=100 static_w=1 latency_us=10 power_model=guess",
       "power_model must be dts, assumed or fitted (at 'power_model=guess')"},
      {"cluster policy0 cpus=0-1 volts=1 coeff_uw_per_mhz_v2=100 static_w=1 latency_us=10 power_model=dts",
       "unknown key 'volts' for 'cluster'"},
      {"cluster policy0 cpus=0-1 cpus=2 coeff_uw_per_mhz_v2=100 static_w=1 latency_us=10 power_model=dts",
       "'cpus' is given twice"},
      {"gpu g cpus=0 coeff_uw_per_mhz_v2=100 static_w=1 latency_us=10 power_model=dts", "unknown key 'cpus' for 'gpu'"},
      {"cluster policy0 capacity coeff_uw_per_mhz_v2=100 static_w=1 latency_us=10 power_model=dts cpus=0",
       "expected key=value (at 'capacity')"},
  };
  for (const auto& c : headers) {
    INFO(c.line);
    const std::string text = "platform t\n" + c.line + "\nopp 100 1\n";
    CHECK_THROWS_WITH(Platform::parse(text, "h.platform"),
                      Catch::Contains("h.platform:2: ") && Catch::Contains(c.message));
  }

  // Whole-file problems.
  CHECK_THROWS_WITH(Platform::parse("cluster a cpus=0 coeff_uw_per_mhz_v2=1 static_w=0 latency_us=0 power_model=dts\n"
                                    "opp 1 1\n",
                                    "f"),
                    Catch::Contains("f:2: no 'platform <name>' line"));
  CHECK_THROWS_WITH(Platform::parse("platform t\n", "f"), Catch::Contains("f:1: no 'cluster' or 'gpu' domain"));
  CHECK_THROWS_WITH(
      Platform::parse("platform t\n"
                      "cluster a cpus=0 coeff_uw_per_mhz_v2=1 static_w=0 latency_us=0 power_model=dts\n"
                      "cluster b cpus=1 coeff_uw_per_mhz_v2=1 static_w=0 latency_us=0 power_model=dts\nopp 1 1\n",
                      "f"),
      Catch::Contains("f:2: domain 'a' has no 'opp' lines"));
  CHECK_THROWS_WITH(
      Platform::parse("platform t\n"
                      "cluster a cpus=0-3 coeff_uw_per_mhz_v2=1 static_w=0 latency_us=0 power_model=dts\nopp 1 1\n"
                      "cluster b cpus=3-4 coeff_uw_per_mhz_v2=1 static_w=0 latency_us=0 power_model=dts\nopp 1 1\n",
                      "f"),
      Catch::Contains("f:4: CPU 3 is already in domain 'a' (at 'b')"));
  CHECK_THROWS_WITH(Platform::parse("platform t\n"
                                    "gpu a coeff_uw_per_mhz_v2=1 static_w=0 latency_us=0 power_model=dts\nopp 1 1\n"
                                    "gpu a coeff_uw_per_mhz_v2=1 static_w=0 latency_us=0 power_model=dts\nopp 1 1\n",
                                    "f"),
                    Catch::Contains("f:4: a second domain named 'a'"));
  CHECK_THROWS_WITH(Platform::parse("platform t\nopp 1 1\n", "f"),
                    Catch::Contains("f:2: an 'opp' line must follow a 'cluster' or 'gpu' line"));
}

TEST_CASE("Platform::load and builtin report missing files and unknown names", "[hw][platform]") {
  CHECK_THROWS_WITH(Platform::load("/nonexistent/x.platform"),
                    Catch::Contains("cannot read platform file '/nonexistent/x.platform'"));
  CHECK_THROWS_WITH(Platform::builtin("odroid"), Catch::Contains("unknown platform 'odroid'") &&
                                                     Catch::Contains("exynos5422, generic_host") &&
                                                     Catch::Contains("jetson_nano"));
  CHECK_THROWS_AS(Platform::builtin("../platforms/exynos5422"), dydnn::ValueError);

  // A file on disk: errors carry its path.
  const auto path =
      std::filesystem::temp_directory_path() / ("dydnn_platform_" + std::to_string(::getpid()) + ".platform");
  {
    std::ofstream out(path);
    out << valid_text() << "opp 2000 x\n";
  }
  CHECK_THROWS_WITH(Platform::load(path.string()),
                    Catch::Contains(path.string() + ":5: voltage (V) must be a number (at 'x')"));
  {
    std::ofstream out(path);
    out << valid_text();
  }
  CHECK(Platform::load(path.string()).domains.at(0).opps.size() == 2);
  std::filesystem::remove(path);
}
