"""Dynamic layers and networks as ``torch.nn.Module``s backed by dydnn's C++ core.

Each module wraps a C++ module and registers the *same* tensors as its parameters and
buffers, so ``torch.optim``, ``state_dict``/``load_state_dict``, ``train()``/``eval()``,
``.to()``, ``DataLoader`` loops and DDP all work, and autograd flows through the C++
code into each group's own parameters.

Configs are given as a list of groups (``[0, 1]``), a string (``"AB"``, ``"C*D*"``)
or a :class:`dydnn.Config`.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Sequence, Tuple, Union

import torch

from . import _C
from ._C import Config, Connectivity, Execution, GroupSpec, NetSpec

ConfigLike = Union[Config, Sequence[int], str]

__all__ = [
    "DynamicConv2d",
    "DynamicLinear",
    "DynamicBatchNorm2d",
    "DynamicNet",
    "build_static",
]


def _cpp_tensors(impl, kind: str):
    """(name, tensor) pairs a C++ module owns directly; `kind` is "parameters" or "buffers"."""
    own = getattr(impl, f"_named_{kind}", None)
    if own is not None:  # a dydnn module
        return own()
    return list(getattr(impl, f"named_{kind}")(False).items())  # a plain torch::nn module (torch's binding)


def _cpp_children(impl):
    own = getattr(impl, "_named_children", None)
    return own() if own is not None else list(impl.named_children().items())


class _CppBacked(torch.nn.Module):
    """Mirrors a C++ ``torch::nn::Module``: same parameter/buffer tensors, same tree."""

    def __init__(self, impl):
        super().__init__()
        object.__setattr__(self, "_impl", impl)
        for name, tensor in _cpp_tensors(impl, "parameters"):
            # The very tensor C++ computes with, made a Parameter in place (its Python class
            # only): a `_is_param` flag would also make torch 1.13 count it as an
            # UninitializedParameter, which DistributedDataParallel refuses.
            tensor.__class__ = torch.nn.Parameter
            self.register_parameter(name, tensor)
        for name, tensor in _cpp_tensors(impl, "buffers"):
            self.register_buffer(name, tensor)
        for name, child in _cpp_children(impl):
            self.add_module(name, _CppBacked(child))

    def train(self, mode: bool = True):
        super().train(mode)
        self._impl.train(mode)
        return self

    def _apply(self, fn):
        # torch.nn.Module._apply swaps parameter data in place but *replaces* buffers;
        # C++ must keep computing with the tensors Python sees, so move them back in.
        cpp_buffers = dict(_cpp_tensors(self._impl, "buffers"))
        super()._apply(fn)
        for name, cpp in cpp_buffers.items():
            new = self._buffers[name]
            if new is not cpp:
                cpp.data = new
                self._buffers[name] = cpp
        return self

    def __repr__(self):
        return repr(self._impl) if hasattr(self._impl, "set_config") else super().__repr__()


def _as_groups(value, groups: int) -> GroupSpec:
    if isinstance(value, GroupSpec):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return GroupSpec.equal(value, groups)
    raise ValueError(f"[dydnn.nn] expected a channel count (int) or a dydnn.GroupSpec, got {value!r}")


def _as_connectivity(value, groups: int) -> Connectivity:
    if isinstance(value, Connectivity):
        return value
    if isinstance(value, str):
        return Connectivity.from_name(value, groups)
    raise ValueError(
        f"[dydnn.nn] expected a connectivity name ('prefix', 'incremental', 'independent') or a "
        f"dydnn.Connectivity, got {value!r}"
    )


def _as_execution(value) -> Execution:
    return value if isinstance(value, Execution) else _C.execution_from_string(str(value))


def _pair(value) -> List[int]:
    return list(value) if isinstance(value, (tuple, list)) else [int(value)]


class _DynamicLayer(_CppBacked):
    """Config handling shared by the dynamic layers."""

    def set_config(self, config: ConfigLike) -> None:
        """Selects the sub-network; raises ``ValueError``/``IndexError`` listing the valid configs."""
        self._impl.set_config(config)

    @property
    def config(self) -> Config:
        return self._impl.config

    @property
    def configs(self) -> List[Config]:
        return list(self._impl.connectivity.valid_configs)

    def forward(self, input: torch.Tensor, config: ConfigLike | None = None) -> torch.Tensor:
        """Runs at ``config`` (default: the current one) on the compact active-channel input."""
        if config is None:
            return self._impl.forward(input)
        return self._impl.forward_at(input, config)

    def materialize(self, config: ConfigLike) -> torch.nn.Module:
        """A plain ``torch.nn`` module holding only this config's weights."""
        return build_static([self._impl.static_layer(config)])[0]


