"""`--seeds auto`: train the variants in rounds of seeds and stop each one once its comparison
with the baseline is decided, with intervals that stay valid however often they are looked at.

The looks are planned: after 3 seeds, then after each round, which adds half the seeds so far
(3, 5, 8, 12, 18, ...), the last at MAX. Look k spends alpha_k of the error rate alpha = 0.05
by the power spending function alpha * t**2 of the information t = n_k / MAX (Lan & DeMets
1983; Kim & DeMets 1987), and its interval is the paired t-interval at level alpha_k. Whatever
the data and however a variant stops, the chance that any look's interval misses the true
difference is at most the sum of the alpha_k, alpha (Bonferroni's union bound: exact under
normal noise, conservative since the looks are correlated). A decision is therefore wrong
with probability at most alpha: "different" (the interval excludes 0) where there is no
difference, or "equal" (the interval inside plus or minus the resolution) where the
difference is as large as the resolution.

A study of several variants compares each with the baseline: its comparisons are a family,
and the chance that any "different" decision of it is wrong is held at alpha by Holm's
step-down carried into the looks (decide_family): each comparison spends alpha / r, r the
comparisons not yet decided different, and a decided one passes its share on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache

from ablate.errors import UsageError

ALPHA = 0.05
FIRST = 3  # seeds of the first round: the fewest that give an interval with a spread to speak of
MOST = 10  # `--seeds auto`'s MAX
SPENDING_POWER = 2  # alpha_k from alpha * t**2
NEEDED_AT_MOST = 1_000_000  # seeds needed past this: "not resolvable"


@dataclass(frozen=True)
class AutoSeeds:
    """`--seeds auto:MOST`; `resolution` in the deciding metric's shown units (accuracy points),
    None: the metric's default."""

    most: int = MOST
    resolution: float | None = None

    def spec(self) -> str:
        return f"auto:{self.most}"


def parse_seeds(text: str) -> int | AutoSeeds:
    """`--seeds`: a number of seeds, `auto` or `auto:MAX`."""
    said = text.strip().lower()
    digits = re.compile("[0-9]{1,9}")  # a count, not a number too long for int()
    allowed = (f"give a number of seeds (1 or more), auto (rounds of seeds up to {MOST}) or auto:MAX "
               f"(MAX {FIRST} or more)")
    if digits.fullmatch(said) and int(said) >= 1:
        return int(said)
    if said == "auto":
        return AutoSeeds()
    most = said.removeprefix("auto:")
    if said.startswith("auto:") and digits.fullmatch(most):
        if int(most) < FIRST:
            raise UsageError(f"--seeds {text}: MAX is at least {FIRST}, the seeds of the first round; {allowed}")
        return AutoSeeds(int(most))
    raise UsageError(f"--seeds {text!r}: {allowed}")


def seeds_option(seeds: str, resolution: float | None) -> int | AutoSeeds:
    """`--seeds` and `--resolution` as a study takes them."""
    chosen = parse_seeds(seeds)
    if resolution is not None:
        if not isinstance(chosen, AutoSeeds):
            raise UsageError("--resolution sets when --seeds auto stops a variant: give --seeds auto too, or leave "
                             "it out")
        if not (math.isfinite(resolution) and resolution > 0):
            raise UsageError(f"--resolution must be a finite number > 0 (in the metric's units, like 0.5 accuracy "
                             f"points), got {resolution}")
        chosen = AutoSeeds(chosen.most, resolution)
    return chosen


@lru_cache(maxsize=None)
def looks(most: int) -> tuple[int, ...]:
    """The seeds after which each look decides: 3, then each round adds half the seeds so far
    (rounded up), the last one MAX."""
    seen = [min(FIRST, most)]
    while seen[-1] < most:
        seen.append(min(most, seen[-1] + math.ceil(seen[-1] / 2)))
    return tuple(seen)


