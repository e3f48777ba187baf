#!/usr/bin/env python3
"""dydnn demo (run by `make demo`): train one dynamic net, then switch its sub-networks live.

1. Trains the default Fashion-MNIST net (spec `fashion_mnist_default`: 4 channel groups,
   incremental connectivity) with the incremental method: one stage per config (A, AB,
   ABC, ABCD), each training only its new group while the earlier ones stay frozen. It
   uses the full training set from the Debian package dataset-fashion-mnist, less a
   seeded validation split measured after every epoch: 3.5-4 minutes on a 2-core machine.
2. Evaluates every config on the 10,000 test images: top-1, loss, confidence, MFLOPs,
   parameters and the latency at batch 1 on 1 thread, next to the latency of the same
   sub-network materialised as a plain static torch model.
3. Classifies a few test images with every config in turn, switching in place with
   net.set_config (no reload, no copy), and times each switch and inference.
4. Writes the model file build/demo/model.dydnn (what the C++ deploy example runs: `make
   demo` runs it right after), the results (JSON), the accuracy-against-cost plot, the spec
   and the checkpoint under build/demo/ (`python -m dydnn eval build/demo` evaluates it again).

--quick (or DYDNN_DEMO_QUICK=1) trains on 2,000 images for 1 epoch per stage and tests on
2,000 images, a smoke test of a few seconds whose accuracy means little.

Usage: python examples/demo.py [--quick] [--epochs N[,N,N,N]] [--threads T] [--out DIR] [--images N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import dydnn
import dydnn.data
from dydnn import plots, train

ROOT = Path(__file__).resolve().parents[1]
SPEC = "fashion_mnist_default"
METHOD = "incremental"
#: Epochs per stage (A, AB, ABC, ABCD) of the full demo. Measured on a shared 2-core
#: machine (training on 1 thread there, see choose_threads): an epoch over 54,000 images
#: takes 6-11 s at A, 7.5-8.5 s at AB, 11-12.5 s at ABC and 14-16 s at ABCD, so training
#: takes 190-235 s and the whole demo 3.5-4 minutes. Stage A gets the most epochs: every
#: later config builds on its features.
EPOCHS = [6, 6, 4, 4]
QUICK_TRAIN, QUICK_TEST = 2000, 2000
#: Training threads on a 2-core machine (`--threads auto` checks that they help).
TRAIN_THREADS = 2


def parse_args(argv=None):
    """The demo's command line; ``--quick`` also comes from the environment (DYDNN_DEMO_QUICK=1)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", default=os.environ.get("DYDNN_DEMO_QUICK", "") not in ("", "0"),
                   help=f"smoke test: {QUICK_TRAIN:,} training images, 1 epoch per stage, {QUICK_TEST:,} test images\n"
                        "(also DYDNN_DEMO_QUICK=1)")
    p.add_argument("--epochs", default=None, metavar="N[,N,N,N]",
                   help=f"epochs per stage (default {','.join(map(str, EPOCHS))}; 1 with --quick)")
    p.add_argument("--lr", type=float, default=0.05, help="initial learning rate of every stage (default 0.05)")
    p.add_argument("--threads", default="auto",
                   help=f"intra-op threads for training (default auto: {TRAIN_THREADS}, unless a 1-second probe\n"
                        "finds 1 thread faster, as on a machine whose other core is busy)")
    p.add_argument("--validation", type=float, default=0.1,
                   help="fraction of the training set held out for validation (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the shuffling and the split (default 0)")
    p.add_argument("--images", type=int, default=8, help="test images classified live (default 8)")
    p.add_argument("--out", default=None,
                   help="output directory (default build/demo, build/demo/quick with --quick)")
    p.add_argument("--resume", action="store_true",
                   help="continue (or reuse) the training checkpointed in the output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = [1] if args.quick else EPOCHS
    else:
        try:
            args.epochs = [int(e) for e in args.epochs.split(",")]
        except ValueError:
            p.error(f"--epochs {args.epochs!r}: give one count, or one per stage (e.g. 3,3,4,4)")
    if args.threads != "auto":
        try:
            args.threads = int(args.threads)
        except ValueError:
            args.threads = 0
    if args.threads == 0 or (args.threads != "auto" and args.threads < 1):
        p.error("--threads: give 'auto' or a count >= 1")
    if args.images < 0 or not 0.0 <= args.validation < 1.0:
        p.error("need --images >= 0 and 0 <= --validation < 1")
    if args.out is None:
        args.out = ROOT / "build" / "demo" / ("quick" if args.quick else "")
    args.out = Path(args.out)
    return args


def shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def heading(text: str) -> None:
    """Prints a section heading."""
    print(f"\n== {text}")


def load_data(args):
    """(training, validation or None, test) tensor pairs: uint8 images, int64 labels."""
    images, labels = dydnn.data.fashion_mnist("train", raw=True, limit=QUICK_TRAIN if args.quick else None)
    test = dydnn.data.fashion_mnist("test", raw=True, limit=QUICK_TEST if args.quick else None)
    validation = None
    if args.validation > 0:
        # A seeded split: the same images are held out on every run with the same --seed.
        images, labels, val_images, val_labels = dydnn._C.split_dataset(images, labels, args.validation, args.seed)
        validation = (val_images, val_labels)
    return (images, labels), validation, test


def choose_threads(wanted: int):
    """(threads, why): `wanted` threads for training, unless 1 is faster here.

    A few training steps of a scratch net at the largest config are timed on 1 thread and
    on `wanted`. Several threads only help when the cores are free: where another process
    keeps one busy, every parallel region waits for it and a step can take tens of times
    longer than on 1 thread.
    """
    if wanted <= 1:
        return 1, "1 thread"
    scratch = dydnn.nn.DynamicNet(SPEC)  # the probe must not touch the net being trained
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))

    def step_ms(threads: int, steps: int = 6) -> float:
        torch.set_num_threads(threads)
        samples = []
        for k in range(steps + 2):  # 2 warm-up steps
            start = time.perf_counter()
            torch.nn.functional.cross_entropy(scratch(x, "ABCD"), y).backward()
            if k >= 2:
                samples.append((time.perf_counter() - start) * 1e3)
        return statistics.median(samples)

    one, many = step_ms(1), step_ms(wanted)
    if many < one:
        return wanted, f"{wanted} threads (a training step: {many:.0f} ms, against {one:.0f} ms on 1 thread)"
    return 1, (f"1 thread: {wanted} were slower here ({many:.0f} ms a training step against {one:.0f} ms; "
               f"another process keeps the cores busy)")


