// Width x exit operating points: the profiler's exit and adaptive points, and the manager
// running a point at its depth.
#include <dydnn/runtime/manager.h>
#include <dydnn/runtime/profiler.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>

namespace {

using namespace dydnn;
using Catch::Matchers::Contains;

nn::NetSpec tiny_exits() {
  return nn::NetSpec::parse(
      "dydnn-spec 1\nname tiny_exits\ninput 1 8 8\nclasses 4\ngroups 2\nconnectivity incremental\n"
      "conv 8 kernel=3 padding=1 bn relu maxpool=2\nexit after=1\nconv 8 kernel=3 padding=1 bn relu maxpool=2\n");
}

// 30 random images; the profiler with two adaptive thresholds, one that exits everything.
std::vector<io::OperatingPoint> profile_tiny(nn::DynamicNet& net, int64_t repetitions,
                                             runtime::EnergyReader energy = {}) {
  const data::ImageDataset data{torch::randint(0, 256, {30, 1, 8, 8}, torch::kLong).to(torch::kUInt8),
                                torch::randint(0, 4, {30})};
  runtime::ProfileOptions o;
  o.warmup = 1;
  o.repetitions = repetitions;
  o.progress = false;
  o.exit_thresholds = {0.5, 100.0};
  o.energy = std::move(energy);
  return runtime::profile(net, data, data::Normalization{}, o);
}

}  // namespace

TEST_CASE("the profiler adds width x exit points and adaptive points", "[runtime][profiler][exits]") {
  torch::manual_seed(8);
  nn::DynamicNet net(tiny_exits());
  const auto table = profile_tiny(net, 5);
  // Per config: the final head, exit 0, and two adaptive points.
  REQUIRE(table.size() == 4 * net->configs().size());
  for (size_t c = 0; c < net->configs().size(); ++c) {
    const auto& final_head = table[4 * c];
    const auto& exit0 = table[4 * c + 1];
    const auto& always = table[4 * c + 3];
    CHECK(final_head.knobs.count("exit") == 0);
    CHECK(exit0.knobs.at("exit") == 0);
    CHECK(table[4 * c + 2].knobs.at("exit_threshold") == 0.5);
    const double rates = table[4 * c + 2].metrics.at("exit_rate_0") + table[4 * c + 2].metrics.at("exit_rate_1");
    CHECK(rates == Approx(1.0));
    // Threshold 100 nats: every sample leaves at exit 0, with exit 0's accuracy.
    CHECK(always.metrics.at("exit_rate_0") == 1.0);
    CHECK(always.metrics.at(io::metric::kTop1) == exit0.metrics.at(io::metric::kTop1));
    CHECK(always.metrics.at(io::metric::kLatencyP50Us) > 0);
  }
  // The selector reads them; the names say the knob.
  const auto points = runtime::to_points(table);
  CHECK(points[1].name.find("exit=0") != std::string::npos);
}

TEST_CASE("with an energy source every depth point has energy and power", "[runtime][profiler][exits][energy]") {
  torch::manual_seed(10);
  nn::DynamicNet net(tiny_exits());
  // A meter drawing 2 W all the time: energy per inference follows latency.
  const auto start = std::chrono::steady_clock::now();
  const auto table = profile_tiny(net, 20, [start] {
    return 2.0 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
  for (const auto& p : table) {
    INFO(p.config.name() << " exit " << (p.knobs.count("exit") ? p.knobs.at("exit") : -1.0));
    REQUIRE(p.metrics.count(io::metric::kEnergyMj) == 1);
    REQUIRE(p.metrics.count(io::metric::kPowerW) == 1);
    CHECK(p.metrics.at(io::metric::kEnergyMj) > 0);
    CHECK(p.metrics.at(io::metric::kPowerW) > 0.5);
    CHECK(p.metrics.at(io::metric::kPowerW) < 8.0);
  }
  // The always-exiting adaptive point costs what its one path costs; the selector sees it.
  for (size_t c = 0; c < net->configs().size(); ++c)
    CHECK(table[4 * c + 3].metrics.at(io::metric::kEnergyMj) > 0);
  for (const auto& point : runtime::to_points(table)) CHECK(std::isfinite(point.energy_j));
}

TEST_CASE("the manager runs each point at its depth", "[runtime][manager][exits]") {
  torch::manual_seed(9);
  nn::DynamicNet net(tiny_exits());
  net->eval();
  auto point = [](uint64_t config, std::map<std::string, double> knobs, double ms, double accuracy) {
    runtime::Point p;
    p.config = config;
    p.name = fmt::format("{}", knobs.size());
    p.knobs = std::move(knobs);
    p.latency_s = ms * 1e-3;
    p.accuracy = accuracy;
    return p;
  };
  std::vector<runtime::Point> points = {point(0b11, {}, 2.0, 0.9), point(0b11, {{"exit", 0}}, 1.0, 0.8),
                                        point(0b11, {{"exit_threshold", 0.3}}, 1.5, 0.85)};
  runtime::SelectorOptions options;
  options.up_margin = 0;
  runtime::ModelManager m(net, points, options, std::make_shared<runtime::LocalKnobs>(),
                          std::make_shared<hw::VirtualClock>());
  c10::InferenceMode guard;
  const auto x = torch::randn({1, 1, 8, 8});
  runtime::Targets t;
  t.constraints.max_latency_s = 1.2e-3;  // only the exit-0 point
  m.set_targets(t);
  CHECK(torch::equal(m.infer(x), net->forward_to_exit(x, nn::Config(0b11), 0)));
  CHECK(m.current() == 1);
  CHECK(runtime::depth_knobs({{"exit_threshold", 0.3}}, 2).policy.thresholds == std::vector<double>{0.3});
  CHECK_THROWS_WITH(runtime::ModelManager(net, {point(0b11, {{"exit", 2}}, 1.0, 0.8)}),
                    Contains("knob exit=2 is out of range (valid: 0..1)"));
}
