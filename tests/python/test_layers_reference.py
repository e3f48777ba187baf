"""DynamicConv2d / DynamicLinear against a naive torch.nn.functional reference.

For every valid config of every connectivity preset (prefix, incremental, independent
at G = 1..4; fluid {A,B}/{C*,D*} with and without cross edges at G = 4), equal and
uneven group sizes, batch 1 and 8, float32 (atol 1e-5, rtol 1e-4) and float64
(atol 1e-10, rtol 1e-8): the forward output under every execution strategy, the
gradients of every block parameter and of the input, and `materialize(config)` equal a
reference that sums one convolution / product per active, allowed block.
"""
import pytest
import torch

import dydnn
import reference as ref
from conftest import EXECUTIONS, GROUPED_KINDS, GroupedLayer, assert_close

PAIRS = ref.all_configs()
DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["f32", "f64"]


def every_case(test):
    """Every kind x every valid config of every preset x equal/uneven groups x batch 1/8 x float32/float64."""
    marks = [pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS),
             pytest.mark.parametrize("batch", [1, 8]),
             pytest.mark.parametrize("uneven", [False, True], ids=["equal", "uneven"]),
             pytest.mark.parametrize("pair", PAIRS, ids=ref.config_id),
             pytest.mark.parametrize("kind", sorted(GROUPED_KINDS))]
    for mark in marks:
        test = mark(test)
    return test


def _detached(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("kind", sorted(GROUPED_KINDS))
@pytest.mark.parametrize("case", ref.CASES, ids=lambda c: c.id)
def test_structure_matches_design(kind, case):
    layer = GroupedLayer(kind, case, uneven=True)
    conn = layer.module._impl.connectivity
    assert conn.mask == case.mask()
    configs = [frozenset(c.groups) for c in layer.module.configs]
    assert sorted(configs, key=sorted) == sorted(case.configs(), key=sorted) and len(set(configs)) == len(configs)
    if case.kind != "independent":  # declaration order; independent lists subsets smallest first
        assert configs == case.configs()
    assert [len(c) for c in configs] == sorted(len(c) for c in configs) or case.kind == "fluid"
    names = {n for n, _ in layer.module.named_parameters()}
    assert names == ref.expected_grouped_names(case, layer.dense_in, layer.dense_out, layer.bias_kind)
    assert layer.module.config == dydnn.Config(sorted(case.configs()[-1]))


@every_case
def test_forward_matches_reference(kind, pair, uneven, batch, dtype):
    case, config = pair
    base = GroupedLayer(kind, case, uneven, dtype=dtype)
    params = _detached(base.module)
    x = base.input(config, batch, dtype)
    with torch.no_grad():
        expected = base.reference(x, params, config)
    for execution in EXECUTIONS:
        layer = GroupedLayer(kind, case, uneven, execution, dtype)
        layer.module.load_state_dict(base.module.state_dict())
        layer.module.eval()
        with torch.no_grad():
            got = layer.module(x, sorted(config))
            layer.module.set_config(sorted(config))
            current = layer.module(x)
        what = f"{kind} {case.id} config {ref.name(config)} batch {batch} {dtype} execution={execution}"
        assert got.dtype == dtype
        assert_close(got, expected, dtype, what)
        assert torch.equal(current, got), what
    # with autograd on (eval mode), the training path computes the same values
    assert_close(base.module(x, sorted(config)).detach(), expected, dtype, f"{kind} {case.id} autograd path")


@every_case
def test_gradients_match_reference(kind, pair, uneven, batch, dtype):
    case, config = pair
    layer = GroupedLayer(kind, case, uneven, dtype=dtype)
    layer.module.train()
    params = {n: p.detach().clone().requires_grad_() for n, p in layer.module.named_parameters()}
    x = layer.input(config, batch, dtype)
    x_lib, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = layer.module(x_lib, sorted(config))
    expected = layer.reference(x_ref, params, config)
    grad_out = torch.randn_like(expected)
    out.backward(grad_out)
    expected.backward(grad_out)
    what = f"{kind} {case.id} config {ref.name(config)} batch {batch} {dtype}"
    assert_close(x_lib.grad, x_ref.grad, dtype, f"{what}: input grad")
    for n, p in layer.module.named_parameters():
        if layer.used(n, config):
            assert p.grad is not None, f"{what}: {n} got no gradient"
            assert_close(p.grad, params[n].grad, dtype, f"{what}: grad of {n}")
        else:
            assert p.grad is None, f"{what}: {n} is not used at this config but got a gradient"


@pytest.mark.parametrize("uneven", [False, True], ids=["equal", "uneven"])
@pytest.mark.parametrize("pair", PAIRS, ids=ref.config_id)
@pytest.mark.parametrize("kind", sorted(GROUPED_KINDS))
def test_materialize_matches(kind, pair, uneven):
    case, config = pair
    layer = GroupedLayer(kind, case, uneven)
    layer.module.eval()
    static = layer.module.materialize(sorted(config))
    expected_type = torch.nn.Conv2d if layer.rank == 4 else torch.nn.Linear
    assert type(static) is expected_type
    x = layer.input(config, 8)
    with torch.no_grad():
        expected = layer.reference(x, _detached(layer.module), config)
        assert_close(static(x), expected, torch.float32, f"{kind} {case.id} {ref.name(config)} materialize")
        assert_close(static(x), layer.module(x, sorted(config)), torch.float32, "materialize vs forward")
    # it holds copies: changing it leaves the dynamic layer alone
    with torch.no_grad():
        static.weight.zero_()
    assert any(p.abs().sum() > 0 for p in layer.module.parameters())


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_conv_geometry(execution):
    """Non-square kernel, stride 2, asymmetric padding, no bias."""
    case = ref.Case("incremental", 4)
    conv = dydnn.nn.DynamicConv2d(8, 12, (3, 1), stride=2, padding=(1, 0), bias=False, groups=4,
                                  connectivity="incremental", execution=execution).eval()
    assert not any(n.startswith("bias") for n, _ in conv.named_parameters())
    params = _detached(conv)
    for config in case.configs():
        x = torch.randn(2, 2 * len(config), 7, 5)
        op = lambda a, w: torch.nn.functional.conv2d(a, w, stride=2, padding=(1, 0))  # noqa: E731
        with torch.no_grad():
            expected = ref.grouped_reference(x, params, case, config, [2] * 4, op, bias_kind=None)
            assert_close(conv(x, sorted(config)), expected, torch.float32, f"geometry {ref.name(config)}")
            assert_close(conv.materialize(sorted(config))(x), expected, torch.float32, "geometry materialize")
