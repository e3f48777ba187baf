"""Naive references for the dynamic layers, built only from torch.nn.functional.

Nothing here uses dydnn's packing, masks or slot logic: the masks, valid configs and
BatchNorm contexts are recomputed from design §2, and each output group is a plain sum
of per-block convolutions / products over the active input groups it may read.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence

import torch
import torch.nn.functional as F

import dydnn

#: float32: atol 1e-5 / rtol 1e-4; float64: atol 1e-10 / rtol 1e-8.
TOLERANCES = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-8)}

FLUID_ISLANDS = [[0, 1], [2, 3]]


@dataclass(frozen=True)
class Case:
    """One connectivity preset at one G."""

    kind: str  # prefix | incremental | independent | fluid
    groups: int
    cross: bool = False

    @property
    def id(self) -> str:
        extra = ("-cross" if self.cross else "-nocross") if self.kind == "fluid" else ""
        return f"{self.kind}{extra}-G{self.groups}"

    def connectivity(self) -> dydnn.Connectivity:
        if self.kind == "fluid":
            return dydnn.Connectivity.fluid(FLUID_ISLANDS, self.cross)
        return dydnn.Connectivity.from_name(self.kind, self.groups)

    def mask(self) -> List[List[bool]]:
        """mask[j][i]: output group j reads input group i."""
        g = self.groups
        if self.kind == "prefix":
            return [[True] * g for _ in range(g)]
        if self.kind == "incremental":
            return [[i <= j for i in range(g)] for j in range(g)]
        if self.kind == "independent":
            return [[i == j for i in range(g)] for j in range(g)]
        island = {grp: k for k, isl in enumerate(FLUID_ISLANDS) for grp in isl}
        pos = {grp: isl.index(grp) for isl in FLUID_ISLANDS for grp in isl}

        def reads(j, i):
            if island[i] == island[j]:
                return pos[i] <= pos[j]
            return self.cross and island[i] < island[j]

        return [[reads(j, i) for i in range(g)] for j in range(g)]

    def configs(self) -> List[FrozenSet[int]]:
        """The valid configs of design §2, as sets."""
        g = self.groups
        if self.kind in ("prefix", "incremental"):
            return [frozenset(range(k)) for k in range(1, g + 1)]
        if self.kind == "independent":
            subsets = (itertools.combinations(range(g), k) for k in range(1, g + 1))
            return [frozenset(s) for s in itertools.chain.from_iterable(subsets)]
        a, b = FLUID_ISLANDS
        return [frozenset(s) for s in ([a[0]], a, [b[0]], b, a + [b[0]], a + b)]

    def reach(self, j: int) -> FrozenSet[int]:
        """Groups j depends on through any number of layers (transitive closure of the mask)."""
        m, seen, todo = self.mask(), {j}, [j]
        while todo:
            k = todo.pop()
            for i, r in enumerate(m[k]):
                if r and i not in seen:
                    seen.add(i)
                    todo.append(i)
        return frozenset(seen)


CASES = (
    [Case(kind, g) for kind in ("prefix", "incremental", "independent") for g in (1, 2, 3, 4)]
    + [Case("fluid", 4, cross=True), Case("fluid", 4, cross=False)]
)
EXACT_CASES = [c for c in CASES if c.kind != "prefix" and c.groups > 1]


def all_configs(cases=CASES):
    """(case, config) pairs for every valid config of every case, with readable ids."""
    return [(c, cfg) for c in cases for cfg in c.configs()]


def config_id(pair) -> str:
    case, cfg = pair
    return f"{case.id}-{name(cfg)}"


def name(config) -> str:
    """Letter name ("AB") of a set of groups."""
    return "".join(chr(ord("A") + g) for g in sorted(config))


def uneven_split(channels_per_group: int, groups: int, seed: int) -> dydnn.GroupSpec:
    """Explicit, unequal group sizes (GroupSpec.counts) for G groups."""
    base = [1, 3, 2, 4, 1, 5]
    return dydnn.GroupSpec.counts([base[(k + seed) % len(base)] + channels_per_group - 1 for k in range(groups)])


def splits(groups: int, uneven: bool):
    """(in, out) channel splits: equal ints, or counts / ratios."""
    if not uneven:
        return 3 * groups, 2 * groups + 1
    ratios = [1.0, 2.0, 1.0, 3.0][:groups]
    return uneven_split(1, groups, 0), dydnn.GroupSpec.ratios(int(sum(ratios)) * 2, ratios)


def used_block(case: Case, config, j: int, i: int, dense_in=False, dense_out=False) -> bool:
    """Whether block (output j, input i) takes part at `config` (layout coordinates)."""
    if dense_out:
        return i in config
    if j not in config:
        return False
    return dense_in or (i in config and case.mask()[j][i])


def compact_split(x: torch.Tensor, sizes: Sequence[int], groups: Sequence[int]) -> Dict[int, torch.Tensor]:
    """Splits a compact activation (active groups in order) into {group: slice}."""
    parts = torch.split(x, [sizes[g] for g in groups], dim=1)
    return dict(zip(groups, parts))


def grouped_reference(x, params, case: Case, config, in_sizes, op, dense_in=False, dense_out=False,
                      bias_kind: Optional[str] = "out"):
    """Sum of per-block ops over the active, allowed inputs; bias_kind: 'out' (bias_<j>), 'in' (bias_in<i>) or None."""
    active_in = [0] if dense_in else sorted(config)
    active_out = [0] if dense_out else sorted(config)
    xs = compact_split(x, in_sizes, active_in)
    outs = []
    for j in active_out:
        terms = [op(xs[i], params[f"weight_{j}_{i}"]) for i in active_in
                 if used_block(case, config, j, i, dense_in, dense_out)]
        acc = terms[0]
        for t in terms[1:]:
            acc = acc + t
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        if bias_kind == "out":
            acc = acc + params[f"bias_{j}"].view(shape)
        elif bias_kind == "in":
            for i in active_in:
                acc = acc + params[f"bias_in{i}"].view(shape)
        outs.append(acc)
    return torch.cat(outs, dim=1)


def bn_slot(case: Case, j: int, config) -> str:
    """Suffix of group j's BN tensors at `config`: '_<j>' or '_<j>_at_<context>' (design §2)."""
    contexts = {c & case.reach(j) for c in case.configs() if j in c}
    if len(contexts) == 1:
        return f"_{j}"
    return f"_{j}_at_{name(frozenset(config) & case.reach(j))}"


