#!/usr/bin/env python3
"""Distributed Fluid serving: throughput, bytes per inference, accuracy, and a failure timeline.

Trains four models on Fashion-MNIST with the same budget (``dydnn train``; by default every
training image, 10 epochs per stage, two models at a time: about 45 min on 2 cores; the models
under ``<out>/dist/models`` are reused while the budget is unchanged): Fluid with cross edges and
with late fusion (``--method nested``), the dense Static twin (``--method static``) and the
incremental Dynamic net (A, AB, ABC, ABCD). Then serves with
``dydnn_serve`` on loopback, a dispatcher and two device processes of one thread each:

* throughput (req/s) of Fluid HT, HA (cross, late), the channel-split Static DNN, the
  distributed Dynamic DNN, and one device alone (the HT island AB, two processes);
* bytes on the pairs per inference (headers, images, layer outputs, logits; relayed layer
  outputs count twice: device to dispatcher, dispatcher to device);
* top-1 on the test images of each mode's served answers, beside the trainer's own figure;
* a timeline: HT and HA with device 2 killed (``SIGKILL``) and restarted mid-stream:
  throughput and the answering config per 100 ms, the kill, its detection and the rejoin.

Writes ``<out>/dist.json``, ``<out>/dist_timeline.png``; with ``--docs DIR`` the generated
page ``DIR/dist_benchmark.md`` and ``DIR/dist_timeline.png``. ``--smoke`` (ctest
``bench_dist_smoke``) trains on a few hundred images and serves a few hundred requests.

    python3 benchmarks/bench_dist.py --out build/bench --docs docs
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

try:
    import dydnn  # noqa: F401
except ImportError:  # a checkout without an install: the package sources are in python/
    sys.path.insert(0, str(REPO / "python"))
    import dydnn  # noqa: F401

import numpy as np

from dydnn import data as ddata
from dydnn import serve
from dydnn.cli import positive_int

TEST_IMAGES = ddata.FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz"
TEST_LABELS = ddata.FASHION_MNIST_ROOT / "t10k-labels-idx1-ubyte.gz"

MODELS = {  # name: (spec, method, extra train arguments)
    "fluid_cross": ("fashion_mnist_fluid", "nested", ["--fusion", "cross"]),
    "fluid_late": ("fashion_mnist_fluid", "nested", ["--fusion", "late"]),
    "static": ("fashion_mnist_fluid", "static", []),
    "dynamic": ("fashion_mnist_default", "incremental", []),
}
COLORS = {"AB": "tab:blue", "CD": "tab:orange", "ABCD": "tab:green", "error": "tab:red"}
# (label, model, mode, devices)
THROUGHPUT_RUNS = [
    ("Fluid HT (AB or C*D*)", "fluid_cross", "ht", 2),
    ("Fluid HA cross", "fluid_cross", "ha", 2),
    ("Fluid HA late", "fluid_late", "ha", 2),
    ("Static, channel-split", "static", "static", 2),
    ("Dynamic (A..ABCD), distributed", "dynamic", "dynamic", 2),
    ("one device alone (AB)", "fluid_cross", "ht", 1),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="build/bench", help="directory for dist.json (default: %(default)s)")
    p.add_argument("--docs", default=None, help="also write dist_benchmark.md and dist_timeline.png here")
    p.add_argument("--train-limit", type=positive_int, default=None,
                   help="train on the first N training images (default: all 60,000, 10%% held out for validation)")
    p.add_argument("--epochs", type=positive_int, default=10,
                   help="epochs per training stage, every method (default: %(default)s, the budget of docs/results.md)")
    p.add_argument("--static-epochs", type=positive_int, default=None,
                   help="epochs of Static's single stage (default: --epochs, so every weight sees the data as "
                        "often as in Fluid's and Dynamic's stages)")
    p.add_argument("--jobs", type=positive_int, default=2, help="models trained at once, one thread each (default: %(default)s)")
    p.add_argument("--test-limit", type=positive_int, default=10000, help="test images served for accuracy (default: %(default)s)")
    p.add_argument("--requests", type=positive_int, default=12000, help="requests per throughput run (default: %(default)s)")
    p.add_argument("--timeline-seconds", type=float, default=6.0, help="length of a timeline run (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the benchmark runs")
    p.add_argument("--page-only", action="store_true",
                   help="only write the docs page again from <out>/dist.json (after a change to the page's text)")
    return p.parse_args(argv)


def train_command(run: Path, name: str, args) -> list:
    spec, method, extra = MODELS[name]
    epochs = args.static_epochs if method == "static" else args.epochs
    limit = [] if args.train_limit is None else ["--limit", str(args.train_limit)]
    return [sys.executable, "-m", "dydnn", "train", "--spec", spec, "--method", method, *extra, "--epochs", str(epochs),
            *limit, "--test-limit", str(args.test_limit), "--threads", "1", "--no-latency", "--no-progress",
            "--out", str(run), "--overwrite"]


def train_all(out: Path, args) -> dict:
    """Trains the models that ``out/models`` lacks (or holds for another budget), ``args.jobs`` at once."""
    pending = []
    for name in MODELS:
        run = out / "models" / name
        cmd = train_command(run, name, args)
        budget = run / "bench_train_command.json"
        if (run / "model.dydnn").is_file() and budget.is_file() and json.loads(budget.read_text()) == cmd[3:]:
            continue
        run.mkdir(parents=True, exist_ok=True)
        pending.append((name, run, cmd))
    running = []
    while pending or running:
        while pending and len(running) < args.jobs:
            name, run, cmd = pending.pop(0)
            print(f"[bench_dist] training {name}: {' '.join(cmd[3:])}", flush=True)
            running.append((name, run, cmd, subprocess.Popen(cmd, stdout=subprocess.DEVNULL)))
        done = [job for job in running if job[3].poll() is not None]
        if not done:  # a free slot goes to the next model as soon as any run ends, not the oldest
            time.sleep(1.0)
            continue
        for job in done:
            running.remove(job)
            name, run, cmd, proc = job
            if proc.returncode != 0:
                for other in running:
                    other[3].kill()
                raise SystemExit(f"[bench_dist] training {name} failed (exit {proc.returncode}): {' '.join(cmd)}")
            (run / "bench_train_command.json").write_text(json.dumps(cmd[3:]))
            print(f"[bench_dist] trained {name}", flush=True)
    models = {}
    for name, (spec, method, extra) in MODELS.items():
        run = out / "models" / name
        results = json.loads((run / "results.json").read_text())
        models[name] = {"path": str(run / "model.dydnn"), "spec": spec, "method": method, "extra": extra,
                        "epochs_per_stage": args.static_epochs if method == "static" else args.epochs,
                        "trainer_top1": {str(e["config"]): e["top1"] for e in results.get("evaluations", [])}}
    return models


def run_cluster(model: str, mode: str, devices: int, source, log_dir: Path, actions=(), logits=None) -> dict:
    cluster = serve.LocalCluster(model, mode=mode, devices=devices, threads=1, log_dir=log_dir)
    report = cluster.run(source, actions=actions, logits=logits, timeout=600)
    ids = [a[0] for a in report["answers"]]
    report["exactly_once"] = len(ids) == len(set(ids)) == report["requests"]
    return report


def top1(logits_path: Path, n: int, labels: np.ndarray) -> float:
    logits = np.fromfile(logits_path, dtype=np.float32).reshape(n, -1)
    return float((logits.argmax(1) == labels[:n]).mean())


def timeline(report: dict, bin_s: float = 0.1) -> dict:
    t = np.array([a[3] for a in report["answers"]])
    configs = sorted({a[1] for a in report["answers"]})
    edges = np.arange(0.0, t.max() + bin_s, bin_s)
    per = {c: np.histogram([a[3] for a in report["answers"] if a[1] == c], edges)[0].tolist() for c in configs}
    kill = next((a[0] for a in report["actions"] if a[1] == "kill"), None)
    restart = next((a[0] for a in report["actions"] if a[1] == "restart"), None)
    zero = report["unix_zero"]
    down = [e for e in report["events"] if e["kind"] == "down"]
    ups = [e for e in report["events"] if e["kind"] == "up"]
    rejoin = next((e["t"] for e in ups if down and e["t"] > down[0]["t"]), None)
    return {"bin_s": bin_s, "edges": edges.tolist(), "per_config": per,
            "kill_t": None if kill is None else kill - zero, "restart_t": None if restart is None else restart - zero,
            "detected_t": down[0]["t"] if down else None, "rejoined_t": rejoin,
            "detection_ms": None if (kill is None or not down) else 1000 * (zero + down[0]["t"] - kill),
            "how": down[0]["detail"] if down else None}


def plot(timelines: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(timelines), 1, figsize=(9, 3.2 * len(timelines)), squeeze=False)
    for ax, (label, tl) in zip(axes[:, 0], timelines.items()):
        edges = np.array(tl["edges"])
        bottom = np.zeros(len(edges) - 1)
        for c, counts in sorted(tl["per_config"].items()):
            rate = np.array(counts) / tl["bin_s"]
            ax.bar(edges[:-1], rate, width=tl["bin_s"], bottom=bottom, align="edge", label=f"answered by {c}",
                   color=COLORS.get(c, "tab:gray"))
            bottom += rate
        for key, style, name in [("kill_t", "r-", "kill -9 device 2"), ("detected_t", "k--", "loss detected"),
                                 ("rejoined_t", "g-", "device 2 rejoined")]:
            if tl[key] is not None:
                ax.axvline(tl[key], color=style[0], linestyle=style[1:], label=name)
        ax.set_title(label)
        ax.set_xlabel("time since the dispatcher started (s)")
        ax.set_ylabel("answers / s")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.page_only:
        doc = json.loads((Path(args.out) / "dist.json").read_text())
        (Path(args.docs or "docs") / "dist_benchmark.md").write_text(page(doc))
        return 0
    if args.smoke:
        args.train_limit, args.epochs, args.test_limit, args.requests, args.timeline_seconds = 300, 1, 200, 400, 2.0
    if args.static_epochs is None:
        args.static_epochs = args.epochs
    out = Path(args.out) / ("dist_smoke" if args.smoke else "dist")
    out.mkdir(parents=True, exist_ok=True)
    labels = ddata.read_idx(TEST_LABELS).astype(np.int64)
    models = train_all(out, args)

    throughput = []
    for label, model, mode, devices in THROUGHPUT_RUNS:
        r = run_cluster(models[model]["path"], mode, devices, ["--random", str(args.requests)], out / "logs" / mode)
        print(f"[bench_dist] {label}: {r['throughput']:.0f} req/s, {r['bytes_per_inference']:.0f} bytes/inference",
              flush=True)
        throughput.append({"label": label, "model": model, "mode": mode, "devices": devices,
                           "flow": r["flow"], "requests": r["requests"], "seconds": r["seconds"],
                           "throughput": r["throughput"], "bytes_per_inference": r["bytes_per_inference"],
                           "configs": r["configs"], "exactly_once": r["exactly_once"]})

    accuracy = []
    for label, model, mode in [("Fluid HA cross (ABC*D*)", "fluid_cross", "ha"), ("Fluid HA late (ABC*D*)", "fluid_late", "ha"),
                               ("Fluid HT (AB and C*D*)", "fluid_cross", "ht"), ("Static (ABCD)", "static", "static"),
                               ("Dynamic (ABCD)", "dynamic", "dynamic")]:
        lp = out / f"logits_{model}_{mode}.bin"
        r = run_cluster(models[model]["path"], mode, 2, ["--images", str(TEST_IMAGES), "--limit", str(args.test_limit)],
                        out / "logs" / f"acc_{mode}", logits=lp)
        accuracy.append({"label": label, "model": model, "mode": mode, "configs": r["configs"],
                         "served_top1": top1(lp, r["requests"], labels), "test_images": r["requests"],
                         "trainer_top1": models[model]["trainer_top1"]})
        print(f"[bench_dist] {label}: top-1 {accuracy[-1]['served_top1']:.4f}", flush=True)

    timelines = {}
    one = next(t for t in throughput if t["devices"] == 2 and t["mode"] == "ha" and t["model"] == "fluid_cross")
    for label, mode, rate in [("Fluid HT", "ht", throughput[0]["throughput"]), ("Fluid HA cross", "ha", one["throughput"])]:
        n = int(rate * args.timeline_seconds)
        s = args.timeline_seconds
        r = run_cluster(models["fluid_cross"]["path"], mode, 2, ["--random", str(max(n, 100))], out / "logs" / f"tl_{mode}",
                        actions=[(0.25 * s, "kill", 2), (0.4 * s, "restart", 2)])
        tl = timeline(r)
        tl.update(exactly_once=r["exactly_once"], requests=r["requests"], resubmitted=r["resubmitted"],
                  duplicates=r["duplicates"], configs=r["configs"])
        timelines[f"{label}: device 2 killed, then restarted"] = tl
        print(f"[bench_dist] timeline {label}: detected after {tl['detection_ms']:.1f} ms ({tl['how']}); "
              f"exactly once: {r['exactly_once']}", flush=True)
    plot(timelines, out / "dist_timeline.png")

    by = {t["mode"] + str(t["devices"]) + t["model"]: t["throughput"] for t in throughput}
    ht = by["ht2fluid_cross"]
    doc = {"generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "smoke": args.smoke,
           "train": {"limit": args.train_limit, "epochs_per_stage": args.epochs}, "models": models,
           "throughput": throughput, "accuracy": accuracy, "timelines": timelines,
           "ratios": {"ht_over_static": ht / by["static2static"], "ht_over_dynamic": ht / by["dynamic2dynamic"],
                      "ht_over_one_device": ht / by["ht1fluid_cross"]}}
    (out / "dist.json").write_text(json.dumps(doc, indent=1))
    shutil.copy(out / "dist.json", Path(args.out) / ("dist_smoke.json" if args.smoke else "dist.json"))
    print(f"[bench_dist] wrote {out / 'dist.json'}")
    if args.docs and not args.smoke:
        docs = Path(args.docs)
        shutil.copy(out / "dist_timeline.png", docs / "dist_timeline.png")
        (docs / "dist_benchmark.md").write_text(page(doc))
        print(f"[bench_dist] wrote {docs / 'dist_benchmark.md'}")
    return 0


def budget_images(limit) -> str:
    return "60,000 training images (54,000 trained, 6,000 held out)" if limit is None else f"first {limit:,} training images"


def page(doc: dict) -> str:
    r = doc["ratios"]
    lines = ["# Distributed serving benchmark (generated)", "",
             f"Generated by `python3 benchmarks/bench_dist.py --out build/bench --docs docs` (`make bench`) on "
             f"{doc['generated']}, {doc['machine']}. Do not edit: rerun it. Two device processes and a dispatcher "
             "on loopback, one intra-op thread per device; the numbers come from `build/bench/dist.json`.", "",
             "## Throughput and traffic", "",
             "| run | flow | req/s | bytes / inference | configs that answered | exactly once |",
             "| --- | --- | ---: | ---: | --- | --- |"]
    for t in doc["throughput"]:
        cfg = ", ".join(f"{k} {v}" for k, v in sorted(t["configs"].items()))
        flow = t["flow"] if t["mode"] != "ht" else "none (one device per request)"
        lines.append(f"| {t['label'].replace('|', 'or')} | {flow} | {t['throughput']:.0f} | {t['bytes_per_inference']:.0f} | {cfg} | "
                     f"{'yes' if t['exactly_once'] else 'NO'} |")
    lines += ["", f"HT / Static = **{r['ht_over_static']:.2f}x** (seed goal >= 2.5x); HT / Dynamic = "
              f"**{r['ht_over_dynamic']:.2f}x** (seed goal >= 2x). "
              + ("Both goals are met." if r["ht_over_static"] >= 2.5 and r["ht_over_dynamic"] >= 2 else
                 "The goals are **not** met here: see the notes below."), "",
              "## Accuracy of the served answers", "",
              f"Models trained on the same {budget_images(doc['train']['limit'])}: Fluid (`nested`, 6 stages) and "
              f"Dynamic (`incremental`, 4 stages) {doc['train']['epochs_per_stage']} epochs per stage, Static (one "
              f"stage) {doc['models']['static']['epochs_per_stage']} epochs, so every weight is trained for as many "
              "epochs (the budget of docs/results.md); SGD, learning rate 0.05 with a cosine decay in each stage, "
              "batch 64, seed 0. Top-1 of the answers the cluster served for the first "
              f"{doc['accuracy'][0]['test_images']:,} test images, beside what `dydnn train` reported for the same "
              "model file.", "",
              "| run | configs | served top-1 | trainer's top-1 (per config) |", "| --- | --- | ---: | --- |"]
    for a in doc["accuracy"]:
        cfg = ", ".join(f"{k} {v}" for k, v in sorted(a["configs"].items()))
        tr = ", ".join(f"{k} {v:.4f}" for k, v in a["trainer_top1"].items())
        lines.append(f"| {a['label']} | {cfg} | {a['served_top1']:.4f} | {tr} |")
    static = next(a for a in doc["accuracy"] if a["mode"] == "static")["served_top1"]
    for a in doc["accuracy"]:
        if a["mode"] == "ha":
            lines.append("")
            gap = 100 * (a['served_top1'] - static)
            lines.append(f"{a['label']} vs Static: {gap:+.2f} points (seed goal: within 1 point: "
                         f"{'met' if abs(gap) <= 1 else '**not met**'}).")
    lines += ["", "## A failure and a rejoin", "", "![timeline](dist_timeline.png)", "",
              "| run | kill -9 -> loss detected | seen by | resubmitted | duplicates dropped | exactly once |",
              "| --- | ---: | --- | ---: | ---: | --- |"]
    for label, tl in doc["timelines"].items():
        lines.append(f"| {label} | {tl['detection_ms']:.1f} ms | {tl['how']} | {tl['resubmitted']} | "
                     f"{tl['duplicates']} | {'yes' if tl['exactly_once'] else 'NO'} ({tl['requests']} requests) |")
    lines += ["", "## Notes", "",
              f"- HT with two devices served {r['ht_over_one_device']:.2f}x what one device alone (the dispatcher "
              "and one device process) served in this run; the seed's 2x needs a core (or a host) per device. This "
              "machine has 2 vCPUs (one physical core) for the dispatcher and both devices, shared with other "
              "builds and benchmarks while this ran, so the one-device figure and this ratio move a lot from run "
              "to run. HT's gain over Static and Dynamic does not depend on that: each HT request needs one device "
              "and one round trip, theirs need both devices and a layer-by-layer exchange.",
              "- Layer outputs go device -> dispatcher -> device (one pair per device), so cross fusion and the "
              "Static exchange pay them twice; a direct device-device pair would halve that traffic.",
              "- The accuracy goal is judged at the budget above. With a far smaller one (6,000 images, one epoch "
              "per stage) nested Fluid training had not converged and HA fell 3-4 points below Static: the frozen "
              "islands' weights are then those of undertrained standalone nets.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
