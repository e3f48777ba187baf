#!/usr/bin/env python3
"""The runtime manager on this machine, for real (run by `make demo` after the training demo).

1. Profiles the demo's model file (build/demo/model.dydnn) into operating points: every
   config at 1 and 2 threads, latency at batch 1, top-1 on test images; stores them in the
   model file and draws the Pareto front.
2. Serves Fashion-MNIST test images back to back under the manager while the latency
   target steps over time, and a competing process (one busy loop per core) starts and
   stops on the same cores.
3. Reports the share of 100 ms windows that met their target where a feasible point
   existed (goal: >= 95%), the mean accuracy of the chosen points and the switches, and
   plots latency, target, config, threads and accuracy over time, with the competitor
   shaded.

Usage: python examples/runtime_demo.py [--model build/demo/model.dydnn] [--out build/demo] [--quick]
                                      [--docs docs/runtime_demo.md]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import torch

import dydnn
from dydnn import runtime

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.95


def busy_loop() -> None:
    while True:
        pass


class Competitor:
    """One busy process per core, started and stopped at given times of the run."""

    def __init__(self, start_s: float, stop_s: float):
        self.start_s, self.stop_s = start_s, stop_s
        self.processes = []
        self._timer = None

    def __enter__(self):
        t0 = time.perf_counter()

        def control():
            time.sleep(self.start_s)
            context = multiprocessing.get_context("fork")
            self.processes = [context.Process(target=busy_loop, daemon=True) for _ in range(os.cpu_count() or 1)]
            for p in self.processes:
                p.start()
            time.sleep(max(0.0, self.stop_s - (time.perf_counter() - t0)))
            self.stop()

        self._timer = threading.Thread(target=control, daemon=True)
        self._timer.start()
        return self

    def stop(self):
        for p in self.processes:
            p.kill()
            p.join()
        self.processes = []

    def __exit__(self, *exc):
        self._timer.join()
        self.stop()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "build" / "demo" / "model.dydnn"), help="a trained model file")
    p.add_argument("--out", default=None, help="output directory (default: the model's directory)")
    p.add_argument("--quick", action="store_true", help="an 8.4-second run with a short profile (the test's version)")
    p.add_argument("--docs", default=None,
                   help="also write a generated page here, its figures next to it in images/ (not with --quick)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model = Path(args.model)
    if not model.is_file():
        sys.exit(f"runtime_demo.py: {model} is missing: run `make demo` (or examples/demo.py) first")
    out = Path(args.out) if args.out else model.parent
    out.mkdir(parents=True, exist_ok=True)
    dydnn.retain_freed_memory()
    torch.set_num_threads(1)

    art = dydnn.load_artifact(model)
    images, labels = dydnn.data.fashion_mnist("test", limit=500 if args.quick else 2000, raw=True)
    print(f"== Profiling {model.name}: every config at 1 and 2 threads ({labels.shape[0]:,} test images for top-1)")
    table = runtime.profile(art, images, labels, threads=[1, 2], warmup=20, repetitions=50 if args.quick else 300,
                            progress=False)
    for row in table:
        m = row["metrics"]
        print(f"  {row['config']:<6} threads={row['knobs']['threads']:g}  p50 {m['latency_p50_us']:7.1f} us  "
              f"p95 {m['latency_p95_us']:7.1f} us  top-1 {100 * m['top1']:.2f}%")
    profiled = out / "model_profiled.dydnn"
    dydnn.save(art, profiled)
    runtime.plot_pareto(table, out / "runtime_pareto.png", title="Operating points on this machine")

    # Targets relative to the measured table, so the demo means the same on any machine.
    points = runtime.to_points(table, art.net)
    by_config = {}
    for p in points:
        name = p.name.split("@")[0]
        by_config[name] = min(by_config.get(name, float("inf")), p.latency_s)
    full, small = by_config[art.net.configs[-1].name], by_config[art.net.configs[0].name]
    # The quick run keeps 21 windows per phase: each target step or competitor change may cost a window
    # while the manager adapts, and shorter phases made that one window a sizeable share of the score.
    scale = 0.7 if args.quick else 1.0
    steps = [(0.0, 1.5 * full), (3.0, 1.15 * small), (6.0, 1.2 * full), (9.0, 2.0 * small)]
    trace = [{"time_s": scale * t, "max_latency_s": target, "min_accuracy": 0.0, "max_power_w": float("inf"),
              "objective": "max_accuracy"} for t, target in steps]
    duration = scale * 12.0
    competitor = (scale * 2.0, scale * 7.0)
    print(f"\n== Serving for {duration:.0f} s: targets " +
          ", ".join(f"{1e6 * r['max_latency_s']:.0f} us from {r['time_s']:.1f} s" for r in trace) +
          f"; a busy process per core from {competitor[0]:.1f} s to {competitor[1]:.1f} s")
    manager = runtime.Manager(art.net, table, runtime.SelectorOptions(min_dwell_s=0.05))
    inputs = art.normalization.apply(images)
    with Competitor(*competitor):
        result = runtime.serve_trace(manager, inputs, trace, duration_s=duration)
    windows = result["windows"]
    judged = [w for w in windows if w["feasible"]]
    met = result["met_fraction"]
    print(f"{result['requests']:,} requests, {result['switches']} switches, mean top-1 of the chosen points "
          f"{100 * result['mean_accuracy']:.2f}%")
    print(f"{sum(w['met'] for w in judged)}/{len(judged)} windows with a feasible point met their target: "
          f"{100 * met:.1f}% (goal >= {100 * GOAL:.0f}%: {'met' if met >= GOAL else 'MISSED'}); "
          f"{len(windows) - len(judged)} windows had no feasible point")

    manager.write_log(out / "runtime_log.csv")
    runtime.plot_run(result["log"], out / "runtime_run.png", windows=windows,
                     shade=[(competitor[0], competitor[1], "competing process")],
                     title="Runtime manager: latency target steps, a competing process from "
                           f"{competitor[0]:.0f} s to {competitor[1]:.0f} s")
    summary = {"requests": result["requests"], "switches": result["switches"], "mean_accuracy": result["mean_accuracy"],
               "met_fraction": met, "goal": GOAL, "windows": len(windows), "windows_feasible": len(judged),
               "trace": trace, "competitor_s": competitor, "table": table}
    (out / "runtime_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.docs and not args.quick:
        write_docs(Path(args.docs), out, summary, result, table)
    for name in ("model_profiled.dydnn", "runtime_pareto.png", "runtime_run.png", "runtime_log.csv",
                 "runtime_summary.json"):
        print(f"  wrote {out / name}")
    return 0


def write_docs(page: Path, out: Path, summary: dict, result: dict, table) -> None:
    """A generated page with this run's figures; the plots are copied into images/ beside it."""
    import shutil

    images = page.parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name in ("runtime_run.png", "runtime_pareto.png"):
        shutil.copy(out / name, images / name)
    rows = "\n".join(f"| {r['config']} | {r['knobs']['threads']:g} | {r['metrics']['latency_p50_us']:.1f} | "
                     f"{r['metrics']['latency_p95_us']:.1f} | {100 * r['metrics']['top1']:.2f}% |" for r in table)
    steps = ", ".join(f"{1e6 * r['max_latency_s']:.0f} us from {r['time_s']:g} s" for r in summary["trace"])
    above = sum(1 for e in result["log"] if e["measured_latency_s"] > 3 * max(r["max_latency_s"] for r in summary["trace"]))
    page.write_text(f"""# The runtime manager on this machine

Generated by `python examples/runtime_demo.py --docs docs/runtime_demo.md` (run by `make demo`
without `--docs`) on {time.strftime('%Y-%m-%d', time.gmtime())}; do not edit by hand.
[runtime.md](runtime.md) explains the set-up.

- Targets: {steps}; a busy process per core from {summary['competitor_s'][0]:g} s to {summary['competitor_s'][1]:g} s.
- **{round(summary['met_fraction'] * summary['windows_feasible'])}/{summary['windows_feasible']} windows with a
  feasible point met their target ({100 * summary['met_fraction']:.1f}%; goal >= {100 * GOAL:.0f}%)**;
  {summary['windows'] - summary['windows_feasible']} of {summary['windows']} windows had no feasible point.
- {summary['requests']:,} requests, {summary['switches']} switches, mean top-1 of the chosen points
  {100 * summary['mean_accuracy']:.2f}%; {above} requests took more than 3x the largest target (preempted).

![the run](images/runtime_run.png)

The profile the manager decided from:

| config | threads | p50 us | p95 us | top-1 |
|---|---:|---:|---:|---:|
{rows}

![operating points](images/runtime_pareto.png)
""")


if __name__ == "__main__":
    sys.exit(main())
