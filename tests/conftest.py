"""Shared fixtures: the CLI, tiny synthetic data, and study files whose numbers are known."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.data.datasets import load_dataset
from ablate.results import files as results
from ablate.results.files import write_frame
from ablate.study import planning
from ablate.study.planning import resolve
from ablate.training.train import RunConfig

# A whole study in about a second: 300 synthetic images, 2 epochs.
TINY = ["--dataset", "synthetic", "--limit-train", "300", "--limit-test", "100", "--epochs", "2",
        "--batch-size", "50", "--device", "cpu"]
# Every column that a run's numbers decide: compared bit for bit between runs.
NUMBERS = ["study", "variant", "seed", "epoch", "split", "loss", "accuracy", "lr", "status", "run_id",
           "config_id", "params", "flops"]


@pytest.fixture
def ablate():
    """Run the command line in this process: `ablate(["linearity", ...])` -> click Result."""
    cli = CliRunner()
    return lambda args: cli.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def packing_decisions(tmp_path_factory, monkeypatch):
    """--pack auto remembers its decisions in a file of each test's own, not the machine's cache."""
    from ablate.execution import autopack

    path = tmp_path_factory.mktemp("cache") / "packing.json"
    monkeypatch.setattr(autopack, "_path", lambda: path)
    return path


@pytest.fixture(autouse=True)
def no_downloaded_weights(tmp_path_factory, monkeypatch):
    """torchvision's weights are never downloaded in a test, nor taken from this machine's cache."""
    import torch

    from ablate.models import weights

    def offline(url, *args, **kwargs):
        raise OSError(f"the tests reach no network ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    folder = tmp_path_factory.mktemp("weights")
    monkeypatch.setattr(weights, "weights_dir", lambda: folder)
    weights.forget()


@pytest.fixture
def tiny():
    return list(TINY)


@pytest.fixture
def numbers():
    return list(NUMBERS)


@pytest.fixture(scope="session")
def tiny_data():
    return load_dataset("synthetic", limit_train=300, limit_test=100)


@pytest.fixture
def fake_study():
    """A study file whose numbers are known, written with the real schema: test accuracy =
    0.5 + 0.1 x variant index + 0.01 x seed (+ `noise(variant index, seed)`); `components`: the
    metadata of a component study's design."""

    def make(path: Path, variants=("alpha", "beta"), seeds=(0, 1, 2), epochs=2, study="linearity",
             config=None, noise=None, plot="curves", factors=(), components=None) -> Path:
        rows, runs = [], []
        for v, variant in enumerate(variants):
            run_config = resolve(RunConfig().with_fields(**(config(v) if config else {})))
            columns = run_config.columns()
            for seed in seeds:
                run = planning.Run(study, variant, seed, run_config)
                runs.append(run)
                for epoch in range(1, epochs + 1):
                    for split in ("train", "test"):
                        jitter = noise(v, seed) if noise else 0.0
                        rows.append({
                            **columns, "study": study, "variant": variant, "seed": seed, "epoch": epoch,
                            "split": split, "loss": 1.0 - 0.1 * v - 0.01 * seed * v + 0.1 * (epochs - epoch),
                            "accuracy": 0.5 + 0.1 * v + 0.01 * seed - 0.05 * (epochs - epoch) + jitter,
                            "lr": 0.1, "seconds": 1.0, "status": "ok", "run_id": run.run_id,
                            "config_id": run.config_id, "params": 1000, "flops": 2000, "device": "cpu",
                        })
        write_frame(pd.DataFrame(rows), path,
                    {"study": {"name": study, "plot": plot, "factors": list(factors),
                               **({"components": components} if components else {})}},
                    results.arrow_schema(planning.run_columns(runs)))
        return path

    return make


def late_failing_model(message: str) -> str:
    """A user's module whose Net with explode=True raises `message` after a few training steps:
    every check before training passes, and the run fails while it trains."""
    return f'''
from torch import nn


class Net(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, explode=False):
        super().__init__()
        self.explode, self.steps = explode, 0
        self.fc = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.explode and self.steps > 3:
                raise ValueError({message!r})
        return self.fc(x)
'''
