"""The ``dydnn`` command (train, eval, plot, info, export), dydnn.plots and the demo's --quick mode.

Training runs on tiny Fashion-MNIST subsets (300 training, 200 test images, 1 epoch per
stage), so the whole file takes a few tens of seconds.

Run: ``PYTHONPATH=python /usr/bin/python3 -m pytest tests/python/test_cli.py -q``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dydnn
from dydnn import cli, plots

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--limit", "300", "--test-limit", "200", "--epochs", "1", "--no-latency", "--no-progress"]

pytestmark = [
    pytest.mark.skipif(not (dydnn.data.FASHION_MNIST_ROOT / "t10k-labels-idx1-ubyte.gz").is_file(),
                       reason="needs the Debian package dataset-fashion-mnist"),
    # cli.main runs in this process in some tests: keep torch's global RNG and thread count as they were.
    pytest.mark.usefixtures("keep_torch_state"),
]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python")] + [p for p in [env.get("PYTHONPATH")] if p])
    env["OMP_NUM_THREADS"] = "1"  # the test machine may be shared: one thread each
    return env


def run_dydnn(*args, timeout=120):
    """`python -m dydnn ARGS` in a fresh process: (exit status, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "dydnn", *map(str, args)], capture_output=True, text=True,
                       env=_env(), timeout=timeout, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs written by `python -m dydnn train`: {"incremental": DIR, "static": DIR (augmented)}."""
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for method, extra in (("incremental", []), ("static", ["--augment"])):
        out[method] = base / method
        code, stdout, stderr = run_dydnn("train", "--method", method, "--threads", "1", *extra, *TINY,
                                         "--out", out[method])
        assert code == 0, stderr
        assert "top-1" in stdout and "ABCD" in stdout
        assert str(out[method] / "model.dydnn") in stdout
    return out


def test_train_writes_a_run_directory(runs):
    doc = json.loads((runs["incremental"] / "results.json").read_text())
    assert doc["format"] == "dydnn-results/1"
    assert doc["method"] == "incremental" and doc["spec"] == "fashion_mnist_default"
    assert doc["dataset"] == "fashion_mnist"
    assert [e["config"] for e in doc["evaluations"]] == ["A", "AB", "ABC", "ABCD"]
    for e in doc["evaluations"]:
        assert e["examples"] == 200 and 0.0 <= e["top1"] <= 1.0 and e["macs"] > 0 and e["parameters"] > 0
        assert "latency_us" not in e  # --no-latency
    assert doc["options"]["epochs"] == [1] and doc["options"]["seed"] == 0
    assert [h["config"] for h in doc["history"]] == ["A", "AB", "ABC", "ABCD"]
    assert all(h["images"] == 270 and h["validation_top1"] is not None for h in doc["history"])  # 10% held out
    assert doc["run"]["limit"] == 300 and doc["run"]["test_limit"] == 200
    assert (runs["incremental"] / "checkpoint.pt").is_file()
    spec = dydnn.NetSpec.load(str(runs["incremental"] / "spec.spec"))
    assert spec.to_text() == doc["spec_text"]


def test_train_writes_a_loadable_model(runs):
    """model.dydnn holds the trained net, its normalisation and the per-config test top-1 of results.json."""
    import torch

    for method in ("incremental", "static"):
        doc = json.loads((runs[method] / "results.json").read_text())
        artifact = dydnn.load_artifact(runs[method] / "model.dydnn")
        m = artifact.metadata
        assert (m["method"], m["dataset"]) == (method, "fashion_mnist")
        assert m["accuracy"] == {e["config"]: e["top1"] for e in doc["evaluations"]}
        assert m["extra"] == {"spec": doc["spec"], "epochs": ",".join(["1"] * len(doc["evaluations"])), "seed": "0"}
        assert m["torch_version"] == torch.__version__
        assert artifact.net.spec.to_text() == doc["spec_text"]
        assert [c.name for c in artifact.net.configs] == [e["config"] for e in doc["evaluations"]]
        assert not artifact.net.training and not artifact.normalization.identity
        # The file alone reproduces the run's test results (so its normalisation is the trainer's).
        test = dydnn.data.fashion_mnist("test", limit=200, raw=True)
        again = dydnn.train.evaluate(artifact.net, test, normalization=artifact.normalization)
        assert [(e["config"], e["top1"]) for e in again] == [(e["config"], e["top1"]) for e in doc["evaluations"]]


def test_static_trains_the_dense_twin(runs):
    doc = json.loads((runs["static"] / "results.json").read_text())
    assert doc["method"] == "static" and doc["spec"] == "fashion_mnist_default_static"
    assert [e["config"] for e in doc["evaluations"]] == ["ABCD"]
    spec = dydnn.NetSpec.parse(doc["spec_text"])
    assert (spec.connectivity, spec.head) == ("prefix", "prefix")
    assert doc["options"]["augment"] is True  # --augment reaches the Trainer


@pytest.mark.parametrize("method", ["incremental", "static"])
def test_eval_reproduces_top1(runs, method, capsys, tmp_path):
    out = tmp_path / "eval.json"
    assert cli.main(["eval", str(runs[method]), "--no-latency", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "matches results.json for every config" in printed
    trained = json.loads((runs[method] / "results.json").read_text())
    again = json.loads(out.read_text())
    assert [(e["config"], e["top1"], e["examples"]) for e in again["evaluations"]] == \
        [(e["config"], e["top1"], e["examples"]) for e in trained["evaluations"]]


def test_plot_writes_a_png(runs, tmp_path):
    fig = tmp_path / "fig.png"
    code, stdout, stderr = run_dydnn("plot", runs["incremental"] / "results.json", runs["static"], "-o", fig)
    assert code == 0, stderr
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _error(capsys, *argv) -> str:
    """Runs the command in this process, expects exit status 2; returns its one-line message."""
    assert cli.main(list(map(str, argv))) == 2
    err = capsys.readouterr().err
    assert err.startswith("dydnn: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_unknown_method_lists_the_methods(capsys, tmp_path):
    err = _error(capsys, "train", "--method", "slimmable", "--out", tmp_path / "x")
    for method in dydnn.train.METHODS:
        assert method in err


def test_wrong_schedule_length_names_the_stages(capsys, tmp_path):
    err = _error(capsys, "train", "--epochs", "1,2", "--out", tmp_path / "x")
    assert "A, AB, ABC, ABCD" in err and "4" in err
    assert not (tmp_path / "x").exists()  # a rejected command leaves nothing behind


def test_missing_idx_file(capsys, tmp_path):
    labels = dydnn.data.FASHION_MNIST_ROOT / "t10k-labels-idx1-ubyte.gz"
    missing = tmp_path / "nope-images.idx.gz"
    err = _error(capsys, "train", "--train-images", missing, "--train-labels", labels,
                 "--test-images", missing, "--test-labels", labels, "--out", tmp_path / "x")
    assert str(missing) in err and "not found" in err


def test_other_user_errors(capsys, tmp_path):
    assert "unknown spec 'nope'" in _error(capsys, "train", "--spec", "nope", "--out", tmp_path / "x")
    assert "fluid" in _error(capsys, "train", "--fusion", "late", "--out", tmp_path / "x")
    assert "--train-labels" in _error(capsys, "train", "--train-images", "a.idx", "--out", tmp_path / "x")
    assert "no run directory" in _error(capsys, "eval", tmp_path / "missing")
    assert "not found" in _error(capsys, "plot", tmp_path / "missing.json", "-o", tmp_path / "f.png")


def test_existing_run_needs_resume_or_overwrite(runs, capsys):
    assert "--resume" in _error(capsys, "train", *TINY, "--out", runs["incremental"])


# -- info and export ------------------------------------------------------------------------
def test_info_prints_the_summary(runs, capsys):
    model = runs["incremental"] / "model.dydnn"
    assert cli.main(["info", str(model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{model} ({model.stat().st_size:,} bytes)"
    text = "\n".join(lines)
    accuracy = dydnn.load_artifact(model).metadata["accuracy"]
    for expected in ["dydnn model, format 1", "trained with incremental on fashion_mnist", "input normalised with mean",
                     "spec 'fashion_mnist_default'", "parameters", "MFLOPs", "top-1", "epochs = 1",
                     f"{100 * accuracy['AB']:.2f}%"]:
        assert expected in text, (expected, text)


def test_info_json(runs, tmp_path, capsys):
    model = runs["incremental"] / "model.dydnn"
    code, stdout, stderr = run_dydnn("info", model, "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    artifact = dydnn.load_artifact(model)
    net = artifact.net
    assert doc["path"] == str(model) and doc["bytes"] == model.stat().st_size and doc["spec"] == net.spec.name
    assert doc["metadata"] == artifact.metadata
    assert doc["configs"] == [{"name": c.name, "parameters": net.parameter_count(c), "macs": net.macs(c),
                               "top1": artifact.metadata["accuracy"][c.name]} for c in net.configs]
    assert doc["normalization"] == {"mean": list(artifact.normalization.mean), "std": list(artifact.normalization.std)}
    assert doc["operating_points"] == []

    # Accuracy for some configs only, operating points, no normalisation.
    other = tmp_path / "points.dydnn"
    point = {"config": "AB", "knobs": {"threads": 2.0}, "metrics": {"latency_p50_us": 310.5}}
    dydnn.save(net, other, accuracy={"A": 0.5}, operating_points=[point])
    assert cli.main(["info", str(other), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["top1"] for c in doc["configs"]] == [0.5, None, None, None]
    assert doc["operating_points"] == [point]
    assert doc["normalization"] == {"mean": [], "std": []}


@pytest.mark.parametrize("format,layout", [("torchscript", "blocks"), ("onnx", "dense")])
def test_export_writes_one_config(runs, tmp_path, capsys, format, layout):
    import torch

    model = runs["incremental"] / "model.dydnn"
    out = tmp_path / f"ab.{'pt' if format == 'torchscript' else 'onnx'}"
    assert cli.main(["export", str(model), "--config", "AB", "--format", format, "--layout", layout,
                     "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    net = dydnn.load(model)
    assert printed.count("\n") == 1
    for expected in (f"wrote {out}", f"{out.stat().st_size:,} bytes", f"{net.parameter_count('AB'):,} parameters",
                     "config AB", format, f"{layout} layout", "max abs difference"):
        assert expected in printed, (expected, printed)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = net(x, "AB")
    if format == "torchscript":
        got = torch.jit.load(str(out))(x)
    else:
        import onnx

        from dydnn import onnx_reference
        got = torch.from_numpy(onnx_reference.run(onnx.load(str(out)), x.numpy()))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left


def test_info_and_export_errors(runs, capsys, tmp_path):
    model = runs["incremental"] / "model.dydnn"
    out = tmp_path / "x.pt"
    missing = tmp_path / "missing.dydnn"
    assert str(missing) in _error(capsys, "info", missing) and "not found" in _error(capsys, "info", missing)
    assert "is a directory" in _error(capsys, "info", tmp_path)
    broken = tmp_path / "broken.dydnn"
    broken.write_bytes(model.read_bytes()[:1000])
    err = _error(capsys, "info", broken)
    assert str(broken) in err and "truncated" in err
    assert "not found" in _error(capsys, "export", missing, "--config", "AB", "--format", "onnx", "-o", out)
    err = _error(capsys, "export", model, "--config", "B", "--format", "onnx", "-o", out)
    assert "'B' is not valid" in err and "A, AB, ABC, ABCD" in err
    assert "A, AB, ABC, ABCD" in _error(capsys, "export", model, "--config", "XY", "--format", "onnx", "-o", out)
    assert "A, AB, ABC, ABCD" in _error(capsys, "export", model, "--format", "onnx", "-o", out)  # no --config
    err = _error(capsys, "export", model, "--config", "AB", "--format", "tflite", "-o", out)
    assert "torchscript" in err and "onnx" in err
    assert "blocks" in _error(capsys, "export", model, "--config", "AB", "--format", "onnx", "--layout", "x", "-o", out)
    assert "is a directory" in _error(capsys, "export", model, "--config", "AB", "--format", "onnx", "-o", tmp_path)
    assert "does not exist" in _error(capsys, "export", model, "--config", "AB", "--format", "onnx",
                                      "-o", tmp_path / "no" / "x.onnx")
    assert "-o/--output" in _error(capsys, "export", model, "--config", "AB", "--format", "onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.dydnn"]  # nothing written


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dydnn = "dydnn.cli:main"' in text


# -- plots ----------------------------------------------------------------------------------
def _doc(method, top1, latency=True):
    evaluations = []
    for k, (config, acc) in enumerate(zip(["A", "AB", "ABC"], top1)):
        e = {"config": config, "top1": acc, "loss": 1.0 - acc, "normalised_confidence": 1.0,
             "examples": 100, "macs": 100_000 * (k + 1), "parameters": 1000 * (k + 1)}
        if latency:
            e["latency_us"] = 50.0 * (k + 1)
        evaluations.append(e)
    return {"method": method, "spec": "toy", "dataset": "toy", "evaluations": evaluations}


def test_accuracy_vs_cost_has_two_panels(tmp_path):
    from matplotlib.figure import Figure

    path = tmp_path / "sub" / "acc.png"
    docs = [_doc("incremental", [0.7, 0.8, 0.85]), _doc("static", [0.6, 0.75, 0.9], latency=False)]
    fig = plots.accuracy_vs_cost(docs, path=path, title="toy")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    flops, latency = fig.axes
    assert len([line for line in flops.lines if len(line.get_xdata())]) == 2
    assert len([line for line in latency.lines if len(line.get_xdata())]) == 1  # static has no latency
    assert "no latency measured for: static" in latency.get_title()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["incremental", "static"]
    assert list(flops.lines[0].get_xdata()) == pytest.approx([0.2, 0.4, 0.6])  # MFLOPs = 2 x MACs / 1e6
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_table_lists_every_config():
    text = plots.table(_doc("incremental", [0.7, 0.8, 0.85]))
    lines = text.splitlines()
    assert len(lines) == 2 + 3 and "latency" in lines[0]
    assert lines[2].split()[:2] == ["A", "70.00%"] and lines[4].split()[-1] == "150.0"
    assert plots.table(_doc("static", [0.5, 0.6, 0.7], latency=False)).splitlines()[2].split()[-1] == "-"


# -- the demo ---------------------------------------------------------------------------------
def test_demo_quick(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--quick", "--threads", "1",
                        "--no-progress", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=_env(), timeout=180, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    for expected in ("ABCD", "top-1", "set + run", "demo finished"):
        assert expected in p.stdout
    doc = json.loads((tmp_path / "results.json").read_text())
    assert len(doc["evaluations"]) == 4 and all("latency_us" in e for e in doc["evaluations"])
    assert doc["latency_threads"] == 1
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "spec.spec").is_file()
    assert dydnn.load_artifact(tmp_path / "model.dydnn").metadata["accuracy"].keys() == {"A", "AB", "ABC", "ABCD"}


def test_profile_then_run(runs, tmp_path, capsys):
    model = tmp_path / "model.dydnn"
    shutil.copy(runs["incremental"] / "model.dydnn", model)
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,max_latency_us\n0,100000\n0.15,1\n")
    assert cli.main(["run", str(model), "--targets", str(trace)]) == 2
    assert "has no operating points: run 'dydnn profile" in capsys.readouterr().err
    assert cli.main(["profile", str(model), "--threads", "1", "--repetitions", "3", "--warmup", "1",
                     "--test-limit", "50", "--plot", str(tmp_path / "pareto.png")]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 operating points" in out and (tmp_path / "pareto.png").is_file()
    assert len(dydnn.load_artifact(model).operating_points) == 4
    assert cli.main(["run", str(model), "--targets", str(trace), "--duration", "0.3", "--test-limit", "20",
                     "--log", str(tmp_path / "log.csv"), "--plot", str(tmp_path / "run.png")]) == 0
    out = capsys.readouterr().out
    assert "windows with a feasible point met their target" in out
    assert (tmp_path / "log.csv").read_text().startswith("time_s,") and (tmp_path / "run.png").is_file()


def test_train_with_exit_weights(tmp_path):
    code, stdout, stderr = run_dydnn("train", "--spec", "fashion_mnist_exits", "--exit-weights", "0.5,1",
                                     "--threads", "1", *TINY, "--out", tmp_path / "exits")
    assert code == 0, stderr
    results = json.loads((tmp_path / "exits" / "results.json").read_text())
    assert results["options"]["exit_weights"] == [0.5, 1.0]
    assert dydnn.load(tmp_path / "exits" / "model.dydnn").num_exits == 2


def test_bad_exit_weights(capsys, tmp_path):
    assert "invalid exit weights 'x'" in _error(capsys, "train", "--exit-weights", "x", "--out", tmp_path / "x")
    err = _error(capsys, "train", "--exit-weights", "1,1", "--out", tmp_path / "x")
    assert "exit_weights: 2 values but net 'fashion_mnist_default' has 1 exit(s)" in err


def test_profile_with_exit_thresholds(tmp_path):
    code, _, stderr = run_dydnn("train", "--spec", "fashion_mnist_exits", "--threads", "1", *TINY,
                                "--out", tmp_path / "run")
    assert code == 0, stderr
    code, stdout, stderr = run_dydnn("profile", tmp_path / "run" / "model.dydnn", "--exit-thresholds", "0.5",
                                     "--repetitions", "3", "--warmup", "1", "--energy", "none", "--test-limit", "50",
                                     "-o", tmp_path / "profiled.dydnn")
    assert code == 0, stderr
    table = dydnn.load_artifact(tmp_path / "profiled.dydnn").operating_points
    assert sum("exit" in p["knobs"] for p in table) == 4
    assert sum("exit_threshold" in p["knobs"] for p in table) == 4