class DynamicConv2d(_DynamicLayer):
    """A 2-D convolution over grouped channels (C++ ``dydnn::nn::DynamicConv2d``).

    ``in_channels``/``out_channels`` are channel counts (split equally into ``groups``)
    or :class:`dydnn.GroupSpec`. Each allowed block ``(j, i)`` is its own parameter
    ``weight_<j>_<i>``. Input ``[N, active in-channels, H, W]`` -> ``[N, active out-channels, H', W']``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, groups=4,
                 connectivity="incremental", dense_input=False, execution="auto"):
        out_spec = _as_groups(out_channels, groups)
        g = out_spec.num_groups
        in_spec = GroupSpec.counts([in_channels]) if dense_input and isinstance(in_channels, int) else _as_groups(in_channels, g)
        super().__init__(_C.DynamicConv2d(in_spec, out_spec, _pair(kernel_size), _pair(stride), _pair(padding), bool(bias),
                                          _as_connectivity(connectivity, g), bool(dense_input), _as_execution(execution)))


class DynamicLinear(_DynamicLayer):
    """A linear layer over grouped features (C++ ``dydnn::nn::DynamicLinear``).

    With ``dense_output=True`` it is a classifier head reading every active group;
    ``bias_per_input_group=True`` makes it additive (``y = sum_g W_g x_g + b_g``).
    """

    def __init__(self, in_features, out_features, bias=True, groups=4, connectivity="incremental",
                 dense_input=False, dense_output=False, bias_per_input_group=False, execution="auto"):
        if dense_output and isinstance(out_features, int):
            out_spec = GroupSpec.counts([out_features])
            in_spec = _as_groups(in_features, groups)
            g = in_spec.num_groups
        else:
            out_spec = _as_groups(out_features, groups)
            g = out_spec.num_groups
            in_spec = GroupSpec.counts([in_features]) if dense_input and isinstance(in_features, int) else _as_groups(in_features, g)
        super().__init__(_C.DynamicLinear(in_spec, out_spec, bool(bias), _as_connectivity(connectivity, g),
                                          bool(dense_input), bool(dense_output), bool(bias_per_input_group),
                                          _as_execution(execution)))


class DynamicBatchNorm2d(_DynamicLayer):
    """Batch normalisation over grouped channels, statistics per group (per config under ``prefix``)."""

    def __init__(self, num_features, groups=4, connectivity="incremental", eps=1e-5, momentum=0.1):
        spec = _as_groups(num_features, groups)
        super().__init__(_C.DynamicBatchNorm2d(spec, _as_connectivity(connectivity, spec.num_groups), float(eps),
                                               float(momentum)))

    def set_frozen(self, group: int, frozen: bool = True) -> None:
        """Freezes group ``group``'s running statistics (used, not updated, in training mode)."""
        self._impl.set_frozen(group, frozen)

    def num_slots(self, group: int) -> int:
        """How many statistics sets the group has (1 when its inputs never change)."""
        return self._impl.num_slots(group)


