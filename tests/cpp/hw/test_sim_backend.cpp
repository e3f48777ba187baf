// SimBackend: the DvfsBackend contract on a platform model (snapping, limits, actuation
// delay, restore) and the workload model (T(f), power, energy, background load).
#include <dydnn/errors.h>
#include <dydnn/hw/sim_backend.h>

#include <catch2/catch.hpp>
#include <memory>

namespace {

using namespace dydnn::hw;

constexpr uint64_t kMHz = 1000000;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// A simulated board on its own virtual clock.
struct Board {
  explicit Board(const std::string& name) : Board(Platform::builtin(name)) {}
  explicit Board(Platform p) : clock(std::make_shared<VirtualClock>()), sim(std::move(p), clock) {}
  std::shared_ptr<VirtualClock> clock;
  SimBackend sim;
};

}  // namespace

TEST_CASE("SimBackend exposes the platform's domains in Hz with every knob available", "[hw][sim]") {
  Board b("exynos5422");
  CHECK(b.sim.name() == "sim:exynos5422");
  REQUIRE(b.sim.domains().size() == 3);
  const Domain& big = b.sim.domains()[1];
  CHECK(big.name == "policy4");
  CHECK(big.cpus == std::vector<int>{4, 5, 6, 7});
  CHECK(big.frequencies_hz.size() == 19);
  CHECK(big.min_hz == 200 * kMHz);
  CHECK(big.max_hz == 2000 * kMHz);
  CHECK(big.transition_latency_s == Approx(140e-6));
  CHECK(big.governors ==
        std::vector<std::string>{"userspace", "performance", "powersave", "ondemand", "conservative", "schedutil"});
  CHECK(big.can_set_frequency.available);
  CHECK(big.can_set_governor.available);
  CHECK(big.can_set_limits.available);
  CHECK(b.sim.find("mali0") == 2);
  CHECK(b.sim.domains()[2].kind == DomainKind::Gpu);
  CHECK(b.sim.domains()[2].governors == std::vector<std::string>{"userspace", "performance", "powersave"});
  // The initial state: performance at the maximum, full limits.
  for (size_t k = 0; k < 3; ++k) {
    CHECK(b.sim.governor(k) == "performance");
    CHECK(b.sim.current_frequency(k) == b.sim.domains()[k].max_hz);
    CHECK(b.sim.min_limit_hz(k) == b.sim.domains()[k].min_hz);
    CHECK(b.sim.max_limit_hz(k) == b.sim.domains()[k].max_hz);
  }
  CHECK_THROWS_AS(SimBackend(Platform::builtin("generic_host"), nullptr), dydnn::ValueError);
}

TEST_CASE("SimBackend::set_frequency snaps up, switches to userspace and clamps to the limits", "[hw][sim]") {
  Board b("generic_host");
  CHECK(b.sim.set_frequency(0, 1200 * kMHz).ok);
  CHECK(b.sim.governor(0) == "userspace");
  CHECK(b.sim.target_frequency(0) == 1500 * kMHz);
  CHECK(b.sim.set_frequency(0, 9000 * kMHz).ok);
  CHECK(b.sim.target_frequency(0) == 3000 * kMHz);
  CHECK(b.sim.set_frequency(0, 1).ok);
  CHECK(b.sim.target_frequency(0) == 1000 * kMHz);

  CHECK(b.sim.set_limits(0, 1500 * kMHz, 2500 * kMHz).ok);
  CHECK(b.sim.target_frequency(0) == 1500 * kMHz);  // userspace's setspeed clamped into the new range
  const Status high = b.sim.set_frequency(0, 2800 * kMHz);
  CHECK(high.ok);
  CHECK(contains(high.reason, "policy0: 2800000000 Hz clamped to the max limit 2500000000 Hz: set 2500000000 Hz"));
  CHECK(b.sim.target_frequency(0) == 2500 * kMHz);
  const Status low = b.sim.set_frequency(0, 1000 * kMHz);
  CHECK(contains(low.reason, "clamped to the min limit 1500000000 Hz"));
  CHECK(b.sim.target_frequency(0) == 1500 * kMHz);
  CHECK(b.sim.set_frequency(0, 2000 * kMHz).reason.empty());
}

