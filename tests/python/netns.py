"""Linux network namespaces standing in for hosts, for the cross-host serving tests.

``Hosts(n)`` makes ``n`` namespaces ("hosts"), each with one interface ``eth0`` at
``10.77.0.<rank + 1>/24``, all wired to a bridge in a further namespace (the "switch").
Nothing touches the namespace the tests run in, so the addresses never collide with
the machine's; the names carry this process's id and a random tag, so parallel runs
do not collide either, and a run finds and removes what a killed run left behind.

``Hosts.unavailable()`` says why namespaces cannot be used here (not root, no ``ip``,
no CAP_NET_ADMIN, ...), or ``None``.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from typing import List, Optional

PREFIX = "dydnn-"
SUBNET = "10.77.0"
_TIMEOUT = 20  # seconds for one `ip` command


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_TIMEOUT)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Hosts:
    """``n`` virtual hosts on one switch; ``close()`` (idempotent) removes them all."""

    @staticmethod
    def unavailable() -> Optional[str]:
        """Why network namespaces cannot be made here, or ``None`` when they can."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "no `ip` binary (Debian package iproute2)"
        if shutil.which("unshare") is None:
            return "no `unshare` binary (util-linux)"
        try:
            r = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, timeout=_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"`unshare -n` failed: {e}"
        if r.returncode != 0:
            return f"`unshare -n` failed (no CAP_NET_ADMIN?): {r.stderr.strip()}"
        probe = f"{PREFIX}{os.getpid()}-probe{secrets.token_hex(2)}"
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=_TIMEOUT)
        if r.returncode != 0:
            return f"`ip netns add` failed: {r.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=_TIMEOUT)
        return None

    @staticmethod
    def remove_stale() -> None:
        """Removes the namespaces of runs whose process is gone (``dydnn-<pid>-...``)."""
        r = _ip("netns", "list", check=False)
        for line in r.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            parts = name.split("-")
            if name.startswith(PREFIX) and len(parts) > 2 and parts[1].isdigit() and not _alive(int(parts[1])):
                _ip("netns", "del", name, check=False)

    def __init__(self, n: int):
        self.tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.switch = f"{self.tag}-sw"
        self.names: List[str] = [f"{self.tag}-h{i}" for i in range(n)]
        self._made: List[str] = []
        try:
            for ns in [self.switch, *self.names]:
                _ip("netns", "add", ns)
                self._made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i, ns in enumerate(self.names):
                # Created in the switch, then one end moved: the names never exist outside them.
                _ip("-n", self.switch, "link", "add", self.port(i), "type", "veth", "peer", "name", "eth0")
                _ip("-n", self.switch, "link", "set", "eth0", "netns", ns)
                _ip("-n", self.switch, "link", "set", self.port(i), "master", "br0")
                _ip("-n", self.switch, "link", "set", self.port(i), "up")
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    def address(self, i: int) -> str:
        """Host ``i``'s address."""
        return f"{SUBNET}.{i + 1}"

    def port(self, i: int) -> str:
        """The switch's port to host ``i``."""
        return f"p{i}"

    def prefix(self, i: int) -> List[str]:
        """The command prefix that runs a program on host ``i``."""
        return ["ip", "netns", "exec", self.names[i]]

    def set_link(self, i: int, up: bool) -> None:
        """Plugs (``up``) or unplugs host ``i``'s cable at the switch: while it is down, its
        packets are dropped silently, as in a network partition (no reset, no error)."""
        _ip("-n", self.switch, "link", "set", self.port(i), "up" if up else "down")

    def close(self) -> None:
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made.clear()
