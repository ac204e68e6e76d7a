"""What saving a finished run costs as a study file grows: 10,000 synthetic runs (the rows of
a 2-epoch tutorial-net run of ablate's real schema, and its 10 per-class rows) saved one after
another through `results.StudyFile`, and the time per save around the 100th, 1,000th and
10,000th; then the same with the file rewritten at every save (what ablate did before the
ledger), up to `--rewrite-up-to` saves.

    .venv/bin/python benchmarks/ledger.py [--runs 10000] [--rewrite-up-to 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from ablate.results import files as results
from ablate.study import planning
from ablate.study.planning import resolve
from ablate.training.train import RunConfig


def run_rows(config: RunConfig, columns: dict, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    run = planning.Run("bench", f"v{n % 10}", n // 10, config)
    common = {"study": "bench", "variant": run.variant, "seed": run.seed, "run_id": run.run_id,
              "config_id": run.config_id}
    settings = planning.typed_columns(config.columns(), columns)
    rows = pd.DataFrame([{**settings, **common, "epoch": e, "split": s, "loss": 1.0 / (e + 1), "accuracy": 0.1 * e,
                          "lr": 0.1, "seconds": 1.0, "status": "ok", "params": 62006, "flops": 1_300_000,
                          "device": "cpu", "packed": 1} for e in range(3) for s in ("train", "test")],
                        columns=list(columns))
    classes = pd.DataFrame([{**common, "class_index": i, "class_name": f"class {i}", "images": 100, "accuracy": 0.5}
                            for i in range(10)], columns=results.PER_CLASS_SCHEMA.names)
    return rows, classes


def save(runs: int, folder: Path, patience: float) -> list[float]:
    """Seconds of each of `runs` saves; the study file closed (compacted) at the end."""
    config = resolve(RunConfig(epochs=2))
    columns = planning.run_columns([planning.Run("bench", "v", 0, config)])
    made = [run_rows(config, columns, n) for n in range(runs)]  # made first: only saving is timed
    path = folder / f"bench-{patience}.parquet"
    store = results.StudyFile(path, results.arrow_schema(columns), order={r["run_id"].iloc[0]: n
                                                                          for n, (r, _) in enumerate(made)})
    store.PATIENCE = patience
    seconds = []
    for n, (rows, classes) in enumerate(made):
        start = time.perf_counter()
        store.add(rows, classes, {"study": {"name": "bench"}}, f"run {n}")
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    store.close()
    print(f"  closing (the last compaction): {1000 * (time.perf_counter() - start):.1f} ms; the file holds "
          f"{len(pd.read_parquet(path)):,} rows of {pd.read_parquet(path)['run_id'].nunique():,} runs")
    return seconds


def window(seconds: list[float], n: int, width: int = 100) -> float:
    """Mean ms per save over the `width` saves up to the n-th: a rewrite now and then included."""
    part = seconds[max(0, n - width):n]
    return 1000 * statistics.mean(part)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rewrite-up-to", type=int, default=2_000)
    args = parser.parse_args()
    sizes = [n for n in (100, 1_000, 10_000, 100_000) if n <= args.runs]
    with tempfile.TemporaryDirectory() as folder:
        print(f"ledger ({results.StudyFile.PATIENCE:g} x patience): {args.runs:,} saves")
        ledger = save(args.runs, Path(folder), results.StudyFile.PATIENCE)
        print(f"rewrite at every save: {args.rewrite_up_to:,} saves")
        rewrite = save(args.rewrite_up_to, Path(folder), 0.0)
    print(f"\n{'saves':>8} {'ledger ms/save':>15} {'rewrite ms/save':>16}")
    for n in sizes:
        old = f"{window(rewrite, n):16.2f}" if n <= len(rewrite) else f"{'-':>16}"
        print(f"{n:>8,} {window(ledger, n):15.2f} {old}")
    print(f"\nledger: the {sizes[-1]:,}th save {window(ledger, sizes[-1]) / window(ledger, 100):.2f} x the 100th "
          f"(mean of the 100 saves up to each); total {sum(ledger):.1f} s")
    if len(rewrite) >= 1000:
        print(f"rewrite: the 1,000th save {window(rewrite, 1000) / window(rewrite, 100):.2f} x the 100th; "
              f"total {sum(rewrite):.1f} s for {len(rewrite):,} saves")


if __name__ == "__main__":
    main()
