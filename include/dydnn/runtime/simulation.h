#pragma once
/// \file
/// A simulated serving loop: one or more models serve periodic requests with deadlines on one
/// frequency domain of a simulated board (`hw::SimBackend`), under a policy that chooses the
/// config and the frequency (the dydnn manager, a Linux governor running the full model, a
/// fixed point, or Dynamic-OFA's ladder). Time is virtual, so a run is deterministic and takes
/// a small fraction of the time it simulates.
///
/// Serving rules (the same for every policy):
/// - Each model (a *stream*) gets request `k` at `offset + k * period`, with the deadline in
///   force at that time; a request misses when `finish - arrival > deadline`.
/// - A stream runs one request at a time, on one core of the domain. A request arriving while
///   the previous one runs waits; one waits at most: a newer arrival replaces it, and the
///   replaced one is dropped (counted as a miss, not served), as a camera pipeline drops frames.
///   A waiting request starts within `SimOptions::dispatch_s` of the previous one finishing.
/// - A background process takes a share of every core of the domain from the trace's steps
///   (`SimBackend::set_background`): jobs stretch by `1 / (1 - share)`.
/// - Energy per inference is the domain's energy over the whole run (static power and the
///   idle time between requests included) less the background's dynamic energy, divided by the
///   requests served.
///
/// The manager policy, per request: targets = {latency <= the time left to the deadline,
/// accuracy >= the floor}, objective minimum energy, over the points (config, frequency) of
/// `sim_points` (predicted latency `T(f)` of the simulator, energy = one busy core's dynamic
/// power x `T(f)`). One stream: a `ModelManager` decides and its frequency is set (userspace)
/// before the job. Several streams: a `SystemManager` sets the shared frequency to the lowest
/// one at which every model has a feasible point, and each model re-picks its config there.
/// A change of frequency acts after the domain's transition latency, so a decision that changes
/// it is taken again with that much less time; when that would end above the frequency in force
/// although a lower one fitted the whole budget, the frequency stays where it is (it fits too,
/// with no transition to pay).
/// After each job the manager observes the measured latency, normalised to the frequency its
/// point asked for (so only a loss of CPU time, e.g. the background, moves the slowdown).
///
/// Example:
/// \code
///   runtime::SimTrace trace;
///   trace.duration_s = 10;
///   runtime::SimStream s;
///   s.net = net;
///   s.configs = {{0b01, "A", 0.90, {0.004, 0.001}}, {0b11, "AB", 0.91, {0.008, 0.002}}};
///   s.period_s = 0.05;
///   s.deadline_s = {{0.0, 0.03}};
///   trace.streams = {s};
///   runtime::SimPolicy manager;
///   manager.min_accuracy = 0.91;
///   auto r = runtime::simulate(hw::Platform::builtin("exynos5422"), "policy4", trace, manager);
///   // r.energy_per_inference_j, r.miss_rate, r.p99_s, ...
/// \endcode

