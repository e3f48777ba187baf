#!/usr/bin/env python3
"""Depth on Fashion-MNIST: early exits against width-only configs, and anytime refinement (issue 7).

Trains ``fashion_mnist_exits`` (the default net with an exit after its first block)
incrementally with joint exit losses, then measures on the test set:

- accuracy against mean batch-1 latency for early exit at full width over a sweep of entropy
  thresholds, beside the width-only configs (A .. ABCD at the final head) and the 4 widths x 2
  exits grid (DualAdaptNet's 8 operating points);
- thresholds calibrated on a validation split (a target accuracy of each exit's answers);
- the exit head sequential vs on a second thread (``parallel_heads``) at batch 1;
- ``refine`` (config k -> k+1 on the same input, and exit 0 -> final head) against its budget:
  the MAC share of the new work x a fresh run + 10% of a fresh run, at batch 1 and 32.

Accuracy is on all test images (from every exit's logits, ``dydnn.exits.statistics``);
latency is the mean over the first ``--latency-images`` test images, each run alone in C++
(``DynamicNet.measure_adaptive``). Writes ``<out>/depth.json`` and ``<out>/depth.png``; with
``--docs PATH`` a generated page (and its plot beside it). ``--smoke``: tiny data, one epoch,
numbers mean nothing (the ctest ``bench_depth_smoke``). ``--only refine``: only the refinement
table, written to ``<out>/depth_refine.json`` (a minute instead of ten; no page, no plot).

    python3 benchmarks/bench_depth.py --out build/bench --docs docs/depth_benchmark.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import dydnn  # noqa: F401
except ImportError:  # a checkout without an install: the package sources are in python/
    sys.path.insert(0, str(REPO / "python"))
    import dydnn  # noqa: F401

import torch

from bench_training import command_line, load_average, machine_info
from dydnn import _C, exits

SPEC = "fashion_mnist_exits"
#: The seed's goal: >= 1.4x faster than the full net at < 1.5 points accuracy loss.
GOAL_SPEEDUP, GOAL_LOSS_POINTS = 1.4, 1.5
#: Entropy thresholds (nats; ln 10 = 2.30 is the most uncertain answer) of the sweep.
THRESHOLDS = [0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.2, 1.5]
#: Refinement's budget: the new work's MAC share of a fresh run, plus this share of a fresh run.
REFINE_SLACK = 0.10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="build/bench", help="directory for depth.json/png (default: %(default)s)")
    p.add_argument("--docs", default=None, help="also write a generated markdown page here (not with --smoke)")
    p.add_argument("--results-page", default="docs/results.md",
                   help="with --docs: the page whose depth section is regenerated (default: %(default)s)")
    p.add_argument("--epochs", default="3,3,2,2", help="epochs per incremental stage (default: %(default)s)")
    p.add_argument("--exit-weights", default="0.5,1", help="joint loss weight of each exit (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads while measuring (default: 1)")
    p.add_argument("--train-threads", type=int, default=1,
                   help="intra-op threads while training (default: 1; two stall when other processes share the CPUs)")
    p.add_argument("--latency-images", type=int, default=None, help="test images timed per point (default: 2000)")
    p.add_argument("--target-accuracy", type=float, default=0.95,
                   help="calibration: accuracy of the early exit's answers on validation data (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, batch order and split (default: 0)")
    p.add_argument("--model", default=None,
                   help="a trained model file to reuse (default: <out>/depth_model.dydnn, trained when missing)")
    p.add_argument("--retrain", action="store_true", help="train even when the model file exists")
    p.add_argument("--smoke", action="store_true", help="tiny data and one epoch, to prove the script works (CI)")
    p.add_argument("--page-only", action="store_true",
                   help="only write the --docs page (and results.md's section) again from <out>/depth.json")
    p.add_argument("--only", choices=["refine"], default=None,
                   help="measure only the refinement table (writes <out>/depth_refine.json)")
    a = p.parse_args(argv)
    if a.smoke and a.docs:
        p.error("--docs writes measured numbers into the documentation; it cannot be combined with --smoke")
    if a.only and a.docs:
        p.error("--docs needs every table; it cannot be combined with --only")
    try:
        a.epochs = [int(e) for e in a.epochs.split(",")]
        a.exit_weights = [float(w) for w in a.exit_weights.split(",")]
    except ValueError:
        p.error(f"--epochs/--exit-weights: comma-separated numbers (got {a.epochs!r}, {a.exit_weights!r})")
    if a.smoke:
        a.epochs = [1]
    if a.latency_images is None:
        a.latency_images = 50 if a.smoke else 2000
    for name in ("threads", "train_threads", "latency_images"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(a, name)})")
    if not 0 < a.target_accuracy <= 1:
        p.error(f"--target-accuracy {a.target_accuracy} is out of range (valid: 0 < value <= 1)")
    return a


def log(message: str) -> None:
    print(f"[bench_depth] {message}", file=sys.stderr, flush=True)


# -- the model --------------------------------------------------------------------------------
def load_data(smoke: bool, seed: int):
    """(train, validation, test) tensor pairs; uint8 training images, float test images."""
    images, labels = dydnn.data.fashion_mnist("train", raw=True, limit=600 if smoke else None)
    test = dydnn.data.fashion_mnist("test", raw=True, limit=200 if smoke else None)
    ti, tl, vi, vl = _C.split_dataset(images, labels, 0.1, seed)
    return (ti, tl), (vi, vl), test


def trained_net(args, train_data, validation):
    """The net and its normalisation: read from the model file, or trained and saved there."""
    path = Path(args.model) if args.model else Path(args.out) / ("depth_model_smoke.dydnn" if args.smoke else "depth_model.dydnn")
    if path.is_file() and not args.retrain:
        log(f"reusing the trained model {path} (--retrain to train again)")
        artifact = dydnn.load_artifact(path)
        return artifact.net, artifact.normalization, path, None
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.train_threads)
    net = dydnn.nn.DynamicNet(SPEC)
    # Checkpoints let an interrupted run continue (rerun the same command).
    checkpoints = path.parent / (path.stem + "_checkpoints")
    trainer = dydnn.train.Trainer(net, "incremental", epochs=args.epochs, lr=0.05, seed=args.seed,
                                  exit_weights=args.exit_weights, progress=not args.smoke,
                                  checkpoint_dir=None if args.smoke else checkpoints)
    start = time.perf_counter()
    trainer.fit(train_data, validation, resume=not args.smoke and not args.retrain)
    seconds = time.perf_counter() - start
    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dydnn.save(net, path, normalization=trainer.normalization, method="incremental", dataset="fashion-mnist")
    log(f"trained in {seconds:.0f} s; saved {path}")
    return net, trainer.normalization, path, seconds


# -- measurements -----------------------------------------------------------------------------
def mean_latency_us(net, images, config, thresholds, parallel=False) -> tuple[float, list]:
    out = net._impl.measure_adaptive(images, config, thresholds, "entropy", parallel, 20)
    lat = out["latencies_us"]
    return sum(lat) / len(lat), out["exits"]


def best_latencies(net, images, jobs: list, rounds: int) -> list:
    """The mean batch-1 latency of each (config, thresholds) job: the best of `rounds` rounds,
    each round over every job in turn, so that another process's burst hits one round of
    every point rather than all rounds of one point."""
    best = [float("inf")] * len(jobs)
    for r in range(rounds):
        for k, (config, thresholds) in enumerate(jobs):
            best[k] = min(best[k], mean_latency_us(net, images, config, thresholds)[0])
        log(f"latency round {r + 1}/{rounds} done")
    return best


def operating_points(net, norm, test, lat_images, rounds) -> list:
    """Every width at the final head and at exit 0 (fixed depth): accuracy and mean latency."""
    rows, jobs = [], []
    for config in net.configs:
        stats = exits.statistics(net, test, config=config, normalization=norm)
        for e in range(net.num_exits):
            forced = [1e9 if k == e else -1.0 for k in range(net.num_exits - 1)]  # everyone leaves at e
            rows.append({"config": config.name, "exit": e, "accuracy": sum(stats.correct[e]) / stats.count,
                         "macs": stats.macs[e]})
            jobs.append((config.name, forced))
    for row, latency in zip(rows, best_latencies(net, lat_images, jobs, rounds)):
        row["mean_latency_us"] = latency
        log(f"{row['config']} exit {row['exit']}: top-1 {row['accuracy']:.4f}, {latency:.1f} us")
    return rows


def threshold_sweep(net, norm, test, lat_images, config, rounds) -> tuple[list, object]:
    stats = exits.statistics(net, test, config=config, normalization=norm)
    rows = []
    for t in THRESHOLDS:
        outcome = exits.evaluate(stats, [t])
        rows.append({"threshold": t, "accuracy": outcome.accuracy, "exit_rates": list(outcome.exit_rates),
                     "mean_macs": outcome.mean_macs})
    latencies = best_latencies(net, lat_images, [(config, [t]) for t in THRESHOLDS], rounds)
    for row, latency in zip(rows, latencies):
        row["mean_latency_us"] = latency
        log(f"{config} entropy < {row['threshold']}: top-1 {row['accuracy']:.4f}, exit rate "
            f"{row['exit_rates'][0]:.3f}, {latency:.1f} us")
    return rows, stats


def calibration(net, norm, validation, test, lat_images, config, target) -> dict:
    val_stats = exits.statistics(net, validation, config=config, normalization=norm)
    calibrated = exits.calibrate(val_stats, "accuracy", target)
    test_stats = exits.statistics(net, test, config=config, normalization=norm)
    outcome = exits.evaluate(test_stats, calibrated.thresholds)
    latency, _ = mean_latency_us(net, lat_images, config, list(calibrated.thresholds))
    return {"config": config, "target_accuracy": target, "thresholds": list(calibrated.thresholds),
            "validation_exit_rates": list(calibrated.exit_rates), "validation_accuracy": calibrated.accuracy,
            "test_accuracy": outcome.accuracy, "test_exit_rates": list(outcome.exit_rates),
            "mean_latency_us": latency}


def parallel_heads(net, lat_images, config, threshold) -> dict:
    """Sequential vs parallel exit head, interleaved in rounds (the machine is shared)."""
    seq, par = [], []
    for _ in range(3):
        seq.append(mean_latency_us(net, lat_images, config, [threshold], parallel=False)[0])
        par.append(mean_latency_us(net, lat_images, config, [threshold], parallel=True)[0])
    s, p = min(seq), min(par)
    return {"config": config, "threshold": threshold, "sequential_us": s, "parallel_us": p,
            "winner": "sequential" if s <= p else "parallel", "rounds": 3}


def refine_rows(net, test, norm, repetitions: int, rounds: int) -> list:
    """Refine and fresh medians per step: the best of `rounds` rounds over every step in turn
    (as `best_latencies`), each refinement timed next to its fresh run."""
    rows = []
    configs = [c.name for c in net.configs]
    last = net.num_exits - 1
    steps = [(a, last, b, last) for a, b in zip(configs, configs[1:])] + [(configs[-1], 0, configs[-1], last)]
    images = norm.apply(test[0][:32])
    jobs = [(batch, step) for batch in (1, 32) for step in steps]
    best = {job: [float("inf"), float("inf")] for job in jobs}
    for _ in range(rounds):
        for batch, (a, ea, b, eb) in jobs:
            x = images[:batch].contiguous()
            times = best[(batch, (a, ea, b, eb))]
            times[0] = min(times[0], net._impl.measure_refine(x, a, ea, b, eb, 20, repetitions)["median_us"])
            times[1] = min(times[1], net._impl.measure_latency(x, b, 20, repetitions)["median_us"])
    for batch, (a, ea, b, eb) in jobs:
        refine, fresh = best[(batch, (a, ea, b, eb))]
        share = net._impl.refine_macs(a, ea, b, eb) / net._impl.macs(b)
        budget = share * fresh + REFINE_SLACK * fresh
        rows.append({"batch": batch, "from": f"{a}@{ea}", "to": f"{b}@{eb}", "refine_us": refine,
                     "fresh_us": fresh, "mac_share": share, "budget_us": budget, "met": refine <= budget})
        log(f"batch {batch} refine {a}@{ea} -> {b}@{eb}: {refine:.1f} us (budget {budget:.1f}, fresh {fresh:.1f})")
    return rows


ANYTIME_QUANTILE = 0.5  # AnytimeRunner's default (the median)
ANYTIME_HIGH_QUANTILE = 0.9
ANYTIME_BUDGETS_US = [60, 80, 100, 125, 150, 175, 200, 250, 300]


def anytime_sweep(net, images, labels, quantile) -> tuple:
    """One `AnytimeRunner` (default steps, expected time = `quantile` of a step's recent times),
    calibrated, then each image alone (batch 1) for each budget. Returns the runner, each step's
    calibrated median and per budget: top-1, the share answered within the budget, the mean time
    and where the runs stopped."""
    runner = dydnn.anytime.AnytimeRunner(net)
    runner.calibrate(images[:1], 50)
    runner.quantile = 0.5
    medians = list(runner.expected_us)
    runner.quantile = quantile
    rows = []
    for budget in ANYTIME_BUDGETS_US:
        correct = within = 0
        stopped = [0] * len(runner.steps)
        elapsed = 0.0
        for k in range(images.shape[0]):
            answer = runner.run(images[k:k + 1], budget)
            correct += int(answer.logits.argmax(1).item() == int(labels[k]))
            within += int(answer.elapsed_us <= budget)
            stopped[answer.step] += 1
            elapsed += answer.elapsed_us
        n = images.shape[0]
        rows.append({"budget_us": budget, "accuracy": correct / n, "within_budget": within / n,
                     "mean_elapsed_us": elapsed / n, "stopped_at": stopped})
        log(f"anytime (quantile {quantile:g}), budget {budget} us: top-1 {correct / n:.4f}, "
            f"within budget {within / n:.3f}")
    return runner, medians, rows


def anytime_budgets(net, images, labels, points) -> dict:
    """`AnytimeRunner` with its default steps and default quantile against the same with a higher
    quantile, per budget; beside the best fixed point (config x exit) whose measured mean latency
    fits the same budget."""
    runner, medians, rows = anytime_sweep(net, images, labels, ANYTIME_QUANTILE)
    _, _, high_rows = anytime_sweep(net, images, labels, ANYTIME_HIGH_QUANTILE)
    for r, m in zip(rows, high_rows):
        fitting = [p for p in points if p["mean_latency_us"] <= r["budget_us"]]
        fixed = max(fitting, key=lambda p: p["accuracy"]) if fitting else None
        r["best_fixed_point"] = fixed and {k: fixed[k] for k in ("config", "exit", "accuracy", "mean_latency_us")}
        r["high_quantile"] = {k: m[k] for k in ("accuracy", "within_budget", "mean_elapsed_us", "stopped_at")}
    return {"steps": [f"{c.name}@{e}" for c, e in runner.steps], "quantile": ANYTIME_QUANTILE,
            "high_quantile": ANYTIME_HIGH_QUANTILE,
            "calibrated_median_us": medians, "expected_us_after": list(runner.expected_us),
            "images": int(images.shape[0]), "rows": rows}


def run(args) -> dict:
    load_before = load_average()
    train_data, validation, test_raw = load_data(args.smoke, args.seed)
    net, norm, model_path, train_seconds = trained_net(args, train_data, validation)
    net.eval()
    torch.set_num_threads(args.threads)
    test = (test_raw[0].float() / 255, test_raw[1])
    lat_images = norm.apply(test_raw[0][: args.latency_images]).contiguous()
    full = net.configs[-1].name
    refine_reps, refine_rounds = (20, 1) if args.smoke else (200, 3)

    def header(kind: str) -> dict:
        return {"format": f"dydnn-bench-{kind}/1",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "command": command_line(), "machine": machine_info(args.threads, False, load_before)}

    if args.only == "refine":
        with torch.inference_mode():
            refine = refine_rows(net, test, norm, refine_reps, refine_rounds)
        return {**header("depth-refine"),
                "settings": {"spec": SPEC, "threads": args.threads, "smoke": args.smoke, "model": str(model_path)},
                "refine": refine, "refine_slack": REFINE_SLACK, "refine_repetitions": refine_reps,
                "refine_rounds": refine_rounds}
    with torch.inference_mode():
        rounds = 1 if args.smoke else 3
        points = operating_points(net, norm, test, lat_images, rounds)
        sweep, _ = threshold_sweep(net, norm, test, lat_images, full, rounds)
        calibrated = calibration(net, norm, validation, test, lat_images, full, args.target_accuracy)
        base = next(r for r in points if r["config"] == full and r["exit"] == net.num_exits - 1)
        for r in sweep:
            r["speedup"] = base["mean_latency_us"] / r["mean_latency_us"]
            r["loss_points"] = 100 * (base["accuracy"] - r["accuracy"])
        meeting = [r for r in sweep if r["loss_points"] < GOAL_LOSS_POINTS]
        best = max(meeting, key=lambda r: r["speedup"]) if meeting else None
        par = parallel_heads(net, lat_images, full, best["threshold"] if best else THRESHOLDS[len(THRESHOLDS) // 2])
        refine = refine_rows(net, test, norm, refine_reps, refine_rounds)
        anytime = anytime_budgets(net, norm.apply(test_raw[0]).contiguous(), test_raw[1], points)
    return {
        **header("depth"),
        "settings": {"spec": SPEC, "epochs": args.epochs, "exit_weights": args.exit_weights, "seed": args.seed,
                     "train_threads": args.train_threads, "threads": args.threads, "smoke": args.smoke,
                     "train_images": int(train_data[1].numel()), "validation_images": int(validation[1].numel()),
                     "test_images": int(test[1].numel()), "latency_images": int(lat_images.shape[0]),
                     "criterion": "entropy", "model": str(model_path), "train_seconds": train_seconds,
                     "latency_rounds": rounds},
        "baseline": base,
        "operating_points": points,
        "sweep": sweep,
        "goal": {"speedup": GOAL_SPEEDUP, "loss_points": GOAL_LOSS_POINTS,
                 "best": best, "met": bool(best and best["speedup"] >= GOAL_SPEEDUP)},
        "calibration": calibrated,
        "parallel_heads": par,
        "refine": refine,
        "refine_slack": REFINE_SLACK,
        "refine_repetitions": refine_reps,
        "refine_rounds": refine_rounds,
        "anytime": anytime,
    }


# -- output -----------------------------------------------------------------------------------
def plot(doc: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    finals = [r for r in doc["operating_points"] if r["exit"] == max(p["exit"] for p in doc["operating_points"])]
    early = [r for r in doc["operating_points"] if r["exit"] == 0]
    ax.plot([r["mean_latency_us"] for r in finals], [100 * r["accuracy"] for r in finals], "o-",
            label="width only (final head)")
    ax.plot([r["mean_latency_us"] for r in early], [100 * r["accuracy"] for r in early], "s--",
            label="width at exit 0 (fixed)")
    for r in finals + early:
        ax.annotate(f"{r['config']}@{r['exit']}", (r["mean_latency_us"], 100 * r["accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    ax.plot([r["mean_latency_us"] for r in doc["sweep"]], [100 * r["accuracy"] for r in doc["sweep"]], "^-",
            label="early exit at full width (entropy sweep)")
    if "anytime" in doc:
        rows = doc["anytime"]["rows"]
        ax.plot([r["mean_elapsed_us"] for r in rows], [100 * r["accuracy"] for r in rows], "d-",
                label="AnytimeRunner (budget sweep)")
    base = doc["baseline"]
    ax.axhline(100 * base["accuracy"] - GOAL_LOSS_POINTS, color="grey", lw=0.8, ls=":",
               label=f"full net - {GOAL_LOSS_POINTS} points")
    ax.axvline(base["mean_latency_us"] / GOAL_SPEEDUP, color="grey", lw=0.8, ls="-.",
               label=f"full net / {GOAL_SPEEDUP}x")
    ax.set_xlabel("mean latency per image at batch 1 (us)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{doc['settings']['spec']} on Fashion-MNIST")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def anytime_section(a, points) -> str:
    """The page's table of `AnytimeRunner` against fixed points, per budget."""
    if not a:
        return ""
    fresh = {f"{p['config']}@{p['exit']}": p["mean_latency_us"] for p in points}
    reach, total = [], 0.0
    for step, t in zip(a["steps"], a["calibrated_median_us"]):
        total += t
        if step in fresh:
            reach.append(f"{step} {total:.0f} us (fresh {fresh[step]:.0f} us)")
    rows = []
    for r in a["rows"]:
        f = r["best_fixed_point"]
        fixed = (f"{f['config']}@{f['exit']}: {100 * f['accuracy']:.2f}% ({f['mean_latency_us']:.1f} us)" if f
                 else "none fits")
        stops = ", ".join(f"{step} {count}" for step, count in zip(a["steps"], r["stopped_at"]) if count)
        m = r["high_quantile"]
        rows.append(f"| {r['budget_us']:g} | {100 * r['accuracy']:.2f} | {100 * r['within_budget']:.1f} | "
                    f"{r['mean_elapsed_us']:.1f} | {stops} | {100 * m['accuracy']:.2f} | {100 * m['within_budget']:.1f} | "
                    f"{fixed} |")
    table = "\n".join(rows)
    return f"""
### Answer now, improve if time allows

`dydnn.anytime.AnytimeRunner(net)` with its default steps ({' -> '.join(a['steps'])}), calibrated
once (`calibrate`, medians {', '.join(f'{t:.1f}' for t in a['calibrated_median_us'])} us per step), then
each of the {a['images']:,} test images alone with `run(image, budget_us)`: the first step always
answers, a later one runs while the elapsed time plus its expected time fits, a step's expected
time being the median of its last 15 times (the default). Beside it, a second runner expecting
the {a['high_quantile']:g} quantile (`quantile = {a['high_quantile']:g}`), and the most accurate fixed point
(config x exit, every image) whose mean latency fits the budget.

| budget (us) | top-1 (%) | answered within budget (%) | mean time (us) | stopped at (images) | q {a['high_quantile']:g}: top-1 (%) | q {a['high_quantile']:g}: within budget (%) | best fixed point within budget |
| --- | --- | --- | --- | --- | --- | --- | --- |
{table}

Reaching a step through the ones before it costs (the calibrated medians, summed): {'; '.join(reach)}.
Where the budget is known in advance, the fixed point that fits it is the better choice: each
refinement step pays the per-call costs of batch 1 (the table above). The runner is for budgets not
known in advance (a deadline that may come early, a user who may scroll away): it answers after its
first step, whatever happens later, and takes each further step only while it still fits.
"""


def docs_page(doc: dict, picture: str) -> str:
    m, s, g = doc["machine"], doc["settings"], doc["goal"]
    base = doc["baseline"]
    points = "\n".join(
        f"| {r['config']} | {r['exit']} | {100 * r['accuracy']:.2f} | {r['mean_latency_us']:.1f} | {r['macs']:,} |"
        for r in doc["operating_points"])
    sweep = "\n".join(
        f"| {r['threshold']:g} | {100 * r['exit_rates'][0]:.1f} | {100 * r['accuracy']:.2f} | {r['loss_points']:+.2f} | "
        f"{r['mean_latency_us']:.1f} | {r['speedup']:.2f}x |" for r in doc["sweep"])
    best = g["best"]
    goal_line = (f"**{best['speedup']:.2f}x** at entropy threshold {best['threshold']:g} ({best['loss_points']:+.2f} "
                 f"points), goal {'met' if g['met'] else 'not met'}" if best else "no threshold stays within the loss")
    c = doc["calibration"]
    p = doc["parallel_heads"]
    refine = "\n".join(
        f"| {r['batch']} | {r['from']} -> {r['to']} | {r['refine_us']:.1f} | {r['fresh_us']:.1f} | "
        f"{100 * r['mac_share']:.1f}% | {r['budget_us']:.1f} | {'yes' if r['met'] else 'no'} |" for r in doc["refine"])
    train = f"{s['train_seconds']:.0f} s" if s["train_seconds"] else "reused from an earlier run"
    return f"""<!-- Generated by benchmarks/bench_depth.py; do not edit: rerun the command below instead. -->
# Depth benchmark: early exits, width x exit points, anytime refinement

*This page is generated by `benchmarks/bench_depth.py` (run by `make bench`); every number
below was measured by that run on {doc['date'][:10]} (UTC), none is typed. What the API does:
[depth.md](depth.md).*

The net: `{s['spec']}` (the default Fashion-MNIST net with an exit after its first block),
trained incrementally (epochs {','.join(map(str, s['epochs']))} per stage A, AB, ABC, ABCD) with
the joint loss `{' + '.join(f'{w:g} x exit {e}' for e, w in enumerate(s['exit_weights']))}` on
{s['train_images']:,} training images ({train}); {s['validation_images']:,} held out for
calibration. Accuracy: all {s['test_images']:,} test images. Latency: the mean over the first
{s['latency_images']:,} test images, each run alone (batch 1) through `forward_adaptive` in C++
(the best of {s['latency_rounds']} rounds over all points in turn), {s['threads']} intra-op thread(s), on {m['cpu_model']} ({m['logical_cpus']} logical CPUs, shared;
load average before {m['load_average_before']}).

![accuracy against latency]({picture})

## Early exit against the full net

Full net (ABCD, final head): top-1 {100 * base['accuracy']:.2f}%, {base['mean_latency_us']:.1f} us.
Goal (the seed): >= {GOAL_SPEEDUP}x faster at < {GOAL_LOSS_POINTS} points loss. Best within the
loss: {goal_line}.

| entropy threshold | exit 0 rate (%) | top-1 (%) | loss (points) | mean latency (us) | speed-up |
| --- | --- | --- | --- | --- | --- |
{sweep}

## Width x exit operating points (4 widths x 2 exits)

Every sample leaves at the given exit (fixed depth); MACs per image.

| config | exit | top-1 (%) | mean latency (us) | MACs |
| --- | --- | --- | --- | --- |
{points}

## Calibrated thresholds

Calibrated on the validation split so that exit 0's answers are {100 * c['target_accuracy']:.0f}%
accurate (`dydnn.exits.calibrate(stats, "accuracy", {c['target_accuracy']:g})`): threshold
{', '.join(f'{t:.3f}' for t in c['thresholds'])}; validation exit rate
{100 * c['validation_exit_rates'][0]:.1f}%. On the test set: exit rate {100 * c['test_exit_rates'][0]:.1f}%,
top-1 {100 * c['test_accuracy']:.2f}%, {c['mean_latency_us']:.1f} us.

## Exit head: sequential or on a second thread

At {p['config']}, threshold {p['threshold']:g}, batch 1 (best of {p['rounds']} interleaved rounds):
sequential {p['sequential_us']:.1f} us, parallel (`parallel_heads=True`: the head on a second
thread while this one computes the next block) {p['parallel_us']:.1f} us: **{p['winner']}** wins.

## Anytime refinement

`refine` from a cached answer (config@exit) to a wider or deeper one, against a fresh run
of the target; budget = MAC share of the new work x fresh + {100 * doc['refine_slack']:.0f}% of fresh.
Medians of {doc['refine_repetitions']} calls, the best of {doc['refine_rounds']} rounds over all steps in turn (each
refinement timed next to its fresh run).

| batch | refine | refine (us) | fresh (us) | MAC share | budget (us) | within budget |
| --- | --- | --- | --- | --- | --- | --- |
{refine}
{anytime_section(doc.get("anytime"), doc["operating_points"])}
Reproduce (trains the model when `{s['model']}` is missing: 5 to 20 min on 2 shared cores):

    {doc['command']}
"""


DEPTH_BEGIN, DEPTH_END = "<!-- depth:begin -->", "<!-- depth:end -->"


def results_section(doc: dict, page: str) -> str:
    """The depth section of docs/results.md: the headline numbers, linking to the full page."""
    base, g, c = doc["baseline"], doc["goal"], doc["calibration"]
    rows = "\n".join(
        f"| early exit, entropy < {r['threshold']:g} | {100 * r['accuracy']:.2f} | {r['loss_points']:+.2f} | "
        f"{r['mean_latency_us']:.1f} | {r['speedup']:.2f}x |" for r in doc["sweep"])
    widths = "\n".join(
        f"| width only: {r['config']} | {100 * r['accuracy']:.2f} | {100 * (base['accuracy'] - r['accuracy']):+.2f} | "
        f"{r['mean_latency_us']:.1f} | {base['mean_latency_us'] / r['mean_latency_us']:.2f}x |"
        for r in doc["operating_points"] if r["exit"] == base["exit"])
    best = g["best"]
    verdict = (f"best within {GOAL_LOSS_POINTS} points: {best['speedup']:.2f}x at threshold {best['threshold']:g} "
               f"({best['loss_points']:+.2f} points): goal {'met' if g['met'] else 'not met'}" if best else
               "no threshold stays within the loss")
    return f"""{DEPTH_BEGIN}
## Depth: early exit against width-only configs

*Generated by `benchmarks/bench_depth.py` on {doc['date'][:10]} (UTC); the full tables, the plot
and the command are in [{page}]({page}).* `{doc['settings']['spec']}`, incremental with joint exit
losses; top-1 on the {doc['settings']['test_images']:,} test images; mean batch-1 latency over
{doc['settings']['latency_images']:,} of them, {doc['settings']['threads']} thread(s). Goal (seed): >= {GOAL_SPEEDUP}x
faster than the full net at < {GOAL_LOSS_POINTS} points loss; {verdict}. Calibrated for
{100 * c['target_accuracy']:.0f}% accurate early answers on validation data: test top-1
{100 * c['test_accuracy']:.2f}%, exit rate {100 * c['test_exit_rates'][0]:.1f}%, {c['mean_latency_us']:.1f} us.

| point | top-1 (%) | loss (points) | mean latency (us) | speed-up |
| --- | ---: | ---: | ---: | ---: |
{widths}
{rows}
{DEPTH_END}"""


def update_results_page(path: Path, section: str) -> None:
    text = path.read_text() if path.is_file() else ""
    begin, end = text.find(DEPTH_BEGIN), text.find(DEPTH_END)
    if 0 <= begin < end:
        text = text[:begin] + section + text[end + len(DEPTH_END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dydnn.retain_freed_memory()
    doc = json.loads((out / "depth.json").read_text()) if args.page_only else run(args)
    if args.only:
        path = out / f"depth_{args.only}{'_smoke' if args.smoke else ''}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {path}")
        return 0
    if not args.page_only:
        (out / ("depth_smoke.json" if args.smoke else "depth.json")).write_text(json.dumps(doc, indent=2) + "\n")
        plot(doc, out / ("depth_smoke.png" if args.smoke else "depth.png"))
    if args.docs:
        page = Path(args.docs)
        picture = page.with_suffix(".png")
        plot(doc, picture)
        page.write_text(docs_page(doc, picture.name))
        results = Path(args.results_page)
        update_results_page(results, results_section(doc, page.name))
        log(f"wrote {page}, {picture} and the depth section of {results}")
    g = doc["goal"]
    if g["best"]:
        log(f"best early exit within {GOAL_LOSS_POINTS} points: {g['best']['speedup']:.2f}x "
            f"(goal {GOAL_SPEEDUP}x {'met' if g['met'] else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
