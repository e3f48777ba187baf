#pragma once
/// \file
/// `SimBackend`: a `DvfsBackend` over a `Platform` model and a `VirtualClock`, with a workload
/// model that accounts time and energy. The runtime manager and the governor baselines drive
/// it on machines without DVFS (CI, containers) and in studies; every run is deterministic.
///
/// Models (see `shared/design.md` 4.7 and `shared/platforms.md`):
/// - latency of a job at frequency f: `T(f) = Tc * f_ref / f + Tm`, stretched by
///   `1 / (1 - background)` when another process takes a share of the domain's CPU time;
/// - power: `sum over domains (C * V(f)^2 * f * busy cores) + static`, V from the OPP table;
/// - a frequency change (by a caller or a governor) takes effect after the domain's transition
///   latency; the old frequency holds until then.
///
/// Time moves only through `advance`, `sync` (after moving the clock yourself) and `wait`/`run`
/// (which advance the clock to the job's end). Not thread-safe.
///
/// Example:
/// \code
///   auto clock = std::make_shared<dydnn::hw::VirtualClock>();
///   dydnn::hw::SimBackend sim(dydnn::hw::Platform::builtin("exynos5422"), clock);
///   const size_t big = sim.find("policy4");
///   sim.set_frequency(big, 1200000000);
///   sim.advance(0.001);                                         // past the 140 us actuation delay
///   auto r = sim.run(big, {0.010, 0.002}, 1);                   // Tc = 10 ms at 2 GHz, Tm = 2 ms
///   // r.latency_s == 0.010 * 2.0 / 1.2 + 0.002, r.energy_j: the whole board over that time
/// \endcode

#include <dydnn/hw/clock.h>
#include <dydnn/hw/dvfs.h>
#include <dydnn/hw/governors.h>
#include <dydnn/hw/platform.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dydnn {
namespace hw {

/// A job's demand: `T(f) = compute_s * f_ref / f + memory_s` on the cores it runs on.
struct Work {
  double compute_s = 0;  ///< Tc: the part that scales with frequency, measured at `ref_hz` (s, >= 0)
  double memory_s = 0;   ///< Tm: the part that does not (memory stalls, I/O, fixed costs) (s, >= 0)
  uint64_t ref_hz = 0;   ///< f_ref: the frequency `compute_s` was measured at; 0 = the domain's highest
};

/// What a finished job cost.
struct JobResult {
  size_t domain = 0;           ///< where it ran
  int64_t start_ns = 0;        ///< virtual time at submission
  int64_t end_ns = 0;          ///< virtual time at completion
  double latency_s = 0;        ///< end - start (s)
  double energy_j = 0;         ///< energy of the whole platform (every domain, static included) meanwhile (J)
  double domain_energy_j = 0;  ///< energy of the job's domain meanwhile (J), other work there included
  double mean_hz = 0;          ///< the domain's time-weighted mean frequency meanwhile (Hz)
};

/// A simulated board: DVFS knobs, governors, jobs, power and energy on a virtual clock.
class SimBackend : public DvfsBackend {
 public:
  /// Every domain starts at its highest frequency under `performance`, with its full
  /// hardware range as limits, idle. `clock` must not be null (`ValueError`).
  SimBackend(Platform platform, std::shared_ptr<VirtualClock> clock);

  // --- DvfsBackend ---------------------------------------------------------------------------
  /// "sim:<platform name>".
  std::string name() const override;
  /// One per platform domain (Hz). CPU clusters offer userspace, performance, powersave,
  /// ondemand, conservative and schedutil; devices userspace, performance and powersave.
  const std::vector<Domain>& domains() const override { return domains_; }
  /// Fails (`Status`) for a governor the domain does not offer. A simulated governor starts
  /// from the frequency in effect and then samples on the virtual clock.
  Status set_governor(size_t domain, const std::string& governor) override;
  /// Switches to `userspace` where needed; `hz` is snapped up to the table and clamped into
  /// the limits (ok, with a note in `reason`, as `SysfsDvfs` does); takes effect after the
  /// transition latency.
  Status set_frequency(size_t domain, uint64_t hz) override;
  /// min snaps up and max down to table entries; fails when min > max; when no entry lies in
  /// between, both take the entry above min (ok, with a note). The running frequency follows
  /// the governor's `limits` rule (userspace: its setspeed clamped), after the latency.
  Status set_limits(size_t domain, uint64_t min_hz, uint64_t max_hz) override;
  /// The frequency in effect at the clock's time (a change still in flight does not count).
  uint64_t current_frequency(size_t domain) const override;
  std::string governor(size_t domain) const override;
  /// Back to the initial state: full limits, `performance` (so the maximum, after the latency).
  /// Jobs, loads and energy counters are not touched.
  Status restore() override;

