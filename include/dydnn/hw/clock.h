#pragma once
/// \file
/// Time for the `hw` layer: the steady clock on a real machine, a virtual clock in the
/// simulator and in tests (deterministic: it moves only when told to).

#include <chrono>
#include <cstdint>

namespace dydnn {
namespace hw {

/// A monotonic time source in nanoseconds.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t now_ns() const = 0;
  double now_s() const { return static_cast<double>(now_ns()) * 1e-9; }
};

/// `std::chrono::steady_clock`.
class SteadyClock : public Clock {
 public:
  int64_t now_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

/// A clock that stands still until `advance` moves it.
class VirtualClock : public Clock {
 public:
  explicit VirtualClock(int64_t start_ns = 0) : now_(start_ns) {}
  int64_t now_ns() const override { return now_; }
  /// Moves time forward by `ns` (>= 0; a negative step is ignored: time is monotonic).
  void advance(int64_t ns) {
    if (ns > 0) now_ += ns;
  }

 private:
  int64_t now_;
};

}  // namespace hw
}  // namespace dydnn
