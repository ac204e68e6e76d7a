"""Datasets, loaded once into memory as uint8 tensors (N x C x 32 x 32) with int64 labels.

Where a dataset is looked for, in order: `--data-dir`, `$ABLATE_DATA`, the per-user cache
(`$XDG_CACHE_HOME/ablate` or `~/.cache/ablate`) and, for Fashion-MNIST, Debian's
`/usr/share/datasets/fashion-mnist`. When it is nowhere, torchvision downloads it into the
first of the first three.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ablate.errors import UsageError
from ablate.registry import Registry


@dataclass(frozen=True)
class Source:
    """A named dataset: its classes, and how to load (train_x, train_y, test_x, test_y)."""

    name: str
    classes: list[str]
    load: Callable[[list[Path]], list[torch.Tensor]]  # the folders to look in -> four tensors
    description: str


DATASETS: Registry[Source] = Registry("dataset")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SYNTHETIC_SIZES = (10_000, 2_000)


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8, N x C x H x W
    train_y: torch.Tensor  # int64, N
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


def search_dirs(data_dir: Path | None) -> list[Path]:
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get("ABLATE_DATA"):
        dirs.append(Path(os.environ["ABLATE_DATA"]))
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ablate"
    return dirs + [cache]


# ---------------------------------------------------------------- MNIST-style IDX files

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (the MNIST format, gzipped or not) as a uint8 tensor."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[2] != 0x08:
        raise UsageError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8)
    if data.numel() != torch.Size(dims).numel():
        raise UsageError(f"{path} is truncated or corrupt: expected {dims}, found {data.numel()} bytes")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_folders(name: str, roots: list[Path]) -> list[Path]:
    folders = []
    for root in roots:
        folders += [root, root / name, root / TORCHVISION_FOLDER[name] / "raw"]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    return folders


def _load_idx(name: str, roots: list[Path]):
    folders = _idx_folders(name, roots)
    for folder in folders:
        paths = {split: [_find_idx(folder, stem) for stem in stems] for split, stems in IDX_FILES.items()}
        if all(p is not None for pair in paths.values() for p in pair):
            break
    else:
        _download(name, roots[0], folders)
        return _load_idx(name, roots)
    out = []
    for split in ("train", "test"):
        images, labels = (read_idx(p) for p in paths[split])
        images = F.pad(images.unsqueeze(1), (2, 2, 2, 2))  # 28x28 -> 32x32, as the nets expect
        out += [images, labels.long()]
    return out


# ---------------------------------------------------------------- CIFAR-10


def _load_cifar10(roots: list[Path]):
    import torchvision

    folders = [root for root in roots if (root / "cifar-10-batches-py").is_dir()]
    if not folders:
        _download("cifar10", roots[0], [r / "cifar-10-batches-py" for r in roots])
        folders = [roots[0]]
    out = []
    for train in (True, False):
        try:
            split = torchvision.datasets.CIFAR10(folders[0], train=train, download=False)
        except Exception as error:  # a truncated or foreign file in cifar-10-batches-py
            raise UsageError(f"the CIFAR-10 files in {str(folders[0] / 'cifar-10-batches-py')!r} are "
                             f"incomplete or corrupt ({type(error).__name__}); delete them to download again") from None
        out += [torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(split.targets)]
    return out


def _download(name: str, root: Path, looked: list[Path]) -> None:
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "mnist": torchvision.datasets.MNIST,
           "fashion-mnist": torchvision.datasets.FashionMNIST}[name]
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(root, train=True, download=True)
        cls(root, train=False, download=True)
    except Exception as error:  # offline, refused, disk full: all end the same way for the user
        hint = ""
        if name == "fashion-mnist":
            hint = " or install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
        where = ", ".join(dict.fromkeys(str(p) for p in looked))
        raise UsageError(
            f"{name} not found (looked in {where}) and the download failed "
            f"({type(error).__name__}: {str(error)[:120]}); put the files in --data-dir{hint}"
        ) from None


# ---------------------------------------------------------------- synthetic


def synthetic(train: int = SYNTHETIC_SIZES[0], test: int = SYNTHETIC_SIZES[1], seed: int = 0):
    """CIFAR-shaped, learnable, seeded: each class is a smooth colour pattern plus noise."""
    gen = torch.Generator().manual_seed(seed)
    templates = F.interpolate(torch.rand(10, 3, 4, 4, generator=gen), size=32, mode="bilinear")
    out = []
    for n in (train, test):
        labels = torch.arange(n) % 10
        labels = labels[torch.randperm(n, generator=gen)]
        noise = torch.randn(n, 3, 32, 32, generator=gen) * 0.3
        images = (templates[labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        out += [images, labels]
    return out


# ---------------------------------------------------------------- the registry and one entry point

for _source in (
    Source("cifar10", ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
           _load_cifar10, "CIFAR-10, 3x32x32, 50,000 + 10,000 images; downloaded once"),
    Source("mnist", [str(i) for i in range(10)], lambda roots: _load_idx("mnist", roots),
           "MNIST digits, padded to 1x32x32, 60,000 + 10,000; downloaded once"),
    Source("fashion-mnist", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                             "Sneaker", "Bag", "Ankle boot"], lambda roots: _load_idx("fashion-mnist", roots),
           "Fashion-MNIST, padded to 1x32x32, 60,000 + 10,000; downloaded once, or Debian's "
           "dataset-fashion-mnist offline"),
    Source("synthetic", [f"class {i}" for i in range(10)], lambda roots: synthetic(),
           "generated, CIFAR-shaped, learnable, 10,000 + 2,000; for tests and trials"),
):
    DATASETS.register(_source.name, _source)



def balanced_subset(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of n samples, as equal per class as they can be, chosen by a fixed permutation."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    shuffled = labels[order]
    classes = labels.unique().tolist()
    chosen = [
        order[shuffled == c][: n // len(classes) + (i < n % len(classes))]
        for i, c in enumerate(classes)
    ]
    chosen = torch.cat(chosen)
    if len(chosen) < n:  # a class ran short: fill from the others, in the same fixed order
        rest = order[~torch.isin(order, chosen)]
        chosen = torch.cat([chosen, rest[: n - len(chosen)]])
    return chosen.sort().values


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Dataset:
    source = DATASETS.get(name)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {str(data_dir)!r} is not a directory")
    train_x, train_y, test_x, test_y = source.load(search_dirs(data_dir))
    for split, limit, x, y in (("train", limit_train, train_x, train_y), ("test", limit_test, test_x, test_y)):
        if limit is None:
            continue
        if not 1 <= limit <= len(y):
            raise UsageError(f"--limit-{split} {limit} is out of range: {name} has {len(y)} {split} images")
        keep = balanced_subset(y, limit)
        if split == "train":
            train_x, train_y = x[keep], y[keep]
        else:
            test_x, test_y = x[keep], y[keep]
    return Dataset(name, train_x, train_y, test_x, test_y, source.classes)
