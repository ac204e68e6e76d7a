"""Seeds packed into one model (ablate.training.pack): the same training as one seed at a time."""

import math
import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate import arch
from ablate.execution import runner
from ablate.study import planning
from ablate.study.planning import resolve
from ablate.training import pack, train
from ablate.training.train import RunConfig, build_model, train_runs

CPU = torch.device("cpu")
SEEDS = [0, 1, 2]
# Measured after one epoch on 300 synthetic images, packed vs one seed at a time: the largest
# difference of any loss is 1e-7 to 2e-5 (Adam with onecycle: 1e-4); below 1e-3 here.
TOLERANCE = 1e-3
CONFIGS = {
    "tutorial": dict(),
    "threeconv batchnorm": dict(model="threeconv", batchnorm=True),
    "lenet5 tanh avg-pool": dict(model="lenet5"),
    "mlp": dict(model="mlp"),
    "dropout, crop, fixed permutation": dict(dropout=0.3, augment="crop+flip", permutation="fixed"),
    "fresh permutation, adam, onecycle": dict(permutation="fresh", optimizer="adam", lr=0.001, momentum=None,
                                              scheduler="onecycle", lr_max=0.01),
    "autoencoder": dict(task="reconstruct", model="autoencoder", normalization="none", optimizer="adamw",
                        lr=0.001, momentum=None, batch_size=32),
}


def _losses(results):
    return [[(r.epoch, r.split, r.loss) for r in result.epochs] for result in results]


@pytest.mark.parametrize("name", CONFIGS)
def test_packed_seeds_train_as_they_do_one_at_a_time(name, tiny_data):
    config = resolve(RunConfig(dataset="synthetic", epochs=1, batch_size=50).with_fields(**CONFIGS[name]))
    alone = train_runs(config, tiny_data, SEEDS, CPU, pack=False)
    packed = train_runs(config, tiny_data, SEEDS, CPU)
    assert [r.packed for r in packed] == [3, 3, 3] and [r.packed for r in alone] == [1, 1, 1]
    for a, p in zip(_losses(alone), _losses(packed)):
        assert [(e, s) for e, s, _ in a] == [(e, s) for e, s, _ in p]
        assert max(abs(x - y) for (_, _, x), (_, _, y) in zip(a, p)) < TOLERANCE
    assert len({round(r.epochs[-1].loss, 6) for r in packed}) == 3  # each seed its own model
    if config.task == "reconstruct":
        assert all(abs(a.latent_corr - p.latent_corr) < TOLERANCE for a, p in zip(alone, packed))


def test_unpacking_gives_back_each_copys_weights():
    copies = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        copies.append(build_model(resolve(RunConfig(model="threeconv").with_fields(batchnorm=True)), 3, 10))
    packed = pack.pack(copies, [torch.Generator() for _ in SEEDS], torch.rand(2, 3, 32, 32))
    assert packed is not None
    fresh = []
    for seed in SEEDS:
        torch.manual_seed(seed + 10)
        fresh.append(build_model(resolve(RunConfig(model="threeconv").with_fields(batchnorm=True)), 3, 10))
    pack.unpack(packed, fresh)
    for a, b in zip(copies, fresh):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name


SMALL_BATCHNORM = dict(model="threeconv", batchnorm=True, conv1_channels=4, conv2_channels=8, conv3_channels=8,
                       fc1_features=16)


def test_packed_training_gives_each_copy_its_own_batch_norm_statistics(tiny_data):
    """Buffers come back from the packed model too: --save-models keeps each seed's running
    mean and variance, not the initial 0 and 1."""
    config = resolve(RunConfig(dataset="synthetic", epochs=1, batch_size=50).with_fields(**SMALL_BATCHNORM))
    packed = train_runs(config, tiny_data, SEEDS, CPU, keep_model=True)
    alone = train_runs(config, tiny_data, SEEDS, CPU, pack=False, keep_model=True)
    assert [r.packed for r in packed] == [3, 3, 3]
    initial = build_model(config, 3, 10).state_dict()
    steps = math.ceil(len(tiny_data.train_y) / 50)
    close = lambda x, y: torch.allclose(x.float(), y.float(), rtol=1e-3, atol=TOLERANCE)  # noqa: E731
    for p, a in zip(packed, alone):
        assert p.state.keys() == a.state.keys() == initial.keys()
        statistics = [k for k in p.state if k.endswith(("running_mean", "running_var"))]
        assert len(statistics) == 6
        for name in statistics:
            assert not close(a.state[name], initial[name]), name  # training moved them: the check below tells
            assert close(p.state[name], a.state[name]), name
        for name in (k for k in p.state if k.endswith("num_batches_tracked")):
            assert p.state[name].item() == a.state[name].item() == steps, name
        for name in p.state:  # and every parameter
            assert close(p.state[name], a.state[name]), name
    assert not close(packed[0].state["bn2.running_mean"], packed[1].state["bn2.running_mean"])  # each its own


