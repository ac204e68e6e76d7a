"""`ablate report` statistics and `ablate plot` figures, on hand-made and tiny real results."""

import io
import json
import math
import re

import matplotlib
import pandas as pd
import pytest

from ablate.reporting import compare


def test_interval_by_hand():
    low, high = compare.interval(pd.Series([1.0, 2.0, 3.0]))
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2 df) x std / sqrt(n)
    assert (low, high) == pytest.approx((2 - half, 2 + half))
    assert all(math.isnan(v) for v in compare.interval(pd.Series([1.0])))


def test_paired_difference_over_shared_seeds(tmp_path, fake_study):
    frame = pd.read_parquet(fake_study(tmp_path / "r.parquet"))
    frame = frame[~((frame.variant == "beta") & (frame.seed == 2))]  # beta lacks seed 2
    summary = compare.summarize(compare.pick_epochs(frame))
    acc = summary[(summary.variant == "beta") & (summary.metric == "test_accuracy")].iloc[0]
    assert acc["seeds"] == 2 and acc["diff"] == pytest.approx(10.0) and acc["unit"] == "%"  # points of %
    assert acc["diff_ci_low"] == pytest.approx(10.0) and acc["significant"]  # the same gap every seed
    loss = summary[(summary.variant == "beta") & (summary.metric == "test_loss")].iloc[0]
    assert loss["diff"] == pytest.approx(-0.105)  # seeds 0 and 1: -0.1 and -0.11
    assert not math.isnan(loss["diff_ci_low"])


def test_a_difference_within_the_noise_is_not_significant(tmp_path, fake_study):
    # beta - alpha per seed: 0.1 + (-0.3, +0.1, +0.1) = (-0.2, 0.2, 0.2): mean 0.0667,
    # std 0.231, interval 0.0667 -+ 4.303 x 0.231 / sqrt(3) = [-0.507, 0.640]
    noise = lambda v, seed: v * (-0.3 if seed == 0 else 0.1)  # noqa: E731
    frame = pd.read_parquet(fake_study(tmp_path / "r.parquet", noise=noise))
    summary = compare.summarize(compare.pick_epochs(frame))
    acc = summary[(summary.variant == "beta") & (summary.metric == "test_accuracy")].iloc[0]
    assert acc["diff"] == pytest.approx(100 * 0.2 / 3)  # in points
    assert (acc["diff_ci_low"], acc["diff_ci_high"]) == pytest.approx((-50.7, 64.0), abs=0.1)
    assert not acc["significant"]
    assert not summary[summary.variant == "alpha"]["significant"].any()  # the baseline itself


def test_pick_epochs():
    rows = pd.DataFrame({"run_id": ["r"] * 3, "split": ["test"] * 3, "epoch": [1, 2, 3],
                         "accuracy": [0.2, 0.9, 0.5]})
    assert compare.pick_epochs(rows)["epoch"].tolist() == [3]
    assert compare.pick_epochs(rows, best=True)["epoch"].tolist() == [2]
    assert compare.pick_epochs(rows, epoch=1)["accuracy"].tolist() == [0.2]


def _row(stdout: str, variant: str) -> str:
    return next(line for line in stdout.splitlines() if line.strip().startswith(variant + " "))


def _deltas(row: str) -> str:
    """A report row up to its last Δ cell (the task's metric's), without the seeds needed, the
    seeds for 80 % power and the resolvable difference after it."""
    head = row[:row.rindex("±")].rstrip()  # the resolvable difference: ±0.52
    for _ in range(2):  # seeds for 80 % power, then seeds needed: 7, or not resolvable
        head = head.removesuffix("not resolvable").rstrip() if head.endswith("not resolvable") else \
            head.rsplit(None, 1)[0]
    return head


def test_report_table_marks_significant_differences_only(tmp_path, ablate, fake_study):
    clear = fake_study(tmp_path / "clear.parquet")
    table = ablate(["report", clear])
    assert table.exit_code == 0, table.output
    assert "baseline 'alpha'" in table.stdout and "95 %" in table.stdout
    assert _deltas(_row(table.stdout, "beta")).endswith("*")  # +10 pt every seed
    noisy = fake_study(tmp_path / "noisy.parquet", noise=lambda v, seed: v * (-0.3 if seed == 0 else 0.1))
    beta = _row(ablate(["report", noisy]).stdout, "beta")
    assert "[" in beta and not _deltas(beta).endswith("*")


def test_report_json_and_csv(tmp_path, ablate, fake_study):
    path = fake_study(tmp_path / "r.parquet")
    rows = json.loads(ablate(["report", path, "--format", "json", "--baseline", "beta"]).stdout)
    a_acc = next(r for r in rows if r["variant"] == "alpha" and r["metric"] == "test_accuracy")
    assert a_acc["baseline"] == "beta" and a_acc["diff"] == pytest.approx(-10.0)  # percentage points
    assert a_acc["mean"] == pytest.approx(51.0) and a_acc["seeds"] == 3 and a_acc["unit"] == "%"
    csv = ablate(["report", path, "--format", "csv", "--epoch", "1"]).stdout.splitlines()
    assert csv[0].startswith("study,variant,metric,unit,seeds,mean,std,ci_low,ci_high")
    assert len(csv) == 1 + 2 * 2


def test_report_with_one_seed_says_so(tmp_path, ablate, fake_study):
    result = ablate(["report", fake_study(tmp_path / "r.parquet", seeds=(0,))])
    assert result.exit_code == 0 and "no interval can be given" in result.stdout


def test_report_several_files(tmp_path, ablate, fake_study):
    one = fake_study(tmp_path / "one.parquet")
    two = fake_study(tmp_path / "two.parquet", variants=("x", "y"), study="augment")
    result = ablate(["report", one, two, "--baseline", "y"])
    assert result.exit_code == 0
    assert "baseline 'alpha'" in result.stdout and "baseline 'y'" in result.stdout


