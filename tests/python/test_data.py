"""dydnn.data: IDX reading (plain and gzip), its errors, and Fashion-MNIST from the Debian package."""
import gzip
import struct

import numpy as np
import pytest
import torch

from dydnn import data


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_read_idx(tmp_path, images, compressed):
    raw = _idx(images)
    path = tmp_path / ("x.idx3.gz" if compressed else "x.idx3")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    got = data.read_idx(path)
    assert got.dtype == np.uint8 and got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, images)
    got[0, 0, 0] ^= 1  # a writable copy, not a view of a buffer
    labels = np.arange(7, dtype=np.uint8)
    (tmp_path / "y").write_bytes(_idx(labels))
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / "y")), labels)


def test_gzip_detected_by_magic_not_name(tmp_path, images):
    path = tmp_path / "plain_name.idx"
    path.write_bytes(gzip.compress(_idx(images)))
    np.testing.assert_array_equal(data.read_idx(path), images)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_truncated_data(tmp_path, images, compressed):
    raw = _idx(images)[:-7]
    path = tmp_path / "cut.idx"
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    with pytest.raises(ValueError, match=r"cut\.idx: truncated: the header says shape \[3, 4, 5\] \(60 bytes of data\), "
                                         r"but the file holds 53"):
        data.read_idx(path)


def test_truncated_header(tmp_path, images):
    path = tmp_path / "head.idx"
    path.write_bytes(_idx(images)[:9])
    with pytest.raises(ValueError, match=r"head\.idx: truncated IDX header \(9 bytes, need 16 for 3 dims\)"):
        data.read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match=r"truncated IDX header \(2 bytes, need at least 4\)"):
        data.read_idx(path)


def test_extra_bytes(tmp_path, images):
    path = tmp_path / "long.idx"
    path.write_bytes(_idx(images) + b"\x00")
    with pytest.raises(ValueError, match=r"long\.idx: wrong size: .* \(60 bytes of data\), but the file holds 61"):
        data.read_idx(path)


@pytest.mark.parametrize("magic", [b"\x00\x00\x0d\x03", b"\x01\x00\x08\x03", b"\x00\x00\x08\x00", b"PK\x03\x04"])
def test_bad_magic(tmp_path, magic):
    path = tmp_path / "bad.idx"
    path.write_bytes(magic + b"\x00" * 16)
    with pytest.raises(ValueError, match=rf"bad\.idx: bad IDX magic number 0x{magic.hex()} \(valid: 0x000008NN"):
        data.read_idx(path)


def test_corrupt_gzip(tmp_path, images):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(_idx(images))[:-12])
    with pytest.raises(ValueError, match=r"broken\.gz: corrupt or truncated gzip data"):
        data.read_idx(path)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sudo apt-get install dataset-fashion-mnist"):
        data.fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"unknown split 'validation' \(valid: 'train', 'test'\)"):
        data.fashion_mnist("validation")
    with pytest.raises(ValueError, match=r"limit -1 \(valid: None or >= 0\)"):
        data.fashion_mnist(limit=-1)


def test_fashion_mnist_from_a_generated_root(tmp_path):
    imgs = np.full((5, 28, 28), 255, dtype=np.uint8)
    imgs[1] = 0
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(imgs)))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(5, dtype=np.uint8))))
    x, y = data.fashion_mnist("test", root=tmp_path, limit=3)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [0, 1, 2] and y.dtype == torch.int64
    assert x[0].min() == 1.0 and x[1].max() == 0.0


def test_fashion_mnist_classes():
    assert len(data.FASHION_MNIST_CLASSES) == 10
    assert data.FASHION_MNIST_CLASSES[0] == "T-shirt/top" and data.FASHION_MNIST_CLASSES[9] == "Ankle boot"


@pytest.mark.skipif(not (data.FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    x, y = data.fashion_mnist("test", limit=10)
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10,) and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    assert 0 <= int(y.min()) and int(y.max()) <= 9
    assert y[:3].tolist() == [9, 2, 1]  # the first test images: ankle boot, pullover, trouser
