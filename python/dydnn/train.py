"""Training dynamic nets: incremental, nested (Fluid), sandwich and static (design §4.1, §4.2).

The per-batch work (freezing, the optimiser step, sandwich sampling, checkpoints) is
the C++ ``dydnn::train::Trainer``; this module drives it over tensors, a
``torch.utils.data.Dataset`` or a ``DataLoader``, shows progress with tqdm, and runs
under ``torch.nn.parallel.DistributedDataParallel``.

Example::

    import dydnn
    from dydnn import nn, train

    net = nn.DynamicNet("fashion_mnist_default")
    images, labels = dydnn.data.fashion_mnist("train", raw=True)     # uint8, int64
    trainer = train.Trainer(net, "incremental", epochs=2, lr=0.05)
    trainer.fit((images, labels))
    table = trainer.evaluate(dydnn.data.fashion_mnist("test", raw=True))

The building blocks are public so you can write your own loop::

    stages = train.plan_stages(net, "incremental")
    for s in range(len(stages)):
        params = train.freeze_for_stage(net, stages, s)   # earlier groups frozen, BN stats too
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
        ...  # loss = F.cross_entropy(net(x, stages[s].config), y); loss.backward(); opt.step()
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch

from . import _C
from .nn import DynamicNet

__all__ = [
    "METHODS",
    "Trainer",
    "plan_stages",
    "stage_parameters",
    "freeze_for_stage",
    "unfreeze_all",
    "evaluate",
    "write_results",
    "Normalization",
    "Metrics",
]

#: The training methods: ``static`` (the full net at once, the baseline), ``incremental``
#: (one stage per config, MLCAD'19), ``nested`` (Fluid islands, design §4.2) and
#: ``sandwich`` (slimmable joint training with in-place distillation).
METHODS = ("static", "incremental", "nested", "sandwich")

Normalization = _C.Normalization
Metrics = _C.Metrics

DataLike = Union[Tuple[torch.Tensor, torch.Tensor], torch.utils.data.Dataset, torch.utils.data.DataLoader]


def _impl(net: DynamicNet):
    if isinstance(net, DynamicNet):
        return net._impl
    raise ValueError(f"[dydnn.train] expected a dydnn.nn.DynamicNet, got {type(net).__name__}")


def plan_stages(net: DynamicNet, method: str) -> List[_C.Stage]:
    """The stages ``method`` trains ``net`` in; each has ``config``, ``configs`` and ``name``."""
    return list(_C.plan_stages(_impl(net), method))


def stage_parameters(net: DynamicNet, stages: Sequence[_C.Stage], index: int) -> List[torch.Tensor]:
    """The parameters stage ``index`` trains (the same tensors as ``net.parameters()``):
    those its configs use minus those any earlier stage's configs use."""
    return list(_C.stage_parameters(_impl(net), list(stages), index))


def freeze_for_stage(net: DynamicNet, stages: Sequence[_C.Stage], index: int) -> List[torch.Tensor]:
    """Makes exactly stage ``index``'s parameters trainable and freezes the BN statistics of
    every earlier stage's configs; returns the trainable parameters (give them to an optimiser)."""
    return list(_C.freeze_for_stage(_impl(net), list(stages), index))


def unfreeze_all(net: DynamicNet) -> None:
    """Every parameter trainable and every BN statistics set learning again."""
    _C.unfreeze_all(_impl(net))


def _evaluation_dict(e) -> dict:
    m = e.metrics
    return {
        "config": e.config.name,
        "groups": list(e.config.groups),
        "top1": m.top1,
        "loss": m.loss,
        "confidence_sum": m.confidence_sum,
        "normalised_confidence": e.normalised_confidence,
        "examples": m.count,
        "macs": e.macs,
        "parameters": e.parameters,
    }


def _is_tensor_pair(data) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)


