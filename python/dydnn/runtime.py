"""The runtime from Python: profile a model into operating points, pick points with the
selector, serve requests under a manager, and plot both.

The decisions are made by the C++ runtime (``dydnn::runtime``), so a Python experiment and
a C++ deployment running the same table choose the same points.

Example::

    art = dydnn.load_artifact("model.dydnn")
    table = dydnn.runtime.profile(art, images, labels, threads=[1, 2])   # also stored in art
    dydnn.save(art, "model.dydnn")                                        # with its operating points
    manager = dydnn.runtime.Manager(art.net, table)
    manager.set_targets(max_latency_s=150e-6)
    logits = manager.infer(x)                                             # decide, apply, run, measure
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch

from . import _C
from ._C import LadderPolicy, Point, Selector, SelectorOptions, allowed_cpus, pareto_front, pin_process
from .io import Artifact
from .nn import DynamicNet

__all__ = ["Point", "Selector", "SelectorOptions", "LadderPolicy", "Manager", "profile", "to_points",
           "detect_energy_meter", "SystemManager",
           "pareto_front", "plot_pareto", "plot_run", "read_trace", "serve_trace", "allowed_cpus", "pin_process"]

Table = List[dict]


def _net_and_norm(model):
    if isinstance(model, Artifact):
        return model.net, model.normalization
    if isinstance(model, DynamicNet):
        return model, _C.Normalization()
    raise TypeError(f"[dydnn.runtime] expected a dydnn.io.Artifact or a dydnn.nn.DynamicNet, got {type(model).__name__}")


def detect_energy_meter(root: str = "/", platform: Optional[str] = None, domain: Optional[str] = None):
    """This machine's energy meter (RAPL, Jetson INA3221, Odroid INA231, hwmon, tried in that
    order) and the list of what was tried and why each was rejected: ``(meter or None, tried)``.
    ``meter.energy_j()`` is cumulative joules; ``meter.source`` names it.

    With ``platform`` (a built-in platform name such as ``"generic_host"`` or ``"exynos5422"``)
    a machine without a sensor falls back to that platform's power model driven by the busy CPU
    time in ``/proc/stat`` (static power + ``C V^2 f`` per busy core of ``domain``, default the
    first CPU cluster): ``meter.is_model`` is then true and ``meter.source`` reads
    ``"model:<platform>:<domain>"``."""
    return _C.detect_energy_meter(root, platform or "", domain or "")


def profile(model: Union[Artifact, DynamicNet], images: torch.Tensor, labels: torch.Tensor, *,
            threads: Sequence[int] = (1,), core_sets: Sequence[Sequence[int]] = (), warmup: int = 20,
            repetitions: int = 200, energy: Union[None, str, Callable[[], float]] = None, energy_source: str = "",
            energy_model: Optional[str] = "generic_host", normalization=None, progress: bool = True,
            exit_points: bool = True, exit_thresholds: Sequence[float] = (), exit_criterion: str = "entropy") -> Table:
    """Measures every config under each thread count and core set (the knobs of this machine).

    ``images`` (uint8 or already normalised float, ``[N, C, H, W]``) and ``labels`` give each
    config's top-1; latency is timed at batch 1 (median and p95). ``energy`` is a callable
    returning cumulative joules, or ``"auto"`` for :func:`detect_energy_meter`: a sensor when
    the machine has one, else the power model of the platform ``energy_model`` driven by the
    CPU time (a warning says the energy is modelled and what was tried; ``energy_model=None``
    profiles without energy instead); without ``energy`` power and energy stay unknown. With an :class:`~dydnn.io.Artifact` the table is also stored in
    ``model.operating_points`` and the energy source in ``metadata["extra"]["energy_source"]``
    (save the artifact to keep them). Returns the table: dicts with ``config``, ``knobs`` and
    ``metrics`` (``latency_p50_us``, ``latency_p95_us``, ``top1``, and ``energy_mj``,
    ``power_w`` with a meter).

    A net with early exits also gets width x exit points (knob ``exit``) unless
    ``exit_points=False``, and for each of ``exit_thresholds`` an adaptive point per config
    (knobs ``exit_threshold``, ``exit_criterion``; metrics ``exit_rate_<e>``, and latency
    expected from those rates). :class:`ModelManager` runs each point at its depth.
    """
    net, norm = _net_and_norm(model)
    if normalization is not None:
        norm = normalization
    if energy == "auto":
        meter, tried = detect_energy_meter(platform=energy_model)
        if meter is None or meter.is_model:
            import warnings
            what = (f"energy is modelled by {meter.source}, not measured" if meter is not None
                    else "profiling without energy")
            warnings.warn(f"[dydnn.runtime] no energy meter on this machine; {what}. Tried: " + "; ".join(tried),
                          stacklevel=2)
        if meter is None:
            energy = None
        else:
            energy, energy_source = meter.energy_j, energy_source or meter.source
    elif isinstance(energy, str):
        raise ValueError(f"[dydnn.runtime] energy={energy!r} (valid: None, 'auto' or a callable returning joules)")
    table = _C.profile_net(net._impl, images, labels, norm, list(threads), [list(c) for c in core_sets], warmup,
                           repetitions, energy, progress, bool(exit_points), [float(t) for t in exit_thresholds],
                           exit_criterion)
    if isinstance(model, Artifact):
        model.operating_points = table
        extra = dict(model.metadata.get("extra") or {})
        if energy is not None:
            extra["energy_source"] = energy_source or "caller-supplied reader"
        else:
            extra.pop("energy_source", None)
        model.metadata["extra"] = extra
    return table


def to_points(table: Table, net: Optional[DynamicNet] = None) -> List[Point]:
    """The selector's points from an operating-point table (``latency_p50_us`` and ``top1`` required)."""
    groups = net.spec.groups if net is not None else 64
    points = []
    for k, row in enumerate(table):
        metrics, knobs = row.get("metrics", {}), dict(row.get("knobs", {}))
        if "latency_p50_us" not in metrics or "top1" not in metrics:
            raise ValueError(f"[dydnn.runtime] operating point {k} ({row.get('config')}) lacks latency_p50_us or top1")
        config = _C.Config(row["config"], groups)
        name = f"{config.name}@" + ",".join(f"{key}={value:g}" for key, value in sorted(knobs.items()))
        energy = metrics.get("energy_mj")
        points.append(Point(config.mask, 1e-6 * metrics["latency_p50_us"], metrics["top1"], name, knobs,
                            metrics.get("power_w", math.nan), 1e-3 * energy if energy is not None else math.nan))
    return points


