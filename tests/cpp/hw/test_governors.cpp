// Simulated governors: each kernel rule from platforms.md, fed directly and driven by the
// SimBackend on a virtual clock (deterministic).
#include <dydnn/errors.h>
#include <dydnn/hw/governors.h>
#include <dydnn/hw/sim_backend.h>

#include <catch2/catch.hpp>
#include <memory>

namespace {

using namespace dydnn::hw;

constexpr uint64_t kMHz = 1000000;
constexpr int64_t kMs = 1000000;

/// Exynos A15: 200-2000 MHz in 100 MHz steps.
std::vector<uint64_t> a15_table() {
  std::vector<uint64_t> t;
  for (uint64_t f = 200; f <= 2000; f += 100) t.push_back(f * kMHz);
  return t;
}

/// A sample of a policy running at `hz` busy a fraction `busy` of the time (frequency-invariant util).
LoadSample at(double busy, uint64_t hz, uint64_t max_hz = 2000 * kMHz) {
  return {busy, busy * static_cast<double>(hz) / static_cast<double>(max_hz)};
}

struct Board {
  Board() : clock(std::make_shared<VirtualClock>()), sim(Platform::builtin("exynos5422"), clock) {}
  std::shared_ptr<VirtualClock> clock;
  SimBackend sim;
  static constexpr size_t kBig = 1;

  /// Back-to-back 5 ms jobs (at 2 GHz) for `seconds`: util stays at 1.
  void busy_loop(double seconds) {
    const int64_t end = clock->now_ns() + static_cast<int64_t>(seconds * 1e9);
    while (clock->now_ns() < end) sim.run(kBig, {0.005, 0.0});
  }
};

}  // namespace

TEST_CASE("performance and powersave pick the maximum and minimum within the limits", "[hw][governor]") {
  PerformanceGovernor perf(a15_table());
  PowersaveGovernor save(a15_table());
  CHECK(perf.start(0, 800 * kMHz) == 2000 * kMHz);
  CHECK(save.start(0, 800 * kMHz) == 200 * kMHz);
  CHECK(perf.next_update_ns() == kNeverNs);
  CHECK(perf.limits(500 * kMHz, 1500 * kMHz) == 1500 * kMHz);
  CHECK(save.limits(500 * kMHz, 1500 * kMHz) == 500 * kMHz);
  CHECK(perf.update(10, at(0, 0)) == 1500 * kMHz);
  CHECK(save.update(10, at(1, 1500 * kMHz)) == 500 * kMHz);
  CHECK_THROWS_WITH(perf.limits(550 * kMHz, 1500 * kMHz),
                    Catch::Contains("performance: limits [550000000, 1500000000] Hz must be table entries"));
  CHECK_THROWS_AS(perf.limits(1500 * kMHz, 500 * kMHz), dydnn::ValueError);

  Board b;
  CHECK(b.sim.set_governor(Board::kBig, "powersave").ok);
  b.sim.advance(0.001);
  CHECK(b.sim.current_frequency(Board::kBig) == 200 * kMHz);
  b.busy_loop(0.2);  // no sampling: load does not move it
  CHECK(b.sim.current_frequency(Board::kBig) == 200 * kMHz);
  CHECK(b.sim.set_governor(Board::kBig, "performance").ok);
  b.sim.advance(0.001);
  CHECK(b.sim.current_frequency(Board::kBig) == 2000 * kMHz);
}

TEST_CASE("ondemand: jump to max above up_threshold, else min + load * (max - min) / 100, closest entry",
          "[hw][governor]") {
  OndemandGovernor od(a15_table());
  CHECK(od.start(0, 2000 * kMHz) == 2000 * kMHz);
  CHECK(od.next_update_ns() == 10 * kMs);
  CHECK(od.update(10 * kMs, {0.50, 0}) == 1100 * kMHz);  // 200 + 50 * 1800 / 100
  CHECK(od.update(20 * kMs, {0.0, 0}) == 200 * kMHz);
  CHECK(od.update(30 * kMs, {0.95, 0}) == 1900 * kMHz);  // 95 is not above 95: 1910 -> 1900
  CHECK(od.update(40 * kMs, {0.96, 0}) == 2000 * kMHz);
  CHECK(od.update(50 * kMs, {0.333, 0}) == 800 * kMHz);  // load 33: 794 -> 800
  CHECK(od.next_update_ns() == 60 * kMs);

  // The closest entry, the lower one on a tie (cpufreq RELATION_C).
  OndemandGovernor tie({100 * kMHz, 200 * kMHz});
  tie.start(0, 100 * kMHz);
  CHECK(tie.update(10 * kMs, {0.50, 0}) == 100 * kMHz);
  CHECK(tie.update(20 * kMs, {0.51, 0}) == 200 * kMHz);

  // The limits clamp the proportional rule and the jump.
  CHECK(od.limits(500 * kMHz, 1500 * kMHz) == 800 * kMHz);
  CHECK(od.update(70 * kMs, {1.0, 0}) == 1500 * kMHz);
  CHECK(od.update(80 * kMs, {0.1, 0}) == 500 * kMHz);  // 380 MHz clamped up to the min
}

