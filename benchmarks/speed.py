"""Training speed of the tutorial net: the PyTorch tutorial's DataLoader pipeline, ablate's
loop (with and without the fresh pixel permutation) and the compute floor, same model, batch
size and threads, in interleaved rounds; K seeds packed into one model against the same K one
after another; whole studies with --pack auto against --no-pack; the first second of a
study (the imports); and a whole study as a process, ablate against the tutorial's way
(benchmarks/tutorial_way.py). Prints images/s (median over rounds) and ratios. The study
file's saving is benchmarks/ledger.py's.

    .venv/bin/python benchmarks/speed.py [--batch-size 128] [--images 20000] [--rounds 3]

Run it on an otherwise idle machine: two threads collapse when another process takes a core.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from ablate.data.datasets import Dataset
from ablate.study.planning import resolve
from ablate.training.train import RunConfig, build_model, train_run, train_runs


def cifar_shaped(n: int) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=gen)
    return Dataset("bench", x, y, x[:1000], y[:1000], [str(i) for i in range(10)])


class PILDataset(torch.utils.data.Dataset):
    """What the tutorial's torchvision.datasets.CIFAR10 does per sample: PIL image, transform."""

    def __init__(self, data: Dataset):
        self.images = data.train_x.permute(0, 2, 3, 1).numpy()
        self.labels = data.train_y.tolist()
        self.transform = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def tutorial_pipeline(data: Dataset, batch_size: int, workers: int) -> float:
    model = build_model(RunConfig(), 3, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    loader = torch.utils.data.DataLoader(PILDataset(data), batch_size=batch_size, shuffle=True,
                                         num_workers=workers)
    start = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return len(data.train_y) / (time.perf_counter() - start)


def ablate_loop(data: Dataset, batch_size: int, permutation: str = "none") -> float:
    config = RunConfig(epochs=1, batch_size=batch_size, permutation=permutation)
    result = train_run(config, data, seed=0, device=torch.device("cpu"))
    epoch = next(e for e in result.epochs if e.epoch == 1 and e.split == "train")  # epoch 0: the untrained model
    return len(data.train_y) / epoch.seconds


def compute_floor(data: Dataset, batch_size: int, channels_last: bool, steps: int) -> float:
    model = build_model(RunConfig(), 3, 10)
    x = data.train_x[:batch_size].float() / 127.5 - 1
    y = data.train_y[:batch_size]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


PACKED = {  # the tutorial net as its study trains it, and report 001's autoencoder at its batch of 32
    "tutorial": RunConfig(epochs=1),
    "autoencoder": RunConfig(task="reconstruct", model="autoencoder", epochs=1, batch_size=32, normalization="none",
                             optimizer="adamw", lr=0.001, momentum=None),
}


def seeds(data: Dataset, config: RunConfig, k: int, pack: bool) -> float:
    """Images/s of training K seeds for an epoch, packed into one model or one after another."""
    config = resolve(config)
    results = train_runs(config, data, list(range(k)), torch.device("cpu"), pack=pack)
    assert all(r.packed == (k if pack else 1) for r in results)
    epoch = [next(e for e in r.epochs if e.epoch == 1 and e.split == "train") for r in results]
    seconds = epoch[0].seconds if pack else sum(e.seconds for e in epoch)
    return k * len(data.train_y) / seconds


STUDY = ["linearity", "--dataset", "synthetic", "--epochs", "2", "--limit-train", "10000", "--limit-test", "1000"]


def whole_process(command: list[str]) -> float:
    """Wall seconds of a command, from its process's start to its end."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def processes(rounds: int) -> None:
    ablate = Path(sys.executable).with_name("ablate")
    tutorial = Path(__file__).with_name("tutorial_way.py")
    times = {"ablate": [], "tutorial": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            times["ablate"].append(whole_process([str(ablate), *STUDY, "--out", f"{folder}/l.parquet", "--force"]))
            times["tutorial"].append(whole_process([sys.executable, str(tutorial)]))
    ratio = statistics.median(a / t for a, t in zip(times["ablate"], times["tutorial"]))
    print(f"\nwhole process: `ablate {' '.join(STUDY)}`")
    ablate_s, tutorial_s = statistics.median(times["ablate"]), statistics.median(times["tutorial"])
    print(f"  ablate {ablate_s:.1f} s, the tutorial's way {tutorial_s:.1f} s"
          f" (benchmarks/tutorial_way.py): {ratio:.2f} x its wall time, median of {rounds} rounds")


AUTO = {  # --pack auto against --no-pack, whole studies of 3 seeds: the tutorial net at 128, the autoencoder at 32
    "tutorial net, batch 128": ["linearity", "--dataset", "synthetic", "--epochs", "2", "--limit-train", "10000",
                                "--limit-test", "1000", "--seeds", "3"],
    "autoencoder, batch 32": ["latent", "--dims", "10", "--epochs", "2", "--limit-train", "10000", "--limit-test",
                              "1000", "--seeds", "3"],
}


def auto_packing(rounds: int) -> None:
    """Wall time of each AUTO study with --no-pack, and with --pack auto measuring afresh (its
    remembered decisions set aside for the run, then put back): auto's probe is in its time."""
    from ablate.data.datasets import cache_dir, on_disk

    ablate = Path(sys.executable).with_name("ablate")
    remembered = cache_dir() / "packing.json"
    print("\n--pack auto (measuring afresh, its probe included) against --no-pack, whole processes, "
          f"median of {rounds} rounds")
    print(f"{'study':<26} {'--no-pack s':>11} {'auto s':>7} {'no-pack / auto':>15}  auto chose")
    for name, study in AUTO.items():
        study = study + ["--dataset", "fashion-mnist" if on_disk("fashion-mnist", None) else "synthetic"] \
            if "--dataset" not in study else study
        times = {"no-pack": [], "auto": []}
        chose = ""
        with tempfile.TemporaryDirectory() as folder:
            out = f"{folder}/s.parquet"
            for _ in range(rounds):
                times["no-pack"].append(whole_process([str(ablate), *study, "--no-pack", "--out", out, "--force"]))
                kept = remembered.read_bytes() if remembered.exists() else None
                remembered.unlink(missing_ok=True)
                try:
                    times["auto"].append(whole_process([str(ablate), *study, "--out", out, "--force"]))
                finally:
                    remembered.unlink(missing_ok=True)
                    if kept is not None:
                        remembered.write_bytes(kept)
                from ablate.results.files import read_metadata

                chose = ", ".join(f"{v}: {'packed' if c['packed'] else 'one by one'} ({c['ratio'] or 0:.2f} x)"
                                  for v, c in read_metadata(out)["packing"].items())
        no_pack, auto = statistics.median(times["no-pack"]), statistics.median(times["auto"])
        print(f"{name:<26} {no_pack:>11.1f} {auto:>7.1f} {no_pack / auto:>15.2f}  {chose}")


VARIANTS_PACKED = ["lr", "--values", "0.001,0.01,0.1,1", "--dataset", "synthetic", "--epochs", "2",
                   "--limit-train", "3000", "--limit-test", "500", "--seeds", "3"]


def variants_packed(rounds: int, batches=(8, 32, 128)) -> None:
    """`ablate lr` (4 rates x 3 seeds: one pack of 12 members, variants and seeds together)
    with --pack against --no-pack, whole processes, at each batch size."""
    ablate = Path(sys.executable).with_name("ablate")
    print(f"\nvariants packed with their seeds: `ablate {' '.join(VARIANTS_PACKED)}`, --pack (one pack of 12) "
          f"against --no-pack, whole processes, median of {rounds} rounds")
    print(f"{'batch':>5} {'--no-pack s':>11} {'--pack s':>9} {'no-pack / pack':>15}")
    with tempfile.TemporaryDirectory() as folder:
        for batch in batches:
            times = {"--no-pack": [], "--pack": []}
            for _ in range(rounds):
                for flag in times:
                    times[flag].append(whole_process([str(ablate), *VARIANTS_PACKED, "--batch-size", str(batch), flag,
                                                      "--out", f"{folder}/v.parquet", "--force"]))
            alone, packed = statistics.median(times["--no-pack"]), statistics.median(times["--pack"])
            print(f"{batch:>5} {alone:>11.1f} {packed:>9.1f} {alone / packed:>15.2f}")


def first_second() -> None:
    """Where a study's first seconds go: the imports, and the whole of a tiny study."""
    ablate = Path(sys.executable).with_name("ablate")
    runs = {"python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "ablate --help": [str(ablate), "--help"],
            "ablate linearity, 1 epoch of 500 images": [str(ablate), "linearity", "--dataset", "synthetic",
                                                        "--epochs", "1", "--limit-train", "500", "--limit-test",
                                                        "100"]}
    print("\nthe first second: whole processes, best of 3")
    with tempfile.TemporaryDirectory() as folder:
        for name, command in runs.items():
            extra = ["--out", f"{folder}/t.parquet", "--force"] if "linearity" in command else []
            print(f"  {name:<42} {min(whole_process(command + extra) for _ in range(3)):5.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the tutorial pipeline")
    parser.add_argument("--packs", default="3,5", help="the K seeds packed into one model, compared")
    parser.add_argument("--pack-images", type=int, default=5000, help="images per seed in the packing rounds")
    parser.add_argument("--whole-only", action="store_true",
                        help="only the whole-process figures: the tutorial's way and variants packed")
    parser.add_argument("--skip-processes", action="store_true",
                        help="leave out the whole-process comparisons (auto packing, the first second, the tutorial's way)")
    args = parser.parse_args()
    if args.whole_only:
        processes(args.rounds)
        variants_packed(1)
        return
    torch.set_num_threads(args.threads)
    data = cifar_shaped(args.images)
    steps = max(args.images // args.batch_size, 1)
    cases = {
        f"tutorial DataLoader, {args.workers} workers": lambda: tutorial_pipeline(data, args.batch_size, args.workers),
        "ablate loop": lambda: ablate_loop(data, args.batch_size),
        "ablate loop, fresh permutation": lambda: ablate_loop(data, args.batch_size, "fresh"),
        "compute floor": lambda: compute_floor(data, args.batch_size, False, steps),
        "compute floor, channels_last": lambda: compute_floor(data, args.batch_size, True, steps),
    }
    speeds = {name: [] for name in cases}
    for _ in range(args.rounds):  # interleaved, so drift in machine load hits every case alike
        for name, case in cases.items():
            speeds[name].append(case())
    floor = statistics.median(speeds["compute floor"])
    print(f"tutorial net, CIFAR-shaped uint8 data, {args.images:,} images, batch {args.batch_size}, "
          f"{args.threads} threads, median of {args.rounds} rounds")
    print(f"{'pipeline':<36} {'images/s':>10} {'x floor':>8}")
    for name, values in speeds.items():
        print(f"{name:<36} {statistics.median(values):>10,.0f} {statistics.median(values) / floor:>8.2f}")
    fresh = [f / p for f, p in zip(speeds["ablate loop, fresh permutation"], speeds["ablate loop"])]
    print(f"fresh permutation costs {100 * (1 - statistics.median(fresh)):.1f} % of the loop's speed")

    few = cifar_shaped(args.pack_images)
    print(f"\nK seeds packed into one model vs one after another, {args.pack_images:,} images per seed, "
          f"median of {args.rounds} rounds")
    print(f"{'model':<12} {'batch':>5} {'K':>3} {'one by one img/s':>17} {'packed img/s':>13} {'ratio':>6}")
    for model, config in PACKED.items():
        data = few if model == "tutorial" else Dataset("bench", few.train_x[:, :1], few.train_y, few.test_x[:, :1],
                                                        few.test_y, few.classes)  # one channel, like MNIST
        for k in map(int, args.packs.split(",")):
            alone, packed = [], []
            for _ in range(args.rounds):
                alone.append(seeds(data, config, k, pack=False))
                packed.append(seeds(data, config, k, pack=True))
            ratio = statistics.median(p / a for p, a in zip(packed, alone))
            print(f"{model:<12} {config.batch_size:>5} {k:>3} {statistics.median(alone):>17,.0f} "
                  f"{statistics.median(packed):>13,.0f} {ratio:>6.2f}")
    if not args.skip_processes:
        auto_packing(args.rounds)
        first_second()
        processes(args.rounds)
        variants_packed(1)


if __name__ == "__main__":
    main()