TEST_CASE("SimBackend::set_limits snaps min up and max down, and refuses min > max", "[hw][sim]") {
  Board b("exynos5422");
  const size_t big = 1;
  CHECK(b.sim.set_limits(big, 450 * kMHz, 1550 * kMHz).ok);
  CHECK(b.sim.min_limit_hz(big) == 500 * kMHz);
  CHECK(b.sim.max_limit_hz(big) == 1500 * kMHz);
  // performance follows the new max.
  CHECK(b.sim.target_frequency(big) == 1500 * kMHz);

  const Status gap = b.sim.set_limits(big, 1010 * kMHz, 1020 * kMHz);
  CHECK(gap.ok);
  CHECK(contains(gap.reason,
                 "policy4: no frequency lies in [1010000000, 1020000000] Hz: both limits set to 1100000000 Hz"));
  CHECK(b.sim.min_limit_hz(big) == 1100 * kMHz);
  CHECK(b.sim.max_limit_hz(big) == 1100 * kMHz);

  const Status bad = b.sim.set_limits(big, 1500 * kMHz, 1200 * kMHz);
  CHECK_FALSE(bad.ok);
  CHECK(contains(bad.reason, "policy4: set_limits: min 1500000000 Hz > max 1200000000 Hz"));
  CHECK(b.sim.min_limit_hz(big) == 1100 * kMHz);

  // powersave follows the min.
  CHECK(b.sim.set_limits(big, 700 * kMHz, 2000 * kMHz).ok);
  CHECK(b.sim.set_governor(big, "powersave").ok);
  CHECK(b.sim.target_frequency(big) == 700 * kMHz);
}

TEST_CASE("SimBackend: a frequency change acts after the transition latency", "[hw][sim]") {
  Board b("exynos5422");
  const size_t big = 1;
  CHECK(b.sim.set_frequency(big, 1200 * kMHz).ok);
  CHECK(b.sim.current_frequency(big) == 2000 * kMHz);
  CHECK(b.sim.target_frequency(big) == 1200 * kMHz);
  b.clock->advance(139999);  // clock-latency-ns 140000
  CHECK(b.sim.current_frequency(big) == 2000 * kMHz);
  b.clock->advance(1);
  CHECK(b.sim.current_frequency(big) == 1200 * kMHz);

  // A job started just after a request runs at the old frequency until the change lands.
  CHECK(b.sim.set_frequency(big, 600 * kMHz).ok);
  const JobResult r = b.sim.run(big, {0.001, 0, 1200 * kMHz});  // 1 ms at 1.2 GHz
  // 140 us at 1.2 GHz do 140/1000 of the job; the rest takes twice as long at 600 MHz.
  CHECK(r.latency_s == Approx(140e-6 + 2 * (1e-3 - 140e-6)).margin(2e-9));
  CHECK(r.mean_hz < 1200e6);
  CHECK(r.mean_hz > 600e6);

  // A newer request replaces one in flight.
  CHECK(b.sim.set_frequency(big, 1000 * kMHz).ok);
  b.sim.advance(100e-6);
  CHECK(b.sim.set_frequency(big, 1400 * kMHz).ok);
  b.sim.advance(100e-6);
  CHECK(b.sim.current_frequency(big) == 600 * kMHz);
  b.sim.advance(40e-6);
  CHECK(b.sim.current_frequency(big) == 1400 * kMHz);
}

TEST_CASE("SimBackend::restore returns to performance, full limits and the maximum", "[hw][sim]") {
  Board b("jetson_nano");
  CHECK(b.sim.set_limits(0, 300 * kMHz, 900 * kMHz).ok);
  CHECK(b.sim.set_frequency(0, 500 * kMHz).ok);
  CHECK(b.sim.set_governor(1, "powersave").ok);
  b.sim.advance(0.01);
  CHECK(b.sim.current_frequency(0) == 518400000);
  CHECK(b.sim.current_frequency(1) == 76800000);
  CHECK(b.sim.restore().ok);
  for (size_t k = 0; k < 2; ++k) {
    CHECK(b.sim.governor(k) == "performance");
    CHECK(b.sim.min_limit_hz(k) == b.sim.domains()[k].min_hz);
    CHECK(b.sim.max_limit_hz(k) == b.sim.domains()[k].max_hz);
  }
  CHECK(b.sim.current_frequency(0) == 518400000);  // not yet: the latency applies
  b.sim.advance(0.01);
  CHECK(b.sim.current_frequency(0) == 1479000000);
  CHECK(b.sim.current_frequency(1) == 921600000);
}

