"""Export one config of a :class:`dydnn.nn.DynamicNet` as a standalone model.

Two layouts (``layout=``):

- ``"blocks"`` (default): the model stores exactly the config's allowed blocks
  (:mod:`dydnn.export_blocks`): each active output group is computed from the runs of
  active input groups its mask row allows (one convolution per contiguous run, summed),
  the groups are concatenated. A TorchScript file stores ``net.parameter_count(config)``
  numbers plus the running mean and variance of the config's BN channels; an ONNX file,
  whose BatchNorms are folded into the convolutions, stores ``parameter_count(config)``
  minus one number per BN channel (gamma, beta and the statistics of a channel become its
  scaled weights and one bias).
- ``"dense"``: ``net.materialize(config)``, one convolution per layer with dense weights,
  zeros where the mask forbids a block (e.g. 50282 numbers instead of 43400 for
  fashion_mnist_default's ABCD). Fewer, larger calls: once frozen
  (``torch.jit.freeze`` + ``optimize_for_inference``) the faster layout at batch 1;
  docs/export_benchmark.md has both measured.

Nothing in the file refers to dydnn, so a TorchScript file loads with ``torch.jit.load``
(or ``torch::jit::load`` in LibTorch) and an ONNX file with any ONNX runtime. Files are
written atomically: to ``path + ".tmp"``, then renamed.

Each export checks the file's model against the dynamic net at that config on a fixed
random input and returns a dict with the path, format, layout, config, file size, the
numbers the file stores, the config's parameter count and the largest absolute difference
of the logits.
"""
from __future__ import annotations

import errno
import io
import os
from typing import Optional

import numpy as np
import torch

from . import export_blocks
from .nn import ConfigLike, DynamicNet
from ._C import Config

__all__ = ["FORMATS", "LAYOUTS", "export", "export_torchscript", "export_onnx"]

FORMATS = ("torchscript", "onnx")
LAYOUTS = ("blocks", "dense")

# A check passes when max |exported - net(x, config)| <= ATOL + RTOL * max |net(x, config)|:
# float32 rounding errors scale with the logits, so the bound does too.
# Dense TorchScript runs the same eager ops as the materialized Sequential (bitwise equal),
# but not always the dynamic net's kernels: batch 1 takes LibTorch's generic convolution
# instead of oneDNN, and the additive head sums its per-group biases in another order; the
# blocks layout also sums a layer's output in another order (one convolution per run).
# These are the tolerances materialize() itself is tested with (tests/python/reference.py);
# measured <= 1.1e-5 on logits up to ~7 (1.6e-6 relative), both layouts.
TORCHSCRIPT_ATOL = 1e-5
TORCHSCRIPT_RTOL = 1e-4
# The ONNX graph differs more: the exporter folds eval-mode BatchNorm into the convolution
# (w * gamma / sqrt(var + eps), rounded to float32) and the numpy reference accumulates in
# float64, so the difference is the float32 rounding of the folded weights plus the
# dynamic net's own float32 accumulation order; measured <= 1.1e-5 on logits up to ~7
# (the blocks layout folds BN itself, in float64, rounding the folded weights once).
ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-4

_VERIFY_BATCH = 4  # > 1, so the batch axis is really dynamic in the checked graph
_VERIFY_SEED = 0


def export(net: DynamicNet, config: ConfigLike, path, format: str, layout: str = "blocks", **options) -> dict:
    """Exports ``config`` of ``net`` to ``path`` in ``format`` (``"torchscript"`` or ``"onnx"``).

    ``layout`` is ``"blocks"`` or ``"dense"`` (see the module docstring); ``options`` go to
    :func:`export_torchscript` or :func:`export_onnx`. Raises ``ValueError`` for another
    format or layout.
    """
    if format == "torchscript":
        return export_torchscript(net, config, path, layout=layout, **options)
    if format == "onnx":
        return export_onnx(net, config, path, layout=layout, **options)
    raise ValueError(f"[dydnn.export] unknown format {format!r} (valid: {', '.join(FORMATS)})")


def export_torchscript(net: DynamicNet, config: ConfigLike, path, verify: bool = True,
                       layout: str = "blocks") -> dict:
    """Writes ``config`` of ``net`` as a TorchScript file that ``torch.jit.load`` reads without dydnn.

    The model (the blocks model, or with ``layout="dense"`` the materialized Sequential) is
    scripted (traced on a sample input if scripting fails) and saved; the file holds only
    that config's weights and BN statistics (``stored_numbers``: its parameters' and
    buffers' numel). With ``verify``, the saved bytes are loaded back and run against
    ``net(x, config)``; ``max_abs_diff`` is ``None`` otherwise. Raises ``ValueError`` for a
    config the net does not have (listing the valid ones), an unknown layout and when the
    check fails, ``OSError`` when ``path`` cannot be written (no ``.tmp`` file is left behind).
    """
    config, path = _check_arguments(net, config, path, layout)
    model = _model(net, config, layout, fold_bn=False)
    try:
        scripted, method = torch.jit.script(model), "script"
    except Exception:  # a module TorchScript cannot compile; a trace of this straight-line net is exact
        scripted, method = torch.jit.trace(model, _sample_input(net)), "trace"
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    data = buffer.getvalue()

    diff = None
    if verify:
        loaded = torch.jit.load(io.BytesIO(data), map_location=_device(net))
        diff = _compare(net, config, loaded, TORCHSCRIPT_ATOL, TORCHSCRIPT_RTOL, "TorchScript")
    _write_atomic(path, data)
    return dict(_result(net, config, path, "torchscript", layout, export_blocks.count_numbers(scripted), diff),
                method=method)