#include <dydnn/hw/platform.h>
#include <dydnn/hw/sim_backend.h>
#include <dydnn/nn/dynamic_net.h>
#include <dydnn/runtime/ladder.h>
#include <dydnn/runtime/selector.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace dydnn {
namespace runtime {

/// A value from a time on: a trace holds steps in ascending time, and the value at `t` is that
/// of the last step at or before `t` (the first step's before it).
struct SimStep {
  double time_s = 0;
  double value = 0;
};

/// One config of a simulated model: how accurate it is and what it asks of one core.
struct SimConfig {
  uint64_t mask = 0;     ///< `nn::Config::mask()`
  std::string name;      ///< for tables and logs: "AB"
  double accuracy = 0;   ///< top-1, 0..1
  hw::Work work;         ///< its demand on one core of the domain (`T(f) = Tc f_ref / f + Tm`)
};

/// One model serving a periodic stream of requests.
struct SimStream {
  std::string name;               ///< for tables: "model 1"
  /// The model. Only the manager policy needs it (a `ModelManager` per stream); it must have
  /// every config listed. It is never run.
  nn::DynamicNet net{nullptr};
  std::vector<SimConfig> configs; ///< the baselines run the last one (the full model)
  double period_s = 0;            ///< one request every period (> 0) ...
  double offset_s = 0;            ///< ... from this time (>= 0)
  std::vector<SimStep> deadline_s;  ///< the deadline (s, > 0) of a request arriving then; at least one step
};

/// What the simulated board serves.
struct SimTrace {
  double duration_s = 0;             ///< requests arrive in [0, duration); the run ends when the last is served
  std::vector<SimStep> background;   ///< the share (0 <= share < 1) of the domain's cores another process takes
  std::vector<SimStream> streams;    ///< at least one, at most the domain's core count
};

/// Who chooses the config and the frequency.
enum class SimPolicyKind {
  Manager,   ///< dydnn: `ModelManager` per stream (+ `SystemManager` for several), minimum energy
  Governor,  ///< a simulated Linux governor sets the frequency; every request runs the full model
  Static,    ///< one fixed frequency (userspace) and one fixed config per stream
  Ladder,    ///< Dynamic-OFA's ladder per stream picks the config; a governor sets the frequency
};

/// "manager" | "governor" | "static" | "ladder".
const char* to_string(SimPolicyKind kind);

/// A policy and its settings.
struct SimPolicy {
  SimPolicyKind kind = SimPolicyKind::Manager;
  /// Governor and Ladder: the domain's governor (`hw::simulated_governors()`).
  std::string governor = "schedutil";
  /// Manager and Ladder: the accuracy floor (0..1).
  double min_accuracy = 0;
  SelectorOptions selector;  ///< Manager
  LadderOptions ladder;      ///< Ladder
  /// Static: per stream, the index of its config; and the frequency, one of the domain's.
  std::vector<size_t> static_configs;
  uint64_t static_hz = 0;
};

/// How the loop runs.
struct SimOptions {
  /// How soon a waiting request starts after the one before it finishes, at most (s, > 0):
  /// the loop looks for finished jobs this often while a request waits.
  double dispatch_s = 1e-5;
  /// Stop as soon as more than this many requests have missed (`SimResult::aborted`); for
  /// sweeps that only want runs with few misses.
  size_t max_misses = std::numeric_limits<size_t>::max();
  /// Keep every request in `SimResult::requests`.
  bool keep_requests = false;
  /// Times (s, ascending, before the trace's end) at which to record the energy and the counts
  /// so far in `SimResult::marks`, e.g. the phases of a trace.
  std::vector<double> marks_s;
};

/// The state of a run at one of `SimOptions::marks_s`.
struct SimMark {
  double time_s = 0;
  double energy_j = 0;             ///< the domain's energy since the start
  double background_energy_j = 0;  ///< the background's part of it
  size_t arrived = 0, served = 0, missed = 0;  ///< so far; served and missed count finished requests
};

/// One request, as served (or dropped).
struct SimRequest {
  size_t stream = 0;
  double arrival_s = 0, start_s = 0, finish_s = 0;  ///< start and finish: 0 when dropped
  double deadline_s = 0;
  size_t config = 0;     ///< index into the stream's configs
  uint64_t hz = 0;       ///< the frequency the domain was set to (or heading to) at the start
  bool missed = false;   ///< finish - arrival > deadline, or dropped
  bool dropped = false;
};

/// What a run cost and achieved.
struct SimResult {
  size_t arrived = 0;   ///< requests that arrived
  size_t served = 0;    ///< requests run to the end
  size_t missed = 0;    ///< late or dropped
  size_t dropped = 0;   ///< replaced while waiting
  double miss_rate = 0;                ///< missed / arrived
  double energy_j = 0;                 ///< the domain's energy over the run, the background's included
  /// The background's part of energy_j (`hw::SimBackend::background_energy_j`): the dynamic
  /// energy of the core time it took. It is another program's, so it is not charged to inference.
  double background_energy_j = 0;
  /// (energy_j - background_energy_j) / served: the static power over the whole run (idle time
  /// included) and the jobs' dynamic energy, per request served.
  double energy_per_inference_j = 0;
  double static_energy_j = 0;          ///< the static part of energy_j: static power x run time
  double p50_s = 0, p95_s = 0, p99_s = 0;  ///< latency (finish - arrival) of the served requests, nearest rank
  double mean_accuracy = 0;            ///< over the served requests
  /// Changes of (config, frequency) between consecutive requests of a stream, summed over streams.
  size_t switches = 0;
  size_t infeasible = 0;   ///< manager decisions with no feasible point (the fastest point ran)
  double mean_job_hz = 0;  ///< the domain's mean frequency while jobs ran (time-weighted)
  double end_s = 0;        ///< when the run ended
  bool aborted = false;    ///< stopped early by `SimOptions::max_misses`; the other fields are partial
  std::vector<SimRequest> requests;  ///< with `SimOptions::keep_requests`
  std::vector<SimMark> marks;        ///< one per `SimOptions::marks_s`
};

/// The operating points the manager chooses from for `stream` on `domain`: every config at
/// every frequency of the domain, knob `<domain>_hz`, latency `T(f)` of the simulator with no
/// background, power = one busy core's dynamic power at `f`, energy = power x latency (static
/// power is paid whatever the choice, so it is left out). Throws `ValueError` for an unknown
/// domain or an invalid config (see `simulate`).
std::vector<Point> sim_points(const hw::Platform& platform, const std::string& domain, const SimStream& stream);

/// Runs `trace` on `domain` (a domain name of `platform`, e.g. "policy4") under `policy`.
/// Throws `ValueError` naming the field for an invalid trace or policy: no streams or more
/// than the domain's cores, a period, deadline or duration out of range, steps not ascending,
/// a background share outside [0, 1), an unknown governor, a static config or frequency not
/// in range, a manager stream without a net.
SimResult simulate(const hw::Platform& platform, const std::string& domain, const SimTrace& trace,
                   const SimPolicy& policy, const SimOptions& options = {});

}  // namespace runtime
}  // namespace dydnn