def test_one_copys_nan_does_not_touch_the_others():
    copies = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        copies.append(build_model(resolve(RunConfig()), 3, 10))
    packed = pack.pack(copies, [torch.Generator() for _ in SEEDS], torch.rand(2, 3, 32, 32))
    with torch.no_grad():
        packed.get_submodule("conv1").weight[6:12] = float("nan")  # the second copy's conv1
    x, y = torch.rand(8, 9, 32, 32), torch.randint(0, 10, (3, 8))
    out = packed(x).chunk(3, 1)
    sum(F.cross_entropy(o, t) for o, t in zip(out, y)).backward()
    own = copies[0](x[:, :3])
    F.cross_entropy(own, y[0]).backward()
    assert torch.isnan(out[1]).all() and torch.allclose(out[0], own, atol=1e-5)
    assert torch.allclose(packed.get_submodule("conv1").weight.grad[:6], copies[0].conv1.weight.grad, atol=1e-5)
    assert torch.isfinite(packed.get_submodule("fc3").weight.grad[2]).all()


@pytest.mark.parametrize("seeds", [[0], [0, 1]], ids=["alone", "packed"])
def test_per_class_accuracy_is_the_main_test_sets_beside_a_second_test_set(tiny_data, seeds):
    """The second test set (--test-dataset, split test:NAME) has rows of its own; the per-class
    accuracy stays the main test split's."""
    config = resolve(RunConfig(dataset="synthetic", epochs=1, batch_size=50))
    zeros = tiny_data.test_y == 0  # class 0's images only: the other classes have none (None) there
    other = ("zeros", tiny_data.test_x[zeros], tiny_data.test_y[zeros])
    plain = train_runs(config, tiny_data, seeds, CPU)
    beside = train_runs(config, tiny_data, seeds, CPU, other_test=other)
    assert [r.packed for r in beside] == [len(seeds)] * len(seeds)
    for p, b in zip(plain, beside):
        assert [(r.epoch, r.split) for r in b.epochs if r.split == "test:zeros"] == [(0, "test:zeros"),
                                                                                   (1, "test:zeros")]
        assert len(b.class_accuracy) == 10 and None not in b.class_accuracy  # every class has test images
        assert b.class_accuracy == p.class_accuracy  # the same training, the same main test split


