"""dydnn.export: one config of a DynamicNet as a standalone TorchScript or ONNX file.

Every config of fashion_mnist_default and fashion_mnist_fluid is exported in both formats
and both layouts ("blocks": only the config's allowed blocks; "dense": materialize()).
TorchScript files are loaded in a subprocess that cannot import dydnn; ONNX files pass the
checker and are run by dydnn.onnx_reference (numpy). Differences are checked as
max |a - b| <= ATOL + RTOL * max |logits| (dydnn.export's constants); measured on these
randomized nets (logits up to ~7):

- dense TorchScript vs the eager materialized Sequential: bitwise (same ops, same kernels).
- TorchScript vs ``net(x, config)``: not bitwise at batch 1 (LibTorch's generic convolution
  instead of oneDNN) nor for the additive head's larger configs (bias summation order) nor,
  for blocks, the per-run convolutions; measured <= 1.1e-5, bound 1e-5 + 1e-4 * max|logit|.
- ONNX (BatchNorm folded into Conv: by the exporter for dense, by export_blocks for blocks)
  vs ``net(x, config)``: measured <= 1.1e-5, bound 1e-4 + 1e-4 * max|logit|.

Numbers stored (fashion_mnist_default, ABCD: parameter_count 43400, BN channels 32 + 64):

- blocks TorchScript: parameters + buffers = parameter_count + 2 x BN channels (each BN
  channel's running mean and variance; no num_batches_tracked): 43592.
- blocks ONNX: initializers = parameter_count - BN channels (a channel's gamma, beta, mean
  and variance fold into its scaled weights and one bias): 43304.
- dense: materialize()'s tensors, zero blocks included: 50476 (TorchScript), 50186 (ONNX).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import dydnn
from dydnn import export, onnx_reference
from conftest import built_program, calibrate_, randomize_

SPECS = ("fashion_mnist_default", "fashion_mnist_fluid")

LAYOUTS = ("blocks", "dense")

# What torch 1.13 emits at opset 13 for these specs (eval-mode BatchNorm folded into Conv).
# blocks adds a Slice (with three Constant inputs) per run that is not the whole input, a
# Concat of the output groups and a ReduceSum of the head's bias rows; Add (a sum of runs)
# does not occur here: every output group of these masks reads one run, an input prefix.
EMITTED_OPS = {
    "dense": {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"},
    "blocks": {"Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Slice", "Constant", "Concat", "ReduceSum"},
}

# Bytes beyond 4 x the stored numbers, measured on these specs. TorchScript: dense
# 21.1-21.6 KB (the scripted code of each module class, its debug pickles, zip headers,
# 64-byte record alignment, 8 bytes per int64 num_batches_tracked), blocks 13.4-20.2 KB
# (one class per distinct number of units or runs, so it grows with the layers' shapes).
# ONNX: dense 1.2 KB, blocks 1.4-4.1 KB (graph, names, protobuf framing; ~0.9 KB per Slice
# with its constants).
TORCHSCRIPT_OVERHEAD = 24 * 1024
ONNX_OVERHEAD = {"dense": 2 * 1024, "blocks": 5 * 1024}
# A dense file stores the materialized dense weights: under `incremental` the mask's zero
# blocks are stored too (+16% over parameter_count for fashion_mnist_default's ABCD).
DENSE_FACTOR = 1.2


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    out = {}
    for name in SPECS:
        net = dydnn.nn.DynamicNet(name)
        randomize_(net)  # non-trivial BN affine parameters and statistics
        calibrate_(net, torch.rand(16, 1, 28, 28), rounds=3)  # train-mode passes at every config, then eval
        out[name] = net
    return out


@pytest.fixture(scope="module")
def exported(nets, tmp_path_factory):
    """{(spec, config, format, layout): export result} for every config of both specs."""
    root = tmp_path_factory.mktemp("export")
    results = {}
    for name, net in nets.items():
        for config in net.configs:
            for layout in LAYOUTS:
                stem = root / f"{name}_{config.name}_{layout}"
                results[name, config.name, "torchscript", layout] = export.export_torchscript(
                    net, config, f"{stem}.pt", layout=layout)
                results[name, config.name, "onnx", layout] = export.export_onnx(net, config, f"{stem}.onnx",
                                                                                layout=layout)
    return results


def _bn_channels(net, config) -> int:
    """BatchNorm channels of the config (from materialize, independently of export)."""
    return sum(m.num_features for m in net.materialize(config) if isinstance(m, torch.nn.BatchNorm2d))


def _assert_within(got, expected, atol, rtol, what):
    assert got.shape == expected.shape, what
    diff, scale = (got - expected).abs().max().item(), expected.abs().max().item()
    assert diff <= atol + rtol * scale, f"{what}: max abs diff {diff:.3g}, max |logit| {scale:.3g}"


def _inputs():
    g = torch.Generator().manual_seed(1)
    return {batch: torch.rand(batch, 1, 28, 28, generator=g) for batch in (1, 5)}


_LOADER = r"""
import json, sys
# dydnn may be installed (CI's venv has it): make every import of it fail, so loading the
# files proves they need nothing of dydnn.
sys.modules["dydnn"] = None
import torch
jobs = json.loads(sys.argv[1])
inputs = torch.load(sys.argv[2])
out = {}
for key, path in jobs.items():
    model = torch.jit.load(path)
    with torch.no_grad():
        out[key] = {b: model(x) for b, x in inputs.items()}
    out[key]["numel"] = sum(t.numel() for t in list(model.parameters()) + list(model.buffers()))
