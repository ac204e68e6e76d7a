"""Training, the study runner and `ablate linearity`, on synthetic data with tiny limits."""

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ablate import runner
from ablate.cli import app
from ablate.data import load_dataset
from ablate.results import read_metadata
from ablate.train import RunConfig, train_run

cli = CliRunner()
TINY = ["--dataset", "synthetic", "--limit-train", "300", "--limit-test", "100", "--epochs", "2",
        "--batch-size", "50", "--device", "cpu"]
NUMBERS = ["loss", "accuracy", "lr"]


def tiny_data():
    return load_dataset("synthetic", limit_train=300, limit_test=100)


def test_same_seed_same_numbers_other_seed_other_numbers():
    config = RunConfig(dataset="synthetic", epochs=2, batch_size=50, augment="crop-flip", permutation="fresh")
    a, b, c = (train_run(config, tiny_data(), seed, torch.device("cpu")) for seed in (0, 0, 1))
    assert [(r.loss, r.accuracy) for r in a.epochs] == [(r.loss, r.accuracy) for r in b.epochs]
    assert a.class_accuracy == b.class_accuracy
    assert [r.loss for r in a.epochs] != [r.loss for r in c.epochs]


def test_training_learns_the_synthetic_task():
    data = load_dataset("synthetic", limit_train=2000, limit_test=500)
    result = train_run(RunConfig(dataset="synthetic", epochs=3), data, 0, torch.device("cpu"))
    test = [r for r in result.epochs if r.split == "test"]
    assert test[-1].accuracy > 0.5  # chance is 0.1
    assert result.epochs[0].loss > result.epochs[-2].loss
    assert result.status == "ok" and len(result.class_accuracy) == 10


def test_divergence_is_recorded_not_raised():
    result = train_run(RunConfig(dataset="synthetic", epochs=3, lr=1e4), tiny_data(), 0, torch.device("cpu"))
    assert result.status == "diverged"


def study(tmp_path: Path, *extra, out="lin.parquet"):
    return cli.invoke(app, ["linearity", *TINY, "--out", str(tmp_path / out), *extra])


def test_linearity_writes_tidy_parquet(tmp_path):
    result = study(tmp_path, "--seeds", "2")
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "lin.parquet")
    assert len(frame) == 3 * 2 * 2 * 2  # variants x seeds x epochs x splits
    assert list(frame["variant"].unique()) == ["relu", "linear", "linear-wide"]
    for column in ("study", "variant", "seed", "epoch", "split", "loss", "accuracy", "lr", "seconds",
                   "run_id", "dataset", "model", "epochs", "batch_size", "optimizer", "activation",
                   "fc1_features", "status"):
        assert column in frame.columns, column
    assert set(frame["split"]) == {"train", "test"}
    assert frame.groupby("variant")["fc1_features"].first().to_dict() == {
        "relu": 120, "linear": 120, "linear-wide": 240}
    assert frame["run_id"].nunique() == 6
    classes = pd.read_parquet(tmp_path / "lin.classes.parquet")
    assert len(classes) == 6 * 10
    assert set(classes.columns) >= {"run_id", "class_index", "class_name", "accuracy"}
    meta = read_metadata(tmp_path / "lin.parquet")
    assert {"ablate_version", "torch_version", "torchvision_version", "command", "device", "created"} <= set(meta)
    assert meta["command"].startswith("ablate linearity --dataset synthetic")
    for text in ("relu", "linear-wide", "±", "test accuracy"):
        assert text in result.stdout


def test_same_command_twice_gives_the_same_numbers(tmp_path):
    assert study(tmp_path, out="a.parquet").exit_code == 0
    assert study(tmp_path, out="b.parquet").exit_code == 0
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a[NUMBERS + ["run_id"]], b[NUMBERS + ["run_id"]])


def test_existing_file_is_refused_then_forced(tmp_path):
    assert study(tmp_path).exit_code == 0
    path = tmp_path / "lin.parquet"
    before = path.read_bytes()
    refused = study(tmp_path)
    assert refused.exit_code == 2 and "exists: add --resume" in refused.stderr
    assert path.read_bytes() == before
    assert study(tmp_path, "--force").exit_code == 0
    assert len(pd.read_parquet(path)) == 12


def test_interrupted_study_resumes_to_the_same_table(tmp_path, monkeypatch):
    assert study(tmp_path, out="whole.parquet").exit_code == 0

    real = runner.train_run
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train_run", interrupted)
    stopped = study(tmp_path, out="part.parquet")
    assert stopped.exit_code == 130
    assert "1 of 3 runs are saved" in stopped.stderr and "--resume" in stopped.stderr
    assert pd.read_parquet(tmp_path / "part.parquet")["variant"].unique().tolist() == ["relu"]
    monkeypatch.setattr(runner, "train_run", real)

    resumed = study(tmp_path, "--resume", out="part.parquet")
    assert resumed.exit_code == 0, resumed.output
    whole, part = pd.read_parquet(tmp_path / "whole.parquet"), pd.read_parquet(tmp_path / "part.parquet")
    pd.testing.assert_frame_equal(whole[NUMBERS + ["run_id", "variant"]], part[NUMBERS + ["run_id", "variant"]])
    assert resumed.stdout == study(tmp_path, "--resume", out="part.parquet").stdout  # nothing retrained


def test_fashion_mnist_end_to_end(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() and not os.environ.get("CI"):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    result = cli.invoke(app, ["linearity", "--dataset", "fashion-mnist", "--limit-train", "3000",
                              "--limit-test", "500", "--epochs", "2", "--batch-size", "64", "--lr", "0.01",
                              "--out", str(tmp_path / "f.parquet")])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "f.parquet")
    final = frame[(frame.split == "test") & (frame.epoch == 2)]
    assert (final["accuracy"] > 0.4).all()  # chance is 0.1
    classes = pd.read_parquet(tmp_path / "f.classes.parquet")
    assert "Ankle boot" in set(classes["class_name"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--seeds", "0"], "--seeds"),
        (["--limit-train", "0"], "--limit-train"),
        (["--limit-test", "100000"], "--limit-test 100000 is out of range"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--dataset", "imagenet"], "'imagenet' is not one of"),
        (["--device", "tpu"], "'tpu' is not one of"),
        (["--out", "/proc/nope/x.parquet"], "not a writable directory"),
        (["--out", "x.csv"], "must end in .parquet"),
    ],
)
def test_bad_input_exits_2_before_training(tmp_path, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "train_run", lambda *a, **k: pytest.fail("trained"))
    result = cli.invoke(app, ["linearity", "--dataset", "synthetic", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_unavailable_device_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli.invoke(app, ["linearity", "--dataset", "synthetic", "--device", "cuda",
                              "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "device 'cuda' is not available" in result.stderr
