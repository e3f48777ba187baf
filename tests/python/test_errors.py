"""Bad input: the exception type and a message naming the bad value and what is valid."""
import pytest
import torch

import dydnn
from dydnn.nn import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, DynamicNet


@pytest.fixture
def conv():
    return DynamicConv2d(8, 8, 3, padding=1, groups=4, connectivity="incremental")


def test_wrong_channel_count(conv):
    with pytest.raises(ValueError, match=r"DynamicConv2d: input has 5 channels, but config \{0,1\} needs 4 "
                                         r"\(the active groups of \[2,2,2,2\]\)"):
        conv(torch.randn(1, 5, 6, 6), "AB")
    with pytest.raises(ValueError, match=r"DynamicLinear: input has 3 channels, but config \{0,1,2,3\} needs 8"):
        DynamicLinear(8, 8)(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"DynamicBatchNorm2d: input has 8 channels, but config \{0\} needs 2"):
        DynamicBatchNorm2d(8)(torch.randn(2, 8, 3, 3), "A")


def test_wrong_rank(conv):
    with pytest.raises(ValueError, match=r"DynamicConv2d: expected a 4D input \[N, C, H, W\] \(got a 3D input"):
        conv(torch.randn(8, 6, 6))
    with pytest.raises(ValueError, match=r"DynamicLinear: expected a 2D input .*got a 4D input"):
        DynamicLinear(8, 8)(torch.randn(1, 8, 1, 1))
    with pytest.raises(ValueError, match=r"DynamicBatchNorm2d: expected a 4D input \[N, C, H, W\] \(got a 2D input\)"):
        DynamicBatchNorm2d(8)(torch.randn(2, 8))


def test_wrong_net_input_shape():
    net = DynamicNet("fashion_mnist_default")
    with pytest.raises(ValueError, match=r"DynamicNet 'fashion_mnist_default': expected input \[N, 1, 28, 28\] "
                                         r"\(got \[1, 3, 28, 28\]\)"):
        net(torch.randn(1, 3, 28, 28))


def test_config_out_of_range(conv):
    message = r"DynamicConv2d: config \{0,5\} names group 5, but there are 4 groups \(valid: 0\.\.3\)"
    with pytest.raises(IndexError, match=message):
        conv.set_config([0, 5])
    with pytest.raises(IndexError, match=message):
        conv(torch.randn(1, 8, 6, 6), [0, 5])
    with pytest.raises(IndexError, match=r"DynamicNet: config \{0,4\} names group 4, but there are 4 groups"):
        DynamicNet("mnist_small").set_config([0, 4])
    with pytest.raises(ValueError, match=r"Config::parse: 'AE' names group 4, but the model has 4 groups"):
        conv.set_config("AE")
    with pytest.raises(IndexError, match=r"Config: group 70 is out of range \(valid: 0\.\.63\)"):
        dydnn.Config([70])


def test_config_not_valid_for_connectivity(conv):
    with pytest.raises(ValueError, match=r"DynamicConv2d: config \{1\} is not valid for connectivity 'incremental' "
                                         r"\(valid: \{0\}, \{0,1\}, \{0,1,2\}, \{0,1,2,3\}\)"):
        conv.set_config([1])
    net = DynamicNet("fashion_mnist_default")
    with pytest.raises(ValueError, match=r"DynamicNet: config \{0,2\} is not valid for connectivity 'incremental' "
                                         r"\(valid: \{0\}, \{0,1\}, \{0,1,2\}, \{0,1,2,3\}\)"):
        net.set_config("AC")
    assert net.config.name == "ABCD"  # a rejected config leaves the current one alone
    fluid = DynamicConv2d(8, 8, 3, groups=4, connectivity=dydnn.Connectivity.fluid([[0, 1], [2, 3]], True))
    with pytest.raises(ValueError, match=r"config \{3\} is not valid for connectivity 'fluid' \(valid: \{0\}, \{0,1\}, "
                                         r"\{2\}, \{2,3\}, \{0,1,2\}, \{0,1,2,3\}\)"):
        fluid.set_config("D")
    with pytest.raises(ValueError, match=r"DynamicNet.measure_latency: config \{1\} is not valid"):
        net.measure_latency(torch.rand(1, 1, 28, 28), [1], warmup=0, repetitions=1)


