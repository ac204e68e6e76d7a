"""Training, the study runner and `ablate linearity`, on synthetic data with tiny limits."""

import dataclasses
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from ablate.data.datasets import load_dataset
from ablate.errors import UsageError
from ablate.execution import runner
from ablate.results.files import read_metadata
from ablate.study import planning, studies
from ablate.study.planning import resolve
from ablate.training.tasks import TASKS
from ablate.training.train import RunConfig, RunResult, evaluate_copies, train_run

CPU = torch.device("cpu")


def losses(result):
    return [(r.epoch, r.split, r.loss, r.metrics) for r in result.epochs]


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_data):
    config = RunConfig(dataset="synthetic", epochs=2, batch_size=50, augment="crop-flip", permutation="fresh")
    a, b, c = (train_run(config, tiny_data, seed, CPU) for seed in (0, 0, 1))
    assert losses(a) == losses(b) and a.class_accuracy == b.class_accuracy
    assert losses(a) != losses(c)


def test_nothing_before_a_run_changes_its_numbers(tiny_data):
    """Dropout, like every random source, draws from the run's own seed, whatever the
    global generator's state was before the run."""
    config = resolve(RunConfig(dataset="synthetic", model="threeconv", epochs=1, batch_size=50).with_fields(dropout=0.5))
    torch.manual_seed(1)
    first = train_run(config, tiny_data, 0, CPU)
    torch.rand(12345)  # what other work in the process (counting, another run) would do
    second = train_run(config, tiny_data, 0, CPU)
    assert losses(first) == losses(second)
    state = torch.random.get_rng_state()
    train_run(config, tiny_data, 0, CPU)
    assert torch.equal(torch.random.get_rng_state(), state)  # and the run leaves it as it was


def test_evaluation_does_not_draw_from_the_training_streams():
    config = RunConfig(dataset="synthetic", epochs=2, batch_size=50, permutation="fresh")
    small, large = (train_run(config, load_dataset("synthetic", limit_train=300, limit_test=n), 0, CPU)
                    for n in (100, 200))
    train = lambda result: [r.loss for r in result.epochs if r.split == "train"]  # noqa: E731
    assert train(small) == train(large)


class Predicts(nn.Module):
    """Predicts class `label` for every image, whatever it is."""

    def __init__(self, label: int):
        super().__init__()
        self.label = label

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((len(x),), self.label), 4).float()


def test_per_class_accuracy_by_hand():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])  # class 3 has no image
    x = torch.zeros(len(y), 1, 2, 2)
    metrics = evaluate_copies(Predicts(0), x, y, [lambda b: b], TASKS.get("classify"), 4, batch_size=3)[0]
    assert metrics["metrics"] == {"accuracy": pytest.approx(0.4)}
    assert metrics["class_accuracy"] == [1.0, 0.0, 0.0, None]  # None: no image, not 0 %


def test_training_learns_the_synthetic_task():
    data = load_dataset("synthetic", limit_train=2000, limit_test=500)
    result = train_run(RunConfig(dataset="synthetic", epochs=3), data, 0, CPU)
    test = [r for r in result.epochs if r.split == "test"]
    assert test[-1].metrics["accuracy"] > 0.5  # chance is 0.1
    assert result.epochs[0].loss > result.epochs[-2].loss
    assert result.status == "ok" and len(result.class_accuracy) == 10


def test_divergence_is_recorded_not_raised(tiny_data):
    assert train_run(RunConfig(dataset="synthetic", epochs=3, lr=1e4), tiny_data, 0, CPU).status == "diverged"


# ---------------------------------------------------------------- configurations


CHANGED = {  # one other value for every field of RunConfig
    "task": "reconstruct", "dataset": "mnist", "image_size": 28, "test_fraction": 0.3, "test_dataset": "mnist",
    "model": "threeconv", "model_args": (("conv1_channels", 7),), "strip_activations": True, "labels": 80,
    "pretrain_epochs": 3, "freeze_encoder": True, "threads": 3, "weights": "w.safetensors", "trainable": "head",
    "epochs": 11, "batch_size": 129, "lr": 0.03,
    "optimizer": "adam", "momentum": 0.8, "weight_decay": 0.1, "scheduler": "step", "lr_step_size": 2,
    "lr_gamma": 0.5, "lr_max": 0.1, "normalization": "zca", "augment": "flip", "permutation": "fixed",
    "limit_train": 100, "limit_test": 50, "deterministic": True, "amp": "bf16", "compile": True, "cycle_momentum": True,
    "seed_source": "init",
}


