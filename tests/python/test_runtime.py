"""The runtime from Python: profiling into an artifact, the selector, the manager and the plots."""
from __future__ import annotations

import math

import pytest
import torch

import dydnn
from dydnn import runtime
from tiny_training import tiny_data, tiny_spec

pytestmark = pytest.mark.usefixtures("keep_torch_state")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = dydnn.nn.DynamicNet(tiny_spec())
    net.eval()
    images, labels = tiny_data(64, seed=1)
    return dydnn.io.Artifact(net, dydnn.train.Normalization.fit(images)), images, labels


def test_profile_fills_the_artifact_and_round_trips(model, tmp_path):
    art, images, labels = model
    table = runtime.profile(art, images, labels, threads=[1, 2], warmup=1, repetitions=5, progress=False)
    assert len(table) == 2 * len(art.net.configs)
    assert art.operating_points == table
    for row in table:
        assert {"latency_p50_us", "latency_p95_us", "top1"} <= set(row["metrics"])
        assert row["metrics"]["latency_p95_us"] >= row["metrics"]["latency_p50_us"] > 0
        assert row["knobs"]["threads"] in (1.0, 2.0)
    dydnn.save(art, tmp_path / "m.dydnn")
    assert dydnn.load_artifact(tmp_path / "m.dydnn").operating_points == table
    points = runtime.to_points(table, art.net)
    assert [p.config for p in points] == [dydnn.Config(row["config"], 4).mask for row in table]
    assert points[0].latency_s == pytest.approx(1e-6 * table[0]["metrics"]["latency_p50_us"])


def test_profile_with_an_energy_reader(model):
    art, images, labels = model
    joules = [0.0]

    def meter():
        joules[0] += 0.002
        return joules[0]

    table = runtime.profile(art.net, images, labels, warmup=0, repetitions=4, energy=meter, energy_source="test",
                            normalization=art.normalization, progress=False)
    assert all(row["metrics"]["energy_mj"] == pytest.approx(0.5) for row in table)  # 2 mJ over 4 runs
    assert all(row["metrics"]["power_w"] > 0 for row in table)


def test_selector_from_python():
    pts = [runtime.Point(0b1, 1e-3, 0.80, "A", power_w=1.0), runtime.Point(0b11, 2e-3, 0.90, "AB", power_w=1.5)]
    s = runtime.Selector(pts, runtime.SelectorOptions(up_margin=0.0))
    assert s.decide(max_latency_s=1.5e-3)["index"] == 0
    d = s.decide(max_latency_s=2e-3)
    assert d["index"] == 1 and d["switched"] and d["reason"] == "best"
    assert s.decide(max_latency_s=0.5e-3)["feasible"] is False
    assert s.decide(objective="min_energy")["index"] == 0
    with pytest.raises(ValueError, match="valid: max_accuracy, min_energy"):
        s.decide(objective="fastest")
    assert runtime.pareto_front(pts) == [0, 1]
    assert runtime.LadderPolicy(pts).rungs == [0, 1]


def test_manager_follows_targets_and_logs(model, tmp_path):
    art, images, _ = model
    table = [{"config": c.name, "knobs": {"threads": 1},
              "metrics": {"latency_p50_us": 100.0 * (k + 1), "top1": 0.5 + 0.1 * k}}
             for k, c in enumerate(art.net.configs)]
    m = runtime.Manager(art.net, table, runtime.SelectorOptions(up_margin=0.0))
    x = art.normalization.apply(images[:1])
    m.set_targets(max_latency_s=250e-6)
    assert m.infer(x).shape == (1, 4)
    assert m.current.name.startswith("AB@")
    m.set_targets(max_latency_s=math.inf)
    m.infer(x)
    log = m.log()
    assert [e["config"] for e in log] == ["AB", "ABCD"]
    assert log[1]["switched"] and log[1]["measured_latency_s"] > 0
    m.write_log(tmp_path / "log.csv")
    assert (tmp_path / "log.csv").read_text().startswith("time_s,max_latency_s")
    runtime.plot_run(log, tmp_path / "run.png")
    runtime.plot_pareto(table, tmp_path / "pareto.png")
    assert (tmp_path / "run.png").stat().st_size > 0 and (tmp_path / "pareto.png").stat().st_size > 0
    with pytest.raises(ValueError, match="lacks latency_p50_us or top1"):
        runtime.to_points([{"config": "A", "knobs": {}, "metrics": {}}])


def test_trace_and_serving(model, tmp_path):
    art, images, _ = model
    trace_path = tmp_path / "trace.csv"
    trace_path.write_text("time_s,max_latency_us\n0,1000000\n0.1,1\n")
    trace = runtime.read_trace(trace_path)
    assert [r["max_latency_s"] for r in trace] == [1.0, 1e-6]
    table = [{"config": c.name, "knobs": {}, "metrics": {"latency_p50_us": 50.0 * (k + 1), "top1": 0.5 + 0.1 * k}}
             for k, c in enumerate(art.net.configs)]
    m = runtime.Manager(art.net, table)
    result = runtime.serve_trace(m, art.normalization.apply(images), trace, duration_s=0.2, window_s=0.05)
    assert result["requests"] > 10
    configs = [e["config"] for e in result["log"]]
    assert configs[0] == "ABCD" and configs[-1] == "A"  # the 1 us target leaves only the fallback
    assert not result["log"][-1]["feasible"]
    assert any(not w["feasible"] for w in result["windows"])
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,max_latency_us\n1,100\n0,100\n")
    with pytest.raises(ValueError, match="bad.csv:3: time_s 0.0 goes back in time"):
        runtime.read_trace(bad)
    bad.write_text("t,latency\n")
    with pytest.raises(ValueError, match="lacks max_latency_us, time_s"):
        runtime.read_trace(bad)


