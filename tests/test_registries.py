"""Every entry of every registry, taken from the registry: a newly registered augmentation,
normalisation, permutation, optimiser, scheduler, task or study is tested without a test naming it."""

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from ablate import transforms
from ablate import metrics
from ablate.config import OPTIMIZERS, SCHEDULERS, column
from ablate.errors import UsageError
from ablate.study import studies
from ablate.study.planning import resolve
from ablate.training.tasks import TASKS, Task
from ablate.training.train import RunConfig, build_model, evaluate_copies, make_optimizer, make_scheduler, train_runs

CPU = torch.device("cpu")


def description(function) -> str:
    """What `ablate list` shows for an entry: its docstring's first line."""
    return (function.__doc__ or "").strip().split("\n")[0]


# ---------------------------------------------------------------- augmentations


def draws(f, x, seed=0):
    """f(x) under a generator seeded with `seed`, and whether f drew from it."""
    gen = torch.Generator().manual_seed(seed)
    before = gen.get_state()
    return f(x, gen), not torch.equal(before, gen.get_state())


@pytest.mark.parametrize("name", transforms.AUGMENTATIONS.names())
def test_every_augmentation_keeps_shape_dtype_and_range_and_is_seeded_per_image(name):
    f = transforms.AUGMENTATIONS.get(name)
    assert description(f), "ablate list augmentations shows its docstring's first line"
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x = images.repeat(4, 1, 1, 1)  # 32 images, each of 8 four times
    before = x.clone()
    a, random = draws(f, x)
    assert torch.equal(x, before)  # the input is left as it was
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.isfinite(a).all() and a.min() >= -1e-6 and a.max() <= 1 + 1e-6  # pixels stay in [0, 1]
    assert torch.equal(a, draws(f, x)[0])  # the same seed, the same images
    assert torch.equal(a, transforms.augmentation(name)(x, torch.Generator().manual_seed(0)))  # by its name
    if random:  # it changes some images, not one draw for the whole batch, and another seed draws others
        assert not torch.allclose(a, x)
        same = images[:1].expand(32, 3, 16, 16)
        assert len({tuple(image.flatten().tolist()) for image in draws(f, same)[0]}) > 1
        assert not torch.equal(a, draws(f, x, seed=1)[0])
    else:  # a fixed transform: whatever the seed
        assert torch.equal(a, draws(f, x, seed=1)[0])


def test_augmentation_names_without_torch_are_the_registry():
    from ablate import config

    assert list(config.AUGMENTATION_NAMES) == transforms.AUGMENTATIONS.names()


# ---------------------------------------------------------------- normalisations and permutations


@pytest.mark.parametrize("name", transforms.NORMALIZATIONS.names())
def test_every_normalization_is_fitted_on_the_train_split_and_acts_per_image(name):
    f = transforms.NORMALIZATIONS.get(name)
    assert description(f)
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (200, 3, 4, 4), generator=gen, dtype=torch.uint8)
    x = torch.randint(0, 256, (10, 3, 4, 4), generator=gen, dtype=torch.uint8).float() / 255
    z = transforms.normalizer(name, train)(x)
    assert z.shape == x.shape and z.dtype == torch.float32 and torch.isfinite(z).all()
    assert torch.equal(z, transforms.normalizer(name, train.clone())(x))  # fitted the same way again
    assert torch.allclose(transforms.normalizer(name, train)(x[3:4]), z[3:4], atol=1e-5)  # no batch statistics
    assert not torch.allclose(transforms.normalizer(name, train)(x.flip(0)), z)  # each image its own output


@pytest.mark.parametrize("name", transforms.PERMUTATIONS.names())
def test_every_permutation_moves_pixels_only_and_is_seeded(name):
    f = transforms.PERMUTATIONS.get(name)
    assert description(f)
    x = torch.arange(6 * 2 * 4 * 4, dtype=torch.float).view(6, 2, 4, 4)  # every pixel its own value
    y = transforms.permutation(name, 16, torch.Generator().manual_seed(0))(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y.flatten(2).sort(-1).values, x.flatten(2))  # each image's own pixels, moved
    assert torch.equal(y[:, 1] - y[:, 0], torch.full_like(y[:, 0], 16.0))  # the channels move together
    assert torch.equal(y, transforms.permutation(name, 16, torch.Generator().manual_seed(0))(x))


# ---------------------------------------------------------------- optimisers and schedulers


