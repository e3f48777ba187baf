"""dydnn.nn modules are torch.nn.Modules: optimisers, state_dict, train/eval, dtypes,
freezing, DataLoader, and config selection all reach the C++ computation."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import dydnn
from conftest import assert_close, random_net, small_spec


@pytest.fixture
def x():
    return torch.rand(4, 1, 12, 12)


def _outputs(net, x):
    with torch.no_grad():
        return {c.name: net(x, c) for c in net.configs}


@pytest.mark.parametrize("connectivity", ["incremental", "independent", "prefix"])
def test_sgd_step_changes_the_cpp_computation(connectivity, x):
    net = random_net(small_spec(connectivity))
    # warm the inference caches at every config (non-contiguous ones under independent)
    before = _outputs(net, x)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    for c in net.configs:
        opt.zero_grad()
        net(x, c).pow(2).mean().backward()
        opt.step()
    net.eval()
    after = _outputs(net, x)
    for c in net.configs:
        assert not torch.equal(after[c.name], before[c.name]), c.name
        with torch.no_grad():  # the dynamic net and its static twin agree after the update
            assert_close(after[c.name], net.materialize(c)(x), torch.float32, f"after SGD, {c.name}")


def test_optimizer_sees_every_block_once(small_net):
    params = list(small_net.parameters())
    assert len({id(p) for p in params}) == len(params)
    names = [n for n, _ in small_net.named_parameters()]
    assert "conv1.weight_3_2" in names and "conv1.weight_2_3" not in names and "head.bias_in3" in names


@pytest.mark.parametrize("connectivity", ["incremental", "independent", "prefix", "fluid-cross"])
def test_state_dict_round_trip(connectivity, x):
    net = random_net(small_spec(connectivity))
    fresh = dydnn.nn.DynamicNet(small_spec(connectivity)).eval()
    _outputs(fresh, x)  # fill its caches before loading
    state = net.state_dict()
    assert set(state) == set(fresh.state_dict())
    assert any(k.startswith("bn0.running_mean") for k in state)
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    expected, got = _outputs(net, x), _outputs(fresh, x)
    for c in net.configs:
        assert torch.equal(got[c.name], expected[c.name]), c.name


def test_state_dict_save_load_file(tmp_path, small_net, x):
    torch.save(small_net.state_dict(), tmp_path / "net.pt")
    fresh = dydnn.nn.DynamicNet(small_spec()).eval()
    fresh.load_state_dict(torch.load(tmp_path / "net.pt"))
    assert torch.equal(fresh(x, "AB"), small_net(x, "AB"))


def test_train_and_eval_reach_cpp(small_net, x):
    stats = {k: v.clone() for k, v in small_net.named_buffers()}
    small_net.eval()
    assert not small_net.training and not small_net.bn0.training
    with torch.no_grad():
        small_net(x, "ABCD")
    for k, v in small_net.named_buffers():
        assert torch.equal(v, stats[k]), f"{k} changed in eval mode"
    small_net.train()
    assert small_net.bn0.training
    with torch.no_grad():
        small_net(x, "AB")
    changed = {k for k, v in small_net.named_buffers() if not torch.equal(v, stats[k])}
    assert changed == {f"bn{k}.running_{s}_{g}" for k in (0, 1) for s in ("mean", "var") for g in (0, 1)}
    # train mode normalises with batch statistics: outputs differ from eval mode
    with torch.no_grad():
        train_out = small_net(x, "AB")
        small_net.eval()
        assert not torch.equal(train_out, small_net(x, "AB"))


def test_double_matches_float(small_net, x):
    expected = _outputs(small_net, x)
    small_net.double()
    assert all(p.dtype == torch.float64 for p in small_net.parameters())
    assert all(b.dtype == torch.float64 for b in small_net.buffers())
    got = _outputs(small_net, x.double())
    for c in small_net.configs:
        assert got[c.name].dtype == torch.float64
        assert_close(got[c.name].float(), expected[c.name], torch.float32, f"double {c.name}")
        with torch.no_grad():
            static = small_net.materialize(c)
            assert next(static.parameters()).dtype == torch.float64
            assert_close(static(x.double()), got[c.name], torch.float64, f"double materialize {c.name}")
    small_net.train()
    small_net(x.double(), "ABC").sum().backward()
    assert small_net.conv1.weight_2_1.grad.dtype == torch.float64


def test_requires_grad_false_freezes_one_block(small_net, x):
    frozen = small_net.conv1.weight_1_0
    frozen.requires_grad_(False)
    small_net.train()
    torch.nn.functional.cross_entropy(small_net(x, "ABCD"), torch.tensor([0, 1, 2, 3])).backward()
    assert frozen.grad is None
    for n, p in small_net.named_parameters():
        if p is not frozen:
            assert p.grad is not None, f"{n} got no gradient"
    before = frozen.clone()
    torch.optim.SGD(small_net.parameters(), lr=1.0).step()
    assert torch.equal(frozen, before)


def test_dataloader_training_loop():
    torch.manual_seed(1)
    images, labels = torch.rand(64, 1, 12, 12), torch.randint(0, 4, (64,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True)
    net = dydnn.nn.DynamicNet(small_spec())
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    net.train()
    losses = []
    for epoch in range(3):
        for k, (xb, yb) in enumerate(loader):
            net.set_config(net.configs[k % len(net.configs)])
            opt.zero_grad()
            out = net(xb)
            assert out.shape == (xb.shape[0], 4)
            loss = torch.nn.functional.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(p, start[n]) for n, p in net.named_parameters())


def test_set_config_configs_and_config(small_net, x):
    assert [c.name for c in small_net.configs] == ["A", "AB", "ABC", "ABCD"]
    assert small_net.config == dydnn.Config([0, 1, 2, 3])
    for value in ("AB", [0, 1], (0, 1), dydnn.Config([0, 1]), dydnn.Config("AB", 4)):
        small_net.set_config(value)
        assert small_net.config == dydnn.Config([0, 1]) and small_net.config.name == "AB"
    with torch.no_grad():
        assert torch.equal(small_net(x), small_net(x, "AB"))
        assert not torch.equal(small_net(x), small_net(x, "ABC"))
        assert small_net.config.name == "AB"  # forward(x, config) leaves the current config alone
        assert_close(small_net.materialize()(x), small_net(x), torch.float32, "materialize() at the current config")
    assert small_net.parameter_count() == small_net.parameter_count("AB")
    assert small_net.macs() == small_net.macs([0, 1])


def test_measure_latency(small_net):
    stats = small_net.measure_latency(torch.rand(1, 1, 12, 12), "AB", warmup=2, repetitions=5)
    assert stats["repetitions"] == 5
    assert 0 < stats["min_us"] <= stats["median_us"] <= stats["p95_us"]


def test_net_execution_strategies_agree(small_net, x):
    expected = _outputs(small_net, x)
    for execution in ("per_group", "packed", "auto", dydnn.Execution.PerGroup):
        small_net.set_execution(execution)
        for name, out in _outputs(small_net, x).items():
            assert_close(out, expected[name], torch.float32, f"execution {execution} config {name}")


@pytest.mark.parametrize("execution", ["packed", "per_group"])
def test_inference_cache_sees_optimizer_updates(execution):
    """A non-contiguous config (AC under independent) is served from a gathered copy; a step must refresh it."""
    conv = dydnn.nn.DynamicConv2d(8, 8, 3, padding=1, groups=4, connectivity="independent", execution=execution)
    x = torch.randn(2, 4, 6, 6)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    for _ in range(3):
        conv.eval()
        with torch.no_grad():
            cached = conv(x, "AC")
        conv.train()
        opt.zero_grad()
        conv(x, "AC").pow(2).mean().backward()
        opt.step()
        conv.eval()
        with torch.no_grad():
            fresh = conv(x, "AC")
            assert not torch.equal(fresh, cached)
            assert_close(fresh, conv.materialize("AC")(x), torch.float32, f"{execution} after step")
