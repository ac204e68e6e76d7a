"""`--seeds auto` simulated: many studies of a variant against its baseline, with normal noise
and a true difference of 0 to 2 standard deviations of the per-seed paired difference,
through the rounds and decisions `--seeds auto` makes (ablate.study.sequential, no training). Prints,
per true difference, how often the rule said different, equal and reached MAX, and the seeds
it took on average; then the same looks with the plain 95 % t-interval at each, which is
what the correction is for.

    .venv/bin/python benchmarks/seeds.py [--studies 20000] [--max 10] [--resolution 0.5]

The resolution is in standard deviations of the paired difference. Last, the report's marks
and --seeds auto's decisions over a study of ten identical variants: the family-wise false
"different" rate with Holm's correction (the default) and without.
"""

from __future__ import annotations

import argparse

import numpy as np

from ablate.study import sequential


def stopping(differences: np.ndarray, most: int, resolution: float) -> sequential.Decision:
    """One study through the rounds: decide on the seeds so far, train to the next look."""
    seeds = sequential.FIRST
    while True:
        decision = sequential.decide(list(differences[:seeds]), most, resolution)
        if decision.done:
            return decision
        seeds = sequential.next_target(decision, most)


def plain(differences: np.ndarray, most: int) -> bool:
    """The same looks, each with the plain 95 % t-interval: did any exclude 0?"""
    for n in sequential.looks(most):
        low, high = sequential.t_interval(list(differences[:n]), sequential.ALPHA)
        if low > 0 or high < 0:
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=20000)
    parser.add_argument("--max", type=int, default=sequential.MOST)
    parser.add_argument("--resolution", type=float, default=0.5)
    parser.add_argument("--family-studies", type=int, default=2000,
                        help="studies of ten identical variants for the report's family-wise error")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{args.studies:,} simulated studies, --seeds auto:{args.max}, resolution {args.resolution:g} SD, "
          f"looks after {', '.join(map(str, sequential.looks(args.max)))} seeds")
    print(f"{'difference (SD)':>16} {'different':>10} {'equal':>8} {'max':>8} {'mean seeds':>11} {'plain t, any look':>18}")
    for difference in (0.0, 0.5, 1.0, 1.5, 2.0):
        draws = rng.normal(difference, 1.0, size=(args.studies, args.max))
        decisions = [stopping(d, args.max, args.resolution) for d in draws]
        said = {s: np.mean([d.stopped == s for d in decisions]) for s in ("different", "equal", "max")}
        seeds = np.mean([d.seeds for d in decisions])
        naive = np.mean([plain(d, args.max) for d in draws])
        print(f"{difference:>16.1f} {said['different']:>10.3f} {said['equal']:>8.3f} {said['max']:>8.3f} "
              f"{seeds:>11.2f} {naive:>18.3f}")
    error = 3 * np.sqrt(0.05 * 0.95 / args.studies)
    print(f"(a simulated fraction near 0.05 is within ±{error:.3f} of the true one, three standard errors)")
    family(args.family_studies, rng)


def family(studies: int, rng: np.random.Generator, variants: int = 10, seeds: int = 5) -> None:
    """Studies of `variants` identical variants (a baseline and 9 others), each seed's values
    normal: how often `ablate report` marks at least one comparison different, through the
    real summary code (compare.summarize), with Holm's correction and without."""
    import pandas as pd

    from ablate.reporting import compare

    names = [f"v{i}" for i in range(variants)]
    said = {"holm": 0, "none": 0}
    for _ in range(studies):
        values = rng.normal(0.8, 0.01, size=(variants, seeds))
        rows = pd.DataFrame([{"study": "s", "variant": name, "seed": seed, "task": "classify", "run_id": f"{i}/{seed}",
                              "loss": 1.0 - values[i, seed], "accuracy": values[i, seed]}
                             for i, name in enumerate(names) for seed in range(seeds)])
        for correction in said:
            summary = compare.summarize(rows, correction=correction)
            marks = summary[(summary["metric"] == "test_accuracy") & (summary["variant"] != "v0")]["significant"]
            said[correction] += bool(marks.any())
    error = 3 * np.sqrt(0.05 * 0.95 / studies)
    print(f"\n{studies:,} studies of {variants} identical variants, {seeds} seeds each, through ablate report's "
          f"summary: any of the {variants - 1} comparisons marked different (family-wise error)")
    print(f"  Holm (the default): {said['holm'] / studies:.3f}   uncorrected (--correction none): "
          f"{said['none'] / studies:.3f}   (±{error:.3f}, three standard errors)")
    auto_family(studies, rng, variants)


def auto_rounds(values: np.ndarray, most: int, resolution: float, family: bool) -> dict:
    """One study of --seeds auto:`most` through its rounds: `values` is variants x MAX seeds, the
    first row the baseline's; each round decides (sequential.decide_family, or each comparison at
    the full 5 % where not `family`) and trains each undecided variant to its next look."""
    names = [f"v{i}" for i in range(1, len(values))]
    have = {name: sequential.FIRST for name in names}
    while True:
        differences = {n: list(values[i + 1, :have[n]] - values[0, :have[n]]) for i, n in enumerate(names)}
        if family:
            decided = sequential.decide_family(differences, most, resolution)
        else:
            decided = {n: sequential.decide(d, most, resolution) for n, d in differences.items()}
        open_ = [n for n, d in decided.items() if not d.done]
        if not open_:
            return decided
        for name in open_:
            have[name] = sequential.next_target(decided[name], most)


def auto_family(studies: int, rng: np.random.Generator, variants: int = 10, most: int = sequential.MOST,
                resolution: float = 0.5) -> None:
    """Studies of `variants` identical variants under --seeds auto: how often any of the
    comparisons is decided different, through the rounds and the real decision code, with the
    study's comparisons a family (Holm, what --seeds auto does) and each on its own."""
    said = {True: 0, False: 0}
    for _ in range(studies):
        values = rng.normal(0.0, 1.0, size=(variants, most))
        for family in said:
            said[family] += any(d.stopped == "different" for d in auto_rounds(values, most, resolution, family).values())
    error = 3 * np.sqrt(0.05 * 0.95 / studies)
    print(f"\n{studies:,} studies of {variants} identical variants under --seeds auto:{most} (resolution "
          f"{resolution:g} SD): any of the {variants - 1} comparisons decided different (family-wise error)")
    print(f"  Holm across the comparisons (what --seeds auto does): {said[True] / studies:.3f}   each on its own: "
          f"{said[False] / studies:.3f}   (±{error:.3f}, three standard errors)")


if __name__ == "__main__":
    main()
