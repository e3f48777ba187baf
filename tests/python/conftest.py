"""Shared fixtures for dydnn's Python tests: layer builders and small specs.

Run: ``PYTHONPATH=python /usr/bin/python3 -m pytest tests/python -q``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import dydnn
from dydnn.nn import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear

import reference as ref

EXECUTIONS = ("auto", "packed", "per_group")

# kind -> (layer builder (in, out, G, connectivity, execution), op, dense_in, dense_out, bias_kind, rank)
_CONV = dict(kernel_size=3, padding=1)
_STEM_WIDTH = {"conv_stem": 2, "linear_stem": 3}  # channels of a dense (ungrouped) input


def _conv_op(x, w):
    return torch.nn.functional.conv2d(x, w, padding=1)


def _linear_op(x, w):
    return torch.nn.functional.linear(x, w)


GROUPED_KINDS = {
    "conv": (lambda i, o, g, c, e: DynamicConv2d(i, o, groups=g, connectivity=c, execution=e, **_CONV),
             _conv_op, False, False, "out", 4),
    "conv_stem": (lambda i, o, g, c, e: DynamicConv2d(_STEM_WIDTH["conv_stem"], o, groups=g, connectivity=c,
                                                      dense_input=True, execution=e, **_CONV),
                  _conv_op, True, False, "out", 4),
    "linear": (lambda i, o, g, c, e: DynamicLinear(i, o, groups=g, connectivity=c, execution=e),
               _linear_op, False, False, "out", 2),
    "linear_stem": (lambda i, o, g, c, e: DynamicLinear(_STEM_WIDTH["linear_stem"], o, groups=g, connectivity=c,
                                                        dense_input=True, execution=e),
                    _linear_op, True, False, "out", 2),
    "head_additive": (lambda i, o, g, c, e: DynamicLinear(i, 5, groups=g, connectivity=c, dense_output=True,
                                                          bias_per_input_group=True, execution=e),
                      _linear_op, False, True, "in", 2),
    "head_shared": (lambda i, o, g, c, e: DynamicLinear(i, 5, groups=g, connectivity=c, dense_output=True, execution=e),
                    _linear_op, False, True, "out", 2),
}


class GroupedLayer:
    """A dynamic grouped layer under test plus what its reference needs."""

    def __init__(self, kind: str, case: ref.Case, uneven: bool, execution: str = "auto", dtype=torch.float32):
        build, self.op, self.dense_in, self.dense_out, self.bias_kind, self.rank = GROUPED_KINDS[kind]
        self.kind, self.case = kind, case
        in_split, out_split = ref.splits(case.groups, uneven)
        self.module = build(in_split, out_split, case.groups, case.connectivity(), execution).to(dtype)
        if self.dense_in:
            self.in_sizes = [_STEM_WIDTH[kind]]
        elif isinstance(in_split, dydnn.GroupSpec):
            self.in_sizes = list(in_split.sizes)
        else:
            self.in_sizes = list(dydnn.GroupSpec.equal(in_split, case.groups).sizes)

    def input(self, config, batch: int, dtype=torch.float32) -> torch.Tensor:
        """A random compact input holding only the active input groups."""
        channels = sum(self.in_sizes[g] for g in ([0] if self.dense_in else config))
        shape = (batch, channels, 6, 6) if self.rank == 4 else (batch, channels)
        return torch.randn(shape, dtype=dtype)

    def reference(self, x, params, config):
        return ref.grouped_reference(x, params, self.case, config, self.in_sizes, self.op, self.dense_in,
                                     self.dense_out, self.bias_kind)

    def used(self, tensor_name: str, config) -> bool:
        return ref.tensor_used(self.case, config, tensor_name, "grouped", self.dense_in, self.dense_out)


class BatchNormLayer:
    """A DynamicBatchNorm2d with random affine parameters and running statistics."""

    def __init__(self, case: ref.Case, uneven: bool, dtype=torch.float32):
        self.case = case
        split = ref.uneven_split(2, case.groups, 1) if uneven else 3 * case.groups
        self.module = DynamicBatchNorm2d(split, groups=case.groups, connectivity=case.connectivity()).to(dtype)
        self.sizes = list(split.sizes) if uneven else [3] * case.groups
        randomize_(self.module)

    def input(self, config, batch, dtype=torch.float32):
        return 2.0 * torch.randn(batch, sum(self.sizes[g] for g in config), 6, 6, dtype=dtype) + 0.5

    def used(self, tensor_name, config):
        return ref.tensor_used(self.case, config, tensor_name, "bn")


def randomize_(module: torch.nn.Module) -> None:
    """Moves every parameter and BN statistic away from its initial value, in place.

    Parameters get noise of 0.1 on top of their initialisation (so activations stay
    alive through ReLUs); running means ~ N(0, 0.1), running variances in [0.5, 1.5).
    """
    with torch.no_grad():
        for n, t in list(module.named_parameters()) + list(module.named_buffers()):
            if "running_var" in n:
                t.copy_(torch.rand(t.shape, dtype=t.dtype) + 0.5)
            elif "running_mean" in n:
                t.copy_(0.1 * torch.randn(t.shape, dtype=t.dtype))
            elif t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, dtype=t.dtype))


def calibrate_(net, x: torch.Tensor, rounds: int = 10) -> None:
    """Brings a net's BN running statistics near its real activations (train-mode passes at every config)."""
    net.train()
    with torch.no_grad():
        for _ in range(rounds):
            for c in net.configs:
                net(x, c)
    net.eval()


def random_net(spec_text: str) -> "dydnn.nn.DynamicNet":
    """A DynamicNet with perturbed parameters and calibrated BN statistics, in eval mode."""
    net = dydnn.nn.DynamicNet(spec_text)
    randomize_(net)
    calibrate_(net, torch.rand(16, net.spec.in_channels, net.spec.height, net.spec.width))
    return net


def assert_close(actual, expected, dtype, what):
    torch.testing.assert_close(actual, expected, **ref.TOLERANCES[dtype], msg=lambda m: f"{what}: {m}")


SMALL_SPEC = """dydnn-spec 1
name small
input 1 12 12
classes 4
groups 4
connectivity {connectivity}
head {head}
conv 8 kernel=3 padding=1 bn relu maxpool=2
conv 12 kernel=3 padding=1 bn relu maxpool=2
linear 8 relu
"""

NET_CONNECTIVITIES = {
    "prefix": "prefix",
    "incremental": "incremental",
    "independent": "independent",
    "fluid-cross": "fluid islands=0,1/2,3 cross=on",
    "fluid-nocross": "fluid islands=0,1/2,3 cross=off",
}


def small_spec(connectivity="incremental", head="additive") -> str:
    """A tiny 12x12 spec (two conv+BN blocks, a hidden linear) for fast net-level tests."""
    return SMALL_SPEC.format(connectivity=NET_CONNECTIVITIES.get(connectivity, connectivity), head=head)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def small_net():
    return random_net(small_spec())


#: The C++ build the tests run programs from: $DYDNN_BUILD_DIR, default <repo>/build.
BUILD_DIR = Path(os.environ.get("DYDNN_BUILD_DIR") or Path(__file__).resolve().parents[2] / "build")


def built_program(relative: str) -> Path:
    """A program of the C++ build; fails (not skips: CI always builds them) naming `make build` when missing."""
    path = BUILD_DIR / relative
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing: run `make build` first (or set DYDNN_BUILD_DIR to the build directory)",
                    pytrace=False)
    return path


@pytest.fixture
def keep_torch_state():
    """Restores torch's global RNG state and thread count after a test that changes them."""
    threads, state = torch.get_num_threads(), torch.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(state)
