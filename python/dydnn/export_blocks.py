"""The ``"blocks"`` export layout: one config of a DynamicNet storing only its allowed blocks.

``net.materialize(config)`` gives dense weights: a forbidden block (output group ``j``,
input group ``i`` with ``mask[j][i]`` unset) is stored as zeros, e.g. 6882 of the 50282
numbers of fashion_mnist_default's ABCD. The model built here stores, for every grouped
convolution or linear layer, only the blocks each active output group reads at the config:

- The layer's input is the compact tensor of the active input groups (in group order;
  for the first linear after convolutions, ``flatten(1)`` of it, so input group ``i`` is
  ``size_i * H * W`` contiguous features). Output group ``j`` reads the active groups of
  its mask row; each run of such groups that is contiguous in the compact input becomes
  one ``narrow`` and one convolution (linear), whose weight is the run's blocks
  concatenated. The runs' results are summed, the group's bias goes into the first one.
  Under ``incremental`` that is one convolution per output group over an input prefix.
- Adjacent output groups with the same runs share one call, their weights concatenated
  along the output dimension: the stem (dense input) and every ``prefix`` layer are one
  call over the whole input, as in the dense layout.
- Each call's output channels get their BatchNorm (eval; ``materialize``'s statistics of
  those channels), the calls' outputs are concatenated, then ReLU and pooling exactly as
  in ``materialize``. A call ending in its BatchNorm lets ``torch.jit.freeze`` fold the BN
  into the convolution of a loaded model.
- The head: ``additive`` stores the active groups' weight blocks (one ``[classes,
  features]`` matrix, no zero block since every active group is read) and their per-group
  biases ``[groups, classes]``, summed when it runs, as the dynamic net does; ``prefix`` and
  ``per_config`` heads are ``materialize``'s (no zero blocks either).

Stored numbers, exactly: the TorchScript model holds ``net.parameter_count(config)`` plus
the BN running mean and variance of the config's channels (no ``num_batches_tracked``).
With :func:`fold_batch_norm` (the ONNX export) each eval-mode BatchNorm is folded into the
preceding layer's blocks (``w * gamma / sqrt(var + eps)``, computed in float64, rounded
once) and a per-channel bias, so the model holds ``parameter_count(config)`` minus one
number per BN channel. The ONNX graph uses Slice (with Constant starts, ends and axes),
Conv, Add, Concat, Relu, MaxPool, AveragePool/Pad, GlobalAveragePool, Flatten, ReduceSum
(the head's bias rows) and Gemm.

Every module here is plain ``torch.nn`` that ``torch.jit.script`` compiles and
``torch.onnx.export`` traces. A saved TorchScript model names its classes after this module
(``__torch__.dydnn.export_blocks.Run``) but holds their code: loading it needs no dydnn.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["block_plan", "fold_batch_norm", "build_blocks", "count_numbers"]


class Run(torch.nn.Module):
    """One convolution (or linear) over a contiguous channel range of the layer input."""

    # Plain attributes, not constants: the scripted runs then share one compiled class
    # (a Final value per run would give each run its own class and code in the file).
    whole: bool
    conv: bool
    start: int
    length: int

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], start: int, length: int, whole: bool,
                 conv: bool, stride: Sequence[int], padding: Sequence[int]):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = torch.nn.Parameter(bias, requires_grad=False)
        self.start, self.length, self.whole, self.conv = int(start), int(length), bool(whole), bool(conv)
        self.stride: List[int] = [int(s) for s in stride]
        self.padding: List[int] = [int(p) for p in padding]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.whole:
            x = x.narrow(1, self.start, self.length)
        if self.conv:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return F.linear(x, self.weight, self.bias)


class Unit(torch.nn.Module):
    """Adjacent output groups that read the same runs: the sum of the runs' results, then
    their channels' BatchNorm (``torch.nn.Identity`` when there is none or it is folded).

    Straight-line code (TorchScript unrolls the loop over the ModuleList), so that
    ``torch.jit.freeze`` folds a BatchNorm into a single-run convolution and
    ``optimize_for_inference`` can keep the chain in oneDNN's layout.
    """

    def __init__(self, runs: List[Run], norm: Optional[torch.nn.Module] = None):
        super().__init__()
        self.first = runs[0]
        self.rest = torch.nn.ModuleList(runs[1:])
        self.norm = torch.nn.Identity() if norm is None else norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.first(x)
        for run in self.rest:
            y = y + run(x)
        return self.norm(y)


class GroupedLayer(torch.nn.Module):
    """A grouped convolution or linear layer of several units: their outputs, concatenated
    on channels (a layer of one unit is that unit)."""

    def __init__(self, units: List[Unit]):
        super().__init__()
        self.units = torch.nn.ModuleList(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([unit(x) for unit in self.units], 1)


class BatchNorm(torch.nn.Module):
    """Eval-mode BatchNorm over the active channels (no ``num_batches_tracked`` buffer)."""

    eps: torch.jit.Final[float]

    def __init__(self, weight, bias, running_mean, running_var, eps: float):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False)
        self.register_buffer("running_mean", running_mean)
        self.register_buffer("running_var", running_var)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class Head(torch.nn.Module):
    """The classifier: ``linear(x, weight, biases.sum(0))``; ``biases`` is ``[groups, classes]``
    for the additive head (one bias per active group) and ``[1, classes]`` otherwise."""

    def __init__(self, weight: torch.Tensor, biases: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.biases = torch.nn.Parameter(biases, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.biases.sum(0))


# --- the plan: what each layer computes at a config, as plain data -----------------------------------------------

def _grouped_modules(net) -> List[Tuple[int, str, torch.nn.Module]]:
    """(spec layer index, kind, module) of the net's grouped layers, in layer order."""
    out = []
    for name, module in net.named_children():
        m = re.fullmatch(r"(conv|linear)(\d+)", name)
        if m:
            out.append((int(m.group(2)), m.group(1), module))
    return sorted(out, key=lambda t: t[0])


