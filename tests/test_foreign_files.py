"""Files that are not quite ablate's (key columns only, wrong types, no rows, only failed runs,
a broken per-class file) get one line saying what is wrong from every reader: `report`, each
`plot --kind`, `--resume`; and a significant difference is flagged whichever its sign."""

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from ablate.reporting import compare, report
from ablate.results import files as results
from ablate.results.files import per_class_path, read_metadata, write_frame
from conftest import TINY, late_failing_model

KEYS = ["study", "variant", "seed", "epoch", "split", "run_id", "config_id"]


def _rewrite(source, path, change, same_schema=False):
    """`source`'s rows through `change`, written to `path` with its metadata, and its schema
    when `same_schema` (else the types are what `change` made them)."""
    frame = change(pd.read_parquet(source))
    write_frame(frame, path, read_metadata(source), pq.read_schema(source).remove_metadata() if same_schema else None)
    return path


def _failed(frame: pd.DataFrame) -> pd.DataFrame:
    """Each run as a failed run is saved: one row, its error, no epoch and no numbers."""
    return frame.drop_duplicates("run_id").assign(
        epoch=None, split=None, loss=None, accuracy=None, lr=None, seconds=None, latent_corr=None,
        status="failed", error="RuntimeError: out of memory")


def _conflicting(frame):
    again = frame.head(1).assign(loss=frame["loss"].iloc[0] + 1)
    return pd.concat([frame, again], ignore_index=True)


# name: (how the file is made from a good one, what every reader says)
BROKEN = {
    "onlykeys": (lambda f: f[KEYS], "'onlykeys.parquet' is not an ablate study result: no column accuracy, loss, "
                                    "status (its readers need study, variant, seed, epoch, split, run_id"),
    "nostatus": (lambda f: f.drop(columns="status"), "no column status (its readers need"),
    "strseed": (lambda f: f.assign(seed=f["seed"].astype(str)), "seed holds text where ablate writes whole numbers"),
    "strloss": (lambda f: f.assign(loss=f["loss"].astype(str)), "loss holds text where ablate writes numbers"),
    "strnumbers": (lambda f: f.assign(**{c: f[c].astype(str) for c in ("loss", "accuracy", "lr", "seconds")}),
                   "loss holds text where ablate writes numbers; accuracy holds text where ablate writes numbers; "
                   "lr holds text"),
    "halfseed": (lambda f: f.assign(seed=f["seed"] + 0.5), "seed holds numbers that are not whole (0.5)"),
    "boolsplit": (lambda f: f.assign(split=f["split"] == "test"), "split holds true or false where ablate writes text"),
    "nanseed": (lambda f: f.assign(seed=f["seed"].astype(float).where(f["seed"] != 1)),
                "'nanseed.parquet' is not an ablate study result: seed is empty in 8 of 24 rows; ablate fills study"),
    "noepoch": (lambda f: f.assign(epoch=f["epoch"].astype(float).where(f["epoch"] != 1)),
                "epoch is empty in 12 rows of finished runs"),
    "badstatus": (lambda f: f.assign(status="running"),
                  "column status holds 'running'; ablate writes ok, diverged or failed"),
    "conflicting": (_conflicting, "'conflicting.parquet' holds rows that disagree: 1 (run_id, epoch, split) has "
                                  "two rows with different values (the first: run "),
    "norows": (lambda f: f.iloc[:0], "'norows.parquet' holds no run (no rows): nothing to draw"),
    "onlyfailed": (_failed, "'onlyfailed.parquet' holds no finished run: 6 failed (the first, alpha seed 0: "
                            "RuntimeError: out of memory); fix the cause and run the study again with --resume"),
}
READERS = {
    "report": ["report", "{f}"],
    "curves": ["plot", "{f}", "-o", "fig.png", "--kind", "curves"],
    "sweep": ["plot", "{f}", "-o", "new/fig.png", "--kind", "sweep"],
    "classes": ["plot", "{f}", "-o", "fig.png", "--kind", "classes"],
    "variants": ["plot", "{f}", "-o", "fig.svg", "--kind", "variants"],
    "natural": ["plot", "{f}", "-o", "fig.pdf"],
    "resume": ["linearity", *TINY, "--out", "{f}", "--resume"],
}
# what report says where plot names the file (it is given several), and where the file is fine to resume
REPORT_SAYS = {"norows": "the file holds no run (no rows): nothing to report",
               "onlyfailed": "study linearity holds no finished run: 6 failed (the first, alpha seed 0: "}
