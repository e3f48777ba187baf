#pragma once
/// \file
/// Whole-token integer parsing for command lines and environment variables.

#include <dydnn/errors.h>

#include <cstdint>
#include <limits>
#include <string>

namespace dydnn {
namespace detail {

/// `text` as an integer in [`min_value`, `max_value`], or `ValueError` naming `what`
/// (an option or variable name), the text and the valid range:
/// `"--limit '0' (valid: an integer >= 1)"`. Trailing characters are an error.
inline int64_t parse_integer(const std::string& what, const std::string& text, int64_t min_value,
                             int64_t max_value = std::numeric_limits<int64_t>::max()) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v < min_value || v > max_value) {
    const std::string range = max_value == std::numeric_limits<int64_t>::max()
                                  ? ">= " + std::to_string(min_value)
                                  : "in [" + std::to_string(min_value) + ", " + std::to_string(max_value) + "]";
    throw ValueError(what + " '" + text + "' (valid: an integer " + range + ")");
  }
  return v;
}

}  // namespace detail
}  // namespace dydnn
