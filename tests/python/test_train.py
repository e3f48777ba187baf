"""dydnn.train: stage invariants (bitwise), what is frozen, a hand-written loop from the
public building blocks, Python and C++ loops agreeing, Dataset/DataLoader input, every
method learning, exact resume, checkpoint safety, bad input and the results document.

Everything runs on a tiny generated set (8x8 images, 4 classes) in well under a second per test.
"""
import json
import os
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

import dydnn
from dydnn import train
from dydnn.nn import DynamicNet
from tiny_training import outputs, snapshot, tiny_data, tiny_spec


FLUID_CROSS = "fluid islands=0,1/2,3 cross=on"
FLUID_NOCROSS = "fluid islands=0,1/2,3 cross=off"
BATCH = 16


def static_spec() -> dydnn.NetSpec:
    """The dense baseline: a prefix net with the full config only."""
    return dydnn.NetSpec.parse(tiny_spec("prefix", "prefix")).replace(configs=["ABCD"])


# Each method on a net it trains.
METHOD_SPECS = {
    "static": static_spec,
    "incremental": lambda: tiny_spec("incremental"),
    "nested": lambda: tiny_spec(FLUID_CROSS, "per_config"),
    "sandwich": lambda: tiny_spec("prefix", "prefix"),
}


def make_net(spec, seed=1) -> DynamicNet:
    torch.manual_seed(seed)
    return DynamicNet(spec)


def make_trainer(net, method="incremental", **options) -> train.Trainer:
    options.setdefault("epochs", 1)
    options.setdefault("batch_size", BATCH)
    options.setdefault("progress", False)
    return train.Trainer(net, method, **options)


def assert_same_state(a, b, what):
    assert a.keys() == b.keys(), what
    differ = [n for n in a if not torch.equal(a[n], b[n])]
    assert not differ, f"{what}: {len(differ)} tensors differ, e.g. {differ[:5]}"


def names_of(net, tensors):
    by_id = {id(t): n for n, t in net.named_parameters()}
    assert all(id(t) in by_id for t in tensors), "the C++ tensors must be the very tensors of net.parameters()"
    return {by_id[id(t)] for t in tensors}


def bn_buffers_of(net, config):
    """Names of the BN running statistics `config` reads: those beside each BN weight it uses
    (`bn0.weight_2_at_C` -> `bn0.running_mean_2_at_C`, `bn0.running_var_2_at_C`)."""
    buffers = dict(net.named_buffers())
    out = set()
    for name in names_of(net, net._impl.parameters_of(config)):
        layer, _, leaf = name.rpartition(".")
        if layer.startswith("bn") and leaf.startswith("weight_"):
            suffix = leaf[len("weight_"):]
            for stat in ("running_mean", "running_var"):
                out.add(f"{layer}.{stat}_{suffix}")
    assert out and out <= buffers.keys(), f"BN statistics of {config}: {sorted(out - buffers.keys())}"
    return out


def run_epoch(trainer, images, labels):
    """One epoch through the Python trainer's public step, in the trainer's batch order."""
    cpp = trainer._cpp
    order = cpp.epoch_order(labels.shape[0])
    loss, correct, count = 0.0, 0, 0
    for b in range(0, order.shape[0], cpp.batch_size):
        index = order[b:b + cpp.batch_size]
        l, c, n = trainer.step(cpp.normalization.apply(images.index_select(0, index)), labels.index_select(0, index))
        loss, correct, count = loss + l, correct + c, count + n
    cpp.end_epoch(loss / count, correct / count, None, count, 0.0)


# -- stage invariants ----------------------------------------------------------------------