def print_history(trainer) -> None:
    """One line per epoch: what the trainer recorded (loss, accuracy, validation, time)."""
    print(f"{'stage':<7}{'epoch':>5}{'lr':>9}{'loss':>9}{'train':>9}{'val':>9}{'images':>9}{'seconds':>9}")
    for h in trainer.history:
        val = h["validation_top1"]
        print(f"{h['config']:<7}{h['epoch'] + 1:>5}{h['lr']:>9.4f}{h['loss']:>9.4f}{100 * h['train_top1']:>8.2f}%"
              f"{(f'{100 * val:.2f}%' if val is not None else '-'):>9}{h['images']:>9,}{h['seconds']:>9.1f}")


def time_static(model: torch.nn.Module, x: torch.Tensor, warmup: int = 20, repetitions: int = 100) -> float:
    """Median latency (microseconds) of a plain torch model, timed like DynamicNet.measure_latency."""
    samples = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repetitions):
            start = time.perf_counter()
            model(x)
            samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def static_comparison(net, doc, test_images, normalization) -> None:
    """Each config's dydnn latency next to its materialised static twin's, and that both compute the same."""
    spec = net.spec
    x = torch.randn(1, spec.in_channels, spec.height, spec.width)
    batch = normalization.apply(test_images[:256])
    print(f"{'config':<8}{'dydnn us':>10}{'static us':>11}{'ratio':>8}  same predictions on 256 test images")
    for e in doc["evaluations"]:
        static = net.materialize(e["config"])
        with torch.inference_mode():
            same = bool(torch.equal(static(batch).argmax(1), net(batch, e["config"]).argmax(1)))
        static_us = time_static(static, x)
        print(f"{e['config']:<8}{e['latency_us']:>10.1f}{static_us:>11.1f}{e['latency_us'] / static_us:>8.2f}  "
              f"{'yes' if same else 'NO'}")
    print("(median latency at batch 1, 1 thread; dydnn = DynamicNet.measure_latency in C++, static =\n"
          " net.materialize(config), a plain torch.nn.Sequential timed with time.perf_counter)")


def live_switching(net, test, normalization, count: int, seed: int) -> None:
    """Classifies `count` test images with every config in turn, switching in place between calls."""
    classes = dydnn.data.FASHION_MNIST_CLASSES
    images, labels = test
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))[:count]
    configs = [c.name for c in net.configs]
    width = 15

    def row(first, second, cells):
        print((f"{first:>5}  {second:<13}" + "".join(f"{c:<{width}}" for c in cells)).rstrip())

    row("image", "true class", configs)
    correct = {c: 0 for c in configs}
    switch_us, infer_us = [], []
    with torch.inference_mode():
        for k in order.tolist():
            x = normalization.apply(images[k:k + 1])
            true = int(labels[k])
            predictions, times = [], []
            for c in configs:
                start = time.perf_counter()
                net.set_config(c)  # in place: no reload, no weight copy
                switched = time.perf_counter()
                predicted = int(net(x).argmax(1))
                done = time.perf_counter()
                correct[c] += predicted == true
                switch_us.append((switched - start) * 1e6)
                infer_us.append((done - switched) * 1e6)
                predictions.append(classes[predicted] + ("" if predicted == true else " *"))
                times.append(f"{switch_us[-1]:.1f} + {infer_us[-1]:.0f} us")
            row(k, classes[true], predictions)
            row("", "set + run", times)
    if count:
        row("", "correct", [f"{correct[c]}/{count}" for c in configs])
        print(f"(* = wrong; 'set + run' = net.set_config(config) then net(image) from Python, batch 1, 1 thread;\n"
              f" median set_config {statistics.median(switch_us):.1f} us, median inference "
              f"{statistics.median(infer_us):.0f} us)")


