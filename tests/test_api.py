"""ablate from Python: ablate.run is the command (the same checks, files and numbers),
ablate.report its summary, dir(ablate) the public API."""

import io

import pandas as pd
import pytest

import ablate
from ablate import UsageError, api

TINY = dict(dataset="synthetic", limit_train=120, limit_test=60, epochs=1, batch_size=60, device="cpu", seeds=2)
TINY_ARGS = ["--dataset", "synthetic", "--limit-train", "120", "--limit-test", "60", "--epochs", "1", "--batch-size",
             "60", "--device", "cpu", "--seeds", "2"]


def test_run_is_the_command_same_files_same_numbers(tmp_path, ablate):  # `ablate`: the CLI fixture
    frame = api.run("conv1", channels=[2, 4], out=tmp_path / "api.parquet", **TINY)
    result = ablate(["conv1", "--channels", "2,4", *TINY_ARGS, "--out", tmp_path / "cli.parquet"])
    assert result.exit_code == 0, result.output
    command = pd.read_parquet(tmp_path / "cli.parquet")
    assert len(frame) == len(command) == 2 * 2 * 2 * 2  # variants x seeds x epochs (0, 1) x splits
    pd.testing.assert_frame_equal(frame.drop(columns="seconds"), command.drop(columns="seconds"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "_per_class" / "api.parquet"),
                                  pd.read_parquet(tmp_path / "_per_class" / "cli.parquet"))
    summary = api.report(tmp_path / "api.parquet")
    csv = ablate(["report", tmp_path / "cli.parquet", "--format", "csv"])
    pd.testing.assert_frame_equal(summary.reset_index(drop=True), pd.read_csv(
        io.StringIO(csv.stdout), dtype={"variant": str, "baseline": str}).fillna({"unit": ""}), check_dtype=False)
    assert list(summary["variant"].unique()) == ["2", "4"] and (summary["seeds"] == 2).all()
    again = api.run("conv1", channels=[2, 4], out=tmp_path / "api.parquet", resume=True, **TINY)
    pd.testing.assert_frame_equal(again, frame)  # resumed: nothing left to train, the same runs


@pytest.mark.parametrize("study, options, args", [
    ("linearity", dict(epochs=0), ["--epochs", "0"]),
    ("linearity", dict(dataset="imagenet"), ["--dataset", "imagenet"]),
    ("linearity", dict(dataset="synthetic", lr=-1.0), ["--dataset", "synthetic", "--lr", "-1.0"]),
    ("conv1", dict(dataset="synthetic", channels="4,x"), ["--dataset", "synthetic", "--channels", "4,x"]),
    ("sweep", dict(dataset="synthetic", vary={"widht": [1, 2]}), ["--dataset", "synthetic", "--vary", "widht=1,2"]),
])
def test_bad_input_raises_the_commands_message(tmp_path, monkeypatch, ablate, study, options, args):
    monkeypatch.chdir(tmp_path)
    result = ablate([study, *args])
    assert result.exit_code == 2
    message = result.stderr.strip().split(": error: ", 1)[1]
    with pytest.raises(UsageError) as raised:
        api.run(study, **options)
    assert str(raised.value).endswith(message)
    assert list(tmp_path.iterdir()) == []  # nothing written, as by the command


def test_options_are_the_commands_by_their_python_names():
    assert api.command_line("sweep", dict(vary={"lr": [0.1, 0.2], "batch_size": 32}, grid=True, pack=False,
                                          save_models=True, resume=False, epochs=3, out="r/s.parquet")) == \
        ["sweep", "--vary=lr=0.1,0.2", "--vary=batch_size=32", "--grid", "--no-pack", "--save-models", "--epochs=3",
         "--out=r/s.parquet"]
    assert api.command_line("conv1", dict(channels=(2, 4), pack="auto", model=None)) == ["conv1", "--channels=2,4"]
    assert api.command_line("run", dict(file="study.toml", name="n")) == ["run", "--name=n", "study.toml"]
    with pytest.raises(ablate.UsageError, match=r"unknown option of `ablate linearity` 'epoch' \(did you mean "
                                                r"'epochs'"):
        api.command_line("linearity", dict(epoch=3))
    with pytest.raises(ablate.UsageError, match=r"unknown command 'linearty' \(did you mean 'linearity'"):
        api.run("linearty")
    with pytest.raises(ablate.UsageError, match="save_models is True or False"):
        api.command_line("linearity", dict(save_models="yes"))


def test_dir_lists_the_public_api_and_each_name_resolves():
    names = dir(ablate)
    assert {"run", "load", "report", "register_study", "Study", "UsageError", "__version__"} <= set(names)
    assert names == sorted(ablate.__all__)
    assert (ablate.run, ablate.report, ablate.load) == (api.run, api.report, ablate.results.folder.load)
    for name in names:
        assert getattr(ablate, name) is not None, name


def test_a_dry_run_returns_nothing_and_writes_nothing(tmp_path, capsys):
    assert api.run("linearity", dry_run=True, out=tmp_path / "d.parquet", **TINY) is None
    assert "to train" in capsys.readouterr().out and list(tmp_path.iterdir()) == []


def test_the_worked_example_of_the_docs_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    text = (Path(__file__).parent.parent / "docs" / "python.md").read_text().split("<!-- example:")[1]
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    first = blocks[0].replace('epochs=10, dataset="fashion-mnist", seeds=3', ", ".join(
        f"{k}={v!r}" for k, v in TINY.items()))
    assert first != blocks[0]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(first + blocks[1], "docs/python.md", "exec"), namespace)
    assert set(namespace["every"]["study"]) == {"linearity"} and len(namespace["curves"].columns) == 3
    accuracy = namespace["summary"][namespace["summary"]["metric"] == "test_accuracy"]
    assert list(accuracy["variant"]) == ["relu", "linear", "linear-wide"]
