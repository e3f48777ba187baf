#pragma once
/// \file
/// Internal: one persistent worker thread that runs a task beside the caller (the
/// parallel exit head). Persistent, because starting a thread per call costs more than
/// the small heads it would run.

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace dydnn {
namespace detail {

/// Runs one task at a time on its own thread. `submit` then `wait`; `wait` rethrows
/// what the task threw. Not for concurrent use by several callers.
class SideThread {
 public:
  SideThread() : thread_([this] { loop(); }) {}
  ~SideThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  SideThread(const SideThread&) = delete;
  SideThread& operator=(const SideThread&) = delete;

  /// Starts `task` on the worker (the previous task must have been waited for).
  void submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = std::move(task);
      done_ = false;
      error_ = nullptr;
    }
    wake_.notify_all();
  }
  /// Blocks until the submitted task has finished; rethrows its exception.
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [this] { return done_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stop_ || task_; });
      if (stop_) return;
      auto task = std::move(task_);
      task_ = nullptr;
      lock.unlock();
      std::exception_ptr error;
      try {
        task();
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      error_ = error;
      done_ = true;
      finished_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  std::function<void()> task_;
  bool done_ = true, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after the state above exists
};

}  // namespace detail
}  // namespace dydnn
