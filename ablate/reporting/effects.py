"""What each component of a component study contributes, computed per seed and then over the
seeds (the seeds pair the variants: a seed's runs share their data and streams):

- main: a component's mean metric with it on minus off, over the design;
- interaction: a pair's (the mean where both are on or both off, minus where one is), with the
  effects aliased with it in a fraction;
- shapley (full designs): its marginal gain averaged over every order of adding the components;
  the shares sum to all-on minus all-off (`total`) in every seed;
- ladder (full designs): the gain of each step of adding them in the given order;
- drop (leave-one-out): all on, minus all on but it; gain (add-one-in): it alone on, minus none.

Each estimate has a 95 % t-interval over the seeds, in the units the report shows, and the
p-value of a t-test that it is 0. A study's rows of one metric are a family: with the `holm`
correction (the default) `significant` holds where Holm's step-down rejects 0 at a family-wise
5 % (`p_adjusted`); with `none`, where its own interval excludes 0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate import metrics as task_metrics
from ablate.study import sequential
from ablate.study.designs import Design

COLUMNS = ["study", "metric", "unit", "kind", "term", "aliases", "seeds", "estimate", "std", "ci_low", "ci_high",
           "p_value", "p_adjusted", "correction", "significant", "decides"]
KINDS = ("main", "interaction", "total", "shapley", "ladder", "drop", "gain")


def per_seed(design: Design, values: np.ndarray) -> list[tuple[str, str, str, np.ndarray]]:
    """(kind, term, aliases, one estimate per seed) of `values`: seeds x the design's variants,
    in the order of `design.rows`."""
    x = np.array(design.rows)
    names = design.names
    out = []
    index = {row: i for i, row in enumerate(design.rows)}

    def v(on: set) -> np.ndarray:
        return values[:, index[tuple(int(n in on) for n in names)]]

    def contrast(signs: np.ndarray) -> np.ndarray:
        return values[:, signs > 0].mean(axis=1) - values[:, signs < 0].mean(axis=1)

    if design.kind in ("full", "fractional"):
        for j, name in enumerate(names):
            out.append(("main", name, design.said((name,), most=3) if design.generators else "", contrast(2 * x[:, j] - 1)))
        for pair, chain in design.interactions():
            a, b = names.index(pair[0]), names.index(pair[1])
            out.append(("interaction", "×".join(pair), design.said(pair, chain) if chain else "",
                        contrast((2 * x[:, a] - 1) * (2 * x[:, b] - 1))))
    if design.kind == "full":
        k = len(names)
        out.append(("total", "all − none", "", v(set(names)) - v(set())))
        for j, name in enumerate(names):
            share = np.zeros(values.shape[0])
            for row in design.rows:
                if row[j]:
                    continue
                size = sum(row)
                weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
                with_it = tuple(1 if i == j else r for i, r in enumerate(row))
                share += weight * (values[:, index[with_it]] - values[:, index[row]])
            out.append(("shapley", name, "", share))
        for j, name in enumerate(names):
            out.append(("ladder", name, "", v(set(names[:j + 1])) - v(set(names[:j]))))
    if design.kind == "leave-one-out":
        out += [("drop", name, "", v(set(names)) - v(set(names) - {name})) for name in names]
    if design.kind == "add-one-in":
        out += [("gain", name, "", v({name}) - v(set())) for name in names]
    return out


def effects(test_rows: pd.DataFrame, designs: dict[str, Design],
            correction: str = "holm") -> tuple[pd.DataFrame, list[str]]:
    """The effects table of every component study among `test_rows` (one row per run: the epoch
    chosen), `designs` by study name, and notes (seeds left out where a variant has no value);
    `correction` (holm or none) says what `significant` controls."""
    records, notes = [], []
    for study, design in designs.items():
        rows = test_rows[test_rows["study"] == study]
        order = list(design.row_of())
        if rows.empty or not set(order) <= set(rows["variant"]):
            missing = [v for v in order if v not in set(rows["variant"])]
            if len(rows):
                have = "have" if len(missing) > 1 else "has"
                notes.append(f"{study}: no effects: variant{'s' * (len(missing) > 1)} {', '.join(missing[:3])} "
                             f"of its design {have} no run")
            continue
        decides = task_metrics.deciding(rows).name
        metrics = ["loss", *(m.name for m in task_metrics.present(rows))]
        once = rows.drop_duplicates(["variant", "seed"])  # summarize refuses two runs of one variant and seed
        tables = {m: once.pivot(index="seed", columns="variant", values=m).reindex(columns=order) for m in metrics}
        seeds = sorted(set.intersection(*(set(t.dropna().index) for t in tables.values())))
        every = set().union(*(t.index for t in tables.values()))
        if len(seeds) < len(every):
            notes.append(f"{study}: effects from the {len(seeds)} of {len(every)} seeds whose runs of every variant "
                         "have a value (a run failed or diverged)")
        if not seeds:
            continue
        for metric in metrics:
            complete = tables[metric].loc[seeds]
            shown = task_metrics.of_name(metric)
            family = [{**_record(study, metric, shown, kind, term, aliases, estimates * shown.scale),
                       "decides": metric == decides}
                      for kind, term, aliases, estimates in per_seed(design, complete.to_numpy(dtype=float))]
            sequential.correct(family, correction)
            records += family
    return pd.DataFrame(records, columns=COLUMNS), notes


def _record(study, metric, shown, kind, term, aliases, estimates: np.ndarray) -> dict:
    n = len(estimates)
    low, high = sequential.t_interval(estimates.tolist()) if n > 1 else (math.nan, math.nan)
    mean, std = float(estimates.mean()), float(estimates.std(ddof=1)) if n > 1 else math.nan
    return {"study": study, "metric": f"test_{metric}", "unit": shown.units, "kind": kind, "term": term,
            "aliases": aliases, "seeds": n, "estimate": mean, "std": std, "ci_low": low, "ci_high": high,
            "p_value": sequential.p_value(mean, std, n), "significant": bool(low > 0 or high < 0)}
