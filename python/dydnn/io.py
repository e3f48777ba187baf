"""The model file: one ``model.dydnn`` from Python training to C++ deployment.

``dydnn.save(net, "model.dydnn", method="incremental", dataset="fashion-mnist",
accuracy={"A": 0.90, "AB": 0.91})`` writes the spec, every weight and BN statistics set,
the valid configs, the operating points and the metadata, atomically. ``dydnn.load``
gives the net back (eval mode); ``dydnn.load_artifact`` also gives the metadata and the
operating points. The bytes are written and parsed by the C++ library
(``dydnn::io::save`` / ``load``), so a C++ deployment reads the very same file. The
layout is in ``docs/artifact.md``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from . import _C
from ._C import Normalization
from .nn import DynamicNet

__all__ = ["Artifact", "save", "load", "load_artifact", "to_bytes", "from_bytes", "FORMAT_VERSION"]

#: The format version this build writes (it reads every version up to this one).
FORMAT_VERSION: int = _C.ARTIFACT_FORMAT_VERSION

PathLike = Union[str, os.PathLike]


@dataclass
class Artifact:
    """Everything a model file holds.

    ``metadata`` has ``format_version``, ``dydnn_version``, ``torch_version``, ``method``,
    ``dataset``, ``created`` (ISO 8601, UTC), ``accuracy`` (config name -> top-1 in 0..1)
    and ``extra`` (str -> str). ``operating_points`` is a list of
    ``{"config": "AB", "knobs": {...}, "metrics": {...}}`` (empty until profiled).
    ``normalization`` is what raw inputs are normalised with before the net (the
    training set's per-channel mean and std; identity when empty).
    """

    net: DynamicNet
    normalization: Normalization = field(default_factory=Normalization)
    metadata: Dict[str, Any] = field(default_factory=dict)
    operating_points: List[Dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        """The summary ``dydnn info`` prints (spec, per-config cost and accuracy, points, metadata)."""
        return _C.describe_artifact(self.net._impl, self.normalization, dict(self.metadata), self.operating_points)


def _metadata(method, dataset, accuracy, extra, metadata) -> Dict[str, Any]:
    out: Dict[str, Any] = {"torch_version": torch.__version__}
    if metadata:
        out.update(metadata)
    for key, value in (("method", method), ("dataset", dataset), ("accuracy", accuracy), ("extra", extra)):
        if value is not None:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def _parts(obj, normalization, method, dataset, accuracy, extra, metadata, operating_points):
    if isinstance(obj, Artifact):
        merged = dict(obj.metadata)
        if metadata:
            merged.update(metadata)
        points = obj.operating_points if operating_points is None else operating_points
        norm = obj.normalization if normalization is None else normalization
        net = obj.net
        meta = _metadata(method, dataset, accuracy, extra, merged)
        # A re-saved artifact keeps the torch version that trained it.
        meta["torch_version"] = merged.get("torch_version") or torch.__version__
    elif isinstance(obj, DynamicNet):
        net, points, norm = obj, operating_points, normalization
        meta = _metadata(method, dataset, accuracy, extra, metadata)
    else:
        raise TypeError(f"[dydnn.io] save expects a dydnn.nn.DynamicNet or a dydnn.io.Artifact, got {type(obj).__name__}")
    return net._impl, _as_normalization(norm), meta, list(points or [])


def _as_normalization(value) -> Optional[Normalization]:
    if value is None or isinstance(value, Normalization):
        return value
    try:
        mean, std = value
        return Normalization([float(m) for m in mean], [float(s) for s in std])
    except (TypeError, ValueError):
        raise ValueError(f"[dydnn.io] normalization must be a dydnn.train.Normalization or (mean, std) lists, "
                         f"got {value!r}") from None


def save(obj: Union[DynamicNet, Artifact], path: PathLike, *, normalization=None, method: Optional[str] = None,
         dataset: Optional[str] = None, accuracy: Optional[Mapping[Any, float]] = None,
         extra: Optional[Mapping[str, str]] = None, metadata: Optional[Mapping[str, Any]] = None,
         operating_points: Optional[List[Dict[str, Any]]] = None) -> None:
    """Writes a net (or an :class:`Artifact`) to ``path`` atomically.

    ``accuracy`` maps configs (``"AB"``, ``[0, 1]`` or a :class:`dydnn.Config`) to top-1 in
    0..1; ``extra`` holds free-form strings; ``normalization`` (a ``Normalization`` or
    ``(mean, std)`` per input channel) is what a deployment applies to raw inputs, e.g.
    ``trainer.normalization``. A failure (no space, no permission) raises
    ``ValueError`` and leaves any previous file at ``path`` unchanged.
    """
    net, norm, meta, points = _parts(obj, normalization, method, dataset, accuracy, extra, metadata, operating_points)
    _C.save_artifact(net, os.fspath(path), norm, meta, points)


def to_bytes(obj: Union[DynamicNet, Artifact], **kwargs) -> bytes:
    """The bytes :func:`save` would write (same keyword arguments)."""
    net, norm, meta, points = _parts(obj, kwargs.pop("normalization", None), kwargs.pop("method", None), kwargs.pop("dataset", None),
                               kwargs.pop("accuracy", None), kwargs.pop("extra", None), kwargs.pop("metadata", None),
                               kwargs.pop("operating_points", None))
    if kwargs:
        raise TypeError(f"[dydnn.io] unexpected keyword argument(s): {', '.join(kwargs)}")
    return _C.artifact_to_bytes(net, norm, meta, points)


def _artifact(parts) -> Artifact:
    impl, normalization, metadata, points = parts
    return Artifact(DynamicNet._from_impl(impl), normalization, metadata, points)


def load_artifact(path: PathLike) -> Artifact:
    """Reads a model file: the net (eval mode, full config), its metadata and operating points.

    A missing, truncated, corrupted or newer-format file raises ``ValueError`` naming the
    path and what is wrong.
    """
    return _artifact(_C.load_artifact(os.fspath(path)))


def from_bytes(data: bytes, source: str = "<bytes>") -> Artifact:
    """:func:`load_artifact` from memory; ``source`` names the bytes in errors."""
    return _artifact(_C.artifact_from_bytes(bytes(data), source))


def load(path: PathLike) -> DynamicNet:
    """Reads a model file and returns its net (eval mode, full config)."""
    return load_artifact(path).net
