"""Exactness (design §2): under incremental, independent and fluid, a config's eval-mode
outputs are bitwise unchanged (torch.equal) when every weight, bias and BN statistic it
does not read is changed in place; and changing one it does read changes them.
"""
import pytest
import torch

import reference as ref
from conftest import EXECUTIONS, GROUPED_KINDS, BatchNormLayer, GroupedLayer, random_net, small_spec

PAIRS = ref.all_configs(ref.EXACT_CASES)


def _perturb(named_tensors, keep):
    """Changes in place (under no_grad) every tensor for which keep(name) is False; returns their names."""
    changed = []
    with torch.no_grad():
        for n, t in named_tensors:
            if not keep(n):
                t.mul_(-1.5).add_(0.25) if "running_var" not in n else t.mul_(3.0).add_(0.5)
                changed.append(n)
    return changed


def _check_exact(module, run, used, case, config, what):
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    with torch.no_grad():
        before = run()
        changed = _perturb(tensors, used)
        after = run()
    assert torch.equal(before, after), f"{what}: output changed after changing {changed}"
    if len(config) < case.groups:
        assert changed, f"{what}: the test changed nothing"
    # and the config does depend on what it uses
    with torch.no_grad():
        name = next(n for n, _ in tensors if used(n) and "running" not in n)
        dict(tensors)[name].add_(1.0)
        assert not torch.equal(run(), before), f"{what}: changing the used {name} changed nothing"


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("pair", PAIRS, ids=ref.config_id)
@pytest.mark.parametrize("kind", sorted(GROUPED_KINDS))
def test_grouped_layer_is_exact(kind, pair, execution):
    case, config = pair
    layer = GroupedLayer(kind, case, uneven=True, execution=execution)
    layer.module.eval()
    x = layer.input(config, 4)
    _check_exact(layer.module, lambda: layer.module(x, sorted(config)), lambda n: layer.used(n, config), case, config,
                 f"{kind} {case.id} {ref.name(config)} {execution}")


@pytest.mark.parametrize("pair", PAIRS, ids=ref.config_id)
def test_batchnorm_is_exact(pair):
    case, config = pair
    layer = BatchNormLayer(case, uneven=True)
    layer.module.eval()
    x = layer.input(config, 4)
    _check_exact(layer.module, lambda: layer.module(x, sorted(config)), lambda n: layer.used(n, config), case, config,
                 f"bn {case.id} {ref.name(config)}")


NET_CASES = {"incremental": ref.Case("incremental", 4), "independent": ref.Case("independent", 4),
             "fluid-cross": ref.Case("fluid", 4, True), "fluid-nocross": ref.Case("fluid", 4, False)}


@pytest.mark.parametrize("execution", ["packed", "per_group"])
@pytest.mark.parametrize("connectivity", sorted(NET_CASES))
def test_net_is_exact_at_every_config(connectivity, execution):
    case = NET_CASES[connectivity]
    x = torch.rand(3, 1, 12, 12)
    for config in case.configs():
        net = random_net(small_spec(connectivity))
        net.set_execution(execution)
        _check_exact(net, lambda: net(x, sorted(config)), lambda n: ref.net_tensor_used(case, config, n), case, config,
                     f"net {connectivity} {ref.name(config)} {execution}")


def test_net_config_unchanged_after_training_later_groups():
    """The incremental-training workflow: train only group D (others frozen); A..ABC stay bit-exact."""
    net = random_net(small_spec("incremental"))
    x = torch.rand(8, 1, 12, 12)
    net.eval()
    with torch.no_grad():
        before = {c.name: net(x, c) for c in net.configs}
    for g in range(3):
        net.set_frozen_statistics(g)
    trainable = []
    for n, p in net.named_parameters():
        keep = ref.net_tensor_used(ref.Case("incremental", 4), {0, 1, 2}, n)
        p.requires_grad_(not keep)
        trainable += [] if keep else [p]
    opt = torch.optim.SGD(trainable, lr=0.1)
    net.train()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x, "ABCD"), torch.randint(0, 4, (8,))).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        for c in net.configs:
            out = net(x, c)
            if c.name == "ABCD":
                assert not torch.equal(out, before[c.name])
            else:
                assert torch.equal(out, before[c.name]), f"config {c.name} changed"