class DynamicNet(_DynamicLayer):
    """A dynamic DNN built from a spec (a :class:`dydnn.NetSpec`, spec text, a path, or a shipped spec name).

    ``net.set_config("AB")`` switches the sub-network in place; ``net.configs`` lists the
    valid ones; ``net.materialize(config)`` returns a plain ``torch.nn.Sequential``.
    ``net(x, config)`` gives logits ``[N, classes]`` at ``config`` (default: the current one).
    """

    def __init__(self, spec: Union[NetSpec, str, os.PathLike]):
        super().__init__(_C.DynamicNet(_load_spec(spec)))

    __repr__ = torch.nn.Module.__repr__  # the layer tree, each layer printed by C++

    @classmethod
    def _from_impl(cls, impl) -> "DynamicNet":
        """Wraps an existing C++ net (one read from a model file) without copying it."""
        net = cls.__new__(cls)
        _DynamicLayer.__init__(net, impl)
        net.eval()  # what a loaded model is for; C++ built it in eval mode too
        return net

    @property
    def connectivity(self) -> Connectivity:
        return self._impl.connectivity

    @property
    def spec(self) -> NetSpec:
        return self._impl.spec

    def parameter_count(self, config: ConfigLike | None = None) -> int:
        """Numbers the config uses (its groups' allowed blocks, biases, BN affine, head)."""
        return self._impl.parameter_count(self.config if config is None else config)

    def macs(self, config: ConfigLike | None = None) -> int:
        """Multiply-accumulates for one image at the config (allowed blocks only); FLOPs = 2 x MACs."""
        return self._impl.macs(self.config if config is None else config)

    def materialize(self, config: ConfigLike | None = None) -> torch.nn.Sequential:
        """A plain ``torch.nn.Sequential`` (eval mode) computing this config, holding only its weights."""
        return build_static(self._impl.static_layers(self.config if config is None else config))

    def set_frozen_statistics(self, group: int, frozen: bool = True) -> None:
        """Freezes group ``group``'s BN running statistics in every layer."""
        self._impl.set_frozen_statistics(group, frozen)

    def set_execution(self, execution) -> None:
        """Inference strategy of every grouped layer: ``"auto"``, ``"packed"`` or ``"per_group"``."""
        self._impl.set_execution(_as_execution(execution))

    def measure_latency(self, input: torch.Tensor, config: ConfigLike | None = None, warmup: int = 20,
                        repetitions: int = 100) -> dict:
        """Times ``forward(input)`` in C++ under inference mode; microseconds (median, p95, mean, min)."""
        return self._impl.measure_latency(input, self.config if config is None else config, warmup, repetitions)

    # -- depth: early exits and anytime refinement (docs/depth.md) -------------------------
    @property
    def num_exits(self) -> int:
        """Exits of the net: the spec's early exits plus the final head (the last one)."""
        return self._impl.num_exits

    def exit_depth(self, exit: int) -> int:
        """Feature layers that run before exit ``exit`` (-1 = the final head)."""
        return self._impl.exit_depth(exit)

    def forward_to_exit(self, input: torch.Tensor, exit: int = -1, config: ConfigLike | None = None) -> torch.Tensor:
        """Logits of exit ``exit`` at ``config``; only the layers before the exit run (autograd works)."""
        return self._impl.forward_to_exit(input, self.config if config is None else config, exit)

    def forward_exits(self, input: torch.Tensor, config: ConfigLike | None = None) -> List[torch.Tensor]:
        """Every exit's logits from one pass over the layers (the final head last)."""
        return self._impl.forward_exits(input, self.config if config is None else config)

    def forward_adaptive(self, input: torch.Tensor, thresholds: Sequence[float], config: ConfigLike | None = None,
                         criterion: str = "entropy", parallel_heads: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Early-exit inference: ``(logits [N, classes], exits [N])`` in input order.

        A sample stops at the first exit ``e`` whose score (``"entropy"`` in nats, or
        ``"max_prob"`` = 1 - max softmax) is below ``thresholds[e]`` (one per early exit; a
        negative one disables that exit); the final head answers the rest. Later layers run
        only for the samples still going (at batch 1 an exiting sample computes nothing more).
        ``parallel_heads`` runs each exit head on a second thread beside the next layers.
        """
        return self._impl.forward_adaptive(input, self.config if config is None else config,
                                           [float(t) for t in thresholds], criterion, parallel_heads)

    def forward_cached(self, input: torch.Tensor, config: ConfigLike | None = None,
                       exit: int = -1) -> Tuple[torch.Tensor, "_C.ActivationCache"]:
        """``(logits, cache)`` at ``(config, exit)``; ``refine(cache, ...)`` improves the answer later."""
        return self._impl.forward_cached(input, self.config if config is None else config, exit)

    def refine(self, cache, config: ConfigLike, exit: int = -1) -> torch.Tensor:
        """Anytime refinement: logits at ``(config, exit)`` for the cached input, computing only the
        groups the cache lacks and the layers past its exit (equal to a fresh run). Needs
        ``can_refine(cache.config, config)``: ``incremental``, ``independent`` or ``fluid`` masks."""
        return self._impl.refine(cache, config, exit)

    def can_refine(self, from_config: ConfigLike, to_config: ConfigLike) -> bool:
        """Whether activations at ``from_config`` stay valid at ``to_config`` (no old group reads a new one)."""
        return self._impl.can_refine(from_config, to_config)


def _load_spec(spec) -> NetSpec:
    if isinstance(spec, NetSpec):
        return spec
    if isinstance(spec, os.PathLike):
        return NetSpec.load(os.fspath(spec))
    if isinstance(spec, str):
        if spec.lstrip().startswith("dydnn-spec"):
            return NetSpec.parse(spec)
        if os.path.exists(spec):
            return NetSpec.load(spec)
        from .specs import spec_path
        return NetSpec.load(str(spec_path(spec)))
    raise ValueError(f"[dydnn.spec] expected a NetSpec, spec text, a path or a shipped spec name, got {spec!r}")


def build_static(layers: Iterable[dict]) -> torch.nn.Module:
    """A ``torch.nn.Sequential`` (eval mode) from C++ static layer descriptions."""
    modules = []
    for layer in layers:
        kind, t, ints, reals = layer["kind"], layer["tensors"], layer["ints"], layer["reals"]
        if kind == "conv2d":
            w = t["weight"]
            m = torch.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=(ints["stride_h"], ints["stride_w"]),
                                padding=(ints["padding_h"], ints["padding_w"]), bias="bias" in t)
        elif kind == "linear":
            w = t["weight"]
            m = torch.nn.Linear(w.shape[1], w.shape[0], bias="bias" in t)
        elif kind == "batch_norm2d":
            m = torch.nn.BatchNorm2d(t["weight"].shape[0], eps=reals["eps"], momentum=reals["momentum"])
        elif kind == "relu":
            m = torch.nn.ReLU()
        elif kind == "max_pool2d":
            m = torch.nn.MaxPool2d(ints["kernel_size"])
        elif kind == "avg_pool2d":
            m = torch.nn.AvgPool2d(ints["kernel_size"])
        elif kind == "adaptive_avg_pool2d":
            m = torch.nn.AdaptiveAvgPool2d(1)
        elif kind == "flatten":
            m = torch.nn.Flatten()
        else:
            raise ValueError(f"[dydnn.nn] unknown static layer kind '{kind}'")
        if t:
            m = m.to(device=next(iter(t.values())).device, dtype=next(iter(t.values())).dtype)
            with torch.no_grad():
                for name, value in t.items():
                    getattr(m, name).copy_(value)
        modules.append(m)
    return torch.nn.Sequential(*modules).eval()
