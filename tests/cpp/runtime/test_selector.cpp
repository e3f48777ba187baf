// The selector (constraints, objectives, fallback, feedback, stability) and the ladder
// baseline, on small hand-made tables.
#include <dydnn/errors.h>
#include <dydnn/runtime/ladder.h>
#include <dydnn/runtime/selector.h>

#include <catch2/catch.hpp>

#include <cmath>

namespace {

using namespace dydnn::runtime;

Point point(uint64_t config, double latency_ms, double accuracy, double power_w) {
  Point p;
  p.config = config;
  p.name = "c" + std::to_string(config);
  p.latency_s = latency_ms * 1e-3;
  p.accuracy = accuracy;
  p.power_w = power_w;
  return p;
}

// Four widths: faster is less accurate; the widest draws the most power.
std::vector<Point> widths() {
  return {point(0b1, 1.0, 0.80, 1.0), point(0b11, 2.0, 0.85, 1.2), point(0b111, 3.0, 0.88, 1.4),
          point(0b1111, 4.0, 0.90, 1.6)};
}

Constraints latency(double ms) {
  Constraints c;
  c.max_latency_s = ms * 1e-3;
  return c;
}

}  // namespace

TEST_CASE("the selector picks the best feasible point for each objective and constraint", "[runtime][selector]") {
  Selector s(widths());
  CHECK(s.decide(latency(10), Objective::MaxAccuracy, 0).index == 3);
  CHECK(s.best(latency(3.5), Objective::MaxAccuracy, 1.0) == 2);
  CHECK(s.best(latency(2.0), Objective::MaxAccuracy, 1.0) == 1);  // the limit is inclusive
  // Min energy: energy = power x latency, so the fastest point is cheapest here.
  CHECK(s.best(latency(10), Objective::MinEnergy, 1.0) == 0);
  Constraints accurate = latency(10);
  accurate.min_accuracy = 0.86;
  CHECK(s.best(accurate, Objective::MinEnergy, 1.0) == 2);
  Constraints power = latency(10);
  power.max_power_w = 1.3;
  CHECK(s.best(power, Objective::MaxAccuracy, 1.0) == 1);
  Constraints energy = latency(10);
  energy.max_energy_j = 2.5e-3;  // c11 costs 2.4 mJ, c111 4.2 mJ
  CHECK(s.best(energy, Objective::MaxAccuracy, 1.0) == 1);
}

TEST_CASE("nothing feasible: the fastest point, flagged", "[runtime][selector]") {
  Selector s(widths());
  const auto d = s.decide(latency(0.5), Objective::MaxAccuracy, 0);
  CHECK(d.index == 0);
  CHECK_FALSE(d.feasible);
  CHECK(d.reason == Reason::Infeasible);
  Constraints impossible = latency(10);
  impossible.min_accuracy = 0.95;
  CHECK_FALSE(s.decide(impossible, Objective::MinEnergy, 1).feasible);
}

TEST_CASE("feedback: a measured slowdown moves the choice to a faster point and back", "[runtime][selector]") {
  SelectorOptions o;
  o.ewma_alpha = 0.5;
  o.up_margin = 0.1;
  Selector s(widths(), o);
  CHECK(s.decide(latency(4.2), Objective::MaxAccuracy, 0).index == 3);
  // A background load: every run takes 1.5x the table's latency.
  for (int k = 0; k < 10; ++k) s.observe(3, 6e-3);
  CHECK(s.slowdown() == Approx(1.5).epsilon(0.01));
  const auto d = s.decide(latency(4.2), Objective::MaxAccuracy, 1);
  CHECK(d.index == 1);  // 2 ms x 1.5 = 3 ms fits; 3 ms x 1.5 = 4.5 ms does not
  CHECK(d.switched);
  CHECK(d.predicted_latency_s == Approx(3e-3).epsilon(0.01));
  // The load goes away: back up, but a slower point must fit with 10% to spare.
  for (int k = 0; k < 20; ++k) s.observe(1, 2e-3);
  CHECK(s.decide(latency(4.2), Objective::MaxAccuracy, 2).index == 2);  // 3 ms <= 0.9 x 4.2
  CHECK(s.decide(latency(4.2), Objective::MaxAccuracy, 3).index == 2);  // 4 ms > 0.9 x 4.2
  CHECK(s.decide(latency(4.5), Objective::MaxAccuracy, 4).index == 3);  // 4 ms <= 0.9 x 4.5
}

