#include <dydnn/data/idx.h>
#include <dydnn/errors.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <vector>

namespace dydnn {
namespace data {
namespace {

namespace fs = std::filesystem;

constexpr uint8_t kUbyte = 0x08;                   // the IDX type code of unsigned bytes
constexpr uint64_t kMaxDataBytes = uint64_t{1} << 34;  // 16 GiB: far above any IDX data set
constexpr size_t kChunk = size_t{1} << 24;          // gzip output is read 16 MiB at a time

/// Checks that `path` names a readable regular file; throws `ValueError` saying what is wrong.
void check_file(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  DYDNN_CHECK_VALUE(st.type() != fs::file_type::not_found, "data", "{}: file not found (no such file)", path);
  DYDNN_CHECK_VALUE(!ec, "data", "{}: cannot read the file ({})", path, ec.message());
  DYDNN_CHECK_VALUE(st.type() != fs::file_type::directory, "data", "{}: cannot read the file (it is a directory)",
                    path);
}

/// Throws `ValueError` for a file that `fopen`/`gzopen` could not open, with the reason from errno.
[[noreturn]] void throw_open_error(const std::string& path, int err) {
  if (err == ENOENT) detail::throw_value_error("data", "{}: file not found (no such file)", path);
  detail::throw_value_error("data", "{}: cannot read the file ({})", path,
                            err != 0 ? std::strerror(err) : "cannot open");
}

/// A plain or gzip input, read with `read()`, which only returns fewer bytes than asked for
/// at the end of the data and throws `ValueError` on an I/O error or corrupt gzip data.
class Input {
 public:
  Input(const std::string& path, bool gzip) : path_(path) {
    errno = 0;
    if (gzip) {
      gz_ = gzopen(path.c_str(), "rb");
      if (gz_ == nullptr) throw_open_error(path, errno);
      gzbuffer(gz_, 1U << 17);
    } else {
      file_ = std::fopen(path.c_str(), "rb");
      if (file_ == nullptr) throw_open_error(path, errno);
    }
  }
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;
  ~Input() {
    if (gz_ != nullptr) gzclose_r(gz_);
    if (file_ != nullptr) std::fclose(file_);
  }

  /// Reads up to `n` bytes into `dst`; returns the number read (< n only at the end).
  size_t read(uint8_t* dst, size_t n) {
    size_t done = 0;
    while (done < n) {
      const size_t want = std::min(n - done, size_t{1} << 30);
      size_t got = 0;
      if (gz_ != nullptr) {
        const int r = gzread(gz_, dst + done, static_cast<unsigned>(want));
        if (r < 0) throw_gzip_error();
        got = static_cast<size_t>(r);
      } else {
        got = std::fread(dst + done, 1, want, file_);
        DYDNN_CHECK_VALUE(!std::ferror(file_), "data", "{}: cannot read the file ({})", path_, std::strerror(errno));
      }
      done += got;
      if (got < want) break;
    }
    // zlib reports a gzip stream that stops early as Z_BUF_ERROR after returning what it could.
    if (done < n && gz_ != nullptr) {
      int errnum = Z_OK;
      gzerror(gz_, &errnum);
      if (errnum != Z_OK) throw_gzip_error();
    }
    return done;
  }

 private:
  [[noreturn]] void throw_gzip_error() {
    int errnum = Z_OK;
    const char* message = gzerror(gz_, &errnum);
    if (errnum == Z_ERRNO)
      detail::throw_value_error("data", "{}: cannot read the file ({})", path_, std::strerror(errno));
    std::string reason = message != nullptr && *message != '\0' ? message : "zlib error";
    if (reason.rfind(path_ + ": ", 0) == 0) reason.erase(0, path_.size() + 2);  // zlib prefixes the path
    detail::throw_value_error("data", "{}: corrupt or truncated gzip data ({})", path_, reason);
  }