@lru_cache(maxsize=None)
def spent(most: int, alpha: float = ALPHA) -> tuple[float, ...]:
    """alpha_k of each look: alpha * (t_k**2 - t_(k-1)**2), t_k = n_k / MAX; they sum to alpha."""
    t = [0.0, *(n / most for n in looks(most))]
    return tuple(alpha * (t[k] ** SPENDING_POWER - t[k - 1] ** SPENDING_POWER) for k in range(1, len(t)))


@lru_cache(maxsize=4096)
def _critical(alpha: float, df: int) -> float:
    from scipy import stats  # imported here: only the statistics need it, and it is slow to load

    return float(stats.t.ppf(1 - alpha / 2, df))


def t_interval(values: list[float], alpha: float = ALPHA) -> tuple[float, float]:
    """The two-sided (1 - alpha) t-interval of the mean of `values` (two or more)."""
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = _critical(alpha, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


@dataclass(frozen=True)
class Decision:
    """Where a variant's comparison stands: `seeds` it needs (the look that decided, or those it
    has), why it stopped (different, equal, max, no pairs) or undecided, and the interval of the
    paired difference at that look (the metric's stored units; NaN: none)."""

    seeds: int
    stopped: str
    low: float = math.nan
    high: float = math.nan

    @property
    def done(self) -> bool:
        return self.stopped != "undecided"

    def interval(self, scale: float) -> tuple[float, ...]:
        """The interval in shown units (x `scale`), () where there is none."""
        return () if self.low != self.low else (round(scale * self.low, 6), round(scale * self.high, 6))


STOPPED = {  # how `stopped` reads
    "different": "decided different (the interval excludes 0)",
    "equal": "decided equal (the interval lies within ± the resolution)",
    "max": "reached MAX undecided",
    "no pairs": "no value to compare (every run of it or of the baseline failed or diverged)",
    "baseline": "the baseline (trains while any variant does)",
    "undecided": "undecided, training",
}


def decide(differences: list[float], most: int, resolution: float, level: float = ALPHA) -> Decision:
    """Go through the planned looks that `differences` (variant minus baseline, seed by seed
    from seed 0; NaN where either run failed or diverged) reach, and stop at the first that
    decides: its interval excludes 0 (different) or lies inside (-resolution, resolution)
    (equal); at MAX undecided, "max". `resolution` is in the values' units; `level` is the
    error rate spent over the looks."""
    low = high = math.nan  # the last look's interval
    for n, alpha in zip(looks(most), spent(most, level)):
        if n > len(differences):
            break
        pairs = [d for d in differences[:n] if d == d]
        if len(pairs) < 2:
            if not pairs:
                return Decision(n, "no pairs")
            continue
        low, high = t_interval(pairs, alpha)
        if low > 0 or high < 0:
            return Decision(n, "different", low, high)
        if -resolution < low and high < resolution:
            return Decision(n, "equal", low, high)
    seeds = min(len(differences), most)
    return Decision(seeds, "max" if seeds >= most else "undecided", low, high)


def decide_family(differences: dict[str, list[float]], most: int, resolution: float) -> dict[str, Decision]:
    """Each variant's decision, the family-wise error of the "different" decisions over the
    study's comparisons held at ALPHA by Holm's step-down carried into the looks (Ye, Li &
    Tang 2013; Maurer & Bretz 2013): with r comparisons not decided different, each spends
    ALPHA / r over its looks; a comparison decided different gives its share to the others,
    whose looks are judged again at the larger level. A larger level only narrows intervals:
    a comparison decided different stays so, and one decided equal may become different (its
    narrower interval may exclude 0), at the look where it stopped or earlier."""
    left, decided = set(differences), {}
    while left:
        level = ALPHA / len(left)
        now = {v: decide(differences[v], most, resolution, level) for v in left}
        different = {v for v, d in now.items() if d.stopped == "different"}
        if not different:
            decided.update(now)
            break
        decided.update({v: now[v] for v in different})
        left -= different
    return {v: decided[v] for v in differences}


def next_target(decision: Decision, most: int) -> int:
    """How many seeds an undecided variant trains to next: the next look past what it has."""
    return next(n for n in looks(most) if n > decision.seeds) if decision.seeds < most else most


# ---------------------------------------------------------------- what the report adds


def seeds_needed(mean: float, std: float, seeds: int) -> int | None:
    """The fewest seeds n >= 2 at which a paired difference of this mean and spread has a
    95 % t-interval that excludes 0: t(0.975, n-1) * std / sqrt(n) < |mean|. None where no
    number of seeds resolves it (a mean of 0, or over NEEDED_AT_MOST) or the spread is not
    known (under 2 seeds)."""
    if seeds < 2 or mean != mean or std != std or mean == 0:
        return None
    if std == 0:
        return 2
    z = (1.959963984540054 * std / abs(mean)) ** 2  # the normal bound: t > z, so n is no less
    if z > NEEDED_AT_MOST:
        return None
    n = max(2, math.ceil(z))
    while _critical(ALPHA, n - 1) * std / math.sqrt(n) >= abs(mean):
        n += 1
    return n if n <= NEEDED_AT_MOST else None


def p_value(mean: float, std: float, seeds: int) -> float:
    """The two-sided p-value of a paired t-test that the mean difference is 0 (NaN under two
    seeds; 0 or 1 where every seed gives the same difference)."""
    from scipy import stats

    if seeds < 2 or mean != mean or std != std:
        return math.nan
    if std == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * stats.t.sf(abs(mean) / (std / math.sqrt(seeds)), seeds - 1))


