"""A row records what its run trained with: a setting the run does not use is null, variants
that differ only in such settings are refused before anything trains, onecycle follows the
base rate and the momentum asked for, and an option a study's variants override is said."""

import pytest
import torch

from ablate.errors import UsageError
from ablate.study import planning, studies
from ablate.study.planning import resolve
from ablate.training.train import RunConfig, make_optimizer, make_scheduler

TINY = ["--dataset", "synthetic", "--limit-train", "120", "--limit-test", "60", "--epochs", "2",
        "--batch-size", "30", "--device", "cpu", "--seeds", "1"]


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path, monkeypatch):
    """Dry runs name no --out: results/STUDY.parquet of the test's own folder, never the checkout's."""
    monkeypatch.chdir(tmp_path)


def _plan(study, **options):
    return planning.plan(study, {"dataset": "synthetic", **options}, 1)


@pytest.mark.parametrize("base, vary", [
    ({"scheduler": "none"}, "lr_gamma=0.5,0.9"),
    ({"scheduler": "cosine"}, "lr_max=0.1,0.2"),
    ({"scheduler": "exponential"}, "lr_step_size=1,2"),
    ({"scheduler": "step"}, "lr_max=0.1,0.2"),
    ({"optimizer": "adam"}, "momentum=0.5,0.9"),
    ({"optimizer": "sgd"}, "momentum=0.5,0.9"),
    ({}, "freeze_encoder=false,true"),  # no pretraining: nothing to freeze
    ({"scheduler": "onecycle", "cycle_momentum": True}, "momentum=0.5,0.9"),  # the cycle sets it
])
def test_variants_that_differ_only_in_unused_settings_are_refused(base, vary):
    study = studies.get_study("sweep", vary=[vary])
    study = studies.Study(study.name, "", variants=study.variants, factors=study.factors, base=base)
    with pytest.raises(UsageError, match="would train the same runs.*differ only in"):
        _plan(study)


def test_a_setting_the_run_does_not_use_is_null_in_its_row():
    config = resolve(RunConfig(scheduler="cosine", lr_gamma=0.5, lr_max=1.0, optimizer="adam", momentum=0.9,
                               freeze_encoder=True, cycle_momentum=True))
    assert (config.lr_gamma, config.lr_max, config.momentum, config.freeze_encoder, config.cycle_momentum) == \
        (None, None, None, None, None)
    step = resolve(RunConfig(scheduler="step", lr_max=1.0, epochs=6))
    assert (step.lr_step_size, step.lr_gamma, step.lr_max) == (2, 0.1, None)
    one = resolve(RunConfig(scheduler="onecycle", lr=0.05))
    assert (one.lr_max, one.cycle_momentum, one.momentum) == (0.2, False, 0.9)


def _rates_and_momenta(config, steps=10):
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model.parameters(), config)
    scheduler = make_scheduler(optimizer, config, steps // config.epochs)
    seen = []
    for _ in range(steps - 1):
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0].get("momentum")))
        optimizer.step()
        scheduler.step()
    return seen


def test_onecycle_starts_at_the_base_rate_peaks_at_lr_max_and_keeps_the_momentum_asked_for():
    config = resolve(RunConfig(scheduler="onecycle", lr=0.01, lr_max=0.1, epochs=2))
    seen = _rates_and_momenta(config, 100)
    rates = [lr for lr, _ in seen]
    assert rates[0] == pytest.approx(0.01) and max(rates) == pytest.approx(0.1, rel=1e-3)
    assert {m for _, m in seen} == {0.9}
    plain = _rates_and_momenta(resolve(RunConfig(scheduler="onecycle", optimizer="sgd", lr=0.01, epochs=2)))
    assert {m for _, m in plain} == {0}  # plain SGD stays plain
    other = _rates_and_momenta(resolve(RunConfig(scheduler="onecycle", lr=0.02, lr_max=0.1, epochs=2)), 100)
    assert other[0][0] == pytest.approx(0.02)  # the base rate decides the start
    cycled = _rates_and_momenta(resolve(RunConfig(scheduler="onecycle", lr=0.01, epochs=2, cycle_momentum=True)))
    assert len({m for _, m in cycled}) > 1  # asked for: torch's cycle


def test_lr_max_below_lr_is_refused():
    with pytest.raises(UsageError, match="lr_max"):
        resolve(RunConfig(scheduler="onecycle", lr=0.1, lr_max=0.05))


def _final_losses(frame):
    return frame[(frame.split == "test")].sort_values("epoch").groupby("variant")["loss"].last()


