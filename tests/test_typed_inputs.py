"""Every input typed once, where it enters: model arguments as their declared type, the word
`none` as its setting reads it, a study's name an identifier, a sweep named after its file."""

import textwrap

import pandas as pd
import pytest

from ablate import arch
from ablate.errors import UsageError
from ablate.results import files as results
from ablate.study import studies

TINY = ["--dataset", "synthetic", "--limit-train", "120", "--limit-test", "60", "--epochs", "1",
        "--batch-size", "60", "--device", "cpu", "--seeds", "1"]


def _runs(path):
    return results.read_results(path).drop_duplicates("run_id")


@pytest.mark.parametrize("name, values, expected", [
    ("batchnorm", ["false", "False", 0, False], False),
    ("batchnorm", ["true", "TRUE", 1, True], True),
    ("dropout", [0, 0.0, "0", "0.0"], 0.0),
    ("conv1_channels", [16, "16", 16.0], 16),
    ("activation", ["none"], "none"),  # a string argument keeps the word
])
def test_a_model_argument_is_its_declared_type_however_spelled(name, values, expected):
    source = arch.model_source("threeconv")
    for value in values:
        typed = source.typed(name, value)
        assert typed == expected and type(typed) is type(expected), (value, typed)


def test_a_tuple_argument_takes_a_list_a_scalar_or_its_text():
    source = arch.model_source("mlp")
    assert source.typed("hidden", 512) == (512,) == source.knobs["hidden"]
    assert source.typed("hidden", [32, 16]) == (32, 16) == source.typed("hidden", "(32, 16)")


@pytest.mark.parametrize("model, name, value, said", [
    ("threeconv", "batchnorm", "maybe", "true or false"),
    ("threeconv", "batchnorm", 2, "true or false"),
    ("threeconv", "dropout", "half", "a finite number"),
    ("threeconv", "dropout", True, "a finite number"),
    ("threeconv", "dropout", float("nan"), "a finite number"),
    ("threeconv", "conv1_channels", 2.5, "a whole number"),
    ("threeconv", "conv1_channels", None, "got none"),
    ("mlp", "hidden", ["a"], "a list of whole numbers"),
    ("threeconv", "width", 3, "does not take width"),
])
def test_a_value_that_does_not_convert_is_refused_naming_the_argument(model, name, value, said):
    with pytest.raises(UsageError, match=said) as error:
        arch.model_source(model).typed(name, value)
    assert name in str(error.value)


def test_the_batchnorm_sweep_trains_without_batch_norm_for_false(tmp_path, ablate):
    out = tmp_path / "bn.parquet"
    result = ablate(["sweep", "--model", "threeconv", "--vary", "batchnorm=false,true", *TINY, "--out", out])
    assert result.exit_code == 0, result.output
    runs = _runs(out).set_index("variant")
    assert runs.loc["base", "batchnorm"] == False  # noqa: E712 - the column holds a bool
    assert runs["params"].nunique() == 2  # batch norm adds parameters: the two variants differ


