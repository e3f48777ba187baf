"""The ``dydnn`` command: train a dynamic net, evaluate a run, plot accuracy against cost,
inspect a model file and export one of its configs.

Examples::

    dydnn train --spec fashion_mnist_default --method incremental --epochs 1,1,2,2 --out runs/incremental
    dydnn train --spec fashion_mnist_default --method static --epochs 3 --out runs/static
    dydnn eval runs/incremental
    dydnn plot runs/incremental/results.json runs/static/results.json -o accuracy.png
    dydnn info runs/incremental/model.dydnn
    dydnn info runs/incremental/model.dydnn --json
    dydnn export runs/incremental/model.dydnn --config AB --format torchscript -o ab.pt
    dydnn export runs/incremental/model.dydnn --config AB --format onnx --layout dense -o ab.onnx

``python -m dydnn ...`` is the same command. Errors (a bad spec name, a missing file, a
schedule of the wrong length, ...) print one line ``dydnn: error: ...`` and exit with
status 2; set ``DYDNN_TRACEBACK=1`` to see the Python traceback instead.

A run directory (``--out DIR``) holds ``checkpoint.pt`` (written after every epoch, so
``--resume`` continues an interrupted run), ``spec.spec`` (the spec actually trained),
``results.json`` (options, per-epoch history and per-config test results, with latency) and
``model.dydnn`` (the trained net with its input normalisation, method, data set and
per-config test top-1: the file ``dydnn info``, ``dydnn export`` and the C++ deploy
example read; see docs/artifact.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch

from . import _C, __version__
from . import data as _data
from . import export as _export
from . import io as _io
from . import plots
from . import runtime as _runtime
from . import serve as _serve
from .nn import DynamicNet, NetSpec, _load_spec
from .specs import available_specs
from .train import METHODS, Trainer, write_results

__all__ = ["main", "build_parser", "training_spec", "info_document", "CommandError"]

DATASETS = ("fashion_mnist",)


class CommandError(Exception):
    """A user error the command reports as one line ``dydnn: error: ...`` (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors become one-line :class:`CommandError`s."""

    def error(self, message):  # noqa: D401 (argparse's hook)
        raise CommandError(f"{message} (see '{self.prog} --help')")


# -- argument types -----------------------------------------------------------------------
def _schedule(kind, what: str):
    def parse(text: str):
        try:
            values = [kind(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {what} '{text}': give one value for every stage or one per stage, comma-separated "
                f"(e.g. {'2 or 1,2,2,3' if kind is int else '0.05 or 0.1,0.05,0.05,0.02'})") from None
        return values
    parse.__name__ = what  # argparse names the type in its messages
    return parse


def _numbers(what: str, usage: str):
    def parse(text: str):
        try:
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} '{text}': {usage}") from None
    parse.__name__ = what
    return parse


_exit_weights = _numbers("exit weights", "one number per exit, the final head last, comma-separated (e.g. 0.5,1)")
_exit_thresholds = _numbers("exit thresholds", "entropy thresholds in nats, comma-separated (e.g. 0.3,0.6)")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"invalid fraction '{text}' (valid: 0 <= f < 1; 0 keeps no validation set)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count '{text}' (valid: an integer >= 0)")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, else an error naming the value (also used by the benchmarks)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value '{text}' (valid: an integer >= 1)")
    return value


# -- the parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``dydnn`` argument parser (subcommands ``train``, ``eval``, ``plot``, ``info``, ``export``, ``profile``, ``run`` and ``serve``)."""
    parser = _Parser(
        prog="dydnn",
        description=("Train, evaluate and plot dynamic DNNs: one set of weights, many sub-networks (configs); "
                     "inspect model files and export one config."),
        epilog="Run 'dydnn COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"dydnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    # train
    t = commands.add_parser(
        "train", help="train a dynamic net and write a run directory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train a dynamic net with one of the training methods, evaluate every config on the test set\n"
            "and write a run directory: checkpoint.pt (after every epoch), spec.spec (the spec trained),\n"
            "results.json (options, history, per-config top-1, loss, confidence, MACs, parameters,\n"
            "latency) and model.dydnn (the model file: net, input normalisation, method, data set and\n"
            "per-config top-1; read by 'dydnn info', 'dydnn export' and the C++ deploy example).\n"
            "Prints the per-config table at the end.\n\n"
            "methods:\n"
            "  static       the full net at once: trains the spec's dense twin (connectivity and head\n"
            "               'prefix', only the full config), the baseline to compare against\n"
            "  incremental  one stage per config, each training only its new group (MLCAD'19)\n"
            "  nested       Fluid islands, then the fused configs (needs a fluid spec)\n"
            "  sandwich     every config jointly (smallest, largest and random ones per batch,\n"
            "               with in-place distillation); trains the spec with 'prefix' connectivity"),
        epilog=(
            "examples:\n"
            "  dydnn train --method incremental --epochs 1,1,2,2 --out runs/incremental\n"
            "  dydnn train --spec fashion_mnist_fluid --method nested --fusion late --out runs/late\n"
            "  dydnn train --method static --limit 5000 --threads 2 --out runs/static\n"
            "  dydnn train --train-images x.idx.gz --train-labels y.idx.gz \\\n"
            "              --test-images tx.idx.gz --test-labels ty.idx.gz --out runs/mine"))
    g = t.add_argument_group("network and method")
    g.add_argument("--spec", default="fashion_mnist_default", metavar="SPEC",
                   help=f"a shipped spec ({', '.join(available_specs())}), a spec file or spec text "
                        "(default: fashion_mnist_default)")
    g.add_argument("--method", default="incremental", choices=METHODS, help="training method (default: incremental)")
    g.add_argument("--keep-spec", action="store_true",
                   help="train the spec as given (static and sandwich otherwise train their dense 'prefix' variant)")
    g.add_argument("--fusion", choices=("cross", "late"),
                   help="fluid specs only: 'cross' keeps the cross edges between islands, 'late' removes them "
                        "(the islands meet only at the head)")
    g = t.add_argument_group("schedule and optimiser")
    g.add_argument("--epochs", type=_schedule(int, "epochs"), default=[2], metavar="N[,N...]",
                   help="epochs for every stage, or one count per stage (default: 2)")
    g.add_argument("--lr", type=_schedule(float, "learning rate"), default=[0.05], metavar="LR[,LR...]",
                   help="learning rate for every stage, or one per stage; cosine decay within a stage (default: 0.05)")
    g.add_argument("--no-cosine", action="store_true", help="keep the learning rate constant within a stage")
    g.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="batch size (default: 64)")
    g.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimiser (default: sgd)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (default: 5e-4)")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds the initial weights, the shuffling and the validation split (default: 0)")
    g.add_argument("--augment", action="store_true",
                   help="augment every training batch: mirror and shift, seeded per epoch (default: off)")
    g.add_argument("--augment-shift", type=_count, default=2, metavar="N",
                   help="--augment: the largest shift in pixels (default: 2)")
    g.add_argument("--no-augment-flip", action="store_true", help="--augment: shift only, no mirroring")
    g.add_argument("--exit-weights", type=_exit_weights, default=None, metavar="W[,W...]",
                   help="specs with early exits: the joint loss weight of each exit, the final head last "
                        "(default: 1 each)")
    g.add_argument("--sandwich-random", type=_count, default=2, metavar="N",
                   help="sandwich: random configs per batch besides the smallest and largest (default: 2)")
    g.add_argument("--no-distill", action="store_true",
                   help="sandwich: train every config on the labels, not on the full config's predictions")
    _data_arguments(t, train=True)
    g = t.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="DIR", help="run directory to write (created if missing)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in DIR from its checkpoint (same spec; gives the uninterrupted result)")
    g.add_argument("--overwrite", action="store_true", help="start again even if DIR already holds a checkpoint")
    g.add_argument("--threads", type=positive_int, metavar="N",
                   help="intra-op threads for training (torch.set_num_threads; default: torch's)")
    g.add_argument("--latency-threads", type=positive_int, default=1, metavar="N",
                   help="threads for the batch-1 latency measurement (default: 1)")
    g.add_argument("--no-latency", action="store_true", help="do not measure the latency of each config")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are shown only when stderr is a terminal)")
    t.set_defaults(func=_cmd_train)

    # eval
    e = commands.add_parser(
        "eval", help="evaluate a run directory's checkpoint on test data",
        description=("Rebuild the net of a run directory (from results.json's spec_text and options), load\n"
                     "its checkpoint.pt, evaluate every config on the test data and print the table. The test\n"
                     "data default to those the run was evaluated on."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  dydnn eval runs/incremental --json runs/incremental/eval.json")
    e.add_argument("dir", metavar="DIR", help="a run directory written by 'dydnn train'")
    _data_arguments(e, train=False)
    e.add_argument("--json", metavar="PATH", help="also write the results document (as results.json) to PATH")
    e.add_argument("--latency-threads", type=positive_int, default=1, metavar="N",
                   help="threads for the batch-1 latency measurement (default: 1)")
    e.add_argument("--no-latency", action="store_true", help="do not measure the latency of each config")
    e.set_defaults(func=_cmd_eval)

    # plot
    p = commands.add_parser(
        "plot", help="plot top-1 against MFLOPs and latency for one or more runs",
        description=("One figure, two panels: top-1 accuracy against MFLOPs (2 x MACs) and against the\n"
                     "measured batch-1 latency, one curve per results file, labelled by its method."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  dydnn plot runs/*/results.json -o accuracy.png")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="results.json files (or run directories holding one)")
    p.add_argument("-o", "--output", required=True, metavar="FIG", help="the image to write (PNG, 120 dpi)")
    p.add_argument("--title", help="the figure's title (default: names the data sets)")
    p.set_defaults(func=_cmd_plot)

    # info
    i = commands.add_parser(
        "info", help="describe a model file (spec, per-config cost and accuracy, operating points, metadata)",
        description=("Print a model file's path and size, then its format and versions, how it was trained,\n"
                     "the input normalisation, the spec, each config's parameters, MFLOPs and top-1 (where\n"
                     "known), the operating points and the free-form metadata."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  dydnn info runs/incremental/model.dydnn\n  dydnn info runs/incremental/model.dydnn --json")
    i.add_argument("model", metavar="MODEL", help="a model file (model.dydnn, written by 'dydnn train' or dydnn.save)")
    i.add_argument("--json", action="store_true",
                   help="print JSON instead: path, bytes, spec, metadata, configs (name, parameters, macs, top1 or "
                        "null), normalization (mean and std per channel, empty for none) and operating_points")
    i.set_defaults(func=_cmd_info)

    # export
    x = commands.add_parser(
        "export", help="export one config of a model file as a standalone TorchScript or ONNX model",
        description=("Load a model file and write one of its configs as a model that needs no dydnn:\n"
                     "TorchScript (torch.jit.load, torch::jit::load) or ONNX. The file is checked against\n"
                     "the dynamic net on a fixed input; prints the path, the file size, the config's\n"
                     "parameters and the largest absolute difference of the logits.\n\n"
                     "layouts:\n"
                     "  blocks  only the config's allowed blocks (one convolution per run of input groups)\n"
                     "  dense   one dense convolution per layer, zeros where the mask forbids a block\n"
                     "          (more numbers, fewer calls: faster at small batches)"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("examples:\n"
                "  dydnn export runs/incremental/model.dydnn --config AB --format torchscript -o ab.pt\n"
                "  dydnn export runs/incremental/model.dydnn --config ABCD --format onnx --layout dense -o abcd.onnx"))
    x.add_argument("model", metavar="MODEL", help="a model file (model.dydnn)")
    x.add_argument("--config", metavar="NAME",
                   help="the config to export (required), e.g. AB; 'dydnn info MODEL' lists the model's configs")
    x.add_argument("--format", required=True, choices=_export.FORMATS, help="the file format")
    x.add_argument("--layout", default="blocks", choices=_export.LAYOUTS, help="the weight layout (default: blocks)")
    x.add_argument("-o", "--output", required=True, metavar="OUT", help="the file to write (atomically)")
    x.set_defaults(func=_cmd_export)

    # profile
    pr = commands.add_parser(
        "profile", help="measure every config of a model file under each thread count / core set; store the table",
        description=("Time every config at batch 1 (warm-up, then repetitions: median and p95) under each\n"
                     "thread count and core set, take each config's top-1 on the test data, and store the\n"
                     "operating-point table in the model file (or -o). Prints the table; --plot draws the\n"
                     "Pareto front."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  dydnn profile build/demo/model.dydnn --threads 1,2 --plot pareto.png")
    pr.add_argument("model", metavar="MODEL", help="a model file (model.dydnn)")
    pr.add_argument("--threads", type=_schedule(int, "thread list"), default=[1], metavar="N[,N...]",
                    help="intra-op thread counts to try (default: 1)")
    pr.add_argument("--cores", default=None, metavar="SET[/SET...]",
                    help="core sets to pin to, e.g. 0/0,1 (default: no pinning)")
    pr.add_argument("--repetitions", type=positive_int, default=200, metavar="R", help="timed calls (default: 200)")
    pr.add_argument("--warmup", type=_count, default=20, metavar="W", help="untimed calls first (default: 20)")
    pr.add_argument("--energy", choices=("auto", "none"), default="auto",
                    help="measure energy with this machine's meter (RAPL, INA3221, INA231, hwmon) when one is "
                         "found, else model it with --energy-model (default: auto)")
    pr.add_argument("--energy-model", default="generic_host", metavar="PLATFORM",
                    help="the platform whose power model, driven by the CPU time, stands in for a missing meter "
                         "('none': profile without energy then; default: generic_host)")
    pr.add_argument("--exit-thresholds", type=_exit_thresholds, default=[], metavar="T[,T...]",
                    help="models with early exits: also an adaptive point per config and entropy threshold "
                         "(width x exit points are always added; docs/depth.md)")
    pr.add_argument("-o", "--output", metavar="OUT", help="write the profiled model here (default: MODEL itself)")
    pr.add_argument("--plot", metavar="FIG", help="also draw top-1 against latency with the Pareto front")
    _data_arguments(pr, train=False)
    pr.set_defaults(func=_cmd_profile, test_limit_default=2000)

    # run
    r = commands.add_parser(
        "run", help="serve test images under the runtime manager while the targets follow a trace",
        description=("Serve test images back to back under the runtime manager, with the model file's\n"
                     "operating points ('dydnn profile' first), while the targets follow a CSV trace\n"
                     "(time_s,max_latency_us[,min_accuracy][,max_power_w][,objective]). Writes every decision\n"
                     "to the log (CSV) and prints how many 100 ms windows met their target."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  dydnn run build/demo/model.dydnn --targets trace.csv --log run.csv --plot run.png")
    r.add_argument("model", metavar="MODEL", help="a profiled model file")
    r.add_argument("--targets", required=True, metavar="TRACE", help="the targets trace (CSV)")
    r.add_argument("--log", metavar="CSV", help="write the decision log here")
    r.add_argument("--plot", metavar="FIG", help="plot latency, target, config, threads and accuracy over time")
    r.add_argument("--duration", type=float, metavar="S", help="seconds to run (default: the trace plus its last step)")
    r.add_argument("--dwell", type=float, default=0.0, metavar="S", help="minimum time between switches (default: 0)")
    _data_arguments(r, train=False)
    r.set_defaults(func=_cmd_run, test_limit_default=1000)

    # serve
    sv = commands.add_parser(
        "serve", help="distributed Fluid serving: a dispatcher and one device process per island",
        description=("Serve requests with a dispatcher and one device process per island on this host\n"
                     "(torch.distributed's TCPStore and Gloo over loopback; the C++ program dydnn_serve).\n"
                     "Modes: ht (each device answers different requests with its island), ha (both islands\n"
                     "on every request; late or cross fusion, as the model was trained), static and dynamic\n"
                     "(the baselines). --kill and --restart kill -9 a device and start it again while the\n"
                     "requests flow. Prints throughput, the configs that answered, the device events and\n"
                     "whether every request was answered exactly once. Across hosts, run dydnn_serve on\n"
                     "each (docs/distributed.md)."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("examples:\n"
                "  dydnn serve runs/fluid/model.dydnn --mode ht --random 5000\n"
                "  dydnn serve runs/fluid/model.dydnn --mode ha --limit 2000 --kill 2@0.5 --restart 2@1.5"))
    sv.add_argument("model", metavar="MODEL", help="a model file (a fluid model for ht and ha)")
    sv.add_argument("--mode", choices=_serve.MODES, default="ht", help="serving mode (default: ht)")
    sv.add_argument("--devices", type=int, choices=(1, 2), default=2, help="device processes (default: 2)")
    sv.add_argument("--random", type=positive_int, metavar="N", help="serve N random images instead of test images")
    sv.add_argument("--images", metavar="IDX", help="an IDX image file (default: the Fashion-MNIST test images)")
    sv.add_argument("--limit", type=positive_int, metavar="N", help="serve the first N images only")
    sv.add_argument("--kill", action="append", default=[], type=_serve_action("kill"), metavar="RANK@S",
                    help="kill -9 device RANK S seconds after serving began (repeatable)")
    sv.add_argument("--restart", action="append", default=[], type=_serve_action("restart"), metavar="RANK@S",
                    help="start device RANK again S seconds after serving began (repeatable)")
    sv.add_argument("--failure-timeout-ms", type=positive_int, default=500, metavar="MS",
                    help="a device whose heartbeat stops this long is lost (default: 500)")
    sv.add_argument("--heartbeat-ms", type=positive_int, default=50, metavar="MS", help="heartbeat period (default: 50)")
    sv.add_argument("--window", type=positive_int, default=4, metavar="N", help="requests in flight per device (default: 4)")
    sv.add_argument("--report", metavar="JSON", help="write the dispatcher's report here")
    sv.add_argument("--timeout", type=float, default=600.0, metavar="S", help="give up after S seconds (default: 600)")
    sv.set_defaults(func=_cmd_serve)
    return parser


def _serve_action(kind: str):
    def parse(text: str):
        rank, sep, at = text.partition("@")
        try:
            r, t = int(rank), float(at)
        except ValueError:
            r, t = -1, -1.0
        if not sep or r not in (1, 2) or not t >= 0:
            raise argparse.ArgumentTypeError(f"--{kind} '{text}' (valid: RANK@SECONDS, RANK 1 or 2, SECONDS >= 0)")
        return (t, kind, r)
    return parse


def _data_arguments(parser: argparse.ArgumentParser, train: bool) -> None:
    g = parser.add_argument_group(
        "data", "Fashion-MNIST from the Debian package dataset-fashion-mnist by default, or your own IDX files"
                " (plain or .gz)")
    g.add_argument("--data", choices=DATASETS, help="a named data set (default: fashion_mnist)")
    if train:
        g.add_argument("--train-images", metavar="IDX", help="training images (IDX, [N,H,W] or [N,C,H,W] uint8)")
        g.add_argument("--train-labels", metavar="IDX", help="training labels (IDX, [N] uint8)")
    g.add_argument("--test-images", metavar="IDX", help="test images (IDX)")
    g.add_argument("--test-labels", metavar="IDX", help="test labels (IDX)")
    if train:
        g.add_argument("--limit", type=_count, metavar="N", help="train on the first N training images only")
        g.add_argument("--validation", type=_fraction, default=0.1, metavar="F",
                       help="hold out this fraction of the training images (a seeded split) to validate on after "
                            "every epoch; 0 for none (default: 0.1)")
    g.add_argument("--test-limit", type=_count, metavar="N", help="evaluate on the first N test images only")


# -- helpers ------------------------------------------------------------------------------
def training_spec(spec: NetSpec, method: str, keep_spec: bool = False,
                  fusion: Optional[str] = None) -> Tuple[NetSpec, str]:
    """The spec ``dydnn train`` actually trains for ``method``, and a sentence saying why.

    ``static`` trains the dense twin (``<name>_static``: connectivity and head ``prefix``,
    only the full config), ``sandwich`` the spec with ``prefix`` connectivity and head;
    ``keep_spec`` trains ``spec`` as given. ``fusion`` (``"cross"``/``"late"``, fluid specs
    only) keeps or removes the cross edges first. Raises ``ValueError`` for ``fusion`` on a
    spec that is not fluid.
    """
    notes = []
    if fusion is not None:
        if spec.connectivity != "fluid":
            raise ValueError(f"--fusion applies to fluid specs only; spec '{spec.name}' has connectivity "
                             f"'{spec.connectivity}' (try --spec fashion_mnist_fluid)")
        spec = spec.replace(cross_edges=(fusion == "cross"))
        notes.append(f"fusion '{fusion}' (cross edges {'on' if fusion == 'cross' else 'off'})")
    if not keep_spec and method == "static":
        full = spec.make_connectivity().full_config.name
        base = spec.name
        spec = spec.replace(name=f"{base}_static", connectivity="prefix", head="prefix", configs=[full])
        notes.append(f"the dense twin of '{base}' (connectivity prefix, head prefix, config {full} only; "
                     "--keep-spec trains the spec as given)")
    elif not keep_spec and method == "sandwich" and (spec.connectivity != "prefix" or spec.head != "prefix"):
        notes.append(f"'{spec.name}' with connectivity prefix and head prefix, as slimmable nets are "
                     f"(was {spec.connectivity}/{spec.head}; --keep-spec trains the spec as given)")
        spec = spec.replace(connectivity="prefix", head="prefix")
    return spec, "; ".join(notes) if notes else "as given"


def _idx_paths(args, train: bool) -> dict:
    """The IDX files named on the command line ({} when none), checking they come in pairs."""
    names = (["train_images", "train_labels"] if train else []) + ["test_images", "test_labels"]
    given = {n: getattr(args, n, None) for n in names if getattr(args, n, None) is not None}
    if not given:
        return {}
    if args.data is not None:
        raise CommandError(f"give either --data {args.data} or IDX files (--{next(iter(given)).replace('_', '-')}), "
                           "not both")
    missing = [n for n in names if n not in given]
    if missing and (train or len(missing) != 2):
        raise CommandError("IDX data need " + ", ".join("--" + n.replace("_", "-") for n in names) +
                           "; missing: " + ", ".join("--" + n.replace("_", "-") for n in missing))
    return given


def _load_pair(images: str, labels: str, limit: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    for path in (images, labels):
        if not Path(path).is_file():
            raise FileNotFoundError(2, "No such file", path)
    return _data.idx_dataset(images, labels, limit=limit, raw=True)


def _describe(images: torch.Tensor) -> str:
    return f"{images.shape[0]:,} images"


def _first_line(message: str) -> str:
    text = " ".join(str(message).split())
    if text.startswith("[dydnn") and "] " in text[:24]:
        text = text.split("] ", 1)[1]
    return text


def _set_threads(n: Optional[int]) -> None:
    if n is not None:
        torch.set_num_threads(n)


def _measure(trainer: Trainer, test, dataset: str, latency: bool, latency_threads: int) -> dict:
    """trainer.results with the latency measured on `latency_threads` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(latency_threads)
    try:
        return trainer.results(test, dataset=dataset, latency=latency)
    finally:
        torch.set_num_threads(before)


# -- train --------------------------------------------------------------------------------
def _cmd_train(args) -> int:
    out = Path(args.out)
    _set_threads(args.threads)
    given_spec = _load_spec(args.spec)
    spec, why = training_spec(given_spec, args.method, args.keep_spec, args.fusion)
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists() and not (args.resume or args.overwrite):
        raise CommandError(f"{out} already holds checkpoint.pt from an earlier run: pass --resume to continue it, "
                           "--overwrite to start again, or choose another --out")
    if args.resume and (out / "spec.spec").is_file():
        previous = NetSpec.load(str(out / "spec.spec"))
        if previous.to_text() != spec.to_text():
            there, here = previous.to_text().splitlines(), spec.to_text().splitlines()
            k = next((i for i, (a, b) in enumerate(zip(there, here)) if a != b), min(len(there), len(here)))
            line = lambda lines: f"'{lines[k]}'" if k < len(lines) else "nothing"  # noqa: E731
            raise CommandError(f"--resume: {out}/spec.spec is not the spec this command trains (line {k + 1}: "
                               f"{line(there)} there, {line(here)} here); give the run's --spec, --method and --fusion")
    idx = _idx_paths(args, train=True)

    torch.manual_seed(args.seed)  # the initial weights
    net = DynamicNet(spec)
    existed = out.exists()
    try:
        trainer = Trainer(net, args.method, epochs=args.epochs, lr=args.lr, cosine=not args.no_cosine,
                          optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
                          batch_size=args.batch_size, seed=args.seed, sandwich_random=args.sandwich_random,
                          distill=not args.no_distill, augment=args.augment, augment_shift=args.augment_shift,
                          augment_flip=not args.no_augment_flip, exit_weights=args.exit_weights, checkpoint_dir=out,
                          progress=not args.no_progress and sys.stderr.isatty())
    except ValueError:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # the Trainer made it; a rejected command leaves nothing behind
        raise
    stages = trainer.stages
    epochs = args.epochs * len(stages) if len(args.epochs) == 1 else args.epochs
    lrs = args.lr * len(stages) if len(args.lr) == 1 else args.lr

    if idx:
        dataset = "idx:" + os.path.basename(idx["train_images"])
        images, labels = _load_pair(idx["train_images"], idx["train_labels"], args.limit)
        test = _load_pair(idx["test_images"], idx["test_labels"], args.test_limit)
    else:
        dataset = args.data or "fashion_mnist"
        images, labels = _data.fashion_mnist("train", limit=args.limit, raw=True)
        test = _data.fashion_mnist("test", limit=args.test_limit, raw=True)
    validation = None
    if args.validation > 0:
        images, labels, val_images, val_labels = _C.split_dataset(images, labels, args.validation, args.seed)
        validation = (val_images, val_labels)

    print(f"dydnn {__version__}: training spec '{spec.name}'" + (" as given" if why == "as given" else f": {why}"))
    print(f"  method {args.method}: {len(stages)} stage(s) {', '.join(s.name for s in stages)}; "
          f"epochs {','.join(map(str, epochs))}; lr {','.join(f'{r:g}' for r in lrs)}; {args.optimizer}, "
          f"batch {args.batch_size}, seed {args.seed}"
          + (f"; augmented (shift {args.augment_shift}{'' if args.no_augment_flip else ', mirror'})"
             if args.augment else ""))
    print(f"  data {dataset}: {_describe(images)} to train on, "
          f"{_describe(validation[0]) if validation else 'no'} for validation, {_describe(test[0])} to test; "
          f"{torch.get_num_threads()} thread(s)")
    if args.resume and checkpoint.exists():
        print(f"  resuming from {checkpoint}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.spec").write_text(spec.to_text())

    trainer.fit((images, labels), validation, resume=args.resume)

    doc = _measure(trainer, test, dataset, not args.no_latency, args.latency_threads)
    doc["run"] = {
        "command": "train",
        "given_spec": given_spec.name,
        "keep_spec": bool(args.keep_spec),
        "fusion": args.fusion,
        "data": "idx" if idx else dataset,
        "train_images": os.path.abspath(idx["train_images"]) if idx else None,
        "train_labels": os.path.abspath(idx["train_labels"]) if idx else None,
        "test_images": os.path.abspath(idx["test_images"]) if idx else None,
        "test_labels": os.path.abspath(idx["test_labels"]) if idx else None,
        "limit": args.limit,
        "test_limit": args.test_limit,
        "validation": args.validation,
        "threads": torch.get_num_threads(),
    }
    write_results(out / "results.json", doc)
    model = out / "model.dydnn"
    _io.save(net, model, normalization=trainer.normalization, method=args.method, dataset=dataset,
             accuracy={e["config"]: e["top1"] for e in doc["evaluations"]},
             extra={"spec": spec.name, "epochs": ",".join(map(str, epochs)), "seed": str(args.seed)})
    print()
    _print_table(doc)
    print(f"\nwrote {out / 'results.json'}, {model}, {out / 'checkpoint.pt'}, {out / 'spec.spec'}")
    return 0


def _print_table(doc: dict) -> None:
    evals = doc["evaluations"]
    examples = evals[0]["examples"] if evals else 0
    threads = doc.get("latency_threads")
    print(f"{doc.get('spec', '?')}, {doc.get('method', '?')}: {examples:,} test images ({doc.get('dataset') or '?'})"
          + (f"; latency at batch 1, {threads} thread(s)" if threads is not None else ""))
    print(plots.table(doc))


# -- eval ---------------------------------------------------------------------------------
def _cmd_eval(args) -> int:
    run = Path(args.dir)
    if not run.is_dir():
        raise CommandError(f"no run directory {run} (write one with 'dydnn train --out {run}')")
    results_path, checkpoint = run / "results.json", run / "checkpoint.pt"
    for path in (results_path, checkpoint):
        if not path.is_file():
            raise FileNotFoundError(2, "No such file", str(path))
    recorded = plots.load_results(results_path)
    try:
        spec = NetSpec.parse(recorded["spec_text"], str(results_path))
        options = recorded["options"]
        method = recorded["method"]
    except KeyError as e:
        raise ValueError(f"{results_path}: no {e} field (not written by 'dydnn train'?)") from None
    net = DynamicNet(spec)
    trainer = Trainer(net, method, epochs=options["epochs"], lr=options["lr"], cosine=options.get("cosine", True),
                      optimizer=options.get("optimizer", "sgd"), momentum=options.get("momentum", 0.9),
                      weight_decay=options.get("weight_decay", 5e-4), batch_size=options.get("batch_size", 64),
                      seed=options.get("seed", 0), sandwich_random=options.get("sandwich_random", 2),
                      distill=options.get("distill", True), augment=options.get("augment", False),
                      augment_shift=options.get("augment_shift", 2), augment_flip=options.get("augment_flip", True),
                      exit_weights=options.get("exit_weights") or None, progress=False)
    trainer.load_checkpoint(checkpoint)
    if not trainer.finished:
        print(f"note: {checkpoint} is from an unfinished run (stopped in stage {trainer.stage + 1}/"
              f"{len(trainer.stages)}); evaluating it as it is")

    test, dataset, same_data = _eval_data(args, recorded)
    doc = _measure(trainer, test, dataset, not args.no_latency, args.latency_threads)
    if "run" in recorded:
        doc["run"] = dict(recorded["run"], command="eval", test_limit=args.test_limit if args.test_limit is not None
                          else recorded["run"].get("test_limit"))
    print(f"evaluating {checkpoint} (spec '{spec.name}', method {method})")
    _print_table(doc)
    if same_data:
        before = {e["config"]: e["top1"] for e in recorded["evaluations"]}
        differ = [e["config"] for e in doc["evaluations"] if abs(before.get(e["config"], -1.0) - e["top1"]) > 1e-9]
        print("top-1 " + ("matches results.json for every config" if not differ else
                          "differs from results.json for " + ", ".join(differ)))
    if args.json:
        write_results(args.json, doc)
        print(f"wrote {args.json}")
    return 0


def _eval_data(args, recorded: dict):
    """(test tensors, data set name, whether they are the data results.json was measured on).

    Defaults to the run's own test data: the named data set, or the IDX files ``dydnn train``
    recorded, and as many test images as the run was evaluated on.
    """
    run = recorded.get("run") or {}
    evaluations = recorded.get("evaluations") or [{}]
    examples = evaluations[0].get("examples")
    idx = _idx_paths(args, train=False)
    if idx:
        test = _load_pair(idx["test_images"], idx["test_labels"], args.test_limit)
        return test, "idx:" + os.path.basename(idx["test_images"]), False
    limit = args.test_limit if args.test_limit is not None else run.get("test_limit", examples)
    if args.data is None and run.get("data") == "idx":
        if not (run.get("test_images") and run.get("test_labels")):
            raise CommandError("the run was tested on IDX files; give --test-images and --test-labels")
        test = _load_pair(run["test_images"], run["test_labels"], limit)
        return test, recorded.get("dataset", "idx"), test[1].shape[0] == examples
    dataset = args.data or recorded.get("dataset") or "fashion_mnist"
    if dataset not in DATASETS:
        raise CommandError(f"the run was tested on '{dataset}': give --data or --test-images/--test-labels")
    test = _data.fashion_mnist("test", limit=limit, raw=True)
    return test, dataset, dataset == recorded.get("dataset") and test[1].shape[0] == examples


# -- plot ---------------------------------------------------------------------------------
def _cmd_plot(args) -> int:
    paths = []
    for item in args.results:
        path = Path(item)
        if path.is_dir():
            path = path / "results.json"
        if not path.is_file():
            raise FileNotFoundError(2, "No such file", str(path))
        paths.append(path)
    plots.accuracy_vs_cost(paths, path=args.output, title=args.title)
    print(f"wrote {args.output} ({len(paths)} run(s))")
    return 0


# -- info ---------------------------------------------------------------------------------
def _load_model(path: str) -> _io.Artifact:
    if not os.path.lexists(path):
        raise FileNotFoundError(2, "No such file", path)
    return _io.load_artifact(path)


def _cmd_info(args) -> int:
    artifact = _load_model(args.model)
    size = os.path.getsize(args.model)
    if args.json:
        print(json.dumps(info_document(artifact, args.model, size), indent=2))
        return 0
    print(f"{args.model} ({size:,} bytes)")
    print(artifact.describe().rstrip("\n"))
    return 0


def info_document(artifact: _io.Artifact, path: str, size: int) -> dict:
    """What ``dydnn info --json`` prints for ``artifact`` (read from ``path``, ``size`` bytes)."""
    net, metadata = artifact.net, artifact.metadata
    accuracy = metadata.get("accuracy") or {}
    return {
        "path": os.fspath(path),
        "bytes": size,
        "spec": net.spec.name,
        "metadata": metadata,
        "configs": [{"name": c.name, "parameters": int(net.parameter_count(c)), "macs": int(net.macs(c)),
                     "top1": accuracy.get(c.name)} for c in net.configs],
        "normalization": {"mean": list(artifact.normalization.mean), "std": list(artifact.normalization.std)},
        "operating_points": artifact.operating_points,
    }


# -- export -------------------------------------------------------------------------------
def _cmd_export(args) -> int:
    artifact = _load_model(args.model)
    net = artifact.net
    if args.config is None:
        raise CommandError(f"give --config (the configs of {args.model}: {', '.join(c.name for c in net.configs)})")
    if os.path.isdir(args.output):
        raise CommandError(f"the output {args.output} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(parent):
        raise CommandError(f"the output's directory {parent} does not exist")
    try:
        result = _export.export(net, args.config, args.output, args.format, layout=args.layout)
    except ImportError as e:
        raise CommandError(f"{args.format} export needs the Python package '{e.name or 'onnx'}', which is not "
                           "installed") from None
    diff = result["max_abs_diff"]
    print(f"wrote {result['path']}: {args.format} ({result['layout']} layout) of config {result['config']}, "
          f"{result['bytes']:,} bytes, {result['parameters']:,} parameters, max abs difference "
          f"{diff:.3g} from the dynamic net")
    return 0


# -- profile and run -----------------------------------------------------------------------
def _test_images(args):
    idx = _idx_paths(args, train=False)
    limit = args.test_limit if args.test_limit is not None else args.test_limit_default
    if idx:
        return _load_pair(idx["test_images"], idx["test_labels"], limit)
    return _data.fashion_mnist("test", limit=limit, raw=True)


def _cmd_profile(args) -> int:
    artifact = _load_model(args.model)
    cores = [[int(c) for c in part.split(",")] for part in args.cores.split("/")] if args.cores else []
    images, labels = _test_images(args)
    energy = None
    model = None if args.energy_model == "none" else args.energy_model
    if args.energy == "auto":
        meter, tried = _runtime.detect_energy_meter(platform=model)
        if meter is None:
            print("no energy meter on this machine (" + "; ".join(tried) + "): profiling latency and accuracy only")
        else:
            print(f"energy {'modelled' if meter.is_model else 'measured'} by {meter.source} ({meter.coverage})")
            energy = "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the line above already said where the energy comes from
        table = _runtime.profile(artifact, images, labels, threads=args.threads, core_sets=cores, warmup=args.warmup,
                                 repetitions=args.repetitions, energy=energy, energy_model=model,
                                 exit_thresholds=args.exit_thresholds, progress=sys.stderr.isatty())
    with_energy = any("energy_mj" in row["metrics"] for row in table)
    print(f"{'config':<8}{'knobs':<24}{'p50 us':>9}{'p95 us':>9}{'top-1':>9}" + (f"{'mJ':>9}" if with_energy else ""))
    for row in table:
        knobs = ",".join(f"{k}={v:g}" for k, v in sorted(row["knobs"].items()))
        m = row["metrics"]
        print(f"{row['config']:<8}{knobs:<24}{m['latency_p50_us']:>9.1f}{m['latency_p95_us']:>9.1f}"
              f"{100 * m['top1']:>8.2f}%" + (f"{m.get('energy_mj', float('nan')):>9.4f}" if with_energy else ""))
    out = args.output or args.model
    _io.save(artifact, out)
    print(f"wrote {len(table)} operating points to {out}")
    if args.plot:
        _runtime.plot_pareto(table, args.plot, title=f"{artifact.net.spec.name}: operating points")
        print(f"wrote {args.plot}")
    return 0


def _cmd_run(args) -> int:
    artifact = _load_model(args.model)
    if not artifact.operating_points:
        raise CommandError(f"{args.model} has no operating points: run 'dydnn profile {args.model}' first")
    trace = _runtime.read_trace(args.targets)
    images, _ = _test_images(args)
    inputs = artifact.normalization.apply(images)
    manager = _runtime.Manager(artifact.net, artifact.operating_points,
                               _runtime.SelectorOptions(min_dwell_s=args.dwell))
    result = _runtime.serve_trace(manager, inputs, trace, duration_s=args.duration)
    windows = result["windows"]
    judged = [w for w in windows if w["feasible"]]
    print(f"{result['requests']:,} requests, {result['switches']} switches, mean top-1 of the chosen points "
          f"{100 * result['mean_accuracy']:.2f}%")
    print(f"{sum(w['met'] for w in judged)}/{len(judged)} windows with a feasible point met their target "
          f"({100 * result['met_fraction']:.1f}%; {len(windows) - len(judged)} windows had none)")
    if args.log:
        manager.write_log(args.log)
        print(f"wrote {args.log}")
    if args.plot:
        _runtime.plot_run(result["log"], args.plot, title=f"{artifact.net.spec.name} under {args.targets}",
                          windows=windows)
        print(f"wrote {args.plot}")
    return 0


def _cmd_serve(args) -> int:
    if args.random is not None and (args.images or args.limit):
        raise CommandError("--random excludes --images and --limit")
    if args.random is not None:
        source = ["--random", str(args.random)]
    else:
        images = args.images or str(_data.FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz")
        source = ["--images", images] + (["--limit", str(args.limit)] if args.limit else [])
    cluster = _serve.LocalCluster(args.model, mode=args.mode, devices=args.devices,
                                  failure_timeout_ms=args.failure_timeout_ms, heartbeat_ms=args.heartbeat_ms,
                                  window=args.window)
    report = cluster.run(source, actions=args.kill + args.restart, timeout=args.timeout)
    ids = [a[0] for a in report["answers"]]
    once = len(ids) == len(set(ids)) == report["requests"]
    configs = ", ".join(f"{k} {v}" for k, v in sorted(report["configs"].items()))
    print(f"mode {report['mode']} ({report['flow']}): {report['answered']} of {report['requests']} requests in "
          f"{report['seconds']:.2f} s, {report['throughput']:.0f} req/s; configs: {configs}; "
          f"{report['bytes_per_inference']:.0f} bytes/inference")
    kills = [t for t, what, _ in report["actions"] if what == "kill"]
    for e in report["events"]:
        line = f"  t={e['t']:.3f} s device {e['rank']} {e['kind']} ({e['detail']})"
        if e["kind"] == "down" and kills:
            line += f", {1000 * (report['unix_zero'] + e['t'] - kills.pop(0)):.1f} ms after the kill"
        print(line)
    print(f"every request answered exactly once: {'yes' if once else 'NO'} "
          f"(resubmitted {report['resubmitted']}, duplicates dropped {report['duplicates']})")
    if args.report:
        Path(args.report).write_text(json.dumps(report))
        print(f"wrote {args.report}")
    return 0 if once and report["errors"] == 0 else 1


# -- entry point --------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the ``dydnn`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    User errors print ``dydnn: error: <one line>`` to stderr and return 2.
    """
    parser = build_parser()
    debug = os.environ.get("DYDNN_TRACEBACK", "") not in ("", "0")
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except BrokenPipeError:  # e.g. `dydnn eval DIR | head`: the reader has gone, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except CommandError as e:
        message = str(e)
    except FileNotFoundError as e:
        if debug:
            raise
        message = f"file not found: {e.filename}" if e.filename else _first_line(e)
    except (ValueError, IndexError, KeyError, RuntimeError, OSError) as e:
        if debug:
            raise
        message = _first_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
    except KeyboardInterrupt:
        print("dydnn: interrupted", file=sys.stderr)
        return 130
    print(f"dydnn: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