USER_MODELS = '''
import torch
from torch import nn


class Viewed(nn.Module):
    """Reshapes with a fixed size: a packed input does not fit, so it trains seed by seed."""

    def __init__(self, in_channels=3, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)
        self.fc = nn.Linear(4 * 30 * 30, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).reshape(-1, 4 * 30 * 30))


class Tied(nn.Module):
    """One linear layer used twice: packing would untie it."""

    def __init__(self, in_channels=3, num_classes=10, image_size=32):
        super().__init__()
        self.flatten, self.fc = nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes)
        self.square = nn.Linear(num_classes, num_classes)
        self.again = self.square

    def forward(self, x):
        return self.again(self.square(self.fc(self.flatten(x))))


class Noisy(nn.Sequential):
    """Dropout called as a function: one draw would serve every packed copy."""

    def __init__(self, in_channels=3, num_classes=10, image_size=32):
        super().__init__(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))

    def forward(self, x):
        return torch.nn.functional.dropout(super().forward(x), 0.5, self.training)


class Fragile(nn.Sequential):
    """Fails to build for some seeds."""

    def __init__(self, in_channels=3, num_classes=10, image_size=32):
        super().__init__(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))
        if torch.rand(()) < 0.5:
            raise ValueError("an unlucky seed")


class Unlucky(nn.Sequential):
    """A linear net whose weights are huge for some seeds: they diverge, the others do not."""

    def __init__(self, in_channels=3, num_classes=10, image_size=32):
        super().__init__(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))
        if torch.rand(()) < 0.5:
            self[1].weight.data.mul_(1e38)
'''


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "packnets.py").write_text(USER_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("packnets", None)
    yield "packnets"
    arch.model_source.cache_clear()
    sys.modules.pop("packnets", None)


def test_a_model_that_does_not_pack_trains_one_seed_at_a_time(tiny_data, user_models):
    config = resolve(RunConfig(dataset="synthetic", epochs=1, batch_size=50, model=f"{user_models}:Viewed"))
    packed = train_runs(config, tiny_data, SEEDS, CPU)
    alone = train_runs(config, tiny_data, SEEDS, CPU, pack=False)
    assert [r.packed for r in packed] == [1, 1, 1]
    assert _losses(packed) == _losses(alone)


@pytest.mark.parametrize("name", ["Tied", "Noisy"])
def test_shared_weights_and_global_randomness_do_not_pack(tiny_data, user_models, name):
    config = resolve(RunConfig(dataset="synthetic", epochs=1, batch_size=50, model=f"{user_models}:{name}"))
    packed = train_runs(config, tiny_data, SEEDS, CPU)
    assert [r.packed for r in packed] == [1, 1, 1]
    assert _losses(packed) == _losses(train_runs(config, tiny_data, SEEDS, CPU, pack=False))


@pytest.mark.parametrize("name", ["Tied", "Noisy", "Viewed"])
def test_auto_packing_measures_nothing_for_a_model_that_does_not_pack(tiny_data, user_models, name):
    config = resolve(RunConfig(dataset="synthetic", epochs=1, batch_size=50, model=f"{user_models}:{name}"))
    assert train.packing_speedup(config, tiny_data, 3, CPU, 3) is None


def test_a_failing_seed_fails_alone(tiny_data, user_models):
    config = resolve(RunConfig(dataset="synthetic", epochs=1, batch_size=50, model=f"{user_models}:Fragile"))
    pack = tuple(planning.Run("study", "variant", seed, config) for seed in range(6))
    results = runner.train_pack(pack, tiny_data, CPU)
    assert {r.status for r in results} == {"ok", "failed"}
    assert all(r.error == "ValueError: an unlucky seed" for r in results if r.status == "failed")
    assert all(len(r.epochs) == 4 for r in results if r.status == "ok")


def test_a_diverging_seed_stops_alone(tiny_data, user_models):
    config = resolve(RunConfig(dataset="synthetic", epochs=3, batch_size=50, model=f"{user_models}:Unlucky"))
    seeds = list(range(6))
    packed = train_runs(config, tiny_data, seeds, CPU, keep_model=True)
    alone = train_runs(config, tiny_data, seeds, CPU, pack=False, keep_model=True)
    assert packed[0].packed == 6
    assert [r.status for r in packed] == [r.status for r in alone]
    assert {r.status for r in packed} == {"ok", "diverged"}
    for p, a in zip(packed, alone):
        assert len(p.epochs) == len(a.epochs)
        for x, y in zip(p.state.values(), a.state.values()):  # a diverged seed's weights: when it stopped
            assert torch.allclose(x.float(), y.float(), rtol=1e-3, atol=TOLERANCE, equal_nan=True)
        if p.status == "ok":
            assert max(abs(x.loss - y.loss) for x, y in zip(p.epochs, a.epochs)) < TOLERANCE


def test_a_study_records_how_its_seeds_were_packed(tmp_path, ablate, tiny):
    packed, alone = tmp_path / "packed.parquet", tmp_path / "alone.parquet"
    assert ablate(["linearity", *tiny, "--seeds", "3", "--out", packed, "--pack"]).exit_code == 0
    assert ablate(["linearity", *tiny, "--seeds", "3", "--out", alone]).exit_code == 0  # on a CPU: not packed
    p, a = pd.read_parquet(packed), pd.read_parquet(alone)
    assert set(p["packed"]) == {3} and set(a["packed"]) == {1}
    assert list(p["run_id"]) == list(a["run_id"])  # the same runs, trained another way
    assert (p["loss"] - a["loss"]).abs().max() < TOLERANCE


def test_resuming_with_more_seeds_packs_the_new_ones(tmp_path, ablate, tiny):
    out = tmp_path / "r.parquet"
    assert ablate(["linearity", *tiny, "--seeds", "2", "--out", out, "--pack"]).exit_code == 0
    first = pd.read_parquet(out)
    assert ablate(["linearity", *tiny, "--seeds", "5", "--out", out, "--resume", "--pack"]).exit_code == 0
    frame = pd.read_parquet(out)
    assert frame.groupby("seed")["packed"].first().tolist() == [2, 2, 3, 3, 3]
    pd.testing.assert_frame_equal(frame[frame["seed"] < 2].reset_index(drop=True)[["loss", "run_id"]],
                                  first[["loss", "run_id"]], check_exact=True)


# bfloat16 keeps 8 significant bits: a loss in [2, 4) is resolved only to one bf16 step, 2^-6
# (0.0156). Rounding the forward pass to bf16 moves the runs' losses far less than that (here:
# 1e-4 at most over 2 epochs), and an exact equality or inequality with float32 is not a property
# of bf16 (on some machines the two losses have been bit-identical).
BF16_TOLERANCE = 2 ** -6


def test_amp_bf16_trains_and_is_a_column(tiny_data, monkeypatch, tmp_path, ablate, tiny):
    dtypes = {}  # amp -> the dtypes the model's convs and linears computed in

    def build(config, *args, **kwargs):
        model = build_model(config, *args, **kwargs)
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.register_forward_hook(lambda m, i, out: dtypes.setdefault(config.amp, set()).add(out.dtype))
        return model

    monkeypatch.setattr(train, "build_model", build)
    config = RunConfig(dataset="synthetic", epochs=2, batch_size=50, lr=0.1)
    full = train_runs(resolve(config), tiny_data, [0], CPU)[0]
    half = train_runs(resolve(replace(config, amp="bf16")), tiny_data, [0], CPU)[0]
    assert dtypes == {"none": {torch.float32}, "bf16": {torch.bfloat16}}  # autocast on, training and evaluating
    assert full.status == half.status == "ok"
    assert [(r.epoch, r.split) for r in half.epochs] == [(r.epoch, r.split) for r in full.epochs]
    assert all(math.isfinite(r.loss) for r in half.epochs)
    test = lambda result: [r.loss for r in result.epochs if r.split == "test"]  # noqa: E731
    assert test(full)[0] - test(full)[-1] > 4 * BF16_TOLERANCE  # so that the next lines tell training apart
    assert test(half)[-1] < test(half)[0] - 4 * BF16_TOLERANCE  # it trains
    for f, h in zip(full.epochs, half.epochs):  # and trains the same net
        assert abs(f.loss - h.loss) < BF16_TOLERANCE, (f, h)
    assert RunConfig(amp="bf16").columns()["amp"] == "bf16"
    out = tmp_path / "bf16.parquet"
    tiny[tiny.index("--epochs") + 1] = "1"
    assert ablate(["sweep", "--vary", "lr=0.1", *tiny, "--amp", "bf16", "--out", out]).exit_code == 0
    frame = pd.read_parquet(out)
    assert set(frame["amp"]) == {"bf16"} and set(frame["status"]) == {"ok"} and frame["loss"].notna().all()


@pytest.mark.parametrize("model", ["tutorial", "packnets:Viewed"])
def test_progress_counts_every_seeds_images_once(tiny_data, user_models, model):
    seen = []
    config = resolve(RunConfig(dataset="synthetic", epochs=2, batch_size=10, model=model))
    results = train_runs(config, tiny_data, SEEDS, CPU, on_batch=lambda *report: seen.append(report[1]))
    assert results[0].packed == (3 if model == "tutorial" else 1)
    assert seen == sorted(seen) and seen[-1] == 3 * 2 * len(tiny_data.train_y)


# ---------------------------------------------------------------- variants packed together

def _study_packs(name, data, seeds=2):
    from ablate.study.studies import get_study

    runs = planning.plan(get_study(name), {"dataset": "synthetic", "epochs": 2, "batch_size": 50}, seeds)
    return runs, runner.packs(runs, data, CPU, True)


SHARING = {"permutation", "augment", "scheduler", "normalization", "variance", "lr", "dropout", "ladder"}


def test_which_built_in_studies_pack_variants_together(tiny_data):
    """Variants that build the same network share packs (another learning rate, schedule,
    augmentation, permutation, normalisation, seed source or dropout rate); another optimiser,
    batch size or architecture trains apart, each variant's seeds still together."""
    from ablate.study.studies import STUDIES

    sharing = set()
    for name in STUDIES:
        if name in ("sweep", "components"):  # no variants without options: covered below
            continue
        runs, packs = _study_packs(name, tiny_data)
        assert sorted(r.run_id for p in packs for r in p) == sorted(r.run_id for r in runs)  # each run once
        if any(len({r.variant for r in p}) > 1 for p in packs):
            sharing.add(name)
        for p in packs:  # whatever shares a pack has one share key
            assert len({train.share_key(r.config, tiny_data.shape, 10) for r in p}) == 1
    assert sharing == SHARING
    runs, packs = _study_packs("optimizer", tiny_data)
    assert all(len({r.config.optimizer for r in p}) == 1 for p in packs)
    _, packs = _study_packs("dropout", tiny_data)  # a rate of 0 has no dropout layer: another network
    assert sorted(sorted({r.variant for r in p}) for p in packs) == [["0"], ["0.25", "0.5", "0.75"]]


@pytest.mark.parametrize("name", sorted(SHARING))
def test_variants_packed_together_train_as_they_do_one_at_a_time(name, tiny_data):
    """Loss and metrics of every epoch and split, learning rates, final weights: each member of
    a pack of several variants is its run trained alone, to float rounding."""
    _, packs = _study_packs(name, tiny_data, seeds=2 if name in ("lr", "scheduler") else 1)  # the nets of
    (shared,) = [p for p in packs if len({r.variant for r in p}) > 1]  # the others are slower: one seed each
    members = [(r.config, r.seed) for r in shared]
    packed = train.train_members(members, tiny_data, CPU, keep_model=True)
    alone = train.train_members(members, tiny_data, CPU, keep_model=True, pack=False)
    assert {r.packed for r in packed} == {len(members)} and {r.packed for r in alone} == {1}
    for run, p, a in zip(shared, packed, alone):
        assert [(e.epoch, e.split) for e in p.epochs] == [(e.epoch, e.split) for e in a.epochs], run.label
        assert [e.lr for e in p.epochs] == [e.lr for e in a.epochs], run.label  # its own schedule
        for x, y in zip(p.epochs, a.epochs):
            assert abs(x.loss - y.loss) < TOLERANCE * max(1, abs(y.loss)), run.label  # a rate of 1 diverges
            assert x.metrics.keys() == y.metrics.keys(), run.label
            assert all(abs(x.metrics[m] - y.metrics[m]) < 0.02 for m in x.metrics), run.label  # an image or two
        for key in p.state:  # to float rounding, at the tensor's own scale (a diverging rate's are large)
            x, y = p.state[key].float(), a.state[key].float()
            assert (x - y).abs().max() <= TOLERANCE * max(1, y.abs().max()), (run.label, key)
    # not the same numbers for all: the members trained their own ways
    assert len({round(r.epochs[-1].loss, 5) for r in packed}) > 1


def test_a_study_packs_its_variants_together_and_records_the_packs(tmp_path, ablate, tiny):
    """`ablate lr --pack`: its 4 rates x 2 seeds train as one pack of 8; the file says so (the
    `packed` column, `packing` per variant, `packs` by run_id) and holds the one-by-one numbers;
    resumed with more seeds, the new runs form packs of their own."""
    from ablate.results import files

    packed, alone = tmp_path / "packed.parquet", tmp_path / "alone.parquet"
    assert ablate(["lr", *tiny, "--seeds", "2", "--out", packed, "--pack"]).exit_code == 0
    assert ablate(["lr", *tiny, "--seeds", "2", "--out", alone, "--no-pack"]).exit_code == 0
    p, a = pd.read_parquet(packed), pd.read_parquet(alone)
    assert set(p["packed"]) == {8} and set(a["packed"]) == {1}
    assert list(p["run_id"]) == list(a["run_id"])
    assert ((p["loss"] - a["loss"]).abs() <= TOLERANCE * a["loss"].abs().clip(lower=1)).all()
    meta = files.read_metadata(packed)
    assert {v: (c["packed"], c["size"]) for v, c in meta["packing"].items()} == \
        {v: (True, 8) for v in ("0.001", "0.01", "0.1", "1")}
    assert [sorted(group) for group in meta["packs"]] == [sorted(set(p["run_id"]))]
    assert files.read_metadata(alone)["packs"] == []
    assert ablate(["lr", *tiny, "--seeds", "3", "--out", packed, "--pack", "--resume"]).exit_code == 0
    frame, meta = pd.read_parquet(packed), files.read_metadata(packed)
    assert frame.groupby("seed")["packed"].unique().map(list).to_dict() == {0: [8], 1: [8], 2: [4]}
    assert [len(group) for group in meta["packs"]] == [8, 4]
    assert set(meta["packs"][1]) == set(frame.loc[frame["seed"] == 2, "run_id"])


def test_a_diverging_variant_stops_alone_in_a_pack_of_variants(tiny_data):
    """A rate that blows up: that member stops with the weights it had, as it would alone; the
    other rates' members train on to the end, their numbers their unpacked runs'."""
    base = resolve(RunConfig(dataset="synthetic", epochs=3, batch_size=50))
    members = [(replace(base, lr=lr), seed) for lr in (0.01, 1e5) for seed in (0, 1)]
    packed = train.train_members(members, tiny_data, CPU, keep_model=True)
    alone = train.train_members(members, tiny_data, CPU, keep_model=True, pack=False)
    assert [r.packed for r in packed] == [4] * 4
    assert [r.status for r in packed] == [r.status for r in alone] == ["ok", "ok", "diverged", "diverged"]
    for p, a in zip(packed, alone):
        assert len(p.epochs) == len(a.epochs)
        for x, y in zip(p.state.values(), a.state.values()):
            assert torch.allclose(x.float(), y.float(), rtol=1e-3, atol=TOLERANCE, equal_nan=True)
    for p, a in zip(packed[:2], alone[:2]):
        assert len(p.epochs) == 8 and max(abs(x.loss - y.loss) for x, y in zip(p.epochs, a.epochs)) < TOLERANCE


class _OwnDropout(nn.Dropout):
    """A user's dropout: F.dropout on torch's global generator, one draw for all members."""


class _Scaled(nn.Sequential):
    """A forward that reads an attribute no module shows."""

    def __init__(self, scale):
        super().__init__(nn.Flatten(), nn.Linear(12, 3))
        self.scale = scale

    def forward(self, x):
        return super().forward(x) * self.scale


@pytest.mark.parametrize("make", [lambda i: nn.Sequential(nn.Flatten(), nn.Linear(12, 3), _OwnDropout(0.1 + 0.6 * i)),
                                  lambda i: _Scaled(1.0 + i)], ids=["dropout subclass", "attribute"])
def test_members_whose_forwards_differ_unseen_do_not_pack(make):
    """Rates of a Dropout subclass, or an attribute a user's forward reads: not one network."""
    copies = [make(i) for i in range(2)]
    assert pack.network(copies[0]) != pack.network(copies[1])
    assert pack.pack(copies, [torch.Generator() for _ in copies], torch.rand(2, 3, 2, 2)) is None
    same = [make(0) for _ in range(2)]
    assert pack.network(same[0]) == pack.network(same[1])


def test_run_ids_do_not_depend_on_which_equal_config_was_hashed_first():
    """1 == 1.0 in Python, not in a run's identity: the id cache tells them apart."""
    one, other = RunConfig(model_args=(("x", 1),)), RunConfig(model_args=(("x", 1.0),))
    first = planning.Run("s", "v", 0, one).run_id
    assert planning.Run("s", "v", 0, other).run_id != first
    planning._hashed.cache_clear()
    assert planning.Run("s", "v", 0, other).run_id != first == planning.Run("s", "v", 0, one).run_id


def test_the_file_records_only_packs_that_trained_as_one(tmp_path, ablate, tiny, user_models):
    out = tmp_path / "n.parquet"
    result = ablate(["sweep", *tiny, "--model", f"{user_models}:Noisy", "--vary", "lr=0.01,0.1", "--seeds", "2",
                     "--pack", "--out", out])
    assert result.exit_code == 0, result.output
    from ablate.results import files

    assert set(pd.read_parquet(out)["packed"]) == {1} and files.read_metadata(out)["packs"] == []


def test_a_pack_of_variants_is_named_by_its_variants():
    from ablate.execution.progress import pack_label

    config = resolve(RunConfig())
    runs = [planning.Run("s", v, seed, config) for v in ("0.01", "0.1") for seed in range(3)]
    assert pack_label(runs) == "0.01 seeds 0-2 + 0.1 seeds 0-2"
    assert pack_label(runs[:3]) == "0.01 seeds 0-2" and pack_label(runs[:1]) == "0.01 seed 0"
    assert pack_label([runs[0], runs[3]]) == "0.01 seed 0 + 0.1 seed 0"
