#pragma once
/// \file
/// Exceptions thrown by dydnn when a caller breaks a precondition.
///
/// Every message starts with the component in brackets (`[dydnn.nn]`), names the
/// bad value and says what would have been valid. The types derive from the
/// standard exceptions that pybind11 maps to Python's `ValueError` and
/// `IndexError`, so Python users see the idiomatic exception.

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace dydnn {

/// A value is outside what the callee accepts (Python: `ValueError`).
class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// An index (a group, a config, a layer) is out of range (Python: `IndexError`).
class IndexError : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

namespace detail {

/// Throws `ValueError` with "[dydnn.<area>] <formatted message>".
template <typename... Args>
[[noreturn]] void throw_value_error(const char* area, fmt::format_string<Args...> format, Args&&... args) {
  throw ValueError(fmt::format("[dydnn.{}] ", area) + fmt::format(format, std::forward<Args>(args)...));
}

/// Throws `IndexError` with "[dydnn.<area>] <formatted message>".
template <typename... Args>
[[noreturn]] void throw_index_error(const char* area, fmt::format_string<Args...> format, Args&&... args) {
  throw IndexError(fmt::format("[dydnn.{}] ", area) + fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace detail
}  // namespace dydnn

/// Checks a caller's precondition; on failure throws `dydnn::ValueError` naming the area.
#define DYDNN_CHECK_VALUE(cond, area, ...)                  \
  do {                                                      \
    if (!(cond)) ::dydnn::detail::throw_value_error(area, __VA_ARGS__); \
  } while (false)

/// Checks an index precondition; on failure throws `dydnn::IndexError` naming the area.
#define DYDNN_CHECK_INDEX(cond, area, ...)                  \
  do {                                                      \
    if (!(cond)) ::dydnn::detail::throw_index_error(area, __VA_ARGS__); \
  } while (false)