def evaluate(net: DynamicNet, data: DataLike, *, normalization: Optional[Normalization] = None,
             batch_size: int = 500, raw: bool = False):
    """Top-1, loss and normalised total confidence of every valid config on ``data``.

    ``data``: ``(images, labels)`` tensors (uint8 images are scaled to [0, 1] and then
    normalised with ``normalization``), a ``Dataset`` or a ``DataLoader`` of such batches.
    Returns a list of dicts (``config``, ``top1``, ``loss``, ``normalised_confidence``,
    ``macs``, ``parameters``, ...) in ``net.configs`` order, or the C++ objects with ``raw``.
    """
    impl = _impl(net)
    norm = normalization if normalization is not None else Normalization()
    if _is_tensor_pair(data):
        result = _C.evaluate_configs(impl, data[0], data[1], norm, batch_size)
    else:
        loader = data if isinstance(data, torch.utils.data.DataLoader) else torch.utils.data.DataLoader(
            data, batch_size=batch_size)
        metrics = [Metrics() for _ in impl.configs]
        was_training = net.training
        net.eval()
        with torch.no_grad():
            for images, labels in loader:
                x = norm.apply(images)
                for m, c in zip(metrics, impl.configs):
                    m.add(impl.forward_at(x, c), labels)
        net.train(was_training)
        if metrics[0].count == 0:
            raise ValueError("[dydnn.train] evaluate: the data set is empty (0 examples; need at least 1)")
        result = _C.summarize_evaluations(impl, metrics)
    return result if raw else [_evaluation_dict(e) for e in result]


