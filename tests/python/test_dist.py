"""Distributed serving over real c10d/Gloo processes on loopback (dydnn_serve, LocalCluster).

Every run has a hard timeout (LocalCluster.run's, subprocess's): a hang fails the test.
"""
import subprocess

import pytest

from dydnn import serve
from conftest import built_program
from dist_checks import check_answers as _check_answers, events as _events, models  # noqa: F401 (a fixture)

RUN_TIMEOUT = 90


@pytest.fixture(scope="module")
def binary():
    return str(built_program("examples/dydnn_serve"))


def _cluster(models, name, mode, tmp_path, devices=2, **kw):
    return serve.LocalCluster(models[name][0], mode=mode, devices=devices, log_dir=tmp_path / "logs", **kw)


@pytest.mark.parametrize("name,mode,configs", [
    ("cross", "ht", {"AB", "CD"}), ("cross", "ha", {"ABCD"}), ("late", "ha", {"ABCD"}),
    ("dynamic", "dynamic", {"ABCD"}), ("static", "static", {"ABCD"})])
def test_three_processes_answer_like_one(models, tmp_path, binary, name, mode, configs):
    cluster = _cluster(models, name, mode, tmp_path)
    report = cluster.run(["--images", str(models["images"]), "--limit", "100"], logits=tmp_path / "l.bin",
                         timeout=RUN_TIMEOUT)
    counts = _check_answers(report, models, name, tmp_path / "l.bin", 100)
    assert set(counts) == configs
    assert report["errors"] == 0 and report["resubmitted"] == 0
    assert report["bytes_per_inference"] > 12 * 12 * 4


@pytest.mark.parametrize("mode", ["ht", "ha"])
def test_two_processes_serve_the_first_island(models, tmp_path, binary, mode):
    cluster = _cluster(models, "cross", mode, tmp_path, devices=1)
    report = cluster.run(["--images", str(models["images"]), "--limit", "40"], logits=tmp_path / "l.bin",
                         timeout=RUN_TIMEOUT)
    assert _check_answers(report, models, "cross", tmp_path / "l.bin", 40) == {"AB": 40}


@pytest.mark.parametrize("mode,killed,survivor_config", [("ht", 2, "AB"), ("ha", 1, "CD"), ("ha", 2, "AB")])
def test_kill_and_rejoin_answers_every_request_once(models, tmp_path, binary, mode, killed, survivor_config):
    cluster = _cluster(models, "cross", mode, tmp_path)
    n = 120 * 40  # 6 s of requests at 800 a second: the device restarts at 1 s and rejoins well before the end
    report = cluster.run(["--images", str(models["images"]), "--repeat", "40", "--rate", "800"],
                         actions=[(0.5, "kill", killed), (1.0, "restart", killed)], logits=tmp_path / "l.bin",
                         timeout=RUN_TIMEOUT)
    counts = _check_answers(report, models, "cross", tmp_path / "l.bin", n)
    assert report["errors"] == 0
    down = _events(report, "down", killed)
    assert len(down) == 1, report["events"]
    kill_time = report["actions"][0][0]
    detection = report["unix_zero"] + down[0]["t"] - kill_time
    assert 0 <= detection < 1.0, f"the loss was seen {detection:.3f} s after the kill"
    up_again = [e for e in _events(report, "up", killed) if e["t"] > down[0]["t"]]
    assert up_again, "the device rejoined"
    assert counts[survivor_config] > 0
    # After the rejoin the full schedule resumes: answers by both islands (HT) or fused (HA).
    later = {a[1] for a in report["answers"] if a[3] > up_again[0]["t"] + 0.05}
    assert later == ({"AB", "CD"} if mode == "ht" else {"ABCD"}), later


def test_static_stops_and_dynamic_survives_only_the_cd_device(models, tmp_path, binary):
    src = ["--images", str(models["images"]), "--repeat", "5"]
    static = _cluster(models, "static", "static", tmp_path / "s").run(
        src, actions=[(0.2, "kill", 2)], extra=["--request-timeout-ms", "300"], timeout=RUN_TIMEOUT)
    assert static["errors"] > 0 and "ABCD" in static["configs"]
    assert len({a[0] for a in static["answers"]}) == static["requests"] == len(static["answers"])
    dyn_cd = _cluster(models, "dynamic", "dynamic", tmp_path / "d2").run(
        src, actions=[(0.2, "kill", 2)], extra=["--request-timeout-ms", "300"], timeout=RUN_TIMEOUT)
    assert dyn_cd["errors"] == 0 and dyn_cd["configs"].get("AB", 0) > 0
    dyn_ab = _cluster(models, "dynamic", "dynamic", tmp_path / "d1").run(
        src, actions=[(0.2, "kill", 1)], extra=["--request-timeout-ms", "300"], timeout=RUN_TIMEOUT)
    assert dyn_ab["errors"] > 0 and "CD" not in dyn_ab["configs"]