def export_onnx(net: DynamicNet, config: ConfigLike, path, opset: int = 13, verify: bool = True,
                layout: str = "blocks") -> dict:
    """Writes ``config`` of ``net`` as an ONNX model (input ``"input"``, output ``"logits"``, dynamic batch).

    Eval-mode BatchNorm is folded into the convolutions (by the exporter for ``"dense"``,
    by :func:`dydnn.export_blocks.fold_batch_norm` for ``"blocks"``); ``stored_numbers``
    is the initializers' numel. The graph passes ``onnx.checker.check_model``. With
    ``verify``, it is run by the numpy reference evaluator (:mod:`dydnn.onnx_reference`)
    against ``net(x, config)``; ``max_abs_diff`` is ``None`` otherwise. Raises like
    :func:`export_torchscript`.
    """
    import onnx  # only ONNX export needs onnx

    from . import onnx_reference

    config, path = _check_arguments(net, config, path, layout)
    model = _model(net, config, layout, fold_bn=True)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, _sample_input(net), buffer, opset_version=int(opset), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    data = buffer.getvalue()
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)

    diff = None
    if verify:
        def run(x):
            return torch.from_numpy(onnx_reference.run(proto, x.detach().cpu().numpy()))
        diff = _compare(net, config, run, ONNX_ATOL, ONNX_RTOL, "ONNX")
    _write_atomic(path, data)
    stored = sum(int(np.prod(t.dims, dtype=np.int64)) for t in proto.graph.initializer)
    return _result(net, config, path, "onnx", layout, stored, diff)


def _model(net, config, layout: str, fold_bn: bool) -> torch.nn.Module:
    """The standalone model of ``config`` in ``layout`` (eval mode)."""
    if layout == "dense":
        return net.materialize(config)
    with torch.no_grad():
        plan = export_blocks.block_plan(net, config)
        if fold_bn:
            plan = export_blocks.fold_batch_norm(plan)
        return export_blocks.build_blocks(plan)


def _check_arguments(net, config, path, layout: str = "blocks"):
    if not isinstance(net, DynamicNet):
        raise ValueError(f"[dydnn.export] expected a dydnn.nn.DynamicNet, got {type(net).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"[dydnn.export] unknown layout {layout!r} (valid: {', '.join(LAYOUTS)})")
    valid = list(net.configs)
    names = ", ".join(c.name for c in valid)
    if config is None:
        raise ValueError(f"[dydnn.export] no config given (valid configs: {names})")
    try:
        resolved = config if isinstance(config, Config) else Config(config, net.connectivity.num_groups)
    except (ValueError, IndexError, TypeError) as e:
        raise ValueError(f"[dydnn.export] bad config {config!r}: {e}; valid configs: {names}") from None
    if resolved not in valid:
        raise ValueError(f"[dydnn.export] config {config!r} is not valid for net '{net.spec.name}' "
                         f"(valid configs: {names})")

    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "[dydnn.export] the export path is a directory", path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, "[dydnn.export] the export path's directory does not exist", parent)
    if not os.access(parent, os.W_OK):
        raise PermissionError(errno.EACCES, "[dydnn.export] the export path's directory is not writable", parent)
    return resolved, path


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    created = False
    try:
        with open(tmp, "wb") as f:
            created = True
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if created:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass
        raise


def _device(net) -> torch.device:
    return next(net.parameters()).device


def _dtype(net) -> torch.dtype:
    return next(net.parameters()).dtype


def _sample_input(net, batch: int = _VERIFY_BATCH) -> torch.Tensor:
    """A fixed input (its own generator, so the caller's random state is untouched)."""
    spec = net.spec
    g = torch.Generator().manual_seed(_VERIFY_SEED)
    x = torch.rand(batch, spec.in_channels, spec.height, spec.width, generator=g, dtype=torch.float64)
    return x.to(device=_device(net), dtype=_dtype(net))


def _compare(net, config, run, atol: float, rtol: float, what: str) -> float:
    x = _sample_input(net)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            expected = net(x, config).detach().cpu()
            got = run(x).detach().cpu()
    finally:
        net.train(was_training)
    if got.shape != expected.shape:
        raise ValueError(f"[dydnn.export] {what} model of config {config.name} gives shape {list(got.shape)}, "
                         f"the net {list(expected.shape)}")
    diff = float((got.double() - expected.double()).abs().max())
    bound = atol + rtol * float(expected.abs().max())
    if not diff <= bound:  # also catches NaN
        raise ValueError(f"[dydnn.export] {what} model of config {config.name} differs from the net by {diff:.3g} "
                         f"(max abs on logits; tolerance {bound:.3g} = {atol:g} + {rtol:g} * max|logit|)")
    return diff


def _result(net, config, path: str, format: str, layout: str, stored: int, diff: Optional[float]) -> dict:
    parameters = int(net.parameter_count(config))
    itemsize = torch.empty((), dtype=_dtype(net)).element_size()
    return {
        "path": path,
        "format": format,
        "layout": layout,
        "config": config.name,
        "bytes": os.path.getsize(path),
        "stored_numbers": int(stored),
        "parameters": parameters,
        "parameter_bytes": itemsize * parameters,
        "max_abs_diff": diff,
    }
