"""DynamicBatchNorm2d against per-group torch.nn.functional.batch_norm.

Statistics are per channel, kept once per group where its inputs never change and once
per context (`_at_<ctx>`, switchable BN) under prefix and fluid cross edges (design §2).
Same cases and tolerances as test_layers_reference.py; training mode also checks the
running-statistics update, and frozen groups.
"""
import pytest
import torch

import reference as ref
from conftest import BatchNormLayer, assert_close

PAIRS = ref.all_configs()
DTYPES = [torch.float32, torch.float64]


def every_case(test):
    """Every valid config of every preset x equal/uneven groups x batch 1/8 x float32/float64."""
    marks = [pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"]),
             pytest.mark.parametrize("batch", [1, 8]),
             pytest.mark.parametrize("uneven", [False, True], ids=["equal", "uneven"]),
             pytest.mark.parametrize("pair", PAIRS, ids=ref.config_id)]
    for mark in marks:
        test = mark(test)
    return test


def _tensors(module, grad=False):
    out = {n: t.detach().clone() for n, t in list(module.named_parameters()) + list(module.named_buffers())}
    if grad:
        for n, p in module.named_parameters():
            out[n].requires_grad_()
    return out


@pytest.mark.parametrize("case", ref.CASES, ids=lambda c: c.id)
def test_slots_follow_design(case):
    bn = BatchNormLayer(case, uneven=False).module
    expected = set()
    for j in range(case.groups):
        assert bn.num_slots(j) == ref.bn_num_slots(case, j), f"group {j}"
        for config in case.configs():
            if j in config:
                s = ref.bn_slot(case, j, config)
                expected |= {f"weight{s}", f"bias{s}", f"running_mean{s}", f"running_var{s}"}
    got = {n for n, _ in bn.named_parameters()} | {n for n, _ in bn.named_buffers()}
    assert got == expected


@every_case
def test_eval_forward_and_materialize(pair, uneven, batch, dtype):
    case, config = pair
    layer = BatchNormLayer(case, uneven, dtype)
    bn = layer.module.eval()
    x = layer.input(config, batch, dtype)
    what = f"{case.id} config {ref.name(config)} batch {batch} {dtype}"
    with torch.no_grad():
        expected = ref.bn_reference(x, _tensors(bn), case, config, layer.sizes, training=False)
        assert_close(bn(x, sorted(config)), expected, dtype, what)
        static = bn.materialize(sorted(config))
        assert type(static) is torch.nn.BatchNorm2d and not static.training
        assert_close(static(x), expected, dtype, f"{what} materialize")
    assert_close(bn(x, sorted(config)).detach(), expected, dtype, f"{what} autograd path")


@every_case
def test_train_forward_gradients_and_running_stats(pair, uneven, batch, dtype):
    case, config = pair
    layer = BatchNormLayer(case, uneven, dtype)
    bn = layer.module.train()
    tensors = _tensors(bn, grad=True)
    before = _tensors(bn)
    x = layer.input(config, batch, dtype)
    x_lib, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = bn(x_lib, sorted(config))
    expected = ref.bn_reference(x_ref, tensors, case, config, layer.sizes, training=True)
    what = f"{case.id} config {ref.name(config)} batch {batch} {dtype}"
    assert_close(out, expected, dtype, what)
    grad_out = torch.randn_like(expected)
    out.backward(grad_out)
    expected.backward(grad_out)
    assert_close(x_lib.grad, x_ref.grad, dtype, f"{what}: input grad")
    for n, p in bn.named_parameters():
        if layer.used(n, config):
            assert_close(p.grad, tensors[n].grad, dtype, f"{what}: grad of {n}")
        else:
            assert p.grad is None, f"{what}: {n} is not used but got a gradient"
    for n, b in bn.named_buffers():
        if layer.used(n, config):  # updated exactly as torch's batch_norm updates them
            assert_close(b, tensors[n], dtype, f"{what}: running stat {n}")
        else:
            assert torch.equal(b, before[n]), f"{what}: {n} changed but is not used"


@pytest.mark.parametrize("case", [c for c in ref.CASES if c.groups == 4], ids=lambda c: c.id)
def test_frozen_group_uses_running_stats_in_training(case):
    layer = BatchNormLayer(case, uneven=True)
    bn = layer.module.train()
    bn.set_frozen(0)
    config = case.configs()[-1]
    before = _tensors(bn)
    x = layer.input(config, 8)
    out = bn(x, sorted(config))
    s = ref.bn_slot(case, 0, config)
    n0 = layer.sizes[0]
    expected0 = torch.nn.functional.batch_norm(x[:, :n0], before["running_mean" + s], before["running_var" + s],
                                               before["weight" + s], before["bias" + s], training=False)
    assert_close(out[:, :n0], expected0, torch.float32, "frozen group 0")
    assert torch.equal(dict(bn.named_buffers())["running_mean" + s], before["running_mean" + s])
    s1 = ref.bn_slot(case, 1, config)
    assert not torch.equal(dict(bn.named_buffers())["running_mean" + s1], before["running_mean" + s1])
    bn.set_frozen(0, False)
    bn(x, sorted(config))
    assert not torch.equal(dict(bn.named_buffers())["running_mean" + s], before["running_mean" + s])