@pytest.mark.parametrize("first, second", [
    ("dropout=0,0.5", "dropout=0.0,0.5"),
    ("batchnorm=0,1", "batchnorm=false,true"),
])
def test_two_spellings_of_one_sweep_resume_to_nothing_new(tmp_path, ablate, first, second):
    out = tmp_path / "s.parquet"
    assert ablate(["sweep", "--model", "threeconv", "--vary", first, *TINY, "--out", out]).exit_code == 0
    before = out.read_bytes()
    result = ablate(["sweep", "--model", "threeconv", "--vary", second, *TINY, "--out", out, "--resume"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == before  # nothing trained, nothing rewritten
    assert len(_runs(out)) == 2


def _resumes_to_nothing_new(ablate, out, first, second, between=lambda: None):
    """`first` writes `out`; `second` (after `between`, which may rewrite a study file), another
    spelling of the same study, resumes it: nothing is trained and the file is left byte for byte."""
    assert ablate([*first, *TINY, "--out", out]).exit_code == 0
    before = out.read_bytes()
    between()
    result = ablate([*second, *TINY, "--out", out, "--resume"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == before


def test_two_spellings_in_a_study_file_resume_to_nothing_new(tmp_path, ablate):
    study = tmp_path / "drop.toml"
    study.write_text('[base]\nmodel = "threeconv"\n[vary]\ndropout = [0, 0.5]\n')
    _resumes_to_nothing_new(ablate, tmp_path / "drop.parquet", ["run", study], ["run", study], lambda: study.write_text(
        '[base]\nmodel = "threeconv"\n[vary]\ndropout = [0.0, 0.5]\n'))


def test_a_default_written_as_a_scalar_is_the_default(tmp_path, ablate):
    """mlp's hidden=512 is its default (512,): one configuration, one run_id."""
    study = tmp_path / "m.toml"
    study.write_text('name = "m"\n[base]\nmodel = "mlp"\nhidden = 512\n[vary]\nlr = [0.01, 0.02]\n')
    _resumes_to_nothing_new(ablate, tmp_path / "m.parquet",
                            ["sweep", "--model", "mlp", "--vary", "lr=0.01,0.02", "--name", "m"], ["run", study])


def test_a_multi_layer_hidden_is_written_in_a_study_file(tmp_path, ablate):
    study = tmp_path / "deep.toml"
    study.write_text('[base]\nmodel = "mlp"\nhidden = [32, 16]\n[vary]\nhidden = [[32, 16], [8]]\n')
    out = tmp_path / "deep.parquet"
    result = ablate(["run", study, *TINY, "--out", out])
    assert result.exit_code == 0, result.output
    runs = _runs(out)
    assert sorted(runs["hidden"]) == ["(32, 16)", "(8,)"]
    assert runs["params"].nunique() == 2


@pytest.mark.parametrize("setting, values", [
    ("scheduler", "none,cosine"), ("augment", "none,flip"), ("permutation", "none,fixed"),
    ("normalization", "none,standard"),
])
def test_the_word_none_is_a_choice_where_the_setting_has_it(setting, values):
    study = studies.get_study("sweep", vary=[f"{setting}={values}"])
    assert study.variants["base"][setting] == "none"


def test_the_word_none_is_no_value_for_an_optional_setting():
    study = studies.get_study("sweep", vary=["lr_gamma=none,0.5"])
    assert study.variants["base"]["lr_gamma"] is None


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["../../escape", "/tmp/abs", "a\0b", "x" * 101, ".hidden", "", "a b", "a/b"])
def test_a_study_file_cannot_name_itself_out_of_the_results_folder(tmp_path, ablate, name, monkeypatch):
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    study = work / "s.toml"
    study.write_text(f'name = {name!r}\n[vary]\nlr = [0.01, 0.02]\n'.replace("\\x00", "\\u0000"))
    result = ablate(["run", study, *TINY])
    assert result.exit_code == 2, result.output
    assert "name" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == \
        [p.relative_to(tmp_path) for p in (tmp_path / "deep", work, study)]


def test_a_plugin_study_name_is_checked_too():
    with pytest.raises(UsageError, match="not allowed"):
        studies.Study("../x", "", variants={"a": {}}, factors=())


def test_an_ordinary_name_passes():
    assert studies.check_name("conv1-sweep_2.b") == "conv1-sweep_2.b"


def test_derived_paths_stay_in_the_results_folder(tmp_path):
    out = tmp_path / "r" / "x.parquet"
    for derived in (results.parts_path(out), results.per_class_path(out), results.models_path(out)):
        assert derived.resolve().is_relative_to(out.parent.resolve())
    with pytest.raises(UsageError, match="results file"):
        results.parts_path(tmp_path / "r" / "..parquet")


def test_a_sweep_is_named_after_its_file(tmp_path, ablate):
    a, b = tmp_path / "res" / "width.parquet", tmp_path / "res" / "lr.parquet"
    assert ablate(["sweep", "--vary", "lr=0.01,0.05", *TINY, "--out", a]).exit_code == 0
    assert ablate(["sweep", "--vary", "lr=0.02,0.1", *TINY, "--out", b, "--name", "rates"]).exit_code == 0
    frame = pd.read_parquet(tmp_path / "res")
    assert set(frame["study"]) == {"width", "rates"}
    result = ablate(["report", a, b, "--format", "csv"])
    assert result.exit_code == 0, result.output
    import io

    summary = pd.read_csv(io.StringIO(result.stdout))
    for study, rows in summary.groupby("study"):  # each paired with its own study's baseline
        assert set(rows["baseline"]) == {"base"}
        assert rows[rows.variant != "base"]["diff"].notna().all()
    assert len(summary[summary.variant == "base"]) == 2 * summary["metric"].nunique()


def test_a_bad_name_option_is_one_line(tmp_path, ablate):
    result = ablate(["sweep", "--vary", "lr=0.01,0.05", *TINY, "--name", "../up", "--out", tmp_path / "a.parquet"])
    assert result.exit_code == 2 and "--name" in result.output
    assert not (tmp_path / "a.parquet").exists()


def test_a_study_file_without_a_name_is_named_after_out_then_itself(tmp_path):
    study = tmp_path / "my study.toml"
    study.write_text(textwrap.dedent("""
        [vary]
        lr = [0.01, 0.02]
    """))
    assert studies.from_toml(study).name == "my_study"
    assert studies.from_toml(study, out=tmp_path / "w.parquet").name == "w"
    assert studies.from_toml(study, name="given", out=tmp_path / "w.parquet").name == "given"


ANNOTATED = '''
from typing import Any, Literal, Optional

from torch import nn


class Net(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, dropout: float = 0, width: Optional[int] = 4,
                 mode: Literal["a", "b"] = "a", pad: int | str = 0, anything: Any = 1, widths: list = [4, 8],
                 count: int = "3"):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.body(x)
'''


@pytest.fixture
def annotated(tmp_path, monkeypatch):
    import sys

    (tmp_path / "annotated.py").write_text(ANNOTATED)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("annotated", None)
    yield arch.model_source("annotated:Net")
    arch.model_source.cache_clear()


def test_a_class_is_typed_by_its_constructors_annotations_and_its_defaults_too(annotated):
    assert annotated.typed("dropout", 0.1) == 0.1 and annotated.knobs["dropout"] == 0.0  # not int: the annotation
    assert annotated.typed("dropout", 0) == annotated.knobs["dropout"]  # given or not: one value, one run_id
    assert annotated.typed("width", "none") is None and annotated.typed("width", "8") == 8
    assert annotated.typed("mode", "b") == "b"
    with pytest.raises(UsageError, match="one of 'a', 'b'"):
        annotated.typed("mode", "c")
    assert annotated.typed("pad", "same") == "same" and annotated.typed("anything", [1]) == (1,)  # several kinds
    assert annotated.knobs["widths"] == (4, 8) and annotated.typed("widths", [16]) == (16,)  # hashable
    assert annotated.knobs["count"] == 3


def test_a_study_file_of_variants_keeps_its_name(tmp_path):
    study = tmp_path / "file.toml"
    study.write_text('name = "mine"\n[variants."dropout+bn"]\nlr = 0.01\n[variants.b]\nlr = 0.02\n')
    assert studies.from_toml(study).name == "mine"
    study.write_text('[variants."dropout+bn"]\nlr = 0.01\n[variants.b]\nlr = 0.02\n')
    assert studies.from_toml(study).name == "file"


def test_an_old_sweep_resumes_under_its_old_name(tmp_path, ablate):
    out = tmp_path / "old.parquet"
    assert ablate(["sweep", "--vary", "lr=0.01,0.05", *TINY, "--out", out, "--name", "sweep"]).exit_code == 0
    result = ablate(["sweep", "--vary", "lr=0.01,0.05", *TINY, "--out", out, "--resume"])
    assert result.exit_code == 2 and "--name sweep resumes it" in result.output
    assert ablate(["sweep", "--vary", "lr=0.01,0.05", *TINY, "--out", out, "--resume", "--name", "sweep"]).exit_code == 0


def test_a_saved_row_gives_back_its_configuration_typed():
    from ablate.results.saved import config_from_row
    from ablate.study.planning import resolve
    from ablate.training.train import RunConfig

    config = resolve(RunConfig(model="mlp").with_fields(hidden=(32, 16), dropout=0.25))
    row = pd.Series({**config.columns(), "run_id": "r"})
    assert resolve(config_from_row(row)) == config
