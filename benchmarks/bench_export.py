#!/usr/bin/env python3
"""Exported sub-networks: file size against the config's parameters, agreement, and latency.

For every config of a spec (default ``fashion_mnist_default``; weights random, BN statistics
from a few training-mode passes: sizes and timings do not depend on training), this exports
the config with ``dydnn.export`` in both layouts (``blocks``: only the config's allowed
blocks; ``dense``: ``materialize``'s dense weights) and both formats, and records the file
size, the numbers the file stores, ``net.parameter_count(config)``, and the largest logit
difference against the dynamic net that the export's own check measured. It then times
batch-1 inference on 1 thread (median of interleaved rounds): the dynamic net in C++
(``measure_latency``), and the TorchScript file loaded back as plain ``torch.jit.load``,
without and with ``torch.jit.freeze`` + ``optimize_for_inference``.

Writes ``<out>/export.json``, prints a markdown table and with ``--docs PATH`` a generated
page. ``--smoke`` (CI: ctest ``bench_export_smoke``) runs one config with few repetitions.

    python3 benchmarks/bench_export.py --out build/bench --docs docs/export_benchmark.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

try:
    import dydnn  # noqa: F401
except ImportError:  # a checkout without an install: the package sources are in python/
    sys.path.insert(0, str(REPO / "python"))
    import dydnn  # noqa: F401

import torch

from dydnn import export as dexport


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="fashion_mnist_default", help="shipped spec name or path (default: %(default)s)")
    p.add_argument("--out", default="build/bench", help="directory for export.json (default: %(default)s)")
    p.add_argument("--docs", default=None, help="also write a generated markdown page here (not with --smoke)")
    p.add_argument("--repetitions", type=int, default=300, help="timed calls per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="one config, a few calls: proves the benchmark runs")
    return p.parse_args(argv)


def median_us(run, x, repetitions: int) -> float:
    """Median wall time of ``run(x)`` in microseconds over ``repetitions`` calls."""
    samples = []
    for _ in range(repetitions):
        t0 = time.perf_counter()
        run(x)
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def time_models(net, config, models: dict, x, repetitions: int, rounds: int) -> dict:
    """Interleaved rounds (each model once per round, after a warm-up); the median of the round medians."""
    runs = {"dynamic net (C++)": lambda inp: net(inp, config)}
    runs.update({name: model for name, model in models.items()})
    per_round = {name: [] for name in runs}
    with torch.inference_mode():
        for run in runs.values():
            for _ in range(20):
                run(x)
        for _ in range(rounds):
            for name, run in runs.items():
                per_round[name].append(median_us(run, x, repetitions))
    return {name: statistics.median(values) for name, values in per_round.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.repetitions, args.rounds = 5, 1
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = dydnn.nn.DynamicNet(args.spec)
    net.train()
    with torch.no_grad():
        for config in net.configs:
            net(torch.randn(32, net.spec.in_channels, net.spec.height, net.spec.width), config)
    net.eval()
    configs = net.configs[:1] if args.smoke else net.configs
    x = torch.randn(1, net.spec.in_channels, net.spec.height, net.spec.width)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            row = {"config": config.name, "parameters": net.parameter_count(config), "exports": {}}
            models = {}
            for layout in dexport.LAYOUTS:
                for fmt in dexport.FORMATS:
                    path = Path(tmp) / f"{config.name}_{layout}.{'pt' if fmt == 'torchscript' else 'onnx'}"
                    r = dexport.export(net, config, path, fmt, layout=layout)
                    row["exports"][f"{fmt}/{layout}"] = {k: r[k] for k in ("bytes", "stored_numbers", "max_abs_diff")}
                    if fmt == "torchscript":
                        plain = torch.jit.load(str(path)).eval()
                        models[f"TorchScript {layout}"] = plain
                        models[f"TorchScript {layout}, frozen"] = torch.jit.optimize_for_inference(
                            torch.jit.freeze(torch.jit.load(str(path)).eval()))
            row["latency_us"] = time_models(net, config, models, x, args.repetitions, args.rounds)
            rows.append(row)
            print(f"{config.name}: done", file=sys.stderr)

    doc = {
        "benchmark": "export",
        "spec": net.spec.name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "dydnn": dydnn.__version__},
        "settings": {"threads": 1, "batch": 1, "repetitions": args.repetitions, "rounds": args.rounds,
                     "smoke": args.smoke},
        "tolerances": {"torchscript": [dexport.TORCHSCRIPT_ATOL, dexport.TORCHSCRIPT_RTOL],
                       "onnx": [dexport.ONNX_ATOL, dexport.ONNX_RTOL]},
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = markdown(doc)
    print(table)
    if args.docs and not args.smoke:
        Path(args.docs).write_text(page(doc, table))
    return 0


def markdown(doc) -> str:
    """Two tables: what each file stores (and its agreement), then batch-1 latency."""
    sizes = ["| config | parameters | TorchScript blocks | TorchScript dense | ONNX blocks | ONNX dense | max \\|diff\\| |",
             "|---|---|---|---|---|---|---|"]
    times = ["| config | dynamic net (C++) | TorchScript blocks | TorchScript dense | TorchScript blocks, frozen | "
             "TorchScript dense, frozen |", "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        e, t = r["exports"], r["latency_us"]
        cells = [f"{e[k]['stored_numbers']:,} / {e[k]['bytes']:,} B" for k in
                 ("torchscript/blocks", "torchscript/dense", "onnx/blocks", "onnx/dense")]
        diff = max(v["max_abs_diff"] for v in e.values())
        sizes.append(f"| {r['config']} | {r['parameters']:,} | " + " | ".join(cells) + f" | {diff:.1e} |")
        times.append(f"| {r['config']} | " + " | ".join(
            f"{t[k]:.0f}" for k in ("dynamic net (C++)", "TorchScript blocks", "TorchScript dense",
                                    "TorchScript blocks, frozen", "TorchScript dense, frozen")) + " |")
    return ("File contents (numbers stored / bytes):\n\n" + "\n".join(sizes)
            + "\n\nLatency at batch 1, 1 thread (microseconds, median):\n\n" + "\n".join(times))


def page(doc, table: str) -> str:
    m, s = doc["machine"], doc["settings"]
    return f"""# Exported sub-networks: size, agreement, latency

