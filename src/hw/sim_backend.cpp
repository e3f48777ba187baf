#include <dydnn/errors.h>
#include <dydnn/hw/sim_backend.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace dydnn {
namespace hw {

namespace {

constexpr const char* kInitialGovernor = "performance";

}  // namespace

SimBackend::SimBackend(Platform platform, std::shared_ptr<VirtualClock> clock)
    : platform_(std::move(platform)), clock_(std::move(clock)) {
  DYDNN_CHECK_VALUE(clock_ != nullptr, "hw", "SimBackend needs a clock (got null)");
  DYDNN_CHECK_VALUE(!platform_.domains.empty(), "hw", "platform '{}' has no domains", platform_.name);
  now_ns_ = clock_->now_ns();
  for (const auto& m : platform_.domains) {
    DYDNN_CHECK_VALUE(!m.opps.empty(), "hw", "platform '{}': domain '{}' has no operating points", platform_.name,
                      m.name);
    Domain d;
    d.name = m.name;
    d.kind = m.kind;
    d.cpus = m.cpus;
    d.frequencies_hz = m.frequencies_hz();
    d.min_hz = d.frequencies_hz.front();
    d.max_hz = d.frequencies_hz.back();
    // devfreq devices have no ondemand/conservative/schedutil; their own governors are not modelled.
    d.governors = m.kind == DomainKind::CpuCluster ? std::vector<std::string>{"userspace", "performance",  "powersave",
                                                                              "ondemand",  "conservative", "schedutil"}
                                                   : std::vector<std::string>{"userspace", "performance", "powersave"};
    d.transition_latency_s = m.transition_latency_s;
    d.can_set_governor = d.can_set_frequency = d.can_set_limits = Capability::yes();
    domains_.push_back(std::move(d));

    DomainState s;
    s.cur_hz = s.setspeed_hz = s.max_hz = domains_.back().max_hz;
    s.min_hz = domains_.back().min_hz;
    state_.push_back(std::move(s));
    start_governor(state_.size() - 1, kInitialGovernor, nullptr);
  }
}

// No restore() on destruction: nothing outlives a simulated board.

std::string SimBackend::name() const { return "sim:" + platform_.name; }

const PlatformDomain& SimBackend::model(size_t domain) const {
  check_domain(domain);
  return platform_.domains[domain];
}

uint64_t SimBackend::current_frequency(size_t domain) const {
  check_domain(domain);
  const auto& s = state_[domain];
  return s.pending && s.pending_at_ns <= clock_->now_ns() ? s.pending_hz : s.cur_hz;
}

uint64_t SimBackend::target_frequency(size_t domain) const {
  check_domain(domain);
  return state_[domain].pending ? state_[domain].pending_hz : state_[domain].cur_hz;
}

uint64_t SimBackend::min_limit_hz(size_t domain) const {
  check_domain(domain);
  return state_[domain].min_hz;
}

uint64_t SimBackend::max_limit_hz(size_t domain) const {
  check_domain(domain);
  return state_[domain].max_hz;
}

std::string SimBackend::governor(size_t domain) const {
  check_domain(domain);
  return state_[domain].governor;
}

void SimBackend::request(size_t domain, uint64_t hz) {
  auto& s = state_[domain];
  if (hz == (s.pending ? s.pending_hz : s.cur_hz)) return;
  const auto latency_ns = static_cast<int64_t>(std::llround(domains_[domain].transition_latency_s * 1e9));
  // The latest request replaces one still in flight; going back to the running frequency
  // simply cancels it.
  if (hz == s.cur_hz || latency_ns == 0) {
    s.pending = false;
    s.cur_hz = hz;
    return;
  }
  s.pending = true;
  s.pending_hz = hz;
  s.pending_at_ns = now_ns_ + latency_ns;
}

Status SimBackend::start_governor(size_t domain, const std::string& name, std::unique_ptr<Governor> gov) {
  auto& s = state_[domain];
  const auto& d = domains_[domain];
  if (std::find(d.governors.begin(), d.governors.end(), name) == d.governors.end())
    return Status::failure(
        fmt::format("{}: governor '{}' is not available (available: {})", d.name, name, fmt::join(d.governors, ", ")));
  s.governor = name;
  s.acc_ns = s.acc_busy = s.acc_util = 0;
  if (name == "userspace") {
    // The userspace governor starts by holding whatever the policy runs at.
    s.gov.reset();
    s.setspeed_hz = target_frequency(domain);
    return Status::success();
  }
  s.gov = gov ? std::move(gov) : make_governor(name, d.frequencies_hz, d.transition_latency_s);
  s.gov->limits(s.min_hz, s.max_hz);
  request(domain, s.gov->start(now_ns_, target_frequency(domain)));
  return Status::success();
}

Status SimBackend::set_governor(size_t domain, const std::string& governor) {
  check_domain(domain);
  sync();
  return start_governor(domain, governor, nullptr);
}

Status SimBackend::use_governor(size_t domain, std::unique_ptr<Governor> governor) {
  check_domain(domain);
  DYDNN_CHECK_VALUE(governor != nullptr, "hw", "{}: use_governor needs a governor (got null)", domains_[domain].name);
  DYDNN_CHECK_VALUE(governor->table() == domains_[domain].frequencies_hz, "hw",
                    "{}: the governor '{}' was built for another frequency table ({} entries; the domain has {})",
                    domains_[domain].name, governor->name(), governor->table().size(),
                    domains_[domain].frequencies_hz.size());
  sync();
  const std::string name = governor->name();
  return start_governor(domain, name, std::move(governor));
}

Status SimBackend::set_frequency(size_t domain, uint64_t hz) {
  check_domain(domain);
  sync();
  auto& s = state_[domain];
  const auto& d = domains_[domain];
  if (s.governor != "userspace") start_governor(domain, "userspace", nullptr);  // every domain offers it
  // Clamped as SysfsDvfs writes it, so both backends remember the same setspeed.
  const uint64_t snapped = snap_up(d.frequencies_hz, hz);
  s.setspeed_hz = std::clamp(snapped, s.min_hz, s.max_hz);
  request(domain, s.setspeed_hz);
  Status done;
  if (snapped > s.max_hz)
    done.reason =
        fmt::format("{}: {} Hz clamped to the max limit {} Hz: set {} Hz", d.name, hz, s.max_hz, s.setspeed_hz);
  else if (snapped < s.min_hz)
    done.reason =
        fmt::format("{}: {} Hz clamped to the min limit {} Hz: set {} Hz", d.name, hz, s.min_hz, s.setspeed_hz);
  return done;
}

Status SimBackend::set_limits(size_t domain, uint64_t min_hz, uint64_t max_hz) {
  check_domain(domain);
  const auto& d = domains_[domain];
  if (min_hz > max_hz)
    return Status::failure(
        fmt::format("{}: set_limits: min {} Hz > max {} Hz (need min <= max)", d.name, min_hz, max_hz));
  const uint64_t lo = snap_up(d.frequencies_hz, min_hz);
  uint64_t hi = snap_down(d.frequencies_hz, max_hz);
  Status done;
  if (lo > hi) {
    // As SysfsDvfs: both limits take the entry above the request.
    hi = lo;
    done.reason =
        fmt::format("{}: no frequency lies in [{}, {}] Hz: both limits set to {} Hz", d.name, min_hz, max_hz, lo);
  }
  sync();
  auto& s = state_[domain];
  s.min_hz = lo;
  s.max_hz = hi;
  // As the kernel's governor->limits(): userspace re-applies its setspeed clamped, the others decide.
  request(domain, s.gov ? s.gov->limits(lo, hi) : std::clamp(s.setspeed_hz, lo, hi));
  return done;
}

Status SimBackend::restore() {
  sync();
  // Neither step can fail: the full range and the initial governor are always valid.
  for (size_t k = 0; k < domains_.size(); ++k) {
    set_limits(k, domains_[k].min_hz, domains_[k].max_hz);
    start_governor(k, kInitialGovernor, nullptr);
  }
  return Status::success();
}

void SimBackend::check_job(size_t job) const {
  DYDNN_CHECK_INDEX(jobs_.count(job) != 0, "hw", "{}: job {} is unknown or was already collected by wait()", name(),
                    job);
}

void SimBackend::check_work(const Work& work) const {
  DYDNN_CHECK_VALUE(
      std::isfinite(work.compute_s) && work.compute_s >= 0 && std::isfinite(work.memory_s) && work.memory_s >= 0, "hw",
      "{}: work needs finite compute_s >= 0 and memory_s >= 0 (got {} s and {} s)", name(), work.compute_s,
      work.memory_s);
}

double SimBackend::latency_s(size_t domain, uint64_t hz, const Work& work) const {
  check_domain(domain);
  check_work(work);
  DYDNN_CHECK_VALUE(hz > 0, "hw", "{}: latency_s needs a frequency > 0 Hz (got {})", domains_[domain].name, hz);
  const double ref = static_cast<double>(work.ref_hz != 0 ? work.ref_hz : domains_[domain].max_hz);
  const double t = work.compute_s * ref / static_cast<double>(hz) + work.memory_s;
  return t / (1.0 - state_[domain].background);
}

void SimBackend::set_busy(size_t domain, double util, int cores) {
  check_domain(domain);
  const int units = platform_.domains[domain].units();
  DYDNN_CHECK_VALUE(util >= 0 && util <= 1, "hw", "{}: util = {} is out of range (valid: 0 to 1)",
                    domains_[domain].name, util);
  DYDNN_CHECK_VALUE(cores >= 0 && cores <= units, "hw", "{}: cores = {} is out of range (valid: 0 to {})",
                    domains_[domain].name, cores, units);
  sync();
  state_[domain].busy_util = util;
  state_[domain].busy_cores = cores;
}

void SimBackend::set_background(size_t domain, double share) {
  check_domain(domain);
  DYDNN_CHECK_VALUE(share >= 0 && share < 1, "hw", "{}: background share = {} is out of range (valid: 0 <= share < 1)",
                    domains_[domain].name, share);
  sync();
  state_[domain].background = share;
}

double SimBackend::background(size_t domain) const {
  check_domain(domain);
  return state_[domain].background;
}

size_t SimBackend::submit(size_t domain, const Work& work, int cores) {
  check_domain(domain);
  check_work(work);
  const int units = platform_.domains[domain].units();
  DYDNN_CHECK_VALUE(cores >= 1 && cores <= units, "hw", "{}: cores = {} is out of range (valid: 1 to {})",
                    domains_[domain].name, cores, units);
  sync();
  Job job;
  job.domain = domain;
  job.work = work;
  job.cores = cores;
  job.result.domain = domain;
  job.result.start_ns = now_ns_;
  // Energy counters at the start; wait() turns them into the job's share.
  job.result.energy_j = energy_j();
  job.result.domain_energy_j = state_[domain].energy_j;
  jobs_.emplace(next_job_, std::move(job));
  return next_job_++;
}

bool SimBackend::finished(size_t job) const {
  check_job(job);
  return jobs_.at(job).done;
}

JobResult SimBackend::wait(size_t job) {
  check_job(job);
  sync();
  simulate_until(std::numeric_limits<int64_t>::max(), &jobs_.at(job));
  clock_->advance(now_ns_ - clock_->now_ns());
  JobResult r = jobs_.at(job).result;
  jobs_.erase(job);
  return r;
}

JobResult SimBackend::run(size_t domain, const Work& work, int cores) { return wait(submit(domain, work, cores)); }

void SimBackend::advance(double seconds) {
  DYDNN_CHECK_VALUE(std::isfinite(seconds) && seconds >= 0, "hw", "{}: advance({}) needs a finite time >= 0 s", name(),
                    seconds);
  clock_->advance(static_cast<int64_t>(std::llround(seconds * 1e9)));
  sync();
}

void SimBackend::sync() { simulate_until(clock_->now_ns(), nullptr); }

int SimBackend::demanded_cores(size_t domain) const {
  int n = 0;
  for (const auto& [id, job] : jobs_)
    if (job.domain == domain && !job.done) n += job.cores;
  return n;
}

// Per-core busy fractions: job cores are fully busy, then the set_busy cores, the rest idle;
// the background share fills every core's remaining time.
double SimBackend::busy_core_sum(size_t domain) const {
  const auto& s = state_[domain];
  const int units = platform_.domains[domain].units();
  const int jobs = std::min(units, demanded_cores(domain));
  const int traced = std::min(s.busy_cores, units - jobs);
  const double bg = s.background;
  return jobs + traced * std::min(1.0, s.busy_util + bg) + (units - jobs - traced) * bg;
}

// The background's part of busy_core_sum: its share of every core the jobs leave it (a job's
// core is busy throughout, the background taking `bg` of it: the job is stretched by 1 / (1 - bg)),
// and of the set_busy cores what it adds to their own load.
double SimBackend::background_core_sum(size_t domain) const {
  const auto& s = state_[domain];
  const int units = platform_.domains[domain].units();
  const int jobs = std::min(units, demanded_cores(domain));
  const int traced = std::min(s.busy_cores, units - jobs);
  const double bg = s.background;
  return (units - traced) * bg + traced * (std::min(1.0, s.busy_util + bg) - std::min(1.0, s.busy_util));
}

double SimBackend::busiest(size_t domain) const {
  const auto& s = state_[domain];
  const int units = platform_.domains[domain].units();
  if (demanded_cores(domain) > 0) return 1.0;
  if (std::min(s.busy_cores, units) > 0) return std::min(1.0, s.busy_util + s.background);
  return s.background;
}

double SimBackend::job_rate(const Job& job) const {
  const size_t d = job.domain;
  const double t = latency_s(d, state_[d].cur_hz, job.work);
  if (t <= 0) return std::numeric_limits<double>::infinity();
  const double units = platform_.domains[d].units();
  const double share = std::min(1.0, units / static_cast<double>(demanded_cores(d)));
  return share / t;  // progress per second; latency_s already holds the background stretch
}

double SimBackend::domain_power_w(size_t domain, uint64_t hz) const {
  const auto& m = platform_.domains[domain];
  return m.dynamic_power_w(hz, busy_core_sum(domain)) + m.static_w;
}

double SimBackend::power_w(size_t domain) const {
  check_domain(domain);
  return domain_power_w(domain, current_frequency(domain));
}

double SimBackend::power_w() const {
  double p = 0;
  for (size_t k = 0; k < domains_.size(); ++k) p += power_w(k);
  return p;
}

double SimBackend::energy_j(size_t domain) const {
  check_domain(domain);
  return state_[domain].energy_j;
}

double SimBackend::background_energy_j(size_t domain) const {
  check_domain(domain);
  return state_[domain].background_energy_j;
}

double SimBackend::energy_j() const {
  double e = 0;
  for (const auto& s : state_) e += s.energy_j;
  return e;
}

void SimBackend::integrate(int64_t dt_ns) {
  if (dt_ns <= 0) return;
  const double dt = static_cast<double>(dt_ns);
  for (auto& [id, job] : jobs_) {
    if (job.done) continue;
    job.progress += job_rate(job) * dt * 1e-9;
    job.hz_ns += static_cast<double>(state_[job.domain].cur_hz) * dt;
  }
  for (size_t k = 0; k < state_.size(); ++k) {
    auto& s = state_[k];
    const double busy = busiest(k);
    s.energy_j += domain_power_w(k, s.cur_hz) * dt * 1e-9;
    s.background_energy_j += platform_.domains[k].dynamic_power_w(s.cur_hz, background_core_sum(k)) * dt * 1e-9;
    s.acc_ns += dt;
    s.acc_busy += busy * dt;
    s.acc_util += busy * static_cast<double>(s.cur_hz) / static_cast<double>(domains_[k].max_hz) * dt;
  }
}

void SimBackend::apply_due_events() {
  for (size_t k = 0; k < state_.size(); ++k) {
    auto& s = state_[k];
    if (s.pending && s.pending_at_ns <= now_ns_) {
      s.cur_hz = s.pending_hz;
      s.pending = false;
    }
    if (s.gov && s.gov->next_update_ns() <= now_ns_) {
      LoadSample sample;
      if (s.acc_ns > 0) sample = {s.acc_busy / s.acc_ns, s.acc_util / s.acc_ns};
      s.acc_ns = s.acc_busy = s.acc_util = 0;
      request(k, s.gov->update(now_ns_, sample));
    }
  }
}

void SimBackend::simulate_until(int64_t end_ns, const Job* stop) {
  for (;;) {
    apply_due_events();
    if ((stop != nullptr && stop->done) || now_ns_ >= end_ns) return;
    int64_t next = end_ns;
    for (const auto& s : state_) {
      if (s.pending) next = std::min(next, s.pending_at_ns);
      if (s.gov) next = std::min(next, s.gov->next_update_ns());
    }
    for (auto& [id, job] : jobs_) {
      if (job.done) continue;
      const double rate = job_rate(job);
      // Whole nanoseconds, rounded up past float noise (1e-6 ns) so exact durations stay exact.
      const double left_ns = std::max(0.0, 1.0 - job.progress) / rate * 1e9 - 1e-6;
      job.eta_ns =
          now_ns_ + static_cast<int64_t>(std::ceil(std::clamp(left_ns, 0.0, 9e18 - static_cast<double>(now_ns_))));
      next = std::min(next, job.eta_ns);
    }
    integrate(next - now_ns_);
    now_ns_ = next;
    for (auto& [id, job] : jobs_) {
      if (job.done || job.eta_ns > now_ns_) continue;
      job.done = true;
      auto& r = job.result;
      r.end_ns = now_ns_;
      r.latency_s = static_cast<double>(r.end_ns - r.start_ns) * 1e-9;
      r.energy_j = energy_j() - r.energy_j;
      r.domain_energy_j = state_[job.domain].energy_j - r.domain_energy_j;
      r.mean_hz = r.end_ns > r.start_ns ? job.hz_ns / static_cast<double>(r.end_ns - r.start_ns)
                                        : static_cast<double>(state_[job.domain].cur_hz);
    }
  }
}

}  // namespace hw
}  // namespace dydnn
