"""Distributed Fluid serving from Python: launches the C++ ``dydnn_serve`` processes.

The dispatcher (rank 0) and one device process per island (ranks 1, 2) talk over
torch.distributed's c10d (a ``TCPStore`` and one Gloo pair per device); see
``docs/distributed.md``. :class:`LocalCluster` runs them all on this host over loopback,
can kill a device (``SIGKILL``) and restart it while requests flow, and returns the
dispatcher's report: every answer with the config that produced it, the device events
and the bytes sent.

Example::

    from dydnn.serve import LocalCluster
    cluster = LocalCluster("runs/fluid/model.dydnn", mode="ht")
    report = cluster.run(["--random", "2000"], actions=[(0.5, "kill", 2), (1.5, "restart", 2)])
    print(report["throughput"], report["configs"], report["events"])
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["MODES", "serve_binary", "free_port", "LocalCluster"]

#: The serving modes of ``dydnn_serve --mode``.
MODES = ("ht", "ha", "static", "dynamic")
_ACTIONS = ("kill", "restart")


def serve_binary() -> str:
    """The path of the ``dydnn_serve`` program: ``$DYDNN_SERVE``, else the build tree next
    to this package (``build/examples/dydnn_serve``), else ``dydnn_serve`` on PATH.
    Raises ``FileNotFoundError`` saying how to build it when none exists."""
    env = os.environ.get("DYDNN_SERVE")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"DYDNN_SERVE={env} is not a file")
        return env
    tree = Path(__file__).resolve().parents[2] / "build" / "examples" / "dydnn_serve"
    if tree.is_file():
        return str(tree)
    found = shutil.which("dydnn_serve")
    if found:
        return found
    raise FileNotFoundError("dydnn_serve not found: build it (make build) or set DYDNN_SERVE to its path")


def free_port() -> int:
    """A TCP port free on loopback now (for the store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} = {value!r} (valid: an integer >= {minimum})")
    return value


