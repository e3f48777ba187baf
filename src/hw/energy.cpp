// What every energy meter source shares: interval arithmetic and sysfs number reading.
#include "energy_internal.h"

#include <dydnn/errors.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

namespace dydnn {
namespace hw {

EnergyInterval energy_between(const EnergyReading& start, const EnergyReading& end) {
  DYDNN_CHECK_VALUE(end.time_s >= start.time_s, "hw",
                    "energy_between: end reading at {} s precedes start reading at {} s (valid: end.time_s >= "
                    "start.time_s; were the arguments swapped?)",
                    end.time_s, start.time_s);
  EnergyInterval out;
  out.duration_s = end.time_s - start.time_s;
  if (!start.ok || !end.ok) {
    std::vector<std::string> why;
    if (!start.ok) why.push_back("start reading failed: " + start.error);
    if (!end.ok) why.push_back("end reading failed: " + end.error);
    out.error = energy_detail::join(why, "; ");
    return out;
  }
  out.ok = true;
  out.energy_j = end.energy_j - start.energy_j;
  if (out.duration_s > 0) out.average_power_w = out.energy_j / out.duration_s;
  return out;
}

std::string DetectedMeter::report() const {
  std::string out;
  for (const auto& line : tried) out += line + "\n";
  return out;
}

namespace energy_detail {

std::string io_error(const std::string& path, const IoResult& result) { return path + ": " + result.message(); }

namespace {

std::string trimmed(const std::string& text) {
  size_t begin = 0, end = text.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  return text.substr(begin, end - begin);
}

}  // namespace

bool read_number(const SysFs& fs, const std::string& path, double& value, std::string& error) {
  const IoResult r = fs.read(path);
  if (!r.ok()) {
    error = io_error(path, r);
    return false;
  }
  const std::string text = trimmed(r.text);
  char* end = nullptr;
  errno = 0;
  const double v = text.empty() ? 0.0 : std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || end != text.c_str() + text.size()) {
    error = path + ": not a number: '" + r.text + "'";
    return false;
  }
  value = v;
  return true;
}

bool read_counter(const SysFs& fs, const std::string& path, uint64_t& value, std::string& error, int* io_errno) {
  const IoResult r = fs.read(path);
  if (io_errno) *io_errno = r.error;
  if (!r.ok()) {
    error = io_error(path, r);
    return false;
  }
  const std::string text = trimmed(r.text);
  char* end = nullptr;
  errno = 0;
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) != 0;
  });
  const unsigned long long v = digits ? std::strtoull(text.c_str(), &end, 10) : 0;
  if (!digits || errno != 0) {
    error = path + ": not a counter: '" + r.text + "'";
    return false;
  }
  value = static_cast<uint64_t>(v);
  return true;
}

std::string read_text(const SysFs& fs, const std::string& path) {
  const IoResult r = fs.read(path);
  return r.ok() ? trimmed(r.text) : std::string();
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (size_t k = 0; k < items.size(); ++k) out += (k ? separator : std::string()) + items[k];
  return out;
}

long trailing_number(const std::string& name) {
  size_t k = name.size();
  while (k > 0 && std::isdigit(static_cast<unsigned char>(name[k - 1]))) --k;
  if (k == name.size() || name.size() - k > 9) return -1;
  return std::strtol(name.c_str() + k, nullptr, 10);
}

std::vector<std::string> sorted_numerically(std::vector<std::string> names) {
  std::stable_sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    return trailing_number(a) < trailing_number(b);
  });
  return names;
}

OpenedMeter probe(std::unique_ptr<EnergyMeter> meter) {
  const EnergyReading first = meter->read();
  if (!first.ok) return {nullptr, first.error};
  return {std::move(meter), {}};
}

}  // namespace energy_detail
}  // namespace hw
}  // namespace dydnn