TEST_CASE("ondemand: sampling_down_factor holds the maximum for that many periods", "[hw][governor]") {
  OndemandOptions options;
  options.sampling_down_factor = 4;
  OndemandGovernor od(a15_table(), options);
  od.start(0, 200 * kMHz);
  CHECK(od.update(10 * kMs, {1.0, 0}) == 2000 * kMHz);
  CHECK(od.next_update_ns() == 50 * kMs);
  // Still busy at the maximum: the factor is not re-armed (policy->cur == policy->max).
  CHECK(od.update(50 * kMs, {1.0, 0}) == 2000 * kMHz);
  CHECK(od.next_update_ns() == 60 * kMs);
  CHECK(od.update(60 * kMs, {0.0, 0}) == 200 * kMHz);
  CHECK(od.next_update_ns() == 70 * kMs);

  CHECK_THROWS_WITH(OndemandGovernor(a15_table(), OndemandOptions{10 * kMs, 101, 1}),
                    Catch::Contains("up_threshold = 101 is out of range (valid: 1 to 100)"));
}

TEST_CASE("conservative: 5% of max per sampling period, up above 80, down below 20", "[hw][governor]") {
  ConservativeGovernor cs(a15_table());  // 5% of 2000 MHz = one 100 MHz step
  CHECK(cs.start(0, 200 * kMHz) == 200 * kMHz);
  for (int k = 1; k <= 5; ++k) CHECK(cs.update(k * 10 * kMs, {0.9, 0}) == (200 + 100 * k) * kMHz);
  CHECK(cs.update(60 * kMs, {0.5, 0}) == 700 * kMHz);  // between thresholds: stays
  CHECK(cs.update(70 * kMs, {0.8, 0}) == 700 * kMHz);  // 80 is not above 80
  CHECK(cs.update(80 * kMs, {0.1, 0}) == 600 * kMHz);
  CHECK(cs.update(90 * kMs, {0.2, 0}) == 600 * kMHz);  // 20 is not below 20
  for (int k = 0; k < 10; ++k) cs.update((100 + k * 10) * kMs, {0.0, 0});
  CHECK(cs.frequency() == 200 * kMHz);

  // Steps smaller than the table's spacing accumulate (Nano: 5% of 1479 MHz = 73.95 MHz).
  const std::vector<uint64_t> nano = {102000000,  204000000,  307200000,  403200000,  518400000,
                                      614400000,  710400000,  825600000,  921600000,  1036800000,
                                      1132800000, 1224000000, 1326000000, 1428000000, 1479000000};
  ConservativeGovernor slow(nano);
  slow.start(0, nano[0]);
  CHECK(slow.update(10 * kMs, {1.0, 0}) == 102000000);  // requested 175.95 MHz: the highest entry below
  CHECK(slow.update(20 * kMs, {1.0, 0}) == 204000000);  // requested 249.9 MHz
  CHECK(slow.update(30 * kMs, {1.0, 0}) == 307200000);  // requested 323.85 MHz
  CHECK(slow.update(40 * kMs, {1.0, 0}) == 307200000);  // requested 397.8 MHz
  CHECK(slow.update(50 * kMs, {1.0, 0}) == 403200000);  // requested 471.75 MHz
}

