"""Statistics over seeds: mean, spread, t-based 95 % intervals, paired differences."""

from __future__ import annotations

import math

import pandas as pd

from ablate.errors import UsageError, unknown_name

METRICS = ("loss", "accuracy")  # of the test split


def pick_epochs(frame: pd.DataFrame, epoch: int | None = None, best: bool = False) -> pd.DataFrame:
    """The test rows of one epoch per run: the last one, `epoch`, or the one with the best
    test accuracy (`best`)."""
    test = frame[frame["split"] == "test"]
    if best:  # a classifier's best accuracy; an autoencoder's lowest loss
        if test["accuracy"].notna().any():
            return test.loc[test.groupby("run_id")["accuracy"].idxmax()]
        return test.loc[test.groupby("run_id")["loss"].idxmin()]
    if epoch is None:
        return test[test["epoch"] == test.groupby("run_id")["epoch"].transform("max")]
    chosen = test[test["epoch"] == epoch]
    if chosen.empty:
        raise UsageError(f"--epoch {epoch}: the runs have epochs {test['epoch'].min()} to {test['epoch'].max()}")
    return chosen


def interval(values: pd.Series, confidence: float = 0.95) -> tuple[float, float]:
    """t-based confidence interval of the mean; NaNs with fewer than two values."""
    n = values.count()
    if n < 2:
        return math.nan, math.nan
    from scipy import stats  # imported here: only the statistics need it, and it is slow to load

    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std() / math.sqrt(n)
    return values.mean() - half, values.mean() + half


def summarize(test_rows: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """One row per (study, variant, metric): n seeds, mean, std, 95 % interval, and the paired
    difference to the baseline variant over the seeds both have, with its interval. The
    baseline is the first variant of a study that does not have one named `baseline`."""
    if baseline is not None and baseline not in set(test_rows["variant"]):
        raise unknown_name("baseline variant", baseline, list(dict.fromkeys(test_rows["variant"])))
    records = []
    for study, rows in test_rows.groupby("study", sort=False):
        variants = list(dict.fromkeys(rows["variant"]))
        base = baseline if baseline in variants else variants[0]
        # one value per (seed, variant): the caller separated configurations (results.separate_configurations)
        metrics = [m for m in METRICS if rows[m].notna().any()]  # no accuracy for an autoencoder
        by_seed = {m: rows.pivot(index="seed", columns="variant", values=m) for m in metrics}
        for variant in variants:
            for metric in metrics:
                values = by_seed[metric][variant].dropna()
                paired = (by_seed[metric][variant] - by_seed[metric][base]).dropna()
                low, high = interval(values)
                d_low, d_high = interval(paired) if variant != base else (math.nan, math.nan)
                records.append({
                    "study": study, "variant": variant, "metric": f"test_{metric}", "seeds": len(values),
                    "mean": values.mean(), "std": values.std() if len(values) > 1 else math.nan,
                    "ci_low": low, "ci_high": high, "baseline": base,
                    "diff": paired.mean() if variant != base else math.nan,
                    "diff_ci_low": d_low, "diff_ci_high": d_high,
                    "significant": bool(d_low > 0 or d_high < 0),
                })
    return pd.DataFrame(records)
