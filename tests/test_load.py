"""A folder of results is one table, whatever the columns: ablate.load, the docs' recipes for
pandas, polars and DuckDB, and report and plot given a folder."""

import re
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

import ablate
from ablate.results import files as results

DOCS = Path(__file__).parent.parent / "docs" / "results.md"
TINY = ["--dataset", "synthetic", "--limit-train", "100", "--limit-test", "50", "--epochs", "1", "--batch-size", "50",
        "--device", "cpu"]
NETS = """
from torch import nn


class A(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, mult: int = 2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, mult, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(mult, num_classes))

    def forward(self, x):
        return self.body(x)


class B(A):
    def __init__(self, in_channels=3, num_classes=10, width: int = 4, gate: bool = False):
        super().__init__(in_channels, num_classes, width)
"""


def command(args):
    from typer.testing import CliRunner

    from ablate.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """results/ with two studies of two models with different constructor arguments, the
    second with two seeds."""
    from typer.testing import CliRunner

    from ablate import arch
    from ablate.cli import app

    root = tmp_path_factory.mktemp("load")
    (root / "loadnets.py").write_text(NETS)
    here = Path.cwd()
    sys.modules.pop("loadnets", None)
    arch.model_source.cache_clear()
    try:
        import os

        os.chdir(root)
        for args in (["--model", "loadnets:A", "--vary", "mult=1,3", "--out", "results/a.parquet"],
                     ["--model", "loadnets:B", "--vary", "width=2,5", "--seeds", "2", "--out", "results/b.parquet"]):
            result = CliRunner().invoke(app, ["sweep", *TINY, *args])
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(here)
    return root


def test_a_folder_is_one_typed_table_with_every_studys_columns(folder):
    runs = ablate.load(folder / "results")
    a, b = pd.read_parquet(folder / "results" / "a.parquet"), pd.read_parquet(folder / "results" / "b.parquet")
    assert len(runs) == len(a) + len(b) == 4 * 2 + 4 * 2 * 2  # runs x (epochs 0, 1) x (train, test)
    assert list(runs.columns[:len(a.columns)]) == list(a.columns)
    by_study = runs.drop_duplicates("run_id").groupby("study")
    assert sorted(by_study.get_group("a")["mult"]) == [1, 3] and by_study.get_group("a")["width"].isna().all()
    assert sorted(by_study.get_group("b")["width"]) == [2, 2, 5, 5] and by_study.get_group("b")["mult"].isna().all()
    assert set(by_study.get_group("b")["gate"]) == {False}
    assert (str(runs["mult"].dtype), str(runs["width"].dtype), str(runs["gate"].dtype)) == ("Int64", "Int64", "boolean")
    for column in a.columns.intersection(b.columns):  # the rest as in the files
        assert runs[column].dtype == a[column].dtype or a[column].isna().all() or b[column].isna().all(), column
    pd.testing.assert_frame_equal(ablate.load(folder / "results" / "a.parquet"), results.read_results(
        folder / "results" / "a.parquet"))
    classes = ablate.load(folder / "results", per_class=True)
    assert len(classes) == 6 * 10 and set(classes["study"]) == {"a", "b"}


def test_every_recipe_of_the_docs_keeps_every_column(folder, monkeypatch):
    text = DOCS.read_text()
    block = re.search(r"<!-- recipes:[^>]*-->\n```python\n(.*?)```", text, re.S)[1]
    monkeypatch.chdir(folder)
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to skip in this folder
        exec(compile(block, str(DOCS), "exec"), namespace)
    expected = ablate.load(folder / "results")
    tables = {name: value for name, value in namespace.items() if name in ("runs", "in_pandas", "in_polars",
                                                                             "in_duckdb")}
    assert len(tables) == 4
    for name, table in tables.items():
        table = table if isinstance(table, pd.DataFrame) else table.to_pandas()
        assert set(table.columns) == set(expected.columns), (name, set(expected.columns) ^ set(table.columns))
        got = table.drop_duplicates("run_id").set_index("run_id").sort_index()
        want = expected.drop_duplicates("run_id").set_index("run_id").sort_index()
        for column in ("study", "variant", "seed", "mult", "width", "gate"):
            assert got[column].astype(object).where(got[column].notna(), None).tolist() == \
                want[column].astype(object).where(want[column].notna(), None).tolist(), (name, column)
    assert namespace["metadata"]["study"]["name"] == "a"


def test_a_study_still_in_its_parts_is_seen(folder, tmp_path):
    import shutil

    copy = shutil.copytree(folder / "results", tmp_path / "results")
    runs = pd.read_parquet(copy / "b.parquet")
    one = runs[runs["run_id"] == runs["run_id"].iloc[0]]
    parts = results.parts_path(copy / "c.parquet")
    parts.mkdir(parents=True)
    results.write_frame(one.assign(study="c"), parts / f"{one['run_id'].iloc[0]}.parquet")
    loaded = ablate.load(copy)
    assert set(loaded["study"]) == {"a", "b", "c"} and len(loaded[loaded["study"] == "c"]) == len(one)


def test_a_file_of_the_folder_that_is_not_a_study_is_skipped_with_a_warning(folder, tmp_path):
    import shutil

    copy = shutil.copytree(folder / "results", tmp_path / "results")
    results.write_frame(pd.DataFrame({"layer": ["conv1"], "params": [10]}), copy / "counts.parquet")
    with pytest.warns(UserWarning, match=r"skipped '.*counts.parquet' is not an ablate study result: no column"):
        assert set(ablate.load(copy)["study"]) == {"a", "b"}
    report = command(["report", copy])
    assert report.exit_code == 0 and "note: skipped" in report.stderr and "counts.parquet" in report.stderr
    assert re.search(r"\ba: test metrics", report.stdout) and re.search(r"\bb: test metrics", report.stdout)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = command(["report", empty])
    assert result.exit_code == 2 and result.stderr.strip().endswith("holds no ablate study file (*.parquet)")
    result = command(["report", tmp_path / "nothere"])
    assert result.exit_code == 2 and "no such file or folder" in result.stderr


def test_plot_of_a_folder_draws_a_figure_per_study(folder, tmp_path):
    result = command(["plot", folder / "results", "-o", tmp_path / "fig.png"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig-a.png", "fig-b.png"]
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.parquet").write_bytes((folder / "results" / "a.parquet").read_bytes())
    assert command(["plot", one, "-o", tmp_path / "single.png"]).exit_code == 0
    assert (tmp_path / "single.png").stat().st_size > 0