TEST_CASE("SimBackend refuses unknown governors and bad arguments", "[hw][sim]") {
  Board b("exynos5422");
  const Status s = b.sim.set_governor(2, "schedutil");
  CHECK_FALSE(s.ok);
  CHECK(contains(s.reason,
                 "mali0: governor 'schedutil' is not available (available: userspace, performance, powersave)"));
  CHECK(b.sim.governor(2) == "performance");
  CHECK_FALSE(b.sim.set_governor(0, "interactive").ok);

  CHECK_THROWS_WITH(b.sim.set_frequency(3, 1), Catch::Contains("domain 3 is out of range (valid: 0..2)"));
  CHECK_THROWS_AS(b.sim.current_frequency(9), dydnn::IndexError);
  CHECK_THROWS_AS(b.sim.energy_j(9), dydnn::IndexError);
  CHECK_THROWS_WITH(b.sim.set_background(1, 1.0), Catch::Contains("policy4: background share = 1 is out of range"));
  CHECK_THROWS_WITH(b.sim.set_busy(1, 0.5, 5), Catch::Contains("policy4: cores = 5 is out of range (valid: 0 to 4)"));
  CHECK_THROWS_WITH(b.sim.set_busy(1, 1.5, 1), Catch::Contains("util = 1.5 is out of range (valid: 0 to 1)"));
  CHECK_THROWS_WITH(b.sim.submit(2, {0.1, 0}, 2), Catch::Contains("mali0: cores = 2 is out of range (valid: 1 to 1)"));
  CHECK_THROWS_WITH(b.sim.submit(0, {-0.1, 0}), Catch::Contains("compute_s >= 0 and memory_s >= 0"));
  CHECK_THROWS_WITH(b.sim.latency_s(0, 0, {0.1, 0}), Catch::Contains("latency_s needs a frequency > 0 Hz"));
  CHECK_THROWS_WITH(b.sim.wait(42), Catch::Contains("job 42 is unknown or was already collected"));
  CHECK_THROWS_AS(b.sim.advance(-1), dydnn::ValueError);
  CHECK_THROWS_WITH(b.sim.use_governor(1, make_governor("schedutil", {1, 2, 3})),
                    Catch::Contains("policy4: the governor 'schedutil' was built for another frequency table"));
}

TEST_CASE("SimBackend latency model: T(f) = Tc * f_ref / f + Tm, stretched by background load", "[hw][sim]") {
  Board b("exynos5422");
  const size_t big = 1;
  const Work w{0.010, 0.002, 2000 * kMHz};
  CHECK(b.sim.latency_s(big, 2000 * kMHz, w) == Approx(0.012));
  CHECK(b.sim.latency_s(big, 1000 * kMHz, w) == Approx(0.022));
  CHECK(b.sim.latency_s(big, 200 * kMHz, w) == Approx(0.102));
  CHECK(b.sim.latency_s(big, 1000 * kMHz, {0.010, 0.002}) == Approx(0.022));  // f_ref defaults to the maximum
  CHECK(b.sim.latency_s(0, 700 * kMHz, {0.010, 0.0}) == Approx(0.020));       // ... of that domain (A7: 1.4 GHz)

  // A run takes the modelled time on the virtual clock.
  CHECK(b.sim.set_frequency(big, 1200 * kMHz).ok);
  b.sim.advance(0.001);
  const int64_t before = b.clock->now_ns();
  const JobResult r = b.sim.run(big, w);
  CHECK(r.latency_s == Approx(0.010 * 2.0 / 1.2 + 0.002).margin(1e-9));
  CHECK(r.start_ns == before);
  CHECK(r.end_ns == b.clock->now_ns());
  CHECK(r.mean_hz == Approx(1.2e9));

  // Another process taking 40% of the cluster stretches the job by 1 / 0.6.
  b.sim.set_background(big, 0.4);
  CHECK(b.sim.background(big) == 0.4);
  CHECK(b.sim.latency_s(big, 1200 * kMHz, w) == Approx((0.010 * 2.0 / 1.2 + 0.002) / 0.6));
  CHECK(b.sim.run(big, w).latency_s == Approx((0.010 * 2.0 / 1.2 + 0.002) / 0.6).margin(1e-9));
}