TEST_CASE("stability: margins, dwell time and switch cost prevent oscillation", "[runtime][selector]") {
  SECTION("up margin: a point that only just fits is not taken from below") {
    SelectorOptions o;
    o.up_margin = 0.1;
    Selector s(widths(), o);
    CHECK(s.decide(latency(2.5), Objective::MaxAccuracy, 0).index == 1);
    // 3 ms now fits a 3.2 ms limit, but not with 10% to spare: stay.
    const auto d = s.decide(latency(3.2), Objective::MaxAccuracy, 1);
    CHECK(d.index == 1);
    CHECK(d.reason == Reason::Kept);
    CHECK(s.decide(latency(3.4), Objective::MaxAccuracy, 2).index == 2);
  }
  SECTION("a steady input with noisy measurements never oscillates") {
    SelectorOptions o;
    o.up_margin = 0.1;
    o.ewma_alpha = 0.2;
    Selector s(widths(), o);
    int switches = 0;
    // The limit sits right at the 3 ms point; measurements jitter +-4% around the table.
    for (int k = 0; k < 1000; ++k) {
      const auto d = s.decide(latency(3.05), Objective::MaxAccuracy, k * 1e-3);
      switches += d.switched && k > 0;
      const double jitter = 1.0 + 0.04 * std::sin(0.7 * k);
      s.observe(d.index, s.points()[d.index].latency_s * jitter);
    }
    CHECK(switches <= 1);
  }
  SECTION("minimum dwell time, unless the current point breaks a constraint") {
    SelectorOptions o;
    o.min_dwell_s = 0.5;
    o.up_margin = 0;
    Selector s(widths(), o);
    CHECK(s.decide(latency(2.5), Objective::MaxAccuracy, 0.0).index == 1);
    const auto held = s.decide(latency(10), Objective::MaxAccuracy, 0.1);
    CHECK(held.index == 1);
    CHECK(held.reason == Reason::Dwell);
    CHECK(s.decide(latency(10), Objective::MaxAccuracy, 0.6).index == 3);
    // Breaking the limit overrides the dwell time.
    CHECK(s.decide(latency(1.5), Objective::MaxAccuracy, 0.7).index == 0);
  }
  SECTION("switch cost: a gain smaller than the cost does not switch") {
    SelectorOptions o;
    o.switch_cost = 0.04;
    o.up_margin = 0;
    Selector s(widths(), o);
    CHECK(s.decide(latency(3), Objective::MaxAccuracy, 0).index == 2);
    CHECK(s.decide(latency(10), Objective::MaxAccuracy, 1).index == 2);  // +0.02 < 0.04
    CHECK(s.decide(latency(2), Objective::MaxAccuracy, 2).index == 1);   // forced down
    CHECK(s.decide(latency(10), Objective::MaxAccuracy, 3).index == 3);  // +0.05 > 0.04
  }
}

TEST_CASE("a single preempted inference does not move the choice; a lasting slowdown does", "[runtime][selector]") {
  SelectorOptions o;
  o.ewma_alpha = 0.5;
  o.up_margin = 0;
  Selector s(widths(), o);
  CHECK(s.decide(latency(4.5), Objective::MaxAccuracy, 0).index == 3);
  s.observe(3, 40e-3);  // one 10x outlier (a scheduler time slice)
  for (int k = 0; k < 3; ++k) s.observe(3, 4e-3);
  CHECK(s.slowdown() == Approx(1.0));
  CHECK(s.decide(latency(4.5), Objective::MaxAccuracy, 1).index == 3);
  for (int k = 0; k < 5; ++k) s.observe(3, 6e-3);  // a lasting 1.5x
  CHECK(s.slowdown() > 1.4);
  CHECK(s.decide(latency(4.5), Objective::MaxAccuracy, 2).index == 2);
  CHECK_THROWS_WITH(SlowdownFilter(0.2, 0), Catch::Contains("feedback_window 0 (valid: 1..32)"));
}