def test_report_never_averages_runs_of_different_configurations(tmp_path, ablate, fake_study):
    one = fake_study(tmp_path / "one.parquet", config=lambda v: {"epochs": 1})
    two = fake_study(tmp_path / "two.parquet", config=lambda v: {"epochs": 2},
                     noise=lambda v, seed: 0.2)  # the 2-epoch runs are 20 pt better
    result = ablate(["report", one, two, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {(r["variant"], r["metric"]): r for r in json.loads(result.stdout)}
    assert rows[("alpha [epochs=1]", "test_accuracy")]["mean"] == pytest.approx(51.0)
    assert rows[("alpha [epochs=2]", "test_accuracy")]["mean"] == pytest.approx(71.0)
    assert rows[("alpha [epochs=2]", "test_accuracy")]["seeds"] == 3
    assert "holds runs of 2 configurations (differing in epochs)" in result.stderr


def _svg_texts(path) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())


@pytest.fixture
def svg_text(monkeypatch):
    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")  # text stays text in the SVG


def test_plot_curves_draws_each_variant_and_split(tmp_path, ablate, fake_study, svg_text):
    path = fake_study(tmp_path / "r.parquet", epochs=3)
    out = tmp_path / "fig.svg"
    result = ablate(["plot", path, "-o", out, "--kind", "curves"])
    assert result.exit_code == 0, result.output
    texts = _svg_texts(out)
    for label in ("alpha", "beta", "train", "test", "epoch", "accuracy (%)", "cross-entropy loss"):
        assert label in texts, label
    # 2 variants x 2 splits x 2 panels, each a line of 3 points
    assert out.read_text().count('id="line2d_') >= 8


def test_plot_sweep_marks_the_lowest_test_loss(tmp_path, ablate, fake_study, svg_text):
    path = fake_study(tmp_path / "r.parquet", variants=("2", "4", "8"), study="conv1",
                      config=lambda v: {"conv1_channels": 2 ** (v + 1)}, factors=("conv1_channels",), plot="sweep")
    out = tmp_path / "fig.svg"
    assert ablate(["plot", path, "-o", out]).exit_code == 0  # sweep: the study's natural figure
    texts = _svg_texts(out)
    assert "conv1 channels" in texts and "lowest test loss: 8" in texts  # loss falls with the index


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_plot_formats(tmp_path, ablate, fake_study, suffix, magic):
    out = tmp_path / "deeper" / f"fig{suffix}"
    assert ablate(["plot", fake_study(tmp_path / "r.parquet"), "-o", out]).exit_code == 0
    assert out.read_bytes().startswith(magic) and out.stat().st_size > 10_000


def test_training_command_draws_its_natural_figure(tmp_path, ablate, tiny, svg_text):
    out, figure = tmp_path / "p.parquet", tmp_path / "p.svg"
    result = ablate(["permutation", *tiny, "--out", out, "--plot", figure])
    assert result.exit_code == 0, result.output
    texts = _svg_texts(figure)
    assert "test accuracy (%)" in texts and "class 9" in texts  # per-class bars
    assert {"original", "fixed", "fresh"} <= set(texts)


def test_plot_variants_shows_each_step_in_order(tmp_path, ablate, fake_study, svg_text):
    path = fake_study(tmp_path / "r.parquet", variants=("baseline", "+standardize", "+crop-flip"), study="ladder",
                      plot="variants")
    out = tmp_path / "fig.svg"
    assert ablate(["plot", path, "-o", out]).exit_code == 0  # variants: the ladder's natural figure
    texts = _svg_texts(out)
    assert "final test accuracy (%)" in texts
    labels = [t for t in texts if t in ("baseline", "+standardize", "+crop-flip")]
    assert labels == ["baseline", "+standardize", "+crop-flip"]
    assert {"51.0", "61.0", "71.0"} <= set(texts)  # the means over seeds 0, 1, 2 (50, 60, 70 + 1)


def test_an_interval_beyond_the_metrics_range_is_clipped_marked_and_kept_raw_in_the_csv(tmp_path, ablate, fake_study):
    # two seeds far apart: accuracy 0.5 +- 0.4 and a loss near 0 give t-intervals beyond 0-100 % and below 0
    path = fake_study(tmp_path / "r.parquet", seeds=(0, 1), noise=lambda v, seed: 0.4 if seed else -0.4)
    frame = pd.read_csv(io.StringIO(ablate(["report", path, "--format", "csv"]).stdout))
    acc = frame[frame.metric == "test_accuracy"].set_index("variant")
    assert (acc["unit"] == "%").all() and acc.loc["alpha", "mean"] == pytest.approx(50.5)
    assert acc.loc["alpha", "ci_low_raw"] < 0 and acc.loc["alpha", "ci_low"] == 0
    assert acc.loc["alpha", "ci_high_raw"] > 100 and acc.loc["alpha", "ci_high"] == 100
    assert acc["clipped"].all()
    loss = frame[frame.metric == "test_loss"].set_index("variant")
    assert (loss["ci_low"] >= 0).all() and (loss["ci_low_raw"] == loss["ci_low"]).all()  # a loss within range
    table = ablate(["report", path])
    assert "[0.00, 100.00]†" in table.stdout
    assert "† the 95 % t-interval crosses the range the metric can take (accuracy 0-100 %)" in \
        " ".join(table.stdout.split())
    unclipped = pd.read_csv(io.StringIO(ablate(["report", fake_study(tmp_path / "s.parquet"), "--format",
                                                "csv"]).stdout))
    assert not unclipped["clipped"].any() and "†" not in ablate(["report", tmp_path / "s.parquet"]).stdout
