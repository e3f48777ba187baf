"""Writes the seed corpus of the artifact fuzzer (fuzz/corpus/artifact/).

Small valid model files that cover every connectivity and head kind, metadata, a
normalisation and operating points, plus a few damaged ones. The fuzzer mutates them;
CI replays them under ASan/UBSan. Run: ``PYTHONPATH=python python3 fuzz/make_corpus.py``.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

import dydnn

SPEC = """dydnn-spec 1
name seed
input {channels} 6 6
classes 3
groups {groups}
connectivity {connectivity}
head {head}
conv 4 kernel=3 padding=1 {bn} relu maxpool=2
{second}
"""

VARIANTS = [
    dict(groups=2, connectivity="incremental", head="additive", bn="bn", channels=1, second="linear 4 relu"),
    dict(groups=2, connectivity="prefix", head="prefix", bn="bn", channels=2, second=""),
    dict(groups=2, connectivity="independent", head="per_config", bn="", channels=1, second="conv 4 kernel=1 gap"),
    dict(groups=4, connectivity="fluid islands=0,1/2,3 cross=on", head="per_config", bn="bn", channels=1,
         second="conv 8 kernel=3 padding=1 bn relu"),
    dict(groups=4, connectivity="fluid islands=0,1/2,3 cross=off", head="additive", bn="bn", channels=1,
         second=""),
]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    files = {}
    for k, variant in enumerate(VARIANTS):
        net = dydnn.nn.DynamicNet(SPEC.format(**variant))
        net.train()
        net(torch.randn(4, variant["channels"], 6, 6))
        net.eval()
        first = net.configs[0].name
        data = dydnn.io.to_bytes(
            net, method="incremental", dataset="seed", accuracy={first: 0.5}, extra={"variant": str(k)},
            normalization=([0.5] * variant["channels"], [0.25] * variant["channels"]) if k % 2 == 0 else None,
            operating_points=[{"config": first, "knobs": {"threads": 1}, "metrics": {"latency_p50_us": 10.0}}]
            if k % 2 == 1 else None,
            metadata={"created": "2026-01-01T00:00:00Z"})
        files[f"valid_{k}_{variant['connectivity'].split()[0]}_{variant['head']}"] = data
    seed = files["valid_0_incremental_additive"]
    files["empty"] = b""
    files["magic_only"] = seed[:8]
    files["header_only"] = seed[:32]
    files["truncated_half"] = seed[: len(seed) // 2]
    flipped = bytearray(seed)
    flipped[len(seed) - 7] ^= 0x10
    files["bit_flipped"] = bytes(flipped)
    for name, data in files.items():
        (out / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "corpus" / "artifact")
