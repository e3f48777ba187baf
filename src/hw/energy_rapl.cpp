// RAPL energy counters through the powercap framework (/sys/class/powercap/intel-rapl:*).
#include "energy_internal.h"

#include <dydnn/errors.h>

#include <cerrno>
#include <limits>

namespace dydnn {
namespace hw {

namespace {

using namespace energy_detail;

const char* const kPowercap = "/sys/class/powercap";

struct RaplZone {
  std::string id;    // "intel-rapl:0"
  std::string name;  // "package-0"
  uint64_t max_range_uj = 0;
  std::string energy_path;
  // State: the last raw counter value and the energy accumulated since the first reading.
  bool started = false;
  uint64_t last_uj = 0;
  double accumulated_uj = 0;
};

/// Energy between two raw counter values, allowing for one wrap at `max_range`.
uint64_t counter_delta(uint64_t previous, uint64_t current, uint64_t max_range) {
  if (current >= previous) return current - previous;
  return max_range >= previous ? (max_range - previous) + current : current;
}

class RaplMeter : public EnergyMeter {
 public:
  RaplMeter(std::shared_ptr<SysFs> fs, const Clock& clock, std::vector<RaplZone> zones)
      : fs_(std::move(fs)), clock_(&clock), zones_(std::move(zones)) {}

  std::string source() const override {
    std::vector<std::string> names;
    for (const auto& zone : zones_) names.push_back(zone.name);
    return "rapl:" + join(names, "+");
  }

  std::string coverage() const override {
    std::vector<std::string> names;
    for (const auto& zone : zones_) names.push_back(zone.name + " (" + zone.id + ")");
    return "RAPL zone(s) " + join(names, ", ") +
           ": the whole CPU package for package zones, every process on it and its idle cores; not DRAM "
           "(on servers), the GPU or the rest of the machine (not exclusive)";
  }

  // The counters update about every millisecond (Intel SDM: ~976 us).
  double refresh_interval_s() const override { return 1e-3; }
  bool exclusive() const override { return false; }
  bool is_model() const override { return false; }

  EnergyReading read() override {
    EnergyReading out;
    out.time_s = clock_->now_s();
    // Read every zone before updating any, so a failed read changes nothing.
    std::vector<uint64_t> raw(zones_.size());
    for (size_t k = 0; k < zones_.size(); ++k) {
      int io_errno = 0;
      if (!read_counter(*fs_, zones_[k].energy_path, raw[k], out.error, &io_errno)) {
        if (io_errno == EACCES) out.error += " (root-only since Linux 5.10)";
        return out;
      }
    }
    double total_uj = 0;
    for (size_t k = 0; k < zones_.size(); ++k) {
      RaplZone& zone = zones_[k];
      if (zone.started) zone.accumulated_uj += static_cast<double>(counter_delta(zone.last_uj, raw[k], zone.max_range_uj));
      zone.started = true;
      zone.last_uj = raw[k];
      total_uj += zone.accumulated_uj;
    }
    out.ok = true;
    out.energy_j = total_uj * 1e-6;
    if (have_last_ && out.time_s > last_time_s_) out.power_w = (out.energy_j - last_energy_j_) / (out.time_s - last_time_s_);
    else if (have_last_) out.power_w = last_power_w_;
    have_last_ = true;
    last_time_s_ = out.time_s;
    last_energy_j_ = out.energy_j;
    last_power_w_ = out.power_w;
    return out;
  }

 private:
  std::shared_ptr<SysFs> fs_;
  const Clock* clock_;
  std::vector<RaplZone> zones_;
  bool have_last_ = false;
  double last_time_s_ = 0, last_energy_j_ = 0;
  double last_power_w_ = std::numeric_limits<double>::quiet_NaN();
};

bool is_top_level(const std::string& id) { return id.find(':') == id.rfind(':'); }

}  // namespace

OpenedMeter open_rapl_meter(std::shared_ptr<SysFs> fs, const Clock& clock, std::vector<std::string> zones) {
  DYDNN_CHECK_VALUE(fs != nullptr, "hw", "open_rapl_meter: fs is null (valid: a SysFs)");
  const std::string base = kPowercap;
  std::vector<std::string> ids;
  for (const auto& entry : fs->list(base))
    if (entry.compare(0, 11, "intel-rapl:") == 0) ids.push_back(entry);
  if (ids.empty()) return {nullptr, "no " + base + "/intel-rapl:* zones"};

  if (zones.empty()) {
    for (const auto& id : ids)
      if (is_top_level(id) && read_text(*fs, base + "/" + id + "/name").compare(0, 8, "package-") == 0)
        zones.push_back(id);
    if (zones.empty())
      for (const auto& id : ids)
        if (is_top_level(id)) zones.push_back(id);
    if (zones.empty()) return {nullptr, "no top-level " + base + "/intel-rapl:N zone"};
  }

  std::vector<RaplZone> opened;
  for (const auto& id : zones) {
    const std::string dir = base + "/" + id;
    if (!fs->is_directory(dir)) return {nullptr, "no " + dir + " (zones: " + join(ids, ", ") + ")"};
    RaplZone zone;
    zone.id = id;
    zone.name = read_text(*fs, dir + "/name");
    if (zone.name.empty()) zone.name = id;
    zone.energy_path = dir + "/energy_uj";
    std::string why;
    if (!read_counter(*fs, dir + "/max_energy_range_uj", zone.max_range_uj, why)) return {nullptr, why};
    opened.push_back(std::move(zone));
  }
  return probe(std::make_unique<RaplMeter>(std::move(fs), clock, std::move(opened)));
}

}  // namespace hw
}  // namespace dydnn
