"""The GPU path in one call: images/s of training the tutorial net, threeconv and resnet18 at
batch 128 and 512 with K = 1, 8 and 32 seeds packed into one model, then the wall time of
report A's protocol on Fashion-MNIST (conv1's 10 widths, linearity's 3 variants and
permutation's 3, 3 seeds, 10 epochs) as three `ablate` commands; `ablate lr` (4 rates x 3
seeds) packed as one against one by one; and `--deterministic` twice, its files compared bit
for bit.

    .venv/bin/python benchmarks/gpu.py [--device cuda] [--images 20000] [--skip-protocol]

Images/s counts every seed's images: K seeds of an epoch of N images are K x N images. The
second of two epochs is timed (the first pays cuDNN's autotuning and the allocator's growth).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ablate.data.datasets import Dataset
from ablate.study.planning import resolve
from ablate.training.train import RunConfig, train_runs
from speed import cifar_shaped  # benchmarks/speed.py, beside this file

PROTOCOL = [["conv1"], ["linearity"], ["permutation"]]  # report A


def images_per_second(data: Dataset, model: str, batch_size: int, k: int, device: torch.device, amp: str) -> float:
    config = resolve(RunConfig(model=model, epochs=2, batch_size=batch_size, amp=amp))
    results = train_runs(config, data, list(range(k)), device)
    if any(r.status == "failed" for r in results):
        raise RuntimeError(results[0].error)
    epoch = [e for e in results[0].epochs if e.split == "train" and e.epoch == 2][0]
    seconds = epoch.seconds if results[0].packed > 1 else sum(
        e.seconds for r in results for e in r.epochs if e.split == "train" and e.epoch == 2)
    return k * len(data.train_y) / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--models", default="tutorial,threeconv,resnet18")
    parser.add_argument("--batches", default="128,512")
    parser.add_argument("--packs", default="1,8,32")
    parser.add_argument("--amp", default="none,bf16")
    parser.add_argument("--skip-protocol", action="store_true")
    parser.add_argument("--epochs", type=int, default=10, help="of the studies (10: report A's)")
    parser.add_argument("--limit-train", type=int, help="of the studies: a quick check of the script")
    args = parser.parse_args()
    from ablate.data.datasets import on_disk

    args.dataset_on_disk = on_disk("fashion-mnist", None)
    device = torch.device(args.device)
    data = cifar_shaped(args.images)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, CIFAR-shaped data, {args.images:,} images per seed, torch {torch.__version__}")
    print(f"{'model':<10} {'batch':>5} {'amp':>5} {'K':>3} {'images/s':>10}")
    for model in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            for amp in args.amp.split(","):
                for k in map(int, args.packs.split(",")):
                    speed = images_per_second(data, model, batch, k, device, amp)
                    print(f"{model:<10} {batch:>5} {amp:>5} {k:>3} {speed:>10,.0f}", flush=True)
    ablate = Path(sys.executable).with_name("ablate")
    data_args = ["--dataset", "fashion-mnist" if args.dataset_on_disk else "synthetic", "--epochs", str(args.epochs),
                 "--device", args.device, *(["--limit-train", str(args.limit_train)] if args.limit_train else [])]
    with tempfile.TemporaryDirectory() as folder:
        lr = [str(ablate), "lr", *data_args, "--seeds", "3"]
        for flag in ("--pack", "--no-pack"):
            start = time.perf_counter()
            subprocess.run([*lr, flag, "--out", f"{folder}/lr{flag}.parquet"], check=True, stderr=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL)
            print(f"ablate lr, 4 rates x 3 seeds, {flag}: {time.perf_counter() - start:.1f} s wall", flush=True)
        import pandas as pd

        files = []
        for i in range(2):
            files.append(f"{folder}/det{i}.parquet")
            subprocess.run([str(ablate), "linearity", *data_args, "--seeds", "2", "--deterministic", "--out", files[-1]],
                           check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        numbers = ["variant", "seed", "epoch", "split", "loss", "accuracy"]
        same = pd.read_parquet(files[0])[numbers].equals(pd.read_parquet(files[1])[numbers])
        print(f"--deterministic twice: {'bit-identical' if same else 'DIFFERENT'} losses and accuracies")
    if args.skip_protocol:
        return
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for study in PROTOCOL:
            command = [str(ablate), *study, "--dataset", "fashion-mnist", "--seeds", "3", "--epochs", "10",
                       "--device", args.device, "--out", f"{folder}/{study[0]}.parquet"]
            print("$", " ".join(command[1:]), flush=True)
            subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    print(f"report A's protocol: {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
