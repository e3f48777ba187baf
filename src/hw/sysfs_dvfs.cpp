#include <dydnn/errors.h>
#include <dydnn/hw/sysfs_dvfs.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <optional>

namespace dydnn {
namespace hw {
namespace {

// cpufreq prints CPUFREQ_ETERNAL (-1 as unsigned) when the driver does not know its latency.
constexpr uint64_t kEternalLatencyNs = 4294967295ULL;

std::string trim(const std::string& text) {
  size_t begin = 0, end = text.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  return text.substr(begin, end - begin);
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  for (const char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!word.empty()) out.push_back(std::move(word));
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) out.push_back(std::move(word));
  return out;
}

std::optional<uint64_t> parse_u64(const std::string& text) {
  const std::string t = trim(text);
  if (t.empty() || !std::all_of(t.begin(), t.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return std::nullopt;
  errno = 0;
  const unsigned long long value = std::strtoull(t.c_str(), nullptr, 10);
  if (errno == ERANGE) return std::nullopt;
  return static_cast<uint64_t>(value);
}

// "0 1 2 3" (affected_cpus, related_cpus) and, defensively, the "0-3,6" list format.
std::vector<int> parse_cpus(const std::string& text) {
  std::vector<int> cpus;
  std::string spaced = text;
  std::replace(spaced.begin(), spaced.end(), ',', ' ');
  for (const auto& word : split(spaced)) {
    const auto dash = word.find('-');
    const auto first = parse_u64(word.substr(0, dash));
    const auto last = dash == std::string::npos ? first : parse_u64(word.substr(dash + 1));
    if (!first || !last || *last < *first || *last > 1u << 16) continue;
    for (uint64_t cpu = *first; cpu <= *last; ++cpu) cpus.push_back(static_cast<int>(cpu));
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

// Sorted and deduplicated: some drivers list their table from the highest entry down.
std::vector<uint64_t> parse_table(const std::string& text, uint64_t unit) {
  std::vector<uint64_t> table;
  for (const auto& word : split(text))
    if (const auto value = parse_u64(word)) table.push_back(*value * unit);
  std::sort(table.begin(), table.end());
  table.erase(std::unique(table.begin(), table.end()), table.end());
  return table;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

bool mentions(const std::string& haystack, const std::vector<const char*>& needles) {
  const std::string h = lower(haystack);
  return std::any_of(needles.begin(), needles.end(), [&](const char* n) { return h.find(n) != std::string::npos; });
}

// None of these is made of hex digits only, so a bus address in a device name
// ("17000000.gv11b") cannot match by accident.
const std::vector<const char*> kGpuWords = {"gpu",    "gv11b", "gp10b",    "gk20a", "gm20b", "ga10b", "mali",
                                            "adreno", "kgsl",  "panfrost", "lima",  "etnaviv", "npu",  "dla"};
const std::vector<const char*> kMemoryWords = {"emc", "dmc", "memory", "ddr", "dram", "mif", "bus", "llcc", "cpubw"};

// The name decides first (a "bus" feeding a GPU is a bus), then the device's uevent
// (driver, device-tree name and compatibles). Whatever is not a GPU scales data movement.
DomainKind classify_devfreq(const std::string& name, const std::string& device_uevent) {
  if (mentions(name, kMemoryWords)) return DomainKind::Memory;
  if (mentions(name, kGpuWords) || mentions(device_uevent, kGpuWords)) return DomainKind::Gpu;
  return DomainKind::Memory;
}

// What to do about a failed read or write.
std::string hint(int error) {
  switch (error) {
    case EACCES:
    case EPERM:
      return " (run as root, or grant write access with a udev rule; see docs/runtime.md)";
    case EROFS:
      return " (sysfs is mounted read-only here, as in most containers)";
    case ENOENT:
      return " (the kernel does not provide this file here)";
    case EINVAL:
      return " (the kernel refused the value)";
    case EBUSY:
      return " (the device is busy; retry later)";
    default:
      return "";
  }
}

std::string io_failure(const std::string& path, const std::string& action, const IoResult& result) {
  return fmt::format("{}: {} failed: {}{}", path, action, result.message(), hint(result.error));
}

std::string write_action(const std::string& text) { return fmt::format("write '{}'", text); }

std::optional<int> policy_number(const std::string& name) {
  static const std::string prefix = "policy";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const auto n = parse_u64(name.substr(prefix.size()));
  if (!n || *n > 1u << 16) return std::nullopt;
  return static_cast<int>(*n);
}

bool has(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

std::string joined(const std::vector<std::string>& list) { return list.empty() ? "none" : fmt::format("{}", fmt::join(list, " ")); }

}  // namespace

SysfsDvfs::SysfsDvfs(std::shared_ptr<SysFs> fs) : fs_(std::move(fs)) {
  DYDNN_CHECK_VALUE(fs_ != nullptr, "hw", "SysfsDvfs: the SysFs is null (valid: a RealSysFs, a FaultySysFs, ...)");
  discover_cpufreq();
  discover_devfreq();
}

SysfsDvfs::~SysfsDvfs() {
  try {
    restore();
  } catch (...) {
    // A destructor must not throw; restore() reports through its Status, which nobody reads here.
  }
}

void SysfsDvfs::discover_cpufreq() {
  std::vector<std::pair<int, std::string>> policies;
  for (const auto& entry : fs_->list(kCpufreqDir)) {
    const auto n = policy_number(entry);
    if (n && fs_->is_directory(std::string(kCpufreqDir) + "/" + entry)) policies.emplace_back(*n, entry);
  }
  std::sort(policies.begin(), policies.end());
  for (const auto& [number, entry] : policies) {
    (void)number;
    Files f;
    f.dir = std::string(kCpufreqDir) + "/" + entry;
    f.governor = f.dir + "/scaling_governor";
    f.setspeed = f.dir + "/scaling_setspeed";
    f.min = f.dir + "/scaling_min_freq";
    f.max = f.dir + "/scaling_max_freq";
    f.cur = f.dir + "/scaling_cur_freq";
    f.unit = 1000;

    Domain d;
    d.name = entry;
    d.kind = DomainKind::CpuCluster;
    // affected_cpus lists the online CPUs; related_cpus also the offline ones, which is
    // all there is once the whole cluster is offline.
    d.cpus = parse_cpus(fs_->read(f.dir + "/affected_cpus").text);
    if (d.cpus.empty()) d.cpus = parse_cpus(fs_->read(f.dir + "/related_cpus").text);
    d.frequencies_hz = parse_table(fs_->read(f.dir + "/scaling_available_frequencies").text, f.unit);
    d.min_hz = read_hz(f.dir + "/cpuinfo_min_freq", f.unit);
    d.max_hz = read_hz(f.dir + "/cpuinfo_max_freq", f.unit);
    if (d.min_hz == 0 && !d.frequencies_hz.empty()) d.min_hz = d.frequencies_hz.front();
    if (d.max_hz == 0 && !d.frequencies_hz.empty()) d.max_hz = d.frequencies_hz.back();
    d.governors = split(fs_->read(f.dir + "/scaling_available_governors").text);
    const auto latency_ns = parse_u64(fs_->read(f.dir + "/cpuinfo_transition_latency").text);
    if (latency_ns && *latency_ns != kEternalLatencyNs) d.transition_latency_s = static_cast<double>(*latency_ns) * 1e-9;
    probe_capabilities(d, f, /*cpufreq=*/true);
    domains_.push_back(std::move(d));
    files_.push_back(std::move(f));
  }
}

void SysfsDvfs::discover_devfreq() {
  for (const auto& entry : fs_->list(kDevfreqDir)) {
    Files f;
    f.dir = std::string(kDevfreqDir) + "/" + entry;
    if (!fs_->is_directory(f.dir)) continue;
    f.governor = f.dir + "/governor";
    f.setspeed = f.dir + "/userspace/set_freq";
    f.min = f.dir + "/min_freq";
    f.max = f.dir + "/max_freq";
    f.cur = f.dir + "/cur_freq";
    f.unit = 1;

    Domain d;
    d.name = entry;
    d.kind = classify_devfreq(entry, fs_->read(f.dir + "/device/uevent").text);
    d.frequencies_hz = parse_table(fs_->read(f.dir + "/available_frequencies").text, f.unit);
    // min_freq and max_freq are the current limits; the table is the hardware's range.
    d.min_hz = d.frequencies_hz.empty() ? read_hz(f.min, f.unit) : d.frequencies_hz.front();
    d.max_hz = d.frequencies_hz.empty() ? read_hz(f.max, f.unit) : d.frequencies_hz.back();
    d.governors = split(fs_->read(f.dir + "/available_governors").text);
    // devfreq publishes no transition latency: 0 means unknown.
    probe_capabilities(d, f, /*cpufreq=*/false);
    domains_.push_back(std::move(d));
    files_.push_back(std::move(f));
  }
}

void SysfsDvfs::probe_capabilities(Domain& d, const Files& f, bool cpufreq) {
  // The governor: writing back the one that runs is a no-op in both cpufreq and devfreq.
  const IoResult governor = fs_->read(f.governor);
  int governor_error = governor.error;
  std::string current;
  if (!governor.ok()) {
    d.can_set_governor = Capability::no(io_failure(f.governor, "read", governor));
  } else if ((current = trim(governor.text)).empty()) {
    governor_error = EINVAL;
    d.can_set_governor = Capability::no(f.governor + ": reads empty (is the whole cluster offline?)");
  } else {
    const IoResult probe = fs_->write(f.governor, current);
    governor_error = probe.error;
    d.can_set_governor = probe.ok() ? Capability::yes()
                                    : Capability::no(io_failure(f.governor, write_action(current), probe));
  }

  // A fixed frequency: the userspace governor, then its setspeed file.
  if (!d.can_set_governor.available) {
    d.can_set_frequency = Capability::no("needs the governor switched to userspace: " + d.can_set_governor.reason);
  } else if (!has(d.governors, "userspace")) {
    std::string what_to_do;
    if (!cpufreq)
      what_to_do = "enable CONFIG_DEVFREQ_GOV_USERSPACE, or use set_limits";
    else if (trim(fs_->read(f.dir + "/scaling_driver").text) == "intel_pstate")
      what_to_do = "intel_pstate in active mode has no fixed frequencies: use set_limits, or switch it to passive mode "
                   "(intel_pstate=passive on the kernel command line) for the userspace governor";
    else
      what_to_do = "enable CONFIG_CPU_FREQ_GOV_USERSPACE, or use set_limits";
    d.can_set_frequency = Capability::no(
        fmt::format("{}: no 'userspace' governor (available: {}); {}", f.dir, joined(d.governors), what_to_do));
  } else if (cpufreq && !fs_->exists(f.setspeed)) {
    d.can_set_frequency = Capability::no(io_failure(f.setspeed, "open", IoResult{ENOENT, {}}));
  } else if (current == "userspace") {
    // Under userspace the setspeed file holds the frequency set: writing it back changes nothing.
    // devfreq creates userspace/set_freq only while userspace runs, so otherwise it cannot be checked.
    const IoResult speed = fs_->read(f.setspeed);
    if (!speed.ok()) {
      d.can_set_frequency = Capability::no(io_failure(f.setspeed, "read", speed));
    } else if (parse_u64(speed.text)) {
      const IoResult probe = fs_->write(f.setspeed, trim(speed.text));
      d.can_set_frequency = probe.ok() ? Capability::yes()
                                       : Capability::no(io_failure(f.setspeed, write_action(trim(speed.text)), probe));
    } else {
      d.can_set_frequency = Capability::yes();
    }
  } else {
    d.can_set_frequency = Capability::yes();
  }

  // Limits: writing one back could turn a temporary (thermal) cap into a user limit, so the
  // files are only read; they share the governor file's owner and mode.
  d.can_set_limits = Capability::yes();
  for (const auto* path : {&f.min, &f.max}) {
    const IoResult limit = fs_->read(*path);
    if (!limit.ok()) {
      d.can_set_limits = Capability::no(io_failure(*path, "read", limit));
      return;
    }
  }
  if (governor_error == EACCES || governor_error == EPERM || governor_error == EROFS)
    d.can_set_limits = Capability::no(fmt::format("{} and {}: not writable, like {}: {}{}", f.min, f.max, f.governor,
                                                  IoResult{governor_error, {}}.message(), hint(governor_error)));
}

uint64_t SysfsDvfs::read_hz(const std::string& path, uint64_t unit) const {
  const IoResult r = fs_->read(path);
  if (!r.ok()) return 0;
  const auto value = parse_u64(r.text);
  return value ? *value * unit : 0;
}

Status SysfsDvfs::write_tracked(size_t domain, Change::Role role, const std::string& path, const std::string& text) {
  if (journaled_.count(path) != 0) {
    const IoResult w = fs_->write(path, text);
    return w.ok() ? Status::success() : Status::failure(io_failure(path, write_action(text), w));
  }
  const IoResult original = fs_->read(path);
  if (!original.ok())
    return Status::failure(fmt::format("{}: not changed, because reading the value to restore later failed: {}{}", path,
                                       original.message(), hint(original.error)));
  const IoResult w = fs_->write(path, text);
  if (!w.ok()) return Status::failure(io_failure(path, write_action(text), w));
  journaled_.insert(path);
  // A setspeed file outside userspace reads "<unsupported>" (cpufreq) or "undefined"
  // (devfreq): there is no frequency to put back, the governor's restore is enough.
  const std::string value = trim(original.text);
  if (role != Change::Role::Setspeed || parse_u64(value)) journal_.push_back({path, value, domain, role});
  return Status::success();
}

bool SysfsDvfs::write_back(const Change& change, std::string& failures) {
  const IoResult w = fs_->write(change.path, change.original);
  if (w.ok()) return true;
  if (!failures.empty()) failures += "; ";
  failures += io_failure(change.path, "write back '" + change.original + "'", w);
  return false;
}

Status SysfsDvfs::set_governor(size_t domain, const std::string& governor) {
  check_domain(domain);
  const Domain& d = domains_[domain];
  const Files& f = files_[domain];
  if (!d.can_set_governor.available)
    return Status::failure(fmt::format("{}: cannot set the governor: {}", d.name, d.can_set_governor.reason));
  if (!d.governors.empty() && !has(d.governors, governor))
    return Status::failure(
        fmt::format("{}: governor '{}' is not available (available: {})", d.name, governor, joined(d.governors)));
  const IoResult current = fs_->read(f.governor);
  if (current.ok() && trim(current.text) == governor) return Status::success();
  return write_tracked(domain, Change::Role::Other, f.governor, governor);
}

Status SysfsDvfs::set_frequency(size_t domain, uint64_t hz) {
  check_domain(domain);
  const Domain& d = domains_[domain];
  const Files& f = files_[domain];
  if (!d.can_set_frequency.available)
    return Status::failure(fmt::format("{}: cannot set a fixed frequency: {}", d.name, d.can_set_frequency.reason));

  uint64_t target = snap_up(d.frequencies_hz, hz);
  std::string note;
  const uint64_t low = read_hz(f.min, f.unit), high = read_hz(f.max, f.unit);
  if (high != 0 && target > high) {
    target = snap_down(d.frequencies_hz, high);
    if (target < low) target = snap_up(d.frequencies_hz, low);
    note = fmt::format("{}: {} Hz clamped to the max limit {} Hz: set {} Hz", d.name, hz, high, target);
  } else if (low != 0 && target < low) {
    target = snap_up(d.frequencies_hz, low);
    note = fmt::format("{}: {} Hz clamped to the min limit {} Hz: set {} Hz", d.name, hz, low, target);
  }

  const IoResult governor = fs_->read(f.governor);
  if (!governor.ok()) return Status::failure(io_failure(f.governor, "read", governor));
  if (trim(governor.text) != "userspace") {
    const Status switched = write_tracked(domain, Change::Role::Other, f.governor, "userspace");
    if (!switched) return switched;
  }
  const Status written =
      write_tracked(domain, Change::Role::Setspeed, f.setspeed, std::to_string((target + f.unit - 1) / f.unit));
  if (!written) return written;
  Status done;
  done.reason = note;
  return done;
}

Status SysfsDvfs::set_limits(size_t domain, uint64_t min_hz, uint64_t max_hz) {
  check_domain(domain);
  const Domain& d = domains_[domain];
  const Files& f = files_[domain];
  if (min_hz > max_hz)
    return Status::failure(
        fmt::format("{}: set_limits: min {} Hz > max {} Hz (need min <= max)", d.name, min_hz, max_hz));
  if (!d.can_set_limits.available)
    return Status::failure(fmt::format("{}: cannot set limits: {}", d.name, d.can_set_limits.reason));

  uint64_t low = snap_up(d.frequencies_hz, min_hz), high = snap_down(d.frequencies_hz, max_hz);
  if (d.frequencies_hz.empty() && d.max_hz != 0) {
    low = std::clamp(low, d.min_hz, d.max_hz);
    high = std::clamp(high, d.min_hz, d.max_hz);
  }
  std::string note;
  if (low > high) {
    high = low;
    note = fmt::format("{}: no frequency lies in [{}, {}] Hz: both limits set to {} Hz", d.name, min_hz, max_hz, low);
  }
  // min rounds up and max down to the file's unit, so the range stays inside the request.
  const uint64_t min_value = (low + f.unit - 1) / f.unit;
  const uint64_t max_value = std::max(min_value, high / f.unit);

  // Raising the max first, or lowering the min first, keeps min <= max after each write.
  const uint64_t current_max = read_hz(f.max, f.unit);
  const bool max_first = high >= current_max;
  const std::pair<Change::Role, uint64_t> order[2] = {
      max_first ? std::make_pair(Change::Role::Max, max_value) : std::make_pair(Change::Role::Min, min_value),
      max_first ? std::make_pair(Change::Role::Min, min_value) : std::make_pair(Change::Role::Max, max_value)};
  for (const auto& [role, value] : order) {
    const Status s = write_tracked(domain, role, role == Change::Role::Max ? f.max : f.min, std::to_string(value));
    if (!s) return s;
  }
  Status done;
  done.reason = note;
  return done;
}

uint64_t SysfsDvfs::current_frequency(size_t domain) const {
  check_domain(domain);
  return read_hz(files_[domain].cur, files_[domain].unit);
}

std::string SysfsDvfs::governor(size_t domain) const {
  check_domain(domain);
  const IoResult r = fs_->read(files_[domain].governor);
  return r.ok() ? trim(r.text) : std::string();
}

const std::string& SysfsDvfs::directory(size_t domain) const {
  check_domain(domain);
  return files_[domain].dir;
}

std::vector<std::pair<std::string, std::string>> SysfsDvfs::changes() const {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(journal_.size());
  for (const auto& c : journal_) out.emplace_back(c.path, c.original);
  return out;
}

Status SysfsDvfs::restore() {
  std::vector<bool> done(journal_.size(), false), kept(journal_.size(), false);
  std::string failures;
  for (size_t i = journal_.size(); i-- > 0;) {
    if (done[i]) continue;
    done[i] = true;
    const Change& change = journal_[i];
    size_t partner = journal_.size();
    if (change.role == Change::Role::Min || change.role == Change::Role::Max) {
      const auto other = change.role == Change::Role::Min ? Change::Role::Max : Change::Role::Min;
      for (size_t j = 0; j < journal_.size(); ++j)
        if (!done[j] && journal_[j].domain == change.domain && journal_[j].role == other) partner = j;
    }
    if (partner == journal_.size()) {
      kept[i] = !write_back(change, failures);
      continue;
    }
    // Both limits changed: the newest-first order alone could pass through min > max
    // after several set_limits calls, so they go back in the order set_limits would use.
    done[partner] = true;
    const size_t min_index = change.role == Change::Role::Min ? i : partner;
    const size_t max_index = change.role == Change::Role::Max ? i : partner;
    const auto original_max = parse_u64(journal_[max_index].original);
    const auto current_max = parse_u64(fs_->read(journal_[max_index].path).text);
    const bool max_first = !original_max || !current_max || *original_max >= *current_max;
    for (const size_t k : max_first ? std::vector<size_t>{max_index, min_index} : std::vector<size_t>{min_index, max_index})
      kept[k] = !write_back(journal_[k], failures);
  }

  std::vector<Change> remaining;
  journaled_.clear();
  for (size_t i = 0; i < journal_.size(); ++i)
    if (kept[i]) {
      journaled_.insert(journal_[i].path);
      remaining.push_back(journal_[i]);
    }
  journal_ = std::move(remaining);
  return failures.empty() ? Status::success() : Status::failure("restore: " + failures);
}

}  // namespace hw
}  // namespace dydnn
