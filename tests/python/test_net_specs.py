"""DynamicNet from the shipped specs and from small specs of every connectivity and head:
output shape, materialize(config) equality, parameter counts and MACs."""
import pytest
import torch

import dydnn
import reference as ref
from conftest import NET_CONNECTIVITIES, assert_close, random_net, small_spec

SHIPPED = dydnn.available_specs()
INCREMENTAL = [n for n in SHIPPED if dydnn.NetSpec.load(str(dydnn.spec_path(n))).connectivity == "incremental"]


def _case(net) -> ref.Case:
    return ref.Case(net.spec.connectivity, net.spec.groups, net.connectivity.cross_edges)


def _input(net, batch=2):
    s = net.spec
    return torch.rand(batch, s.in_channels, s.height, s.width)


def test_shipped_specs_exist():
    assert SHIPPED == ["cifar10_alexnet", "fashion_mnist_default", "fashion_mnist_exits", "fashion_mnist_fluid", "mnist_small"]
    assert dydnn.spec_path("mnist_small").name == "mnist_small.spec"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_forward_and_materialize(name):
    net = random_net(name)
    assert net.spec.name == name
    x = _input(net)
    for config in net.configs:
        with torch.no_grad():
            out = net(x, config)
            assert out.shape == (2, net.spec.classes)
            static = net.materialize(config)
            assert isinstance(static, torch.nn.Sequential) and not static.training
            assert_close(static(x), out, torch.float32, f"{name} materialize {config.name}")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_round_trips_through_text(name):
    spec = dydnn.NetSpec.load(str(dydnn.spec_path(name)))
    again = dydnn.NetSpec.parse(spec.to_text())
    assert again.to_text() == spec.to_text()
    assert (again.name, again.classes, again.groups, again.num_layers) == (spec.name, spec.classes, spec.groups,
                                                                          spec.num_layers)


def _used_numel(net, case, config):
    return sum(p.numel() for n, p in net.named_parameters() if ref.net_tensor_used(case, config, n))


def _reference_macs(net, case, config):
    """Used weight numbers x output pixels for each conv, plus used weights of each linear."""
    pixels = []
    seq = net.materialize(config)
    for m in seq:
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda m, i, o: pixels.append(o.shape[2] * o.shape[3]))
    with torch.no_grad():
        seq(_input(net, 1))
    total, conv_index = 0, 0
    for module_name, module in net.named_children():
        used = sum(p.numel() for n, p in module.named_parameters()
                   if n.startswith("weight") and ref.net_tensor_used(case, config, f"{module_name}.{n}"))
        if module_name.startswith("conv"):
            total += used * pixels[conv_index]
            conv_index += 1
        elif module_name.startswith(("linear", "head")):
            total += used
    return total


@pytest.mark.parametrize("name", INCREMENTAL)
def test_shipped_spec_counts_grow_with_the_config(name):
    net = dydnn.nn.DynamicNet(name)
    assert net.spec.connectivity == "incremental"
    case = _case(net)
    params = [net.parameter_count(c) for c in net.configs]
    macs = [net.macs(c) for c in net.configs]
    assert params == sorted(set(params)) and macs == sorted(set(macs)), (params, macs)
    for config in net.configs:
        groups = frozenset(config.groups)
        assert net.parameter_count(config) == _used_numel(net, case, groups), config.name
        assert net.macs(config) == _reference_macs(net, case, groups), config.name


def test_cifar10_alexnet_size_matches_the_paper():
    """MLCAD'19's AlexNet-style net is ~320 kB of float32 weights as a dense static model."""
    net = dydnn.nn.DynamicNet("cifar10_alexnet")
    full = net.configs[-1]
    dense_bytes = 4 * sum(p.numel() for p in net.materialize(full).parameters())
    assert 300_000 <= dense_bytes <= 340_000, f"{dense_bytes} bytes"
    # the dynamic net stores only the allowed (lower-triangular) blocks
    assert net.parameter_count(full) == sum(p.numel() for p in net.parameters()) < dense_bytes // 4


@pytest.mark.parametrize("head", ["additive", "prefix", "per_config"])
@pytest.mark.parametrize("connectivity", sorted(NET_CONNECTIVITIES))
def test_small_spec_every_connectivity_and_head(connectivity, head):
    net = random_net(small_spec(connectivity, head))
    case = _case(net)
    assert [frozenset(c.groups) for c in net.configs] == case.configs() or case.kind == "independent"
    assert net.spec.head == head
    x = _input(net, 3)
    for config in net.configs:
        groups = frozenset(config.groups)
        with torch.no_grad():
            out = net(x, config)
            assert out.shape == (3, 4)
            assert_close(net.materialize(config)(x), out, torch.float32, f"{connectivity}/{head} {config.name}")
        assert net.parameter_count(config) == _used_numel(net, case, groups), f"{connectivity}/{head} {config.name}"
        assert net.macs(config) == _reference_macs(net, case, groups), f"{connectivity}/{head} {config.name}"
