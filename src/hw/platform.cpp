#include <dydnn/errors.h>
#include <dydnn/hw/platform.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#ifndef DYDNN_PLATFORM_DIR
#define DYDNN_PLATFORM_DIR "data/platforms"
#endif

namespace dydnn {
namespace hw {

namespace {

/// Parses one file; every error names origin:line and the offending token.
class Parser {
 public:
  explicit Parser(std::string origin) : origin_(std::move(origin)) {}

  Platform run(const std::string& text) {
    std::istringstream in(text);
    std::string raw;
    while (std::getline(in, raw)) {
      ++line_;
      if (!raw.empty() && raw.back() == '\r') raw.pop_back();
      const auto first = raw.find_first_not_of(" \t");
      if (first == std::string::npos || raw[first] == '#') continue;
      std::vector<std::string> tokens;
      std::istringstream words(raw);
      for (std::string w; words >> w;) tokens.push_back(w);
      statement(tokens, raw.substr(first));
    }
    finish();
    return std::move(platform_);
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const std::string& token, fmt::format_string<Args...> format, Args&&... args) const {
    detail::throw_value_error("hw", "{}:{}: {} (at '{}')", origin_, line_,
                              fmt::format(format, std::forward<Args>(args)...), token);
  }

  static std::string rest_of(const std::string& line, const std::string& keyword) {
    const auto start = line.find_first_not_of(" \t", keyword.size());
    return start == std::string::npos ? std::string() : line.substr(start);
  }

  /// `text` as a number in [lo, hi]; errors point at `token` (the whole key=value).
  double number(const std::string& token, const std::string& text, const std::string& what, double lo,
                double hi) const {
    const char* begin = text.c_str();
    char* end = nullptr;
    const double v = std::strtod(begin, &end);
    if (end == begin || *end != '\0' || !std::isfinite(v)) fail(token, "{} must be a number", what);
    if (v < lo || v > hi) fail(token, "{} = {} is out of range (valid: {} to {})", what, v, lo, hi);
    return v;
  }

  int cpu_number(const std::string& token, const std::string& text) const {
    if (text.empty() || text.size() > 4 || text.find_first_not_of("0123456789") != std::string::npos)
      fail(token, "cpus must be a list of CPU numbers and ranges such as 0-3 or 0,1,4-5");
    return std::stoi(text);
  }

  std::vector<int> cpu_list(const std::string& token, const std::string& text) const {
    std::vector<int> cpus;
    std::istringstream parts(text);
    for (std::string part; std::getline(parts, part, ',');) {
      const auto dash = part.find('-');
      const int first = cpu_number(token, part.substr(0, dash));
      const int last = dash == std::string::npos ? first : cpu_number(token, part.substr(dash + 1));
      if (last < first) fail(token, "CPU range {}-{} is backwards", first, last);
      for (int c = first; c <= last; ++c) cpus.push_back(c);
    }
    std::sort(cpus.begin(), cpus.end());
    if (cpus.empty() || text.back() == ',' || std::adjacent_find(cpus.begin(), cpus.end()) != cpus.end())
      fail(token, "cpus must name each CPU once");
    return cpus;
  }

  void statement(const std::vector<std::string>& t, const std::string& line) {
    const std::string& keyword = t[0];
    if (keyword == "platform") {
      if (t.size() != 2) fail(keyword, "expected 'platform <name>'");
      if (!platform_.name.empty()) fail(t[1], "a second 'platform' line (the first named '{}')", platform_.name);
      if (t[1].find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
          std::string::npos)
        fail(t[1], "a platform name uses letters, digits, '_', '.' and '-' only");
      platform_.name = t[1];
    } else if (keyword == "description" || keyword == "source") {
      const std::string text = rest_of(line, keyword);
      if (text.empty()) fail(keyword, "'{}' needs a text after it", keyword);
      if (keyword == "description")
        platform_.description = text;
      else
        platform_.sources.push_back(text);
    } else if (keyword == "cluster" || keyword == "gpu") {
      domain(t);
    } else if (keyword == "opp") {
      opp(t);
    } else {
      fail(keyword, "unknown keyword (valid: platform, description, source, cluster, gpu, opp)");
    }
  }

  void domain(const std::vector<std::string>& t) {
    close_domain();
    if (t.size() < 2 || t[1].find('=') != std::string::npos) fail(t[0], "expected '{} <name> key=value ...'", t[0]);
    PlatformDomain d;
    d.kind = t[0] == "cluster" ? DomainKind::CpuCluster : DomainKind::Gpu;
    d.name = t[1];
    d.label = d.name;
    for (const auto& other : platform_.domains)
      if (other.name == d.name) fail(t[1], "a second domain named '{}'", d.name);
    std::set<std::string> seen;
    for (size_t k = 2; k < t.size(); ++k) {
      const auto eq = t[k].find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == t[k].size()) fail(t[k], "expected key=value");
      const std::string key = t[k].substr(0, eq), value = t[k].substr(eq + 1);
      if (!seen.insert(key).second) fail(t[k], "'{}' is given twice", key);
      if (key == "label") {
        d.label = value;
      } else if (key == "cpus" && d.kind == DomainKind::CpuCluster) {
        d.cpus = cpu_list(t[k], value);
      } else if (key == "coeff_uw_per_mhz_v2") {
        d.coeff_uw_per_mhz_v2 = number(t[k], value, key, 0, 1e6);
      } else if (key == "capacity") {
        d.capacity = number(t[k], value, key, 1, 4096);
      } else if (key == "static_w") {
        d.static_w = number(t[k], value, key, 0, 1000);
      } else if (key == "latency_us") {
        d.transition_latency_s = number(t[k], value, key, 0, 1e6) * 1e-6;
      } else if (key == "power_model") {
        if (value != "dts" && value != "assumed" && value != "fitted")
          fail(t[k], "power_model must be dts, assumed or fitted");
        d.power_model = value;
      } else {
        fail(t[k],
             "unknown key '{}' for '{}' (valid: label, {}coeff_uw_per_mhz_v2, capacity, static_w, latency_us, "
             "power_model)",
             key, t[0], d.kind == DomainKind::CpuCluster ? "cpus, " : "");
      }
    }
    std::vector<std::string> required = {"coeff_uw_per_mhz_v2", "static_w", "latency_us", "power_model"};
    if (d.kind == DomainKind::CpuCluster) required.insert(required.begin(), "cpus");
    for (const auto& key : required)
      if (!seen.count(key)) fail(t[1], "domain '{}' needs {}=...", d.name, key);
    for (const auto& other : platform_.domains)
      for (int c : d.cpus)
        if (std::find(other.cpus.begin(), other.cpus.end(), c) != other.cpus.end())
          fail(t[1], "CPU {} is already in domain '{}'", c, other.name);
    platform_.domains.push_back(std::move(d));
    domain_line_ = line_;
  }