  std::string path_;
  gzFile gz_ = nullptr;
  std::FILE* file_ = nullptr;
};

/// Whether the file starts with the gzip magic bytes 1f 8b.
bool is_gzip(const std::string& path) {
  Input in(path, false);
  std::array<uint8_t, 2> magic{};
  return in.read(magic.data(), magic.size()) == magic.size() && magic[0] == 0x1f && magic[1] == 0x8b;
}

std::string shape_string(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

[[noreturn]] void throw_size_error(const std::string& path, const std::vector<int64_t>& shape, uint64_t expected,
                                   const std::string& holds, bool truncated) {
  detail::throw_value_error("data", "{}: {}: the header says shape {} ({} bytes of data), but the file holds {}", path,
                            truncated ? "truncated" : "wrong size (extra bytes)", shape_string(shape), expected, holds);
}

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  check_file(path);
  const bool gzip = is_gzip(path);
  Input in(path, gzip);

  // Header: 00 00 08 NN, then NN big-endian uint32 dimensions.
  std::array<uint8_t, 4 + 4 * 4> header{};
  size_t got = in.read(header.data(), 4);
  DYDNN_CHECK_VALUE(got == 4, "data", "{}: truncated IDX header ({} bytes, need at least 4)", path, got);
  const int ndim = header[3];
  DYDNN_CHECK_VALUE(header[0] == 0 && header[1] == 0 && header[2] == kUbyte && ndim >= 1 && ndim <= 4, "data",
                    "{}: bad IDX magic number 0x{:02x}{:02x}{:02x}{:02x} "
                    "(valid: 0x000008NN, unsigned bytes with NN = 01..04 dimensions)",
                    path, header[0], header[1], header[2], header[3]);
  const size_t header_bytes = 4 + 4 * static_cast<size_t>(ndim);
  got += in.read(header.data() + 4, header_bytes - 4);
  DYDNN_CHECK_VALUE(got == header_bytes, "data", "{}: truncated IDX header ({} bytes, need {} for {} dims)", path, got,
                    header_bytes, ndim);

  std::vector<int64_t> shape(ndim);
  bool empty = false;
  for (int k = 0; k < ndim; ++k) {
    const uint8_t* p = header.data() + 4 + 4 * k;
    const uint32_t d = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
    shape[k] = static_cast<int64_t>(d);
    empty = empty || d == 0;
  }
  uint64_t expected = 1;
  if (empty) {
    expected = 0;
  } else {
    for (int64_t d : shape) {
      const auto ud = static_cast<uint64_t>(d);
      DYDNN_CHECK_VALUE(expected <= kMaxDataBytes / ud, "data",
                        "{}: the header says shape {}, more than the 2^34 bytes of data read_idx accepts", path,
                        shape_string(shape));
      expected *= ud;
    }
  }

  auto out = torch::empty({0}, torch::kUInt8);
  if (!gzip) {
    // A plain file's size is known: check it before allocating anything.
    std::error_code ec;
    const uint64_t file_bytes = fs::file_size(path, ec);
    DYDNN_CHECK_VALUE(!ec, "data", "{}: cannot read the file ({})", path, ec.message());
    const uint64_t size = file_bytes >= header_bytes ? file_bytes - header_bytes : 0;
    if (size != expected) throw_size_error(path, shape, expected, std::to_string(size), size < expected);
    out = torch::empty(shape, torch::kUInt8);
    const size_t n = in.read(out.data_ptr<uint8_t>(), expected);
    if (n != expected) throw_size_error(path, shape, expected, std::to_string(n), true);  // shrank while reading
    uint8_t extra = 0;
    if (in.read(&extra, 1) != 0) throw_size_error(path, shape, expected, "more", false);  // grew while reading
    return out;
  }

  // Gzip: decompress incrementally, growing the buffer only as far as the data actually go and
  // stopping one byte past the size the header declares.
  std::vector<uint8_t> buffer;
  const uint64_t limit = expected + 1;
  uint64_t have = 0;
  while (have < limit) {
    const uint64_t want = std::min<uint64_t>(limit - have, kChunk);
    buffer.resize(have + want);
    const size_t n = in.read(buffer.data() + have, want);
    have += n;
    if (n < want) break;
  }
  if (have < expected) throw_size_error(path, shape, expected, std::to_string(have), true);
  if (have > expected) throw_size_error(path, shape, expected, fmt::format("more than {} bytes", expected), false);
  out = torch::empty(shape, torch::kUInt8);
  if (expected > 0) std::memcpy(out.data_ptr<uint8_t>(), buffer.data(), expected);
  return out;
}

ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path, int64_t limit) {
  DYDNN_CHECK_VALUE(limit >= -1, "data", "load_idx_dataset: limit {} (valid: -1 for all, or >= 0)", limit);
  auto images = read_idx(images_path);
  auto labels = read_idx(labels_path);
  DYDNN_CHECK_VALUE(images.dim() == 3 || images.dim() == 4, "data",
                    "{}: images have shape {} (valid: [N, H, W] or [N, C, H, W])", images_path,
                    shape_string(images.sizes().vec()));
  DYDNN_CHECK_VALUE(labels.dim() == 1, "data", "{}: labels have shape {} (valid: [N])", labels_path,
                    shape_string(labels.sizes().vec()));
  DYDNN_CHECK_VALUE(images.size(0) == labels.size(0), "data",
                    "{} images in {} but {} labels in {} (valid: the same count)", images.size(0), images_path,
                    labels.size(0), labels_path);
  if (images.dim() == 3) images = images.unsqueeze(1);
  if (limit >= 0 && limit < images.size(0)) {
    // Copies, so the rest of the file's data is freed.
    images = images.narrow(0, 0, limit).clone();
    labels = labels.narrow(0, 0, limit).clone();
  }
  return ImageDataset{images, labels.to(torch::kInt64)};
}

ImageDataset fashion_mnist(const std::string& split, int64_t limit, const std::string& root) {
  DYDNN_CHECK_VALUE(split == "train" || split == "test", "data",
                    "fashion_mnist: unknown split '{}' (valid: 'train', 'test')", split);
  DYDNN_CHECK_VALUE(limit >= -1, "data", "fashion_mnist: limit {} (valid: -1 for all, or >= 0)", limit);
  const std::string prefix = split == "train" ? "train" : "t10k";
  const std::string images = (fs::path(root) / (prefix + "-images-idx3-ubyte.gz")).string();
  const std::string labels = (fs::path(root) / (prefix + "-labels-idx1-ubyte.gz")).string();
  std::vector<std::string> missing;
  for (const auto& f : {images, labels}) {
    std::error_code ec;
    if (!fs::is_regular_file(f, ec)) missing.push_back(f);
  }
  DYDNN_CHECK_VALUE(missing.empty(), "data",
                    "Fashion-MNIST not found ({}); install it with: sudo apt-get install dataset-fashion-mnist",
                    fmt::join(missing, ", "));
  return load_idx_dataset(images, labels, limit);
}

}  // namespace data
}  // namespace dydnn