def test_every_field_is_changed_by_the_test():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(RunConfig)}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_run_id_and_config_id_change_with_every_setting(field):
    base = planning.Run("s", "v", 0, RunConfig())
    other = dataclasses.replace(base, config=dataclasses.replace(RunConfig(), **{field: CHANGED[field]}))
    assert other.run_id != base.run_id and other.config_id != base.config_id


def test_run_id_changes_with_study_variant_and_seed_config_id_not_with_seed():
    base = planning.Run("s", "v", 0, RunConfig())
    for other in (dataclasses.replace(base, study="t"), dataclasses.replace(base, variant="w")):
        assert other.run_id != base.run_id and other.config_id != base.config_id
    seed = dataclasses.replace(base, seed=1)
    assert seed.run_id != base.run_id and seed.config_id == base.config_id


def test_model_arguments_are_filled_where_the_model_takes_them_and_null_elsewhere():
    tutorial = resolve(RunConfig(model="tutorial")).columns()
    assert (tutorial["conv1_channels"], tutorial["activation"], tutorial["fc1_features"]) == (6, "relu", 120)
    assert "batchnorm" not in tutorial and "conv3_channels" not in tutorial
    threeconv = resolve(RunConfig(model="threeconv").with_fields(conv1_channels=8)).columns()
    assert (threeconv["conv1_channels"], threeconv["dropout"], threeconv["batchnorm"]) == (8, 0.0, False)
    assert "fc2_features" not in threeconv
    rows, _ = runner.run_rows(planning.Run("s", "v", 0, resolve(RunConfig(model="threeconv"))),
                              RunResult([], [], "ok"), "cpu", load_dataset("synthetic", limit_train=10, limit_test=10))
    assert set(planning.RUN_COLUMNS) >= {"fc2_features", "hidden", "conv3_channels"} and list(rows) == list(planning.RUN_COLUMNS)


def test_a_setting_the_model_cannot_take_is_a_usage_error():
    with pytest.raises(UsageError, match="model 'threeconv' does not take fc2_features; it takes conv1_channels, "):
        resolve(RunConfig(model="threeconv").with_fields(fc2_features=10))
    study = dataclasses.replace(studies.get_study("regularization"), base={"model": "tutorial"})
    with pytest.raises(UsageError, match="variant 'base': model 'tutorial' does not take batchnorm"):
        planning.plan(study, {}, 1)


# ---------------------------------------------------------------- the linearity study, end to end


def study(ablate, tiny, tmp_path: Path, *extra, out="lin.parquet"):
    return ablate(["linearity", *tiny, "--out", tmp_path / out, *extra])


def test_linearity_writes_tidy_parquet(tmp_path, ablate, tiny):
    result = study(ablate, tiny, tmp_path, "--seeds", "2")
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "lin.parquet")
    assert len(frame) == 3 * 2 * 3 * 2  # variants x seeds x epochs (0, 1, 2) x splits
    assert list(frame["variant"].unique()) == ["relu", "linear", "linear-wide"]
    assert list(frame.columns) == list(planning.RUN_COLUMNS)
    assert set(frame["split"]) == {"train", "test"}
    assert frame.groupby("variant")["fc1_features"].first().to_dict() == {
        "relu": 120, "linear": 120, "linear-wide": 240}
    assert frame["run_id"].nunique() == 6 and frame["config_id"].nunique() == 3
    assert frame["batchnorm"].isna().all() and (frame["dropout"] == 0).all()  # the tutorial net has no batchnorm
    classes = pd.read_parquet(tmp_path / "_per_class" / "lin.parquet")
    assert len(classes) == 6 * 10 and (classes["images"] == 10).all()
    meta = read_metadata(tmp_path / "lin.parquet")
    assert {"ablate_version", "torch_version", "torchvision_version", "command", "device", "created"} <= set(meta)
    assert meta["study"]["factors"] == ["activation", "fc1_features"] and meta["study"]["plot"] == "curves"
    assert meta["command"].startswith("ablate linearity --dataset synthetic")
    for text in ("relu", "linear-wide", "±", "test accuracy"):
        assert text in result.stdout