TEST_CASE("schedutil: PELT util with a 32 ms half-life, next = 1.25 * f_max * util rounded up", "[hw][governor]") {
  SchedutilOptions options;
  options.rate_limit_ns = 0;
  SchedutilGovernor su(a15_table(), options);
  su.start(0, 200 * kMHz);
  // Busy at 2 GHz for 32 ms from empty history: util = 1/2; next = 1250 MHz -> 1300 MHz.
  uint64_t f = 0;
  for (int64_t t = kMs; t <= 32 * kMs; t += kMs) f = su.update(t, at(1.0, 2000 * kMHz));
  CHECK(su.util() == Approx(0.5));
  CHECK(f == 1300 * kMHz);
  // 32 ms idle halves it: next = 625 MHz -> 700 MHz.
  for (int64_t t = 33 * kMs; t <= 64 * kMs; t += kMs) f = su.update(t, at(0.0, f));
  CHECK(su.util() == Approx(0.25));
  CHECK(f == 700 * kMHz);
  // A longer gap between updates decays by the elapsed periods.
  f = su.update(128 * kMs, at(0.0, f));
  CHECK(su.util() == Approx(0.25 / 4));
  CHECK(f == 200 * kMHz);

  CHECK(schedutil_rate_limit_ns(140e-6) == 10 * kMs);       // Exynos: min(1000 x 140 us, 10 ms)
  CHECK(schedutil_rate_limit_ns(140e-6, true) == 2 * kMs);  // capped at 2 ms on new kernels
  CHECK(schedutil_rate_limit_ns(1e-6) == kMs);
}

TEST_CASE("schedutil: no decrease without idle time, and changes at least rate_limit apart", "[hw][governor]") {
  SchedutilGovernor su(a15_table());  // rate limit 10 ms
  // Taking over a fully busy CPU at the maximum with no history: it holds the maximum.
  su.start(0, 2000 * kMHz);
  for (int64_t t = kMs; t <= 20 * kMs; t += kMs) CHECK(su.update(t, at(1.0, 2000 * kMHz)) == 2000 * kMHz);
  // The first sample with idle time lets it fall.
  CHECK(su.update(21 * kMs, at(0.9, 2000 * kMHz)) < 2000 * kMHz);

  // Idle then busy: every change is at least 10 ms after the previous one.
  SchedutilGovernor limited(a15_table());
  limited.start(0, 200 * kMHz);
  std::vector<int64_t> changes;
  uint64_t f = 200 * kMHz;
  for (int64_t t = kMs; t <= 1000 * kMs; t += kMs) {
    const uint64_t next = limited.update(t, at(1.0, f));
    if (next != f) changes.push_back(t);
    f = next;
  }
  CHECK(f == 2000 * kMHz);
  REQUIRE(changes.size() >= 2);
  for (size_t k = 1; k < changes.size(); ++k) CHECK(changes[k] - changes[k - 1] >= 10 * kMs);
}

TEST_CASE("make_governor builds each simulated governor and refuses unknown names", "[hw][governor]") {
  for (const auto& name : simulated_governors()) CHECK(make_governor(name, a15_table())->name() == name);
  auto su = make_governor("schedutil", a15_table(), 140e-6);
  CHECK(dynamic_cast<SchedutilGovernor&>(*su).options().rate_limit_ns == 10 * kMs);
  CHECK_THROWS_WITH(
      make_governor("interactive", a15_table()),
      Catch::Contains("unknown simulated governor 'interactive' (valid: performance, powersave, ondemand, "
                      "conservative, schedutil)"));
  CHECK_THROWS_WITH(PerformanceGovernor(std::vector<uint64_t>{}), Catch::Contains("needs a frequency table"));
  CHECK_THROWS_WITH(PerformanceGovernor(std::vector<uint64_t>{2, 1}),
                    Catch::Contains("strictly ascending (entry 1 = 1 Hz follows 2 Hz)"));
}

TEST_CASE("A back-to-back busy loop drives schedutil and ondemand to f_max; idle brings them down",
          "[hw][governor][sim]") {
  for (const std::string name : {"schedutil", "ondemand"}) {
    INFO(name);
    Board b;
    CHECK(b.sim.set_frequency(Board::kBig, 200 * kMHz).ok);
    b.sim.advance(0.001);
    CHECK(b.sim.set_governor(Board::kBig, name).ok);
    CHECK(b.sim.governor(Board::kBig) == name);
    b.busy_loop(1.0);
    CHECK(b.sim.current_frequency(Board::kBig) == 2000 * kMHz);
    b.busy_loop(0.5);  // and it stays there
    CHECK(b.sim.current_frequency(Board::kBig) == 2000 * kMHz);
    b.sim.advance(0.5);
    CHECK(b.sim.current_frequency(Board::kBig) == 200 * kMHz);
  }
}

