"""Every input a user can type: a right answer, or a clean refusal before anything trains.

The settings' schema (config.SETTINGS) checks every value wherever it comes from: the
command line, --vary, a study file; the columns of the results are typed from the runs a
study plans, and a run_id survives a new field that keeps the old behaviour.
"""

import dataclasses
import textwrap

import pandas as pd
import pytest

from ablate import config, schema
from ablate.config import RunConfig
from ablate.errors import UsageError
from ablate.study import planning, studies
from ablate.study.planning import resolve
from conftest import TINY

SMALL = ["--dataset", "synthetic", "--limit-train", "80", "--limit-test", "20", "--image-size", "16", "--device", "cpu"]
NO_EPOCHS = [a for i, a in enumerate(TINY) if "--epochs" not in TINY[max(0, i - 1):i + 1]]


def clean_refusal(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- one schema


@pytest.mark.parametrize("name,value,message", [
    ("epochs", 1.5, "epochs must be a whole number >= 1, got 1.5"),
    ("epochs", True, "epochs must be a whole number >= 1, got True"),
    ("epochs", 0, "epochs must be a whole number >= 1, got 0"),
    ("batch_size", "64", "batch_size must be a whole number >= 1, got '64'"),
    ("lr", "fast", "lr must be a finite number > 0, got 'fast'"),
    ("lr", 0.0, "lr must be a finite number > 0, got 0.0"),
    ("lr", float("nan"), "lr must be a finite number > 0, got nan"),
    ("momentum", -0.5, "momentum must be a finite number >= 0 (or none), got -0.5"),
    ("test_fraction", 1.0, "test_fraction must be a finite number in (0, 1) (or none), got 1.0"),
    ("image_size", 4, "image_size must be a whole number in [8, 1024] (or none), got 4"),
    ("deterministic", 1, "deterministic must be true or false, got 1"),
    ("optimizer", 5, "optimizer must be a string, got 5"),
    ("limit_train", -3, "limit_train must be a whole number >= 1 (or none), got -3"),
])
def test_every_setting_is_checked_against_its_type_and_range(name, value, message):
    with pytest.raises(UsageError) as error:
        resolve(dataclasses.replace(RunConfig(), **{name: value}))
    assert str(error.value) == message


def test_an_int_for_a_float_setting_is_the_same_run_as_the_float():
    as_int = resolve(RunConfig(lr=1)).with_fields()
    assert as_int.lr == 1.0 and isinstance(as_int.lr, float)
    assert planning.Run("s", "v", 0, as_int).run_id == planning.Run("s", "v", 0, resolve(RunConfig(lr=1.0))).run_id


def test_every_field_has_a_setting_and_a_column():
    assert set(config.SETTINGS) == config.FIELDS
    settings = {c.name for c in schema.settings()}
    assert settings == {config.column(f) for f in config.FIELDS}
    assert config.column("lr") == "base_lr" and "lr" not in settings
    assert {config.setting_of(c) for c in settings} == config.FIELDS and config.setting_of("hidden") is None


@pytest.mark.parametrize("toml,message", [
    ("[base]\nepochs = 1.5\n[vary]\nlr = [0.1, 0.2]", "epochs must be a whole number >= 1, got 1.5"),
    ("name = 5\n[vary]\nlr = [0.1, 0.2]", "name must be a non-empty string, got 5"),
    ("[vary]\nlr = [\"fast\", 0.2]", "variant 'base': lr must be a finite number > 0, got 'fast'"),
    ("[vary]\nlr = []", "lr takes a list of distinct values, like lr = [1, 2]; got []"),
    ("[vary]\nlr = [0.1, 0.1]", "lr takes a list of distinct values"),
    ("[variants]\n", "[variants] is empty: give at least one [variants.NAME] table"),
    ("[variants]\na = 5\n", "variant 'a' must be a table ([variants.a]) of settings, got 5"),
    ("base = 3\n[vary]\nlr = [0.1]", "base must be a table ([base]), got 3"),
    ("[variants.a]\nlimit_train = 100\n[variants.b]\nlimit_train = 200\n",
     "limit_train is a data setting, the same for every variant: set it in [base], not in [variants.a]"),
    ("[grid]\ndataset = [\"synthetic\", \"mnist\"]\n", "dataset is a data setting"),
    ("[vary]\nimage_size = [16, 32]\n", "image_size is a data setting"),
    ("[grid]\nlr = [" + ", ".join(f"{i + 1}e-3" for i in range(40)) + "]\nepochs = ["
     + ", ".join(str(i + 1) for i in range(30)) + "]\n", "1,200 variants (40 x 30); a study takes at most 1,000"),
])
def test_study_files_are_checked_before_anything_trains(tmp_path, ablate, toml, message):
    (tmp_path / "s.toml").write_text(toml)
    result = ablate(["run", tmp_path / "s.toml", *NO_EPOCHS, "--out", tmp_path / "out" / "s.parquet"])
    clean_refusal(result, message)
    assert not (tmp_path / "out").exists()


def test_a_variant_can_never_train_on_other_data_than_it_records():
    """The whole class, whatever makes the study: the runner refuses a data setting that
    differs between variants (it loads one dataset for a study)."""
    study = studies.Study("s", "d", {"a": {"limit_train": 100}, "b": {"limit_train": 200}}, ("limit_train",))
    with pytest.raises(UsageError, match="variants 'a' and 'b' differ in limit_train: every variant of a study trains on the same"):
        planning.plan(study, {}, 1)


@pytest.mark.parametrize("vary,message", [
    ("epochs=1,2.5", "--vary epochs: epochs must be a whole number >= 1, got '2.5'"),
    ("deterministic=yes", "--vary deterministic: deterministic must be true or false, got 'yes'"),
    ("lr=0.1,-1", "--vary lr: lr must be a finite number > 0, got -1.0"),
    ("limit_train=10,20", "--vary limit_train: the data settings"),
])
def test_vary_values_are_checked_by_the_same_schema(tmp_path, ablate, vary, message):
    clean_refusal(ablate(["sweep", *TINY, "--vary", vary, "--out", tmp_path / "s.parquet"]), message)


def test_a_grid_too_large_is_refused_before_it_is_enumerated(tmp_path, ablate, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the grid was enumerated")

    monkeypatch.setattr(studies.itertools, "product", never)
    values = ",".join(str(i + 1) for i in range(30))
    result = ablate(["sweep", *TINY, "--grid", "--dry-run", *(a for n in ("epochs", "batch_size", "threads")
                                                                 for a in ("--vary", f"{n}={values}")),
                     "--vary", "lr=" + ",".join(f"{i + 1}e-3" for i in range(30))])
    clean_refusal(result, "810,000 variants (30 x 30 x 30 x 30); a study takes at most 1,000")


def test_too_many_runs_are_refused(tmp_path, ablate):
    clean_refusal(ablate(["linearity", *TINY, "--seeds", "40000", "--out", tmp_path / "s.parquet"]),
                  "3 variants x 40,000 seeds = 120,000 runs; a study takes at most 100,000 runs")


# ---------------------------------------------------------------- every study with no options


@pytest.mark.parametrize("name", studies.STUDIES.names())
def test_every_study_runs_with_no_options_at_all(tmp_path, ablate, monkeypatch, name):
    """Only the data is made tiny: every other setting is the study's own default."""
    monkeypatch.chdir(tmp_path)
    result = ablate([name, *SMALL])
    if name == "sweep":  # it is made from its options: without one it says which
        clean_refusal(result, "give at least one --vary NAME=V1,V2,...")
        return
    if name == "components":
        clean_refusal(result, "give at least one --component NAME=OFF,ON")
        return
    if name == "finetune":  # torchvision's weights, and no network here (conftest)
        clean_refusal(result, "cannot download ResNet18_Weights.IMAGENET1K_V1 for resnet18")
        return
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "results" / f"{name}.parquet")
    assert (frame["status"] == "ok").all()
    study = studies.get_study(name)
    assert list(frame["variant"].unique()) == list(study.variants)
    last = frame.groupby("variant")["epoch"].max()
    for variant, fields in study.variants.items():  # the study's own budget (the transfer probe has its own)
        assert last[variant] == fields.get("epochs", study.base.get("epochs", RunConfig.epochs)), variant


def test_the_scheduler_study_states_each_schedulers_settings(tmp_path, ablate):
    out = tmp_path / "s.parquet"
    result = ablate(["scheduler", *NO_EPOCHS, "--epochs", "6", "--out", out])
    assert result.exit_code == 0, result.output
    settings = pd.read_parquet(out).groupby("variant")[["lr_step_size", "lr_gamma", "lr_max"]].first()
    assert settings.loc["step"].tolist() == [2, 0.1, None] or settings.loc["step", "lr_step_size"] == 2
    assert settings.loc["exponential", "lr_gamma"] == 0.8 and pd.isna(settings.loc["none", "lr_gamma"])
    assert settings.loc["onecycle", "lr_max"] == pytest.approx(4 * RunConfig.lr)


def test_a_swept_scheduler_gets_its_defaults_and_an_unused_momentum_is_not_recorded():
    step = resolve(RunConfig(scheduler="step", epochs=9))
    assert (step.lr_step_size, step.lr_gamma) == (3, 0.1)
    assert resolve(RunConfig(scheduler="step", lr_step_size=2)).lr_step_size == 2  # given: kept
    assert resolve(RunConfig(optimizer="adam")).momentum is None  # Adam takes no momentum
    assert resolve(RunConfig(optimizer="momentum")).momentum == 0.9


# ---------------------------------------------------------------- model arguments' columns


CLASH = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, activation=2):  # an int where the tutorial net's is a str
        super().__init__()
        self.fc = nn.Linear(in_channels * 32 * 32, num_classes * activation)
        self.classes = num_classes

    def forward(self, x):
        return self.fc(x.flatten(1))[:, :self.classes]
