"""Tables and plots of training results: accuracy against cost, per config.

Both functions take *results documents*: the dicts that
:meth:`dydnn.train.Trainer.results` returns and ``dydnn train`` writes to
``results.json`` (format ``dydnn-results/1``), or paths of such files.

Example::

    from dydnn import plots
    print(plots.table("runs/incremental/results.json"))
    fig = plots.accuracy_vs_cost(["runs/incremental/results.json", "runs/static/results.json"],
                                 path="accuracy.png")

The figure is drawn without touching matplotlib's global backend: outside Jupyter it
is a plain ``matplotlib.figure.Figure`` rendered by Agg (works with no display), in
Jupyter it is made through ``pyplot`` so the inline backend renders it, once, as the
cell's value. If your script already uses ``pyplot``, the figure is a ``pyplot`` figure
too, so ``plt.show()`` shows it.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

__all__ = ["load_results", "table", "accuracy_vs_cost", "mflops"]

ResultsLike = Union[dict, str, os.PathLike]


def load_results(results: ResultsLike) -> dict:
    """A results document: ``results`` itself when it is a dict, else the JSON file at that path
    (a run directory stands for its ``results.json``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` when the file is not
    JSON or holds no ``"evaluations"`` list.
    """
    if isinstance(results, dict):
        doc, source = results, "results"
    else:
        path = Path(results)
        if path.is_dir():  # a run directory written by `dydnn train`
            path = path / "results.json"
        try:
            doc = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"[dydnn.plots] {path}: not a JSON file ({e})") from None
        source = str(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("evaluations"), list):
        raise ValueError(f"[dydnn.plots] {source}: not a dydnn results document (no \"evaluations\" list)")
    return doc


def mflops(evaluation: dict) -> float:
    """Millions of floating-point operations for one image at the evaluation's config (2 x MACs / 1e6)."""
    return 2.0 * float(evaluation["macs"]) / 1e6


def _evaluations(results) -> List[dict]:
    if isinstance(results, list):  # a bare list of evaluation dicts (Trainer.evaluate's answer)
        return results
    return load_results(results)["evaluations"]


def table(results: Union[ResultsLike, Sequence[dict]]) -> str:
    """The per-config text table: config, top-1 (%), loss, normalised confidence, MFLOPs,
    parameters and the median batch-1 latency (microseconds; ``-`` when not measured).

    ``results``: a results document, its path, or the list of evaluation dicts
    :meth:`dydnn.train.Trainer.evaluate` returns. Returns the table as lines of text
    (header, rule, one line per config), without a trailing newline.
    """
    rows = _evaluations(results)
    header = f"{'config':<8}{'top-1':>9}{'loss':>9}{'norm.conf':>11}{'MFLOPs':>9}{'params':>10}{'latency us':>12}"
    lines = [header, "-" * len(header)]
    for e in rows:
        latency = e.get("latency_us")
        lines.append(
            f"{e['config']:<8}{100.0 * e['top1']:>8.2f}%{e['loss']:>9.4f}{e['normalised_confidence']:>11.4f}"
            f"{mflops(e):>9.3f}{e['parameters']:>10,}{(f'{latency:.1f}' if latency is not None else '-'):>12}"
        )
    return "\n".join(lines)


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where the inline backend draws figures)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _new_figure(figsize):
    """A Figure that renders without a display and without changing the global backend."""
    if _in_notebook() or "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=figsize)
        if _in_notebook():
            plt.close(fig)  # shown as the cell's value, not a second time when the cell ends
        return fig
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _labels(docs: List[dict], names: List[str]) -> List[str]:
    """A run's own ``label`` field when it has one; else its method, with its spec name where
    methods repeat, and with the file name where that repeats too."""
    if all("label" in d for d in docs):
        return [str(d["label"]) for d in docs]
    method = [d.get("method", "?") for d in docs]
    repeats = Counter(method)
    labels = [m if repeats[m] == 1 else f"{m} ({d.get('spec', '?')})" for m, d in zip(method, docs)]
    counts = Counter(labels)
    return [f"{label} [{name}]" if counts[label] > 1 else label for label, name in zip(labels, names)]


def accuracy_vs_cost(results: Union[ResultsLike, Iterable[ResultsLike]], path: Union[str, os.PathLike, None] = None,
                     title: Optional[str] = None):
    """One figure, two panels: top-1 accuracy against MFLOPs (2 x MACs / 1e6), and against
    the measured batch-1 latency (``latency_us``, microseconds).

    ``results``: results documents (dicts, as ``Trainer.results`` returns) or paths of
    ``results.json`` files, or one of them. Each gives one curve (line and markers, each
    point annotated with its config), labelled by its ``method`` (plus the spec name where
    methods repeat). Runs without latency are left out of the second panel, which says so.
    ``path``: when given, the figure is also saved there (PNG at 120 dpi unless the suffix
    names another format). Returns the ``matplotlib.figure.Figure``.
    Raises ``ValueError`` for an empty list or a file that is not a results document.
    """
    if isinstance(results, (dict, str, os.PathLike)):
        results = [results]
    items = list(results)
    if not items:
        raise ValueError("[dydnn.plots] accuracy_vs_cost: no results given (need at least 1)")
    docs = [load_results(r) for r in items]
    names = [f"#{k + 1}" if isinstance(r, dict) else (Path(r).parent.name or Path(r).name) for k, r in enumerate(items)]
    labels = _labels(docs, names)

    threads = {d.get("latency_threads") for d in docs if any(e.get("latency_us") is not None for e in d["evaluations"])}
    if len(threads) > 1:  # runs timed on different thread counts: say which is which
        labels = [f"{label}, latency on {d.get('latency_threads')} thread(s)" if d.get("latency_threads") else label
                  for label, d in zip(labels, docs)]
    rows = -(-len(docs) // 3)  # legend rows, 3 runs a row
    height = 4.4 + 0.3 * rows  # inches: the panels and the legend below them
    fig = _new_figure((11.0, height))
    flops_ax, latency_ax = fig.subplots(1, 2, sharey=True)
    no_latency = []
    for k, (doc, label) in enumerate(zip(docs, labels)):
        colour = f"C{k % 10}"
        evals = doc["evaluations"]
        _curve(flops_ax, [mflops(e) for e in evals], [100.0 * e["top1"] for e in evals], [e["config"] for e in evals],
               colour, label)
        timed = [(e["latency_us"], 100.0 * e["top1"], e["config"]) for e in evals if e.get("latency_us") is not None]
        if timed:
            xs, ys, ns = zip(*timed)
            _curve(latency_ax, xs, ys, ns, colour, label)
        else:
            no_latency.append(label)

    flops_ax.set_xlabel("MFLOPs per image (2 x MACs / 1e6)")
    flops_ax.set_ylabel("top-1 accuracy (%)")
    flops_ax.set_title("accuracy against compute")
    (n,) = threads if len(threads) == 1 else (None,)
    latency_ax.set_xlabel("latency at batch 1" + (f", {n} thread{'s' if n != 1 else ''}" if n else "") +
                          " (median, microseconds)")
    latency_title = "accuracy against measured latency"
    if no_latency and len(no_latency) < len(docs):
        latency_title += "\n(no latency measured for: " + ", ".join(no_latency) + ")"
    latency_ax.set_title(latency_title)
    for ax in (flops_ax, latency_ax):
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.1, y=0.12)  # room for the config names
        ax.autoscale_view()
        ax.set_xlim(left=0)  # costs from zero: the ratios between configs read true
    if len(no_latency) == len(docs):
        latency_ax.set_xticks([])
        latency_ax.text(0.5, 0.5, "no latency measured\n(results written with --no-latency or latency=False)",
                        transform=latency_ax.transAxes, ha="center", va="center", color="0.35")
    # One legend for both panels, below them, where it covers no point and no config name.
    fig.legend(*flops_ax.get_legend_handles_labels(), loc="lower center", ncol=min(3, len(docs)), frameon=False)
    datasets = sorted({d.get("dataset") for d in docs if d.get("dataset")})
    fig.suptitle(title if title is not None else
                 "Accuracy against cost per config" + (f" ({', '.join(datasets)})" if datasets else ""))
    fig.tight_layout(rect=(0, 0.3 * rows / height, 1, 1))
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def _curve(ax, xs, ys, configs, colour, label) -> None:
    ax.plot(xs, ys, marker="o", color=colour, label=label)
    for x, y, name in zip(xs, ys, configs):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 5), fontsize="small", color=colour)
