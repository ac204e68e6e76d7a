"""Noise by source: of a study whose variants vary one source of randomness each with the seed
(the `seed_source` column: init, order, augment, dropout) and one all of them (`all`), each
source's standard deviation over the seeds and its share of the run-to-run variance (`all`'s),
with 95 % intervals (chi-square for a standard deviation, F for a ratio of two variances,
normal noise assumed; the F interval treats the two as independent, while a source's runs
and all's share that source's streams at each seed, which only makes the ratio steadier: the
interval is conservative); and the test set's own sampling error: the variance of a bootstrap
over the test images of each run's accuracy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate import metrics as task_metrics

COLUMNS = ["study", "metric", "unit", "source", "runs", "std", "std_low", "std_high", "share", "share_low",
           "share_high"]
TEST_SET = "test set"  # the row of the test images' own sampling


def noise_sources(test_rows: pd.DataFrame, test_images: dict[str, int] | None = None) -> pd.DataFrame:
    """The table, of every study among `test_rows` (one row per run: the epoch chosen) whose
    variants each vary one source and one all (`test_images`: run_id -> its test images, for
    the test set's row, where the metric is an accuracy)."""
    from scipy import stats

    records = []
    if "seed_source" not in test_rows:
        return pd.DataFrame(columns=COLUMNS)
    for study, rows in test_rows.groupby("study", sort=False):
        sources = rows.groupby("variant", sort=False)["seed_source"].agg(lambda s: set(s.dropna()))
        named = [next(iter(s)) for s in sources if len(s) == 1]
        if len(named) < len(sources) or len(set(named)) < len(named) or "all" not in named or len(named) < 2:
            continue  # not one source per variant, each its own, and all of them
        metric = task_metrics.deciding(rows)
        values = {next(iter(s)): metric.scale * rows.loc[rows["variant"] == v, metric.name].dropna()
                  for v, s in sources.items()}
        total = values["all"]
        n_all, var_all = len(total), float(total.var()) if len(total) > 1 else math.nan
        for source, v in values.items():
            n, var = len(v), float(v.var()) if len(v) > 1 else math.nan
            low = high = share_low = share_high = math.nan
            if n > 1:
                low = math.sqrt((n - 1) * var / stats.chi2.ppf(0.975, n - 1))
                high = math.sqrt((n - 1) * var / stats.chi2.ppf(0.025, n - 1))
            share = var / var_all if var_all > 0 else math.nan
            if source != "all" and n > 1 and n_all > 1 and var_all > 0:
                share_low = share / stats.f.ppf(0.975, n - 1, n_all - 1)
                share_high = share / stats.f.ppf(0.025, n - 1, n_all - 1)
            records.append({"study": study, "metric": f"test_{metric.name}", "unit": metric.units, "source": source,
                            "runs": n, "std": math.sqrt(var) if var == var else math.nan, "std_low": low,
                            "std_high": high, "share": share, "share_low": share_low, "share_high": share_high})
        if metric.name == "accuracy" and test_images:
            records.append(_test_set(study, rows, metric, test_images, var_all, n_all))
    frame = pd.DataFrame(records, columns=COLUMNS)
    order = {s: i for i, s in enumerate(["init", "order", "augment", "dropout", "all", TEST_SET])}
    return frame.sort_values(["study", "source"], key=lambda c: c.map(order) if c.name == "source" else c,
                             kind="stable").reset_index(drop=True) if len(frame) else frame


def _test_set(study, rows, metric, test_images: dict[str, int], var_all: float, n_all: int) -> dict:
    """The test images' own sampling: each run's accuracy resampled over its n images, with
    replacement, varies by p (1 - p) / n (a bootstrap of one correct-or-not value per image
    draws a binomial: this is its variance, without the noise of a finite number of
    resamples); the mean over the runs, and its ratio to the run-to-run variance (not a share
    of it: every run is scored on the same images), whose chi-square interval gives the
    ratio's."""
    from scipy import stats

    variances = []
    for run_id, p in zip(rows["run_id"], rows[metric.name]):
        n = test_images.get(run_id)
        if n and p == p:
            p = min(max(float(p), 0.0), 1.0)
            variances.append((metric.scale ** 2) * p * (1 - p) / n)
    var = float(np.mean(variances)) if variances else math.nan
    share = var / var_all if var_all > 0 else math.nan
    low = high = math.nan
    if n_all > 1 and var_all > 0:  # var_all's interval: (n-1) s^2 / chi2
        low = var / ((n_all - 1) * var_all / stats.chi2.ppf(0.025, n_all - 1))
        high = var / ((n_all - 1) * var_all / stats.chi2.ppf(0.975, n_all - 1))
    return {"study": study, "metric": f"test_{metric.name}", "unit": metric.units, "source": TEST_SET,
            "runs": len(variances), "std": math.sqrt(var) if var == var else math.nan, "std_low": math.nan,
            "std_high": math.nan, "share": share, "share_low": low, "share_high": high}