class Manager:
    """One model under the runtime manager (C++ ``ModelManager``): per request it decides,
    applies the point's config and knobs (threads, cores), runs, measures and logs.

    ``table`` is an operating-point table (``profile``'s, or an artifact's) or a list of
    :class:`Point`. ``start(period_s)`` moves the decisions to a background thread.
    """

    def __init__(self, net: DynamicNet, table: Union[Table, Sequence[Point]],
                 options: Optional[SelectorOptions] = None):
        points = list(table)
        if points and isinstance(points[0], dict):
            points = to_points(points, net)
        self.net = net
        self._cpp = _C.ModelManager(net._impl, points, options or SelectorOptions())

    def set_targets(self, max_latency_s: float = math.inf, min_accuracy: float = 0.0, max_power_w: float = math.inf,
                    max_energy_j: float = math.inf, objective: str = "max_accuracy") -> None:
        """New targets; they apply from the next decision (thread-safe)."""
        self._cpp.set_targets(max_latency_s, min_accuracy, max_power_w, max_energy_j, objective)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x`` (normalised, ``[N, C, H, W]``) at the point the manager chooses."""
        return self._cpp.infer(x)

    def start(self, period_s: float) -> None:
        self._cpp.start(period_s)

    def stop(self) -> None:
        self._cpp.stop()

    @property
    def points(self) -> List[Point]:
        return self._cpp.points

    @property
    def current(self) -> Point:
        return self._cpp.points[self._cpp.current]

    @property
    def slowdown(self) -> float:
        return self._cpp.slowdown

    def log(self) -> List[dict]:
        """Every decision: time, targets, measured latency, slowdown, point, config, knobs, reason."""
        return self._cpp.log()

    def write_log(self, path: Union[str, Path]) -> None:
        """The decision log as CSV."""
        Path(path).write_text(self._cpp.log_csv())


class SystemManager:
    """Several :class:`Manager`s sharing knobs of this process (``"threads"``, ``"cores"``):
    ``decide()`` picks the cheapest shared state in which every model has a feasible point,
    applies it, and lets each model re-pick its config there (C++ ``SystemManager``)."""

    def __init__(self, shared_knobs: Sequence[str], models: Iterable[Manager] = ()):
        self._cpp = _C.SystemManager(list(shared_knobs))
        self.models: List[Manager] = []
        for m in models:
            self.add(m)

    def add(self, model: Manager) -> None:
        self._cpp.add(model._cpp)
        self.models.append(model)

    def decide(self) -> Dict[str, float]:
        """The shared state chosen for the models' current targets (applied)."""
        return self._cpp.decide()

    def states(self) -> List[Dict[str, float]]:
        """Every shared state in all registered tables, cheapest first."""
        return self._cpp.states()


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_pareto(table: Union[Table, Sequence[Point]], path: Union[str, Path], title: str = "Operating points") -> None:
    """Top-1 against latency for every point, the Pareto front over (latency, energy,
    accuracy) highlighted; colour = energy per inference where known."""
    plt = _pyplot()
    points = to_points(table) if table and isinstance(list(table)[0], dict) else list(table)
    front = set(pareto_front(points))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    energy = [p.energy_per_inference() for p in points]
    known = all(math.isfinite(e) for e in energy)
    sc = ax.scatter([1e6 * p.latency_s for p in points], [100 * p.accuracy for p in points],
                    c=[1e3 * e for e in energy] if known else "tab:gray", s=22, alpha=0.7, label="operating points")
    if known:
        fig.colorbar(sc, ax=ax, label="energy per inference (mJ)")
    ordered = sorted(front, key=lambda k: points[k].latency_s)
    ax.plot([1e6 * points[k].latency_s for k in ordered], [100 * points[k].accuracy for k in ordered], "o-",
            color="tab:red", mfc="none", label="Pareto front")
    for k in ordered:
        ax.annotate(points[k].name, (1e6 * points[k].latency_s, 100 * points[k].accuracy), fontsize=7,
                    xytext=(3, -10), textcoords="offset points")
    ax.set_xlabel("latency per inference, median (us)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_run(log: Sequence[dict], path: Union[str, Path], title: str = "Runtime manager",
             windows: Optional[Sequence[dict]] = None, shade: Sequence[tuple] = ()) -> None:
    """A run over time: measured latency against the target, the config, the threads and
    the accuracy of the chosen point (one panel each). ``shade`` marks intervals
    ``(start_s, end_s, label)`` relative to the run's start (e.g. a competing process).
    The latency axis stops at 3x the largest target; the outliers above are counted."""
    plt = _pyplot()
    if not log:
        raise ValueError("[dydnn.runtime] plot_run: the log is empty")
    t0 = log[0]["time_s"]
    t = [e["time_s"] - t0 for e in log]
    configs = sorted({e["config"] for e in log}, key=lambda c: (len(c), c))
    fig, axes = plt.subplots(4, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, [1e6 * e["measured_latency_s"] for e in log], ".", ms=2, alpha=0.5, label="measured")
    axes[0].step(t, [1e6 * e["max_latency_s"] for e in log], where="post", color="tab:red", label="target")
    if windows:
        axes[0].plot([w["end_s"] - t0 for w in windows], [1e6 * w["p50_latency_s"] for w in windows], "-",
                     color="tab:green", label="window median")
    top = 3e6 * max(e["max_latency_s"] for e in log if math.isfinite(e["max_latency_s"])) if any(
        math.isfinite(e["max_latency_s"]) for e in log) else None
    if top:
        above = sum(1e6 * e["measured_latency_s"] > top for e in log)
        axes[0].set_ylim(0, top)
        axes[0].text(0.01, 0.95, f"{above} of {len(log)} above the axis (preempted)", transform=axes[0].transAxes,
                     fontsize=8, va="top")
    for start, end, label in shade:
        for ax in axes:
            ax.axvspan(start, end, color="tab:gray", alpha=0.15, label=label if ax is axes[0] else None)
    axes[0].set_ylabel("latency (us)")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].step(t, [configs.index(e["config"]) for e in log], where="post")
    axes[1].set_yticks(range(len(configs)))
    axes[1].set_yticklabels(configs)
    axes[1].set_ylabel("config")
    axes[2].step(t, [e["knobs"].get("threads", math.nan) for e in log], where="post", color="tab:purple")
    axes[2].set_ylabel("threads")
    axes[3].step(t, [100 * e["accuracy"] for e in log], where="post", color="tab:orange")
    axes[3].set_ylabel("top-1 (%)")
    axes[3].set_xlabel("time (s)")
    axes[0].set_title(title)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_trace(path: Union[str, Path]) -> List[dict]:
    """A targets trace: CSV with a header ``time_s,max_latency_us`` and optionally
    ``min_accuracy``, ``max_power_w`` and ``objective`` columns; each row holds from its
    time until the next row's. Raises ``ValueError`` naming the line for a bad row."""
    import csv

    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"time_s", "max_latency_us"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"[dydnn.runtime] {path}: the header lacks {', '.join(sorted(missing))} "
                             "(columns: time_s,max_latency_us[,min_accuracy][,max_power_w][,objective])")
        for line, row in enumerate(reader, start=2):
            try:
                entry = {"time_s": float(row["time_s"]), "max_latency_s": 1e-6 * float(row["max_latency_us"]),
                         "min_accuracy": float(row.get("min_accuracy") or 0.0),
                         "max_power_w": float(row.get("max_power_w") or math.inf),
                         "objective": (row.get("objective") or "max_accuracy").strip()}
            except ValueError as e:
                raise ValueError(f"[dydnn.runtime] {path}:{line}: {e}") from None
            if rows and entry["time_s"] < rows[-1]["time_s"]:
                raise ValueError(f"[dydnn.runtime] {path}:{line}: time_s {entry['time_s']} goes back in time")
            if not entry["max_latency_s"] > 0:
                raise ValueError(f"[dydnn.runtime] {path}:{line}: max_latency_us must be > 0")
            rows.append(entry)
    if not rows:
        raise ValueError(f"[dydnn.runtime] {path}: the trace has no rows")
    return rows


