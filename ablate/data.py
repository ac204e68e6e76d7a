"""Datasets, loaded once into memory as uint8 tensors (N x C x H x W, 32 x 32 unless resized)
with int64 labels.

Where a dataset is looked for, in order: `--data-dir`, `$ABLATE_DATA`, the per-user cache
(`$XDG_CACHE_HOME/ablate` or `~/.cache/ablate`) and, for Fashion-MNIST, Debian's
`/usr/share/datasets/fashion-mnist`. When it is nowhere, torchvision downloads it into the
first of the first three.

`folder:PATH` is an ImageFolder tree of the user's own images (PATH/<class>/<image>, or
PATH/train/<class>/<image> and PATH/test/<class>/<image>), decoded once and kept in the
per-user cache under `folders/`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ablate.errors import UsageError, unknown_name
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
        noise = torch.randn(n, 3, 32, 32, generator=gen)
        # in place, without five 120 MB temporaries (0.33 s instead of 0.58 s): the same bytes
        # as (templates[labels] + noise * 0.3).clamp(0, 1).mul(255).round(), a test checks
        images = noise.mul_(0.3).add_(templates[labels]).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
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


# ---------------------------------------------------------------- sizes and channels

DEFAULT_IMAGE_SIZE = 32
IMAGE_SIZES = (8, 1024)


def _check_image_size(image_size: int | None) -> None:
    low, high = IMAGE_SIZES
    if image_size is not None and not (type(image_size) is int and low <= image_size <= high):
        raise UsageError(f"--image-size {image_size!r} is not allowed: give a whole number from {low} to {high}")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (... x C x H x W) made size x size: bilinear with antialias, back to uint8."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    from torchvision.transforms.v2.functional import resize as tv_resize

    return tv_resize(images, [size, size], antialias=True)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 N x C x H x W with `channels` channels: gray -> RGB by repeating, RGB -> gray by luma."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if have == 3 and channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise UsageError(f"cannot turn {have}-channel images into {channels}-channel ones: only 1 <-> 3 is allowed")


# ---------------------------------------------------------------- folder:PATH, the user's own images

FOLDER_PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
LAYOUT = "PATH/<class>/<image>, or PATH/train/<class>/<image> and PATH/test/<class>/<image>"
SPLIT_SEED = 0
CACHE_VERSION = 1


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:20])
    return "[" + shown + (f", ... ({len(names)} in all)" if len(names) > 20 else "") + "]"


def _folder_root(spec: str) -> Path:
    given = spec[len(FOLDER_PREFIX):]
    if not given:
        raise UsageError(f"{spec!r} names no folder: give folder:PATH with {LAYOUT}")
    root = Path(given).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UsageError(f"{str(root)!r} {what}: folder:PATH needs a folder of images, {LAYOUT}")
    return root


def _classes(tree: Path) -> list[str]:
    classes = sorted(d.name for d in tree.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UsageError(f"{str(tree)!r} has no class folders: folder:PATH needs {LAYOUT}")
    return classes


def _trees(root: Path) -> tuple[list[str], dict[str, Path]]:
    """The class names, and the trees to read: {"train": .., "test": ..} or {"all": root}."""
    splits = [s for s in ("train", "test") if (root / s).is_dir()]
    if len(splits) == 1:
        raise UsageError(f"{str(root)!r} has {splits[0]}/ but no {({'train', 'test'} - set(splits)).pop()}/: "
                         f"folder:PATH needs {LAYOUT}")
    if not splits:
        return _classes(root), {"all": root}
    train, test = _classes(root / "train"), _classes(root / "test")
    if train != test:
        raise UsageError(f"the class folders of {str(root / 'train')!r} and {str(root / 'test')!r} differ: "
                         f"train has {_names(train)}, test has {_names(test)}; they must be the same")
    return train, {"train": root / "train", "test": root / "test"}


def _images(tree: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (tree / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not found:
            raise UsageError(f"class folder {str(tree / name)!r} has no images (looked for "
                             f"{', '.join('*' + e for e in IMAGE_EXTENSIONS)})")
        files += [(p, label) for p in found]
    return files


def _decode(files: list[tuple[Path, int]], image_size: int, root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every readable image as RGB, resized to image_size x image_size; the unreadable ones' paths."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    images, labels, skipped = [], [], []
    for path, label in files:
        try:
            with Image.open(path) as image:
                pixels = pil_to_tensor(image.convert("RGB"))
        except Exception:  # not an image, truncated, too large: skipped, and counted in one warning
            skipped.append(path.relative_to(root).as_posix())
            continue
        images.append(resize(pixels, image_size))
        labels.append(label)
    if not images:
        raise UsageError(f"no readable images in {str(root)!r}: all {len(files)} failed to decode "
                         f"(first: {str(root / skipped[0])!r})")
    return torch.stack(images), torch.tensor(labels), skipped


def _cache_file(root: Path, files: list[tuple[Path, int]], classes: list[str], image_size: int) -> Path:
    listing = []
    for path, label in files:
        stat = path.stat()
        listing.append([path.relative_to(root).as_posix(), label, stat.st_size, stat.st_mtime_ns])
    key = json.dumps([CACHE_VERSION, str(root.resolve()), image_size, classes, listing])
    return search_dirs(None)[-1] / "folders" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".pt")


def _save_atomically(content: dict, path: Path) -> None:
    """torch.save into a temporary file beside `path`, then renamed: no reader sees half a file."""
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as file:
            torch.save(content, file)
        os.replace(temp, path)
    except (OSError, RuntimeError) as error:  # a read-only or full cache: the next load decodes again
        print(f"warning: could not cache the decoded images in {path.parent} ({error})", file=sys.stderr)
        if temp:
            Path(temp).unlink(missing_ok=True)


def _read_folder(root: Path, image_size: int) -> tuple[list[str], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The classes, and each tree of folder:PATH as (images, labels); decoded once, then from the cache."""
    classes, trees = _trees(root)
    files = {split: _images(tree, classes) for split, tree in trees.items()}
    cache = _cache_file(root, [f for split in files.values() for f in split], classes, image_size)
    content = None
    if cache.is_file():
        try:
            content = torch.load(cache, weights_only=True)
        except Exception:  # a truncated or foreign file: decode again and overwrite it
            content = None
    if content is None:
        content = {"skipped": []}
        for split, split_files in files.items():
            x, y, skipped = _decode(split_files, image_size, root)
            content[f"{split}_x"], content[f"{split}_y"] = x, y
            content["skipped"] += skipped
        _save_atomically(content, cache)
    skipped = content["skipped"]
    if skipped:
        n = len(skipped)
        print(f"warning: skipped {n} unreadable image{'s' * (n != 1)} in {root} (first: {root / skipped[0]})",
              file=sys.stderr)
    return classes, {split: (content[f"{split}_x"], content[f"{split}_y"]) for split in trees}


