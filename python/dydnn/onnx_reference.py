"""A small numpy evaluator for the ONNX graphs :mod:`dydnn.export` writes.

It is a reference, not a runtime: each node runs in float64 and its result is rounded to
the tensor's declared type, so the output is (nearly) the exactly rounded answer and a
comparison against it measures the error of the implementation under test. Only the ops
``torch.onnx.export`` (torch 1.13, opset 13) emits for materialized dydnn nets are
implemented; it folds eval-mode BatchNorm into the preceding Conv, so a typical graph is
Conv, Relu, MaxPool/AveragePool (with a Pad before it), GlobalAveragePool, Flatten, Gemm.
The ``"blocks"`` layout adds Slice (a run of input groups), Add (the runs' sum), Concat
(the output groups) and ReduceSum (the additive head's per-group biases).
Any other op raises ``NotImplementedError`` naming it.

Needs only ``numpy`` and ``onnx`` (no onnxruntime, no ``onnx.reference``).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Union

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["run", "SUPPORTED_OPS"]

Model = Union[onnx.ModelProto, str, os.PathLike, bytes]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _unsupported(node: onnx.NodeProto, what: str) -> NotImplementedError:
    return NotImplementedError(f"[dydnn.onnx_reference] {node.op_type} node '{node.name}': {what} is not supported")


def _spatial_pads(node, a: dict, rank: int) -> List[int]:
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _unsupported(node, f"auto_pad={a['auto_pad']!r}")
    pads = list(a.get("pads", [0] * (2 * rank)))
    if len(pads) != 2 * rank:
        raise ValueError(f"[dydnn.onnx_reference] {node.op_type} '{node.name}': pads {pads} for {rank} spatial dims")
    return pads


def _windows(x: np.ndarray, kernel, strides, dilations, pads, fill) -> np.ndarray:
    """[N, C, OH, OW, KH, KW] view of the (padded) input's 2-D sliding windows."""
    if x.ndim != 4 or len(kernel) != 2:
        raise NotImplementedError(f"[dydnn.onnx_reference] only 2-D windows are supported, got input rank {x.ndim}")
    top, left, bottom, right = pads
    if any(pads):
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
    if x.shape[2] < span[0] or x.shape[3] < span[1]:
        raise ValueError(f"[dydnn.onnx_reference] window {span} larger than padded input {list(x.shape[2:])}")
    w = np.lib.stride_tricks.sliding_window_view(x, span, axis=(2, 3))
    return w[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]


def _conv(node, a, x, w, b=None):
    if a.get("group", 1) != 1:
        raise _unsupported(node, f"group={a['group']}")
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    if list(w.shape[2:]) != kernel:
        raise ValueError(f"[dydnn.onnx_reference] Conv '{node.name}': kernel_shape {kernel} vs weight {list(w.shape)}")
    win = _windows(x.astype(np.float64), kernel, a.get("strides", [1, 1]), a.get("dilations", [1, 1]),
                   _spatial_pads(node, a, 2), 0.0)
    y = np.einsum("nchwij,mcij->nmhw", win, w.astype(np.float64), optimize=True)
    if b is not None:
        y = y + b.astype(np.float64)[None, :, None, None]
    return y.astype(x.dtype)


def _max_pool(node, a, x):
    if a.get("ceil_mode", 0) or a.get("storage_order", 0) or len(node.output) > 1:
        raise _unsupported(node, "ceil_mode, storage_order or the Indices output")
    win = _windows(x, a["kernel_shape"], a.get("strides", [1, 1]), a.get("dilations", [1, 1]),
                   _spatial_pads(node, a, 2), -np.inf)
    return win.max(axis=(4, 5))


def _average_pool(node, a, x):
    if a.get("ceil_mode", 0):
        raise _unsupported(node, "ceil_mode=1")
    pads = _spatial_pads(node, a, 2)
    kernel, strides = a["kernel_shape"], a.get("strides", [1, 1])
    total = _windows(x.astype(np.float64), kernel, strides, [1, 1], pads, 0.0).sum(axis=(4, 5))
    if a.get("count_include_pad", 0) or not any(pads):
        count = float(kernel[0] * kernel[1])
    else:  # divide by the number of real (unpadded) pixels in each window
        count = _windows(np.ones((1, 1) + x.shape[2:]), kernel, strides, [1, 1], pads, 0.0).sum(axis=(4, 5))
    return (total / count).astype(x.dtype)


def _batch_norm(node, a, x, scale, bias, mean, var):
    if a.get("training_mode", 0) or len(node.output) > 1:
        raise _unsupported(node, "training mode")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    f = lambda t: t.astype(np.float64).reshape(shape)  # noqa: E731
    y = (x.astype(np.float64) - f(mean)) / np.sqrt(f(var) + a.get("epsilon", 1e-5)) * f(scale) + f(bias)
    return y.astype(x.dtype)


def _gemm(node, a, A, B, C=None):
    A64 = A.astype(np.float64).T if a.get("transA", 0) else A.astype(np.float64)
    B64 = B.astype(np.float64).T if a.get("transB", 0) else B.astype(np.float64)
    y = a.get("alpha", 1.0) * (A64 @ B64)
    if C is not None:
        y = y + a.get("beta", 1.0) * C.astype(np.float64)
    return y.astype(np.result_type(A, B))


