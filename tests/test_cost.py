"""Cost beside the score: every run's training FLOPs (from the counter) and wall time, and the
cost figure with the variants no other beats on both marked."""

import pandas as pd
import pytest

from ablate import count
from ablate.reporting import plot
from ablate.study.planning import resolve
from ablate.training.train import RunConfig, build_model

TINY = ["--dataset", "synthetic", "--limit-train", "100", "--limit-test", "50", "--epochs", "2", "--batch-size", "50",
        "--device", "cpu"]


def test_train_flops_are_the_counters_forward_and_backward_times_the_images_trained(ablate, tmp_path):
    out = tmp_path / "t.parquet"
    result = ablate(["conv1", "--channels", "4,8", *TINY, "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    for width, rows in frame.groupby("conv1_channels"):
        config = resolve(RunConfig(model_args=(("conv1_channels", int(width)),), dataset="synthetic"))
        counts = count.count_model(build_model(config, 3, 10, 32), (3, 32, 32), training=True)
        per_image = counts.flops + counts.backward_flops
        assert counts.backward_flops > counts.flops  # the backward is counted, and costs more
        assert (rows["train_flops"] == per_image * 100 * rows["epoch"]).all()  # 100 images an epoch
    assert frame["seconds"].gt(0).all()


def test_a_probe_is_charged_only_the_backward_it_runs(ablate, tmp_path):
    from ablate.execution.checks import training_flops

    config = resolve(RunConfig(dataset="synthetic"))
    probe = resolve(RunConfig(dataset="synthetic", trainable="head"))
    assert training_flops(probe, (3, 32, 32), 10) < training_flops(config, (3, 32, 32), 10)


def test_the_pareto_front_is_what_no_other_beats_on_both():
    points = {"cheap": (1.0, 80.0), "dear": (10.0, 90.0), "worse": (5.0, 79.0), "tie": (1.0, 80.0),
              "same-cost-better": (10.0, 91.0)}
    assert plot.pareto(points) == {"cheap", "tie", "same-cost-better"}
    assert plot.pareto({"a": (1.0, 0.5), "b": (2.0, 0.2)}, higher=False) == {"a", "b"}  # a loss: lower is better
    assert plot.pareto({"a": (1.0, 0.5), "b": (2.0, 0.7)}, higher=False) == {"a"}


def test_the_cost_figure_and_its_refusals(fake_study, ablate, tmp_path):
    path = fake_study(tmp_path / "s.parquet", variants=("a", "b", "c"))
    out = ablate(["plot", path, "-o", tmp_path / "c.png", "--kind", "cost"])  # no train_flops: a file of before
    assert out.exit_code == 2 and "--cost seconds" in out.output and not (tmp_path / "c.png").exists()
    out = ablate(["plot", path, "-o", tmp_path / "c.png", "--kind", "cost", "--cost", "seconds"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "c.png").stat().st_size > 10_000
    out = ablate(["plot", path, "-o", tmp_path / "c.png", "--kind", "cost", "--cost", "joules"])
    assert out.exit_code == 2 and "joules" in out.output


def test_a_runs_seconds_share_its_packs(fake_study, tmp_path):
    frame = pd.read_parquet(fake_study(tmp_path / "s.parquet", variants=("a",), seeds=(0, 1)))
    frame["packed"] = 2
    costs = plot.run_costs(frame)
    assert costs["seconds"].tolist() == pytest.approx([1.0, 1.0])  # 2 epochs of 1 s, each shared by 2 seeds
