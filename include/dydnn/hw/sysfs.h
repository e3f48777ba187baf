#pragma once
/// \file
/// The file I/O the `hw` layer does on sysfs, behind one interface, so that every backend
/// and meter runs against the real `/sys`, a fake tree in a temporary directory, or a
/// wrapper that injects faults (EACCES, EINVAL, EBUSY, ENOENT) path by path. Tests run as
/// root here, so `chmod` would prove nothing: faults are injected at this layer instead.
///
/// Plain C++17, no LibTorch.

#include <cerrno>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dydnn {
namespace hw {

/// The outcome of one sysfs read or write: the text read (trailing newline removed) or
/// the `errno` of the failure.
struct IoResult {
  int error = 0;     ///< 0 on success, else an errno value (ENOENT, EACCES, EINVAL, EBUSY, ...)
  std::string text;  ///< what was read (reads only)

  bool ok() const { return error == 0; }
  /// `strerror(error)`, or "ok".
  std::string message() const;
};

/// Sysfs-style file access. Paths are absolute-looking (`/sys/class/devfreq`) and are
/// resolved under the implementation's root.
class SysFs {
 public:
  virtual ~SysFs() = default;
  /// Reads a whole (small) attribute file.
  virtual IoResult read(const std::string& path) const = 0;
  /// Writes `text` to an attribute file (as `echo text > path` does: one write, no newline
  /// needed). Does not create missing files: sysfs attributes exist or not.
  virtual IoResult write(const std::string& path, const std::string& text) = 0;
  /// The names in a directory, sorted; empty when it does not exist or is not readable.
  virtual std::vector<std::string> list(const std::string& dir) const = 0;
  virtual bool exists(const std::string& path) const = 0;
  virtual bool is_directory(const std::string& path) const = 0;
  /// Where the paths resolve, for messages ("/" for the real system).
  virtual std::string root() const = 0;
};

/// The real file system, with every path resolved under `root` ("/" for the machine
/// itself, a temporary directory holding a fake tree in tests).
class RealSysFs : public SysFs {
 public:
  explicit RealSysFs(std::string root = "/");
  IoResult read(const std::string& path) const override;
  IoResult write(const std::string& path, const std::string& text) override;
  std::vector<std::string> list(const std::string& dir) const override;
  bool exists(const std::string& path) const override;
  bool is_directory(const std::string& path) const override;
  std::string root() const override { return root_; }
  /// `root` joined with `path`.
  std::string resolve(const std::string& path) const;

 private:
  std::string root_;
};

/// Wraps another `SysFs` and fails chosen operations with a chosen errno, to test how
/// backends and meters handle missing permissions, bad values and busy devices.
///
/// Example:
/// \code
///   auto fs = std::make_shared<FaultySysFs>(std::make_shared<RealSysFs>(tmp));
///   fs->fail_write(".../policy4/scaling_setspeed", EACCES);
/// \endcode
class FaultySysFs : public SysFs {
 public:
  explicit FaultySysFs(std::shared_ptr<SysFs> inner) : inner_(std::move(inner)) {}
  /// Every later read of `path` fails with `error` (0 removes the fault).
  void fail_read(const std::string& path, int error);
  /// Every later write to `path` fails with `error` (0 removes the fault).
  void fail_write(const std::string& path, int error);
  /// The writes that reached the inner file system, in order (path, text).
  const std::vector<std::pair<std::string, std::string>>& writes() const { return writes_; }

  IoResult read(const std::string& path) const override;
  IoResult write(const std::string& path, const std::string& text) override;
  std::vector<std::string> list(const std::string& dir) const override { return inner_->list(dir); }
  bool exists(const std::string& path) const override { return inner_->exists(path); }
  bool is_directory(const std::string& path) const override { return inner_->is_directory(path); }
  std::string root() const override { return inner_->root(); }

 private:
  std::shared_ptr<SysFs> inner_;
  std::map<std::string, int> read_faults_, write_faults_;
  std::vector<std::pair<std::string, std::string>> writes_;
};

/// Builds fake sysfs trees in tests and tools: creates parent directories and writes
/// the file (a newline is appended, as the kernel prints attributes).
void write_fake_file(const std::string& root, const std::string& path, const std::string& text);

}  // namespace hw
}  // namespace dydnn
