"""The model file (``dydnn.save`` / ``dydnn.load`` / ``dydnn.load_artifact``, docs/artifact.md).

- Round trips are bitwise, at every config of every shipped spec (and a ``prefix`` variant,
  whose BatchNorm keeps one statistics set per context), with non-trivial BN statistics;
  re-saving a loaded artifact gives the same bytes.
- Metadata, normalisation and operating points round-trip; what does not fit the net is refused.
- Bad files raise ``ValueError`` naming the path; a failed save keeps the previous file.
- Python -> C++ and C++ -> Python: the C++ deploy program (``dydnn_deploy``) gives logits
  bitwise equal to Python's for a file written by the other language.

The C++ programs are looked up in ``$DYDNN_BUILD_DIR`` (default: ``<repo>/build``); the
tests that need them fail, naming ``make build``, when they are missing.

Run: ``PYTHONPATH=python /usr/bin/python3 -m pytest tests/python/test_artifact.py -q``.
"""
from __future__ import annotations

import datetime
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import dydnn
from conftest import built_program
from dydnn.nn import DynamicNet

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = "examples/cpp/deploy/dydnn_deploy"
TRAIN_INCREMENTAL = "examples/train_incremental"

# Every shipped spec, plus the default spec with prefix connectivity and head (what static
# and sandwich training use): its BN groups keep one statistics set per context (`_at_AB`).
SPECS = dydnn.available_specs() + ["fashion_mnist_default:prefix"]


pytestmark = pytest.mark.usefixtures("keep_torch_state")


def make_spec(name: str) -> dydnn.NetSpec:
    base, _, variant = name.partition(":")
    spec = dydnn.NetSpec.load(str(dydnn.spec_path(base)))
    if variant == "prefix":
        spec = spec.replace(name=f"{base}_prefix", connectivity="prefix", head="prefix")
    return spec


def sample(spec, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, spec.in_channels, spec.height, spec.width, generator=generator)


def trained_net(name: str, seed: int = 0) -> DynamicNet:
    """A net with random weights and non-trivial BN statistics: a few training-mode forwards
    at every config on inputs whose mean and variance are far from 0 and 1."""
    torch.manual_seed(seed)
    net = DynamicNet(make_spec(name))
    g = torch.Generator().manual_seed(seed + 1)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            for c in net.configs:
                net(3.0 * sample(net.spec, 4, g) + 1.0, c)
    net.eval()
    return net


def normalization_for(spec) -> dydnn.train.Normalization:
    c = spec.in_channels
    return dydnn.train.Normalization([0.2 + 0.1 * k for k in range(c)], [0.3 + 0.05 * k for k in range(c)])


# -- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPECS)
def test_round_trip_is_bitwise_at_every_config(name, tmp_path):
    net = trained_net(name)
    stats = {k: v for k, v in net.state_dict().items() if "running_" in k}
    assert stats
    assert all(not torch.equal(v, torch.zeros_like(v)) and not torch.equal(v, torch.ones_like(v))
               for v in stats.values()), "the BN statistics should not be the initial ones"
    if name.endswith(":prefix"):
        assert any("_at_" in k for k in stats)  # switchable BN: one set per context

    path = tmp_path / "model.dydnn"
    dydnn.save(net, path, normalization=normalization_for(net.spec), method="incremental", dataset="random")
    loaded = dydnn.load(path)
    assert isinstance(loaded, DynamicNet)
    assert not loaded.training
    assert loaded.config == net.configs[-1]
    assert loaded.configs == net.configs
    assert loaded.spec.to_text() == net.spec.to_text()

    x = 2.0 * sample(net.spec, 3, torch.Generator().manual_seed(7)) - 0.5
    with torch.no_grad():
        for c in net.configs:
            assert torch.equal(net(x, c), loaded(x, c)), c.name
            assert torch.equal(net(x[:1], c), loaded(x[:1], c)), c.name

    before, after = net.state_dict(), loaded.state_dict()
    assert list(before) == list(after)
    for k in before:
        assert before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]), k

    # Re-saving the loaded artifact, to memory or to a file, gives the very same bytes.
    data = path.read_bytes()
    artifact = dydnn.load_artifact(path)
    assert dydnn.io.to_bytes(artifact) == data
    dydnn.save(artifact, tmp_path / "again.dydnn")
    assert (tmp_path / "again.dydnn").read_bytes() == data
    assert dydnn.io.to_bytes(dydnn.io.from_bytes(data)) == data