def test_momentum_under_onecycle_changes_the_numbers(tmp_path, ablate):
    from ablate.results import files as results

    study = tmp_path / "m.toml"
    study.write_text('[base]\nscheduler = "onecycle"\n[vary]\nmomentum = [0.0, 0.5, 0.9]\n')
    result = ablate(["run", study, *TINY, "--out", tmp_path / "m.parquet"])
    assert result.exit_code == 0, result.output
    frame = results.read_results(tmp_path / "m.parquet")
    assert _final_losses(frame).nunique() == 3
    assert sorted(frame.drop_duplicates("run_id")["momentum"]) == [0.0, 0.5, 0.9]


def test_an_option_every_variant_sets_is_refused_and_one_some_set_is_said(tmp_path, ablate):
    result = ablate(["lr", *TINY, "--lr", "0.5", "--out", tmp_path / "lr.parquet"])
    assert result.exit_code == 2 and "--lr 0.5: every variant" in result.output
    assert not (tmp_path / "lr.parquet").exists()
    study = tmp_path / "some.toml"
    study.write_text('[variants.slow]\nlr = 0.001\n[variants.default]\ndropout_free = 1\n'
                     .replace("dropout_free = 1", 'augment = "none"'))
    result = ablate(["run", study, *TINY, "--lr", "0.05", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "--lr 0.05 holds for the variants that do not set lr; slow keeps its own" in result.output


def test_an_option_the_study_takes_itself_is_not_said(tmp_path, ablate):
    """batch-size --scale-lr takes --lr as its base rate: each variant's own rate is scaled from it."""
    result = ablate(["batch-size", "--values", "30,60", "--scale-lr", *TINY, "--lr", "0.1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "holds for" not in result.output and "every variant" not in result.output


def test_a_momentum_left_empty_records_what_the_optimiser_trains_with():
    assert resolve(RunConfig(optimizer="momentum", momentum=None)).momentum == 0.9
    assert resolve(RunConfig(optimizer="rmsprop", momentum=None)).momentum == 0.0
    study = studies.get_study("sweep", vary=["momentum=none,0.9"])
    with pytest.raises(UsageError, match="would train the same runs.*default"):
        _plan(study)


def test_threads_ablate_chose_is_not_an_option_the_user_gave(tmp_path, ablate):
    result = ablate(["sweep", "--vary", "threads=1,2", *TINY, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "--threads" not in result.output


def test_lr_max_is_checked_against_each_variants_rate_not_the_bases(tmp_path, ablate):
    study = tmp_path / "s.toml"
    study.write_text('[base]\nscheduler = "onecycle"\nlr_max = 0.01\n[vary]\nlr = [0.001, 0.005]\n')
    result = ablate(["run", study, *TINY, "--dry-run"])
    assert result.exit_code == 0, result.output
    study.write_text('[base]\nscheduler = "onecycle"\nlr_max = 0.01\n[vary]\nlr = [0.001, 0.05]\n')
    result = ablate(["run", study, *TINY, "--dry-run"])
    assert result.exit_code == 2 and "variant 'lr=0.05': lr_max (0.01) is below lr (0.05)" in result.output


def test_every_setting_of_a_run_is_an_option_of_every_study():
    import typer

    from ablate.cli import app
    from ablate.config import SETTINGS

    commands = typer.main.get_command(app).commands
    for name in studies.STUDIES:
        options = {p.name for p in commands[name].params}
        assert set(SETTINGS) <= options, (name, set(SETTINGS) - options)


def test_the_training_settings_given_as_options_are_what_the_runs_train_with(tmp_path, ablate):
    import pandas as pd

    out = tmp_path / "a.parquet"
    result = ablate(["linearity", *TINY, "--optimizer", "adam", "--scheduler", "step", "--lr-step-size", "1",
                     "--lr-gamma", "0.5", "--weight-decay", "0.01", "--lr", "0.004", "--augment", "flip",
                     "--normalization", "standard", "--out", out])
    assert result.exit_code == 0, result.output
    runs = pd.read_parquet(out)
    for column, value in (("optimizer", "adam"), ("scheduler", "step"), ("lr_step_size", 1), ("lr_gamma", 0.5),
                          ("weight_decay", 0.01), ("augment", "flip"), ("normalization", "standard")):
        assert (runs[column] == value).all(), column
    assert runs["momentum"].isna().all()  # Adam takes none
    train = runs[runs["split"] == "train"].groupby("epoch")["lr"].first()
    assert train.loc[1] == pytest.approx(0.004) and train.loc[2] == pytest.approx(0.002)  # halved after epoch 1
    plain = ablate(["linearity", *TINY, "--out", tmp_path / "b.parquet"])
    assert plain.exit_code == 0
    assert not pd.read_parquet(tmp_path / "b.parquet")["loss"].equals(runs["loss"])  # they changed the training
