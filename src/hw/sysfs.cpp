#include <dydnn/hw/sysfs.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

namespace dydnn {
namespace hw {

std::string IoResult::message() const { return error == 0 ? std::string("ok") : std::string(std::strerror(error)); }

RealSysFs::RealSysFs(std::string root) : root_(root.empty() ? std::string("/") : std::move(root)) {}

std::string RealSysFs::resolve(const std::string& path) const {
  if (root_ == "/") return path;
  std::string r = root_;
  while (r.size() > 1 && r.back() == '/') r.pop_back();
  return path.empty() || path[0] != '/' ? r + "/" + path : r + path;
}

IoResult RealSysFs::read(const std::string& path) const {
  // Plain read(2): sysfs attributes are small and report errors through errno.
  const int fd = ::open(resolve(path).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {errno, {}};
  std::string text;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      return {error, {}};
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return {0, text};
}

IoResult RealSysFs::write(const std::string& path, const std::string& text) {
  // No O_CREAT: a missing attribute is an error, as on sysfs. O_TRUNC keeps fake files
  // (regular files) showing the last value written, as an attribute would.
  const int fd = ::open(resolve(path).c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return {errno, {}};
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      return {error, {}};
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return {errno, {}};
  return {};
}

std::vector<std::string> RealSysFs::list(const std::string& dir) const {
  std::vector<std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(resolve(dir), ec), end; !ec && it != end; it.increment(ec))
    out.push_back(it->path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool RealSysFs::exists(const std::string& path) const {
  struct stat st {};
  return ::stat(resolve(path).c_str(), &st) == 0;
}

bool RealSysFs::is_directory(const std::string& path) const {
  struct stat st {};
  return ::stat(resolve(path).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void FaultySysFs::fail_read(const std::string& path, int error) {
  if (error == 0) read_faults_.erase(path);
  else read_faults_[path] = error;
}

void FaultySysFs::fail_write(const std::string& path, int error) {
  if (error == 0) write_faults_.erase(path);
  else write_faults_[path] = error;
}

IoResult FaultySysFs::read(const std::string& path) const {
  const auto it = read_faults_.find(path);
  if (it != read_faults_.end()) return {it->second, {}};
  return inner_->read(path);
}

IoResult FaultySysFs::write(const std::string& path, const std::string& text) {
  const auto it = write_faults_.find(path);
  if (it != write_faults_.end()) return {it->second, {}};
  auto r = inner_->write(path, text);
  if (r.ok()) writes_.emplace_back(path, text);
  return r;
}

void write_fake_file(const std::string& root, const std::string& path, const std::string& text) {
  const std::string full = RealSysFs(root).resolve(path);
  std::filesystem::create_directories(std::filesystem::path(full).parent_path());
  std::ofstream(full, std::ios::binary | std::ios::trunc) << text << "\n";
}

}  // namespace hw
}  // namespace dydnn
