#include <dydnn/errors.h>
#include <dydnn/nn/config.h>

#include <cctype>

namespace dydnn {
namespace nn {

Config Config::of(const std::vector<int64_t>& groups) {
  uint64_t mask = 0;
  for (int64_t g : groups) {
    DYDNN_CHECK_INDEX(g >= 0 && g < kMaxGroups, "nn", "Config: group {} is out of range (valid: 0..{})", g,
                      kMaxGroups - 1);
    mask |= uint64_t{1} << g;
  }
  return Config(mask);
}

Config Config::prefix(int64_t count) {
  DYDNN_CHECK_INDEX(count >= 1 && count <= kMaxGroups, "nn",
                    "Config::prefix: count {} is out of range (valid: 1..{})", count, kMaxGroups);
  return Config(count == kMaxGroups ? ~uint64_t{0} : (uint64_t{1} << count) - 1);
}

Config Config::parse(std::string_view text, int64_t num_groups) {
  uint64_t mask = 0;
  bool letters = false;
  bool digits = false;
  int64_t number = -1;
  auto add = [&](int64_t g) {
    DYDNN_CHECK_VALUE(g >= 0 && g < num_groups, "nn",
                      "Config::parse: '{}' names group {}, but the model has {} groups (valid: 0..{})", text, g,
                      num_groups, num_groups - 1);
    mask |= uint64_t{1} << g;
  };
  for (char ch : text) {
    if (std::isdigit(static_cast<unsigned char>(ch))) {
      digits = true;
      number = (number < 0 ? 0 : number * 10) + (ch - '0');
      DYDNN_CHECK_VALUE(number < kMaxGroups, "nn", "Config::parse: '{}' names a group >= {}", text, kMaxGroups);
      continue;
    }
    if (number >= 0) add(number);
    number = -1;
    if (std::isalpha(static_cast<unsigned char>(ch))) {
      letters = true;
      add(std::toupper(static_cast<unsigned char>(ch)) - 'A');
    } else if (!(ch == '*' || ch == ',' || ch == ' ' || ch == '{' || ch == '}')) {
      detail::throw_value_error("nn", "Config::parse: unexpected character '{}' in '{}' (write \"AB\", \"C*D*\" or \"0,1\")",
                                ch, text);
    }
  }
  if (number >= 0) add(number);
  DYDNN_CHECK_VALUE(!(letters && digits), "nn", "Config::parse: '{}' mixes letters and numbers", text);
  DYDNN_CHECK_VALUE(mask != 0, "nn", "Config::parse: '{}' names no group (write \"AB\", \"C*D*\" or \"0,1\")", text);
  return Config(mask);
}

int64_t Config::count() const { return __builtin_popcountll(mask_); }

int64_t Config::highest() const { return mask_ == 0 ? -1 : 63 - __builtin_clzll(mask_); }

std::vector<int64_t> Config::groups() const {
  std::vector<int64_t> out;
  for (int64_t g = 0; g < kMaxGroups; ++g)
    if (contains(g)) out.push_back(g);
  return out;
}

std::string Config::to_string() const {
  std::string out = "{";
  for (int64_t g : groups()) out += (out.size() > 1 ? "," : "") + std::to_string(g);
  return out + "}";
}

std::string Config::name() const {
  std::string out;
  for (int64_t g : groups()) out += g < 26 ? std::string(1, static_cast<char>('A' + g)) : "[" + std::to_string(g) + "]";
  return out;
}

std::string to_string(const std::vector<Config>& configs) {
  std::string out;
  for (const auto& c : configs) out += (out.empty() ? "" : ", ") + c.to_string();
  return out;
}

}  // namespace nn
}  // namespace dydnn
