#pragma once
/// \file
/// IDX files (the MNIST family's format) and the Fashion-MNIST data set.
///
/// The C++ twin of `python/dydnn/data.py`: the same checks and the same error
/// messages. Fashion-MNIST comes from the Debian package `dataset-fashion-mnist`
/// (gzip IDX files under `/usr/share/datasets/fashion-mnist`); nothing is downloaded.
///
/// Example:
/// \code
///   auto test = dydnn::data::fashion_mnist("test", 100);  // images [100,1,28,28] uint8, labels [100] int64
///   auto x = test.images.to(torch::kFloat32).div_(255.0);
/// \endcode

#include <torch/types.h>

#include <cstdint>
#include <string>

namespace dydnn {
namespace data {

/// Reads an IDX file of unsigned bytes, plain or gzip (detected by the magic bytes `1f 8b`).
///
/// The header is two zero bytes, the type code `0x08` (unsigned byte), the number of
/// dimensions (1 to 4), then each dimension as a big-endian uint32; the data follow.
/// Returns a `uint8` tensor of the header's shape.
///
/// Throws `ValueError` ("[dydnn.data] <path>: ...") when the file is missing or cannot be
/// read, the gzip data are corrupt or truncated, the header is truncated, the magic number
/// is not `0x000008NN` (NN = 01..04), the header declares more than 2^34 bytes, or the data
/// are truncated or followed by extra bytes. Gzip files are decompressed incrementally and
/// reading stops one byte past the size the header declares, so a lying header or a gzip
/// bomb never makes it allocate more than the data actually hold.
/// Cost: one pass over the file; memory for the data (a gzip file briefly needs up to twice that).
torch::Tensor read_idx(const std::string& path);

/// Images and labels of a classification data set, example `i` in row `i` of both.
struct ImageDataset {
  /// `uint8` images `[N, C, H, W]` (pixel values 0..255 as stored in the file).
  torch::Tensor images;
  /// `int64` class labels `[N]`.
  torch::Tensor labels;
  /// The number of examples `N` (0 for a default-constructed data set).
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

/// Reads an image IDX file and a label IDX file (each plain or gzip) into an `ImageDataset`.
///
/// The images must be 3-D `[N, H, W]` (returned as `[N, 1, H, W]`) or 4-D `[N, C, H, W]`,
/// the labels 1-D `[N]` with the same `N`. `limit` >= 0 keeps the first `limit` examples
/// (all of them when `limit` >= N); -1 keeps all. Throws `ValueError` for limit < -1, for
/// anything `read_idx` rejects, for shapes of the wrong rank, or for counts that differ
/// (naming both counts and both files).
ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path, int64_t limit = -1);

/// Where the Debian package `dataset-fashion-mnist` installs the IDX files.
constexpr const char* kFashionMnistRoot = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST from `root`: `split` "train" (60,000 examples) or "test" (10,000), images
/// `uint8 [N, 1, 28, 28]`, labels `int64 [N]` in 0..9; `limit` as in `load_idx_dataset`.
///
/// Reads `<root>/train-{images-idx3,labels-idx1}-ubyte.gz` or `<root>/t10k-...` (the file
/// names of the Debian package). Throws `ValueError` for an unknown split (listing the valid
/// ones), for limit < -1, when the files are missing (naming them and saying
/// `install it with: sudo apt-get install dataset-fashion-mnist`) or corrupt.
ImageDataset fashion_mnist(const std::string& split, int64_t limit = -1, const std::string& root = kFashionMnistRoot);

}  // namespace data
}  // namespace dydnn