def holm(p_values: list[float]) -> tuple:
    """Holm's step-down at a family-wise 5 %: which comparisons reject, and the adjusted p-values
    (the sorted p-values times m, m - 1, ..., 1, made non-decreasing, at most 1). The same
    numbers as statsmodels' multipletests(method="holm") (tests/test_corrections.py checks it on
    thousands of families), which is not called here: its Holm branch runs a full gc.collect()
    on every call, a tenth of a second and more in a process that holds torch."""
    import numpy as np

    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    steps = np.arange(len(p), 0, -1)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(p[order] * steps))
    adjusted = np.empty_like(adjusted_sorted)
    adjusted[order] = adjusted_sorted
    return adjusted <= ALPHA, adjusted


def correct(records: list[dict], correction: str) -> None:
    """Records (dicts with study, metric, p_value, significant) corrected in place: each study's
    records of one metric are a family, `p_adjusted` is Holm's and `significant` holds at a
    family-wise 5 %; with `none`, `significant` stays each record's own (its interval excludes 0)
    and `p_adjusted` is its p-value. The report's comparisons and a component study's effects."""
    families: dict[tuple, list[dict]] = {}
    for record in records:
        record["correction"] = correction
        record["p_adjusted"] = record["p_value"]
        if record["p_value"] == record["p_value"]:  # a comparison with a test
            families.setdefault((record["study"], record["metric"]), []).append(record)
    if correction == "none":
        return
    for family in families.values():
        reject, adjusted = holm([r["p_value"] for r in family])
        for record, rejected, p in zip(family, reject, adjusted):
            record["significant"], record["p_adjusted"] = bool(rejected), float(p)


POWER = 0.8  # the power the report plans seeds for


def seeds_for_power(difference: float, std: float, power: float = POWER, alpha: float = ALPHA) -> int | None:
    """The fewest seeds (2 or more) at which a paired t-test at `alpha` detects a true mean
    difference `difference` with probability `power`, the paired differences spread by `std`
    (statsmodels' TTestPower: the noncentral t). None where no number of seeds does (a
    difference of 0, or over NEEDED_AT_MOST)."""
    from statsmodels.stats.power import TTestPower

    if difference != difference or std != std or difference == 0:
        return None
    if std == 0:
        return 2
    effect = abs(difference) / std
    if effect >= 100:  # two seeds find it with power 1 to 1e-6; statsmodels gives NaN past about 1e14
        return 2
    if (1.959963984540054 + 0.8416212335729143) ** 2 / effect ** 2 > NEEDED_AT_MOST:  # the normal bound
        return None

    def enough(n: int) -> bool:  # the power grows with n
        return TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided") >= power

    # from the normal approximation, which the t-test needs a few more seeds than: up, then down
    n = max(2, math.ceil((1.959963984540054 + 0.8416212335729143) ** 2 / effect ** 2))
    while not enough(n):
        n += 1
        if n > 2 * NEEDED_AT_MOST:
            return None
    while n > 2 and enough(n - 1):
        n -= 1
    return n


