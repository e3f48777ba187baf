"""Early exits: per-exit statistics on a data set and threshold calibration (docs/depth.md).

Example::

    stats = dydnn.exits.statistics(net, (val_images, val_labels), normalization=norm, config="ABCD")
    outcome = dydnn.exits.calibrate(stats, target="accuracy", value=0.9)
    logits, exits = net.forward_adaptive(images, outcome.thresholds, config="ABCD")
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from . import _C
from .nn import DynamicNet

__all__ = ["statistics", "calibrate", "evaluate", "scores", "CRITERIA", "TARGETS"]

#: Confidence scores an exit policy compares with its thresholds (lower = more confident).
CRITERIA = ("entropy", "max_prob")
#: What ``calibrate`` aims at.
TARGETS = ("accuracy", "exit_rate")

ExitStatistics = _C.ExitStatistics
ExitOutcome = _C.ExitOutcome


def scores(logits: torch.Tensor, criterion: str = "entropy") -> torch.Tensor:
    """Per-sample score ``[N]`` of ``logits [N, classes]``: softmax entropy (nats) or 1 - max probability."""
    return _C.exit_scores(logits, criterion)


def statistics(net: DynamicNet, data: Tuple[torch.Tensor, torch.Tensor], *, config=None,
               normalization: Optional[_C.Normalization] = None, criterion: str = "entropy",
               batch_size: int = 500) -> ExitStatistics:
    """Every exit's score and correctness on each example of ``data`` (images, labels) at ``config``.

    Images are normalised with ``normalization`` (none by default); one pass over the data,
    eval mode, no autograd.
    """
    images, labels = data
    norm = normalization if normalization is not None else _C.Normalization()
    return _C.exit_statistics(net._impl, images, labels, norm, net.config if config is None else config, criterion,
                              batch_size)


def calibrate(stats: ExitStatistics, target: str = "accuracy", value: float = 0.9) -> ExitOutcome:
    """Thresholds for each early exit: its answers at least ``value`` accurate (``target="accuracy"``),
    or a fraction ``value`` of the examples reaching it leave there (``target="exit_rate"``).
    Calibrate on validation data; the outcome also reports accuracy, exit rates and mean MACs."""
    return _C.calibrate_exits(stats, target, float(value))


def evaluate(stats: ExitStatistics, thresholds: Sequence[float]) -> ExitOutcome:
    """What ``thresholds`` (one per early exit) do on the examples of ``stats``, without running the net."""
    return _C.evaluate_thresholds(stats, [float(t) for t in thresholds])