@pytest.mark.parametrize("method,connectivity,head", [
    ("incremental", "incremental", "additive"),
    ("nested", FLUID_CROSS, "per_config"),
    ("nested", FLUID_NOCROSS, "per_config"),
    # late fusion with an additive head: ABC and ABCD reuse what A, AB, C and CD trained
    ("nested", FLUID_NOCROSS, "additive"),
])
def test_stages_keep_earlier_configs_bitwise(method, connectivity, head):
    net = make_net(tiny_spec(connectivity, head))
    images, labels = tiny_data(64, 3)
    trainer = make_trainer(net, method, epochs=2, normalization=train.Normalization.fit(images))
    probe = trainer.normalization.apply(tiny_data(8, 9)[0])
    stages = trainer.stages
    assert [s.name for s in stages] == [c.name for c in net.configs]
    skipped = []
    for s, stage in enumerate(stages):
        assert trainer.stage == s
        earlier = [st.config for st in stages[:s]]
        trainable = names_of(net, train.stage_parameters(net, stages, s))
        for c in earlier:  # nothing an earlier stage used is trained again
            assert not trainable & names_of(net, net._impl.parameters_of(c)), (stage.name, c.name)
        if trainer._cpp.stage_is_empty():
            assert not trainable
            trainer._cpp.skip_stage()
            skipped.append(stage.name)
            continue
        before, state_before = outputs(net, probe), snapshot(net)
        # Exactly this stage's parameters reach the optimiser and require gradients.
        prepared = trainer._cpp.prepare()
        assert len(prepared) == len(trainable) and names_of(net, prepared) == trainable
        assert {n for n, p in net.named_parameters() if p.requires_grad} == trainable
        while trainer.stage == s:
            run_epoch(trainer, images, labels)
        after, state_after = outputs(net, probe), snapshot(net)
        for c in earlier:
            assert torch.equal(before[c.name], after[c.name]), f"stage {stage.name} changed earlier config {c.name}"
            for b in bn_buffers_of(net, c):
                assert torch.equal(state_before[b], state_after[b]), f"stage {stage.name} changed {b} of {c.name}"
        changed = {n for n, p in net.named_parameters() if not torch.equal(state_before[n], state_after[n])}
        assert changed <= trainable, f"stage {stage.name} changed frozen parameters {sorted(changed - trainable)}"
        assert changed, f"stage {stage.name} trained nothing"
        assert not torch.equal(before[stage.config.name], after[stage.config.name])
    assert trainer.finished
    assert skipped == (["ABC", "ABCD"] if connectivity == FLUID_NOCROSS and head == "additive" else [])


def test_nested_stages_follow_the_design():
    net = make_net(tiny_spec(FLUID_CROSS, "per_config"), seed=2)
    stages = train.plan_stages(net, "nested")
    assert [s.name for s in stages] == ["A", "AB", "C", "CD", "ABC", "ABCD"]  # design 4.2
    # The ABC stage trains the cross edges into C and the ABC head, nothing of A, B or C's own blocks.
    abc = names_of(net, train.stage_parameters(net, stages, 4))
    assert {"conv1.weight_2_0", "conv1.weight_2_1", "head_ABC.weight"} <= abc
    assert not {"conv1.weight_2_2", "conv1.weight_0_0", "conv0.weight_0_0", "head_C.weight"} & abc


@pytest.mark.parametrize("connectivity", [FLUID_CROSS, FLUID_NOCROSS])
def test_nested_island_cd_ignores_a_and_b(connectivity):
    net = make_net(tiny_spec(connectivity, "per_config"), seed=2)
    images, labels = tiny_data(64, 3)
    make_trainer(net, "nested").fit((images, labels))
    x = torch.randn(4, 1, 8, 8)
    before = outputs(net, x)
    with torch.no_grad():  # perturb every weight A and B use
        for t in net._impl.parameters_of("AB"):
            t.add_(torch.randn_like(t))
    after = outputs(net, x)
    assert torch.equal(before["C"], after["C"])
    assert torch.equal(before["CD"], after["CD"])
    for name in ("A", "AB", "ABC", "ABCD"):
        assert not torch.equal(before[name], after[name]), name


