#pragma once
// Little-endian byte encoding for the artifact: a writer that appends to a string and a
// reader that never reads, or lets its caller reserve, past the bytes it was given.

#include <dydnn/errors.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace dydnn {
namespace io {
namespace detail {

/// CRC-32 (zlib's polynomial) of `size` bytes.
uint32_t crc32(const void* data, size_t size);

class ByteWriter {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) { little_endian(v, 4); }
  void u64(uint64_t v) { little_endian(v, 8); }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    u64(bits);
  }
  void str(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void bytes(const void* data, size_t size) { out_.append(static_cast<const char*>(data), size); }
  /// Zero bytes up to the next multiple of `alignment`.
  void pad_to(size_t alignment) { out_.append((alignment - out_.size() % alignment) % alignment, '\0'); }
  size_t size() const { return out_.size(); }
  std::string& buffer() { return out_; }

 private:
  void little_endian(uint64_t v, int n) {
    for (int k = 0; k < n; ++k) out_.push_back(static_cast<char>((v >> (8 * k)) & 0xFF));
  }
  std::string out_;
};

/// Reads a bounded byte range; every overrun throws `ValueError` naming `what` (the
/// source and section) and the offset.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string what) : data_(data), size_(size), what_(std::move(what)) {}

  uint8_t u8() { return static_cast<uint8_t>(little_endian(1)); }
  uint32_t u32() { return static_cast<uint32_t>(little_endian(4)); }
  uint64_t u64() { return little_endian(8); }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  double f64() {
    const uint64_t bits = u64();
    double v;
    std::memcpy(&v, &bits, 8);
    return v;
  }
  /// A length-prefixed string of at most `max_size` bytes.
  std::string str(size_t max_size, const char* field) {
    const uint32_t n = u32();
    if (n > max_size) fail("{} is {} bytes long (valid: at most {})", field, n, max_size);
    need(n, field);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  /// A count of items that each take at least `min_item_bytes`; a count the remaining
  /// bytes cannot hold is refused before anyone reserves memory for it.
  uint64_t count(size_t min_item_bytes, const char* field) {
    const uint64_t n = u32();
    if (n > remaining() / min_item_bytes)
      fail("{} says {} entries but only {} bytes follow", field, n, remaining());
    return n;
  }
  size_t position() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) const {
    dydnn::detail::throw_value_error("io", "{}: {}", what_, fmt::format(format, std::forward<Args>(args)...));
  }

 private:
  void need(size_t n, const char* field) const {
    if (n > remaining()) fail("truncated: {} needs {} bytes at offset {}, only {} remain", field, n, pos_, remaining());
  }
  uint64_t little_endian(int n) {
    need(static_cast<size_t>(n), "a number");
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(data_[pos_ + k]) << (8 * k);
    pos_ += static_cast<size_t>(n);
    return v;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string what_;
};

}  // namespace detail
}  // namespace io
}  // namespace dydnn
