"""Depth from Python: early exits (adaptive forward, joint training, calibration), anytime
refinement, model files with exits, width x exit points in the profiler and the manager."""
import pytest
import torch

import dydnn
from dydnn import exits
from dydnn.nn import DynamicNet

SPEC = """dydnn-spec 1
name tiny_exits
input 1 8 8
classes 4
groups 4
connectivity incremental
conv 8 kernel=3 padding=1 bn relu maxpool=2
exit after=1 avgpool=2
conv 16 kernel=3 padding=1 bn relu maxpool=2
"""


def quadrants(n, seed):
    """Four classes, each a bright quadrant, plus noise (uint8 images)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    for k in range(n):
        c = int(labels[k])
        images[k, :, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 0.6
    return (images.clamp(0, 1) * 255).to(torch.uint8), labels


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net = DynamicNet(dydnn.NetSpec.parse(SPEC))
    trainer = dydnn.train.Trainer(net, "incremental", epochs=2, batch_size=16, exit_weights=[0.5, 1.0], progress=False)
    trainer.fit(quadrants(160, 1))
    net.eval()
    return net, trainer.normalization


def test_exits_in_the_spec_and_the_net():
    net = DynamicNet(dydnn.NetSpec.parse(SPEC))
    assert net.spec.exits == [(1, 2)]
    assert net.num_exits == 2 and net.exit_depth(0) == 1 and net.exit_depth(-1) == 2
    assert any(name.startswith("exit0.") for name, _ in net.named_parameters())
    x = torch.rand(3, 1, 8, 8)
    first, last = net.forward_exits(x)
    torch.testing.assert_close(first, net.forward_to_exit(x, 0))
    torch.testing.assert_close(last, net(x))
    first.sum().backward()  # autograd reaches the exit head, not the final one
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert any(g is not None for name, g in grads.items() if name.startswith("exit0."))
    assert all(g is None for name, g in grads.items() if name.startswith("head."))
    with pytest.raises(IndexError, match=r"exit 2 is out of range \(valid: 0..1"):
        net.forward_to_exit(x, 2)


def test_adaptive_forward_splits_the_batch_and_keeps_the_order(trained):
    net, norm = trained
    x = norm.apply(quadrants(24, 2)[0])
    with torch.no_grad():
        first, last = net.forward_exits(x)
        s = exits.scores(first)
        t = float(s.median())
        for parallel in (False, True):
            logits, which = net.forward_adaptive(x, [t], parallel_heads=parallel)
            expected = torch.where((s < t)[:, None], first, last)
            torch.testing.assert_close(logits, expected)
            assert which.tolist() == [0 if v < t else 1 for v in s.tolist()]
    with pytest.raises(ValueError, match=r"2 exit thresholds for 1 early exit\(s\)"):
        net.forward_adaptive(x, [0.1, 0.2])
    with pytest.raises(ValueError, match=r"unknown exit criterion 'margin' \(valid: entropy, max_prob\)"):
        net.forward_adaptive(x, [0.1], criterion="margin")


def test_joint_training_trains_the_exit_and_calibration_hits_the_rate(trained):
    net, norm = trained
    data = quadrants(200, 3)
    stats = exits.statistics(net, data, normalization=norm, config="ABCD")
    assert stats.num_exits == 2 and stats.count == 200
    assert sum(stats.correct[0]) / 200 > 0.5  # the early exit learned the easy task
    outcome = exits.calibrate(stats, "exit_rate", 0.5)
    assert outcome.exit_rates[0] == pytest.approx(0.5, abs=0.02)
    again = exits.evaluate(stats, outcome.thresholds)
    assert again.accuracy == pytest.approx(outcome.accuracy)
    with pytest.raises(ValueError, match=r"exit_rate 1.5 is out of range \(valid: 0..1\)"):
        exits.calibrate(stats, "exit_rate", 1.5)
    with pytest.raises(ValueError, match=r"exit_weights: 3 values but net 'tiny_exits' has 2 exit\(s\)"):
        dydnn.train.Trainer(net, "incremental", exit_weights=[1, 1, 1])


def test_refine_equals_a_fresh_run(trained):
    net, norm = trained
    x = norm.apply(quadrants(5, 4)[0])
    with torch.no_grad():
        logits, cache = net.forward_cached(x, "A", exit=0)
        torch.testing.assert_close(logits, net.forward_to_exit(x, 0, "A"))
        for config in ("AB", "ABC", "ABCD"):
            torch.testing.assert_close(net.refine(cache, config, exit=0), net.forward_to_exit(x, 0, config))
        torch.testing.assert_close(net.refine(cache, "ABCD"), net(x, "ABCD"))
    assert cache.config.name == "ABCD" and cache.exit == 1 and cache.depth == 2
    assert net.can_refine("A", "ABC") and not net.can_refine("AB", "A")
    with pytest.raises(ValueError, match=r"cannot refine from config ABCD to A"):
        net.refine(cache, "A")


def test_anytime_runner_answers_now_and_improves_while_time_allows(trained):
    net, norm = trained
    x = norm.apply(quadrants(1, 6)[0])
    runner = dydnn.anytime.AnytimeRunner(net)
    assert [(c.name, e) for c, e in runner.steps] == [("A", 0), ("A", 1), ("AB", 1), ("ABC", 1), ("ABCD", 1)]
    expected = runner.calibrate(x, repetitions=3)
    assert len(expected) == 5 and all(t > 0 for t in expected)
    seen = []
    answer = runner.run(x, budget_us=1e9, callback=lambda a: seen.append(a.step))
    assert answer.complete and answer.config.name == "ABCD" and seen == [0, 1, 2, 3, 4]
    with torch.no_grad():
        torch.testing.assert_close(answer.logits, net(x, "ABCD"))
    first = runner.run(x, budget_us=1e-3)  # spent by the first answer
    assert first.step == 0 and not first.complete and first.exit == 0
    stopped = runner.run(x, budget_us=1e9, callback=lambda a: a.step < 1)
    assert stopped.step == 1 and stopped.config.name == "A" and stopped.exit == 1
    custom = dydnn.anytime.AnytimeRunner(net, [("A", -1), ("ABCD", -1)])
    assert custom.run(x, 1e9).config.name == "ABCD"
    with pytest.raises(ValueError, match=r"step 1 \(A@1\) cannot be refined to from step 0 \(AB@1\)"):
        dydnn.anytime.AnytimeRunner(net, [("AB", 1), ("A", 1)])
    with pytest.raises(ValueError, match=r"budget -1 us \(valid: a positive number"):
        runner.run(x, -1)
    assert runner.quantile == pytest.approx(0.5)
    runner.quantile = 1.0
    slowest = runner.expected_us
    runner.quantile = 0.5
    assert all(m <= s for m, s in zip(runner.expected_us, slowest))
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"quantile .* \(valid: 0 < quantile <= 1\)"):
            runner.quantile = bad


def test_exits_survive_the_model_file(trained, tmp_path):
    net, norm = trained
    path = tmp_path / "exits.dydnn"
    dydnn.save(net, path, normalization=norm)
    loaded = dydnn.load(path)
    assert loaded.num_exits == 2 and loaded.spec.exits == [(1, 2)]
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        for e in (0, 1):
            assert torch.equal(loaded.forward_to_exit(x, e), net.forward_to_exit(x, e))


def test_profiler_and_manager_use_width_x_exit_points(trained):
    net, norm = trained
    images, labels = quadrants(40, 5)
    table = dydnn.runtime.profile(net, images, labels, normalization=norm, warmup=1, repetitions=3,
                                  exit_thresholds=[0.3], progress=False)
    assert len(table) == 3 * len(net.configs)  # final head, exit 0, adaptive
    exit_points = [p for p in table if "exit" in p["knobs"]]
    adaptive = [p for p in table if "exit_threshold" in p["knobs"]]
    assert len(exit_points) == len(adaptive) == 4
    for p in adaptive:
        assert p["metrics"]["exit_rate_0"] + p["metrics"]["exit_rate_1"] == pytest.approx(1.0)
    names = [p.name for p in dydnn.runtime.to_points(table, net)]
    assert any("exit=0" in n for n in names) and any("exit_threshold=0.3" in n for n in names)
    manager = dydnn.runtime.Manager(net, table)
    manager.set_targets(min_accuracy=0.0)
    x = norm.apply(images[:1])
    with torch.inference_mode():
        out = manager.infer(x)
        chosen = manager.current
        knobs = dict(chosen.knobs)
        config = next(c for c in net.configs if c.mask == chosen.config)
        if "exit" in knobs:
            expected = net.forward_to_exit(x, int(knobs["exit"]), config)
        elif "exit_threshold" in knobs:
            expected = net.forward_adaptive(x, [knobs["exit_threshold"]], config)[0]
        else:
            expected = net(x, config)
    torch.testing.assert_close(out, expected)


def test_normalization_leaves_float_images_alone():
    """Regression: apply() normalised a float batch in place, so every repeated evaluation
    (exits.statistics per config) drifted further from the data."""
    images = torch.rand(2, 1, 8, 8)
    before = images.clone()
    norm = dydnn.train.Normalization([0.5], [0.25])
    out = norm.apply(images)
    assert torch.equal(images, before)
    torch.testing.assert_close(out, (before - 0.5) / 0.25)