def test_split_training_forward_equals_plain_forward():
    net = make_net(tiny_spec("incremental"), seed=3)
    stages = train.plan_stages(net, "incremental")
    params = train.freeze_for_stage(net, stages, 2)
    assert names_of(net, params) == {n for n, p in net.named_parameters() if p.requires_grad}
    assert net._impl.frozen_part("ABC") == dydnn.Config.prefix(2)
    net.train()
    x = torch.randn(8, 1, 8, 8)
    split = net(x, "ABC")  # grad mode: the frozen part runs without autograd
    assert split.requires_grad
    with torch.no_grad():
        plain = net(x, "ABC")
    torch.testing.assert_close(split, plain, rtol=1e-5, atol=1e-5)
    split.sum().backward()
    for n, p in net.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    train.unfreeze_all(net)
    assert all(p.requires_grad for p in net.parameters())


# -- the same training three ways ----------------------------------------------------------

@pytest.mark.parametrize("method", ["incremental", "nested"])
def test_custom_loop_from_building_blocks_matches_trainer(method):
    spec = METHOD_SPECS[method]()
    images, labels = tiny_data(48, 4)
    options = dict(epochs=2, lr=0.05, momentum=0.9, weight_decay=5e-4, cosine=False, seed=5)

    net = make_net(spec)
    make_trainer(net, method, **options).fit((images, labels))
    expected = snapshot(net)

    # A hand-written loop: same stages, freezing, optimiser settings, loss, batch order and
    # normalisation. A second trainer on a throw-away net serves as the clock for epoch_order.
    custom = make_net(spec)
    clock = make_trainer(make_net(spec, seed=0), method, **options)._cpp
    norm = train.Normalization.fit(images)
    n = labels.shape[0]
    stages = train.plan_stages(custom, method)
    for s, stage in enumerate(stages):
        params = train.freeze_for_stage(custom, stages, s)
        opt = torch.optim.SGD(params, lr=options["lr"], momentum=options["momentum"],
                              weight_decay=options["weight_decay"])
        custom.train()
        for e in range(options["epochs"]):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(dydnn._C.derive_seed(5, s, e)))
            assert (clock.stage, clock.epoch) == (s, e)
            assert torch.equal(order, clock.epoch_order(n))
            clock.end_epoch(0.0, 0.0, None, n, 0.0)
            for b in range(0, n, BATCH):
                index = order[b:b + BATCH]
                x, y = norm.apply(images.index_select(0, index)), labels.index_select(0, index)
                opt.zero_grad()
                F.cross_entropy(custom(x, stage.config), y).backward()
                opt.step()
    # torch.optim.SGD (Python) and torch::optim::SGD (C++) do the same float operations in the
    # same order here, so the loops agree bitwise (no tolerance needed).
    assert_same_state(snapshot(custom), expected, f"custom {method} loop vs Trainer")


@pytest.mark.parametrize("method", list(METHOD_SPECS))
def test_python_fit_and_cpp_fit_agree_bitwise(method):
    images, labels = tiny_data(40, 6)  # 40 = 2.5 batches: a short last batch
    results = []
    for loop in ("python", "cpp"):
        net = make_net(METHOD_SPECS[method]())
        trainer = make_trainer(net, method, epochs=2, seed=11)
        if loop == "python":
            trainer.fit((images, labels))
        else:
            trainer._cpp.fit(images, labels)
        results.append((snapshot(net), trainer.history, trainer.normalization))
    (a, ha, na), (b, hb, nb) = results
    assert_same_state(a, b, f"{method}: Trainer.fit vs the C++ loop")
    assert (na.mean, na.std) == (nb.mean, nb.std)
    keys = ("stage", "epoch", "config", "lr", "loss", "train_top1", "images")
    assert [{k: r[k] for k in keys} for r in ha] == [{k: r[k] for k in keys} for r in hb]


# -- Dataset and DataLoader ----------------------------------------------------------------

