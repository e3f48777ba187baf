"""dydnn.train under torch.distributed: a real two-process run (gloo over TCP on 127.0.0.1).

Each rank builds the same net from the same seed and calls ``Trainer.fit`` on the same tiny
data; the Trainer gives each rank its share of every epoch and wraps the net in
DistributedDataParallel per epoch. The ranks write what they hold to files, which the tests
compare. A watchdog kills the ranks after ``DEADLINE_S`` so CI can never hang.

This file is also the worker: ``python test_ddp.py RANK WORLD PORT OUT_DIR``.
"""
import datetime
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_training import outputs, snapshot, tiny_data, tiny_spec

WORLD = 2
DEADLINE_S = 60
N = 64  # examples; 32 per rank and epoch

TINY_SPEC = tiny_spec()
PREFIX_SPEC = tiny_spec("prefix", "prefix")


# -- the worker (one process per rank) ------------------------------------------------------


def worker(rank: int, world: int, port: int, out: Path) -> None:
    import torch.distributed as dist

    import dydnn
    from dydnn import train

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    images, labels = tiny_data(N, 3)
    probe = train.Normalization.fit(images).apply(tiny_data(8, 9)[0])
    result = {}

    # 1. Incremental, one stage per fit (a schedule with 1 epoch for that stage, 0 for the rest):
    #    after each stage, every earlier config's outputs on this rank must be bitwise unchanged.
    torch.manual_seed(0)
    net = dydnn.nn.DynamicNet(TINY_SPEC)
    result["initial"] = snapshot(net)
    after_stage = []
    for s in range(4):
        t = train.Trainer(net, "incremental", epochs=[1 if k == s else 0 for k in range(4)], batch_size=8,
                          progress=False)
        t.fit((images, labels))
        after_stage.append(outputs(net, probe))
    result["outputs_after_stage"] = after_stage
    result["staged"] = snapshot(net)

    # 2. The whole schedule in one fit, with a checkpoint directory of its own per rank.
    torch.manual_seed(0)
    net = dydnn.nn.DynamicNet(TINY_SPEC)
    t = train.Trainer(net, "incremental", epochs=2, batch_size=8, progress=False, checkpoint_dir=out / f"ckpt{rank}")
    t.fit((images, labels))
    result["full"] = snapshot(net)
    result["full_history"] = t.history
    result["normalization"] = (list(t.normalization.mean), list(t.normalization.std))

    # 3. A Dataset of float images (sharded by a DistributedSampler).
    torch.manual_seed(0)
    net = dydnn.nn.DynamicNet(TINY_SPEC)
    dataset = torch.utils.data.TensorDataset(images.float() / 255, labels)
    t = train.Trainer(net, "incremental", epochs=1, batch_size=8, progress=False).fit(dataset)
    result["dataset"] = snapshot(net)
    result["dataset_history"] = t.history

    # 4. Sandwich on a prefix net: several forward/backward passes through DDP per step, the
    #    sampled configs the same on every rank (seeded by (seed, stage, epoch)).
    torch.manual_seed(0)
    net = dydnn.nn.DynamicNet(PREFIX_SPEC)
    result["sandwich_initial"] = snapshot(net)
    t = train.Trainer(net, "sandwich", epochs=2, batch_size=8, progress=False).fit((images, labels))
    result["sandwich"] = snapshot(net)

    torch.save(result, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


# -- the tests ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(out: Path):
    """Starts WORLD worker processes and waits at most DEADLINE_S for all of them."""
    import dydnn

    env = dict(os.environ)
    package_root = str(Path(dydnn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
    env["OMP_NUM_THREADS"] = "1"
    port = _free_port()
    procs, logs = [], []
    for rank in range(WORLD):
        log = open(out / f"rank{rank}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, __file__, str(rank), str(WORLD), str(port), str(out)],
                                      stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(out)))
    deadline = time.monotonic() + DEADLINE_S
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
            if any(p.returncode not in (None, 0) for p in procs):
                # one rank failed: give the other a moment to fail on its own, then stop it
                time.sleep(2)
                break
    finally:
        for p in procs:  # the watchdog: never leave a rank behind
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    codes = [p.returncode for p in procs]
    text = "\n".join(f"--- rank {r} (exit {codes[r]}) ---\n{(out / f'rank{r}.log').read_text()[-4000:]}"
                     for r in range(WORLD))
    return codes, text


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    start = time.monotonic()
    codes, text = _run_ranks(out)
    if codes != [0] * WORLD:
        pytest.fail(f"the {WORLD} ranks did not finish (exit codes {codes}, {time.monotonic() - start:.1f}s)\n{text}",
                    pytrace=False)
    return out, [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def _params(net_state, names):
    return {n: t for n, t in net_state.items() if n in names}


def _param_names(spec=TINY_SPEC):
    import dydnn

    return {n for n, _ in dydnn.nn.DynamicNet(spec).named_parameters()}


def _differ(a, b, names=None):
    return [n for n in (names if names is not None else a) if not torch.equal(a[n], b[n])]


def test_users_can_wrap_a_dynamic_net_in_ddp():
    """``DistributedDataParallel(net)`` in a user's own loop: DDP refuses modules whose parameters
    are ``UninitializedParameter``s, and a DynamicNet's must not look like one."""
    import dydnn

    net = dydnn.nn.DynamicNet(TINY_SPEC)
    lazy = [n for n, p in net.named_parameters() if isinstance(p, torch.nn.parameter.UninitializedParameter)]
    assert not lazy, (f"{len(lazy)} parameters pass isinstance(p, UninitializedParameter), e.g. {lazy[:3]}: "
                      f"DistributedDataParallel(net) raises 'Modules with uninitialized parameters can't be used'")


RUNS = {"staged": TINY_SPEC, "full": TINY_SPEC, "dataset": TINY_SPEC, "sandwich": PREFIX_SPEC}


@pytest.mark.parametrize("run", list(RUNS))
def test_ranks_hold_identical_parameters(ranks, run):
    _, (r0, r1) = ranks
    names = _param_names(RUNS[run])
    differ = _differ(r0[run], r1[run], names)
    assert not differ, f"{run}: parameters differ between ranks: {differ[:5]}"
    initial = r0["sandwich_initial" if run == "sandwich" else "initial"]
    changed = _differ(r0[run], initial, names)
    assert len(changed) == len(names), f"{run}: untrained parameters {sorted(names - set(changed))[:5]}"


@pytest.mark.parametrize("run", list(RUNS))
def test_ranks_hold_identical_buffers(ranks, run):
    _, (r0, r1) = ranks
    buffers = set(r0[run]) - _param_names(RUNS[run])
    differ = _differ(r0[run], r1[run], buffers)
    assert not differ, f"{run}: BN statistics differ between ranks after fit: {sorted(differ)}"


def test_each_rank_trains_on_its_half_of_every_epoch(ranks):
    _, results = ranks
    for rank, r in enumerate(results):
        assert len(r["full_history"]) == 8 and len(r["dataset_history"]) == 4
        for h in r["full_history"] + r["dataset_history"]:
            assert h["images"] == N // WORLD, (rank, h)
    assert results[0]["normalization"] == results[1]["normalization"]
    # different shards: the ranks see different batches, so their training losses differ
    assert [h["loss"] for h in results[0]["full_history"]] != [h["loss"] for h in results[1]["full_history"]]


def test_only_rank_0_writes_the_checkpoint(ranks):
    out, (r0, _) = ranks
    assert sorted(os.listdir(out / "ckpt0")) == ["checkpoint.pt"]
    assert not (out / "ckpt1").exists() or not os.listdir(out / "ckpt1")
    # The checkpoint holds rank 0's final net.
    import dydnn
    from dydnn import train

    torch.manual_seed(5)
    net = dydnn.nn.DynamicNet(TINY_SPEC)
    t = train.Trainer(net, "incremental", epochs=2, batch_size=8, progress=False)
    t.load_checkpoint(out / "ckpt0" / "checkpoint.pt")
    assert t.finished and len(t.history) == 8
    state = snapshot(net)
    assert not _differ(state, r0["full"], _param_names())


def test_earlier_configs_are_unchanged_under_ddp(ranks):
    _, results = ranks
    configs = ["A", "AB", "ABC", "ABCD"]
    for rank, r in enumerate(results):
        outs = r["outputs_after_stage"]
        for s in range(1, 4):
            for c in configs[:s]:
                assert torch.equal(outs[s - 1][c], outs[s][c]), f"rank {rank}: stage {configs[s]} changed {c}"
            assert not torch.equal(outs[s - 1][configs[s]], outs[s][configs[s]]), (rank, configs[s])


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
