"""Tiny generated training data shared by the training tests (test_train.py, test_ddp.py)."""
import torch

#: A tiny net for 8x8 images and 4 classes; format it with `connectivity` and `head`.
TINY_SPEC = """dydnn-spec 1
name tiny
input 1 8 8
classes 4
groups 4
connectivity {connectivity}
head {head}
conv 8 kernel=3 padding=1 bn relu maxpool=2
conv 16 kernel=3 padding=1 bn relu maxpool=2
"""


def tiny_spec(connectivity: str = "incremental", head: str = "additive") -> str:
    """TINY_SPEC with a connectivity and a head."""
    return TINY_SPEC.format(connectivity=connectivity, head=head)


def tiny_data(n: int, seed: int):
    """Four classes, each a bright quadrant on uniform noise: uint8 images [n, 1, 8, 8], int64 labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    half = torch.arange(8) // 4
    quadrants = torch.stack([(half[:, None] == c // 2) & (half[None, :] == c % 2) for c in range(4)])
    images += 0.6 * quadrants[labels].unsqueeze(1)
    return (images.clamp(0, 1) * 255).to(torch.uint8), labels


def snapshot(net):
    """Every parameter and buffer, cloned, by name."""
    return {n: t.detach().clone() for n, t in list(net.named_parameters()) + list(net.named_buffers())}


def outputs(net, x):
    """Logits of every valid config in eval mode, by config name (the net is left in training mode)."""
    net.eval()
    with torch.no_grad():
        out = {c.name: net(x, c).clone() for c in net.configs}
    net.train()
    return out
