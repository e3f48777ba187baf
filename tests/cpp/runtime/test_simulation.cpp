// The simulated serving loop (runtime/simulation.h): determinism, the manager and the
// baselines on simple traces, background load, two models under the system manager, dropped
// requests and the input checks.
#include <dydnn/runtime/simulation.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

namespace {

using namespace dydnn;
using Catch::Matchers::Contains;

nn::DynamicNet two_group_net() {
  return nn::DynamicNet(nn::NetSpec::parse(
      "dydnn-spec 1\nname two\ninput 1 8 8\nclasses 4\ngroups 2\nconnectivity incremental\n"
      "conv 8 kernel=3 padding=1 bn relu maxpool=2\n"));
}

// On the Exynos A15 cluster (200-2000 MHz): A takes 1 ms at 2 GHz, AB 2 ms; a fifth of each
// does not scale with the clock.
runtime::SimStream stream(double period_s, double deadline_s, double offset_s = 0) {
  runtime::SimStream s;
  s.name = "model";
  s.net = two_group_net();
  s.configs = {{0b01, "A", 0.85, {0.0008, 0.0002, 0}}, {0b11, "AB", 0.90, {0.0016, 0.0004, 0}}};
  s.period_s = period_s;
  s.offset_s = offset_s;
  s.deadline_s = {{0.0, deadline_s}};
  return s;
}

runtime::SimTrace trace(std::vector<runtime::SimStream> streams, double duration_s,
                        std::vector<runtime::SimStep> background = {}) {
  runtime::SimTrace t;
  t.duration_s = duration_s;
  t.streams = std::move(streams);
  t.background = std::move(background);
  return t;
}

runtime::SimResult run(const runtime::SimTrace& t, const runtime::SimPolicy& p, runtime::SimOptions o = {}) {
  return runtime::simulate(hw::Platform::builtin("exynos5422"), "policy4", t, p, o);
}

runtime::SimPolicy governor(const std::string& name) {
  runtime::SimPolicy p;
  p.kind = runtime::SimPolicyKind::Governor;
  p.governor = name;
  return p;
}

runtime::SimPolicy manager(double floor) {
  runtime::SimPolicy p;
  p.min_accuracy = floor;
  return p;
}

runtime::SimOptions keep() {
  runtime::SimOptions o;
  o.keep_requests = true;
  return o;
}

}  // namespace

TEST_CASE("sim_points: every config at every frequency, with the simulator's latency", "[runtime][simulation]") {
  const auto platform = hw::Platform::builtin("exynos5422");
  const auto points = runtime::sim_points(platform, "policy4", stream(0.01, 0.005));
  REQUIRE(points.size() == 2 * 19);
  CHECK(points.front().knobs.at("policy4_hz") == 200e6);
  CHECK(points.front().latency_s == Approx(0.0008 * 10 + 0.0002));
  CHECK(points[18].latency_s == Approx(0.001));  // A at 2 GHz
  CHECK(points[19].config == 0b11);
  for (const auto& p : points) CHECK(p.energy_j == Approx(p.power_w * p.latency_s));
  CHECK_THROWS_WITH(runtime::sim_points(platform, "policy9", stream(0.01, 0.005)), Contains("policy9"));
}

TEST_CASE("a simulated run is deterministic", "[runtime][simulation]") {
  const auto t = trace({stream(0.010, 0.004)}, 1.0, {{0.0, 0.0}, {0.5, 0.3}});
  for (const auto& p : {manager(0.9), governor("schedutil"), governor("ondemand")}) {
    const auto a = run(t, p, keep());
    const auto b = run(t, p, keep());
    CHECK(a.energy_j == b.energy_j);
    CHECK(a.missed == b.missed);
    CHECK(a.switches == b.switches);
    CHECK(a.p99_s == b.p99_s);
    REQUIRE(a.requests.size() == b.requests.size());
    for (size_t k = 0; k < a.requests.size(); ++k) {
      CHECK(a.requests[k].finish_s == b.requests[k].finish_s);
      CHECK(a.requests[k].hz == b.requests[k].hz);
    }
  }
}

TEST_CASE("the manager meets loose deadlines without misses, with less energy than performance",
          "[runtime][simulation]") {
  const auto t = trace({stream(0.010, 0.008)}, 2.0);
  const auto m = run(t, manager(0.9));
  const auto perf = run(t, governor("performance"));
  CHECK(m.arrived == 200);
  CHECK(m.served == 200);
  CHECK(m.missed == 0);
  CHECK(m.infeasible == 0);
  CHECK(m.mean_accuracy == Approx(0.90));  // the floor rules A out
  CHECK(m.mean_job_hz < 1e9);
  CHECK(perf.missed == 0);
  CHECK(m.energy_per_inference_j < 0.9 * perf.energy_per_inference_j);
  // With the floor lowered, A is allowed and cheaper.
  const auto low = run(t, manager(0.8));
  CHECK(low.missed == 0);
  CHECK(low.mean_accuracy < 0.9);
  CHECK(low.energy_per_inference_j < m.energy_per_inference_j);
}

