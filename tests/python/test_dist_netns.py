"""Distributed serving across hosts: Linux network namespaces stand in for them.

The dispatcher runs in one namespace ("host" 10.77.0.1) and each device in its own
(10.77.0.2, 10.77.0.3), wired by veth pairs to a bridge (tests/python/netns.py); nothing
but the addresses differs from the loopback runs of test_dist.py. Unplugging a device's
cable at the switch partitions it silently (no reset, no error): the dispatcher must see
the loss by the heartbeat within the failure timeout, and the device must rejoin by itself
when the cable is back (a short outage) or exit with an error (an outage longer than the
store timeout) so that a supervisor restarts it. The dispatcher's own cable out loses both
devices; both rejoin.

Skipped (with the reason) where namespaces cannot be made: not root, no `ip`, no
CAP_NET_ADMIN. Every test has a hard timeout (SIGALRM) and removes its namespaces even
when it fails.
"""
import signal
import subprocess
import threading
import time

import pytest

from dydnn import serve
from conftest import built_program
from dist_checks import check_answers, events, models  # noqa: F401 (a fixture)
from netns import Hosts

RUN_TIMEOUT = 120
TEST_TIMEOUT = 240  # seconds, the hard limit of each test
FAILURE_TIMEOUT_MS = 500


@pytest.fixture(scope="module")
def binary():
    return str(built_program("examples/dydnn_serve"))


@pytest.fixture(scope="module")
def namespaces_available():
    why = Hosts.unavailable()
    if why:
        pytest.skip(why)
    Hosts.remove_stale()


@pytest.fixture
def hosts(namespaces_available):
    """Three hosts (dispatcher, device 1, device 2), removed after the test."""
    h = Hosts(3)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(autouse=True)
def hard_timeout():
    def fire(signum, frame):
        raise TimeoutError(f"the test ran over {TEST_TIMEOUT} s")
    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _cluster(models, hosts, mode, tmp_path, bind=False, **kw):
    """The cluster across the hosts; `bind`: pass each rank's address as --bind-host (else
    each process finds it, as the source of its route to the dispatcher)."""
    return serve.LocalCluster(models["cross"][0], mode=mode, devices=2, log_dir=tmp_path / "logs",
                              master_addr=hosts.address(0), launchers={r: hosts.prefix(r) for r in range(3)},
                              bind_hosts={r: hosts.address(r) for r in range(3)} if bind else {},
                              failure_timeout_ms=FAILURE_TIMEOUT_MS, **kw)


def _unplug(hosts):
    def unplug(rank):
        hosts.set_link(rank, False)
    return unplug


def _plug(hosts):
    def plug(rank):
        hosts.set_link(rank, True)
    return plug


def _action_time(report, name):
    return next(t for t, what, _ in report["actions"] if what == name)


def _detection(report, rank, cause):
    """The first loss of `rank`: seconds from `cause` (an action's name) to the dispatcher's event."""
    down = events(report, "down", rank)
    assert len(down) == 1, report["events"]
    return report["unix_zero"] + down[0]["t"] - _action_time(report, cause), down[0]


def _serve_through_outage(cluster, models, tmp_path, repeat, actions, cause):
    """Serves the images `repeat` times at 800 a second through `actions`; checks every answer
    and that the dispatcher saw device 2's loss by its heartbeat, a failure timeout after `cause`."""
    report = cluster.run(["--images", str(models["images"]), "--repeat", str(repeat), "--rate", "800"],
                         actions=actions, logits=tmp_path / "l.bin", timeout=RUN_TIMEOUT)
    counts = check_answers(report, models, "cross", tmp_path / "l.bin", 120 * repeat)
    assert report["errors"] == 0
    detection, down = _detection(report, 2, cause)
    print(f"link down -> loss seen by the dispatcher: {detection:.3f} s ({down['detail']})")
    # Nothing breaks on a silent partition: the heartbeat alone tells, after the failure timeout.
    assert down["detail"] == "heartbeat", down
    assert FAILURE_TIMEOUT_MS / 1000 * 0.8 <= detection < FAILURE_TIMEOUT_MS / 1000 + 1.0, detection
    return report, counts


@pytest.mark.parametrize("mode,configs", [("ht", {"AB", "CD"}), ("ha", {"ABCD"})])
def test_three_hosts_answer_like_one_process(models, hosts, tmp_path, binary, mode, configs):
    report = _cluster(models, hosts, mode, tmp_path).run(
        ["--images", str(models["images"]), "--limit", "100"], logits=tmp_path / "l.bin", timeout=RUN_TIMEOUT)
    assert set(check_answers(report, models, "cross", tmp_path / "l.bin", 100)) == configs
    assert report["errors"] == 0 and report["resubmitted"] == 0


