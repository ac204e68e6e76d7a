"""`ablate report` statistics and `ablate plot` figures, on hand-made and tiny real results."""

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from ablate import compare
from ablate.cli import app
from ablate.results import write_frame

cli = CliRunner()


def fake_results(path, variants=("a", "b"), seeds=(0, 1, 2), epochs=2, study="linearity", extra=None):
    """A study file whose numbers are known: accuracy = 0.5 + 0.1 * variant index + 0.01 * seed."""
    rows = []
    for v, variant in enumerate(variants):
        for seed in seeds:
            for epoch in range(1, epochs + 1):
                for split in ("train", "test"):
                    rows.append({
                        "study": study, "variant": variant, "seed": seed, "epoch": epoch, "split": split,
                        "loss": 1.0 - 0.1 * v - 0.01 * seed * v + 0.1 * (epochs - epoch),
                        "accuracy": 0.5 + 0.1 * v + 0.01 * seed - 0.05 * (epochs - epoch),
                        "lr": 0.1, "seconds": 1.0, "status": "ok", "run_id": f"{variant}{seed}",
                        "dataset": "synthetic", **(extra(v) if extra else {}),
                    })
    write_frame(pd.DataFrame(rows), path)
    return path


def test_interval_by_hand():
    low, high = compare.interval(pd.Series([1.0, 2.0, 3.0]))
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2 df) x std / sqrt(n)
    assert (low, high) == pytest.approx((2 - half, 2 + half))
    assert all(math.isnan(v) for v in compare.interval(pd.Series([1.0])))


def test_paired_difference_over_shared_seeds(tmp_path):
    path = fake_results(tmp_path / "r.parquet")
    frame = pd.read_parquet(path)
    frame = frame[~((frame.variant == "b") & (frame.seed == 2))]  # b lacks seed 2
    summary = compare.summarize(compare.pick_epochs(frame))
    acc = summary[(summary.variant == "b") & (summary.metric == "test_accuracy")].iloc[0]
    assert acc["seeds"] == 2 and acc["diff"] == pytest.approx(0.1)
    assert acc["diff_ci_low"] == pytest.approx(0.1) and acc["significant"]  # the same gap every seed
    loss = summary[(summary.variant == "b") & (summary.metric == "test_loss")].iloc[0]
    assert loss["diff"] == pytest.approx(-0.105)  # seeds 0 and 1: -0.1 and -0.11
    assert not math.isnan(loss["diff_ci_low"])


def test_pick_epochs():
    rows = pd.DataFrame({"run_id": ["r"] * 3, "split": ["test"] * 3, "epoch": [1, 2, 3],
                         "accuracy": [0.2, 0.9, 0.5]})
    assert compare.pick_epochs(rows)["epoch"].tolist() == [3]
    assert compare.pick_epochs(rows, best=True)["epoch"].tolist() == [2]
    assert compare.pick_epochs(rows, epoch=1)["accuracy"].tolist() == [0.2]


def test_report_table_json_csv(tmp_path):
    path = fake_results(tmp_path / "r.parquet")
    table = cli.invoke(app, ["report", str(path)])
    assert table.exit_code == 0, table.output
    assert "baseline 'a'" in table.stdout and "*" in table.stdout and "95 %" in table.stdout
    rows = json.loads(cli.invoke(app, ["report", str(path), "--format", "json", "--baseline", "b"]).stdout)
    a_acc = next(r for r in rows if r["variant"] == "a" and r["metric"] == "test_accuracy")
    assert a_acc["baseline"] == "b" and a_acc["diff"] == pytest.approx(-0.1)
    assert a_acc["mean"] == pytest.approx(0.51) and a_acc["seeds"] == 3
    csv = cli.invoke(app, ["report", str(path), "--format", "csv", "--epoch", "1"]).stdout.splitlines()
    assert csv[0].startswith("study,variant,metric,seeds,mean,std,ci_low,ci_high")
    assert len(csv) == 1 + 2 * 2


def test_report_with_one_seed_says_so(tmp_path):
    path = fake_results(tmp_path / "r.parquet", seeds=(0,))
    result = cli.invoke(app, ["report", str(path)])
    assert result.exit_code == 0 and "no interval can be given" in result.stdout


def test_report_several_files(tmp_path):
    one = fake_results(tmp_path / "one.parquet")
    two = fake_results(tmp_path / "two.parquet", variants=("x", "y"), study="augment")
    result = cli.invoke(app, ["report", str(one), str(two), "--baseline", "y"])
    assert result.exit_code == 0
    assert "baseline 'a'" in result.stdout and "baseline 'y'" in result.stdout


@pytest.mark.parametrize(
    "make,args,message",
    [
        (lambda p: p.write_text("not parquet"), [], "is not a readable Parquet file"),
        (lambda p: write_frame(pd.DataFrame({"x": [1]}), p), [], "is not an ablate study result: no column"),
        (lambda p: fake_results(p), ["--baseline", "zzz"], "unknown baseline variant 'zzz'; allowed: a, b"),
        (lambda p: fake_results(p), ["--epoch", "9"], "the runs have epochs 1 to 2"),
        (lambda p: fake_results(p), ["--epoch", "1", "--best"], "not both"),
        (lambda p: None, [], "no such file"),
    ],
)
def test_report_bad_input(tmp_path, make, args, message):
    path = tmp_path / "r.parquet"
    make(path)
    before = path.read_bytes() if path.exists() else None
    result = cli.invoke(app, ["report", str(path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (path.read_bytes() if path.exists() else None) == before


@pytest.mark.parametrize("kind,suffix", [("curves", ".png"), ("curves", ".svg"), ("sweep", ".pdf"), ("sweep", ".png")])
def test_plot_kinds(tmp_path, kind, suffix):
    path = fake_results(tmp_path / "r.parquet", extra=lambda v: {"conv1_channels": 4 * (v + 1)}, study="conv1")
    out = tmp_path / f"fig{suffix}"
    result = cli.invoke(app, ["plot", str(path), "-o", str(out), "--kind", kind])
    assert result.exit_code == 0, result.output
    head = out.read_bytes()[:8]
    assert head.startswith({".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}[suffix])


def test_plot_sweep_needs_a_numeric_factor(tmp_path):
    path = fake_results(tmp_path / "r.parquet", extra=lambda v: {"activation": ["relu", "none"][v]})
    result = cli.invoke(app, ["plot", str(path), "-o", str(tmp_path / "f.png"), "--kind", "sweep"])
    assert result.exit_code == 2 and "no numeric factor varies" in result.stderr


@pytest.mark.parametrize("args,message", [(["-o", "fig.gif"], "must end in .png, .svg or .pdf"),
                                          (["-o", "fig.png", "--kind", "classes"], "needs"),
                                          (["-o", "fig.png", "--kind", "bars"], "'bars' is not one of")])
def test_plot_bad_input(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    path = fake_results(tmp_path / "r.parquet")
    result = cli.invoke(app, ["plot", str(path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "fig.png").exists()


def test_training_command_draws_its_natural_figure(tmp_path):
    out, figure = tmp_path / "p.parquet", tmp_path / "p.png"
    result = cli.invoke(app, ["permutation", "--dataset", "synthetic", "--limit-train", "200", "--limit-test",
                              "100", "--epochs", "1", "--out", str(out), "--plot", str(figure)])
    assert result.exit_code == 0, result.output
    assert figure.read_bytes().startswith(b"\x89PNG")
    cli_classes = cli.invoke(app, ["plot", str(out), "-o", str(tmp_path / "again.png")])
    assert cli_classes.exit_code == 0