def test_metadata_normalisation_and_points_round_trip(tmp_path):
    net = trained_net("fashion_mnist_default")
    points = [{"config": [0, 1], "knobs": {"threads": 2}, "metrics": {"latency_p50_us": 310.5, "top1": 0.9}},
              {"config": "ABCD", "knobs": {"threads": 1, "cpu_khz": 1800000}, "metrics": {"energy_mj": 1.25}}]
    path = tmp_path / "model.dydnn"
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    dydnn.save(net, path, normalization=([0.28], [0.35]), method="incremental", dataset="fashion_mnist",
               accuracy={"AB": 0.5, (0, 1, 2): 0.625, dydnn.Config("A", 4): 0.25},
               extra={"run": "7", "licence": "MIT"}, operating_points=points)
    after = datetime.datetime.now(datetime.timezone.utc)
    a = dydnn.load_artifact(path)
    assert isinstance(a, dydnn.Artifact)
    m = a.metadata
    assert m["format_version"] == dydnn.io.FORMAT_VERSION == 1
    assert m["dydnn_version"] == dydnn.__version__
    assert m["torch_version"] == torch.__version__
    created = datetime.datetime.strptime(m["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert before <= created <= after
    assert (m["method"], m["dataset"]) == ("incremental", "fashion_mnist")
    assert m["accuracy"] == {"A": 0.25, "AB": 0.5, "ABC": 0.625}
    assert m["extra"] == {"run": "7", "licence": "MIT"}
    assert list(a.normalization.mean) == pytest.approx([0.28]) and list(a.normalization.std) == pytest.approx([0.35])
    assert a.operating_points == [
        {"config": "AB", "knobs": {"threads": 2.0}, "metrics": {"latency_p50_us": 310.5, "top1": 0.9}},
        {"config": "ABCD", "knobs": {"threads": 1.0, "cpu_khz": 1800000.0}, "metrics": {"energy_mj": 1.25}}]

    text = a.describe()
    for expected in ("fashion_mnist_default", "incremental", "62.50%", "latency_p50_us=310.5", "run = 7"):
        assert expected in text, (expected, text)

    # Nothing given: an identity normalisation, empty metadata, no points.
    bare = dydnn.io.from_bytes(dydnn.io.to_bytes(net))
    assert bare.normalization.identity and bare.operating_points == []
    assert bare.metadata["accuracy"] == {} and bare.metadata["method"] == "" and bare.metadata["extra"] == {}

    # A re-saved artifact keeps its metadata (creation time and the torch that trained it included).
    a.metadata["torch_version"] = "0.0.1"
    again = dydnn.io.from_bytes(dydnn.io.to_bytes(a))
    assert again.metadata == dict(m, torch_version="0.0.1")


def test_metadata_that_does_not_fit_is_refused(tmp_path):
    net = trained_net("fashion_mnist_default")
    with pytest.raises(ValueError, match="unknown metadata key 'bogus'.*extra"):
        dydnn.io.to_bytes(net, metadata={"bogus": "1"})
    with pytest.raises(ValueError, match="config B which the net does not have"):
        dydnn.io.to_bytes(net, accuracy={"B": 0.5})  # B alone is not an incremental config
    with pytest.raises(ValueError, match=r"accuracy 1\.5 of config A is out of range \(valid: 0\.\.1\)"):
        dydnn.io.to_bytes(net, accuracy={"A": 1.5})
    with pytest.raises(ValueError, match="2 means and 2 deviations but the net has 1 input channels"):
        dydnn.io.to_bytes(net, normalization=([0.1, 0.2], [1.0, 1.0]))
    with pytest.raises(ValueError, match="operating point 0 is at config C"):
        dydnn.io.to_bytes(net, operating_points=[{"config": "C"}])
    for obj in (object(), net.materialize("AB"), "model.dydnn"):
        with pytest.raises(TypeError, match="DynamicNet or a dydnn.io.Artifact"):
            dydnn.save(obj, tmp_path / "never-written.dydnn")
    assert list(tmp_path.iterdir()) == []


# -- bad files ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_bytes() -> bytes:
    return dydnn.io.to_bytes(trained_net("fashion_mnist_default"), normalization=([0.28], [0.35]),
                             accuracy={"A": 0.5})


def _weights_offset(data: bytes) -> int:
    """The middle of the TENS section (the weights), from the section table (docs/artifact.md)."""
    count = struct.unpack_from("<I", data, 12)[0]
    for k in range(count):
        tag, _crc, offset, size = struct.unpack_from("<4sIQQ", data, 32 + 24 * k)
        if tag == b"TENS":
            return offset + size // 2
    raise AssertionError("no TENS section")


def _flipped(data: bytes) -> bytes:
    b = bytearray(data)
    b[_weights_offset(data)] ^= 0x10
    return bytes(b)


@pytest.mark.parametrize("case,content,message", [
    ("empty", lambda good: b"", "the file is empty"),
    ("text", lambda good: b"dydnn-spec 1\nname x\n", "not a dydnn model file"),
    ("truncated", lambda good: good[:len(good) // 2], "truncated"),
    ("flipped", _flipped, "section TENS is corrupt"),
])
def test_bad_files_raise_value_error_naming_the_path(case, content, message, good_bytes, tmp_path):
    path = tmp_path / f"{case}.dydnn"
    path.write_bytes(content(good_bytes))
    for read in (dydnn.load, dydnn.load_artifact):
        with pytest.raises(ValueError) as info:
            read(path)
        assert str(path) in str(info.value) and message in str(info.value)
    with pytest.raises(ValueError, match=f"{case}.bytes.*{message}"):
        dydnn.io.from_bytes(content(good_bytes), f"{case}.bytes")


def test_a_directory_or_a_missing_file_raises_value_error(tmp_path):
    with pytest.raises(ValueError) as info:
        dydnn.load(tmp_path)
    assert str(tmp_path) in str(info.value) and "is a directory" in str(info.value)
    missing = tmp_path / "missing.dydnn"
    with pytest.raises(ValueError) as info:
        dydnn.load_artifact(missing)
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


_FAILING_SAVE = textwrap.dedent("""
    import resource, signal, sys
    import torch, dydnn
    torch.manual_seed(1)
    net = dydnn.nn.DynamicNet("fashion_mnist_fluid")  # another net, larger than the file there
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # write() fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        dydnn.save(net, sys.argv[1], method="nested")
    except ValueError as e:
        print("ValueError:", e)
        sys.exit(3)
    print("saved")
""")


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "model.dydnn"
    dydnn.save(trained_net("fashion_mnist_default"), path, extra={"run": "first"})
    before = path.read_bytes()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", _FAILING_SAVE, str(path)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "ValueError:" in p.stdout and str(path) in p.stdout
    assert "could not write" in p.stdout and "unchanged" in p.stdout
    assert path.read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.dydnn"]  # no .tmp file left
    assert dydnn.load_artifact(path).metadata["extra"] == {"run": "first"}


# -- Python <-> C++ -----------------------------------------------------------------------------
def write_idx(path: Path, images: torch.Tensor) -> None:
    """uint8 images [N, H, W] (or [N, C, H, W]) as an IDX file: magic 0x0000080<dims>, big-endian dims."""
    assert images.dtype == torch.uint8
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x00000800 + images.dim()))
        f.write(struct.pack(f">{images.dim()}I", *images.shape))
        f.write(images.contiguous().numpy().tobytes())


def random_images(spec, n: int, seed: int) -> torch.Tensor:
    """Raw uint8 images [N, H, W] for one input channel, [N, C, H, W] otherwise."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, spec.height, spec.width) if spec.in_channels == 1 else (n, spec.in_channels, spec.height, spec.width)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def deploy_logits(model: Path, images: torch.Tensor, tmp_path: Path, configs, classes: int) -> torch.Tensor:
    """Logits the C++ deploy program computes for every config, each request at batch 1:
    [len(configs), N, classes]."""
    idx, out = tmp_path / "images.idx", tmp_path / "logits.f32"
    write_idx(idx, images)
    p = subprocess.run([str(built_program(DEPLOY)), str(model), "--images", str(idx), "--all-configs", "--logits", str(out),
                        "--threads", "1", "--warmup", "0", "--quiet"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for c in configs:
        assert f"config {c.name}: {images.shape[0]} requests" in p.stdout
    raw = np.fromfile(out, dtype="<f4")
    assert raw.size == len(configs) * images.shape[0] * classes
    return torch.from_numpy(raw.copy()).view(len(configs), images.shape[0], classes)


def python_logits(artifact: dydnn.Artifact, images: torch.Tensor) -> torch.Tensor:
    """What the deploy program computes, in Python: each image normalised and run alone."""
    spec = artifact.net.spec
    x = images.reshape(-1, spec.in_channels, spec.height, spec.width).float().div(255.0)
    torch.set_num_threads(1)
    with torch.no_grad():
        return torch.stack([torch.cat([artifact.net(artifact.normalization.apply(x[i:i + 1]), c)
                                       for i in range(x.shape[0])]) for c in artifact.net.configs])


def _check_bitwise(cpp: torch.Tensor, py: torch.Tensor, configs) -> None:
    for k, c in enumerate(configs):
        assert torch.equal(cpp[k], py[k]), \
            f"config {c.name}: C++ and Python differ by {float((cpp[k] - py[k]).abs().max()):.3g}"


def _trained_with_trainer(name: str):
    """A net trained briefly by dydnn.train.Trainer on tiny random data: (net, trainer.normalization)."""
    torch.manual_seed(0)
    net = DynamicNet(make_spec(name))
    g = torch.Generator().manual_seed(2)
    spec = net.spec
    images = torch.randint(0, 256, (96, spec.in_channels, spec.height, spec.width), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, spec.classes, (96,), generator=g)
    method = "nested" if spec.connectivity == "fluid" else "incremental"
    trainer = dydnn.train.Trainer(net, method, epochs=1, batch_size=32, progress=False)
    trainer.fit((images, labels))
    assert not trainer.normalization.identity  # fitted on the uint8 images
    return net, trainer.normalization, method


@pytest.mark.parametrize("name", dydnn.available_specs())
def test_python_to_cpp_is_bitwise(name, tmp_path):
    built_program(DEPLOY)
    net, normalization, method = _trained_with_trainer(name)
    model = tmp_path / "model.dydnn"
    dydnn.save(net, model, normalization=normalization, method=method, dataset="random")
    artifact = dydnn.load_artifact(model)
    images = random_images(net.spec, 4, seed=5)
    cpp = deploy_logits(model, images, tmp_path, net.configs, net.spec.classes)
    _check_bitwise(cpp, python_logits(artifact, images), net.configs)
    # The file's net is the trained net: the same logits as the net that was saved (in eval
    # mode; the trainer leaves it in training mode, and the file does not record the mode).
    assert net.training and not artifact.net.training
    net.eval()
    _check_bitwise(cpp, python_logits(dydnn.Artifact(net, normalization), images), net.configs)


def test_cpp_to_python_is_bitwise(tmp_path):
    built_program(DEPLOY)
    program = built_program(TRAIN_INCREMENTAL)
    if not (dydnn.data.FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("train_incremental needs the Debian package dataset-fashion-mnist")
    run = tmp_path / "run"
    p = subprocess.run([str(program), "--limit", "200", "--epochs", "1", "--threads", "1", "--out", str(run)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    model = run / "model.dydnn"
    artifact = dydnn.load_artifact(model)
    m = artifact.metadata
    assert (m["method"], m["dataset"]) == ("incremental", "fashion_mnist")
    assert sorted(m["accuracy"]) == ["A", "AB", "ABC", "ABCD"] and all(0 <= v <= 1 for v in m["accuracy"].values())
    assert not artifact.normalization.identity
    assert not artifact.net.training

    net = artifact.net
    images = random_images(net.spec, 4, seed=6)
    cpp = deploy_logits(model, images, tmp_path, net.configs, net.spec.classes)
    _check_bitwise(cpp, python_logits(artifact, images), net.configs)
    # Python re-saves the C++ file byte for byte.
    assert dydnn.io.to_bytes(artifact) == model.read_bytes()