def test_a_wrong_shape_request_is_answered_with_an_error_and_the_rest_served(models, tmp_path, binary):
    cluster = _cluster(models, "cross", "ht", tmp_path)
    port = str(cluster.port)
    args = ["--master-addr", "127.0.0.1", "--master-port", port, "--world-size", "3", "--store-timeout-ms", "5000"]
    d = subprocess.Popen([binary, "--role", "dispatcher", "--model", str(models["cross"][0]), "--mode", "ht",
                          "--rank", "0", "--stream", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    devs = [subprocess.Popen([binary, "--role", "device", "--model", str(models["cross"][0]), "--rank", str(r), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for r in (1, 2)]
    good = " ".join(["7"] * 144)
    lines = f"1 {good}\n2 1 2 3\n3 {good}\n4 {good} x\n"
    try:
        out, err = d.communicate(lines, timeout=RUN_TIMEOUT)
    finally:
        for p in devs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    assert "id=2 error=[dydnn.serve] request 2: 3 values (valid: 144 = 1 x 12 x 12)" in out
    assert "id=4 error=" in out
    assert "id=1 config=" in out and "id=3 config=" in out
    assert all(p.returncode == 0 for p in devs)


def test_rank_out_of_range_and_unreachable_store_are_clear_errors(models, binary):
    model = str(models["cross"][0])
    r = subprocess.run([binary, "--role", "device", "--model", model, "--rank", "5", "--world-size", "3"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "rank 5 is out of range for world size 3 (valid: 0..2)" in r.stderr
    r = subprocess.run([binary, "--role", "device", "--model", model, "--rank", "1", "--master-port",
                        str(serve.free_port()), "--store-timeout-ms", "300"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot reach the store at 127.0.0.1:" in r.stderr
    env_bad = subprocess.run([binary, "--role", "device", "--model", model], capture_output=True, text=True, timeout=30,
                             env={"RANK": "one", "PATH": "/usr/bin"})
    assert env_bad.returncode == 2 and "RANK 'one' (valid: an integer >= 0)" in env_bad.stderr


def test_ht_needs_a_fluid_model(models, tmp_path, binary):
    with pytest.raises(RuntimeError, match="mode 'ht' needs a fluid model with two islands"):
        _cluster(models, "dynamic", "ht", tmp_path, store_timeout_ms=1000).run(["--random", "5"], timeout=RUN_TIMEOUT)


def test_local_cluster_checks_its_arguments(models):
    with pytest.raises(ValueError, match=r"mode 'fast' \(valid: ht, ha, static, dynamic\)"):
        serve.LocalCluster(models["cross"][0], mode="fast")
    with pytest.raises(ValueError, match=r"devices = 3 \(valid: 1 or 2"):
        serve.LocalCluster(models["cross"][0], devices=3)
    with pytest.raises(ValueError, match=r"window = 0 \(valid: an integer >= 1\)"):
        serve.LocalCluster(models["cross"][0], window=0)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        serve.LocalCluster("/nonexistent.dydnn")


def test_cli_serve(models, tmp_path, binary, capsys):
    from dydnn.cli import main
    rc = main([ "serve", str(models["cross"][0]), "--mode", "ht", "--images", str(models["images"]),
                "--limit", "50", "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "50 of 50 requests" in out and "every request answered exactly once: yes" in out
    assert main(["serve", str(models["cross"][0]), "--kill", "3@0.1"]) == 2
    assert "--kill '3@0.1' (valid: RANK@SECONDS, RANK 1 or 2" in capsys.readouterr().err


def test_kill_one_device_then_the_other_in_one_run(models, tmp_path, binary):
    cluster = _cluster(models, "cross", "ha", tmp_path)
    n = 120 * 60  # 9 s at 800 a second
    actions = [(0.5, "kill", 2), (1.0, "restart", 2), (4.5, "kill", 1), (5.0, "restart", 1)]
    report = cluster.run(["--images", str(models["images"]), "--repeat", "60", "--rate", "800"], actions=actions,
                         logits=tmp_path / "l.bin", timeout=RUN_TIMEOUT)
    counts = _check_answers(report, models, "cross", tmp_path / "l.bin", n)
    downs = [e for e in report["events"] if e["kind"] == "down"]
    assert [e["rank"] for e in downs] == [2, 1], report["events"]
    for (kill_at, _, _), e in zip([a for a in report["actions"] if a[1] == "kill"], downs):
        assert 0 <= report["unix_zero"] + e["t"] - kill_at < 1.0
    assert counts["AB"] > 0 and counts["CD"] > 0 and counts["ABCD"] > 0, counts
    assert report["errors"] == 0
