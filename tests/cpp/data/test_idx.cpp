// IDX reading (plain and gzip), IDX data sets, Fashion-MNIST: round trips, shapes, limits, errors.
#include <dydnn/data/idx.h>
#include <dydnn/errors.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

using namespace dydnn::data;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<uint8_t>;

/// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path_ = fs::temp_directory_path() /
            ("dydnn_test_idx_" + std::to_string(::getpid()) + "_" + std::to_string(stamp) + "_" +
             std::to_string(counter++));
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

/// An IDX header `00 00 type ndim` plus the big-endian dimensions.
Bytes idx_header(const std::vector<uint32_t>& shape, uint8_t type = 0x08) {
  Bytes out{0, 0, type, static_cast<uint8_t>(shape.size())};
  for (uint32_t d : shape)
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(d >> shift));
  return out;
}

/// A whole IDX file of shape `shape` whose byte `i` is `(7 * i + 3) % 256`.
Bytes idx_file(const std::vector<uint32_t>& shape) {
  Bytes out = idx_header(shape);
  size_t n = 1;
  for (uint32_t d : shape) n *= d;
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>((7 * i + 3) % 256));
  return out;
}

void write_plain(const std::string& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

void write_gzip(const std::string& path, const Bytes& bytes) {
  gzFile gz = gzopen(path.c_str(), "wb");
  REQUIRE(gz != nullptr);
  if (!bytes.empty()) REQUIRE(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(gz) == Z_OK);
}

Bytes read_plain(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

/// Writes `bytes` as `name` (plain) or `name.gz` (gzip) and returns the path.
std::string write_idx(const TempDir& dir, const std::string& name, const Bytes& bytes, bool gzip) {
  const std::string path = dir.file(gzip ? name + ".gz" : name);
  if (gzip)
    write_gzip(path, bytes);
  else
    write_plain(path, bytes);
  return path;
}

/// The expected tensor for `idx_file(shape)`.
torch::Tensor expected_values(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return torch::arange(n, torch::kInt64).mul(7).add(3).remainder(256).to(torch::kUInt8).reshape(shape);
}

}  // namespace

TEST_CASE("read_idx round-trips plain and gzip files of 1 to 4 dimensions", "[data][idx]") {
  TempDir dir;
  for (bool gzip : {false, true}) {
    for (const auto& shape : std::vector<std::vector<uint32_t>>{{5}, {3, 4}, {2, 3, 4}, {2, 1, 3, 5}, {300, 17}}) {
      const std::vector<int64_t> shape64(shape.begin(), shape.end());
      INFO((gzip ? "gzip " : "plain ") << shape.size() << "-D");
      const auto path = write_idx(dir, "x" + std::to_string(shape.size()) + "_" + std::to_string(shape[0]),
                                  idx_file(shape), gzip);
      const auto t = read_idx(path);
      CHECK(t.scalar_type() == torch::kUInt8);
      CHECK(t.sizes().vec() == shape64);
      CHECK(torch::equal(t, expected_values(shape64)));
    }
    // A dimension of 0 is a valid, empty file.
    const auto empty = read_idx(write_idx(dir, "empty", idx_header({0, 28, 28}), gzip));
    CHECK(empty.sizes().vec() == std::vector<int64_t>{0, 28, 28});
  }
}

TEST_CASE("load_idx_dataset gives [N,C,H,W] uint8 images and int64 labels, with a limit", "[data][idx]") {
  TempDir dir;
  const auto images3 = write_idx(dir, "images3", idx_file({4, 3, 2}), true);
  const auto images4 = write_idx(dir, "images4", idx_file({4, 2, 3, 2}), false);
  Bytes label_bytes = idx_header({4});
  for (uint8_t v : {3, 0, 9, 1}) label_bytes.push_back(v);
  const auto labels = write_idx(dir, "labels", label_bytes, true);

  auto d3 = load_idx_dataset(images3, labels);
  CHECK(d3.size() == 4);
  CHECK(d3.images.sizes().vec() == std::vector<int64_t>{4, 1, 3, 2});
  CHECK(d3.images.scalar_type() == torch::kUInt8);
  CHECK(torch::equal(d3.images.squeeze(1), expected_values({4, 3, 2})));
  CHECK(d3.labels.scalar_type() == torch::kInt64);
  CHECK(torch::equal(d3.labels, torch::tensor({3, 0, 9, 1}, torch::kInt64)));

  auto d4 = load_idx_dataset(images4, labels);
  CHECK(d4.images.sizes().vec() == std::vector<int64_t>{4, 2, 3, 2});
  CHECK(torch::equal(d4.images, expected_values({4, 2, 3, 2})));

  auto two = load_idx_dataset(images3, labels, 2);
  CHECK(two.size() == 2);
  CHECK(two.images.sizes().vec() == std::vector<int64_t>{2, 1, 3, 2});
  CHECK(torch::equal(two.labels, torch::tensor({3, 0}, torch::kInt64)));
  CHECK(torch::equal(two.images, d3.images.narrow(0, 0, 2)));
  CHECK(load_idx_dataset(images3, labels, 0).size() == 0);
  CHECK(load_idx_dataset(images3, labels, 0).images.sizes().vec() == std::vector<int64_t>{0, 1, 3, 2});
  CHECK(load_idx_dataset(images3, labels, 100).size() == 4);
  CHECK(load_idx_dataset(images3, labels, -1).size() == 4);
  CHECK(ImageDataset{}.size() == 0);

  REQUIRE_THROWS_AS(load_idx_dataset(images3, labels, -2), dydnn::ValueError);
  REQUIRE_THROWS_WITH(load_idx_dataset(images3, labels, -2), Contains("[dydnn.data]") && Contains("limit -2"));
}

TEST_CASE("load_idx_dataset rejects mismatched counts and wrong ranks, naming the files", "[data][idx][errors]") {
  TempDir dir;
  const auto images = write_idx(dir, "images", idx_file({3, 2, 2}), false);
  const auto labels2 = write_idx(dir, "labels2", idx_file({2}), false);
  const auto labels_2d = write_idx(dir, "labels_2d", idx_file({3, 1}), false);
  const auto flat = write_idx(dir, "flat", idx_file({3, 4}), false);
  const auto labels3 = write_idx(dir, "labels3", idx_file({3}), false);

  REQUIRE_THROWS_WITH(load_idx_dataset(images, labels2), Contains("3 images") && Contains("2 labels") &&
                                                              Contains(images) && Contains(labels2));
  REQUIRE_THROWS_WITH(load_idx_dataset(images, labels_2d), Contains(labels_2d) && Contains("[3, 1]") &&
                                                                Contains("valid: [N]"));
  REQUIRE_THROWS_WITH(load_idx_dataset(flat, labels3), Contains(flat) && Contains("[3, 4]") &&
                                                           Contains("[N, H, W] or [N, C, H, W]"));
  // read_idx's errors come through unchanged.
  REQUIRE_THROWS_WITH(load_idx_dataset(dir.file("nope"), labels3), Contains("file not found") && Contains("nope"));
}

TEST_CASE("read_idx reports missing, unreadable and corrupt files, naming them", "[data][idx][errors]") {
  TempDir dir;
  const auto missing = dir.file("missing-idx3-ubyte");
  REQUIRE_THROWS_AS(read_idx(missing), dydnn::ValueError);
  REQUIRE_THROWS_WITH(read_idx(missing), Contains("[dydnn.data]") && Contains(missing) && Contains("file not found"));
  REQUIRE_THROWS_WITH(read_idx(dir.file("")), Contains("directory"));

  // Gzip magic followed by garbage, and a gzip file cut in half.
  const auto garbage = write_idx(dir, "garbage.gz", Bytes{0x1f, 0x8b, 0x08, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9}, false);
  REQUIRE_THROWS_WITH(read_idx(garbage), Contains(garbage) && Contains("corrupt or truncated gzip"));
  const auto magic_only = write_idx(dir, "magic_only.gz", Bytes{0x1f, 0x8b}, false);
  REQUIRE_THROWS_WITH(read_idx(magic_only), Contains(magic_only) && Contains("gzip"));
  const auto whole = write_idx(dir, "whole", idx_file({64, 64}), true);
  Bytes cut = read_plain(whole);
  REQUIRE(cut.size() > 40);
  cut.resize(cut.size() / 2);
  const auto half = write_idx(dir, "half.gz", cut, false);
  REQUIRE_THROWS_WITH(read_idx(half), Contains(half) && Contains("corrupt or truncated gzip"));
  // A flipped byte in the CRC trailer.
  Bytes bad_crc = read_plain(whole);
  bad_crc[bad_crc.size() - 6] ^= 0xff;
  const auto crc = write_idx(dir, "crc.gz", bad_crc, false);
  REQUIRE_THROWS_WITH(read_idx(crc), Contains(crc) && Contains("corrupt or truncated gzip"));
}

TEST_CASE("read_idx reports bad headers with the magic in hex", "[data][idx][errors]") {
  TempDir dir;
  for (bool gzip : {false, true}) {
    INFO((gzip ? "gzip" : "plain"));
    const auto empty = write_idx(dir, "empty", Bytes{}, gzip);
    REQUIRE_THROWS_WITH(read_idx(empty), Contains(empty) && Contains("truncated IDX header") &&
                                             Contains("0 bytes, need at least 4"));
    const auto short_magic = write_idx(dir, "short", Bytes{0, 0, 8}, gzip);
    REQUIRE_THROWS_WITH(read_idx(short_magic), Contains("truncated IDX header (3 bytes, need at least 4)"));

    const auto floats = write_idx(dir, "floats", idx_header({2, 2}, 0x0d), gzip);
    REQUIRE_THROWS_WITH(read_idx(floats), Contains(floats) && Contains("bad IDX magic number 0x00000d02") &&
                                              Contains("0x000008NN") && Contains("01..04"));
    const auto five = write_idx(dir, "five", idx_header({1, 1, 1, 1, 1}), gzip);
    REQUIRE_THROWS_WITH(read_idx(five), Contains("bad IDX magic number 0x00000805"));
    const auto zero_dims = write_idx(dir, "zero_dims", Bytes{0, 0, 8, 0}, gzip);
    REQUIRE_THROWS_WITH(read_idx(zero_dims), Contains("bad IDX magic number 0x00000800"));
    const auto text = write_idx(dir, "text", Bytes{'a', 'b', 'c', 'd', 'e'}, gzip);
    REQUIRE_THROWS_WITH(read_idx(text), Contains("bad IDX magic number 0x61626364"));

    Bytes dims_cut = idx_header({10, 28, 28});
    dims_cut.resize(10);
    const auto cut = write_idx(dir, "dims_cut", dims_cut, gzip);
    REQUIRE_THROWS_WITH(read_idx(cut), Contains(cut) && Contains("truncated IDX header (10 bytes, need 16 for 3 dims)"));
  }
}

TEST_CASE("read_idx reports truncated data, extra bytes and oversized headers", "[data][idx][errors]") {
  TempDir dir;
  for (bool gzip : {false, true}) {
    INFO((gzip ? "gzip" : "plain"));
    Bytes short_data = idx_file({2, 3, 4});
    short_data.pop_back();
    const auto truncated = write_idx(dir, "truncated", short_data, gzip);
    REQUIRE_THROWS_WITH(read_idx(truncated), Contains(truncated) && Contains("truncated") && Contains("[2, 3, 4]") &&
                                                 Contains("24 bytes of data") && Contains("holds 23"));
    const auto header_only = write_idx(dir, "header_only", idx_header({2, 3, 4}), gzip);
    REQUIRE_THROWS_WITH(read_idx(header_only), Contains("truncated") && Contains("holds 0"));

    Bytes long_data = idx_file({2, 3, 4});
    long_data.push_back(0);
    long_data.push_back(0);
    const auto extra = write_idx(dir, "extra", long_data, gzip);
    REQUIRE_THROWS_WITH(read_idx(extra), Contains(extra) && Contains("extra bytes") && Contains("[2, 3, 4]") &&
                                             Contains("24 bytes of data"));
    if (!gzip) REQUIRE_THROWS_WITH(read_idx(extra), Contains("holds 26"));

    // More than 2^34 bytes declared (also where the product of the dimensions overflows 64 bits).
    const auto huge = write_idx(dir, "huge", idx_header({1u << 16, 1u << 16, 1u << 16}), gzip);
    REQUIRE_THROWS_WITH(read_idx(huge), Contains(huge) && Contains("2^34") && Contains("[65536, 65536, 65536]"));
    const auto overflow = write_idx(dir, "overflow", idx_header({0xffffffffu, 0xffffffffu, 0xffffffffu, 2}), gzip);
    REQUIRE_THROWS_WITH(read_idx(overflow), Contains("2^34"));

    // A header that promises 8 GiB over a few bytes: an error, without allocating 8 GiB.
    Bytes lie = idx_header({1u << 15, 1u << 15, 8});
    for (int i = 0; i < 1000; ++i) lie.push_back(static_cast<uint8_t>(i));
    const auto liar = write_idx(dir, "liar", lie, gzip);
    REQUIRE_THROWS_WITH(read_idx(liar), Contains("truncated") && Contains("8589934592 bytes of data") &&
                                            Contains("holds 1000"));
  }
}

TEST_CASE("fashion_mnist validates its arguments and explains how to install the data", "[data][fashion]") {
  REQUIRE_THROWS_AS(fashion_mnist("validation"), dydnn::ValueError);
  REQUIRE_THROWS_WITH(fashion_mnist("validation"),
                      Contains("unknown split 'validation'") && Contains("'train'") && Contains("'test'"));
  REQUIRE_THROWS_WITH(fashion_mnist("test", -5), Contains("limit -5"));

  TempDir dir;
  const auto root = dir.file("no-fashion-here");
  REQUIRE_THROWS_AS(fashion_mnist("test", -1, root), dydnn::ValueError);
  REQUIRE_THROWS_WITH(fashion_mnist("test", -1, root),
                      Contains("Fashion-MNIST not found") && Contains(root + "/t10k-images-idx3-ubyte.gz") &&
                          Contains(root + "/t10k-labels-idx1-ubyte.gz") &&
                          Contains("install it with: sudo apt-get install dataset-fashion-mnist"));
  REQUIRE_THROWS_WITH(fashion_mnist("train", -1, root), Contains(root + "/train-images-idx3-ubyte.gz"));

  // A root of our own with the Debian package's file names.
  fs::create_directories(root);
  write_idx(dir, "no-fashion-here/t10k-images-idx3-ubyte", idx_file({3, 28, 28}), true);
  write_idx(dir, "no-fashion-here/t10k-labels-idx1-ubyte", idx_file({3}), true);
  auto mine = fashion_mnist("test", -1, root);
  CHECK(mine.images.sizes().vec() == std::vector<int64_t>{3, 1, 28, 28});
  CHECK(mine.size() == 3);
}

TEST_CASE("fashion_mnist reads the installed test split", "[data][fashion]") {
  if (!fs::exists(std::string(kFashionMnistRoot) + "/t10k-images-idx3-ubyte.gz")) {
    WARN("skipped: " << kFashionMnistRoot << " is not installed (sudo apt-get install dataset-fashion-mnist)");
    return;
  }
  auto test = fashion_mnist("test");
  CHECK(test.size() == 10000);
  CHECK(test.images.sizes().vec() == std::vector<int64_t>{10000, 1, 28, 28});
  CHECK(test.images.scalar_type() == torch::kUInt8);
  CHECK(test.labels.scalar_type() == torch::kInt64);
  CHECK(test.labels.min().item<int64_t>() == 0);
  CHECK(test.labels.max().item<int64_t>() == 9);
  CHECK(torch::bincount(test.labels).eq(1000).all().item<bool>());  // 1,000 of each class
  CHECK(test.images.max().item<int64_t>() > 200);                    // real pixels, not zeros

  auto first = fashion_mnist("test", 100);
  CHECK(first.images.sizes().vec() == std::vector<int64_t>{100, 1, 28, 28});
  CHECK(torch::equal(first.images, test.images.narrow(0, 0, 100)));
  CHECK(torch::equal(first.labels, test.labels.narrow(0, 0, 100)));
}