def least_squares():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    return lambda w: ((x @ w - y) ** 2).mean()


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_builds_from_the_studys_fields_and_takes_steps(name):
    fields = studies.get_study("optimizer", optimizers=name).variants[name]
    config = resolve(RunConfig().with_fields(**fields))
    assert (config.optimizer, config.lr) == (name, OPTIMIZERS.get(name).lr)
    loss = least_squares()
    w = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    optimizer = make_optimizer([w], config)
    assert type(optimizer).__name__ == OPTIMIZERS.get(name).torch_class
    assert optimizer.param_groups[0]["lr"] == config.lr
    assert optimizer.param_groups[0]["weight_decay"] == config.weight_decay
    first = loss(w).item()
    for _ in range(10):
        optimizer.zero_grad()
        loss(w).backward()
        optimizer.step()
    assert torch.isfinite(w).all() and w.abs().sum() > 0
    assert loss(w).item() < first  # a small convex problem: ten steps of any of them go downhill


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_every_scheduler_builds_from_the_studys_fields_and_steps(name):
    epochs, steps = 3, 4
    fields = studies.get_study("scheduler", schedulers=name).variants[name]
    config = resolve(RunConfig(epochs=epochs).with_fields(**fields))  # with the scheduler's own defaults
    entry = SCHEDULERS.get(name)
    assert entry.description
    optimizer = make_optimizer([nn.Parameter(torch.zeros(2))], config)
    scheduler = make_scheduler(optimizer, config, steps)
    assert (scheduler is None) == (entry.torch_class is None)
    lrs = []
    for _ in range(epochs):  # as a run steps it: per batch, or per epoch
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if scheduler is not None and entry.per_step:
                scheduler.step()
        if scheduler is not None and not entry.per_step:
            scheduler.step()
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs)
    if scheduler is None:
        assert set(lrs) == {config.lr}
    else:
        assert type(scheduler).__name__ == entry.torch_class and len(set(lrs)) > 1  # it changes the rate
    if not entry.per_step:  # stepped per epoch: one rate for all of an epoch's batches
        assert all(len(set(lrs[e * steps:(e + 1) * steps])) == 1 for e in range(epochs))


# ---------------------------------------------------------------- tasks


def default_studies() -> dict[str, studies.Study]:
    """Every study that builds from its defaults (those made from their options, sweep, do not)."""
    return {name: studies.get_study(name) for name, entry in studies.STUDIES.items() if not entry.build.__doc__}


def task_config(task: str) -> RunConfig:
    """A configuration a study trains `task` with (its model and settings), or RunConfig's own."""
    for study in default_studies().values():
        if study.base.get("task", RunConfig.task) == task:
            fields = {k: v for k, v in study.base.items() if k not in ("dataset", "epochs", "labels",
                                                                      "pretrain_epochs")}
            return RunConfig(dataset="synthetic").with_fields(**fields)
    pytest.fail(f"no study trains task {task!r}: give it one (or a base setting) to test it with")