TEST_CASE("performance meets a loose trace with more energy than powersave", "[runtime][simulation]") {
  // AB takes 16.4 ms at 200 MHz: powersave fits in the 19 ms deadline too.
  const auto t = trace({stream(0.020, 0.019)}, 2.0);
  const auto perf = run(t, governor("performance"));
  const auto save = run(t, governor("powersave"));
  CHECK(perf.missed == 0);
  CHECK(save.missed == 0);
  CHECK(perf.p99_s == Approx(0.002).margin(1e-6));
  CHECK(save.p50_s > 0.016);
  CHECK(perf.energy_per_inference_j > save.energy_per_inference_j);
  CHECK(perf.mean_accuracy == Approx(0.90));  // baselines run the full model
  CHECK(perf.switches == 0);
}

TEST_CASE("background load moves the manager to a higher frequency, and it keeps the deadline",
          "[runtime][simulation]") {
  // AB within 4.5 ms needs 800 MHz alone and 1.4 GHz when a background process takes 40%.
  const auto t = trace({stream(0.010, 0.0045)}, 2.0, {{0.0, 0.0}, {1.0, 0.4}});
  const auto r = run(t, manager(0.9), keep());
  uint64_t before = 0, after = 0;
  size_t late_misses = 0;
  for (const auto& q : r.requests) {
    if (q.arrival_s < 1.0) before = std::max(before, q.hz);
    if (q.arrival_s > 1.5) {
      after = std::max(after, q.hz);
      late_misses += q.missed;
    }
  }
  CHECK(before < 1400000000);
  CHECK(after >= 1400000000);
  CHECK(late_misses == 0);
  CHECK(r.missed <= 15);  // only while the slowdown filter catches up (a median of 5, then an EWMA)

  // The background's energy is counted in the domain's, but not charged to inference.
  CHECK(r.background_energy_j > 0);
  CHECK(r.background_energy_j < r.energy_j - r.static_energy_j);
  CHECK(r.energy_per_inference_j ==
        Approx((r.energy_j - r.background_energy_j) / static_cast<double>(r.served)).epsilon(1e-12));
  const auto idle = run(trace({stream(0.010, 0.0045)}, 2.0), manager(0.9));
  CHECK(idle.background_energy_j == 0);
}

TEST_CASE("two models: the shared cluster runs at what the most demanding one needs", "[runtime][simulation]") {
  // AB within 2.5 ms needs 1.6 GHz; within 9 ms, 400 MHz.
  const auto loose = stream(0.010, 0.009);
  const auto tight = stream(0.010, 0.0025, 0.005);
  const auto alone = run(trace({loose}, 1.0), manager(0.9), keep());
  const auto both = run(trace({loose, tight}, 1.0), manager(0.9), keep());
  CHECK(alone.missed == 0);
  CHECK(alone.requests.back().hz <= 600000000);
  CHECK(both.arrived == 200);
  CHECK(both.missed == 0);
  size_t loose_requests = 0;
  for (const auto& q : both.requests)
    if (q.stream == 0 && q.arrival_s > 0.1) {
      ++loose_requests;
      CHECK(q.hz >= 1600000000);
    }
  CHECK(loose_requests > 50);
  CHECK(both.energy_j > alone.energy_j);
}

TEST_CASE("two models taking turns do not swing the shared frequency to pay for transitions",
          "[runtime][simulation]") {
  // Jetson Nano: 300 us per frequency change; AB takes 0.762 ms at 1479 MHz. The tight model
  // (1.279 ms) fits 825.6 MHz and 921.6 MHz with its whole budget, but less a transition
  // only 1132.8 MHz. The other model's turn sets 921.6 MHz; on the tight model's turn a move
  // to 825.6 MHz would cost a transition it cannot afford, and staying at 921.6 MHz is cheaper
  // than paying for one up to 1132.8 MHz.
  const auto platform = hw::Platform::builtin("jetson_nano");
  const auto nano_stream = [](double period_s, double deadline_s, double offset_s) {
    auto s = stream(period_s, deadline_s, offset_s);
    s.configs = {{0b01, "A", 0.85, {0.8 * 0.559e-3, 0.2 * 0.559e-3, 0}},
                 {0b11, "AB", 0.90, {0.8 * 0.7624e-3, 0.2 * 0.7624e-3, 0}}};
    return s;
  };
  const auto tight = nano_stream(1.8276e-3, 1.2793e-3, 0);
  const auto other = nano_stream(2.4368e-3, 1.523e-3, 0.9138e-3);
  const auto r = runtime::simulate(platform, "policy0", trace({tight, other}, 1.0), manager(0.9), keep());
  CHECK(r.missed == 0);
  CHECK(r.switches <= 6);  // settling only: it swung every few requests (546 switches in this second)
  CHECK(r.infeasible == 0);
}