class LocalCluster:
    """A dispatcher and ``devices`` device processes on this host, over loopback.

    ``mode``: ``"ht"`` | ``"ha"`` | ``"static"`` | ``"dynamic"``. ``devices``: 1 or 2
    (device ``r`` holds island ``r - 1``). The time bounds are those of
    ``dydnn::dist::ClusterOptions`` (milliseconds). Raises ``ValueError`` naming a bad
    argument and ``FileNotFoundError`` for a missing model or program. Not thread-safe.

    To stand in for several hosts, ``launchers`` maps a rank to the command prefix that
    runs it elsewhere (``["ip", "netns", "exec", "host1"]``), ``bind_hosts`` a rank to its
    ``--bind-host``, and ``master_addr`` is the dispatcher's address as the devices reach it.
    """

    def __init__(self, model: Union[str, os.PathLike], mode: str = "ht", devices: int = 2, *,
                 port: Optional[int] = None, heartbeat_ms: int = 50, failure_timeout_ms: int = 500,
                 store_timeout_ms: int = 5000, window: int = 4, threads: int = 1,
                 log_dir: Optional[Union[str, os.PathLike]] = None, master_addr: str = "127.0.0.1",
                 launchers: Mapping[int, Sequence[str]] = {}, bind_hosts: Mapping[int, str] = {}):
        if mode not in MODES:
            raise ValueError(f"mode '{mode}' (valid: {', '.join(MODES)})")
        if devices not in (1, 2):
            raise ValueError(f"devices = {devices!r} (valid: 1 or 2, one per island)")
        self.model = str(model)
        if not Path(self.model).is_file():
            raise FileNotFoundError(f"model file not found: {self.model}")
        self.mode = mode
        self.devices = devices
        for what, ranks in (("launchers", launchers), ("bind_hosts", bind_hosts)):
            for r in ranks:
                if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= devices:
                    raise ValueError(f"{what}: rank {r!r} (valid: 0..{devices})")
        self.launchers = {r: list(p) for r, p in launchers.items()}
        self.bind_hosts = dict(bind_hosts)
        self.port = port if port is not None else free_port()
        self.cluster_args = [
            "--master-addr", master_addr, "--master-port", str(self.port), "--world-size", str(devices + 1),
            "--heartbeat-ms", str(_positive("heartbeat_ms", heartbeat_ms)),
            "--failure-timeout-ms", str(_positive("failure_timeout_ms", failure_timeout_ms)),
            "--store-timeout-ms", str(_positive("store_timeout_ms", store_timeout_ms)),
            "--window", str(_positive("window", window)), "--threads", str(_positive("threads", threads))]
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="dydnn_serve_"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.binary = serve_binary()
        self._devices: Dict[int, subprocess.Popen] = {}
        self._last: Dict[int, subprocess.Popen] = {}  # kept after close()
        self._starts: Dict[int, int] = {}

    def start_device(self, rank: int) -> subprocess.Popen:
        """Starts (or restarts) device ``rank``; its stderr goes to ``log_dir/device<rank>.<n>.log``."""
        if rank < 1 or rank > self.devices:
            raise ValueError(f"device rank {rank} (valid: 1..{self.devices})")
        n = self._starts.get(rank, 0)
        self._starts[rank] = n + 1
        log = open(self.log_dir / f"device{rank}.{n}.log", "w")
        p = subprocess.Popen(self._command(rank, ["--role", "device", "--model", self.model]),
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self._devices[rank] = self._last[rank] = p
        return p

    def device(self, rank: int) -> Optional[subprocess.Popen]:
        """The last process started as device ``rank`` (maybe exited), or ``None``."""
        return self._last.get(rank)

    def _command(self, rank: int, args: Sequence[str]) -> List[str]:
        bind = ["--bind-host", self.bind_hosts[rank]] if rank in self.bind_hosts else []
        return [*self.launchers.get(rank, []), self.binary, *args, "--rank", str(rank), *self.cluster_args, *bind]

    def kill_device(self, rank: int) -> float:
        """``SIGKILL``s device ``rank``; returns the time (``time.time()``) of the kill."""
        p = self._devices.get(rank)
        if p is None or p.poll() is not None:
            raise ValueError(f"device {rank} is not running")
        t = time.time()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        return t

    def run(self, source: Sequence[str], *,
            actions: Sequence[Tuple[float, Union[str, Callable[[int], object]], int]] = (),
            timeout: float = 120.0, logits: Optional[Union[str, os.PathLike]] = None,
            extra: Sequence[str] = ()) -> dict:
        """Serves the requests ``source`` names (``["--random", "1000"]``, ``["--images", IDX,
        "--limit", "500"]``) and returns the dispatcher's report (``dydnn_serve --report``)
        with ``actions`` added. ``actions``: ``(seconds after serving began, "kill" |
        "restart", rank)``, each done on time; the action may also be a function, called
        with the rank (unplugging its network, say); the report's ``"actions"`` hold
        ``(unix time, action or function name, rank)``. Raises ``TimeoutError`` (every process killed) when
        the run takes over ``timeout`` seconds, ``RuntimeError`` with the dispatcher's
        error when it fails."""
        for a in actions:
            if len(a) != 3 or not (callable(a[1]) or a[1] in _ACTIONS):
                raise ValueError(f"action {a!r} (valid: (seconds, 'kill' | 'restart' | a function, rank))")
        report_path = self.log_dir / "report.json"
        cmd = [*self._command(0, ["--role", "dispatcher", "--model", self.model, "--mode", self.mode,
                                  "--report", str(report_path), "--quiet"]), *extra, *source]
        if logits is not None:
            cmd += ["--logits", str(logits)]
        dispatcher = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        serving = threading.Event()
        err_lines: List[str] = []

        def read_stderr():
            for line in dispatcher.stderr:
                err_lines.append(line)
                if " requests" in line:
                    serving.set()
        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        done: List[Tuple[float, str, int]] = []
        deadline = time.monotonic() + timeout
        try:
            for r in range(1, self.devices + 1):
                self.start_device(r)
            while not serving.wait(0.05):
                if dispatcher.poll() is not None or time.monotonic() > deadline:
                    break
            began = time.monotonic()
            for at, what, rank in sorted(actions, key=lambda a: a[0]):
                while time.monotonic() < began + at and dispatcher.poll() is None:
                    time.sleep(0.002)
                if dispatcher.poll() is not None:
                    break
                if callable(what):
                    done.append((time.time(), getattr(what, "__name__", "call"), rank))
                    what(rank)
                elif what == "kill":
                    done.append((self.kill_device(rank), what, rank))
                else:
                    self.start_device(rank)
                    done.append((time.time(), what, rank))
            out, _ = dispatcher.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.close()
            dispatcher.kill()
            dispatcher.wait()
            raise TimeoutError(f"the dispatcher did not finish within {timeout} s (logs in {self.log_dir})")
        finally:
            if dispatcher.poll() is None:  # interrupted (a signal, an error in an action)
                dispatcher.kill()
                dispatcher.wait()
            reader.join(timeout=5)
            self.close()
        if dispatcher.returncode != 0 and not report_path.is_file():
            raise RuntimeError((err_lines[-1] if err_lines else f"dydnn_serve exited with {dispatcher.returncode}")
                               .strip())
        report = json.loads(report_path.read_text())
        report["actions"] = done
        report["returncode"] = dispatcher.returncode
        report["stdout"] = out
        return report

    def close(self) -> None:
        """Waits briefly for the devices (the dispatcher stops them) and kills what is left."""
        for p in self._devices.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._devices.clear()