@pytest.mark.parametrize("name", TASKS.names())
def test_every_tasks_loss_is_a_finite_mean_on_a_tiny_batch(name, tiny_data):
    task = TASKS.get(name)
    config = resolve(task_config(name).with_fields(task=name, epochs=1, batch_size=10))
    torch.manual_seed(0)
    model = build_model(config, tiny_data.shape[0], len(tiny_data.classes), tiny_data.shape[1])
    x = transforms.normalizer(config.normalization, tiny_data.train_x)(tiny_data.test_x[:4].float() / 255)
    y = tiny_data.test_y[:4]
    out = model(x)
    if task.classifies:
        assert out.shape == (4, len(tiny_data.classes))
    loss = task.loss(out, x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    twice = [0, 0, 1, 1, 2, 2, 3, 3]  # a mean over the images: the same batch twice, the same loss
    assert task.loss(out[twice], x[twice], y[twice]).item() == pytest.approx(loss.item(), rel=1e-5)
    small = dataclasses.replace(tiny_data, train_x=tiny_data.train_x[:20], train_y=tiny_data.train_y[:20],
                                test_x=tiny_data.test_x[:20], test_y=tiny_data.test_y[:20])
    (result,) = train_runs(config, small, [0], CPU)
    assert result.status == "ok" and all(math.isfinite(r.loss) for r in result.epochs)
    assert all(set(r.metrics) == {m.name for m in task.metrics} for r in result.epochs)
    assert len(result.class_accuracy) == (len(tiny_data.classes) if task.classifies else 0)
    # each metric over a split: its per-image values' mean, whatever the evaluation's batch size
    (whole,) = evaluate_copies(model, x, y, [lambda b: b], task, len(tiny_data.classes), batch_size=4)
    (parts,) = evaluate_copies(model, x, y, [lambda b: b], task, len(tiny_data.classes), batch_size=3)
    assert parts["metrics"] == pytest.approx(whole["metrics"], rel=1e-5)
    assert whole["metrics"] == pytest.approx(task.finish(task.measure(model(x), x, y).tolist(), 4), rel=1e-5)


def test_the_metrics_by_hand():
    out = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert metrics.accuracy.batch(out, None, torch.tensor([0, 0, 0])).item() == 2
    x = torch.zeros(2, 1, 2, 2)
    rebuilt = torch.full((2, 1, 2, 2), 0.1)
    mean_mse = metrics.psnr.batch(rebuilt, x, None).item() / 2
    assert mean_mse == pytest.approx(0.01) and metrics.psnr.finish(mean_mse) == pytest.approx(20.0)
    assert metrics.psnr.finish(0.0) == math.inf and math.isnan(metrics.psnr.finish(math.nan))
    assert metrics.psnr.finish(0.1) < metrics.psnr.finish(0.01)  # a smaller error: a higher PSNR
    assert metrics.accuracy.shown(0.8945) == "89.45 %"


def test_a_task_says_what_it_reports():
    loss = TASKS.get("classify").loss
    assert Task("a", loss, classifies=True).metrics == (metrics.accuracy,)
    assert Task("b", loss).metrics == () and Task("b", loss).classifies is False
    assert Task("c", loss, metrics=(metrics.accuracy,)).classifies is True
    assert Task("d", loss, metrics=[metrics.psnr]).metrics == (metrics.psnr,)
    assert TASKS.get("classify").metrics == (metrics.accuracy,) and TASKS.get("reconstruct").metrics == (metrics.psnr,)


@pytest.mark.parametrize("name", ["seed", "loss", "lr", "accuracy", "base_lr", "latent_corr", "packed", "cycle_momentum",
                                  "latent_dim"])
def test_a_metric_named_like_a_column_ablate_fills_is_refused(name):
    """Checked against the schema where a task registers it: nothing is registered."""
    from ablate.training.tasks import TASKS, register_task

    metric = metrics.Metric(name, name, lambda out, x, y: out.sum())
    with pytest.raises(UsageError, match=f"metric '{name}'"):
        register_task(Task(f"clash-{name}", lambda out, x, y: out.sum(), True, metrics=(metric,)))
    assert (name not in metrics.METRICS or metrics.METRICS.get(name) is not metric) and f"clash-{name}" not in TASKS


# ---------------------------------------------------------------- studies


HEAVY = ("torch", "torchvision", "pandas", "pyarrow", "matplotlib", "scipy")

BUILD_EVERY_STUDY = f"""
import sys
from ablate.errors import UsageError
from ablate.study import studies

built, refused = [], []
for name, entry in studies.STUDIES.items():
    try:
        study = studies.get_study(name)
    except UsageError:
        refused.append(name)
        assert entry.build.__doc__, f"study {{name}} refused its defaults"  # one made from its options
        continue
    assert study.name == name and study.variants and study.description, name
    built.append(name)
heavy = [m for m in {HEAVY!r} if m in sys.modules]
assert not heavy, f"building the studies imported {{heavy}}"
print(len(built), "built", len(refused), "refused")
"""


def test_every_study_builds_from_its_defaults_without_importing_torch():
    result = subprocess.run([sys.executable, "-c", BUILD_EVERY_STUDY], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    built = len(default_studies())
    assert result.stdout.split() == [str(built), "built", str(len(studies.STUDIES) - built), "refused"]


@pytest.mark.parametrize("name", studies.STUDIES.names())
def test_every_studys_variants_are_valid_runs_and_its_factors_are_columns(name):
    entry = studies.STUDIES.get(name)
    if entry.build.__doc__:  # made from its options: they are needed, and a usage error says so
        with pytest.raises(UsageError):
            studies.get_study(name)
        return
    study = studies.get_study(name)
    for variant, fields in study.variants.items():
        config = resolve(RunConfig().with_fields(**{**study.base, **fields}))  # every name exists, the model takes it
        row = config.columns()
        for field, value in fields.items():  # each variant's settings land in its row
            assert row[column(field)] == value, (variant, field)
        missing = set(study.factors) - set(row) - {"params", "trainable_params", "flops"}
        assert not missing, (variant, missing)  # the summary's columns are the rows'


def test_a_tasks_first_metric_decides_best_and_comes_first(monkeypatch):
    import pandas as pd

    from ablate.reporting import compare

    monkeypatch.setitem(metrics.TASK_METRICS, "two-metrics", ["psnr", "accuracy"])
    frame = pd.DataFrame({"task": "two-metrics", "run_id": "r", "status": "ok", "split": "test", "study": "s",
                          "epoch": [1, 2], "loss": [1.0, 2.0], "accuracy": [0.9, 0.1], "psnr": [10.0, 20.0]})
    assert [m.name for m in metrics.present(frame)] == ["psnr", "accuracy"]
    assert compare.pick_epochs(frame, best=True)["epoch"].tolist() == [2]  # the higher PSNR, not accuracy
    assert [m.name for m in metrics.present(frame.assign(task="classify"))] == ["accuracy", "psnr"]
