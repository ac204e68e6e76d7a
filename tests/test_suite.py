"""The ablation suite: every study command, its factors, and the robust effects only."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import duckdb
import polars
import pyarrow.parquet as pq

from ablate import transforms
from ablate.count import count_model
from ablate.data.datasets import load_dataset
from ablate.study import planning, studies
from ablate.study.planning import resolve
from ablate.training.train import RunConfig, build_model, train_run

TINY = ["--dataset", "synthetic", "--limit-train", "200", "--limit-test", "100", "--epochs", "1",
        "--batch-size", "50", "--device", "cpu"]
FACTOR = {"linearity": "activation", "conv1": "conv1_channels", "permutation": "permutation",
          "augment": "augment", "scheduler": "scheduler", "optimizer": "optimizer",
          "normalization": "normalization", "regularization": "batchnorm", "lr": "base_lr",
          "batch-size": "batch_size", "dropout": "dropout", "ladder": "normalization", "sweep": "base_lr",
          "latent": "latent_dim", "ae-depth": "depth", "transfer": "freeze_encoder", "finetune": "trainable",
          "components": "normalization", "variance": "seed_source"}
COMPONENTS = ["normalization=none,standard", "augment=none,flip"]
OPTIONS = {"conv1": ["--channels", "2,6"], "sweep": ["--vary", "lr=0.01,0.05"], "lr": ["--values", "0.01,0.05"],
           "batch-size": ["--values", "50,100"], "dropout": ["--values", "0,0.5"],
           "ladder": ["--steps", "standardize,dropout"], "latent": ["--dims", "2,4"], "ae-depth": ["--depths", "1,2"],
           "transfer": ["--labels", "20", "--pretrain-epochs", "1", "--probe-epochs", "2"],
           "components": [a for c in COMPONENTS for a in ("--component", c)], "variance": ["--sources", "init,order"]}
MADE_OF = {"sweep": {"vary": ["lr=0.01,0.1"]}, "components": {"component": COMPONENTS}}  # studies made from options


def test_every_study_is_tested():
    assert set(FACTOR) == set(studies.STUDIES)


@pytest.mark.parametrize("name", list(studies.STUDIES))
def test_every_study_is_well_formed(name):
    study = studies.get_study(name, **MADE_OF.get(name, {}))
    assert study.name == name and len(study.variants) >= 2
    assert len(planning.plan(study, {}, 2)) == 2 * len(study.variants)  # every variant resolves
    assert FACTOR[name] in study.factors


def test_registry_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        studies.register_study("linearity")(studies.linearity)


@pytest.mark.parametrize("name", list(studies.STUDIES))
def test_every_study_command_runs(tmp_path, ablate, name):
    out = tmp_path / f"{name}.parquet"
    options = OPTIONS.get(name, [])
    if name == "finetune":  # weights of its own: no download here
        torch.save(build_model(resolve(RunConfig()), 3, 10).state_dict(), tmp_path / "w.pt")
        options = ["--model", "tutorial", "--weights", str(tmp_path / "w.pt")]
    result = ablate([name, *TINY, *options, "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    expected = {"conv1": ["2", "6"], "sweep": ["base", "lr=0.05"], "lr": ["0.01", "0.05"], "batch-size": ["50", "100"],
                "dropout": ["0", "0.5"], "ladder": ["baseline", "+standardize", "+dropout"], "latent": ["2", "4"],
                "ae-depth": ["1", "2"], "components": ["none", "normalization", "augment", "all"],
                "variance": ["init", "order", "all"]}
    variants = expected[name] if name in expected else list(studies.get_study(name).variants)
    assert list(frame["variant"].unique()) == variants
    assert frame.groupby("variant")[FACTOR[name]].nunique(dropna=False).eq(1).all()
    assert frame[FACTOR[name]].nunique(dropna=False) > 1 or name == "linearity"
    assert (frame["status"] == "ok").all()
    assert ("test loss" if name in ("latent", "ae-depth") else "test accuracy") in result.stdout


def test_conv1_records_size_from_count(tmp_path, ablate):
    out = tmp_path / "c.parquet"
    assert ablate(["conv1", *TINY, "--channels", "3,36", "--out", str(out)]).exit_code == 0
    frame = pd.read_parquet(out).groupby("conv1_channels")[["params", "flops"]].first()
    for width in (3, 36):
        counts = count_model(build_model(resolve(RunConfig().with_fields(conv1_channels=width)), 3, 10), (3, 32, 32))
        assert frame.loc[width].tolist() == [counts.params, counts.flops]
    assert frame.loc[36, "params"] - frame.loc[3, "params"] == 33 * (3 * 25 + 1) + 16 * 33 * 25


def test_scheduler_learning_rate_is_recorded_per_epoch(tmp_path, ablate):
    out = tmp_path / "s.parquet"
    args = ["scheduler", *TINY, "--epochs", "3", "--lr", "0.05", "--schedulers", "none,step,onecycle,cosine",
            "--out", str(out)]
    assert ablate(args).exit_code == 0
    frame = pd.read_parquet(out)
    lr = frame[(frame.split == "train") & (frame.epoch >= 1)].pivot(index="epoch", columns="variant", values="lr")
    assert lr["none"].tolist() == [0.05] * 3
    assert lr["step"].tolist() == pytest.approx([0.05, 0.005, 0.0005])  # step size epochs // 3 = 1
    assert lr["cosine"].tolist() == pytest.approx([0.05, 0.0375, 0.0125])
    assert lr["onecycle"].iloc[0] == pytest.approx(0.05)  # starts at the base rate, up to lr_max = 4 x lr
    first = frame.groupby("variant")[["lr_max", "cycle_momentum", "momentum"]].first()
    assert first.loc["onecycle"].tolist() == [pytest.approx(0.2), False, 0.9]


def test_optimizers_take_their_own_defaults_or_the_given_lr(tmp_path, ablate):
    defaults, given = tmp_path / "d.parquet", tmp_path / "g.parquet"
    assert ablate(["optimizer", *TINY, "--optimizers", "sgd,adamw", "--out", str(defaults)]).exit_code == 0
    assert ablate(["optimizer", *TINY, "--optimizers", "sgd,adamw", "--lr", "0.003",
                   "--out", str(given)]).exit_code == 0
    first = pd.read_parquet(defaults).groupby("variant")[["base_lr", "weight_decay"]].first()
    assert first.to_dict("index") == {"sgd": {"base_lr": 0.1, "weight_decay": 0.0},
                                      "adamw": {"base_lr": 0.001, "weight_decay": 0.01}}
    assert set(pd.read_parquet(given)["base_lr"]) == {0.003}


def test_augmentation_touches_the_train_split_only(monkeypatch):
    seen = []

    def spy(x, gen):
        seen.append(len(x))
        return x

    monkeypatch.setitem(transforms.AUGMENTATIONS._entries, "spy", spy)
    data = load_dataset("synthetic", limit_train=300, limit_test=100)
    train_run(RunConfig(epochs=2, batch_size=50, augment="spy"), data, 0, torch.device("cpu"))
    assert sum(seen) == 2 * 300


def fashion_mnist_available():
    return Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() or os.environ.get("CI")


@pytest.mark.skipif(not fashion_mnist_available(), reason="Debian's dataset-fashion-mnist is not installed")
def test_permutation_ordering_holds_for_every_seed(tmp_path, ablate):
    # The robust effect (EXPERIMENTS.md A): a fresh permutation ruins learning, for every seed.
    # Original vs fixed is not asserted per seed: the gap is small and depends on the budget
    # (at 12,000 images it vanishes); only its sign on average at this budget is.
    out = tmp_path / "p.parquet"
    result = ablate(["permutation", "--dataset", "fashion-mnist", "--limit-train", "6000",
                              "--limit-test", "1000", "--epochs", "2", "--batch-size", "64", "--lr", "0.01",
                              "--seeds", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    final = frame[(frame.split == "test") & (frame.epoch == 2)].pivot(index="seed", columns="variant",
                                                                      values="accuracy")
    assert (final["original"] > final["fresh"] + 0.25).all(), final
    assert (final["fixed"] > final["fresh"] + 0.1).all(), final
    assert final["original"].mean() > final["fixed"].mean(), final
    assert "per-class test accuracy" in result.stdout and "Ankle boot" in result.stdout


@pytest.mark.parametrize("topic,name", [("studies", "permutation"), ("datasets", "fashion-mnist"),
                                        ("augmentations", "perspective"), ("schedulers", "onecycle"),
                                        ("optimizers", "adamw"), ("models", "threeconv"),
                                        ("normalizations", "zca"), ("permutations", "fresh")])
def test_list_topics(ablate, topic, name):
    result = ablate(["list", topic, "--json"])
    assert result.exit_code == 0
    assert name in {row["name"] for row in json.loads(result.stdout)}
    assert name in ablate(["list", topic]).stdout


def test_every_augmentation_is_named_in_the_help_and_the_readme(ablate):
    help_text = " ".join(ablate(["augment", "--help"]).stdout.split())
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in ["none", *transforms.AUGMENTATIONS]:
        assert name in help_text, name
        assert f"`{name}`" in readme, name


def test_a_results_folder_reads_as_one_table_of_runs(tmp_path, ablate):
    """Studies whose files hold different null columns (momentum for Adam, lr_gamma, the model
    fields) read as one frame in pandas, polars and DuckDB, without the per-class rows."""
    folder = tmp_path / "results"
    for args in (["linearity"], ["optimizer", "--optimizers", "adam,momentum"], ["scheduler", "--schedulers", "none,step"],
                 ["regularization"]):
        assert ablate([*args, *TINY, "--out", folder / f"{args[0]}.parquet"]).exit_code == 0
    expected = 2 * 2 * (3 + 2 + 2 + 4)  # splits x epochs (0 and 1) x runs
    schemas = {str(pq.read_schema(path).remove_metadata()) for path in folder.glob("*.parquet")}
    assert len(schemas) == 1 and "null" not in next(iter(schemas))

    frame = pd.read_parquet(folder)
    assert len(frame) == expected and set(frame["study"]) == {"linearity", "optimizer", "scheduler", "regularization"}
    assert "class_name" not in frame.columns
    assert len(polars.read_parquet(folder / "*.parquet")) == expected
    assert duckdb.sql(f"select count(*) from read_parquet('{folder}/*.parquet')").fetchall() == [(expected,)]
    by_study = duckdb.sql(f"select study, count(distinct run_id) from read_parquet('{folder}/*.parquet') "
                          "where momentum is null group by study order by study").fetchall()
    assert by_study == [("optimizer", 1)]  # Adam has no momentum