def _distributed() -> Tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Trains a :class:`dydnn.nn.DynamicNet` with one of :data:`METHODS`, stage by stage.

    ``epochs`` and ``lr`` are one value for every stage or one per stage (a wrong count is a
    ``ValueError`` naming the stages). The learning rate decays with a cosine within each
    stage unless ``cosine=False``. ``checkpoint_dir`` receives ``checkpoint.pt`` after every
    epoch; ``fit(..., resume=True)`` continues from it and reproduces the uninterrupted run.
    ``augment`` mirrors and shifts (up to ``augment_shift`` pixels) every training batch,
    seeded per epoch. A net with early exits trains them jointly on
    ``sum_e exit_weights[e] * loss(exit e)`` (default: weight 1 each; the final head last).
    Under ``torch.distributed`` each stage runs through ``DistributedDataParallel`` (gloo
    works on CPU), each rank on its share of every epoch, and only rank 0 writes files.
    """

    def __init__(self, net: DynamicNet, method: str = "incremental", *, epochs: Union[int, Sequence[int]] = 2,
                 lr: Union[float, Sequence[float]] = 0.05, cosine: bool = True, optimizer: str = "sgd",
                 momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 64, seed: int = 0,
                 sandwich_random: int = 2, distill: bool = True, checkpoint_dir: Union[str, os.PathLike, None] = None,
                 progress: bool = True, normalization: Optional[Normalization] = None, augment: bool = False,
                 augment_shift: int = 2, augment_flip: bool = True,
                 exit_weights: Optional[Sequence[float]] = None):
        self.net = net
        rank, _ = _distributed()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if self.checkpoint_dir is not None and rank == 0:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        epochs = [int(epochs)] if isinstance(epochs, int) else [int(e) for e in epochs]
        lr = [float(lr)] if isinstance(lr, (int, float)) else [float(r) for r in lr]
        self._cpp = _C.Trainer(_impl(net), method, epochs, lr, cosine, optimizer, momentum, weight_decay, batch_size,
                               seed, sandwich_random, distill,
                               str(self.checkpoint_dir) if self.checkpoint_dir is not None and rank == 0 else "",
                               False, augment, augment_shift, augment_flip,
                               [float(w) for w in exit_weights] if exit_weights is not None else [])
        self.progress = progress
        if normalization is not None:
            self._cpp.normalization = normalization

    # -- position -------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self._cpp.method

    @property
    def stages(self) -> List[_C.Stage]:
        return list(self._cpp.stages)

    @property
    def stage(self) -> int:
        return self._cpp.stage

    @property
    def epoch(self) -> int:
        return self._cpp.epoch

    @property
    def finished(self) -> bool:
        return self._cpp.finished

    @property
    def history(self) -> List[dict]:
        """One dict per epoch: stage, epoch, config, lr, loss, train_top1, validation_top1, images, seconds."""
        return self._cpp.history

    @property
    def normalization(self) -> Normalization:
        return self._cpp.normalization

    @normalization.setter
    def normalization(self, value: Normalization) -> None:
        self._cpp.normalization = value

    # -- training -------------------------------------------------------------------------
    def step(self, images: torch.Tensor, labels: torch.Tensor, forward=None) -> Tuple[float, int, int]:
        """One optimiser step on a normalised float batch; returns (loss sum, correct, count)."""
        return self._cpp.step(images, labels, forward)

    def save_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        """Writes net, optimiser, position and history atomically."""
        self._cpp.save_checkpoint(os.fspath(path))

    def load_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        self._cpp.load_checkpoint(os.fspath(path))

    def fit(self, train: DataLike, validation: Optional[DataLike] = None, *, resume: bool = False,
            distributed: Optional[bool] = None) -> "Trainer":
        """Trains every remaining epoch of every stage.

        ``train``: ``(images, labels)`` tensors (uint8 images get a normalisation fitted on
        them unless one was given), a ``Dataset`` (batched and shuffled per epoch with a seed
        from ``(seed, stage, epoch)``) or a ``DataLoader`` (used as it is; the global torch
        seed is set per epoch so its shuffling is reproducible). ``validation`` is measured at
        the stage's config after every epoch. ``resume`` continues from ``checkpoint_dir``.
        """
        rank, world = _distributed()
        if distributed is None:
            distributed = world > 1
        if resume:
            path = self._checkpoint_file()
            if path is not None and path.exists():
                self._cpp.load_checkpoint(str(path))
        tensors = _is_tensor_pair(train)
        if tensors:
            images, labels = train
            _C.check_dataset(images, labels, _impl(self.net).spec, "training data")
            if self._cpp.normalization.identity and images.dtype == torch.uint8:
                self._cpp.normalization = Normalization.fit(images)
        elif isinstance(train, torch.utils.data.Dataset) and len(train) == 0:
            raise ValueError("[dydnn.train] training data: the data set is empty (0 examples; need at least 1)")
        if validation is not None and _is_tensor_pair(validation):
            _C.check_dataset(validation[0], validation[1], _impl(self.net).spec, "validation data")
        while not self._cpp.finished:
            if self._cpp.epochs_of(self._cpp.stage) == 0:
                self._cpp.skip_stage()  # a stage given 0 epochs
                continue
            if self._cpp.stage_is_empty():
                self._cpp.skip_stage()
                continue
            self._run_epoch(train, validation, tensors, rank, world, distributed)
        return self

    def _checkpoint_file(self) -> Optional[Path]:
        return self.checkpoint_dir / "checkpoint.pt" if self.checkpoint_dir is not None else None

    def _batches(self, train, tensors: bool, rank: int, world: int):
        cpp = self._cpp
        if tensors:
            images, labels = train
            order = cpp.epoch_order(labels.shape[0])[rank::world]
            for b in range(0, order.shape[0], cpp.batch_size):
                index = order[b:b + cpp.batch_size]
                yield cpp.normalization.apply(images.index_select(0, index)), labels.index_select(0, index)
            return
        seed = _C.derive_seed(cpp.seed, cpp.stage, cpp.epoch) & ((1 << 63) - 1)
        if isinstance(train, torch.utils.data.DataLoader):
            torch.manual_seed(seed)
            loader = train
        else:
            generator = torch.Generator().manual_seed(seed)
            if world > 1:
                sampler = torch.utils.data.distributed.DistributedSampler(train, num_replicas=world, rank=rank,
                                                                          shuffle=True, seed=seed)
                loader = torch.utils.data.DataLoader(train, batch_size=cpp.batch_size, sampler=sampler)
            else:
                loader = torch.utils.data.DataLoader(train, batch_size=cpp.batch_size, shuffle=True,
                                                     generator=generator)
        for images, labels in loader:
            yield cpp.normalization.apply(images), labels

    def _run_epoch(self, train, validation, tensors: bool, rank: int, world: int, distributed: bool) -> None:
        cpp = self._cpp
        cpp.prepare()
        stage = cpp.stages[cpp.stage]
        forward = None
        if distributed:
            # A fresh wrapper per epoch: what requires a gradient changes between stages.
            ddp = _wrap_ddp(self.net, find_unused=cpp.method == "sandwich")
            forward = lambda x, c: ddp(x, c)  # noqa: E731
        total = None
        if tensors:
            total = (train[1].shape[0] // world + cpp.batch_size - 1) // cpp.batch_size
        elif hasattr(train, "__len__"):
            total = len(train) if isinstance(train, torch.utils.data.DataLoader) else -(-len(train) // cpp.batch_size)
        desc = (f"stage {cpp.stage + 1}/{len(cpp.stages)} ({stage.name}) "
                f"epoch {cpp.epoch + 1}/{cpp.epochs_of(cpp.stage)}")
        loss_sum, correct, count = 0.0, 0, 0
        start = time.perf_counter()
        bar = _progress(total, desc, self.progress and rank == 0)
        for images, labels in self._batches(train, tensors, rank, world):
            l, c, n = cpp.step(images, labels, forward)
            loss_sum, correct, count = loss_sum + l, correct + c, count + n
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.4f}", refresh=False)
        if count == 0:
            raise ValueError("[dydnn.train] training data: the data set is empty (0 examples; need at least 1)")
        if distributed:
            # DDP copies rank 0's buffers at each forward, so after the last batch every rank
            # has updated its own BN statistics: make them rank 0's again.
            for b in self.net.buffers():
                torch.distributed.broadcast(b, 0)
        seconds = time.perf_counter() - start
        val = self._validate(validation, stage.config) if validation is not None else None
        if bar is not None:
            if val is not None:
                bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.4f}", val=f"{val:.4f}")
            bar.close()
        cpp.end_epoch(loss_sum / count, correct / count, val, count, seconds)

    def _validate(self, validation, config) -> float:
        impl = _impl(self.net)
        if _is_tensor_pair(validation):
            return _C.evaluate_config(impl, validation[0], validation[1], self._cpp.normalization, config).top1
        was_training = self.net.training
        self.net.eval()
        m = Metrics()
        loader = validation if isinstance(validation, torch.utils.data.DataLoader) else \
            torch.utils.data.DataLoader(validation, batch_size=500)
        with torch.no_grad():
            for images, labels in loader:
                m.add(impl.forward_at(self._cpp.normalization.apply(images), config), labels)
        self.net.train(was_training)
        return m.top1

    # -- results --------------------------------------------------------------------------
    def evaluate(self, data: DataLike, batch_size: int = 500) -> List[dict]:
        """Every valid config on ``data`` with this trainer's normalisation (see :func:`evaluate`)."""
        return evaluate(self.net, data, normalization=self._cpp.normalization, batch_size=batch_size)

    def results(self, data: DataLike, dataset: str = "", latency: bool = True, batch_size: int = 500) -> dict:
        """Evaluates every config on ``data`` and returns the results document (the same JSON
        the C++ trainer writes), with the median batch-1 latency of each config when ``latency``."""
        raw = evaluate(self.net, data, normalization=self._cpp.normalization, batch_size=batch_size, raw=True)
        doc = json.loads(self._cpp.results_json(raw, dataset))
        if latency:
            spec = _impl(self.net).spec
            x = torch.randn(1, spec.in_channels, spec.height, spec.width)
            for e in doc["evaluations"]:
                stats = self.net.measure_latency(x, e["config"], warmup=20, repetitions=100)
                e["latency_us"] = stats["median_us"]
                e["latency_p95_us"] = stats["p95_us"]
            doc["latency_threads"] = torch.get_num_threads()
        return doc

    def save_results(self, path: Union[str, os.PathLike], data: DataLike, dataset: str = "",
                     latency: bool = True) -> dict:
        """:meth:`results`, written to ``path`` atomically (rank 0 only); returns the document."""
        doc = self.results(data, dataset, latency)
        write_results(path, doc)
        return doc


def _wrap_ddp(net: DynamicNet, find_unused: bool):
    """``DistributedDataParallel(net)``; ``sandwich`` leaves some parameters unused by some configs."""
    return torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=find_unused)


def write_results(path: Union[str, os.PathLike], doc: dict) -> None:
    """Writes a results document (e.g. :meth:`Trainer.results` with fields of your own added) as
    JSON, atomically (a temporary file, then a rename); only rank 0 writes under torch.distributed."""
    if _distributed()[0] == 0:
        _write_json_atomically(Path(path), doc)


def _write_json_atomically(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def _progress(total, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but training must not fail without it
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)