def test_energy_meter_detection_on_a_fake_rapl_tree(tmp_path):
    zone = tmp_path / "sys/class/powercap/intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("1000000\n")
    meter, tried = runtime.detect_energy_meter(str(tmp_path))
    assert meter is not None and meter.source == "rapl:package-0" and not meter.is_model
    assert tried[-1] == "rapl: using rapl:package-0"
    start = meter.energy_j()
    (zone / "energy_uj").write_text("3500000\n")
    assert meter.energy_j() - start == pytest.approx(2.5)
    none, reasons = runtime.detect_energy_meter(str(tmp_path / "empty"))
    assert none is None and any(r.startswith("rapl:") for r in reasons)


def test_energy_meter_falls_back_to_a_platform_model_on_the_cpu_time(tmp_path):
    # A machine without a sensor: /proc/stat only. generic_host: 2 W static, CPUs 0-1.
    stat = tmp_path / "proc/stat"
    stat.parent.mkdir(parents=True)
    stat.write_text("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 100 0 0 900 0 0 0 0 0 0\ncpu1 0 0 0 1000 0 0 0 0 0 0\n")
    none, tried = runtime.detect_energy_meter(str(tmp_path))
    assert none is None and tried[-1] == "model: no fallback given"
    meter, tried = runtime.detect_energy_meter(str(tmp_path), platform="generic_host")
    assert meter.is_model and meter.source == "model:generic_host:policy0" and not meter.exclusive
    assert tried[-1] == "model: using model:generic_host:policy0" and tried[0].startswith("rapl:")
    assert "not exclusive" in meter.coverage
    first = meter.energy_j()
    stat.write_text("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 200 0 0 900 0 0 0 0 0 0\ncpu1 0 0 0 1000 0 0 0 0 0 0\n")
    # 100 ticks = 1 s of one busy core at 3 GHz, 1.2 V: 4.32 J, plus static power for the time between.
    assert meter.energy_j() - first >= 4.32
    with pytest.raises(ValueError, match="no_such_board"):
        runtime.detect_energy_meter(str(tmp_path), platform="no_such_board")


def test_profile_auto_energy_without_a_meter_warns_and_records_nothing(model, monkeypatch):
    art, images, labels = model
    monkeypatch.setattr(runtime, "detect_energy_meter", lambda root="/", platform=None: (None, ["rapl: none here"]))
    with pytest.warns(UserWarning, match="no energy meter on this machine.*rapl: none here"):
        table = runtime.profile(art, images, labels, warmup=0, repetitions=2, energy="auto", energy_model=None,
                                progress=False)
    assert all("energy_mj" not in row["metrics"] for row in table)
    assert "energy_source" not in art.metadata.get("extra", {})
    with pytest.raises(ValueError, match="energy='yes'"):
        runtime.profile(art, images, labels, energy="yes")


def test_profile_auto_energy_on_this_machine_is_modelled_and_labelled(model):
    # This container has no power sensor: the table gets modelled energy, and says so.
    art, images, labels = model
    meter, _ = runtime.detect_energy_meter(platform="generic_host")
    if meter is None or not meter.is_model:
        pytest.skip("this machine has a power sensor or no /proc/stat: " + str(meter and meter.source))
    with pytest.warns(UserWarning, match="modelled by model:generic_host:policy0, not measured"):
        table = runtime.profile(art, images, labels, warmup=2, repetitions=20, energy="auto", progress=False)
    assert all(row["metrics"]["energy_mj"] > 0 and row["metrics"]["power_w"] >= 2.0 for row in table)
    assert art.metadata["extra"]["energy_source"] == "model:generic_host:policy0"


def test_system_manager_from_python(model):
    art, _, _ = model
    def table(scale):
        return [{"config": c.name, "knobs": {"threads": t},
                 "metrics": {"latency_p50_us": scale * 100.0 * (k + 1) / t, "top1": 0.5 + 0.1 * k}}
                for k, c in enumerate(art.net.configs) for t in (1, 2)]
    m1 = runtime.Manager(art.net, table(1.0), runtime.SelectorOptions(up_margin=0.0))
    m2 = runtime.Manager(dydnn.nn.DynamicNet(tiny_spec()), table(2.0), runtime.SelectorOptions(up_margin=0.0))
    system = runtime.SystemManager(["threads"], [m1, m2])
    assert system.states() == [{"threads": 1.0}, {"threads": 2.0}]
    threads = torch.get_num_threads()
    m1.set_targets(max_latency_s=1.0)
    m2.set_targets(max_latency_s=150e-6)  # m2 needs 2 threads (A: 200 us / 2)
    assert system.decide() == {"threads": 2.0}
    assert torch.get_num_threads() == 2
    m2.set_targets(max_latency_s=1.0)
    assert system.decide() == {"threads": 1.0}
    torch.set_num_threads(threads)
