"""Anytime inference: answer now, improve if time allows (docs/depth.md).

A runner holds a sequence of (config, exit) steps, each reached from the one before by
``DynamicNet.refine`` (only the new groups and the layers past the old exit run). ``run``
answers at the first step, then refines while the next step's expected time still fits
the budget.

Example::

    runner = dydnn.anytime.AnytimeRunner(net)            # A@0, A@1, AB@1, ... by default
    runner.calibrate(example)                             # each step's cost, measured
    answer = runner.run(image, budget_us=300)
    answer.logits, answer.config, answer.exit, answer.complete
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from . import _C
from .nn import ConfigLike, DynamicNet

__all__ = ["AnytimeRunner", "AnytimeAnswer"]

AnytimeAnswer = _C.AnytimeAnswer


class AnytimeRunner:
    """Refinement steps of ``net`` run against a time budget.

    ``steps``: ``[(config, exit), ...]`` (exit -1 = the final head); each must be reachable
    from the one before (``net.can_refine``, an exit no shallower) and add groups or depth.
    ``None``: the smallest config through every exit, then wider configs at the final exit.
    Raises ``ValueError`` naming the first step that breaks these rules.
    """

    def __init__(self, net: DynamicNet, steps: Optional[Sequence[Tuple[ConfigLike, int]]] = None):
        self._net = net
        self._impl = _C.AnytimeRunner(net._impl, [(c, int(e)) for c, e in (steps or [])])

    @property
    def steps(self) -> List[Tuple[_C.Config, int]]:
        """The steps as ``(config, exit)``, exits normalised (never -1)."""
        return self._impl.steps

    @property
    def expected_us(self) -> List[float]:
        """Each step's expected time in microseconds (0 = not known yet): the ``quantile`` of its
        last ``window`` times; step 0 the first answer, the others their refinement from the step before."""
        return self._impl.expected_us

    def calibrate(self, input: torch.Tensor, repetitions: int = 20) -> List[float]:
        """Times every step on ``input`` (one warm-up, then ``repetitions``); each step's expected
        time becomes the ``quantile`` of its last ``window`` times; returns them. The net must be in eval mode."""
        self._impl.calibrate(input, int(repetitions))
        return self.expected_us

    def run(self, input: torch.Tensor, budget_us: float,
            callback: Optional[Callable[[AnytimeAnswer], bool]] = None) -> AnytimeAnswer:
        """The best answer reachable within ``budget_us`` microseconds of the call. The first step
        always answers; a later one runs only when the elapsed time plus its expected time fits
        (a step never run is tried). ``callback`` sees each answer; returning False stops."""
        return self._impl.run(input, float(budget_us), callback)

    @property
    def window(self) -> int:
        """How many recent times per step the expected time is taken over (default 15)."""
        return self._impl.window

    @window.setter
    def window(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f"AnytimeRunner: window {value} (valid: >= 1)")
        self._impl.window = int(value)

    @property
    def quantile(self) -> float:
        """Which quantile of a step's recent times it is expected to take, in (0, 1] (default 0.5,
        the median). Higher stays within budget more often, but a skipped step is not timed again,
        so a few slow runs can keep it out (docs/depth_benchmark.md)."""
        return self._impl.quantile

    @quantile.setter
    def quantile(self, value: float) -> None:
        self._impl.quantile = float(value)  # checked there: ValueError naming the value

    def __repr__(self) -> str:
        steps = ", ".join(f"{c.name}@{e}" for c, e in self.steps)
        return f"dydnn.anytime.AnytimeRunner([{steps}])"