def test_dataset_and_dataloader_inputs():
    images, labels = tiny_data(48, 7)
    floats = images.float() / 255
    dataset = TensorDataset(floats, labels)
    initial = snapshot(make_net(tiny_spec()))
    runs = {}
    for kind in ("dataset", "dataset again", "loader", "loader again"):
        net = make_net(tiny_spec())
        data = dataset if kind.startswith("dataset") else DataLoader(dataset, batch_size=12, shuffle=True)
        trainer = make_trainer(net, "incremental", epochs=2).fit(data, validation=dataset)
        assert len(trainer.history) == 8
        assert all(r["images"] == 48 for r in trainer.history)
        assert all(0.0 <= r["validation_top1"] <= 1.0 for r in trainer.history)
        runs[kind] = snapshot(net)
        assert any(not torch.equal(runs[kind][n], initial[n]) for n in initial), kind
    # Both shuffle reproducibly: a Dataset with a seed per (seed, stage, epoch), a DataLoader
    # through the global seed the trainer sets per epoch.
    assert_same_state(runs["dataset"], runs["dataset again"], "Dataset runs")
    assert_same_state(runs["loader"], runs["loader again"], "DataLoader runs")
    table = train.evaluate(net, dataset)
    assert [r["config"] for r in table] == ["A", "AB", "ABC", "ABCD"]
    assert all(r["examples"] == 48 for r in table)


def test_empty_dataset_and_dataloader_are_value_errors():
    net = make_net(tiny_spec())
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="the data set is empty"):
        make_trainer(net).fit(empty)
    with pytest.raises(ValueError, match="the data set is empty"):
        make_trainer(net).fit(DataLoader(empty, batch_size=4))
    with pytest.raises(ValueError, match="the data set is empty"):
        make_trainer(net).fit((torch.zeros(0, 1, 8, 8, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="the data set is empty"):
        train.evaluate(net, empty)


# -- learning --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(METHOD_SPECS))
def test_every_method_lowers_the_loss(method):
    net = make_net(METHOD_SPECS[method](), seed=4)
    images, labels = tiny_data(128, 5)
    norm = train.Normalization.fit(images)
    before = train.evaluate(net, (images, labels), normalization=norm)
    trainer = make_trainer(net, method, epochs=3, normalization=norm).fit((images, labels))
    after = trainer.evaluate((images, labels))
    assert [r["config"] for r in after] == [c.name for c in net.configs]
    for b, a in zip(before, after):  # every config, not only the last stage's
        assert a["loss"] < b["loss"], (a["config"], b["loss"], a["loss"])
    for s in range(len(trainer.stages)):
        losses = [r["loss"] for r in trainer.history if r["stage"] == s]
        assert len(losses) == 3 and losses[-1] < losses[0], (s, losses)
    assert after[-1]["top1"] > 0.5
    assert after[-1]["normalised_confidence"] == pytest.approx(1.0)


# -- checkpoints -----------------------------------------------------------------------------

HISTORY_KEYS = ("stage", "epoch", "config", "lr", "loss", "train_top1", "images")


def _history(trainer):
    return [{k: r[k] for k in HISTORY_KEYS} for r in trainer.history]


@pytest.mark.parametrize("method,optimizer,epochs,done,position", [
    ("incremental", "sgd", 2, 3, (1, 1)),  # stopped after 3 of 8 epochs: mid-stage, momentum matters
    ("incremental", "adam", 2, 3, (1, 1)),
    ("nested", "sgd", 2, 5, (2, 1)),
    # The sampled configs must continue the same sequence, and parameters a step did not
    # sample must get no weight decay or momentum (their gradients are dropped, not zeroed).
    ("sandwich", "sgd", 4, 2, (0, 2)),
])
def test_resume_after_interruption_between_epochs_is_bitwise(tmp_path, method, optimizer, epochs, done, position):
    spec = METHOD_SPECS[method]()
    images, labels = tiny_data(48, 6)
    options = dict(epochs=epochs, lr=0.02, optimizer=optimizer)  # cosine decay within each stage
    full = make_net(spec, seed=7)
    full_trainer = make_trainer(full, method, **options).fit((images, labels))

    first = make_net(spec, seed=7)
    t = make_trainer(first, method, checkpoint_dir=tmp_path, **options)
    t.normalization = train.Normalization.fit(images)
    for _ in range(done):
        run_epoch(t, images, labels)
    assert (t.stage, t.epoch) == position
    del t, first

    resumed = make_net(spec, seed=99)  # a new process: other weights, overwritten on resume
    t = make_trainer(resumed, method, checkpoint_dir=tmp_path, **options)
    t.fit((images, labels), resume=True)
    assert_same_state(snapshot(resumed), snapshot(full), f"{method}/{optimizer}: resumed vs uninterrupted")
    assert len(t.history) == len(full_trainer.history) == len(full_trainer.stages) * epochs
    assert _history(t) == _history(full_trainer)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]


class _Crashing(Dataset):
    """A Dataset that raises after `limit` examples, like a run killed mid-epoch."""

    def __init__(self, inner, limit):
        self.inner, self.limit, self.served = inner, limit, 0

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, k):
        self.served += 1
        if self.served > self.limit:
            raise KeyboardInterrupt("simulated interruption")
        return self.inner[k]