def test_bad_config_values(conv):
    with pytest.raises(ValueError, match=r"config 2 is ambiguous: pass the active groups as a list"):
        conv.set_config(2)
    with pytest.raises(ValueError, match=r"config 2 is ambiguous"):
        DynamicNet("mnist_small").set_config(2)
    with pytest.raises(ValueError, match=r"config is empty: a sub-network needs at least one group"):
        conv.set_config([])
    with pytest.raises(ValueError, match=r"config entries must be group indices \(ints\), got '0'"):
        conv.set_config([0, "0"])
    with pytest.raises(ValueError, match=r"Config::parse: unexpected character '\?' in 'A\?'"):
        conv.set_config("A?")


def test_group_spec_errors():
    with pytest.raises(ValueError, match=r"GroupSpec: needs at least one group \(got an empty list\)"):
        dydnn.GroupSpec.counts([])
    with pytest.raises(ValueError, match=r"GroupSpec::equal: 4 groups for 3 channels; .*\(valid: groups <= channels\)"):
        dydnn.GroupSpec.equal(3, 4)
    with pytest.raises(ValueError, match=r"GroupSpec: group 1 has 0 channels \(valid: >= 1\)"):
        dydnn.GroupSpec.counts([2, 0])
    with pytest.raises(ValueError, match=r"GroupSpec::ratios: 3 channels split by \[1,1,1,1\] leaves group 2 empty"):
        dydnn.GroupSpec.ratios(3, [1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"GroupSpec::ratios: ratio -1 is not positive"):
        dydnn.GroupSpec.ratios(8, [1, -1])
    with pytest.raises(ValueError, match=r"GroupSpec::equal: 4 groups for 3 channels"):
        DynamicConv2d(3, 8, 3, groups=4)


def test_unknown_names():
    with pytest.raises(ValueError, match=r"Execution: unknown strategy 'fast' \(valid: auto, packed, per_group\)"):
        DynamicConv2d(8, 8, 3, execution="fast")
    with pytest.raises(ValueError, match=r"unknown spec 'resnet' \(valid: cifar10_alexnet, fashion_mnist_default, fashion_mnist_exits, fashion_mnist_fluid, "
                                         r"mnist_small\)"):
        DynamicNet("resnet")
    with pytest.raises(ValueError, match=r"expected a connectivity name"):
        DynamicConv2d(8, 8, 3, connectivity=3)


HEADER = "dydnn-spec 1\nname t\ninput 1 8 8\nclasses 4\ngroups 2\n"


@pytest.mark.parametrize("text, message", [
    (HEADER + "colour blue\nconv 4 kernel=3\n",
     r"<spec>:6: unknown key 'colour' \(valid: name, input, classes, groups, connectivity, head, conv, linear, exit, configs\)"),
    (HEADER.replace("classes 4", "classes ten") + "conv 4\n", r"<spec>:4: classes 'ten' is not an integer"),
    (HEADER + "conv 4 kernel=3x3\n", r"<spec>:6: kernel '3x3' is not an integer"),
    (HEADER + "conv 4 kernel=3 dropout=0.5\n", r"<spec>:6: unknown option 'dropout=0.5' for conv"),
    ("name t\nconv 4\n", r"<spec>:1: the first line must be 'dydnn-spec 1' \(got 'name t'\)"),
    ("# only a comment\n", r"<spec>:1: empty spec: the first line must be 'dydnn-spec 1'"),
    (HEADER, r"the spec has no layer"),
    (HEADER + "connectivity mesh\nconv 4\n", r"<spec>:6: unknown connectivity 'mesh' \(valid: prefix, incremental"),
    (HEADER + "head softmax\nconv 4\n", r"<spec>:6: unknown head 'softmax' \(valid: additive, per_config, prefix\)"),
])
def test_malformed_spec_names_the_line(text, message):
    with pytest.raises(ValueError, match=message):
        dydnn.NetSpec.parse(text)
    with pytest.raises(ValueError, match=message):
        DynamicNet(text) if text.startswith("dydnn-spec") else dydnn.NetSpec.parse(text)


def test_malformed_spec_file_names_the_file(tmp_path):
    path = tmp_path / "bad.spec"
    path.write_text(HEADER + "conv four\n")
    with pytest.raises(ValueError, match=r"bad\.spec:6: channels 'four' is not an integer"):
        DynamicNet(path)
    with pytest.raises(ValueError, match=r"cannot read spec file"):
        dydnn.NetSpec.load(str(tmp_path / "missing.spec"))
