"""The reconstruct task, the autoencoder studies of report 001, saved models and their figures."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ablate.data.datasets import load_dataset
from ablate.execution import runner
from ablate.results import saved
from ablate.results.files import models_path
from ablate.study import planning, studies
from ablate.study.planning import resolve
from ablate.training.tasks import TASKS
from ablate.training.train import RunConfig, build_model, evaluate_copies, latent_correlation, pretrained_encoder, train_run

CPU = torch.device("cpu")
TINY = ["--dataset", "synthetic", "--limit-train", "200", "--limit-test", "100", "--epochs", "2", "--device", "cpu"]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_the_autoencoder_gives_back_its_input_shape(depth):
    model = build_model(resolve(RunConfig(model="autoencoder").with_fields(depth=depth, latent_dim=7)), 1, 10)
    x = torch.rand(5, 1, 32, 32)
    assert model.encode(x).shape == (5, 7)
    out = model(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1  # sigmoid
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == depth and all(c.kernel_size == (3, 3) for c in convs)


def test_reconstruction_loss_is_the_mse_to_the_input():
    out, x = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    assert TASKS.get("reconstruct").loss(out, x, None).item() == pytest.approx(((out - x) ** 2).mean().item())


def test_latent_corr_is_numpys_mean_absolute_correlation():
    model = build_model(resolve(RunConfig(model="autoencoder")), 1, 10)
    x = torch.rand(300, 1, 32, 32)
    with torch.no_grad():
        codes = model.encode(x).double().numpy()
    r = np.corrcoef(codes.T)
    expected = np.abs(r[~np.eye(len(r), dtype=bool)]).mean()
    assert latent_correlation(model, x, lambda b: b) == pytest.approx(expected, rel=1e-9)


def test_a_latent_study_records_loss_and_latent_corr_and_no_accuracy(tmp_path, ablate):
    out = tmp_path / "latent.parquet"
    result = ablate(["latent", *TINY, "--dims", "2,8", "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame["accuracy"].isna().all() and set(frame["task"]) == {"reconstruct"}
    last = frame[frame.epoch == 2]
    assert last["latent_corr"].notna().all() and frame[frame.epoch < 2]["latent_corr"].isna().all()
    assert set(frame["optimizer"]) == {"adamw"} and set(frame["batch_size"]) == {32}  # report 001's setting
    assert "latent corr" in result.stdout and "accuracy" not in result.stdout
    assert pd.read_parquet(tmp_path / "_per_class" / "latent.parquet").empty
    report = ablate(["report", out])
    assert report.exit_code == 0 and "accuracy" not in report.stdout


def test_saved_models_reload_bit_identical_and_give_the_recorded_test_loss(tmp_path, ablate):
    out = tmp_path / "ae.parquet"
    assert ablate(["ae-depth", *TINY, "--depths", "1,2", "--save-models", "--out", out]).exit_code == 0
    frame = pd.read_parquet(out)
    kept = sorted(p.stem for p in models_path(out).glob("*.safetensors"))
    assert kept == sorted(frame["run_id"].unique())
    data = load_dataset("synthetic", limit_train=200, limit_test=100)
    row = frame[(frame.epoch == 2) & (frame.split == "test") & (frame.variant == "2")].iloc[0]
    model = saved.load_run_model(out, row, data)
    again = saved.load_run_model(out, row, data)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    x = data.test_x.float() / 255  # normalization none
    loss = evaluate_copies(model.to(memory_format=torch.channels_last), x, data.test_y, [lambda b: b],
                           TASKS.get("reconstruct"), 10)[0]["loss"]
    assert loss == row["loss"]


def test_resume_keeps_the_weights_and_the_table_consistent(tmp_path, ablate):
    out = tmp_path / "ae.parquet"
    args = ["latent", *TINY, "--dims", "2,4", "--save-models", "--out", out]
    assert ablate(args).exit_code == 0
    before = pd.read_parquet(out)
    folder = models_path(out)
    lost = folder / f"{before['run_id'].iloc[0]}.safetensors"
    lost.unlink()  # a run whose weights are gone: trained again
    (folder / "0123456789ab.safetensors").write_bytes(b"weights of a run the table does not hold")
    assert ablate([*args, "--resume"]).exit_code == 0
    after = pd.read_parquet(out)
    assert lost.exists() and not (folder / "0123456789ab.safetensors").exists()
    assert sorted(after["run_id"].unique()) == sorted(before["run_id"].unique()) and len(after) == len(before)
    pd.testing.assert_frame_equal(before.sort_values(["run_id", "epoch", "split"])[["run_id", "loss"]].reset_index(drop=True),
                                  after.sort_values(["run_id", "epoch", "split"])[["run_id", "loss"]].reset_index(drop=True),
                                  check_exact=True)


def test_transfer_freezes_exactly_the_encoder(tiny_data):
    study = studies.get_study("transfer", labels=20, pretrain_epochs=1, probe_epochs=3)
    runs = {r.variant: r for r in planning.plan(study, {"dataset": "synthetic", "epochs": 2}, 1)}
    results = {name: train_run(run.config, tiny_data, 0, CPU, keep_model=True) for name, run in runs.items()}
    pretrained = pretrained_encoder(runs["frozen"].config, tiny_data, 0, CPU)
    encoder = lambda name: {k.removeprefix("encoder."): v for k, v in results[name].state.items()  # noqa: E731
                            if k.startswith("encoder.")}
    head = lambda name: {k: v for k, v in results[name].state.items() if k.startswith("head.")}  # noqa: E731
    assert all(torch.equal(encoder("frozen")[k], pretrained[k]) for k in pretrained)  # no gradient reached it
    assert not all(torch.equal(encoder("finetune")[k], pretrained[k]) for k in pretrained)
    assert not any(torch.equal(encoder("scratch")[k], pretrained[k]) for k in pretrained if k.endswith("weight"))
    assert not all(torch.equal(head("frozen")[k], head("finetune")[k]) for k in head("frozen"))  # the head learns
    for result in results.values():
        assert len([r for r in result.epochs if r.split == "test"]) in (3, 4)
        assert result.epochs[-1].metrics["accuracy"] is not None
    assert results["probe"].last_epoch == 3 and runs["probe"].config.batch_size == 20  # full batch
    assert all(torch.equal(encoder("probe")[k], pretrained[k]) for k in pretrained)  # the same code, frozen
    assert set(head("probe")) == {"head.weight", "head.bias"}  # one linear layer


def test_transfer_trains_on_the_labelled_few(tmp_path, ablate, monkeypatch):
    seen = []
    real = runner.train_members

    def spy(members, data, *args, **kwargs):
        results = real(members, data, *args, **kwargs)
        seen.extend((config.labels, result.epochs[1].loss) for (config, _), result in zip(members, results))
        return results

    monkeypatch.setattr(runner, "train_members", spy)
    out = tmp_path / "t.parquet"
    result = ablate(["transfer", *TINY, "--labels", "30", "--pretrain-epochs", "1", "--probe-epochs", "3", "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert list(frame["variant"].unique()) == ["frozen", "finetune", "scratch", "probe"]
    assert set(frame["labels"]) == {30} and frame["accuracy"].notna().all()
    freeze = frame.groupby("variant", sort=False)["freeze_encoder"].first()
    assert freeze["frozen"] and not freeze["finetune"] and pd.isna(freeze["scratch"])
    assert frame[frame.variant == "scratch"]["pretrain_epochs"].isna().all()
    assert [labels for labels, _ in seen] == [30, 30, 30, 30]


def test_figures_of_saved_autoencoders(tmp_path, ablate):
    out = tmp_path / "ae.parquet"
    assert ablate(["latent", *TINY, "--dims", "2,8", "--save-models", "--out", out]).exit_code == 0
    for kind in ("reconstructions", "interpolation"):
        figure = tmp_path / f"{kind}.png"
        result = ablate(["plot", out, "-o", figure, "--kind", kind, "--pair", "3,4"])
        assert result.exit_code == 0, result.output
        assert figure.stat().st_size > 10_000
    sweep = ablate(["plot", out, "-o", tmp_path / "corr.png", "--kind", "sweep", "--factor", "latent_dim",
                    "--metric", "latent_corr"])
    assert sweep.exit_code == 0, sweep.output
    missing = ablate(["plot", out, "-o", tmp_path / "x.png", "--kind", "interpolation", "--pair", "3,11"])
    assert missing.exit_code == 2 and "class 11 has no test image" in missing.stderr


def test_fashion_mnist_autoencoder(tmp_path, ablate):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() and not os.environ.get("CI"):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path / "f.parquet"
    result = ablate(["latent", "--dataset", "fashion-mnist", "--limit-train", "2000", "--limit-test", "500",
                     "--epochs", "2", "--dims", "4,16", "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    test = frame[frame.split == "test"].pivot(index="epoch", columns="variant", values="loss")
    assert (test.loc[2] < test.loc[0]).all()  # it learns to reconstruct