def test_resume_after_fit_is_interrupted_mid_epoch(tmp_path):
    images, labels = tiny_data(32, 8)
    dataset = TensorDataset(images.float() / 255, labels)
    options = dict(epochs=2, lr=0.05, seed=3)
    full = make_net(tiny_spec(), seed=5)
    full_trainer = make_trainer(full, "incremental", **options).fit(dataset)

    first = make_net(tiny_spec(), seed=5)
    with pytest.raises(KeyboardInterrupt):  # in the middle of epoch 6 of 8 (stage ABC, 2nd epoch)
        make_trainer(first, "incremental", checkpoint_dir=tmp_path, **options).fit(_Crashing(dataset, 5 * 32 + 20))

    probe = make_trainer(make_net(tiny_spec()), "incremental", **options)
    probe.load_checkpoint(tmp_path / "checkpoint.pt")  # written after each of the 5 whole epochs
    assert (probe.stage, probe.epoch, len(probe.history)) == (2, 1, 5)

    resumed = make_net(tiny_spec(), seed=123)
    t = make_trainer(resumed, "incremental", checkpoint_dir=tmp_path, **options)
    t.fit(dataset, resume=True)
    assert_same_state(snapshot(resumed), snapshot(full), "resumed vs uninterrupted")
    assert _history(t) == _history(full_trainer)


def test_failed_checkpoint_save_names_the_path_and_keeps_the_old_file(tmp_path):
    images, labels = tiny_data(32, 1)
    net = make_net(tiny_spec())
    trainer = make_trainer(net, "incremental", epochs=2).fit((images, labels))
    path = tmp_path / "checkpoint.pt"
    trainer.save_checkpoint(path)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]  # no .tmp left behind
    old = path.read_bytes()

    missing = tmp_path / "no such dir" / "checkpoint.pt"
    with pytest.raises(ValueError, match=re.escape(f"could not write {missing} (")) as error:
        trainer.save_checkpoint(missing)
    assert str(error.value).endswith("the previous file is unchanged")
    assert not missing.parent.exists()

    # Make the save of a *changed* net fail at the existing path: its temporary name is taken.
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    (tmp_path / "checkpoint.pt.tmp").mkdir()
    (tmp_path / "checkpoint.pt.tmp" / "keep").write_text("x")
    with pytest.raises(ValueError, match=f"could not write {path}"):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == old

    # The old file still loads.
    other = make_net(tiny_spec(), seed=2)
    t = make_trainer(other, "incremental", epochs=2)
    t.load_checkpoint(path)
    assert t.finished and len(t.history) == 8


def test_failed_checkpoint_save_message_is_short(tmp_path):
    trainer = make_trainer(make_net(tiny_spec()))
    with pytest.raises(ValueError) as error:
        trainer.save_checkpoint(tmp_path / "no such dir" / "checkpoint.pt")
    assert "frame #" not in str(error.value) and len(str(error.value)) < 600, str(error.value)[:300]


def test_checkpoint_every_epoch_and_mismatched_checkpoints(tmp_path):
    images, labels = tiny_data(32, 1)
    make_trainer(make_net(tiny_spec()), "incremental", checkpoint_dir=tmp_path / "run").fit((images, labels))
    path = tmp_path / "run" / "checkpoint.pt"
    assert sorted(os.listdir(path.parent)) == ["checkpoint.pt"]
    with pytest.raises(ValueError, match=r"written by method 'incremental' with 4 stages; this trainer runs 'static'"):
        make_trainer(make_net(tiny_spec()), "static").load_checkpoint(path)
    with pytest.raises(ValueError, match="holds a different spec"):
        make_trainer(make_net(tiny_spec("incremental", "per_config")), "incremental").load_checkpoint(path)
    with pytest.raises(ValueError, match="is not a readable dydnn checkpoint"):
        make_trainer(make_net(tiny_spec())).load_checkpoint(tmp_path / "nothing.pt")


