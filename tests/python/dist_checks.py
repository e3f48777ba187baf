"""What the distributed serving tests share: the model files and the checks of a report.

``models`` (a fixture) writes one model file per connectivity the modes need, and the
images; ``check_answers`` checks that every request was answered exactly once and each
answer equals the single-process model's logits for the config that produced it.
"""
import gzip
import struct
from collections import Counter

import numpy as np
import pytest
import torch

import dydnn
from conftest import random_net, small_spec


def _write_idx(path, images: np.ndarray):
    n, h, w = images.shape
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x00000803, n, h, w))
        f.write(images.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model files (random weights, calibrated BN) for each connectivity the modes need."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("dist_models")
    out = {}
    for name, conn, head in [("cross", "fluid-cross", "per_config"), ("late", "fluid-nocross", "per_config"),
                             ("dynamic", "incremental", "additive"), ("static", "prefix", "prefix")]:
        net = random_net(small_spec(conn, head))
        path = d / f"{name}.dydnn"
        dydnn.save(net, path)
        out[name] = (path, net)
    images = np.random.default_rng(0).integers(0, 256, size=(120, 12, 12))
    _write_idx(d / "images.idx.gz", images)
    out["images"] = d / "images.idx.gz"
    out["x"] = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0
    return out


def _expected(net, x, config):
    with torch.no_grad():
        return net(x, dydnn.Config(config, 4))


def check_answers(report, models, name, logits_path, n):
    ids = [a[0] for a in report["answers"]]
    assert sorted(ids) == list(range(n)), "every request answered exactly once"
    logits = torch.from_numpy(np.fromfile(logits_path, dtype=np.float32).reshape(n, -1))
    net = models[name][1]
    by_config = {}
    for i, config, _, _ in report["answers"]:
        by_config.setdefault(config, []).append(i)
    for config, rows in by_config.items():
        x = models["x"][torch.tensor(rows) % len(models["x"])]  # --repeat serves the images again
        torch.testing.assert_close(logits[rows], _expected(net, x, config), rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"config {config}: {m}")
    return Counter(a[1] for a in report["answers"])


def events(report, kind, rank):
    return [e for e in report["events"] if e["kind"] == kind and e["rank"] == rank]