'''


@pytest.fixture
def clash_model(tmp_path, monkeypatch):
    (tmp_path / "clashmodel.py").write_text(CLASH)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "clashmodel:Net"


def test_a_model_argument_is_typed_by_its_own_model(tmp_path, ablate, clash_model):
    out = tmp_path / "a.parquet"
    result = ablate(["sweep", *TINY, "--model", clash_model, "--vary", "activation=1,2", "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame["activation"].dtype == "int64" and set(frame["activation"]) == {1, 2}


def test_two_models_giving_one_argument_two_types_share_a_text_column(tmp_path, ablate, clash_model):
    (tmp_path / "s.toml").write_text(textwrap.dedent(f'''
        [variants.tutorial]
        model = "tutorial"
        [variants.mine]
        model = "{clash_model}"
    '''))
    out = tmp_path / "s.parquet"
    result = ablate(["run", tmp_path / "s.toml", *TINY, "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame.groupby("variant")["activation"].first().to_dict() == {"tutorial": "relu", "mine": "2"}
    assert (frame["status"] == "ok").all()


def test_resume_refuses_a_column_of_another_type_before_training(tmp_path, ablate, clash_model):
    out = tmp_path / "s.parquet"
    assert ablate(["sweep", *TINY, "--vary", "activation=relu,tanh", "--out", out]).exit_code == 0
    before = out.read_bytes()
    result = ablate(["sweep", *TINY, "--model", clash_model, "--vary", "activation=1,2", "--out", out, "--resume"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert out.read_bytes() == before


# ---------------------------------------------------------------- resume


def test_resume_takes_a_subset_of_the_files_variants(tmp_path, ablate):
    out = tmp_path / "c.parquet"
    assert ablate(["conv1", *TINY, "--channels", "2,6", "--out", out]).exit_code == 0
    before = out.read_bytes()
    result = ablate(["conv1", *TINY, "--channels", "2", "--out", out, "--resume"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == before  # nothing to train, nothing rewritten
    more = ablate(["conv1", *TINY, "--channels", "2,4", "--out", out, "--resume"])
    assert more.exit_code == 0, more.output
    assert set(pd.read_parquet(out)["conv1_channels"]) == {2, 4, 6}


def test_resume_refuses_a_new_variant_under_another_budget(tmp_path, ablate):
    out = tmp_path / "c.parquet"
    assert ablate(["conv1", *TINY, "--channels", "2", "--out", out]).exit_code == 0
    tiny3 = [a if a != "2" else "3" for a in TINY]  # --epochs 3
    clean_refusal(ablate(["conv1", *tiny3, "--channels", "4", "--out", out, "--resume"]),
                  "epochs: 2 in the file, 3 now")


def test_resume_compares_each_variant_with_its_own_rows(tmp_path, ablate):
    """The variant's setting is one of the study's factors, so only the per-variant check
    can see that variant 'a' now means another learning rate."""
    study = tmp_path / "s.toml"
    study.write_text('[variants.a]\nlr = 0.1\n[variants.b]\nlr = 0.2\n')
    out = tmp_path / "s.parquet"
    assert ablate(["run", study, *TINY, "--out", out]).exit_code == 0
    study.write_text('[variants.a]\nlr = 0.3\n[variants.b]\nlr = 0.2\n')
    clean_refusal(ablate(["run", study, *TINY, "--out", out, "--resume"]), "base_lr: 0.1 in the file, 0.3 now")


# ---------------------------------------------------------------- transfer


def test_transfer_refuses_more_labels_than_images(tmp_path, ablate):
    clean_refusal(ablate(["transfer", *SMALL, "--labels", "100000", "--out", tmp_path / "t.parquet"]),
                  "--labels 100000: the train split has 80 images; give at most 80")
    assert not (tmp_path / "t.parquet").exists()


def test_transfer_help_says_what_epochs_sets(ablate):
    result = ablate(["transfer", "--help"])
    text = " ".join(result.output.replace("│", " ").split())
    assert "Epochs of the classifier's training on the labelled images" in text
    assert "--pretrain-epochs" in text


# ---------------------------------------------------------------- run ids across versions


@dataclasses.dataclass(frozen=True)
class Later(RunConfig):
    """RunConfig as a later ablate could have it: a new field that keeps the old behaviour."""

    warmup_epochs: int = 0


def test_a_field_added_later_at_its_default_keeps_every_run_id():
    now = resolve(RunConfig(epochs=3))
    later = Later(**{f.name: getattr(now, f.name) for f in dataclasses.fields(now)})
    assert planning.Run("s", "v", 1, later).run_id == planning.Run("s", "v", 1, now).run_id
    assert planning.Run("s", "v", 1, later).config_id == planning.Run("s", "v", 1, now).config_id
    assert planning.Run("s", "v", 1, dataclasses.replace(later, warmup_epochs=2)).run_id != \
        planning.Run("s", "v", 1, now).run_id


def test_resume_of_a_file_written_before_a_field_existed_trains_nothing(tmp_path, ablate, monkeypatch):
    out = tmp_path / "lin.parquet"
    assert ablate(["linearity", *TINY, "--out", out]).exit_code == 0  # written by "the previous version"
    before = out.read_bytes()
    monkeypatch.setattr(planning, "RunConfig", Later)  # the next version: its RunConfig has one field more
    result = ablate(["linearity", *TINY, "--out", out, "--resume"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == before


def test_the_fields_every_run_id_hashes_are_frozen():
    """ID_FIELDS is the list of ablate 0.1: a field added since must not join it (that would
    re-identify every run written before)."""
    assert config.ID_FIELDS == frozenset(config.FIELDS) or config.ID_FIELDS < frozenset(config.FIELDS)
    assert len(config.ID_FIELDS) == 29


# The run ids of the previous release: tests/test_run_ids.py, every built-in study.


def test_a_model_argument_named_like_a_result_column_is_not_a_setting(tmp_path, ablate, monkeypatch):
    """A model's own `seed` or `lr` argument would overwrite the run's column: it keeps its
    default and is neither settable nor recorded."""
    (tmp_path / "seeded.py").write_text(CLASH.replace("activation=2", "seed=7, lr=0.5, width=2")
                                        .replace("num_classes * activation", "num_classes * width"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "s.parquet"
    result = ablate(["sweep", *TINY, "--model", "seeded:Net", "--vary", "width=1,2", "--seeds", "2", "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert sorted(frame["seed"].unique()) == [0, 1] and (frame["base_lr"] == RunConfig.lr).all()
    clean_refusal(ablate(["sweep", *TINY, "--model", "seeded:Net", "--vary", "seed=1,2"]),
                  "unknown setting to vary 'seed'")


# ---------------------------------------------------------------- found in review


NONE_KNOB = CLASH.replace("activation=2", "width=None").replace("num_classes * activation", "num_classes")


def test_a_model_argument_that_defaults_to_none_resumes(tmp_path, ablate, monkeypatch):
    (tmp_path / "noneknob.py").write_text(NONE_KNOB)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out, args = tmp_path / "n.parquet", ["sweep", *TINY, "--model", "noneknob:Net", "--vary", "width=16,None"]
    assert ablate([*args, "--out", out]).exit_code == 0
    frame = pd.read_parquet(out)
    assert frame["width"].dtype == "float64" or frame["width"].dtype == "Int64" or frame["width"].isna().any()
    assert frame.groupby("variant")["width"].first().isna().tolist() == [False, True]  # None is null, not "None"
    before = out.read_bytes()
    resumed = ablate([*args, "--out", out, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert out.read_bytes() == before


def test_a_float_argument_given_whole_numbers_stays_a_float_column(tmp_path, ablate):
    out = tmp_path / "d.parquet"
    assert ablate(["sweep", *TINY, "--vary", "dropout=0,1", "--out", out]).exit_code == 2  # 1 is out of range
    assert ablate(["sweep", *TINY, "--vary", "dropout=0", "--out", out]).exit_code == 0
    assert pd.read_parquet(out)["dropout"].dtype == "float64"
    more = ablate(["sweep", *TINY, "--vary", "dropout=0,0.5", "--out", out, "--resume"])
    assert more.exit_code == 0, more.output


@pytest.mark.parametrize("args,message", [
    (["sweep", "--vary", "epochs=99999999999999999999"], "epochs must be at most 2^53"),
    (["linearity", "--batch-size", "99999999999999999999"], "--batch-size must be at most 2^53"),
    (["sweep", "--vary", "lr=0.1,0.10"], "lr: the value 0.1 is given twice"),
    (["sweep", "--vary", "batch_size=32,032"], "batch_size: the value 32 is given twice"),
    (["sweep", "--model", "latent-mlp", "--vary", "labels=40,100000"], "--labels 100000: the train split has 300"),
    (["scheduler", "--schedulers", "onecycle", "--lr", "1e308"], "lr_max must be a finite number > 0 (or none), got inf"),
])
def test_inputs_found_in_review(tmp_path, ablate, args, message):
    data = ["--dataset", "synthetic", "--limit-train", "300", "--limit-test", "100", "--device", "cpu"]
    clean_refusal(ablate([*args, *data, "--out", tmp_path / "r.parquet"]), message)
    assert not (tmp_path / "r.parquet").exists()


def test_a_setting_a_factor_derives_does_not_block_resume(tmp_path, ablate):
    """lr_step_size follows epochs under the step scheduler: a new epochs value is a new
    variant, not another setting of the file's."""
    out = tmp_path / "s.parquet"
    base = ["sweep", *NO_EPOCHS, "--grid", "--vary", "scheduler=step", "--out", out]
    assert ablate([*base, "--vary", "epochs=3"]).exit_code == 0
    resumed = ablate([*base, "--vary", "epochs=1", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert set(pd.read_parquet(out)["lr_step_size"]) == {1}


def test_a_pack_whose_weights_fail_keeps_every_seeds_rows(tmp_path, ablate, monkeypatch):
    import safetensors.torch

    def fails(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", fails)
    out = tmp_path / "p.parquet"
    result = ablate(["conv1", *TINY, "--channels", "4", "--seeds", "3", "--pack", "--save-models", "--out", out])
    assert result.exit_code == 1, result.output
    assert sorted(pd.read_parquet(out)["seed"].unique()) == [0, 1, 2]


def test_task_is_an_option_of_every_study_and_the_model_must_fit_it(tmp_path, ablate):
    clean_refusal(ablate(["latent", *SMALL, "--task", "classify", "--out", tmp_path / "l.parquet"]),
                  "model 'autoencoder' (variant '4') gives outputs of shape (2, 3, 16, 16) for a batch of 2; task "
                  "classify needs (2, 10)")
    clean_refusal(ablate(["linearity", *SMALL, "--task", "nosuch", "--out", tmp_path / "n.parquet"]),
                  "unknown task 'nosuch'")
    out = tmp_path / "r.parquet"
    result = ablate(["sweep", *SMALL, "--epochs", "1", "--model", "autoencoder", "--task", "reconstruct",
                     "--vary", "latent_dim=4,8", "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert set(frame["task"]) == {"reconstruct"} and frame["accuracy"].isna().all()