def serve_trace(manager: Manager, inputs: torch.Tensor, trace: Sequence[dict], duration_s: Optional[float] = None,
                window_s: float = 0.1, progress: bool = False) -> dict:
    """Serves ``inputs`` (normalised, one request per image, cycling) back to back under
    ``manager`` while the targets follow ``trace``; returns the log and per-window results.

    A window (``window_s`` long) meets its target when the median of its requests' measured
    latency over the target in force for each is at most 1; ``met_fraction`` counts only the windows where the table had a
    feasible point for at least half of the decisions (``feasible``).
    """
    import time

    end = duration_s if duration_s is not None else trace[-1]["time_s"] + max(
        1.0, trace[-1]["time_s"] - (trace[-2]["time_s"] if len(trace) > 1 else 0.0))
    manager._cpp.clear_log()
    start = time.perf_counter()
    row, k, n = -1, 0, inputs.shape[0]
    while True:
        t = time.perf_counter() - start
        if t >= end:
            break
        while row + 1 < len(trace) and trace[row + 1]["time_s"] <= t:
            row += 1
            r = trace[row]
            manager.set_targets(r["max_latency_s"], r["min_accuracy"], r["max_power_w"], objective=r["objective"])
        if row < 0:
            row = 0
            r = trace[0]
            manager.set_targets(r["max_latency_s"], r["min_accuracy"], r["max_power_w"], objective=r["objective"])
        manager.infer(inputs[k % n:k % n + 1])
        k += 1
    log = manager.log()
    # Each decision's measured latency belongs to the inference before it: shift by one.
    samples = [(log[i]["time_s"], log[i + 1]["measured_latency_s"], log[i]) for i in range(len(log) - 1)]
    windows = []
    if samples:
        t0 = samples[0][0]
        bucket = []
        for t, latency, entry in samples:
            if bucket and t - t0 >= window_s:
                windows.append(_window(bucket, t0))
                bucket, t0 = [], t
            bucket.append((t, latency, entry))
        if bucket:
            windows.append(_window(bucket, t0))
    judged = [w for w in windows if w["feasible"]]
    return {"log": log, "windows": windows, "requests": k,
            "met_fraction": sum(w["met"] for w in judged) / len(judged) if judged else math.nan,
            "mean_accuracy": sum(e["accuracy"] for _, _, e in samples) / len(samples) if samples else math.nan,
            "switches": sum(1 for e in log[1:] if e["switched"])}


def _window(bucket, t0) -> dict:
    import statistics

    # Each request is judged against the target in force when it ran, so a window that holds
    # a step of the target is not charged the old requests against the new target.
    ratios = [latency / e["max_latency_s"] for _, latency, e in bucket]
    feasible = sum(e["feasible"] for _, _, e in bucket)
    return {"start_s": t0, "end_s": bucket[-1][0], "requests": len(bucket), "target_s": bucket[-1][2]["max_latency_s"],
            "p50_latency_s": statistics.median(latency for _, latency, _ in bucket),
            "p50_latency_over_target": statistics.median(ratios), "met": statistics.median(ratios) <= 1.0,
            "feasible": 2 * feasible >= len(bucket)}
