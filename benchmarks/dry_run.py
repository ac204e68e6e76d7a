"""How close `--dry-run`'s estimate is to the real time: six studies of 5 s to a few minutes
on this machine (one of them a resume), each estimated with `--dry-run` and then run, both as
the commands a user types (the wall time of the whole process, start-up included).

    .venv/bin/python benchmarks/dry_run.py [--quick]

Prints, per study, the estimate, the real time and their ratio; the target is a ratio within
1.5 either way. Run it on a quiet machine: the estimate times a few steps, and a busy machine
changes those and the real run differently.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ABLATE = [sys.executable, "-m", "ablate"]
FMNIST = ["--dataset", "fashion-mnist"] if Path("/usr/share/datasets/fashion-mnist").is_dir() else \
    ["--dataset", "synthetic"]
STUDIES = [  # (name, the study's arguments, arguments run first, for a resume)
    ("linearity, synthetic 2,000 x 2 epochs", ["linearity", "--dataset", "synthetic", "--limit-train", "2000",
                                               "--limit-test", "500", "--epochs", "2"], None),
    ("augment none,crop-flip, synthetic 10,000 x 2", ["augment", "--dataset", "synthetic", "--sets",
                                                      "none,crop-flip", "--epochs", "2"], None),
    ("lr 0.01,0.1, 3 seeds, synthetic 4,000 x 3", ["lr", "--dataset", "synthetic", "--values", "0.01,0.1", "--seeds",
                                                   "3", "--limit-train", "4000", "--limit-test", "1000", "--epochs",
                                                   "3"], None),
    ("optimizer (6), Fashion-MNIST 20,000 x 2", ["optimizer", *FMNIST, "--limit-train", "20000", "--epochs", "2"],
     None),
    ("conv1 2,8,32 channels, Fashion-MNIST 60,000 x 2", ["conv1", *FMNIST, "--channels", "2,8,32", "--epochs", "2"],
     None),
    ("linearity resumed from 1 to 3 seeds, Fashion-MNIST 30,000 x 2",
     ["linearity", *FMNIST, "--limit-train", "30000", "--epochs", "2", "--seeds", "3"],
     ["linearity", *FMNIST, "--limit-train", "30000", "--epochs", "2", "--seeds", "1"]),
]


def estimate(args: list[str], cwd: Path) -> float:
    out = subprocess.run([*ABLATE, *args, "--dry-run", "--wide"], capture_output=True, text=True, cwd=cwd, check=True)
    said = re.search(r"estimated time: (?:(\d+)h )?(?:(\d+)m )?(\d+)s", " ".join(out.stdout.split()))
    if said is None:
        raise SystemExit(f"no estimate in:\n{out.stdout}{out.stderr}")
    hours, minutes, seconds = (int(g or 0) for g in said.groups())
    return 3600 * hours + 60 * minutes + seconds


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*ABLATE, *args], capture_output=True, text=True, cwd=cwd, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first two studies only")
    chosen = STUDIES[:2] if parser.parse_args().quick else STUDIES
    print(f"{'study':<64} {'estimate':>9} {'actual':>8} {'ratio':>6}")
    for name, args, first in chosen:
        folder = Path(tempfile.mkdtemp(prefix="ablate-dry-run-"))
        try:
            out = ["--out", str(folder / "s.parquet")]
            if first is not None:
                timed([*first, *out], folder)
                out.append("--resume")
            guess = estimate([*args, *out], folder)
            real = timed([*args, *out], folder)
            print(f"{name:<64} {guess:>8.0f}s {real:>7.1f}s {guess / real:>6.2f}", flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