Generated by `python3 benchmarks/bench_export.py --out build/bench --docs docs/export_benchmark.md`
(part of `make bench`) on {doc['date']}: {m['platform']}, torch {m['torch']}, dydnn {m['dydnn']}.
Spec `{doc['spec']}`; {s['threads']} thread, batch {s['batch']}, median of {s['rounds']} interleaved rounds
of {s['repetitions']} calls. Do not edit by hand.

"numbers stored" counts every number in the file's tensors. For TorchScript blocks it is
the config's parameters plus the running mean and variance of its BN channels. For ONNX
blocks it is the parameters minus one per BN channel, because BN is folded into the
convolutions. Dense files also store the zero blocks the mask forbids. "max |diff|" is the
largest logit difference between any exported file and the dynamic net at that config, as
measured by the export's own check. The stated tolerances are TorchScript
{doc['tolerances']['torchscript'][0]:g} + {doc['tolerances']['torchscript'][1]:g} x max|logit| and ONNX
{doc['tolerances']['onnx'][0]:g} + {doc['tolerances']['onnx'][1]:g} x max|logit|.

{table}

"frozen" = `torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(path)))`. This
folds BN into the convolutions and picks the oneDNN kernels. A plain `torch.jit.load` runs
LibTorch's default CPU convolution, which is slow for these small layers at batch 1 (see
[kernels.md](kernels.md)).
"""


if __name__ == "__main__":
    sys.exit(main())