TEST_CASE("SimBackend power and energy: C V^2 f per busy core plus static", "[hw][sim]") {
  Board b("generic_host");  // C = 1000 uW/MHz/V^2, static 2 W, 1.0 V at 2 GHz
  CHECK(b.sim.set_frequency(0, 2000 * kMHz).ok);
  b.sim.advance(0.001);
  const double e0 = b.sim.energy_j();
  CHECK(b.sim.power_w() == Approx(2.0));  // idle: static only

  // One core busy: 2 W dynamic + 2 W static.
  const JobResult r = b.sim.run(0, {0.5, 0, 2000 * kMHz});
  CHECK(r.latency_s == Approx(0.5));
  CHECK(r.domain_energy_j == Approx(4.0 * 0.5));
  CHECK(r.energy_j == Approx(r.domain_energy_j));
  CHECK(b.sim.energy_j() - e0 == Approx(2.0));

  // Trace input: both cores busy 50% for one second = one core's worth of busy time.
  b.sim.set_busy(0, 0.5, 2);
  CHECK(b.sim.power_w(0) == Approx(4.0));
  const double e1 = b.sim.energy_j(0);
  b.sim.advance(1.0);
  CHECK(b.sim.energy_j(0) - e1 == Approx(4.0));

  // A background share makes the idle cores busy too.
  b.sim.set_busy(0, 0, 0);
  b.sim.set_background(0, 0.25);
  CHECK(b.sim.power_w(0) == Approx(2.0 + 2.0 * 0.5));
  // At 3 GHz (1.2 V): 1000 * 1.44 * 3000 uW per busy core.
  CHECK(b.sim.set_frequency(0, 3000 * kMHz).ok);
  b.sim.advance(0.001);
  CHECK(b.sim.power_w(0) == Approx(2.0 + 4.32 * 0.5));
}

TEST_CASE("SimBackend charges the background's core time to the background", "[hw][sim]") {
  Board b("generic_host");  // 2 cores, C = 1000 uW/MHz/V^2, static 2 W, 1.0 V at 2 GHz: 2 W per busy core
  CHECK(b.sim.set_frequency(0, 2000 * kMHz).ok);
  b.sim.advance(0.001);
  CHECK(b.sim.background_energy_j(0) == 0);

  // A quarter of both cores: 0.5 busy cores, 1 W, all of it the background's.
  b.sim.set_background(0, 0.25);
  const double e0 = b.sim.energy_j(0), g0 = b.sim.background_energy_j(0);
  b.sim.advance(1.0);
  CHECK(b.sim.energy_j(0) - e0 == Approx(3.0));
  CHECK(b.sim.background_energy_j(0) - g0 == Approx(1.0));

  // A job holds one core throughout, the background a quarter of it (the job is stretched by
  // 1 / 0.75): of the 1.25 busy cores the job's is 0.75, so the job's share is 1.5 W x its time.
  const double e1 = b.sim.energy_j(0), g1 = b.sim.background_energy_j(0);
  const JobResult r = b.sim.run(0, {0.75, 0, 2000 * kMHz});
  CHECK(r.latency_s == Approx(1.0));
  CHECK(b.sim.energy_j(0) - e1 == Approx(2.0 + 2.0 * 1.25));
  CHECK(b.sim.background_energy_j(0) - g1 == Approx(2.0 * 0.5));
  CHECK((b.sim.energy_j(0) - e1) - (b.sim.background_energy_j(0) - g1) == Approx(2.0 + 1.5));

  // set_busy load is not the background's; the background only adds what fits on top of it.
  b.sim.set_busy(0, 0.9, 2);
  const double g2 = b.sim.background_energy_j(0);
  b.sim.advance(1.0);
  CHECK(b.sim.background_energy_j(0) - g2 == Approx(2.0 * 2 * 0.1));
}

