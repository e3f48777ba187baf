"""Tiny generated training data shared by the training tests (test_train.py, test_ddp.py)."""
import torch


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
