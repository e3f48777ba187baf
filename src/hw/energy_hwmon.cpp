// Power meters on generic hwmon devices (/sys/class/hwmon/hwmonN), and the channel scan
// the Jetson hwmon meter shares.
#include "energy_internal.h"

#include <dydnn/errors.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>

namespace dydnn {
namespace hw {
namespace energy_detail {

namespace {

const char* const kHwmonClass = "/sys/class/hwmon";

/// K when `name` is "<prefix>K<suffix>", else -1.
long channel_index(const std::string& name, const std::string& prefix, const std::string& suffix) {
  if (name.size() <= prefix.size() + suffix.size()) return -1;
  if (name.compare(0, prefix.size(), prefix) != 0) return -1;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return -1;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::strtol(digits.c_str(), nullptr, 10);
}

std::string first_label(const SysFs& fs, const std::string& dir, const std::vector<std::string>& files,
                        const std::string& fallback) {
  for (const auto& file : files) {
    const std::string label = read_text(fs, dir + "/" + file);
    if (!label.empty()) return label;
  }
  return fallback;
}

}  // namespace

std::vector<PowerRail> hwmon_rails(const SysFs& fs, const std::string& dir) {
  std::set<long> power_input, power_average, voltage, current;
  for (const auto& name : fs.list(dir)) {
    long k;
    if ((k = channel_index(name, "power", "_input")) >= 0) power_input.insert(k);
    if ((k = channel_index(name, "power", "_average")) >= 0) power_average.insert(k);
    if ((k = channel_index(name, "in", "_input")) >= 0) voltage.insert(k);
    if ((k = channel_index(name, "curr", "_input")) >= 0) current.insert(k);
  }
  std::vector<PowerRail> rails;
  std::set<long> power = power_input;
  power.insert(power_average.begin(), power_average.end());
  for (long k : power) {
    const std::string p = "power" + std::to_string(k);
    const std::string file = power_input.count(k) ? p + "_input" : p + "_average";
    rails.push_back(power_file_rail(first_label(fs, dir, {p + "_label"}, p), dir + "/" + file, 1e-6));
  }
  // V x I only when the device has no power channel: where it has both, power is the
  // chip's own product and pairing in/curr by index would not be reliable.
  if (!rails.empty()) return rails;
  for (long k : voltage) {
    if (!current.count(k)) continue;
    const std::string in = "in" + std::to_string(k), curr = "curr" + std::to_string(k);
    rails.push_back(vi_rail(first_label(fs, dir, {in + "_label", curr + "_label"}, in), dir + "/" + in + "_input",
                            dir + "/" + curr + "_input", 1e-6));
  }
  return rails;
}

}  // namespace energy_detail

OpenedMeter open_hwmon_meter(std::shared_ptr<SysFs> fs, const Clock& clock, std::string device,
                             std::vector<std::string> rails) {
  using namespace energy_detail;
  DYDNN_CHECK_VALUE(fs != nullptr, "hw", "open_hwmon_meter: fs is null (valid: a SysFs)");
  const std::string base = kHwmonClass;

  std::vector<std::string> candidates;
  if (!device.empty()) {
    if (!fs->is_directory(base + "/" + device)) return {nullptr, "no " + base + "/" + device};
    candidates.push_back(device);
  } else {
    for (const auto& name : sorted_numerically(fs->list(base)))
      if (fs->is_directory(base + "/" + name)) candidates.push_back(name);
    if (candidates.empty()) return {nullptr, "no " + base + "/hwmon* devices"};
  }

  std::vector<std::string> looked_at;
  for (const auto& candidate : candidates) {
    const std::string dir = base + "/" + candidate;
    const std::string name = read_text(*fs, dir + "/name");
    const std::string shown = candidate + " (" + (name.empty() ? "no name" : name) + ")";
    if (device.empty() && name == "ina3221") {
      looked_at.push_back(shown + ": skipped, a Jetson INA3221 with nested rails");
      continue;
    }
    const std::vector<PowerRail> all = hwmon_rails(*fs, dir);
    if (all.empty()) {
      looked_at.push_back(shown + ": no power*_input or in*_input x curr*_input");
      continue;
    }
    std::vector<PowerRail> chosen = all;
    std::string why;
    if (!rails.empty() && !select_rails(all, rails, chosen, why)) {
      looked_at.push_back(shown + ": " + why);
      continue;
    }
    RailMeterInfo info;
    const std::string labels = join(rail_labels(chosen), "+");
    info.source = "hwmon:" + (name.empty() ? candidate : name) + ":" + labels;
    info.coverage = "hwmon " + shown + " rail(s) " + labels +
                    ", summed: whatever those rails supply, for every process on them (not exclusive); "
                    "check that no rail feeds another";
    double interval_ms = 0;
    std::string ignored;
    info.refresh_interval_s = read_number(*fs, dir + "/update_interval", interval_ms, ignored) && interval_ms > 0
                                  ? interval_ms * 1e-3
                                  : std::numeric_limits<double>::quiet_NaN();
    auto opened = probe(make_rail_meter(fs, clock, std::move(chosen), std::move(info)));
    if (!opened) opened.reason = shown + ": " + opened.reason;
    return opened;
  }
  return {nullptr, join(looked_at, "; ")};
}

}  // namespace hw
}  // namespace dydnn