  void opp(const std::vector<std::string>& t) {
    if (platform_.domains.empty()) fail(t[0], "an 'opp' line must follow a 'cluster' or 'gpu' line");
    if (t.size() != 3) fail(t[0], "expected 'opp <MHz> <volts>'");
    const double mhz = number(t[1], t[1], "frequency (MHz)", 0.001, 1e5);
    const double volts = number(t[2], t[2], "voltage (V)", 0.1, 3.0);
    auto& opps = platform_.domains.back().opps;
    const auto hz = static_cast<uint64_t>(std::llround(mhz * 1e6));
    if (!opps.empty() && hz <= opps.back().hz)
      fail(t[1], "OPPs must be in ascending frequency (previous: {} MHz)", static_cast<double>(opps.back().hz) * 1e-6);
    opps.push_back({hz, volts});
  }

  void close_domain() {
    if (!platform_.domains.empty() && platform_.domains.back().opps.empty())
      detail::throw_value_error("hw", "{}:{}: domain '{}' has no 'opp' lines (at '{}')", origin_, domain_line_,
                                platform_.domains.back().name, platform_.domains.back().name);
  }

  void finish() {
    close_domain();
    if (platform_.name.empty())
      detail::throw_value_error("hw", "{}:{}: no 'platform <name>' line (at end of file)", origin_, line_);
    if (platform_.domains.empty())
      detail::throw_value_error("hw", "{}:{}: no 'cluster' or 'gpu' domain (at end of file)", origin_, line_);
  }

  std::string origin_;
  int line_ = 0;
  int domain_line_ = 0;
  Platform platform_;
};

}  // namespace

std::vector<uint64_t> PlatformDomain::frequencies_hz() const {
  std::vector<uint64_t> out;
  out.reserve(opps.size());
  for (const auto& o : opps) out.push_back(o.hz);
  return out;
}

double PlatformDomain::volts_at(uint64_t hz) const {
  for (const auto& o : opps)
    if (o.hz == hz) return o.volts;
  detail::throw_value_error("hw", "{}: {} Hz is not an operating point (valid Hz: {})", name, hz,
                            fmt::join(frequencies_hz(), ", "));
}

double PlatformDomain::dynamic_power_w(uint64_t hz, double busy_cores) const {
  const double v = volts_at(hz);
  return coeff_uw_per_mhz_v2 * v * v * (static_cast<double>(hz) * 1e-6) * busy_cores * 1e-6;
}

int PlatformDomain::units() const { return cpus.empty() ? 1 : static_cast<int>(cpus.size()); }

Platform Platform::parse(const std::string& text, const std::string& origin) { return Parser(origin).run(text); }

Platform Platform::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DYDNN_CHECK_VALUE(in.good(), "hw", "cannot read platform file '{}' (missing or not readable)", path);
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

std::string Platform::builtin_dir() {
  const char* env = std::getenv("DYDNN_PLATFORM_DIR");
  if (env != nullptr && *env != '\0') return env;
  // The source tree when built in it; the installed copy once installed elsewhere.
  std::error_code ec;
  if (std::filesystem::is_directory(DYDNN_PLATFORM_DIR, ec)) return DYDNN_PLATFORM_DIR;
  return DYDNN_PLATFORM_INSTALL_DIR;
}

std::vector<std::string> Platform::builtin_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(builtin_dir(), ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".platform") names.push_back(it->path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

Platform Platform::builtin(const std::string& name) {
  const auto names = builtin_names();
  DYDNN_CHECK_VALUE(std::find(names.begin(), names.end(), name) != names.end(), "hw",
                    "unknown platform '{}' (available in {}: {})", name, builtin_dir(), fmt::join(names, ", "));
  return load((std::filesystem::path(builtin_dir()) / (name + ".platform")).string());
}

int Platform::find(const std::string& domain_name) const {
  for (size_t k = 0; k < domains.size(); ++k)
    if (domains[k].name == domain_name) return static_cast<int>(k);
  for (size_t k = 0; k < domains.size(); ++k)
    if (domains[k].label == domain_name) return static_cast<int>(k);
  return -1;
}

const PlatformDomain& Platform::domain(const std::string& domain_name) const {
  const int k = find(domain_name);
  if (k < 0) {
    std::vector<std::string> valid;
    for (const auto& d : domains) valid.push_back(d.name + " (" + d.label + ")");
    detail::throw_value_error("hw", "platform '{}' has no domain '{}' (valid: {})", name, domain_name,
                              fmt::join(valid, ", "));
  }
  return domains[static_cast<size_t>(k)];
}

}  // namespace hw
}  // namespace dydnn
