"""Data sets for dydnn: IDX files and the embedded Fashion-MNIST (design §5).

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (gzip IDX files
under ``/usr/share/datasets/fashion-mnist``); nothing is downloaded.

Example::

    images, labels = dydnn.data.fashion_mnist("test", limit=100)   # [100,1,28,28], [100]
    print(dydnn.data.FASHION_MNIST_CLASSES[int(labels[0])])
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["read_idx", "idx_dataset", "fashion_mnist", "FASHION_MNIST_CLASSES", "FASHION_MNIST_ROOT"]

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")

#: Class names in label order (0 = T-shirt/top ... 9 = Ankle boot), from the data set's README.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only type the MNIST family uses


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Reads an IDX file of unsigned bytes (plain or gzip, detected by its magic) into a numpy array.

    The header is two zero bytes, the type code ``0x08`` (unsigned byte), the number of
    dimensions (1 to 4 here), then each dimension as a big-endian uint32; the data follow.
    Returns a ``uint8`` array of that shape. Raises ``ValueError`` naming the file when the
    magic number is wrong, the header or data are truncated, or there are extra bytes;
    ``FileNotFoundError`` when the file does not exist. Cost: reads the whole file into memory.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"[dydnn.data] {path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4:
        raise ValueError(f"[dydnn.data] {path}: truncated IDX header ({len(raw)} bytes, need at least 4)")
    zero0, zero1, dtype, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or dtype != _UBYTE or not 1 <= ndim <= 4:
        raise ValueError(
            f"[dydnn.data] {path}: bad IDX magic number 0x{raw[:4].hex()} "
            f"(valid: 0x000008NN, unsigned bytes with NN = 01..04 dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"[dydnn.data] {path}: truncated IDX header ({len(raw)} bytes, need {header} for {ndim} dims)")
    shape = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    size = len(raw) - header
    if size != expected:
        what = "truncated" if size < expected else "wrong size"
        raise ValueError(
            f"[dydnn.data] {path}: {what}: the header says shape {list(shape)} ({expected} bytes of data), "
            f"but the file holds {size}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def fashion_mnist(split: str = "test", root: Optional[Union[str, os.PathLike]] = None,
                  limit: Optional[int] = None, raw: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as tensors: images ``[N, 1, 28, 28]`` float32 in [0, 1] (uint8 0..255 with
    ``raw``, what the trainers normalise themselves), labels ``[N]`` int64.

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000); ``root`` defaults to
    :data:`FASHION_MNIST_ROOT`; ``limit`` keeps the first ``limit`` images. Raises
    ``FileNotFoundError`` (saying how to install the package) when the files are missing,
    ``ValueError`` for a bad split or limit or a corrupt file.
    """
    prefixes = {"train": "train", "test": "t10k"}
    if split not in prefixes:
        raise ValueError(f"[dydnn.data] fashion_mnist: unknown split {split!r} (valid: 'train', 'test')")
    if limit is not None and (isinstance(limit, bool) or int(limit) < 0):
        raise ValueError(f"[dydnn.data] fashion_mnist: limit {limit!r} (valid: None or >= 0)")
    root = Path(root) if root is not None else FASHION_MNIST_ROOT
    files = [root / f"{prefixes[split]}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"[dydnn.data] Fashion-MNIST not found ({', '.join(missing)}); "
            f"install it with: sudo apt-get install dataset-fashion-mnist"
        )
    return idx_dataset(files[0], files[1], limit=limit, raw=raw)


def idx_dataset(images_path: Union[str, os.PathLike], labels_path: Union[str, os.PathLike],
                limit: Optional[int] = None, raw: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images and labels from a pair of IDX files (plain or gzip), e.g. MNIST or your own data.

    Images ``[N, H, W]`` become ``[N, 1, H, W]``; ``[N, C, H, W]`` stay. Returns uint8 images
    (float32 in [0, 1] when ``raw`` is false) and int64 labels. Raises ``ValueError`` naming
    the files when the counts or ranks do not match.
    """
    if limit is not None and (isinstance(limit, bool) or int(limit) < 0):
        raise ValueError(f"[dydnn.data] limit {limit!r} (valid: None or >= 0)")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim not in (3, 4) or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"[dydnn.data] {images_path} / {labels_path}: images {list(images.shape)} and labels "
            f"{list(labels.shape)} do not match (valid: [N, H, W] or [N, C, H, W], and [N])"
        )
    if limit is not None:
        images, labels = images[: int(limit)], labels[: int(limit)]
    x = torch.from_numpy(images)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if not raw:
        x = x.to(torch.float32).div_(255.0)
    return x, torch.from_numpy(labels).to(torch.int64)
