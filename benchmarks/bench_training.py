#!/usr/bin/env python3
"""Training throughput of each incremental stage of the default dynamic net (issue "Training", §6).

For every stage of ``dydnn.train.Trainer(net, "incremental")`` on ``fashion_mnist_default``
(A, then B with A frozen, then C with A and B frozen, ...), this times the C++ trainer's
optimiser step (``trainer._cpp.step``: forward, cross-entropy, backward, SGD) against a plain
PyTorch loop over the equivalent static net of the same active width (the structure of
``net.materialize(config)`` with fresh weights: Conv2d/BatchNorm2d/ReLU/MaxPool2d/Flatten/Linear),
with the same batch, the same SGD settings and the same intra-op threads. Both run on one
fixed random normalised batch, after warm-up steps, in interleaved timing rounds (dydnn,
torch, dydnn, torch, ...); the result is the median images/s of each side per stage and
their ratio. The goal is dydnn/torch >= 1.0 at every stage: a stage computes the frozen
groups without autograd and needs no weight gradients for them.

Writes ``<out>/training.json`` (machine, settings, per-stage numbers, goal), prints a markdown
table, and with ``--docs PATH`` writes a short generated page. ``--smoke`` runs a few steps
(CI: the ctest ``bench_training_smoke``); its numbers mean nothing.

    python3 benchmarks/bench_training.py --out build/bench --docs docs/training_benchmark.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

try:
    import dydnn  # noqa: F401
except ImportError:  # run from a checkout without an install: the package sources are in python/
    sys.path.insert(0, str(REPO / "python"))
    import dydnn  # noqa: F401

import torch
import torch.nn.functional as F

from dydnn import nn as dnn
from dydnn import train as dtrain

GOAL_RATIO = 1.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="fashion_mnist_default", help="shipped spec name or path (default: %(default)s)")
    p.add_argument("--out", default="build/bench", help="directory for training.json (default: %(default)s)")
    p.add_argument("--docs", default=None, help="also write a generated markdown page here (not with --smoke)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, torch.set_num_threads (default: 1)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per side and stage (default: 30; smoke: 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default: 20; smoke: 2)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per stage (default: 15; smoke: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch and the weights (default: %(default)s)")
    p.add_argument("--default-allocator", action="store_true",
                   help="do not call dydnn.retain_freed_memory() (by default it is called, as in bench_dynamic_net)")
    p.add_argument("--smoke", action="store_true", help="a handful of steps, to prove the script works (CI)")
    a = p.parse_args(argv)
    if a.smoke and a.docs:
        p.error("--docs writes measured numbers into the documentation; it cannot be combined with --smoke")
    defaults = (1, 2, 2) if a.smoke else (30, 20, 15)
    a.warmup = defaults[0] if a.warmup is None else a.warmup
    a.steps = defaults[1] if a.steps is None else a.steps
    a.rounds = defaults[2] if a.rounds is None else a.rounds
    for name in ("threads", "batch", "steps", "rounds"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1 (got {getattr(a, name)})")
    if a.warmup < 0:
        p.error(f"--warmup must be >= 0 (got {a.warmup})")
    return a


# -- machine --------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_average() -> list | None:
    """1, 5 and 15 minute load averages: how busy other processes kept the CPUs."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def machine_info(threads: int, retained: bool, load_before: list | None) -> dict:
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "requested_threads": threads,
        "onednn": bool(torch.backends.mkldnn.is_available()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dydnn_version": getattr(dydnn, "__version__", "unknown"),
        "git_commit": git_commit(),
        "retain_freed_memory": retained,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


# -- the two sides --------------------------------------------------------------------------
def static_equivalent(net: dnn.DynamicNet, config) -> torch.nn.Sequential:
    """The plain torch net of ``config``'s width: the layer structure of ``net.materialize``,
    every layer re-initialised with torch's defaults and in training mode."""
    model = net.materialize(config)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
    kinds = {type(m) for m in model}
    allowed = {torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.MaxPool2d, torch.nn.AvgPool2d,
               torch.nn.AdaptiveAvgPool2d, torch.nn.Flatten, torch.nn.Linear}
    assert kinds <= allowed, f"unexpected static layers {kinds - allowed}"
    return model.train()


def static_macs(model: torch.nn.Sequential, image_shape) -> int:
    """Multiply-accumulates of one image through the static net's convolutions and linears."""
    total = 0

    def count(m, inputs, output):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += output.shape[1] * output.shape[2] * output.shape[3] * m.in_channels // m.groups * k
        elif isinstance(m, torch.nn.Linear):
            total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(count) for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *image_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total


def zeros_at_pools(model: torch.nn.Sequential, x: torch.Tensor) -> list:
    """The fraction of exact zeros in the input of each max pooling of ``model`` on ``x``
    (the ReLU before it): torch's max pooling runs faster on mostly-zero inputs."""
    fractions = []

    def record(m, inputs):
        fractions.append(round(float((inputs[0] == 0).float().mean()), 4))

    hooks = [m.register_forward_pre_hook(record) for m in model if isinstance(m, torch.nn.MaxPool2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return fractions


def describe(model: torch.nn.Sequential) -> str:
    parts = []
    for m in model:
        if isinstance(m, torch.nn.Conv2d):
            parts.append(f"Conv2d({m.in_channels}->{m.out_channels}, {m.kernel_size[0]}x{m.kernel_size[1]})")
        elif isinstance(m, torch.nn.BatchNorm2d):
            parts.append(f"BN({m.num_features})")
        elif isinstance(m, torch.nn.Linear):
            parts.append(f"Linear({m.in_features}->{m.out_features})")
        elif isinstance(m, torch.nn.MaxPool2d):
            parts.append(f"MaxPool({m.kernel_size})")
        else:
            parts.append(type(m).__name__)
    return " - ".join(parts)


class TorchLoop:
    """The plain PyTorch training loop the dydnn stage is compared with; per step it does what
    ``Trainer.step`` does: zero the gradients, forward, cross-entropy, backward, SGD step, and
    read back the loss and the number of correct predictions."""

    def __init__(self, model: torch.nn.Module, lr: float, momentum: float, weight_decay: float):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    def step(self, x: torch.Tensor, y: torch.Tensor):
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            return loss.item() * x.shape[0], int((logits.argmax(1) == y).sum().item()), x.shape[0]


def timed(step, x, y, n: int) -> tuple[float, float, float]:
    """Wall seconds for ``n`` steps, the process's CPU seconds over them (all threads), and
    the loss of the last step (per image)."""
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(n):
        loss_sum, _, count = step(x, y)
    return time.perf_counter() - start, time.process_time() - cpu, loss_sum / count


# -- the benchmark --------------------------------------------------------------------------
def run(args) -> dict:
    load_before = load_average()
    torch.set_num_threads(args.threads)
    retained = False if args.default_allocator else bool(dydnn.retain_freed_memory())
    torch.manual_seed(args.seed)
    net = dnn.DynamicNet(args.spec)
    trainer = dtrain.Trainer(net, "incremental", epochs=1, lr=args.lr, cosine=False, momentum=args.momentum,
                             weight_decay=args.weight_decay, batch_size=args.batch, seed=args.seed, progress=False)
    cpp = trainer._cpp
    spec = net.spec
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, spec.in_channels, spec.height, spec.width, generator=gen)  # normalised: mean 0, std 1
    y = torch.randint(0, spec.classes, (args.batch,), generator=gen)

    stages = []
    for s, stage in enumerate(cpp.stages):
        assert cpp.stage == s and not cpp.finished
        if cpp.stage_is_empty():  # nothing new to train (not in the default net): as Trainer.fit does
            cpp.skip_stage()
            continue
        config = stage.config
        trainable = cpp.prepare()
        static = static_equivalent(net, config)
        loop = TorchLoop(static, args.lr, args.momentum, args.weight_decay)
        for _ in range(args.warmup):
            cpp.step(x, y)
            loop.step(x, y)
        dydnn_ips, torch_ips, losses, cpu_share = [], [], {"dydnn": [], "torch": []}, []
        for _ in range(args.rounds):
            seconds, cpu, loss = timed(cpp.step, x, y, args.steps)
            dydnn_ips.append(args.steps * args.batch / seconds)
            losses["dydnn"].append(loss)
            cpu_share.append(cpu / seconds)
            seconds, cpu, loss = timed(loop.step, x, y, args.steps)
            torch_ips.append(args.steps * args.batch / seconds)
            losses["torch"].append(loss)
            cpu_share.append(cpu / seconds)
        for side, values in losses.items():
            if not all(math.isfinite(v) for v in values):
                raise RuntimeError(f"stage {stage.name}: the {side} loss is not finite ({values})")
        d, t = statistics.median(dydnn_ips), statistics.median(torch_ips)
        paired = statistics.median(a / b for a, b in zip(dydnn_ips, torch_ips))
        convs = [m for m in static if isinstance(m, torch.nn.Conv2d)]
        stages.append({
            "stage": s,
            "config": stage.name,
            "groups": list(config.groups),
            "static_net": describe(static),
            "conv_channels": [m.out_channels for m in convs],
            "dydnn_trainable_parameters": sum(p.numel() for p in trainable),
            "static_parameters": sum(p.numel() for p in static.parameters()),
            "dydnn_macs_per_image": net.macs(config),  # the config's allowed blocks only
            "static_macs_per_image": static_macs(static, (spec.in_channels, spec.height, spec.width)),
            "dydnn_images_per_s": d,
            "torch_images_per_s": t,
            "ratio": d / t,
            "paired_ratio_median": paired,  # median over the rounds of dydnn / the torch round after it
            "dydnn_images_per_s_rounds": dydnn_ips,
            "torch_images_per_s_rounds": torch_ips,
            "last_loss": {"dydnn": losses["dydnn"][-1], "torch": losses["torch"][-1]},
            # CPU seconds / wall seconds while timing: about `threads` on an idle machine, less
            # when other processes took the cores (the absolute numbers then drop; the
            # interleaved rounds keep the ratio fair).
            "cpu_per_wall_median": statistics.median(cpu_share),
            # After training on the one batch (train mode: batch statistics, as in the steps).
            "torch_zero_fraction_at_max_pools": zeros_at_pools(static, x),
        })
        print(f"[bench_training] stage {s + 1}/{len(cpp.stages)} ({stage.name}): dydnn {d:.0f} img/s, "
              f"torch {t:.0f} img/s, ratio {d / t:.3f}", file=sys.stderr, flush=True)
        cpp.end_epoch(0.0, 0.0, None, 0, 0.0)  # the stage's one epoch is over: the next stage
    assert cpp.finished

    worst = min(stages, key=lambda r: r["ratio"])
    return {
        "format": "dydnn-bench-training/1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "smoke": args.smoke,
        "machine": machine_info(args.threads, retained, load_before),
        "settings": {
            "spec": spec.name,
            "method": "incremental",
            "batch_size": args.batch,
            "threads": args.threads,
            "optimizer": "sgd",
            "lr": args.lr,
            "momentum": args.momentum,
            "weight_decay": args.weight_decay,
            "warmup_steps": args.warmup,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "seed": args.seed,
            "input": "one fixed batch of N(0, 1) images (already normalised) and uniform random labels",
        },
        "stages": stages,
        "goal": {
            "description": "dydnn images/s / torch images/s >= 1.0 at every incremental stage",
            "ratio_goal": GOAL_RATIO,
            "worst_ratio": worst["ratio"],
            "worst_stage": worst["config"],
            "met": all(r["ratio"] >= GOAL_RATIO for r in stages),
            "failing_stages": [r["config"] for r in stages if r["ratio"] < GOAL_RATIO],
        },
    }


def command_line() -> str:
    argv = list(sys.argv)
    script = Path(argv[0]).resolve()
    try:
        argv[0] = str(script.relative_to(REPO))
    except ValueError:
        argv[0] = str(script)
    return "python3 " + " ".join(shlex.quote(a) for a in argv)


# -- output ---------------------------------------------------------------------------------
def markdown_table(doc: dict) -> str:
    rows = ["| stage | trains (frozen) | static net: conv channels | MACs/image dydnn / static "
            "| dydnn img/s | torch img/s | dydnn / torch | CPU/wall |",
            "|---|---|---|---|---|---|---|---|"]
    for r in doc["stages"]:
        frozen = r["config"][:-1] or "-"
        conv = " / ".join(str(c) for c in r["conv_channels"])
        rows.append(f"| {r['stage'] + 1} ({r['config']}) | {r['config'][-1]} ({frozen}) | {conv} | "
                    f"{r['dydnn_macs_per_image']} / {r['static_macs_per_image']} | "
                    f"{r['dydnn_images_per_s']:.0f} | {r['torch_images_per_s']:.0f} | **{r['ratio']:.3f}** | "
                    f"{r['cpu_per_wall_median']:.2f} |")
    g = doc["goal"]
    status = "met" if g["met"] else f"NOT met (stages {', '.join(g['failing_stages'])})"
    rows.append("")
    rows.append(f"Goal dydnn / torch >= {g['ratio_goal']:.1f} at every stage: **{status}**; "
                f"worst {g['worst_ratio']:.3f} at {g['worst_stage']}.")
    return "\n".join(rows)


def _load(values) -> str:
    return " / ".join(f"{v:.1f}" for v in values) if values else "unknown"


def docs_page(doc: dict) -> str:
    m, s = doc["machine"], doc["settings"]
    structure = "\n".join(f"- stage {r['stage'] + 1} ({r['config']}): `{r['static_net']}`" for r in doc["stages"])
    zeros = "; ".join(f"{r['config']} " + " / ".join(f"{z:.2f}" for z in r["torch_zero_fraction_at_max_pools"])
                      for r in doc["stages"])
    return f"""<!-- Generated by benchmarks/bench_training.py; do not edit: rerun the command below instead. -->
# Training throughput of the incremental stages

*This page is generated by `benchmarks/bench_training.py` (run by `make bench`); every number
below was measured by that run on {doc['date'][:10]} (UTC), none is typed.*

## What is measured

For each stage of incremental training of the `{s['spec']}` net
(`dydnn.train.Trainer(net, "incremental")`: stage A trains group A, stage AB trains group B
with A frozen, and so on), the throughput in images/s of dydnn's optimiser step
(`Trainer.step` in C++: forward, cross-entropy, backward, SGD) against a plain PyTorch
training loop over the equivalent static net of the same active width: `torch.nn.Sequential`
with fresh weights, `F.cross_entropy`, `torch.optim.SGD` with the same lr {s['lr']},
momentum {s['momentum']} and weight decay {s['weight_decay']}, `zero_grad(set_to_none=True)`,
and the loss and the correct predictions read back every step as `Trainer.step` does. The
static nets (the layer structure of `net.materialize(config)`):

{structure}

Both sides train on one fixed batch of {s['batch_size']} random N(0, 1) images (already
normalised) and random labels, with {s['threads']} intra-op thread(s), in one process. Per
stage: {s['warmup_steps']} warm-up steps on each side, then {s['rounds']} interleaved rounds
(dydnn, torch, dydnn, torch, ...) of {s['steps_per_round']} timed steps each. The table shows
the median images/s over the rounds of each side and their ratio.

Why dydnn can be faster than the static net of the same width: in stage s the groups trained
by earlier stages are frozen, so dydnn runs them without autograd (no weight gradients, no
saved activations) and computes gradients only for the new group's rows; and the
`incremental` connectivity has no blocks from later groups to earlier ones, so the
sub-network has fewer multiply-accumulates than the dense static net (column `MACs/image`).
Stage A has nothing frozen and no missing blocks: there both do the same work. The goal is
dydnn / torch >= {doc['goal']['ratio_goal']:.1f} at every stage.

## Command

```
{doc['command']}
```

`make bench` runs it with `--out build/bench --docs docs/training_benchmark.md`; the raw
numbers, every round included, are in `build/bench/training.json`. `--threads N` sets the
intra-op threads, `--smoke` runs a few steps (the ctest `bench_training_smoke`).

## Result

Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs; torch {m['torch_version']}
(oneDNN {'enabled' if m['onednn'] else 'disabled'}), {m['torch_threads']} intra-op thread(s);
Python {m['python']}; {'`dydnn.retain_freed_memory()` on' if m['retain_freed_memory'] else 'the default allocator'}.
Load average (1 / 5 / 15 min) before the run {_load(m.get('load_average_before'))}, after it
{_load(m.get('load_average_after'))}. Column `CPU/wall` is the process's CPU seconds per wall
second while timing (median over the rounds): about {s['threads']} when the benchmark had its
cores to itself, less when other processes shared them; then the absolute images/s drop and
vary between runs, while the interleaved rounds keep the ratio fair.

{markdown_table(doc)}

Note: torch's CPU `max_pool2d` (with indices, as training needs) runs faster the more of its
input is exactly zero. The static net pools after its ReLU; the fraction of zeros at its
pooling inputs after each stage of this run: {zeros}. dydnn pools before the ReLU (the two
commute), so its pooling input has no zeros and does not get that speed-up.
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    doc = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "training.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    print(markdown_table(doc))
    written = [str(path)]
    if args.docs:
        docs = Path(args.docs)
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(docs_page(doc))
        written.append(str(docs))
    print(f"\nwritten: {', '.join(written)}" + (" (smoke run: the numbers mean nothing)" if args.smoke else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
