#!/usr/bin/env python3
"""dydnn demo (run by `make demo`): one dynamic net, many sub-networks, switched live.

1. Builds a dynamic net from a shipped spec (default: the Fashion-MNIST net) and, for
   every valid config, prints its parameter count, MACs, FLOPs and its measured latency
   at batch 1 next to the latency of the same sub-network materialised as a plain static
   torch model.
2. Switches configs image by image on real Fashion-MNIST test images and prints the
   switch time, the inference latency and the predicted and true classes.

At this stage the network is untrained (training arrives with the training issue), so
its predictions are not meaningful; the point is the cost of each config and of a switch.

Usage: python examples/demo.py [--spec NAME] [--images N] [--threads T]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import dydnn
import dydnn.data

try:
    from tqdm import tqdm
except ImportError:  # tqdm is optional: python3-tqdm
    def tqdm(iterable, **_):
        return iterable

UNTRAINED = ("NOTE: the network is UNTRAINED at this stage (training arrives with the training issue): "
             "its predictions are not meaningful; the timings are.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--spec", default="fashion_mnist_default",
                   help=f"a shipped spec ({', '.join(dydnn.available_specs())}) or a spec file")
    p.add_argument("--images", type=int, default=24, help="how many test images to classify live (default 24)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--repetitions", type=int, default=100, help="timed runs per latency figure (default 100)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs before each latency figure (default 20)")
    return p.parse_args(argv)


def time_static(model: torch.nn.Module, x: torch.Tensor, warmup: int, repetitions: int) -> dict:
    """Median and p95 (microseconds) of a plain torch model, timed like DynamicNet.measure_latency."""
    samples = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repetitions):
            start = time.perf_counter()
            model(x)
            samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return {"median_us": statistics.median(samples),
            "p95_us": samples[min(len(samples) - 1, -(-95 * len(samples) // 100) - 1)]}


def si(value: float) -> str:
    """1234567 -> '1.23 M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def config_table(net, x, warmup, repetitions):
    rows = []
    progress = tqdm(net.configs, desc="measuring configs", leave=False, file=sys.stderr,
                    disable=not sys.stderr.isatty())
    for config in progress:
        dynamic = net.measure_latency(x, config, warmup=warmup, repetitions=repetitions)
        static = time_static(net.materialize(config), x, warmup, repetitions)
        rows.append((config, net.parameter_count(config), net.macs(config), dynamic, static))
    header = (f"{'config':<8}{'groups':<10}{'params':>10}{'MACs':>11}{'FLOPs':>11}"
              f"{'dydnn med':>11}{'p95':>9}{'static med':>12}{'p95':>9}{'ratio':>7}")
    print(header)
    print("-" * len(header))
    for config, params, macs, dyn, sta in rows:
        groups = ",".join(str(g) for g in config.groups)
        print(f"{config.name:<8}{groups:<10}{params:>10,}{si(macs):>11}{si(2 * macs):>11}"
              f"{dyn['median_us']:>8.0f} us{dyn['p95_us']:>6.0f} us{sta['median_us']:>9.0f} us{sta['p95_us']:>6.0f} us"
              f"{dyn['median_us'] / sta['median_us']:>7.2f}")
    print("(latency at batch 1; dydnn = DynamicNet.measure_latency in C++; static = net.materialize(config) as a plain\n"
          " torch.nn.Sequential timed with time.perf_counter under torch.inference_mode; ratio = dydnn / static;\n"
          " FLOPs = 2 x MACs)")


def ping_pong(configs):
    """A, AB, ABC, ABCD, ABC, AB, A, AB, ... forever."""
    order = list(configs) + list(configs)[-2:0:-1]
    while True:
        yield from order


def load_images(net, count):
    spec = net.spec
    if (spec.in_channels, spec.height, spec.width) != (1, 28, 28):
        print(f"(spec '{spec.name}' takes {spec.in_channels}x{spec.height}x{spec.width} images, not Fashion-MNIST: "
              f"using random images)")
        return torch.rand(count, spec.in_channels, spec.height, spec.width), None, "random"
    try:
        images, labels = dydnn.data.fashion_mnist("test", limit=count)
        return images, labels, "Fashion-MNIST test"
    except FileNotFoundError as e:
        print(f"{e}\n(using random images instead)")
        return torch.rand(count, 1, 28, 28), None, "random"


def live_switching(net, images, labels, classes):
    """Classifies the images one by one, switching config before each; `classes` names the labels (or None)."""
    name = (lambda k: classes[k]) if classes else str
    print(f"{'image':>5}  {'config':<7}{'set_config':>11}{'inference':>11}  {'predicted':<13}{'true':<13}")
    correct = 0
    configs = ping_pong(net.configs)
    with torch.inference_mode():
        for k in range(images.shape[0]):
            config = next(configs)
            start = time.perf_counter()
            net.set_config(config)
            switched = time.perf_counter()
            logits = net(images[k:k + 1])
            done = time.perf_counter()
            predicted = int(logits.argmax(1))
            true = name(int(labels[k])) if labels is not None else "-"
            correct += labels is not None and predicted == int(labels[k])
            print(f"{k:>5}  {config.name:<7}{(switched - start) * 1e6:>8.1f} us{(done - switched) * 1e6:>8.0f} us  "
                  f"{name(predicted):<13}{true:<13}")
    if labels is not None and images.shape[0] > 0:
        print(f"{correct}/{images.shape[0]} correct (chance level is expected: the network is untrained)")


def main(argv=None):
    args = parse_args(argv)
    if args.images < 0 or args.threads < 1 or args.repetitions < 1 or args.warmup < 0:
        sys.exit("demo.py: need --images >= 0, --threads >= 1, --repetitions >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    dydnn.retain_freed_memory()  # repeated inference must not page-fault its activations (docs/kernels.md)
    torch.manual_seed(0)
    started = time.perf_counter()
    net = dydnn.nn.DynamicNet(args.spec).eval()
    spec = net.spec
    print(f"dydnn {dydnn.__version__} demo: spec '{spec.name}', {spec.groups} groups, connectivity "
          f"'{spec.connectivity}', head '{spec.head}', {len(net.configs)} valid configs, "
          f"{torch.get_num_threads()} thread(s)")
    print(UNTRAINED)
    print()
    print(net.connectivity.mask_picture().rstrip())
    print()
    x = torch.rand(1, spec.in_channels, spec.height, spec.width)
    config_table(net, x, args.warmup, args.repetitions)
    print()
    images, labels, source = load_images(net, args.images)
    print(f"Switching configs live, one image at a time ({images.shape[0]} {source} images; set_config and the\n"
          f"inference (a Python call of net(image), batch 1) timed with time.perf_counter):")
    fashion = source.startswith("Fashion-MNIST")
    live_switching(net, images, labels, dydnn.data.FASHION_MNIST_CLASSES if fashion else None)
    print()
    print(UNTRAINED)
    print(f"demo finished in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