def stratified_test_mask(labels: torch.Tensor, test_fraction: float, seed: int = SPLIT_SEED) -> torch.Tensor:
    """A seeded choice of round(n x test_fraction) images of every class (at least 1, and 1 left to train
    when the class has 2 or more), as a boolean mask over `labels`."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        n = len(members)
        n_test = min(max(round(n * test_fraction), 1), n - 1)
        mask[members[torch.randperm(n, generator=gen)[:n_test]]] = True
    return mask


def _load_folder(spec: str, image_size: int, test_fraction: float) -> tuple[list[str], list[torch.Tensor]]:
    classes, trees = _read_folder(_folder_root(spec), image_size)
    if "all" not in trees:
        return classes, [*trees["train"], *trees["test"]]
    x, y = trees["all"]
    test = stratified_test_mask(y, test_fraction)
    if not test.any():
        raise UsageError(f"{spec} is too small to split off a test set: a class needs 2 or more images "
                         f"(or give train/ and test/ folders)")
    return classes, [x[~test], y[~test], x[test], y[test]]


# ---------------------------------------------------------------- the entry points


def _check_data_dir(data_dir: Path | None) -> None:
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {str(data_dir)!r} is not a directory")


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
    image_size: int | None = None,
    test_fraction: float = 0.2,
) -> Dataset:
    """A named dataset or folder:PATH. image_size None keeps the dataset's own size (32 for folders);
    test_fraction is the share of each class held out when a folder has no train/ and test/."""
    _check_image_size(image_size)
    if not 0 < test_fraction < 1:
        raise UsageError(f"--test-fraction {test_fraction} is out of range: it must be between 0 and 1, e.g. 0.2")
    _check_data_dir(data_dir)
    if name.startswith(FOLDER_PREFIX):
        classes, (train_x, train_y, test_x, test_y) = _load_folder(name, image_size or DEFAULT_IMAGE_SIZE,
                                                                   test_fraction)
    else:
        if name not in DATASETS:
            raise unknown_name("dataset", name, [*DATASETS, "folder:PATH"])
        source = DATASETS.get(name)
        classes = source.classes
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
    if image_size is not None:  # after the limits: only the images kept are resized
        train_x, test_x = resize(train_x, image_size), resize(test_x, image_size)
    return Dataset(name, train_x, train_y, test_x, test_y, classes)


def load_test_dataset(
    spec: str,
    classes: list[str],
    data_dir: Path | None,
    image_size: int | None,
    channels: int,
) -> tuple[str, torch.Tensor, torch.Tensor]:
    """A second test set for a model trained on a dataset with `classes`: (a short name, test_x, test_y).
    folder:PATH gives all its images (train/ and test/ alike); a named dataset, its test split. It is
    resized to image_size and given `channels` channels, so that the same model takes it."""
    _check_image_size(image_size)
    if channels not in (1, 3):
        raise UsageError(f"a test dataset can be given 1 or 3 channels, not {channels}")
    folder = spec.startswith(FOLDER_PREFIX)
    if folder:
        root = _folder_root(spec)
        found, short = _trees(root)[0], root.resolve().name or spec
    else:
        _check_data_dir(data_dir)
        source = DATASETS.get(spec)
        found, short = source.classes, spec
    if list(found) != list(classes):
        raise UsageError(f"--test-dataset {spec} has the classes {_names(list(found))} but the model was trained "
                         f"on {_names(list(classes))}; they must be the same, in the same order")
    if folder:
        trees = _read_folder(root, image_size or DEFAULT_IMAGE_SIZE)[1].values()
        x, y = torch.cat([x for x, _ in trees]), torch.cat([y for _, y in trees])
    else:
        x, y = source.load(search_dirs(data_dir))[2:]
    if image_size is not None:
        x = resize(x, image_size)
    return short, match_channels(x, channels), y