# -- bad input -------------------------------------------------------------------------------

def test_labels_out_of_range_name_the_label():
    images, labels = tiny_data(16, 1)
    labels[3] = 7
    net = make_net(tiny_spec())
    with pytest.raises(ValueError, match=r"label 7 is out of range \(valid: 0\.\.3"):
        make_trainer(net).fit((images, labels))
    with pytest.raises(ValueError, match=r"label 7 is out of range \(valid: 0\.\.3"):  # per batch
        make_trainer(net).fit(TensorDataset(images.float() / 255, labels))
    labels[3] = -1
    with pytest.raises(ValueError, match=r"label -1 is out of range \(valid: 0\.\.3"):
        make_trainer(net).fit((images, labels))


@pytest.mark.parametrize("shape,message", [
    ((16, 3, 8, 8), r"images have 3 channels but spec 'tiny' expects 1"),
    ((16, 1, 28, 28), r"images are 28x28 but spec 'tiny' expects 8x8"),
    ((16, 8, 8), r"images must be \[N, C, H, W\] \(got shape \[16, 8, 8\]\)"),
])
def test_images_that_do_not_fit_the_spec(shape, message):
    labels = torch.zeros(16, dtype=torch.long)
    net = make_net(tiny_spec())
    with pytest.raises(ValueError, match=message):
        make_trainer(net).fit((torch.zeros(shape, dtype=torch.uint8), labels))
    if len(shape) == 4:
        with pytest.raises(ValueError, match=r"images must be \[N, 1, 8, 8\] for spec 'tiny'"):
            make_trainer(net).fit(TensorDataset(torch.zeros(shape), labels))
    with pytest.raises(ValueError, match="validation data"):
        make_trainer(net).fit(tiny_data(16, 1), validation=(torch.zeros(shape, dtype=torch.uint8), labels))


def test_bad_options_name_the_value():
    net = make_net(tiny_spec())
    with pytest.raises(ValueError, match=r"epochs: the schedule has 3 values but method 'incremental'.*"
                                         r"has 4 stages \(A, AB, ABC, ABCD\); give 1 or 4"):
        make_trainer(net, epochs=[1, 2, 3])
    with pytest.raises(ValueError, match=r"lr: the schedule has 2 values"):
        make_trainer(net, lr=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"unknown training method 'slim' \(valid: static, incremental, nested, "
                                         r"sandwich\)"):
        make_trainer(net, "slim")
    with pytest.raises(ValueError, match=r"method 'nested' trains a fluid net.*connectivity 'incremental'"):
        make_trainer(net, "nested")
    with pytest.raises(ValueError, match=r"method 'nested'"):
        train.plan_stages(net, "nested")
    with pytest.raises(ValueError, match=r"batch_size 0 \(valid: >= 1\)"):
        make_trainer(net, batch_size=0)
    with pytest.raises(ValueError, match=r"optimizer 'rmsprop' \(valid: sgd, adam\)"):
        make_trainer(net, optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"epochs: -1 \(valid: >= 0\)"):
        make_trainer(net, epochs=-1)
    with pytest.raises(ValueError, match=r"expected a dydnn.nn.DynamicNet, got Sequential"):
        train.Trainer(torch.nn.Sequential(), "incremental")
    with pytest.raises(ValueError, match=r"method 'sandwich' samples configs.*declares only 1"):
        make_trainer(DynamicNet(static_spec()), "sandwich")


# -- results ---------------------------------------------------------------------------------

