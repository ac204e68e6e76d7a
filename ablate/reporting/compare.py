"""Statistics over seeds: mean, spread, t-based 95 % intervals, paired differences."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablate import metrics as task_metrics
from ablate.errors import UsageError, unknown_name
from ablate.reporting import effects as effects_of
from ablate.reporting import variance as variance_of
from ablate.study import sequential


def finished_runs(frame: pd.DataFrame, where: str | None = None, doing: str = "report") -> pd.DataFrame:
    """The rows of the runs that finished (status ok or diverged: a failed run is one row
    with its error and no epoch); a usage error saying what `where` (a file, by default the
    studies' names) holds instead when there is none."""
    if "status" not in frame:
        return frame
    done = frame[frame["status"] != "failed"]
    if len(done):
        return done
    if where is None:
        studies = list(dict.fromkeys(frame["study"].dropna())) if "study" in frame else []
        where = f"study {', '.join(studies)}" if studies else "the file"
    if frame.empty:
        raise UsageError(f"{where} holds no run (no rows): nothing to {doing}")
    runs = frame.drop_duplicates("run_id")
    errors = runs["error"].dropna() if "error" in runs else pd.Series(dtype=object)
    first = ""
    if len(errors):
        row = runs.loc[errors.index[0]]
        first = f" (the first, {row['variant']} seed {row['seed']}: {errors.iloc[0]})"
    raise UsageError(f"{where} holds no finished run: {len(runs)} failed{first}; fix the cause and run the study "
                     "again with --resume, which trains failed runs again")


def failed_notes(frame: pd.DataFrame) -> list[str]:
    """A line per study with failed runs: how many, of which variants, the first error."""
    if "status" not in frame:
        return []
    notes = []
    for study, rows in frame[frame["status"] == "failed"].drop_duplicates("run_id").groupby("study", sort=False):
        error = rows["error"].dropna().iloc[0] if "error" in rows and rows["error"].notna().any() else "no error kept"
        variants = ", ".join(dict.fromkeys(rows["variant"]))
        notes.append(f"{study}: {len(rows)} failed run{'s' if len(rows) != 1 else ''} left out ({variants}; the "
                     f"first: {error}); --resume trains failed runs again")
    return notes


def pick_epochs(frame: pd.DataFrame, epoch: int | None = None, best: bool = False) -> pd.DataFrame:
    """The test rows of one epoch per run: the last one, `epoch`, or the one with the best
    value of the task's first metric (`best`: accuracy, PSNR; the lowest loss for a task with
    none); failed runs have none, and a usage error says when no run has."""
    test = finished_runs(frame)
    test = test[test["split"] == "test"]
    if test.empty:
        held = sorted(set(frame["split"].dropna())) if len(frame) else []
        raise UsageError(f"no test rows to report: the runs have rows of split {', '.join(held) or 'none'}; "
                         "ablate reports the split 'test'")
    if best:
        decides = task_metrics.deciding(test)
        metric, higher = decides.name, decides.higher_is_better
        scored = test[test[metric].notna()]  # a run diverged from its first epoch has no best
        if scored.empty:
            raise UsageError(f"--best: no run has a test {metric} to choose its epoch by (every one diverged)")
        by_run = scored.groupby("run_id")[metric]
        return test.loc[by_run.idxmax() if higher else by_run.idxmin()]
    if epoch is None:
        return last_epochs(test)
    chosen = test[test["epoch"] == epoch]
    if chosen.empty:
        raise UsageError(f"--epoch {epoch}: the runs have epochs {test['epoch'].min()} to {test['epoch'].max()}")
    return chosen


def paired_spread(frame: pd.DataFrame) -> tuple[float, int, str]:
    """The spread (standard deviation over seeds) of the paired differences of the task's
    deciding metric between each variant and the first, pooled over the variants, in the
    metric's stored units; the seeds it is from, and the metric. A usage error where the file
    cannot give one (one variant, or under two seeds of a pair)."""
    test = pick_epochs(frame)
    metric = task_metrics.deciding(test).name
    table = test.drop_duplicates(["variant", "seed"]).pivot(index="seed", columns="variant", values=metric)
    table = table[list(dict.fromkeys(test["variant"]))]
    differences = table.iloc[:, 1:].sub(table.iloc[:, 0], axis=0)
    variances = [d.dropna().var() for _, d in differences.items() if d.count() > 1]
    if not variances:
        raise UsageError(f"the pilot has no two variants with two seeds in common to give the spread of a paired "
                         f"difference of {metric} (it has {table.shape[1]} variant(s), {len(table)} seed(s))")
    return math.sqrt(sum(variances) / len(variances)), int(differences.count().max()), metric


def last_epochs(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last epoch (every split of it)."""
    return frame[frame["epoch"] == frame.groupby("run_id")["epoch"].transform("max")]


def interval(values: pd.Series, confidence: float = 0.95) -> tuple[float, float]:
    """t-based confidence interval of the mean; NaNs with fewer than two values."""
    if values.count() < 2:
        return math.nan, math.nan
    return sequential.t_interval(values.dropna().tolist(), 1 - confidence)


CORRECTIONS = ("holm", "none")  # across a study's comparisons of one metric: Holm's step-down, or none


def summarize(test_rows: pd.DataFrame, baseline: str | None = None, correction: str = "holm",
              effect: float | None = None) -> pd.DataFrame:
    """One row per (study, variant, metric): n seeds, mean, std, 95 % interval, the paired
    difference to the baseline variant over the seeds both have with its interval, the seeds
    that difference needs (`seeds_needed`) and the smallest one the seeds resolve, and whether
    the metric is the one that decides (`decides`: metrics.deciding). The
    baseline is the first variant of a study that does not have one named `baseline`.

    `significant` marks a difference whose paired t-test rejects 0 with the family-wise error
    rate of the study's comparisons of that metric held at 5 % (`correction` holm: Holm's
    step-down over the variants; none: each comparison at 5 %, its interval excluding 0);
    `p_value` is the comparison's own, `p_adjusted` Holm's. `seeds_power`: the seeds for 80 %
    power to detect the observed difference at the observed spread; `seeds_for_effect`: to
    detect `effect` (in the units the report shows: accuracy points)."""
    if baseline is not None and baseline not in set(test_rows["variant"]):
        raise unknown_name("baseline variant", baseline, list(dict.fromkeys(test_rows["variant"])))
    if correction not in CORRECTIONS:
        raise unknown_name("correction", correction, list(CORRECTIONS))
    if effect is not None and not (math.isfinite(effect) and effect > 0):
        raise UsageError(f"--effect must be a finite number > 0 (in the metric's units, like 1.0 accuracy points), "
                         f"got {effect!r}")
    records = []
    for study, rows in test_rows.groupby("study", sort=False):
        variants = list(dict.fromkeys(rows["variant"]))
        base = baseline if baseline in variants else variants[0]
        # one value per (seed, variant): the caller separated configurations (results.separate_configurations)
        twice = rows[rows.duplicated(["variant", "seed"], keep=False)]
        if len(twice):
            first = twice.iloc[0]
            runs = sorted(set(twice[(twice.variant == first["variant"]) & (twice.seed == first["seed"])]["run_id"]))
            raise UsageError(f"{study}: variant {first['variant']!r} seed {first['seed']} has {len(runs)} runs of "
                             f"one configuration ({', '.join(map(str, runs))}); a study holds one run per "
                             "variant and seed")
        metrics = ["loss", *(m.name for m in task_metrics.present(rows))]
        decides = task_metrics.deciding(rows).name
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
                    "significant": bool(d_low > 0 or d_high < 0), "decides": metric == decides,
                    **_needed(paired, variant != base, effect, task_metrics.of_name(metric)),
                })
    sequential.correct(records, correction)
    frame = pd.DataFrame([_shown(record) for record in records], columns=SUMMARY_COLUMNS)
    if len(frame):
        for column in ("seeds_needed", "seeds_power", "seeds_for_effect"):
            frame[column] = frame[column].astype("Int64")
    return frame


SUMMARY_COLUMNS = ["study", "variant", "metric", "unit", "seeds", "mean", "std", "ci_low", "ci_high", "baseline", "diff",
                   "diff_ci_low", "diff_ci_high", "significant", "decides", "seeds_needed", "resolvable_diff",
                   "clipped", "ci_low_raw", "ci_high_raw", "diff_ci_low_raw", "diff_ci_high_raw", "p_value",
                   "p_adjusted", "correction", "seeds_power", "seeds_for_effect"]

SCALED = ("mean", "std", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high", "resolvable_diff")


def _shown(record: dict) -> dict:
    """A summary row in the unit every report shows (accuracy in %, its differences in points:
    the `unit` column), its intervals clipped to the range the metric can take (accuracy 0-100 %,
    a loss >= 0; a difference within the range's width), `clipped` saying so; the t-interval's
    own bounds kept in the `_raw` columns."""
    metric = task_metrics.of_name(record["metric"].removeprefix("test_"))
    shown = {**record, **{k: record[k] * metric.scale for k in SCALED}, "unit": metric.units}
    low = None if metric.low is None else metric.low * metric.scale
    high = None if metric.high is None else metric.high * metric.scale
    width = None if low is None or high is None else high - low
    clipped = False
    for name, floor, ceiling in (("ci", low, high), ("diff_ci", -width if width else None, width)):
        raw_low, raw_high = shown[f"{name}_low"], shown[f"{name}_high"]
        shown[f"{name}_low_raw"], shown[f"{name}_high_raw"] = raw_low, raw_high
        if floor is not None and raw_low < floor:
            shown[f"{name}_low"], clipped = floor, True
        if ceiling is not None and raw_high > ceiling:
            shown[f"{name}_high"], clipped = ceiling, True
    shown["clipped"] = clipped
    return shown


def _needed(paired: pd.Series, compared: bool, effect: float | None, metric) -> dict:
    """What more seeds would tell of a paired difference (ablate.study.sequential): the seeds at which
    its interval would exclude 0 at the spread seen so far, the seeds for 80 % power (to detect
    what it shows, and `effect`, in shown units), the smallest difference the seeds it has
    resolve, and its p-value; none for the baseline itself."""
    if not compared:
        return {"seeds_needed": None, "seeds_power": None, "seeds_for_effect": None, "resolvable_diff": math.nan,
                "p_value": math.nan}
    n, std = paired.count(), paired.std() if paired.count() > 1 else math.nan
    mean = paired.mean()
    return {"seeds_needed": sequential.seeds_needed(mean, std, n),
            "seeds_power": sequential.seeds_for_power(mean, std) if n > 1 else None,
            "seeds_for_effect": sequential.seeds_for_power(effect / metric.scale, std)
            if effect is not None and n > 1 else None,
            "resolvable_diff": sequential.resolvable(std, n), "p_value": sequential.p_value(mean, std, n)}


@dataclass
class Compared:
    """`ablate report`'s reading of its files: the runs (configurations separated), the summary
    of the epochs chosen, the study files read, and the notes for the user."""

    frame: pd.DataFrame
    summary: pd.DataFrame
    files: list[Path]
    label: str  # which epoch: "the last epoch", "epoch 3", "each run's best epoch"
    notes: list[str] = field(default_factory=list)
    effects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=effects_of.COLUMNS))
    designs: dict = field(default_factory=dict)  # a component study's name -> its designs.Design
    variance: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=variance_of.COLUMNS))


def compare_studies(paths: list[Path], epoch: int | None = None, best: bool = False,
                    baseline: str | None = None, correction: str = "holm", effect: float | None = None) -> Compared:
    """The summary `ablate report PATHS` prints, of study files or folders of them."""
    from ablate.results import files as results
    from ablate.results import folder

    if epoch is not None and best:
        raise UsageError("give --epoch or --best, not both")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames, files, notes = [], [], []
    for given in paths:
        read, given_files, skipped = folder.read_studies(Path(given))
        frames.append(read)
        files += given_files
        notes += skipped
    frame, separated = results.separate_configurations(folder.union(frames))
    picked = pick_epochs(frame, epoch, best)
    summary = summarize(picked, baseline, correction, effect)
    label = "each run's best epoch" if best else f"epoch {epoch}" if epoch else "the last epoch"
    files = list(dict.fromkeys(files))
    designs = component_designs(files)
    effects, effect_notes = effects_of.effects(picked, designs, correction)
    return Compared(frame, summary, files, label, notes + separated + failed_notes(frame) + effect_notes,
                    effects, designs, noise_by_source(picked, files))


def noise_by_source(picked: pd.DataFrame, files: list[Path]) -> pd.DataFrame:
    """The noise-by-source table (ablate.reporting.variance) of the studies among `picked` that
    vary one source of randomness per variant; the test images of each run from the per-class
    rows beside its file."""
    from ablate.results import files as results

    if "seed_source" not in picked or not (picked["seed_source"].fillna("all") != "all").any():
        return pd.DataFrame(columns=variance_of.COLUMNS)
    images = {}
    for path in files:
        try:
            per_class = results.read_per_class(path)
        except (ValueError, OSError):
            continue
        if len(per_class) and "images" in per_class:
            images.update(per_class.groupby("run_id")["images"].sum().astype(int).to_dict())
    return variance_of.noise_sources(picked, images)


def component_designs(files: list[Path]) -> dict:
    """Study name -> the design of each component study among `files` (metadata that is
    missing or damaged: no design, no effects)."""
    from ablate.results import files as results
    from ablate.study.designs import Design

    found = {}
    for path in files:
        try:
            meta = results.read_metadata(path)
        except (ValueError, OSError):
            continue
        study = results.metadata_value(meta, "study", dict, {})
        design = Design.from_metadata(study.get("components")) if isinstance(study.get("components"), dict) else None
        if design is not None and isinstance(study.get("name"), str):
            found[study["name"]] = design
    return found