RESUMABLE = {"norows", "onlyfailed"}  # no run to keep; onlyfailed is refused for its settings (fake_study's)


def snapshot(root):
    return {p: p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


def _one_line_refusal(result, message):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", BROKEN)
def test_every_reader_refuses_a_broken_file_in_one_line(tmp_path, monkeypatch, ablate, fake_study, name, reader):
    if reader == "resume" and name in RESUMABLE:
        pytest.skip("resumable: tested below")
    change, message = BROKEN[name]
    monkeypatch.chdir(tmp_path)
    good = fake_study(tmp_path / "good" / "good.parquet")
    _rewrite(good, tmp_path / f"{name}.parquet", change)
    if reader == "report":
        message = REPORT_SAYS.get(name, message)
    before = snapshot(tmp_path)
    result = ablate([a.format(f=f"{name}.parquet") for a in READERS[reader]])
    _one_line_refusal(result, message)
    assert snapshot(tmp_path) == before  # no figure, no folder, no lock, the file as it was


def test_a_file_that_only_has_failed_runs_is_resumed_by_training_them(tmp_path, ablate, numbers):
    whole = tmp_path / "whole.parquet"
    assert ablate(["linearity", *TINY, "--out", whole]).exit_code == 0
    failed = _rewrite(whole, tmp_path / "failed.parquet", _failed, same_schema=True)
    result = ablate(["linearity", *TINY, "--out", failed, "--resume"])
    assert result.exit_code == 0, result.output
    assert "failed" not in result.stdout and "nan" not in result.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(whole)[numbers], pd.read_parquet(failed)[numbers],
                                  check_exact=True)
    assert len(pd.read_parquet(per_class_path(failed))) == len(pd.read_parquet(per_class_path(whole)))