def resolvable(std: float, seeds: int) -> float:
    """The smallest |difference| the current seeds resolve: the 95 % t-interval's half-width,
    t(0.975, n-1) * std / sqrt(n); NaN under 2 seeds."""
    if seeds < 2 or std != std:
        return math.nan
    return _critical(ALPHA, seeds - 1) * std / math.sqrt(seeds)


def power_studies(comparisons: int, most: int) -> int:
    """How many studies rule_power simulates: 1,000, fewer for a large study (at least 200)."""
    return max(200, min(1000, 100_000 // (comparisons * most)))


def rule_power(difference: float, std: float, most: int, resolution: float, comparisons: int = 1,
               studies: int | None = None, seed: int = 0) -> dict[str, float]:
    """What the rule does with a true paired difference `difference` whose paired differences
    are spread by `std` (the values' units), simulated through its rounds and decisions
    (decide_family) with normal noise, the study's other `comparisons` - 1 comparisons at no
    difference, every comparison against one baseline (each run's noise std / sqrt 2, the
    baseline's shared): how often it decides different, equal, or reaches MAX, and the seeds
    it takes on average."""
    import numpy as np

    rng = np.random.default_rng(seed)
    studies = studies or power_studies(comparisons, most)
    said = {"different": 0, "equal": 0, "max": 0}
    seeds = 0
    for _ in range(studies):
        runs = rng.normal(0.0, std / math.sqrt(2), size=(comparisons + 1, most))
        draws = runs[1:] - runs[0]
        draws[0] += difference
        have = [FIRST] * comparisons
        while True:
            decided = decide_family({i: list(draws[i, :have[i]]) for i in range(comparisons)}, most, resolution)
            open_ = [i for i, d in decided.items() if not d.done]
            if not open_:
                break
            for i in open_:
                have[i] = next_target(decided[i], most)
        said[decided[0].stopped] += 1
        seeds += decided[0].seeds
    return {**{k: v / studies for k, v in said.items()}, "seeds": seeds / studies}


# ---------------------------------------------------------------- a study's rounds


@dataclass(frozen=True)
class Rule:
    """How `--seeds auto` decides one study: its baseline, the metric (a column) and its scale
    to the shown units, and the resolution in those units."""

    auto: AutoSeeds
    baseline: str
    metric: str
    scale: float
    resolution: float
    extended_from: str | None = None  # --resume with a larger MAX: the MAX the study was planned with

    @classmethod
    def of(cls, auto: AutoSeeds, runs: list) -> Rule:
        """The rule of the planned runs (of MAX seeds); a usage error where none can decide."""
        from ablate.metrics import task_decides
        from ablate.training.tasks import TASKS

        variants = list(dict.fromkeys(r.variant for r in runs))
        if len(variants) < 2:
            raise UsageError(f"--seeds {auto.spec()} stops a variant when its difference to the baseline is "
                             f"decided: this study has one variant ({variants[0]!r}); give --seeds K")
        firsts = {}
        for run in runs:
            TASKS.get(run.config.task)  # a task that is not registered says so
            firsts.setdefault(task_decides(run.config.task), run.variant)
        if len(firsts) > 1:
            named = ", ".join(f"{m.name} ({v!r})" for m, v in firsts.items())
            raise UsageError(f"--seeds {auto.spec()}: the variants' tasks are decided by different metrics ({named}); "
                             "give --seeds K")
        metric = next(iter(firsts))
        resolution = auto.resolution
        if resolution is None:
            resolution = metric.resolution
            if resolution is None:
                raise UsageError(f"--seeds {auto.spec()}: metric {metric.name!r} has no default resolution; give "
                                 "--resolution, the difference that matters in its units")
        return cls(auto, variants[0], metric.name, metric.scale, resolution)

    def resumed(self, record: AutoRecord | None) -> tuple[Rule, list[str]]:
        """This rule for a study whose file holds `record` (its metadata `auto_seeds`, or
        None), and what the user should know. The looks and their levels depend on MAX: a
        smaller MAX is refused (it would judge the same seeds at laxer levels), a larger one
        extends the study, said and recorded."""
        if record is None:
            return self, []
        before = parse_seeds(record.seeds) if re.fullmatch("auto:[0-9]{1,9}", record.seeds) else None
        if before is None or before.most == self.auto.most:
            return replace(self, extended_from=record.extended_from), []
        if self.auto.most < before.most:
            raise UsageError(f"--resume: the study was planned with --seeds {before.spec()}, and its looks and their "
                             f"levels depend on MAX: give --seeds {before.spec()}, a larger MAX to train undecided "
                             "variants further, or --seeds K")
        first = record.extended_from or before.spec()
        return replace(self, extended_from=first), [
            f"note: --seeds {self.auto.spec()} extends a study planned with {first}: its looks are planned anew for "
            f"MAX {self.auto.most}; since it is extended after its variants were seen, its decisions are no longer "
            "strictly within the 5 % (recorded as extended_from)"]

    def decisions(self, frame, runs: list, tried: set[str]) -> dict[str, Decision]:
        """Each variant's decision from the rows of `frame` (a study file's): a seed counts once
        its run finished, or failed here (`tried`; a failed run of an earlier command is trained
        again); the baseline's is "baseline", with the seeds the others need."""
        values = _last_values(frame, self.metric, tried)  # variant -> {seed: value}, NaN where failed
        seeds = {v: _leading(values.get(v, {})) for v in dict.fromkeys(r.variant for r in runs)}
        base = values.get(self.baseline, {})
        differences = {}
        for variant, had in seeds.items():
            if variant == self.baseline:
                continue
            own, n = values.get(variant, {}), min(had, seeds[self.baseline])
            differences[variant] = [own[s] - base[s] for s in range(n)]
        decided = decide_family(differences, self.auto.most, self.resolution / self.scale)
        decided[self.baseline] = Decision(seeds[self.baseline], "baseline")
        return {v: decided[v] for v in seeds}  # in the study's order

    def next_round(self, frame, runs: list, tried: set[str], done: set[str]) -> list:
        """The runs to train now: each undecided variant's up to its next look, and the
        baseline's as far as the furthest of them; none when every variant is decided."""
        decided = self.decisions(frame, runs, tried)
        undecided = [d for v, d in decided.items() if not d.done]
        target = {v: next_target(d, self.auto.most) for v, d in decided.items() if not d.done}
        if undecided:
            target[self.baseline] = max(target.values())
        return [r for r in runs if r.seed < target.get(r.variant, 0) and r.run_id not in done | tried]

    def record(self, frame, runs: list, tried: set[str]) -> AutoRecord:
        """The file's metadata `auto_seeds`: the rule and, per variant, the seeds it has, why it
        stopped, and the look (seeds) and interval (shown units) that decided."""
        have = {v: len(s) for v, s in _last_values(frame, self.metric, tried).items()}
        return AutoRecord(self.auto.spec(), self.baseline, self.metric, self.resolution, ALPHA,
                          tuple(looks(self.auto.most)), METHOD, self.extended_from,
                          {v: VariantRecord(have.get(v, 0), d.stopped, d.seeds, d.interval(self.scale))
                           for v, d in self.decisions(frame, runs, tried).items()})


METHOD = ("alpha spending alpha*t^2 over the planned looks, Bonferroni-bounded paired t-intervals, Holm's step-down "
          "over the study's comparisons")


@dataclass(frozen=True)
class VariantRecord:
    seeds: int  # the seeds it has
    stopped: str  # a key of STOPPED
    at: int  # the look (seeds) that decided
    interval: tuple[float, ...]  # of the paired difference at that look, in shown units; () where none

    def row(self, digits: int) -> list[str]:
        """seeds, why it stopped, the look that decided, the interval: as the tables show them."""
        interval = f"[{self.interval[0]:+.{digits}f}, {self.interval[1]:+.{digits}f}]" if self.interval else "—"
        at = "—" if self.stopped in ("baseline", "undecided") else str(self.at)
        return [str(self.seeds), STOPPED.get(self.stopped, self.stopped), at, interval]


@dataclass(frozen=True)
class AutoRecord:
    """The metadata `auto_seeds` of a study trained with --seeds auto: its one writer is
    `to_metadata`, its one reader `from_metadata`; the terminal's table and the HTML page show
    `rows()`."""

    seeds: str  # auto:MAX
    baseline: str
    metric: str
    resolution: float  # in the metric's shown units
    alpha: float
    looks: tuple[int, ...]
    method: str
    extended_from: str | None
    variants: dict[str, VariantRecord]

    def to_metadata(self) -> dict:
        return {"seeds": self.seeds, "baseline": self.baseline, "metric": self.metric,
                "resolution": self.resolution, "alpha": self.alpha, "looks": list(self.looks), "method": self.method,
                **({"extended_from": self.extended_from} if self.extended_from else {}),
                "variants": {v: {"seeds": r.seeds, "stopped": r.stopped, "at": r.at, "interval": list(r.interval)}
                             for v, r in self.variants.items()}}

    @classmethod
    def from_metadata(cls, record) -> AutoRecord | None:
        """The record a file's metadata holds, or None where it is missing, of another version or
        damaged by hand (nothing to show; a --resume decides again from the rows)."""
        def number(x):
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        def whole(x):
            return isinstance(x, int) and not isinstance(x, bool)

        try:
            variants = {}
            for name, v in record["variants"].items():
                interval = v["interval"]
                if not (isinstance(name, str) and whole(v["seeds"]) and whole(v["at"]) and isinstance(v["stopped"], str)
                        and isinstance(interval, list) and len(interval) in (0, 2) and all(map(number, interval))):
                    return None
                variants[name] = VariantRecord(v["seeds"], v["stopped"], v["at"], tuple(interval))
            extended = record.get("extended_from")
            if not (isinstance(record["seeds"], str) and isinstance(record["baseline"], str)
                    and isinstance(record["metric"], str) and number(record["resolution"]) and number(record["alpha"])
                    and isinstance(record["looks"], list) and all(map(whole, record["looks"]))
                    and (extended is None or isinstance(extended, str))):
                return None
            return cls(record["seeds"], record["baseline"], record["metric"], record["resolution"], record["alpha"],
                       tuple(record["looks"]), str(record.get("method", "")), extended, variants)
        except (KeyError, TypeError, AttributeError):
            return None

    def rows(self, digits: int) -> list[list[str]]:
        """Per variant: its name, seeds, why it stopped, the look and the interval that decided."""
        return [[variant, *said.row(digits)] for variant, said in self.variants.items()]


def _last_values(frame, metric: str, tried: set[str]) -> dict[str, dict[int, float]]:
    """variant -> {seed: the test `metric` at its run's last epoch}, NaN for a run that failed
    (here, `tried`), diverged, or has no finite value."""
    values: dict[str, dict[int, float]] = {}
    if frame is None or frame.empty:
        return values
    failed = frame[(frame["status"] == "failed") & frame["run_id"].isin(tried)]
    for _, row in failed.drop_duplicates("run_id").iterrows():
        values.setdefault(row["variant"], {})[int(row["seed"])] = math.nan
    test = frame[(frame["status"] != "failed") & (frame["split"] == "test")]
    if len(test):
        last = test[test["epoch"] == test.groupby("run_id")["epoch"].transform("max")]
        for variant, seed, value, status in zip(last["variant"], last["seed"], last[metric], last["status"]):
            # a diverged run's last value is no measurement (NaN weights score chance accuracy)
            kept = status != "diverged" and value is not None and math.isfinite(value)
            values.setdefault(variant, {})[int(seed)] = float(value) if kept else math.nan
    return values


def _leading(by_seed: dict[int, float]) -> int:
    """How many seeds from 0 on have a value (or a failure)."""
    n = 0
    while n in by_seed:
        n += 1
    return n