def main(argv=None):
    """Runs the demo; returns nothing, exits non-zero on errors."""
    args = parse_args(argv)
    started = time.perf_counter()
    dydnn.retain_freed_memory()  # repeated inference must not page-fault its activations (docs/kernels.md)
    if args.threads == "auto":
        threads, why_threads = choose_threads(TRAIN_THREADS)
    else:
        threads, why_threads = args.threads, f"{args.threads} thread(s), as asked"
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)  # the initial weights
    net = dydnn.nn.DynamicNet(SPEC)
    spec = net.spec
    mode = " (QUICK: a smoke test, the accuracy means little)" if args.quick else ""
    print(f"dydnn {dydnn.__version__} demo{mode}: spec '{spec.name}', {spec.groups} groups, connectivity "
          f"'{spec.connectivity}', head '{spec.head}', {len(net.configs)} configs "
          f"({', '.join(c.name for c in net.configs)})")
    print()
    print(net.connectivity.mask_picture().rstrip())

    try:
        training, validation, test = load_data(args)
    except FileNotFoundError as e:
        sys.exit(f"demo.py: {e}")
    try:
        trainer = train.Trainer(net, METHOD, epochs=args.epochs, lr=args.lr, seed=args.seed, checkpoint_dir=args.out,
                                progress=not args.no_progress and sys.stderr.isatty())
    except ValueError as e:  # e.g. --epochs with neither 1 nor 4 counts
        sys.exit(f"demo.py: {e}")
    epochs = args.epochs * len(trainer.stages) if len(args.epochs) == 1 else args.epochs
    heading(f"Training ({METHOD}): stages {', '.join(s.name for s in trainer.stages)}, epochs "
            f"{','.join(map(str, epochs))}, lr {args.lr:g} (cosine within each stage), {training[1].shape[0]:,} "
            f"training images, {validation[1].shape[0] if validation else 0:,} validation")
    print(f"training on {why_threads}")
    t0 = time.perf_counter()
    trainer.fit(training, validation, resume=args.resume)
    training_seconds = time.perf_counter() - t0
    print_history(trainer)
    print(f"(trained in {training_seconds:.0f} s; 'val' = top-1 of the stage's config on the validation split)")

    # Latency at batch 1 on 1 thread: what one inference costs on a small device.
    torch.set_num_threads(1)
    net.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spec.spec").write_text(spec.to_text())
    results_path, plot_path = args.out / "results.json", args.out / "accuracy.png"
    t0 = time.perf_counter()
    doc = trainer.save_results(results_path, test, dataset="fashion_mnist")
    heading(f"Every config on {test[1].shape[0]:,} Fashion-MNIST test images (evaluated in "
            f"{time.perf_counter() - t0:.0f} s; latency at batch 1, 1 thread)")
    print(plots.table(doc))
    print("(top-1 and loss on the test set; norm.conf = total confidence relative to the full config;\n"
          " MFLOPs = 2 x MACs per image; params = the numbers the config uses)")

    # The model file a C++ deployment runs (examples/cpp/deploy; `make demo` runs it next).
    model_path = args.out / "model.dydnn"
    dydnn.save(net, model_path, normalization=trainer.normalization, method=METHOD, dataset="fashion_mnist",
               accuracy={e["config"]: e["top1"] for e in doc["evaluations"]},
               extra={"epochs": ",".join(map(str, epochs)), "quick": str(args.quick).lower()})

    heading("The same sub-networks as plain static models")
    static_comparison(net, doc, test[0], trainer.normalization)

    heading(f"Switching configs live on {min(args.images, test[1].shape[0])} test images (one net, set_config "
            f"between calls)")
    live_switching(net, test, trainer.normalization, min(args.images, test[1].shape[0]), args.seed)

    plots.accuracy_vs_cost([doc], path=plot_path,
                           title=f"{spec.name}, {METHOD} training on Fashion-MNIST"
                                 + (" (quick smoke test)" if args.quick else ""))
    heading("Files")
    for path, what in ((results_path, "results: options, history, per-config test results and latency"),
                       (plot_path, "top-1 against MFLOPs and against latency"),
                       (model_path, "the model file (spec, weights, configs, accuracy) for C++ deployment"),
                       (args.out / "checkpoint.pt", "the trained net (weights, optimiser, history)"),
                       (args.out / "spec.spec", "the spec it was built from")):
        print(f"  {shown(path):<28} {what}")
    print(f"Evaluate it again with: PYTHONPATH=python python3 -m dydnn eval {shown(args.out)}")
    print(f"Inspect the model file with: PYTHONPATH=python python3 -m dydnn info {shown(model_path)}")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