def test_a_file_with_no_rows_is_resumed_from_scratch(tmp_path, ablate):
    whole = tmp_path / "whole.parquet"
    assert ablate(["linearity", *TINY, "--out", whole]).exit_code == 0
    empty = _rewrite(whole, tmp_path / "empty.parquet", lambda f: f.iloc[:0], same_schema=True)
    result = ablate(["linearity", *TINY, "--out", empty, "--resume"])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(empty)["run_id"].nunique() == 3


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A real tiny study whose variant `linear` failed: its one run is one row with its error."""
    from typer.testing import CliRunner

    from ablate.cli import app

    root = tmp_path_factory.mktemp("mixed")
    whole = root / "whole.parquet"
    result = CliRunner().invoke(app, ["linearity", *TINY, "--out", str(whole)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(whole)
    rows = pd.concat([frame[frame.variant != "linear"], _failed(frame[frame.variant == "linear"])])
    path = root / "mixed.parquet"
    write_frame(rows, path, read_metadata(whole), pq.read_schema(whole).remove_metadata())
    per_class_path(path).write_bytes(per_class_path(whole).read_bytes())
    return path


def test_report_leaves_failed_runs_out(mixed, ablate):
    result = ablate(["report", mixed])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert any(line.startswith("relu ") for line in lines) and any(line.startswith("linear-wide ") for line in lines)
    assert not any(line.startswith("linear ") for line in lines) and "nan" not in result.stdout
    rows = json.loads(ablate(["report", mixed, "--format", "json"]).stdout)
    assert {r["variant"] for r in rows} == {"relu", "linear-wide"}


@pytest.mark.parametrize("kind", ["curves", "variants", "classes"])
def test_plot_leaves_failed_runs_out_and_says_so(mixed, ablate, tmp_path, kind):
    result = ablate(["plot", mixed, "-o", tmp_path / "fig.png", "--kind", kind])
    assert result.exit_code == 0, result.output
    assert "note: 1 failed run is left out" in result.stderr
    assert (tmp_path / "fig.png").stat().st_size > 1000


def _text(table) -> str:
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_the_study_summary_counts_failed_runs_and_never_averages_them(mixed):
    text = _text(report.study_summary(pd.read_parquet(mixed), ("activation", "fc1_features")))
    assert "linearity: after 2 epochs, 1 seed" in text
    assert "linear (failed: 1 run)" in text and "nan" not in text
    assert "1 of 3 runs failed (the first: RuntimeError: out of memory) and is left out" in text
    everything_failed = _failed(pd.read_parquet(mixed))
    text = _text(report.study_summary(everything_failed, ("activation",)))
    assert "linearity: no run finished" in text and "nan" not in text and "0 seed" not in text
    assert "3 of 3 runs failed" in text


@pytest.mark.parametrize("change,message", [
    (lambda f: f.drop(columns="class_name"), "is not ablate's per-class rows: no column class_name"),
    (lambda f: f.assign(accuracy=f["accuracy"].astype(str)), "accuracy holds text where ablate writes numbers"),
    (lambda f: f.assign(run_id="elsewhere"), "--kind classes: the per-class rows beside"),
    (None, "is not a readable Parquet file (ArrowInvalid); move it away to go on"),
])
def test_a_broken_per_class_file(mixed, ablate, tmp_path, change, message):
    path = tmp_path / "study.parquet"
    path.write_bytes(mixed.read_bytes())
    per_class = per_class_path(path)
    per_class.parent.mkdir()
    if change is None:
        per_class.write_bytes(b"PAR1 not parquet")
    else:
        write_frame(change(pd.read_parquet(per_class_path(mixed))), per_class)
    before = snapshot(tmp_path)
    _one_line_refusal(ablate(["plot", path, "-o", tmp_path / "out" / "fig.png", "--kind", "classes"]), message)
    assert snapshot(tmp_path) == before


def test_what_ablate_writes_and_other_tools_may_make_of_it_is_read(tmp_path, fake_study, ablate):
    good = pd.read_parquet(fake_study(tmp_path / "good.parquet"))
    # null-typed accuracy (pandas writes an all-None column so: an autoencoder's), categorical strings,
    # exact duplicate rows, integers stored as floats
    frame = pd.concat([good, good]).assign(accuracy=None, variant=lambda f: f["variant"].astype("category"),
                                           seed=lambda f: f["seed"].astype(float))
    path = tmp_path / "other.parquet"
    frame.to_parquet(path)
    assert pq.read_schema(path).field("accuracy").type == pa.null()
    read = results.read_results(path)
    assert read["accuracy"].dtype == float and read["variant"].tolist() == frame["variant"].astype(str).tolist()
    result = ablate(["report", path, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["metric"] for r in rows} == {"test_loss"} and all(r["seeds"] == 3 for r in rows)
    good.set_index("run_id").to_parquet(path)  # an index of its own: a column again
    assert results.read_results(path)["run_id"].tolist() == good["run_id"].tolist()


def test_metadata_that_is_not_ablates(tmp_path, fake_study, ablate):
    path = fake_study(tmp_path / "r.parquet", plot="bars")
    result = ablate(["plot", path, "-o", tmp_path / "fig.png"])
    _one_line_refusal(result, "names its figure 'bars', which ablate does not draw: give --kind (curves, sweep")
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"ablate": b"{not json"}), path)
    result = ablate(["plot", path, "-o", tmp_path / "fig.png"])  # as if it had none: curves
    assert result.exit_code == 0, result.output


def test_report_when_every_run_diverged(tmp_path, fake_study, ablate):
    path = fake_study(tmp_path / "r.parquet")
    _rewrite(path, path, lambda f: f.assign(status="diverged", loss=float("nan"), accuracy=float("nan")))
    result = ablate(["report", path])
    assert result.exit_code == 0, result.output
    assert "nan" not in result.stdout and "diverged" in result.stdout
    _one_line_refusal(ablate(["report", path, "--best"]), "--best: no run has a test loss to choose its epoch by")


# ---------------------------------------------------------------- significance, whichever the sign


def test_a_clearly_lower_value_is_as_significant_as_a_clearly_higher_one(tmp_path, fake_study):
    # beta - alpha per seed 0, 1, 2: test loss -0.10, -0.11, -0.12 (lower), test accuracy +0.1 (higher)
    frame = pd.read_parquet(fake_study(tmp_path / "r.parquet"))
    summary = compare.summarize(compare.pick_epochs(frame)).set_index(["variant", "metric"])
    lower, higher = summary.loc[("beta", "test_loss")], summary.loc[("beta", "test_accuracy")]
    assert lower["diff"] == pytest.approx(-0.11) and lower["diff_ci_high"] < 0
    assert higher["diff"] == pytest.approx(10.0) and higher["diff_ci_low"] > 0  # points of %
    assert lower["significant"] and higher["significant"]
    # from beta's side: alpha's loss is higher, its accuracy lower
    summary = compare.summarize(compare.pick_epochs(frame), "beta").set_index(["variant", "metric"])
    assert summary.loc[("alpha", "test_loss"), "diff_ci_low"] > 0 and summary.loc[("alpha", "test_loss"), "significant"]
    assert summary.loc[("alpha", "test_accuracy"), "diff_ci_high"] < 0
    assert summary.loc[("alpha", "test_accuracy"), "significant"]


def test_the_report_table_stars_both_signs(tmp_path, fake_study, ablate):
    path = fake_study(tmp_path / "r.parquet")
    for baseline, variant in (("alpha", "beta"), ("beta", "alpha")):
        result = ablate(["report", path, "--baseline", baseline])
        assert result.exit_code == 0, result.output
        row = next(line for line in result.stdout.splitlines() if line.strip().startswith(variant + " "))
        assert row.count("] *") == 2, row  # Δ loss and Δ accuracy, one lower and one higher


LATE_FAILING_MODEL = late_failing_model('out of patience')


def test_a_study_whose_runs_fail_prints_a_summary_that_says_so(tmp_path, ablate, monkeypatch):
    (tmp_path / "latenets.py").write_text(LATE_FAILING_MODEL)
    monkeypatch.chdir(tmp_path)
    study = ["sweep", *TINY, "--model", "latenets:Net"]
    result = ablate([*study, "--vary", "explode=False,True", "--out", "some.parquet"])
    assert result.exit_code == 0, result.output
    assert "explode=True (failed: 1 run)" in result.stdout and "nan" not in result.stdout
    assert "1 of 2 runs failed (the first: ValueError: out of patience) and is left out" in result.stdout
    assert (pd.read_parquet("some.parquet").query("variant == 'explode=True'")["status"] == "failed").all()
    reported = ablate(["report", "some.parquet"])
    assert reported.exit_code == 0 and "base " in reported.stdout and "explode=True" not in reported.stdout

    result = ablate([*study, "--vary", "explode=True", "--out", "all.parquet"])  # one variant, base, fails
    assert result.exit_code == 0, result.output
    assert "all: no run finished" in result.stdout and "base (failed: 1 run)" in result.stdout  # named after --out
    assert "after nan" not in result.stdout and "nan" not in result.stdout
    _one_line_refusal(ablate(["report", "all.parquet"]), "study all holds no finished run: 1 failed (the first, "
                                                          "base seed 0: ValueError: out of patience)")
    _one_line_refusal(ablate(["plot", "all.parquet", "-o", "fig.png"]), "'all.parquet' holds no finished run")


def test_report_says_which_failed_runs_it_leaves_out(tmp_path, ablate, fake_study):
    path = fake_study(tmp_path / "s.parquet")
    frame = pd.read_parquet(path)
    beta = frame["variant"] == "beta"
    failed = frame[beta & (frame["seed"] == 2)].drop_duplicates("run_id").assign(
        epoch=None, split=None, loss=None, accuracy=None, status="failed", error="RuntimeError: boom")
    frame = pd.concat([frame[~(beta & (frame["seed"] == 2))], failed], ignore_index=True)
    frame.to_parquet(path)
    result = ablate(["report", path])
    assert result.exit_code == 0, result.output
    assert "note: linearity: 1 failed run left out (beta; the first: RuntimeError: boom); --resume" in result.stderr