def _block(module, j: int, i: int) -> torch.Tensor:
    return getattr(module, f"weight_{j}_{i}").detach()


def _runs_of(active: List[int], sizes: Dict[int, int], reads) -> List[Tuple[int, int, List[int]]]:
    """Maximal runs of read groups that are adjacent in the compact input: (start, length, groups)."""
    runs: List[Tuple[int, int, List[int]]] = []
    offset, previous_read = 0, False
    for i in active:
        if reads(i):
            if previous_read:
                start, length, groups = runs[-1]
                runs[-1] = (start, length + sizes[i], groups + [i])
            else:
                runs.append((offset, sizes[i], [i]))
        previous_read = reads(i)
        offset += sizes[i]
    return runs


def _grouped_plan(module, config, mask, dense_input: bool, conv: bool, static: dict) -> dict:
    active = list(config.groups)
    if dense_input:
        width = _block(module, active[0], 0).shape[1]
        sizes, in_active = {0: width}, [0]
        row = lambda j: (lambda i: True)  # noqa: E731  the stem reads all input channels
    else:
        sizes = {i: _block(module, i, i).shape[1] for i in active}
        in_active = active
        row = lambda j: (lambda i: mask[j][i])  # noqa: E731
    total = sum(sizes[i] for i in in_active)
    per_group = []
    for j in active:
        runs = _runs_of(in_active, sizes, row(j))
        weights = [torch.cat([_block(module, j, i) for i in groups], 1) for _, _, groups in runs]
        bias = getattr(module, f"bias_{j}", None)
        per_group.append(dict(key=[(s, n) for s, n, _ in runs], weights=weights,
                              bias=None if bias is None else bias.detach()))
    units = []  # adjacent output groups with the same runs share one call
    for g in per_group:
        if units and units[-1]["key"] == g["key"]:  # a layer's groups all have a bias or none
            u = units[-1]
            u["weights"] = [torch.cat([a, b], 0) for a, b in zip(u["weights"], g["weights"])]
            if g["bias"] is not None:
                u["bias"] = torch.cat([u["bias"], g["bias"]], 0)
        else:
            units.append(dict(g))
    ints = static["ints"]
    return {
        "kind": "grouped",
        "conv": conv,
        "stride": [ints["stride_h"], ints["stride_w"]] if conv else [],
        "padding": [ints["padding_h"], ints["padding_w"]] if conv else [],
        "in_channels": total,
        "units": [dict(runs=[(s, n, w) for (s, n), w in zip(u["key"], u["weights"])], bias=u["bias"]) for u in units],
    }