def _flatten(node, a, x):
    axis = a.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _reshape(node, a, x, shape):
    shape = [int(s) for s in shape]
    if not a.get("allowzero", 0):  # 0 copies the input's dimension
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _pad(node, a, x, pads=None, value=None):
    if a.get("mode", b"constant") not in (b"constant", "constant"):
        raise _unsupported(node, f"mode={a['mode']!r}")
    pads = [int(p) for p in (a["pads"] if pads is None else pads)]  # the attribute before opset 11
    if any(p < 0 for p in pads):
        raise _unsupported(node, "negative pads")
    fill = a.get("value", 0.0) if value is None or value.size == 0 else value.item()
    return np.pad(x, list(zip(pads[: x.ndim], pads[x.ndim:])), constant_values=fill)


def _constant(node, a):
    if "value" in a:
        return numpy_helper.to_array(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in a:
            return np.array(a[key], dtype=dtype)
    raise _unsupported(node, f"attributes {sorted(a)}")


def _slice(node, a, x, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else [int(v) for v in axes]
    steps = [1] * len(starts) if steps is None else [int(v) for v in steps]
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        if step != 1:
            raise _unsupported(node, f"step {step}")
        index[axis + x.ndim if axis < 0 else axis] = slice(int(start), int(end))  # Python clamps like ONNX
    return x[tuple(index)]


def _concat(node, a, *xs):
    return np.concatenate(xs, axis=a["axis"])


def _reduce_sum(node, a, x, axes=None):
    if axes is None or axes.size == 0:
        if a.get("noop_with_empty_axes", 0):
            return x
        axes = np.arange(x.ndim)
    y = x.astype(np.float64).sum(axis=tuple(int(v) for v in axes), keepdims=bool(a.get("keepdims", 1)))
    return y.astype(x.dtype)


def _binary(fn):
    def op(node, a, x, y):
        return fn(x.astype(np.float64), y.astype(np.float64)).astype(np.result_type(x, y))
    return op


_OPS: Dict[str, Callable] = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "Relu": lambda node, a, x: np.maximum(x, np.zeros((), dtype=x.dtype)),
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": lambda node, a, x: x.astype(np.float64).mean(axis=tuple(range(2, x.ndim)),
                                                                      keepdims=True).astype(x.dtype),
    "Flatten": _flatten,
    "Gemm": _gemm,
    "MatMul": _binary(np.matmul),
    "Add": _binary(np.add),
    "Reshape": _reshape,
    "Pad": _pad,
    "Constant": _constant,
    "Identity": lambda node, a, x: x,
    "Slice": _slice,
    "Concat": _concat,
    "ReduceSum": _reduce_sum,
}

SUPPORTED_OPS = tuple(sorted(_OPS))


def _load(model: Model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(os.fspath(model))
    raise ValueError(f"[dydnn.onnx_reference] expected an onnx.ModelProto, bytes or a path, got {type(model).__name__}")


def run(model_or_path: Model, input: np.ndarray) -> np.ndarray:
    """Evaluates an ONNX graph with one input and returns its first output.

    ``model_or_path`` is an ``onnx.ModelProto``, its serialized bytes or a file path;
    ``input`` is cast to the graph input's declared element type and must match its static
    dimensions (symbolic ones, such as the batch axis, accept any size). Raises
    ``NotImplementedError`` naming the op for an op outside ``SUPPORTED_OPS``, and
    ``ValueError`` for a graph with other than one runtime input or a mismatched input.
    """
    model = _load(model_or_path)
    graph = model.graph
    domains = {o.domain for o in model.opset_import if o.domain not in ("", "ai.onnx")}
    if domains:
        raise NotImplementedError(f"[dydnn.onnx_reference] opset domains {sorted(domains)} are not supported")
    values: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in values]
    if len(inputs) != 1:
        raise ValueError(f"[dydnn.onnx_reference] expected one graph input, got {[i.name for i in inputs]}")
    spec = inputs[0].type.tensor_type
    x = np.asarray(input).astype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[spec.elem_type], copy=False)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in spec.shape.dim]
    if x.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims, x.shape)):
        shown = [d if d is not None else "?" for d in dims]
        raise ValueError(f"[dydnn.onnx_reference] input '{inputs[0].name}' has shape {list(x.shape)}, "
                         f"the graph expects {shown}")
    values[inputs[0].name] = x

    # torch exports nodes in topological order, which ONNX requires (the checker enforces it).
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _OPS:
            raise NotImplementedError(f"[dydnn.onnx_reference] unsupported op '{node.op_type}' "
                                      f"(node '{node.name}'; supported: {', '.join(SUPPORTED_OPS)})")
        args = [values[name] if name else None for name in node.input]
        while args and args[-1] is None:  # trailing optional inputs left out
            args.pop()
        out = _OPS[node.op_type](node, _attrs(node), *args)
        values[node.output[0]] = np.asarray(out)
    return values[graph.output[0].name]