def test_the_same_command_twice_gives_bit_identical_numbers(tmp_path, ablate, tiny, numbers):
    for name in ("a", "b"):
        assert ablate(["regularization", *tiny, "--out", tmp_path / f"{name}.parquet"]).exit_code == 0
    a, b = (pd.read_parquet(tmp_path / f"{name}.parquet") for name in ("a", "b"))
    pd.testing.assert_frame_equal(a[numbers], b[numbers], check_exact=True)


def test_a_run_gives_the_same_numbers_whatever_else_the_study_trains(tmp_path, ablate, tiny, numbers):
    assert ablate(["regularization", *tiny, "--seeds", "1", "--out", tmp_path / "one.parquet"]).exit_code == 0
    assert ablate(["regularization", *tiny, "--seeds", "2", "--out", tmp_path / "two.parquet"]).exit_code == 0
    one, two = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    pd.testing.assert_frame_equal(one[numbers], two[two.seed == 0][numbers].reset_index(drop=True),
                                  check_exact=True)


def test_existing_file_is_refused_then_forced(tmp_path, ablate, tiny):
    assert study(ablate, tiny, tmp_path).exit_code == 0
    path = tmp_path / "lin.parquet"
    before = path.read_bytes()
    refused = study(ablate, tiny, tmp_path)
    assert refused.exit_code == 2 and "exists: add --resume" in refused.stderr
    assert path.read_bytes() == before
    assert study(ablate, tiny, tmp_path, "--force").exit_code == 0
    assert len(pd.read_parquet(path)) == 3 * 3 * 2


def test_interrupted_study_with_dropout_resumes_to_the_same_table(tmp_path, ablate, tiny, numbers, monkeypatch):
    args = ["regularization", *tiny, "--seeds", "2"]
    assert ablate([*args, "--out", tmp_path / "whole.parquet"]).exit_code == 0

    real = runner.train_members
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "train_members", interrupted)
    stopped = ablate([*args, "--out", tmp_path / "part.parquet"])
    assert stopped.exit_code == 130
    assert "3 of 8 runs are saved" in stopped.stderr and "--resume" in stopped.stderr
    monkeypatch.setattr(runner, "train_members", real)

    resumed = ablate([*args, "--out", tmp_path / "part.parquet", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    whole, part = pd.read_parquet(tmp_path / "whole.parquet"), pd.read_parquet(tmp_path / "part.parquet")
    pd.testing.assert_frame_equal(whole[numbers], part[numbers], check_exact=True)
    assert resumed.stdout == ablate([*args, "--out", tmp_path / "part.parquet", "--resume"]).stdout


def test_resume_takes_more_seeds_and_refuses_other_settings(tmp_path, ablate, tiny):
    path = tmp_path / "lin.parquet"
    assert study(ablate, tiny, tmp_path).exit_code == 0
    more = study(ablate, tiny, tmp_path, "--resume", "--seeds", "2")
    assert more.exit_code == 0 and pd.read_parquet(path)["run_id"].nunique() == 6
    before = path.read_bytes()
    refused = study(ablate, tiny, tmp_path, "--resume", "--epochs", "3", "--lr", "0.05")
    assert refused.exit_code == 2
    assert "other settings (epochs: 2 in the file, 3 now; base_lr: 0.02 in the file, 0.05 now)" in refused.stderr
    assert path.read_bytes() == before
    other_study = ablate(["permutation", *tiny, "--out", path, "--resume"])
    assert other_study.exit_code == 2 and "study: linearity in the file, permutation now" in other_study.stderr


def test_fashion_mnist_end_to_end(tmp_path, ablate):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() and not os.environ.get("CI"):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    result = ablate(["linearity", "--dataset", "fashion-mnist", "--limit-train", "3000", "--limit-test", "500",
                     "--epochs", "2", "--batch-size", "64", "--lr", "0.01", "--out", tmp_path / "f.parquet"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "f.parquet")
    final = frame[(frame.split == "test") & (frame.epoch == 2)]
    assert (final["accuracy"] > 0.4).all()  # chance is 0.1
    classes = pd.read_parquet(tmp_path / "_per_class" / "f.parquet")
    assert "Ankle boot" in set(classes["class_name"])


def test_unavailable_device_is_refused(tmp_path, ablate):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = ablate(["linearity", "--dataset", "synthetic", "--device", "cuda", "--out", tmp_path / "x.parquet"])
    assert result.exit_code == 2 and "device 'cuda' is not available" in result.stderr
    assert not list(tmp_path.iterdir())