def block_plan(net, config) -> List[dict]:
    """The config as a list of layer records (plain data; tensors are detached views of the net's).

    ``config`` is a valid :class:`dydnn.Config` of ``net``. Records: ``grouped`` (conv or
    linear: units of runs ``(start, length, weight)`` plus a bias), ``batch_norm2d``,
    ``relu``, ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``, ``flatten``, ``head``.
    """
    static = net._impl.static_layers(config)
    grouped = _grouped_modules(net)
    mask = net.connectivity.mask
    head_kind = net.spec.head
    weighted = [k for k, s in enumerate(static) if s["kind"] in ("conv2d", "linear")]
    if len(weighted) != len(grouped) + 1:
        raise ValueError(f"[dydnn.export] net '{net.spec.name}': {len(weighted)} conv/linear static layers for "
                         f"{len(grouped)} grouped layers and a head")
    plan: List[dict] = []
    layer = 0
    for k, s in enumerate(static):
        kind, t = s["kind"], s["tensors"]
        if k == weighted[-1]:  # the head
            if head_kind == "additive":
                biases = torch.stack([getattr(net.head, f"bias_in{i}").detach() for i in config.groups])
            else:  # prefix, per_config: one bias, no zero block in the weight
                biases = t["bias"].detach().reshape(1, -1)
            plan.append({"kind": "head", "weight": t["weight"].detach(), "biases": biases})
        elif kind in ("conv2d", "linear"):
            _, module_kind, module = grouped[layer]
            expected = "conv" if kind == "conv2d" else "linear"
            if module_kind != expected:
                raise ValueError(f"[dydnn.export] layer {layer}: static '{kind}' but module '{module_kind}'")
            p = _grouped_plan(module, config, mask, layer == 0, kind == "conv2d", s)
            if p["in_channels"] != t["weight"].shape[1]:
                raise ValueError(f"[dydnn.export] layer {layer}: {p['in_channels']} input channels, "
                                 f"materialize has {t['weight'].shape[1]}")
            plan.append(p)
            layer += 1
        elif kind == "batch_norm2d":
            plan.append({"kind": kind, "eps": s["reals"]["eps"],
                         **{n: t[n].detach() for n in ("weight", "bias", "running_mean", "running_var")}})
        else:
            plan.append({"kind": kind, "kernel_size": s["ints"].get("kernel_size", 0)})
    return plan


def fold_batch_norm(plan: List[dict]) -> List[dict]:
    """The plan with each BatchNorm folded into the grouped conv before it (eval mode)."""
    out: List[dict] = []
    for p in plan:
        if p["kind"] != "batch_norm2d":
            out.append(p)
            continue
        prev = out[-1] if out else None
        if prev is None or prev["kind"] != "grouped" or not prev["conv"]:
            raise ValueError("[dydnn.export] a BatchNorm that does not follow a convolution cannot be folded")
        dtype = p["weight"].dtype
        scale = p["weight"].double() / torch.sqrt(p["running_var"].double() + p["eps"])
        shift = p["bias"].double() - p["running_mean"].double() * scale
        units, offset = [], 0
        for u in prev["units"]:
            n = u["runs"][0][2].shape[0]
            s, t = scale[offset:offset + n], shift[offset:offset + n]
            if u["bias"] is not None:
                t = t + u["bias"].double() * s
            runs = [(a, b, (w.double() * s.view(-1, 1, 1, 1)).to(dtype)) for a, b, w in u["runs"]]
            units.append(dict(runs=runs, bias=t.to(dtype)))
            offset += n
        out[-1] = dict(prev, units=units)
    return out


def build_blocks(plan: List[dict]) -> torch.nn.Sequential:
    """A ``torch.nn.Sequential`` (eval mode) of the plan; tensors are copied."""
    modules: List[torch.nn.Module] = []
    for k, p in enumerate(plan):
        kind = p["kind"]
        if kind == "grouped":
            bn = plan[k + 1] if k + 1 < len(plan) and plan[k + 1]["kind"] == "batch_norm2d" else None
            units, offset = [], 0
            for u in p["units"]:
                runs = []
                for r, (start, length, w) in enumerate(u["runs"]):
                    bias = u["bias"].clone() if (r == 0 and u["bias"] is not None) else None
                    whole = start == 0 and length == p["in_channels"]
                    runs.append(Run(w.clone().contiguous(), bias, start, length, whole, p["conv"], p["stride"],
                                    p["padding"]))
                norm = None
                if bn is not None:  # the unit's channels of the BatchNorm that follows the layer
                    n = u["runs"][0][2].shape[0]
                    norm = BatchNorm(*(bn[t][offset:offset + n].clone()
                                       for t in ("weight", "bias", "running_mean", "running_var")), eps=bn["eps"])
                    offset += n
                units.append(Unit(runs, norm))
            modules.append(units[0] if len(units) == 1 else GroupedLayer(units))
        elif kind == "batch_norm2d":
            if k == 0 or plan[k - 1]["kind"] != "grouped":
                raise ValueError("[dydnn.export] a BatchNorm must follow a grouped layer")
        elif kind == "head":
            modules.append(Head(p["weight"].clone(), p["biases"].clone()))
        elif kind == "relu":
            modules.append(torch.nn.ReLU())
        elif kind == "max_pool2d":
            modules.append(torch.nn.MaxPool2d(p["kernel_size"]))
        elif kind == "avg_pool2d":
            modules.append(torch.nn.AvgPool2d(p["kernel_size"]))
        elif kind == "adaptive_avg_pool2d":
            modules.append(torch.nn.AdaptiveAvgPool2d(1))
        elif kind == "flatten":
            modules.append(torch.nn.Flatten())
        else:
            raise ValueError(f"[dydnn.export] unknown layer kind '{kind}'")
    return torch.nn.Sequential(*modules).eval()


def count_numbers(module: torch.nn.Module) -> int:
    """Numbers a module stores: numel of its parameters and buffers."""
    return sum(t.numel() for t in list(module.parameters()) + list(module.buffers()))
