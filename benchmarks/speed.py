"""Training speed of the tutorial net: the PyTorch tutorial's DataLoader pipeline, ablate's
loop (with and without the fresh pixel permutation) and the compute floor, same model, batch
size and threads, in interleaved rounds. Prints images/s (median over rounds) and ratios.

    .venv/bin/python benchmarks/speed.py [--batch-size 128] [--images 20000] [--rounds 3]

Run it on an otherwise idle machine: two threads collapse when another process takes a core.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from ablate.data import Dataset
from ablate.train import RunConfig, build_model, train_run


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
    return len(data.train_y) / result.epochs[0].seconds


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the tutorial pipeline")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
