"""Any model, any knob: --model in every study, `ablate sweep`, `ablate run FILE.toml`, the
reports' sweeps and ladder, epoch-0 rows and --dry-run."""

import sys
import textwrap

import pandas as pd
import pytest
import torch

from ablate import arch
from ablate.execution import runner
from ablate.study import planning, studies
from ablate.study.planning import resolve
from ablate.training.train import RunConfig, build_model

TINY = ["--dataset", "synthetic", "--limit-train", "200", "--limit-test", "100", "--epochs", "1",
        "--batch-size", "50", "--device", "cpu"]
USER_MODEL = '''
from torch import nn


class Net(nn.Module):
    """A user's net with a knob of its own."""

    def __init__(self, in_channels=3, num_classes=10, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.body(x)
'''
SAME = ["variant", "seed", "epoch", "split", "loss", "accuracy", "lr", "params", "flops", "width", "base_lr"]


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    (tmp_path / "usernets.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("usernets", None)  # a module of that name from another test's folder
    yield "usernets:Net"
    arch.model_source.cache_clear()
    sys.modules.pop("usernets", None)


def test_a_user_model_knob_is_swept_and_becomes_a_column(tmp_path, ablate, user_model):
    out = tmp_path / "w.parquet"
    result = ablate(["sweep", *TINY, "--model", user_model, "--vary", "width=4,16", "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame.groupby("variant")["width"].first().to_dict() == {"base": 4, "width=16": 16}
    params = frame.groupby("width")["params"].first()
    assert params[4] == 4 * 27 + 4 + 4 * 10 + 10 and params[16] == 16 * 27 + 16 + 16 * 10 + 10
    assert frame["conv1_channels"].isna().all()  # the registry knobs are null for this model


def test_the_toml_and_command_line_forms_give_the_same_table(tmp_path, ablate, user_model, numbers):
    study = tmp_path / "study.toml"
    study.write_text(textwrap.dedent(f'''
        name = "sweep"
        description = "width and learning rate of my net"

        [base]
        model = "{user_model}"

        [vary]
        width = [4, 16]
        lr = [0.02, 0.05]
    '''))
    assert ablate(["run", study, *TINY, "--out", tmp_path / "toml.parquet"]).exit_code == 0
    assert ablate(["sweep", *TINY, "--model", user_model, "--vary", "width=4,16", "--vary", "lr=0.02,0.05",
                   "--out", tmp_path / "cli.parquet", "--name", "sweep"]).exit_code == 0  # the file's name
    toml, cli = (pd.read_parquet(tmp_path / f"{name}.parquet") for name in ("toml", "cli"))
    assert len(toml) == 3 * 2 * 2  # base, width=16, lr=0.05; epochs 0 and 1; two splits
    pd.testing.assert_frame_equal(toml[numbers + ["width"]], cli[numbers + ["width"]], check_exact=True)


def test_grid_and_one_factor_at_a_time():
    one = studies.get_study("sweep", vary=["lr=0.01,0.1,1", "batch_size=32,128"])
    assert list(one.variants) == ["base", "lr=0.1", "lr=1", "batch_size=128"]
    assert one.variants["lr=1"] == {"lr": 1.0, "batch_size": 32}
    grid = studies.get_study("sweep", vary=["lr=0.01,0.1,1", "batch_size=32,128"], grid=True)
    assert len(grid.variants) == 6 and grid.variants["lr=0.1 batch_size=128"] == {"lr": 0.1, "batch_size": 128}
    assert grid.factors == ("base_lr", "batch_size")


def test_values_are_parsed_as_the_setting_or_as_literals():
    assert studies.parse_values("optimizer", "sgd,adam", None) == ["sgd", "adam"]
    assert studies.parse_values("deterministic", "true,false", None) == [True, False]
    assert studies.parse_values("hidden", "(256,),(512, 256)", "mlp") == [(256,), (512, 256)]
    assert studies.parse_values("activation", "relu,gelu", "tutorial") == ["relu", "gelu"]


def test_every_run_starts_with_the_untrained_model(tmp_path, ablate):
    out = tmp_path / "p.parquet"
    assert ablate(["permutation", *TINY, "--out", out]).exit_code == 0
    frame = pd.read_parquet(out)
    start = frame[frame.epoch == 0]
    assert len(start) == 3 * 2 and set(start.split) == {"train", "test"}
    assert start["accuracy"].between(0.0, 0.3).all()  # chance is 0.1 for 10 classes
    assert (start["lr"] == frame[frame.epoch == 1]["lr"].iloc[0]).all()


def test_dry_run_plans_and_writes_nothing(tmp_path, ablate, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "train_members", lambda *a, **k: pytest.fail("trained"))
    result = ablate(["conv1", *TINY, "--channels", "4,8", "--seeds", "2", "--dry-run"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "conv1: 4 runs planned, 0 already in results/conv1.parquet, 4 to train" in said
    assert "estimated time" in said and "no run was saved, nothing was written" in said
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("8 "))
    assert "2" in row.split() and "62,958" in row  # seeds; params of conv1 = 8 (by hand below)
    assert list(tmp_path.iterdir()) == []
    counts = 8 * (3 * 25 + 1) + 16 * (8 * 25 + 1) + 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10
    assert counts == 62_958


def test_linearity_on_any_model_strips_its_activation_modules(tmp_path, ablate):
    spec = "Conv2d(8, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(32), GELU(), Linear(10)"
    out = tmp_path / "lin.parquet"
    result = ablate(["linearity", *TINY, "--model", spec, "--out", out])
    assert result.exit_code == 0, result.output
    assert "variant 'linear': 2 activation modules replaced by identity (1 ReLU, 1 GELU)" in result.stderr
    frame = pd.read_parquet(out)
    assert frame.groupby("variant")["strip_activations"].first().to_dict() == {"original": False, "linear": True}
    model = build_model(resolve(RunConfig(model=spec, strip_activations=True)), 3, 10)
    assert not any(isinstance(m, arch.ACTIVATION_MODULES) for m in model.modules())


def test_studies_on_the_data_or_the_optimisation_take_any_model(tmp_path, ablate):
    result = ablate(["optimizer", *TINY, "--optimizers", "sgd,adam", "--model", "mlp", "--out", tmp_path / "o.parquet"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "o.parquet")
    assert set(frame["model"]) == {"mlp"} and set(frame["hidden"]) == {"(512,)"}
    assert frame["params"].iloc[0] == 3 * 32 * 32 * 512 + 512 + 512 * 10 + 10


def test_a_torchvision_model_takes_one_channel_data_by_repeating_it():
    model = build_model(resolve(RunConfig(model="resnet18")), 1, 7, 32)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)


def test_the_registry_nets_expose_their_knobs():
    net = build_model(resolve(RunConfig(model="tutorial").with_fields(kernel_size=3, conv2_channels=10)), 3, 10)
    assert net.conv2.weight.shape == (10, 6, 3, 3) and net.fc1.in_features == 10 * 6 * 6
    three = build_model(resolve(RunConfig(model="threeconv").with_fields(conv1_channels=8, fc1_features=50)), 1, 10)
    assert three.conv1.weight.shape == (8, 1, 5, 5) and three.fc2.in_features == 50
    assert dict(resolve(RunConfig(model="mlp")).model_args)["hidden"] == (512,)


def test_the_ladder_is_cumulative_and_its_steps_can_be_chosen():
    ladder = studies.get_study("ladder", steps="crop-flip,adam")
    assert list(ladder.variants) == ["baseline", "+crop-flip", "+adam"]
    assert ladder.variants["+adam"] == {"augment": "crop-flip", "optimizer": "adam", "lr": 0.001,
                                        "momentum": None, "weight_decay": 0.0}
    runs = planning.plan(ladder, {}, 1)
    assert {r.config.model for r in runs} == {"threeconv"}
    assert runs[-1].config.augment == "crop-flip" and runs[0].config.augment == "none"


def test_the_reports_sweeps():
    assert [v["lr"] for v in studies.get_study("lr", values="0.001,0.1").variants.values()] == [0.001, 0.1]
    scaled = studies.get_study("batch-size", values="32,256", scale_lr=True, batch_size=32, lr=0.01)
    assert scaled.variants == {"32": {"batch_size": 32, "lr": 0.01}, "256": {"batch_size": 256, "lr": 0.08}}
    assert list(studies.get_study("batch-size", values="32,256").variants["256"]) == ["batch_size"]
    dropout = studies.get_study("dropout", values="0,0.5")
    assert dropout.variants == {"0": {"dropout": 0.0}, "0.5": {"dropout": 0.5}} and dropout.base["model"] == "threeconv"


def test_mlp_and_tutorial_compared_in_one_sweep(tmp_path, ablate):
    out = tmp_path / "m.parquet"
    assert ablate(["sweep", *TINY, "--vary", "model=tutorial,mlp", "--out", out]).exit_code == 0
    frame = pd.read_parquet(out)
    sizes = frame.groupby("model")["params"].first()
    assert sizes["tutorial"] == 62_006 and sizes["mlp"] == 1_578_506
    assert frame[frame.model == "mlp"]["conv1_channels"].isna().all()
