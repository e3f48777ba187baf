"""Trains every method on Fashion-MNIST at one budget and writes a results JSON per method.

Budget: every method trains each of its stages for the same number of epochs
(``--epochs``), so each weight sees the same number of passes over the data; the JSON
records the images processed and the wall time as well. docs/make_results.py renders
docs/results.md from these files.

    python benchmarks/train_methods.py --epochs 10 --out build/results           # all methods
    python benchmarks/train_methods.py --methods incremental static --epochs 10    # a subset
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

import dydnn
from dydnn import nn, train

#: name -> (shipped spec, method, spec overrides). `static` and `sandwich` train the dense
#: (all-to-all) twin of the default net; `nested` the Fluid net, with and without cross edges.
RUNS = {
    "static": ("fashion_mnist_default", "static",
               dict(name="fashion_mnist_static", connectivity="prefix", head="prefix", configs=["ABCD"])),
    "incremental": ("fashion_mnist_default", "incremental", {}),
    "incremental_per_config_head": ("fashion_mnist_default", "incremental",
                                    dict(name="fashion_mnist_default_per_config_head", head="per_config")),
    "nested_cross": ("fashion_mnist_fluid", "nested", {}),
    "nested_late": ("fashion_mnist_fluid", "nested", dict(name="fashion_mnist_fluid_late", cross_edges=False)),
    "sandwich": ("fashion_mnist_default", "sandwich",
                 dict(name="fashion_mnist_slimmable", connectivity="prefix", head="prefix")),
}


def run(name: str, epochs: int, lr: float, seed: int, out: Path, limit: int | None, threads: int,
        augment: bool = False, suffix: str = "") -> dict:
    spec_name, method, overrides = RUNS[name]
    if augment:
        name = f"{name}_aug"
    if suffix:
        name = f"{name}_{suffix}"
    spec = nn._load_spec(spec_name)
    if overrides:
        spec = spec.replace(**overrides)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = nn.DynamicNet(spec)
    images, labels = dydnn.data.fashion_mnist("train", raw=True, limit=limit)
    tr_x, tr_y, val_x, val_y = dydnn._C.split_dataset(images, labels, 5000 / 60000, seed)
    test = dydnn.data.fashion_mnist("test", raw=True)
    trainer = train.Trainer(net, method, epochs=epochs, lr=lr, seed=seed, checkpoint_dir=out / name,
                            progress=sys.stderr.isatty(), augment=augment)
    start = time.perf_counter()
    trainer.fit((tr_x, tr_y), (val_x, val_y), resume=True)
    wall = time.perf_counter() - start
    torch.set_num_threads(1)  # latency at batch 1 on one thread, as in docs/kernels.md
    doc = trainer.results(test, dataset="fashion_mnist (55k train / 5k validation / 10k test)")
    doc["run"] = {"name": name, "epochs_per_stage": epochs, "lr": lr, "train_threads": threads, "augment": augment,
                  "wall_seconds_this_process": wall}
    train.write_results(out / f"{name}.json", doc)
    return doc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--epochs", type=int, default=10, help="epochs per stage, every method (default 10)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for training (default 1)")
    p.add_argument("--augment", action="store_true", help="mirror + shift augmentation (results get an _aug suffix)")
    p.add_argument("--suffix", default="", help="appended to each result's name (e.g. lr002 for a second learning rate)")
    p.add_argument("--limit", type=int, default=None, help="first N training images (smoke runs)")
    p.add_argument("--out", type=Path, default=Path("build/results"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.methods:
        doc = run(name, args.epochs, args.lr, args.seed, args.out, args.limit, args.threads, args.augment, args.suffix)
        tops = ", ".join(f"{e['config']} {e['top1']:.4f}" for e in doc["evaluations"])
        print(f"{doc['run']['name']}: {tops}  ({doc['budget']['seconds']:.0f} s training)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