TEST_CASE("a static policy runs one config at one frequency", "[runtime][simulation]") {
  runtime::SimPolicy p;
  p.kind = runtime::SimPolicyKind::Static;
  p.static_configs = {0};
  p.static_hz = 1000000000;
  const auto r = run(trace({stream(0.010, 0.004)}, 1.0), p, keep());
  CHECK(r.switches == 0);
  CHECK(r.mean_accuracy == Approx(0.85));
  CHECK(r.p50_s == Approx(0.0008 * 2 + 0.0002).margin(1e-6));
  for (const auto& q : r.requests) {
    CHECK(q.config == 0);
    CHECK(q.hz == 1000000000);
  }
}

TEST_CASE("the ladder climbs to the floor when there is slack", "[runtime][simulation]") {
  runtime::SimPolicy p;
  p.kind = runtime::SimPolicyKind::Ladder;
  p.governor = "performance";
  p.min_accuracy = 0.9;
  const auto r = run(trace({stream(0.010, 0.008)}, 1.0), p, keep());
  CHECK(r.missed == 0);
  CHECK(r.requests.front().config == 0);  // the ladder starts at the fastest rung
  CHECK(r.requests.back().config == 1);
}

TEST_CASE("requests that cannot keep up wait, one at most, and the others are dropped as misses",
          "[runtime][simulation]") {
  // AB takes 16.4 ms at 200 MHz against a request every 10 ms.
  const auto r = run(trace({stream(0.010, 0.050)}, 1.0), governor("powersave"));
  CHECK(r.arrived == 100);
  CHECK(r.dropped > 0);
  CHECK(r.served + r.dropped == r.arrived);
  CHECK(r.missed >= r.dropped);
  runtime::SimOptions o;
  o.max_misses = 3;
  const auto cut = run(trace({stream(0.010, 0.050)}, 1.0), governor("powersave"), o);
  CHECK(cut.aborted);
  CHECK(cut.missed == 4);
}

TEST_CASE("invalid traces and policies are refused, naming the value", "[runtime][simulation]") {
  const auto ok = stream(0.010, 0.004);
  CHECK_THROWS_WITH(run(trace({}, 1.0), manager(0.9)), Contains("0 streams"));
  auto bad = ok;
  bad.period_s = 0;
  CHECK_THROWS_WITH(run(trace({bad}, 1.0), manager(0.9)), Contains("period_s = 0"));
  bad = ok;
  bad.deadline_s.clear();
  CHECK_THROWS_WITH(run(trace({bad}, 1.0), manager(0.9)), Contains("no deadline steps"));
  bad = ok;
  bad.net = nn::DynamicNet(nullptr);
  CHECK_THROWS_WITH(run(trace({bad}, 1.0), manager(0.9)), Contains("has no net"));
  CHECK_NOTHROW(run(trace({bad}, 0.05), governor("schedutil")));  // only the manager needs the net
  CHECK_THROWS_WITH(run(trace({ok}, 1.0, {{0.0, 1.0}}), manager(0.9)), Contains("background share 1"));
  CHECK_THROWS_WITH(run(trace({ok}, 1.0, {{0.5, 0.1}, {0.2, 0.0}}), manager(0.9)), Contains("ascending"));
  CHECK_THROWS_WITH(run(trace({ok}, 1.0), governor("turbo")), Contains("unknown governor 'turbo'"));
  runtime::SimPolicy p;
  p.kind = runtime::SimPolicyKind::Static;
  p.static_configs = {0};
  p.static_hz = 123;
  CHECK_THROWS_WITH(run(trace({ok}, 1.0), p), Contains("static_hz = 123"));
  p.static_configs = {2};
  p.static_hz = 200000000;
  CHECK_THROWS_WITH(run(trace({ok}, 1.0), p), Contains("static config 2"));
  CHECK_THROWS_WITH(run(trace({ok, ok, ok, ok, ok}, 1.0), manager(0.9)), Contains("5 streams"));
  CHECK_THROWS_WITH(run(trace({ok}, 0.0), manager(0.9)), Contains("duration_s = 0"));
}
