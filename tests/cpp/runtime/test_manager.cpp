// The model manager (decisions, knob application, logging, its own thread) and the
// hierarchical system manager (shared knobs chosen for the most demanding model).
#include <dydnn/runtime/manager.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <thread>

namespace {

using namespace dydnn;
using runtime::Point;

nn::NetSpec two_groups() {
  return nn::NetSpec::parse(
      "dydnn-spec 1\nname two\ninput 1 8 8\nclasses 4\ngroups 2\nconnectivity incremental\n"
      "conv 8 kernel=3 padding=1 bn relu maxpool=2\n");
}

// Records what it was asked to apply; can refuse.
struct RecordingKnobs : runtime::KnobApplier {
  std::vector<std::map<std::string, double>> applied;
  bool refuse = false;
  hw::Status apply(const std::map<std::string, double>& knobs) override {
    applied.push_back(knobs);
    return refuse ? hw::Status::failure("refused for the test") : hw::Status::success();
  }
};

Point at(uint64_t config, double hz, double latency_ms, double accuracy) {
  Point p;
  p.config = config;
  p.name = fmt::format("{}@{}", config, hz);
  p.knobs = {{"cpu_hz", hz}};
  p.latency_s = latency_ms * 1e-3;
  p.accuracy = accuracy;
  return p;
}

// A at 1 ms / f, AB at 2 ms / f, for f in 1, 2, 3 (arbitrary units).
std::vector<Point> table(double scale = 1.0) {
  std::vector<Point> points;
  for (double f : {1.0, 2.0, 3.0}) {
    points.push_back(at(0b01, f, scale * 1.0 / f, 0.80));
    points.push_back(at(0b11, f, scale * 2.0 / f, 0.90));
  }
  return points;
}

runtime::Targets deadline(double ms) {
  runtime::Targets t;
  t.constraints.max_latency_s = ms * 1e-3;
  return t;
}

}  // namespace

TEST_CASE("the manager applies the chosen config and knobs, and logs each decision", "[runtime][manager]") {
  nn::DynamicNet net(two_groups());
  auto knobs = std::make_shared<RecordingKnobs>();
  auto clock = std::make_shared<hw::VirtualClock>();
  runtime::SelectorOptions o;
  o.up_margin = 0;
  runtime::ModelManager m(net, table(), o, knobs, clock);
  m.set_targets(deadline(0.8));
  c10::InferenceMode guard;
  const auto logits = m.infer(torch::randn({1, 1, 8, 8}));
  CHECK(logits.sizes() == c10::IntArrayRef({1, 4}));
  // 0.8 ms: AB needs f=3 (0.67 ms): the most accurate feasible point.
  CHECK(m.points()[m.current()].name == "3@3");
  CHECK(net->config() == nn::Config(0b11));
  REQUIRE(knobs->applied.size() == 1);
  CHECK(knobs->applied[0].at("cpu_hz") == 3.0);

  clock->advance(1000000);
  m.set_targets(deadline(0.4));  // only A at f=3 (0.33 ms)
  m.infer(torch::randn({1, 1, 8, 8}));
  CHECK(m.points()[m.current()].name == "1@3");
  CHECK(net->config() == nn::Config(0b01));
  const auto log = m.log();
  REQUIRE(log.size() == 2);
  CHECK(log[1].switched);
  CHECK(log[1].time_s == Approx(1e-3));
  CHECK(log[1].measured_latency_s > 0);
  CHECK(log[1].targets.constraints.max_latency_s == Approx(0.4e-3));
  const auto csv = m.log_csv();
  CHECK_THAT(csv, Catch::StartsWith("time_s,max_latency_s") && Catch::Contains(",AB,cpu_hz=3,"));

  // A refused knob is logged, and inference goes on.
  knobs->refuse = true;
  clock->advance(1000000);
  m.set_targets(deadline(10));
  m.infer(torch::randn({1, 1, 8, 8}));
  m.infer(torch::randn({1, 1, 8, 8}));
  CHECK(m.log().back().knob_status == "refused for the test");
}

TEST_CASE("a measured slowdown moves the manager to a faster point", "[runtime][manager]") {
  nn::DynamicNet net(two_groups());
  auto clock = std::make_shared<hw::VirtualClock>();
  runtime::SelectorOptions o;
  o.ewma_alpha = 0.5;
  o.up_margin = 0;
  runtime::ModelManager m(net, table(), o, std::make_shared<RecordingKnobs>(), clock);
  m.set_targets(deadline(0.8));
  CHECK(m.points()[m.decide()].name == "3@3");
  for (int k = 0; k < 10; ++k) m.observe(2 * m.points()[5].latency_s);  // the model gets half the machine
  CHECK(m.slowdown() == Approx(2.0).epsilon(0.01));
  CHECK(m.points()[m.decide()].name == "1@3");  // A at 0.33 ms x 2 fits, AB at 0.67 ms x 2 does not
}

TEST_CASE("the manager decides on its own thread", "[runtime][manager]") {
  nn::DynamicNet net(two_groups());
  runtime::ModelManager m(net, table(), {}, std::make_shared<RecordingKnobs>());
  m.set_targets(deadline(10));
  m.start(0.002);
  c10::InferenceMode guard;
  for (int k = 0; k < 20; ++k) {
    m.infer(torch::randn({1, 1, 8, 8}));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  m.stop();
  CHECK(m.log().size() >= 3);
  CHECK(m.points()[m.current()].accuracy == 0.90);
  CHECK_THROWS_WITH(m.start(0), Catch::Contains("period 0 s (valid: > 0)"));
}

TEST_CASE("the manager refuses a table with configs the net lacks", "[runtime][manager]") {
  nn::DynamicNet net(two_groups());
  auto points = table();
  points[0].config = 0b10;  // B alone is not an incremental config
  CHECK_THROWS_WITH(runtime::ModelManager(net, points), Catch::Contains("which the net 'two' does not have"));
}

TEST_CASE("the system manager picks the shared state the most demanding model needs", "[runtime][manager]") {
  nn::DynamicNet net1(two_groups()), net2(two_groups());
  auto system_knobs = std::make_shared<RecordingKnobs>();
  runtime::SelectorOptions o;
  o.up_margin = 0;
  runtime::ModelManager m1(net1, table(), o, std::make_shared<RecordingKnobs>());
  runtime::ModelManager m2(net2, table(2.0), o, std::make_shared<RecordingKnobs>());  // a model twice as slow
  runtime::SystemManager system({"cpu_hz"}, system_knobs);
  system.add(m1);
  system.add(m2);
  CHECK(system.states().size() == 3);
  m1.set_targets(deadline(2.5));  // m1 fits at f=1 (A 1 ms)
  m2.set_targets(deadline(1.1));  // m2 needs f=2 (A 1 ms); AB needs 4/3 ms at f=3
  auto state = system.decide();
  CHECK(state.at("cpu_hz") == 2.0);
  REQUIRE_FALSE(system_knobs->applied.empty());
  CHECK(system_knobs->applied.back().at("cpu_hz") == 2.0);
  // At f=2 each model re-picks: m1 can afford AB (1 ms), m2 runs A (1 ms).
  CHECK(m1.points()[m1.log().back().point].name == "3@2");
  CHECK(m2.points()[m2.log().back().point].name == "1@2");
  // Nothing suits m2: the most capable state, and m2 falls back.
  m2.set_targets(deadline(0.1));
  state = system.decide();
  CHECK(state.at("cpu_hz") == 3.0);
  CHECK_FALSE(m2.log().back().feasible);
}