assert sys.modules["dydnn"] is None and not any(m.startswith("dydnn.") for m in sys.modules)
torch.save(out, sys.argv[3])
"""


def test_torchscript_loads_without_dydnn(nets, exported, tmp_path):
    inputs = _inputs()
    torch.save(inputs, tmp_path / "inputs.pt")
    jobs = {f"{s}/{c}/{layout}": r["path"] for (s, c, f, layout), r in exported.items() if f == "torchscript"}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _LOADER, json.dumps(jobs), str(tmp_path / "inputs.pt"),
                           str(tmp_path / "out.pt")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = torch.load(tmp_path / "out.pt")
    for key in jobs:
        spec, config, layout = key.split("/")
        net = nets[spec]
        static = net.materialize(config)
        result = exported[spec, config, "torchscript", layout]
        if layout == "dense":
            assert loaded[key]["numel"] == sum(t.numel() for t in list(static.parameters()) + list(static.buffers()))
        else:  # the config's parameters and the running mean and variance of its BN channels
            assert loaded[key]["numel"] == net.parameter_count(config) + 2 * _bn_channels(net, config), key
        assert result["stored_numbers"] == loaded[key]["numel"] and result["method"] == "script"
        with torch.no_grad():
            for batch, x in inputs.items():
                got = loaded[key][batch]
                if layout == "dense":
                    assert torch.equal(got, static(x)), f"{key} batch {batch}: not bitwise equal to materialize()"
                _assert_within(got, net(x, config), export.TORCHSCRIPT_ATOL, export.TORCHSCRIPT_RTOL,
                               f"{key} batch {batch}")
        assert result["max_abs_diff"] < 1e-4  # export check, batch 4: measured <= 1.1e-5


@pytest.mark.parametrize("layout", LAYOUTS)
def test_torchscript_runs_in_plain_libtorch(nets, exported, tmp_path, layout):
    """examples/cpp/torchscript links torch only: the file runs there as in torch.jit.load."""
    net = nets["fashion_mnist_default"]
    path = exported["fashion_mnist_default", "AB", "torchscript", layout]["path"]
    x = _inputs()[5]
    x.numpy().astype("<f4").tofile(tmp_path / "input.f32")
    proc = subprocess.run([str(built_program("examples/run_torchscript")), path, str(tmp_path / "input.f32"),
                           *map(str, x.shape), str(tmp_path / "logits.f32")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    cpp = torch.from_numpy(np.fromfile(tmp_path / "logits.f32", dtype="<f4").reshape(x.shape[0], -1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what the program uses
    try:
        with torch.no_grad():
            assert torch.equal(cpp, torch.jit.load(path)(x))  # the same LibTorch kernels
            _assert_within(cpp, net(x, "AB"), export.TORCHSCRIPT_ATOL, export.TORCHSCRIPT_RTOL, "C++ TorchScript")
    finally:
        torch.set_num_threads(threads)


def test_onnx_checker_and_reference(nets, exported):
    inputs = _inputs()
    for (spec, config, fmt, layout), result in exported.items():
        if fmt != "onnx":
            continue
        model = onnx.load(result["path"])
        onnx.checker.check_model(model, full_check=True)
        assert {n.op_type for n in model.graph.node} <= EMITTED_OPS[layout]
        assert result["stored_numbers"] == sum(int(np.prod(t.dims)) for t in model.graph.initializer)
        assert all(t.data_type == TensorProto.FLOAT for t in model.graph.initializer)
        assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
        assert result["max_abs_diff"] < 1e-4  # export check, batch 4: measured <= 1.1e-5
        net = nets[spec]
        for batch, x in inputs.items():  # other batch sizes than the export's
            got = onnx_reference.run(result["path"], x.numpy())
            assert got.dtype == np.float32
            with torch.no_grad():
                _assert_within(torch.from_numpy(got), net(x, config), export.ONNX_ATOL, export.ONNX_RTOL,
                               f"{spec} {config} batch {batch}")


@pytest.mark.parametrize("spec", SPECS)
def test_results_and_file_sizes(nets, exported, spec):
    net = nets[spec]
    sizes = {}
    for config in net.configs:
        static = net.materialize(config)
        params = sum(p.numel() for p in static.parameters())
        buffers = sum(b.numel() for b in static.buffers())  # BN statistics and num_batches_tracked
        bn_channels = _bn_channels(net, config)
        count = net.parameter_count(config)
        stored = {  # (format, layout) -> numbers the file stores
            ("torchscript", "dense"): params + buffers,
            ("onnx", "dense"): params - bn_channels,
            ("torchscript", "blocks"): count + 2 * bn_channels,  # + running mean and variance per BN channel
            ("onnx", "blocks"): count - bn_channels,  # BN folded: gamma, beta, mean, var -> one bias per channel
        }
        for (fmt, layout), numbers in stored.items():
            overhead = TORCHSCRIPT_OVERHEAD if fmt == "torchscript" else ONNX_OVERHEAD[layout]
            r = exported[spec, config.name, fmt, layout]
            assert r["format"] == fmt and r["layout"] == layout and r["config"] == config.name
            assert r["bytes"] == os.path.getsize(r["path"]) and not os.path.exists(r["path"] + ".tmp")
            assert r["parameters"] == count and r["parameter_bytes"] == 4 * count
            assert r["stored_numbers"] == numbers, (fmt, layout, config.name)
            assert 4 * numbers <= r["bytes"] <= 4 * numbers + overhead, (fmt, layout, config.name, r["bytes"], numbers)
            assert r["bytes"] <= DENSE_FACTOR * r["parameter_bytes"] + overhead, (fmt, layout, config.name)
            sizes[fmt, layout, config.name] = r["bytes"]
    for fmt in ("torchscript", "onnx"):
        for layout in LAYOUTS:
            assert sizes[fmt, layout, "A"] < 0.3 * sizes[fmt, layout, "ABCD"], sizes
        # ABCD's zero blocks (6882 numbers, 27.5 KB) are gone from the blocks files.
        assert sizes[fmt, "blocks", "ABCD"] < sizes[fmt, "dense", "ABCD"] - 20 * 1024, sizes


def test_fluid_configs_by_star_name(nets, tmp_path):
    net = nets["fashion_mnist_fluid"]
    r = export.export(net, "ABC*", tmp_path / "abc.onnx", "onnx")
    assert r["config"] == "ABC" and r["parameters"] == net.parameter_count("ABC*") and r["layout"] == "blocks"


def test_bad_config_and_format(nets, tmp_path):
    net = nets["fashion_mnist_default"]
    for bad in ("AC", "E", [0, 2], None):
        for fn in (export.export_torchscript, export.export_onnx):
            with pytest.raises(ValueError, match="valid configs: A, AB, ABC, ABCD"):
                fn(net, bad, tmp_path / "m.bin")
    with pytest.raises(ValueError, match="unknown format 'tflite'.*torchscript, onnx"):
        export.export(net, "A", tmp_path / "m.tflite", "tflite")
    for fmt in export.FORMATS:
        with pytest.raises(ValueError, match="unknown layout 'sparse'.*blocks, dense"):
            export.export(net, "A", tmp_path / "m.bin", fmt, layout="sparse")
    assert os.listdir(tmp_path) == []


def test_unwritable_path_leaves_nothing(nets, tmp_path, monkeypatch):
    net = nets["fashion_mnist_default"]
    with pytest.raises(OSError, match="directory does not exist"):
        export.export_torchscript(net, "A", tmp_path / "missing" / "a.pt")
    with pytest.raises(OSError, match="is a directory"):
        export.export_onnx(net, "A", tmp_path)

    def failing_replace(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(export.os, "replace", failing_replace)  # the rename fails after the .tmp is written
    for fmt in export.FORMATS:
        with pytest.raises(PermissionError):
            export.export(net, "AB", tmp_path / f"ab.{fmt}", fmt)
    assert os.listdir(tmp_path) == []


def test_failed_check_writes_nothing(nets, tmp_path, monkeypatch):
    net = nets["fashion_mnist_default"]
    real = onnx_reference.run
    monkeypatch.setattr(onnx_reference, "run", lambda model, x: real(model, x) + 1e-2)
    with pytest.raises(ValueError, match=r"ONNX model of config AB differs from the net by 0.01 "):
        export.export_onnx(net, "AB", tmp_path / "ab.onnx")
    assert os.listdir(tmp_path) == []
    assert export.export_onnx(net, "AB", tmp_path / "ab.onnx", verify=False)["max_abs_diff"] is None


POOL_SPEC = """dydnn-spec 1
name pools
input 3 16 16
classes 5
groups 2
connectivity prefix
head prefix
conv 8 kernel=3 padding=1 bn relu avgpool=2
conv 8 kernel=3 padding=1 stride=2 bn relu maxpool=2
conv 8 kernel=3 padding=1 gap
linear 6 relu
"""


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_pooling_layers(tmp_path, layout):
    """avgpool (exported as Pad + AveragePool), strides, gap and a hidden linear."""
    net = dydnn.nn.DynamicNet(POOL_SPEC)
    randomize_(net)
    calibrate_(net, torch.rand(8, 3, 16, 16), rounds=2)
    x = torch.rand(3, 3, 16, 16)
    ops = set()
    for config in net.configs:
        r = export.export_onnx(net, config, tmp_path / f"{config.name}.onnx", layout=layout)
        ops |= {n.op_type for n in onnx.load(r["path"]).graph.node}
        with torch.no_grad():
            expected = net(x, config)
        _assert_within(torch.from_numpy(onnx_reference.run(r["path"], x.numpy())), expected, export.ONNX_ATOL,
                       export.ONNX_RTOL, f"pools {config.name}")
    assert {"Pad", "AveragePool", "GlobalAveragePool", "MaxPool", "Gemm"} <= ops
    if layout == "blocks":  # prefix: every output group reads all active inputs, so one call per layer
        assert not {"Slice", "Add"} & ops


# Islands {A, C} and {B, D}, no cross edges: at ABC and ABCD group C reads A and C but not
# the B between them, so its blocks are two runs (two Slices, two Convs, one Add); a conv
# without BN (per-group bias), strided, avgpool, a hidden linear over flattened groups.
RUNS_SPEC = """dydnn-spec 1
name runs
input 2 12 12
classes 5
groups 4
connectivity fluid islands=0,2/1,3 cross=off
head additive
conv 8 kernel=3 padding=1 stride=2 relu avgpool=2
conv 8 kernel=3 padding=1 bn relu
linear 8 relu
"""


def test_blocks_with_runs_of_groups(tmp_path):
    torch.manual_seed(2)
    net = dydnn.nn.DynamicNet(RUNS_SPEC)
    randomize_(net)
    calibrate_(net, torch.rand(8, 2, 12, 12), rounds=2)
    x = torch.rand(3, 2, 12, 12)
    bn_channels = {c.name: _bn_channels(net, c) for c in net.configs}
    for config in net.configs:
        ts = export.export_torchscript(net, config, tmp_path / f"{config.name}.pt")
        ox = export.export_onnx(net, config, tmp_path / f"{config.name}.onnx")
        assert ts["stored_numbers"] == net.parameter_count(config) + 2 * bn_channels[config.name]
        assert ox["stored_numbers"] == net.parameter_count(config) - bn_channels[config.name]
        with torch.no_grad():
            expected = net(x, config)
            _assert_within(torch.jit.load(ts["path"])(x), expected, export.TORCHSCRIPT_ATOL, export.TORCHSCRIPT_RTOL,
                           f"runs {config.name} TorchScript")
        _assert_within(torch.from_numpy(onnx_reference.run(ox["path"], x.numpy())), expected, export.ONNX_ATOL,
                       export.ONNX_RTOL, f"runs {config.name} ONNX")
        ops = [n.op_type for n in onnx.load(ox["path"]).graph.node]
        # Two grouped layers with two-run groups at ABC (C) and ABCD (C and D): one Add each.
        assert ops.count("Add") == {"ABC": 2, "ABCD": 4}.get(config.name, 0), (config.name, ops)


def _graph_model(nodes, initializers, in_shape, out_shape):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def test_reference_ops_torch_does_not_emit_here():
    """BatchNormalization, Reshape, Constant, MatMul, Add, Identity against torch."""
    rng = np.random.default_rng(0)
    c = 3
    stats = {k: rng.standard_normal(c).astype(np.float32) for k in ("scale", "bias", "mean")}
    stats["var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    w = rng.standard_normal((c * 16, 4)).astype(np.float32)
    nodes = [
        helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([0, -1], np.int64))),
        helper.make_node("Reshape", ["bn", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Identity", ["bias4"], ["b"]),
        helper.make_node("Add", ["mm", "b"], ["y"]),
    ]
    model = _graph_model(nodes, dict(stats, w=w, bias4=np.arange(4, dtype=np.float32)), ["N", c, 4, 4], ["N", 4])
    x = rng.standard_normal((2, c, 4, 4)).astype(np.float32)
    t = {k: torch.from_numpy(v) for k, v in stats.items()}
    bn = torch.nn.functional.batch_norm(torch.from_numpy(x), t["mean"], t["var"], t["scale"], t["bias"], eps=1e-3)
    expected = bn.reshape(2, -1) @ torch.from_numpy(w) + torch.arange(4.0)
    np.testing.assert_allclose(onnx_reference.run(model, x), expected.numpy(), atol=1e-5, rtol=1e-5)


def test_reference_rejects_unknown_ops_and_shapes():
    model = _graph_model([helper.make_node("Sigmoid", ["x"], ["y"])], {}, ["N", 2], ["N", 2])
    with pytest.raises(NotImplementedError, match="unsupported op 'Sigmoid'"):
        onnx_reference.run(model, np.zeros((1, 2), np.float32))
    model = _graph_model([helper.make_node("Relu", ["x"], ["y"])], {}, ["N", 2], ["N", 2])
    with pytest.raises(ValueError, match=r"shape \[1, 3\], the graph expects \['\?', 2\]"):
        onnx_reference.run(model, np.zeros((1, 3), np.float32))