def test_kill_across_hosts_answers_every_request_once(models, hosts, tmp_path, binary):
    cluster = _cluster(models, hosts, "ha", tmp_path, bind=True)
    n = 120 * 40  # 6 s at 800 a second
    report = cluster.run(["--images", str(models["images"]), "--repeat", "40", "--rate", "800"],
                         actions=[(0.5, "kill", 2), (1.0, "restart", 2)], logits=tmp_path / "l.bin",
                         timeout=RUN_TIMEOUT)
    counts = check_answers(report, models, "cross", tmp_path / "l.bin", n)
    assert report["errors"] == 0
    detection, down = _detection(report, 2, "kill")
    assert 0 <= detection < 1.0, f"the loss was seen {detection:.3f} s after the kill"
    up_again = [e for e in events(report, "up", 2) if e["t"] > down["t"]]
    assert up_again, "the device rejoined"
    assert counts["AB"] > 0 and counts["ABCD"] > 0, counts
    assert {a[1] for a in report["answers"] if a[3] > up_again[0]["t"] + 0.05} == {"ABCD"}


def test_a_short_outage_is_survived_and_the_device_rejoins_by_itself(models, hosts, tmp_path, binary):
    cluster = _cluster(models, hosts, "ha", tmp_path, store_timeout_ms=10000)
    # 9 s of requests; the cable is out from 1 s to 3 s.
    report, counts = _serve_through_outage(cluster, models, tmp_path, 60,
                                           [(1.0, _unplug(hosts), 2), (3.0, _plug(hosts), 2)], "unplug")
    plugged = _action_time(report, "plug") - report["unix_zero"]
    up_again = [e for e in events(report, "up", 2) if e["t"] > plugged]
    assert up_again, f"the device rejoined after the cable came back: {report['events']}"
    print(f"cable back -> device serving again: {up_again[0]['t'] - plugged:.3f} s")
    assert not (tmp_path / "logs" / "device2.1.log").exists(), "the same device process rejoined"
    assert counts["AB"] > 0, counts  # the survivor served alone meanwhile
    assert {a[1] for a in report["answers"] if a[3] > up_again[0]["t"] + 0.05} == {"ABCD"}
    assert cluster.device(2).returncode == 0, (tmp_path / "logs" / "device2.0.log").read_text()[-2000:]


def test_the_dispatchers_outage_loses_both_devices_and_both_rejoin(models, hosts, tmp_path, binary):
    cluster = _cluster(models, hosts, "ht", tmp_path, store_timeout_ms=10000)
    # 9 s of requests; the dispatcher's cable is out from 1 s to 3 s: requests wait meanwhile.
    report, counts = _serve_through_outage(cluster, models, tmp_path, 60,
                                           [(1.0, _unplug(hosts), 0), (3.0, _plug(hosts), 0)], "unplug")
    assert [e["detail"] for e in events(report, "down", 1)] == ["heartbeat"], report["events"]
    plugged = _action_time(report, "plug") - report["unix_zero"]
    for rank in (1, 2):
        assert [e for e in events(report, "up", rank) if e["t"] > plugged], report["events"]
        assert cluster.device(rank).returncode == 0
    assert counts["AB"] > 0 and counts["CD"] > 0, counts


def test_a_long_outage_makes_the_device_exit_and_a_restarted_one_rejoins(models, hosts, tmp_path, binary):
    store_timeout_ms = 2000
    cluster = _cluster(models, hosts, "ht", tmp_path, bind=True, store_timeout_ms=store_timeout_ms)
    exited = []  # (unix time, return code) of the partitioned device

    def unplug_and_watch(rank):
        hosts.set_link(rank, False)
        device = cluster.device(rank)

        def watch():
            try:
                code = device.wait(timeout=15)
                exited.append((time.time(), code))
            except subprocess.TimeoutExpired:
                pass
        threading.Thread(target=watch, daemon=True).start()
    # 12 s of requests; the cable is out from 1 s to 7 s, a new device starts at 7.1 s.
    actions = [(1.0, unplug_and_watch, 2), (7.0, _plug(hosts), 2), (7.1, "restart", 2)]
    report, counts = _serve_through_outage(cluster, models, tmp_path, 80, actions, "unplug_and_watch")
    log = (tmp_path / "logs" / "device2.0.log").read_text()
    assert exited and exited[0][1] == 1, f"the partitioned device did not exit with an error: {exited}\n{log[-2000:]}"
    gave_up = exited[0][0] - _action_time(report, "unplug_and_watch")
    print(f"link down -> partitioned device exited: {gave_up:.3f} s (store timeout {store_timeout_ms} ms)")
    # Silence for the store timeout, then at most one more for its heartbeat's pending connect.
    assert store_timeout_ms / 1000 <= gave_up < 2 * store_timeout_ms / 1000 + 1.5, gave_up
    assert f"lost the store at {hosts.address(0)}:{cluster.port}: no answer for" in log, log[-2000:]
    restarted = _action_time(report, "restart") - report["unix_zero"]
    assert [e for e in events(report, "up", 2) if e["t"] > restarted], report["events"]
    assert counts["AB"] > 0 and counts["CD"] > 0, counts


def test_a_bind_host_of_another_host_is_a_clear_error(models, hosts, binary):
    r = subprocess.run([*hosts.prefix(1), binary, "--role", "device", "--model", str(models["cross"][0]),
                        "--rank", "1", "--master-addr", hosts.address(0), "--bind-host", hosts.address(2),
                        "--store-timeout-ms", "500"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"bind host '{hosts.address(2)}' is no address of this host" in r.stderr, r.stderr