TEST_CASE("SimBackend: frequency changes during a job and concurrent jobs", "[hw][sim]") {
  Board b("generic_host");  // latency 50 us
  // Half of a 1 s job (at 3 GHz) done, then 1.5 GHz: the rest runs at half speed after 50 us.
  const size_t job = b.sim.submit(0, {1.0, 0.0, 3000 * kMHz});
  b.sim.advance(0.5);
  CHECK_FALSE(b.sim.finished(job));
  CHECK(b.sim.set_frequency(0, 1500 * kMHz).ok);
  const JobResult r = b.sim.wait(job);
  CHECK(r.latency_s == Approx(0.5 + 50e-6 + (0.5 - 50e-6) * 2).margin(2e-9));
  CHECK_THROWS_AS(b.sim.finished(job), dydnn::IndexError);

  // Two 2-core jobs on a 2-core host share it: each takes twice as long; both end together.
  CHECK(b.sim.set_frequency(0, 3000 * kMHz).ok);
  b.sim.advance(0.001);
  const size_t a = b.sim.submit(0, {0.1, 0.0}, 2);
  const size_t c = b.sim.submit(0, {0.1, 0.0}, 2);
  const JobResult ra = b.sim.wait(a);
  CHECK(b.sim.finished(c));
  const JobResult rc = b.sim.wait(c);
  CHECK(ra.latency_s == Approx(0.2).margin(2e-9));
  CHECK(rc.end_ns == ra.end_ns);
  // One 1-core job each fits side by side.
  const size_t d = b.sim.submit(0, {0.1, 0.0}, 1);
  const size_t e = b.sim.submit(0, {0.05, 0.0}, 1);
  CHECK(b.sim.wait(e).latency_s == Approx(0.05).margin(2e-9));
  CHECK(b.sim.wait(d).latency_s == Approx(0.1).margin(2e-9));
  // An empty job ends at once.
  CHECK(b.sim.run(0, {0, 0}).latency_s == 0);
}

TEST_CASE("SimBackend energy: a lower frequency saves energy only while static power is small", "[hw][sim]") {
  // A compute-bound job (Tc = 1 s at 2 GHz) on one A15 core, at every OPP. Dynamic energy per job
  // is C V^2 Tc f_ref: it never rises as f falls; static energy is static_w * T(f), which does.
  const auto job_energy = [](double static_w) {
    Platform p = Platform::builtin("exynos5422");
    for (auto& d : p.domains) d.static_w = 0;
    p.domains[1].static_w = static_w;
    Board b(std::move(p));
    std::vector<std::pair<uint64_t, double>> out;
    for (uint64_t hz : b.sim.domains()[1].frequencies_hz) {
      REQUIRE(b.sim.set_frequency(1, hz).ok);
      b.sim.advance(0.001);
      out.emplace_back(hz, b.sim.run(1, {1.0, 0.0, 2000 * kMHz}).domain_energy_j);
    }
    return out;
  };
  const auto cheapest = [](const std::vector<std::pair<uint64_t, double>>& e) {
    return std::min_element(e.begin(), e.end(), [](auto& x, auto& y) { return x.second < y.second; })->first;
  };

  // No static power: the lowest frequency is (jointly, on the 0.9 V plateau) the cheapest.
  const auto none = job_energy(0);
  CHECK(none.front().second == Approx(0.310 * 0.81 * 2.0));  // C V^2 Tc f_ref = 0.502 J
  for (const auto& [hz, e] : none) CHECK(none.front().second <= e + 1e-9);
  CHECK(none.front().second < none.back().second / 2);

  // A small static power (below ~0.063 W here) keeps the lowest frequency cheaper than the highest...
  const auto small = job_energy(0.05);
  CHECK(small.front().second < small.back().second);
  // ...the assumed 0.2 W does not: 200 MHz costs about twice as much as 2 GHz, and the cheapest
  // point lies in between (1.2 GHz, the top of the 1.0 V plateau).
  const auto assumed = job_energy(0.2);
  CHECK(assumed.front().second > assumed.back().second);
  CHECK(assumed.front().second == Approx((0.0502 + 0.2) * 10.0).margin(0.01));
  CHECK(cheapest(assumed) == 1200 * kMHz);
  CHECK(cheapest(assumed) > cheapest(small));
}