def test_results_document():
    images, labels = tiny_data(48, 2)
    net = make_net(tiny_spec())
    trainer = make_trainer(net, "incremental", epochs=1, lr=0.05).fit((images, labels), validation=(images, labels))
    doc = trainer.results((images, labels), dataset="tiny", latency=False)
    assert doc["format"] == "dydnn-results/1"
    assert (doc["method"], doc["spec"], doc["dataset"]) == ("incremental", "tiny", "tiny")
    assert doc["options"]["epochs"] == [1] and doc["options"]["lr"] == [0.05] and doc["options"]["batch_size"] == BATCH
    assert [s["name"] for s in doc["stages"]] == ["A", "AB", "ABC", "ABCD"]
    assert len(doc["history"]) == 4 and all(r["validation_top1"] is not None for r in doc["history"])
    evaluations = doc["evaluations"]
    assert [e["config"] for e in evaluations] == ["A", "AB", "ABC", "ABCD"]
    for e in evaluations:
        assert 0.0 <= e["top1"] <= 1.0 and e["examples"] == 48
        assert e["macs"] == net.macs(e["config"]) and e["parameters"] == net.parameter_count(e["config"])
        assert "latency_us" not in e
    assert evaluations[-1]["normalised_confidence"] == 1.0
    assert [e["macs"] for e in evaluations] == sorted(e["macs"] for e in evaluations)
    # The JSON keeps 10 significant digits.
    assert [e["top1"] for e in evaluations] == pytest.approx([r["top1"] for r in trainer.evaluate((images, labels))],
                                                             rel=1e-9)

    timed = trainer.results((images, labels), dataset="tiny", latency=True)
    assert all(e["latency_us"] > 0 and e["latency_p95_us"] >= e["latency_us"] for e in timed["evaluations"])
    assert timed["latency_threads"] == torch.get_num_threads()


# --- augmentation ----------------------------------------------------------------------------


def test_augment_mirrors_and_shifts_deterministically():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    assert torch.equal(dydnn._C.augment(x, 0, False, 3), x)
    a, b = dydnn._C.augment(x, 1, True, 3), dydnn._C.augment(x, 1, True, 3)
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, x)  # seed 3 mirrors or shifts at least one image
    # Mirroring alone: every image is itself or its mirror.
    m = dydnn._C.augment(x, 0, True, 5)
    for k in range(2):
        assert torch.equal(m[k], x[k]) or torch.equal(m[k], x[k].flip(2))
    with pytest.raises(ValueError, match=r"max_shift -1 \(valid: >= 0\)"):
        dydnn._C.augment(x, -1, True, 0)


def test_augmented_training_resumes_bitwise(tmp_path):
    images, labels = tiny_data(48, 2)
    full = make_net(tiny_spec(), seed=3)
    make_trainer(full, epochs=2, augment=True).fit((images, labels))
    first = make_net(tiny_spec(), seed=3)
    t = make_trainer(first, epochs=2, augment=True, checkpoint_dir=tmp_path)
    t.normalization = train.Normalization.fit(images)
    for _ in range(3):  # three of eight epochs, then a "crash"
        order = t._cpp.epoch_order(labels.shape[0])
        for b in range(0, labels.shape[0], t._cpp.batch_size):
            index = order[b:b + t._cpp.batch_size]
            t.step(t.normalization.apply(images[index]), labels[index])
        t._cpp.end_epoch(0.0, 0.0, None, 0, 0.0)
    resumed = make_net(tiny_spec(), seed=99)
    make_trainer(resumed, epochs=2, augment=True, checkpoint_dir=tmp_path).fit((images, labels), resume=True)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_metrics_and_normalization_reject_bad_values():
    m = train.Metrics()
    with pytest.raises(ValueError, match=r"label 7 is out of range \(valid: 0\.\.3\)"):
        m.add(torch.zeros(2, 4), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"channel 0 has mean 0(\.0+)? and std 0(\.0+)? \(valid: finite, std > 0\)"):
        train.Normalization([0.0], [0.0]).apply(torch.zeros(1, 1, 2, 2))


def test_write_results_is_atomic(tmp_path):
    path = tmp_path / "sub" / "results.json"
    train.write_results(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and not list(tmp_path.glob("sub/*.tmp"))