TEST_CASE("the Pareto front over latency, energy and accuracy", "[runtime][selector]") {
  auto points = widths();
  points.push_back(point(0b11, 2.5, 0.84, 1.3));  // slower, costlier and less accurate than c11
  points.push_back(point(0b1, 1.0, 0.80, 0.9));   // the same as c1 but cheaper: dominates it
  const auto front = pareto_front(points);
  CHECK(front == std::vector<size_t>{5, 1, 2, 3});
}

TEST_CASE("bad tables and options are refused with the value and the valid range", "[runtime][selector]") {
  CHECK_THROWS_WITH(Selector({}), Catch::Contains("table of operating points is empty"));
  auto bad = widths();
  bad[1].latency_s = 0;
  CHECK_THROWS_WITH(Selector(bad), Catch::Contains("latency 0 s (valid: finite, > 0)"));
  bad = widths();
  bad[2].accuracy = 90;
  CHECK_THROWS_WITH(Selector(bad), Catch::Contains("accuracy 90 (valid: 0..1)"));
  SelectorOptions o;
  o.ewma_alpha = 0;
  CHECK_THROWS_WITH(Selector(widths(), o), Catch::Contains("ewma_alpha 0"));
  Selector s(widths());
  CHECK_THROWS_AS(s.observe(9, 1e-3), dydnn::IndexError);
  CHECK_THROWS_WITH(s.observe(0, -1), Catch::Contains("measured latency -1 s"));
  CHECK_THROWS_WITH(objective_from_string("fast"), Catch::Contains("valid: max_accuracy, min_energy"));
  CHECK_THROWS_WITH(s.decide(latency(-1), Objective::MaxAccuracy, 0), Catch::Contains("max_latency_s -0.001"));
  Constraints floor;
  floor.min_accuracy = 1.5;
  CHECK_THROWS_WITH(s.decide(floor, Objective::MaxAccuracy, 0), Catch::Contains("min_accuracy 1.5 (valid: 0..1)"));
  floor.min_accuracy = std::nan("");
  CHECK_THROWS_WITH(s.decide(floor, Objective::MaxAccuracy, 0), Catch::Contains("min_accuracy nan"));
  LadderPolicy ladder(widths());
  CHECK_THROWS_WITH(ladder.decide(0, 1, 0), Catch::Contains("target latency 0 s (valid: > 0)"));
}

TEST_CASE("the ladder steps down on a slow moving average and up with slack", "[runtime][ladder]") {
  LadderOptions o;
  o.window = 5;
  o.memory_s = 1.0;
  LadderPolicy ladder(widths(), o);
  REQUIRE(ladder.rungs() == std::vector<size_t>{0, 1, 2, 3});
  double now = 0;
  // A loose target: climb one rung per full window up to the top.
  for (int k = 0; k < 40; ++k, now += 1e-3) {
    const size_t p = ladder.decide(10e-3, 1.0, now);
    ladder.observe(widths()[p].latency_s);
  }
  CHECK(ladder.rung() == 3);
  // The target drops below the top rung's latency: one rung down per full window.
  for (int k = 0; k < 6; ++k, now += 1e-3) ladder.observe(ladder.decide(3.5e-3, 1.0, now) == 3 ? 4e-3 : 3e-3);
  CHECK(ladder.rung() == 2);
  // Slack again, but the rung just left is remembered for memory_s: no immediate retry.
  for (int k = 0; k < 10; ++k, now += 1e-3) ladder.observe(widths()[ladder.decide(10e-3, 1.0, now)].latency_s);
  CHECK(ladder.rung() == 2);
  now += 1.0;
  for (int k = 0; k < 10; ++k, now += 1e-3) ladder.observe(widths()[ladder.decide(10e-3, 1.0, now)].latency_s);
  CHECK(ladder.rung() == 3);
}
