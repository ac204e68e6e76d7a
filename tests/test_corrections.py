"""Verdicts corrected across a study's comparisons (Holm's step-down, as statsmodels computes it)
and seeds planned by power (statsmodels' TTestPower), in every report."""

import io
import math
import random

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from ablate.reporting import compare
from ablate.study.sequential import seeds_for_power

SEEDS = tuple(range(5))
SHIFT = {1: 0.004, 2: 0.006, 3: 0.012, 4: 0.0}  # variant index -> true gain in accuracy over alpha


def noise(v, seed):  # fake_study's variants gain 0.1 each: taken back, then a small true gain and noise
    return -0.1 * v + SHIFT.get(v, 0.0) + random.Random(f"{v}/{seed}").gauss(0, 0.004)


@pytest.fixture
def study(fake_study, tmp_path):
    return fake_study(tmp_path / "s.parquet", variants=("alpha", "b", "c", "d", "e"), seeds=SEEDS, noise=noise)


def _paired(frame: pd.DataFrame, variant: str, metric: str = "accuracy") -> np.ndarray:
    last = frame[(frame["split"] == "test") & (frame["epoch"] == frame["epoch"].max())]
    table = last.pivot(index="seed", columns="variant", values=metric)
    return (table[variant] - table["alpha"]).to_numpy()


def test_holms_adjusted_p_values_and_marks_are_statsmodels(study):
    frame = pd.read_parquet(study)
    summary = compare.summarize(compare.pick_epochs(frame))
    rows = summary[(summary.metric == "test_accuracy") & (summary.variant != "alpha")].set_index("variant")
    raw = [stats.ttest_rel(*(lambda d: (d, np.zeros_like(d)))(_paired(frame, v))).pvalue for v in rows.index]
    reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method="holm")
    assert rows["p_value"].to_numpy() == pytest.approx(raw)
    assert rows["p_adjusted"].to_numpy() == pytest.approx(adjusted)
    assert list(rows["significant"]) == list(reject)
    assert (rows["correction"] == "holm").all()
    uncorrected = compare.summarize(compare.pick_epochs(frame), correction="none")
    plain = uncorrected[(uncorrected.metric == "test_accuracy") & (uncorrected.variant != "alpha")]
    assert list(plain["significant"]) == list((plain["diff_ci_low"] > 0) | (plain["diff_ci_high"] < 0))
    # the point of it: a comparison that is "different" on its own is not, once the family is counted
    assert (plain["significant"].to_numpy() & ~rows["significant"].to_numpy()).any()


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")  # its solver, in the check
def test_seeds_for_power_are_statsmodels_rounded_up():
    for difference, std in ((0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (0.2, 1.0), (3.0, 0.5), (0.04, 0.03)):
        want = TTestPower().solve_power(effect_size=difference / std, alpha=0.05, power=0.8, alternative="two-sided")
        if want == want:  # statsmodels' solver finds none for a huge effect: the property below still holds
            assert seeds_for_power(difference, std) == max(2, math.ceil(want)), (difference, std)
        n = seeds_for_power(difference, std)
        below = TTestPower().power(difference / std, n - 1, 0.05) if n > 2 else 0.0
        assert TTestPower().power(difference / std, n, 0.05) >= 0.8 and not below >= 0.8  # NaN: not computable
    assert seeds_for_power(0.0, 1.0) is None and seeds_for_power(1e-9, 1.0) is None
    assert seeds_for_power(0.1, 0.0) == 2
    # seeds that differ by float rounding only: statsmodels' power is NaN there, and the search must end
    assert seeds_for_power(0.05, 1e-17) == 2 and seeds_for_power(0.05, 0.0005) == 2


def test_the_report_plans_seeds_by_power_for_what_it_sees_and_for_an_effect(study, ablate):
    frame = pd.read_parquet(study)
    csv = pd.read_csv(io.StringIO(ablate(["report", study, "--format", "csv", "--effect", "0.5"]).stdout))
    rows = csv[(csv.metric == "test_accuracy") & (csv.variant != "alpha")].set_index("variant")
    for variant, row in rows.iterrows():
        paired = _paired(frame, variant)
        assert row["seeds_power"] == seeds_for_power(paired.mean(), paired.std(ddof=1))
        assert row["seeds_for_effect"] == seeds_for_power(0.005, paired.std(ddof=1))  # 0.5 points of accuracy
    table = ablate(["report", study, "--effect", "0.5", "--wide"])
    said = " ".join(table.stdout.split())
    assert "80 % power" in said and "for Δ effect" in said
    assert "at a family-wise 5 % over the study's 4 comparisons of each metric (Holm" in said
    plain = " ".join(ablate(["report", study, "--correction", "none", "--wide"]).stdout.split())
    assert "each comparison at 5 %, uncorrected: --correction none" in plain and "for Δ effect" not in plain


@pytest.mark.parametrize("args, said", [
    (["--correction", "bonferroni"], "unknown correction 'bonferroni'; allowed: holm, none"),
    (["--effect", "0"], "--effect must be a finite number > 0"),
    (["--effect", "nan"], "--effect must be a finite number > 0"),
])
def test_bad_corrections_and_effects_are_one_line(study, ablate, args, said):
    result = ablate(["report", study, *args])
    assert result.exit_code == 2 and said in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_holm_is_statsmodels_on_thousands_of_families(monkeypatch):
    import gc

    from ablate.study.sequential import holm

    monkeypatch.setattr(gc, "collect", lambda *args: 0)  # statsmodels' Holm collects at every call: slow here
    rng = np.random.default_rng(0)
    for _ in range(3000):
        m = int(rng.integers(1, 12))
        p = rng.uniform(0, 0.2, m) ** rng.uniform(0.5, 3)
        if rng.random() < 0.2:
            p[rng.integers(0, m)] = p[0]  # ties
        reject, adjusted, _, _ = multipletests(p, alpha=0.05, method="holm")
        mine_reject, mine_adjusted = holm(list(p))
        assert list(mine_reject) == list(reject)
        assert mine_adjusted == pytest.approx(adjusted, abs=1e-12)