def bn_num_slots(case: Case, j: int) -> int:
    return len({c & case.reach(j) for c in case.configs() if j in c})


def bn_reference(x, tensors, case: Case, config, sizes, training: bool, momentum=0.1, eps=1e-5):
    """Per-group F.batch_norm; in training, updates the running stats in `tensors` like torch does."""
    groups = sorted(config)
    xs = compact_split(x, sizes, groups)
    outs = []
    for j in groups:
        s = bn_slot(case, j, config)
        outs.append(F.batch_norm(xs[j], tensors["running_mean" + s], tensors["running_var" + s], tensors["weight" + s],
                                 tensors["bias" + s], training=training, momentum=momentum, eps=eps))
    return torch.cat(outs, dim=1)


_GROUPED = re.compile(r"^(weight)_(\d+)_(\d+)$|^(bias)_(\d+)$|^(bias_in)(\d+)$")
_BN = re.compile(r"^(weight|bias|running_mean|running_var)_(\d+)(?:_at_([A-Z]+))?$")


def tensor_used(case: Case, config, tensor_name: str, layer: str, dense_in=False, dense_out=False) -> bool:
    """Whether a parameter / buffer named `tensor_name` of a `layer` ('grouped' or 'bn') is read at `config`."""
    config = frozenset(config)
    if layer == "bn":
        m = _BN.match(tensor_name)
        assert m, tensor_name
        j, ctx = int(m.group(2)), m.group(3)
        if j not in config:
            return False
        return ctx is None or ctx == name(config & case.reach(j))
    m = _GROUPED.match(tensor_name)
    assert m, tensor_name
    if m.group(1):
        return used_block(case, config, int(m.group(2)), int(m.group(3)), dense_in, dense_out)
    if m.group(4):
        return dense_out or int(m.group(5)) in config
    return int(m.group(7)) in config


def expected_grouped_names(case: Case, dense_in=False, dense_out=False, bias_kind="out") -> set:
    g = case.groups
    outs, ins = ([0] if dense_out else range(g)), ([0] if dense_in else range(g))
    names = {f"weight_{j}_{i}" for j in outs for i in ins if dense_in or dense_out or case.mask()[j][i]}
    if bias_kind == "out":
        names |= {f"bias_{j}" for j in outs}
    elif bias_kind == "in":
        names |= {f"bias_in{i}" for i in ins}
    return names


def net_tensor_used(case: Case, config, full_name: str) -> bool:
    """Whether a DynamicNet tensor (`conv1.weight_2_0`, `bn0.running_mean_1`, `head.bias_in3`) is read at `config`.

    The first layer reads the image (a dense input); `head` writes the logits (a dense output);
    `head_<config>` is a per-config head; early exits (`exit0`, `exit0_<config>`) are heads too.
    """
    module, _, tensor = full_name.rpartition(".")
    if module.startswith("exit"):
        module = "head" + module[module.index("_"):] if "_" in module else "head"
    if module.startswith("head_"):
        return module == "head_" + name(config)
    if module.startswith("bn"):
        return tensor_used(case, config, tensor, "bn")
    dense_in = module in ("conv0", "linear0")
    return tensor_used(case, config, tensor, "grouped", dense_in=dense_in, dense_out=module == "head")