TEST_CASE("schedutil in the simulator: it falls only after idle time, rate-limited", "[hw][governor][sim]") {
  Board b;
  const size_t big = Board::kBig;
  // A long job is running at 2 GHz when schedutil takes over with no history.
  const size_t job = b.sim.submit(big, {0.3, 0.0});
  b.sim.advance(0.001);
  CHECK(b.sim.set_governor(big, "schedutil").ok);
  for (int k = 0; k < 25; ++k) {
    b.sim.advance(0.010);
    CHECK(b.sim.current_frequency(big) == 2000 * kMHz);
  }
  const JobResult r = b.sim.wait(job);
  CHECK(r.latency_s == Approx(0.3).margin(1e-6));
  // Idle: down, one rate-limited step at a time (10 ms apart), to the minimum.
  std::vector<uint64_t> trace;
  for (int k = 0; k < 400; ++k) {
    b.sim.advance(0.001);
    const uint64_t f = b.sim.current_frequency(big);
    if (trace.empty() || trace.back() != f) trace.push_back(f);
  }
  CHECK(trace.front() == 2000 * kMHz);
  CHECK(trace.back() == 200 * kMHz);
  CHECK(trace.size() >= 3);
  CHECK(std::is_sorted(trace.rbegin(), trace.rend()));
}

TEST_CASE("conservative in the simulator: one 5% step per sampling period", "[hw][governor][sim]") {
  Board b;
  const size_t big = Board::kBig;
  CHECK(b.sim.set_frequency(big, 200 * kMHz).ok);
  b.sim.advance(0.001);
  CHECK(b.sim.set_governor(big, "conservative").ok);
  b.sim.set_busy(big, 1.0, 4);
  // Every 10 ms one 100 MHz step (5% of 2 GHz), acting after the 140 us latency.
  for (int k = 1; k <= 18; ++k) {
    b.sim.advance(0.010);
    CHECK(b.sim.target_frequency(big) == (200 + 100 * k) * kMHz);
  }
  b.sim.advance(0.010);
  CHECK(b.sim.current_frequency(big) == 2000 * kMHz);
  b.sim.set_busy(big, 0.0, 0);
  b.sim.advance(0.010);
  CHECK(b.sim.target_frequency(big) == 1900 * kMHz);
  b.sim.advance(0.010);
  CHECK(b.sim.target_frequency(big) == 1800 * kMHz);
}

TEST_CASE("Governed runs are deterministic on the virtual clock", "[hw][governor][sim]") {
  const auto trace = [] {
    Board b;
    CHECK(b.sim.set_governor(Board::kBig, "schedutil").ok);
    CHECK(b.sim.set_governor(0, "ondemand").ok);
    std::vector<double> out;
    for (int k = 0; k < 40; ++k) {
      const JobResult r = b.sim.run(k % 2 == 0 ? Board::kBig : 0, {0.002 * (1 + k % 3), 0.001});
      b.sim.advance(0.001 * (k % 5));
      out.push_back(r.latency_s);
      out.push_back(r.energy_j);
      out.push_back(static_cast<double>(b.sim.current_frequency(Board::kBig)));
    }
    out.push_back(b.sim.energy_j());
    return out;
  };
  CHECK(trace() == trace());
}

TEST_CASE("use_governor runs a tuned governor in the simulator", "[hw][governor][sim]") {
  Board b;
  SchedutilOptions options;
  options.rate_limit_ns = schedutil_rate_limit_ns(140e-6, true);
  CHECK(b.sim.use_governor(Board::kBig, std::make_unique<SchedutilGovernor>(a15_table(), options)).ok);
  CHECK(b.sim.governor(Board::kBig) == "schedutil");
  b.sim.advance(0.5);
  CHECK(b.sim.current_frequency(Board::kBig) == 200 * kMHz);
  CHECK_THROWS_AS(b.sim.use_governor(Board::kBig, nullptr), dydnn::ValueError);
}
