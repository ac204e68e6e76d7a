"""Noise by source: a run's seed varies one source of randomness, the others fixed, and
`ablate variance` gives each source's spread and share of the run-to-run variance."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablate.reporting import compare, variance
from ablate.training import pack

TINY = ["--dataset", "synthetic", "--limit-train", "200", "--limit-test", "100", "--epochs", "2", "--device", "cpu"]


def test_a_stream_takes_the_seed_only_where_its_source_is_varied():
    assert pack.stream_seed(3, pack.INIT) == pack.stream_seed(3, pack.INIT, "init") != pack.stream_seed(4, pack.INIT)
    assert pack.stream_seed(3, pack.INIT, "order") == pack.stream_seed(4, pack.INIT, "order")  # fixed
    assert pack.stream_seed(3, pack.ORDER, "order") != pack.stream_seed(4, pack.ORDER, "order")
    for stream in (pack.AUGMENT, pack.PERMUTE, pack.EVAL_PERMUTE, pack.INPUT, pack.EVAL_INPUT):
        assert pack.stream_seed(3, stream, "augment") != pack.stream_seed(4, stream, "augment")
        assert pack.stream_seed(3, stream, "dropout") == pack.stream_seed(4, stream, "dropout")
    assert pack.stream_seed(0, pack.INIT, "order") != pack.stream_seed(0, pack.INIT)  # no run's own: FIXED


def test_only_the_source_that_is_random_gets_a_share(ablate, tmp_path):
    """The tutorial net (no dropout), no augmentation, every image in one batch: the order of
    the batches is not random either (one batch), so the initial weights are the only source."""
    out = tmp_path / "v.parquet"
    result = ablate(["variance", *TINY, "--batch-size", "200", "--seeds", "3", "--sources", "init,order,dropout",
                     "--out", out])
    assert result.exit_code == 0, result.output
    assert "noise by source" in result.output
    table = compare.compare_studies([out]).variance.set_index("source")
    assert table.loc["init", "share"] == pytest.approx(1.0, abs=1e-3) and table.loc["init", "std"] > 0
    assert table.loc["order", "share"] < 1e-3 and table.loc["dropout", "share"] == 0
    frame = pd.read_parquet(out)
    assert set(frame["seed_source"]) == {"init", "order", "dropout", "all"}  # the file records each run's source


def _rows(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"study": "v", "variant": source, "seed_source": source, "seed": seed, "task": "classify",
                          "run_id": f"{source}/{seed}", "loss": 1 - v, "accuracy": v}
                         for source, vs in values.items() for seed, v in enumerate(vs)])


def test_the_spreads_shares_and_intervals():
    rng = np.random.default_rng(0)
    values = {"init": list(0.8 + 0.01 * rng.normal(size=6)), "order": list(0.8 + 0.002 * rng.normal(size=6)),
              "all": list(0.8 + 0.012 * rng.normal(size=8))}
    table = variance.noise_sources(_rows(values), {f"{s}/{i}": 1000 for s, v in values.items() for i in range(len(v))})
    table = table.set_index("source")
    init, every = 100 * np.array(values["init"]), 100 * np.array(values["all"])
    share = init.var(ddof=1) / every.var(ddof=1)
    assert table.loc["init", "std"] == pytest.approx(init.std(ddof=1))
    assert table.loc["init", "std_high"] == pytest.approx(math.sqrt(5 * init.var(ddof=1) / stats.chi2.ppf(0.025, 5)))
    assert table.loc["init", "share"] == pytest.approx(share)
    assert table.loc["init", "share_low"] == pytest.approx(share / stats.f.ppf(0.975, 5, 7))
    assert table.loc["all", "share"] == 1.0 and list(table.index) == ["init", "order", "all", "test set"]
    # the bootstrap over 1,000 test images: the binomial's variance p (1 - p) / n, in points squared
    bootstrap = np.mean([p * (1 - p) / 1000 for v in values.values() for p in v])
    assert table.loc["test set", "std"] == pytest.approx(100 * math.sqrt(bootstrap))


def test_a_study_without_one_source_per_variant_has_no_table():
    rows = _rows({"init": [0.8, 0.81], "all": [0.8, 0.79]})
    assert len(variance.noise_sources(rows)) == 2
    assert variance.noise_sources(rows.assign(seed_source="all")).empty
    assert variance.noise_sources(rows.drop(columns="seed_source")).empty


@pytest.mark.parametrize("args, said", [(["--sources", "weather"], "unknown seed source 'weather'"),
                                        (["--sources", ""], "give at least one seed source"),
                                        (["--seed-source", "moon"], "unknown seed source 'moon'")])
def test_bad_sources_are_one_line(ablate, tmp_path, args, said):
    out = ablate(["variance" if "--sources" in args else "linearity", *args, *TINY, "--dry-run"])
    assert out.exit_code == 2 and said in out.output and len(out.output.strip().splitlines()) == 1, out.output
