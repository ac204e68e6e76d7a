"""What saving a finished run costs as a study file grows: 10,000 synthetic runs (the rows of
a 2-epoch tutorial-net run of ablate's real schema, and its 10 per-class rows) saved one after
another through `results.StudyFile`, and the time per save around the 100th, 1,000th and
10,000th; then the same with the file rewritten at every save (what ablate did before the
ledger), up to `--rewrite-up-to` saves. Then the work that grows with a study: `ablate
report`, `ablate plot`, `ablate.load` and `--resume` (nothing left to train) on the file of a
real `ablate lr` study of 1,000 and of 10,000 runs (10 rates x 100 and x 1,000 seeds, its rows
made without training), each a whole process, best of `--rounds`.

    .venv/bin/python benchmarks/ledger.py [--runs 10000] [--rewrite-up-to 2000] [--grow 1000,10000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
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


RATES = ",".join(f"{0.001 * 2 ** i:g}" for i in range(10))
LR = ["lr", "--values", RATES, "--dataset", "synthetic", "--limit-train", "100", "--limit-test", "50",
      "--epochs", "2", "--threads", "2"]


def study_file(runs: int, path: Path) -> None:
    """The file `ablate lr` of 10 rates x runs / 10 seeds writes, its rows made up (each run's
    epochs and per-class rows as the runner makes them), saved in batches of 1,000 runs."""
    import torch

    from ablate.data.datasets import load_dataset
    from ablate.execution import runner
    from ablate.study.studies import get_study
    from ablate.training.train import EpochRecord, RunResult

    data = load_dataset("synthetic", limit_train=100, limit_test=50)
    study = get_study("lr", values=RATES)
    planned = planning.plan(study, {"dataset": "synthetic", "limit_train": 100, "limit_test": 50, "epochs": 2,
                                   "threads": 2},
                            runs // 10)
    columns = planning.run_columns(planned)
    gen = torch.Generator().manual_seed(0)
    with results.StudyFile(path, planning.results_schema(planned, pd.DataFrame(), path),
                           order={r.run_id: i for i, r in enumerate(planned)}) as store:
        for start in range(0, len(planned), 1000):
            made = []
            for run in planned[start:start + 1000]:
                acc = torch.rand((), generator=gen).item()
                epochs = [EpochRecord(e, split, 2.3 - acc, {"accuracy": acc * e / 2}, run.config.lr, 0.1)
                          for e in range(3) for split in ("train", "test") if e or split]
                made.append(runner.run_rows(run, RunResult(epochs, [acc] * 10, "ok", train_images=100), "cpu",
                                            data, columns))
            store.add(pd.concat([r for r, _ in made]), pd.concat([c for _, c in made]),
                      {"study": study.metadata() if hasattr(study, "metadata") else {"name": "lr"}}, "batch")


def grow(sizes: list[int], rounds: int) -> None:
    ablate = str(Path(sys.executable).with_name("ablate"))
    commands = {
        "ablate report": lambda f: [ablate, "report", f],
        "ablate plot": lambda f: [ablate, "plot", f, "--out", f + ".png"],
        "ablate.load": lambda f: [sys.executable, "-c", f"import ablate; ablate.load({f!r})"],
        "--resume": lambda f: [ablate, *LR, "--seeds", str(n // 10), "--out", f, "--resume"],
    }
    seconds: dict[str, dict[int, float]] = {name: {} for name in commands}
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            path = str(Path(folder) / f"lr{n}.parquet")
            start = time.perf_counter()
            study_file(n, Path(path))
            print(f"  the file of {n:,} runs made in {time.perf_counter() - start:.1f} s")
            for name, command in commands.items():
                times = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    done = subprocess.run(command(path), capture_output=True, text=True)
                    times.append(time.perf_counter() - start)
                    if done.returncode != 0:
                        raise SystemExit(f"{name} failed on {n} runs: {done.stderr.strip()[-300:]}")
                seconds[name][n] = min(times)
    print(f"\nwhole processes on an `ablate lr` file, best of {rounds}")
    growth = f"x for {sizes[-1] // sizes[0]} x the runs"
    print(f"{'':<15}" + "".join(f"{f'{n:,} runs s':>15}" for n in sizes) + f"{growth:>22}")
    for name, by in seconds.items():
        print(f"{name:<15}" + "".join(f"{by[n]:>15.2f}" for n in sizes) + f"{by[sizes[-1]] / by[sizes[0]]:>22.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rewrite-up-to", type=int, default=2_000)
    parser.add_argument("--grow", default="1000,10000", help="study sizes (runs) of the growth figures; '' skips")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-saves", action="store_true", help="only the growth figures")
    args = parser.parse_args()
    if args.grow:
        grow([int(n) for n in args.grow.split(",")], args.rounds)
    if args.skip_saves:
        return
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