  /// Like `set_governor`, with a governor built (and tuned) by the caller for this domain's
  /// table (`ValueError` for null or another table).
  Status use_governor(size_t domain, std::unique_ptr<Governor> governor);
  /// Where the domain is heading: a change in flight, else the current frequency.
  uint64_t target_frequency(size_t domain) const;
  uint64_t min_limit_hz(size_t domain) const;  ///< the lower limit now
  uint64_t max_limit_hz(size_t domain) const;  ///< the upper limit now

  const Platform& platform() const { return platform_; }
  /// The platform model of domain `domain` (same index as `domains()`).
  const PlatformDomain& model(size_t domain) const;
  VirtualClock& clock() const { return *clock_; }

  // --- Workload ------------------------------------------------------------------------------
  /// The latency (s) of `work` on `domain` at `hz` (> 0) with the domain's background load
  /// now: `(Tc * f_ref / hz + Tm) / (1 - background)`. Other jobs sharing the cores are not counted.
  double latency_s(size_t domain, uint64_t hz, const Work& work) const;
  /// Trace input: from now on, `cores` cores of `domain` (0..units) are busy a fraction
  /// `util` (0..1) of the time with work of its own (jobs run by `submit` come on top).
  void set_busy(size_t domain, double util, int cores = 1);
  /// From now on another process takes `share` (0 <= share < 1) of every core of `domain`:
  /// jobs there run `1 / (1 - share)` times longer, and the cores count as busy that much more.
  void set_background(size_t domain, double share);
  double background(size_t domain) const;
  /// Starts `work` now on `cores` cores (1..units) of `domain`; returns its id. Jobs on the same
  /// domain asking for more cores than it has share them in proportion.
  size_t submit(size_t domain, const Work& work, int cores = 1);
  /// Whether the job has finished by the simulation's time (`IndexError` for an unknown id).
  bool finished(size_t job) const;
  /// Advances the clock until the job finishes (other jobs progress too) and returns its cost;
  /// the id is then forgotten.
  JobResult wait(size_t job);
  /// `wait(submit(domain, work, cores))`.
  JobResult run(size_t domain, const Work& work, int cores = 1);

  // --- Time, power, energy -------------------------------------------------------------------
  /// Moves the clock forward by `seconds` (>= 0) and simulates up to it.
  void advance(double seconds);
  /// Simulates up to the clock's time (after someone else moved the clock).
  void sync();
  /// The power now (W): every domain, static included.
  double power_w() const;
  /// The power of one domain now (W).
  double power_w(size_t domain) const;
  /// Energy since construction (J): every domain, static included.
  double energy_j() const;
  /// Energy of one domain since construction (J).
  double energy_j(size_t domain) const;
  /// The part of `energy_j(domain)` that is the background's (J): the dynamic power of the
  /// core time its share takes (`set_background`), at the frequency the domain ran. The rest is
  /// the static power and the jobs' (and `set_busy`'s) dynamic power. A simulated benchmark
  /// charges jobs without it: the background is another program, and as it takes a share of the
  /// time (not a fixed amount of work) it gets more done, and spends more, at a higher frequency.
  double background_energy_j(size_t domain) const;

 private:
  struct DomainState {
    std::string governor;
    std::unique_ptr<Governor> gov;  // null under userspace
    uint64_t cur_hz = 0, setspeed_hz = 0, min_hz = 0, max_hz = 0;
    bool pending = false;
    int64_t pending_at_ns = 0;
    uint64_t pending_hz = 0;
    double busy_util = 0;  // set_busy
    int busy_cores = 0;
    double background = 0;
    double energy_j = 0;
    double background_energy_j = 0;
    double acc_ns = 0, acc_busy = 0, acc_util = 0;  // what the governor samples
  };
  struct Job {
    size_t domain = 0;
    Work work;
    int cores = 1;
    double progress = 0;  // 0..1
    int64_t eta_ns = 0;
    bool done = false;
    double hz_ns = 0;  // integral of the domain frequency over the job
    JobResult result;
  };

  void check_job(size_t job) const;
  void check_work(const Work& work) const;
  double busiest(size_t domain) const;
  double busy_core_sum(size_t domain) const;
  double background_core_sum(size_t domain) const;
  int demanded_cores(size_t domain) const;
  double job_rate(const Job& job) const;
  double domain_power_w(size_t domain, uint64_t hz) const;
  void request(size_t domain, uint64_t hz);
  Status start_governor(size_t domain, const std::string& name, std::unique_ptr<Governor> gov);
  void simulate_until(int64_t end_ns, const Job* stop);
  void apply_due_events();
  void integrate(int64_t dt_ns);

  Platform platform_;
  std::shared_ptr<VirtualClock> clock_;
  std::vector<Domain> domains_;
  std::vector<DomainState> state_;
  std::map<size_t, Job> jobs_;
  size_t next_job_ = 0;
  int64_t now_ns_ = 0;  // how far the simulation has got; the clock may be ahead until sync()
};

}  // namespace hw
}  // namespace dydnn
