"""Datasets, loaded once into memory as uint8 tensors (N x C x H x W, 32 x 32 unless resized)
with int64 labels.

Where a dataset is looked for, in order: `--data-dir`, `$ABLATE_DATA`, the per-user cache
(`$XDG_CACHE_HOME/ablate` or `~/.cache/ablate`) and, for Fashion-MNIST, Debian's
`/usr/share/datasets/fashion-mnist`. When it is nowhere, torchvision downloads it into the
first of the first three.

`folder:PATH` is an ImageFolder tree of the user's own images (PATH/<class>/<image>, or
PATH/train/<class>/<image> and PATH/test/<class>/<image>), decoded once and kept in the
per-user cache under `folders/`.

Every check comes before anything big is made: the memory the images will need (`data_bytes`:
the uint8 images at their final size and the float32 copy training makes of them) is compared
with the memory available before they are generated, decoded or resized, and a folder's cache
is written only when every check has passed (`deferred_cache_writes` stretches that over more
checks than `load_dataset`'s own).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from ablate.errors import UsageError, first_line, one_line, unknown_name
from ablate.registry import Registry


@dataclass(frozen=True)
class Source:
    """A named dataset: its classes, and how to load (train_x, train_y, test_x, test_y)."""

    name: str
    classes: list[str]
    load: Callable[[list[Path]], list[torch.Tensor]]  # the folders to look in -> four tensors
    description: str
    sizes: tuple[int, int] | None = None  # train and test images, where known before loading
    shape: tuple[int, int, int] | None = None  # C x H x W as loaded


DATASETS: Registry[Source] = Registry("dataset")


def register_dataset(name: str, classes: list[str], description: str = "", test_fraction: float = 0.2,
                     sizes: tuple[int, int] | None = None, shape: tuple[int, int, int] | None = None):
    """`@register_dataset("name", classes)` on a function of the folders to look in (--data-dir,
    $ABLATE_DATA, the cache) that returns the images and their labels, `(images, labels)`, or
    with its own test split, `(train_images, train_labels, test_images, test_labels)`: uint8
    N x C x H x W (C 1 or 3, square), int64 labels indexing `classes`. Without a test split,
    `test_fraction` of every class is held out (seeded). Checked like ablate's own: a function
    that gives anything else is refused in one line naming it. `sizes` (train, test images) and
    `shape` (C x H x W), where known before loading, let the memory be checked first."""

    def decorator(load: Callable[[list[Path]], tuple]) -> Callable[[list[Path]], tuple]:
        def four(folders):
            arrays = tuple(load(folders))
            if len(arrays) == 2:
                images, labels = _checked(name, classes, "", *arrays)
                test = stratified_test_mask(labels, test_fraction)
                return images[~test], labels[~test], images[test], labels[test]
            if len(arrays) != 4:
                raise UsageError(f"dataset {name!r} returned {len(arrays)} values; it must return (images, labels) "
                                 "or (train_images, train_labels, test_images, test_labels)")
            return (*_checked(name, classes, "train", *arrays[:2]), *_checked(name, classes, "test", *arrays[2:]))

        DATASETS.register(name, Source(name, list(classes), four, description, sizes, shape))
        return load

    return decorator


def _checked(name: str, classes: list[str], split: str, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset function's images and labels as ablate takes them, or a usage error naming it."""
    def bad(why: str) -> UsageError:
        return UsageError(f"dataset {name!r} gave {split + ' ' if split else ''}{why}")

    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        what = f"{images.dtype} tensor of {images.dim()} dims" if isinstance(images, torch.Tensor) else \
            type(images).__name__
        raise bad(f"images as a {what}; it must give a uint8 tensor N x C x H x W")
    if images.shape[1] not in (1, 3) or images.shape[2] != images.shape[3]:
        raise bad(f"images of {'x'.join(map(str, images.shape[1:]))}; they must be square, with 1 or 3 channels")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or len(labels) != len(images) or \
            labels.is_floating_point():
        raise bad(f"labels that are not one whole number per image ({len(images)} images)")
    labels = labels.long()
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise bad(f"labels from {labels.min().item()} to {labels.max().item()}; they index its {len(classes)} classes")
    if len(classes) < 2 or len(labels.unique()) < (2 if split != "test" else 1):
        raise bad("fewer than 2 classes: a classifier needs 2 or more to tell apart")
    return images.contiguous(), labels
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


def cache_dir() -> Path:
    """ablate's cache: $XDG_CACHE_HOME/ablate or ~/.cache/ablate."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ablate"


def search_dirs(data_dir: Path | None) -> list[Path]:
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get("ABLATE_DATA"):
        dirs.append(Path(os.environ["ABLATE_DATA"]))
    return dirs + [cache_dir()]


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

register_dataset("cifar10", ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
                 "CIFAR-10, 3x32x32, 50,000 + 10,000 images; downloaded once",  # torchvision checks the MD5s
                 sizes=(50_000, 10_000), shape=(3, 32, 32))(_load_cifar10)
register_dataset("mnist", [str(i) for i in range(10)],
                 "MNIST digits, padded to 1x32x32, 60,000 + 10,000; downloaded once")(
    lambda roots: _load_idx("mnist", roots))
register_dataset("fashion-mnist", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                   "Sneaker", "Bag", "Ankle boot"],
                 "Fashion-MNIST, padded to 1x32x32, 60,000 + 10,000; downloaded once, or Debian's "
                 "dataset-fashion-mnist offline")(lambda roots: _load_idx("fashion-mnist", roots))
register_dataset("synthetic", [f"class {i}" for i in range(10)],
                 "generated, CIFAR-shaped, learnable, 10,000 + 2,000; for tests and trials",
                 sizes=SYNTHETIC_SIZES, shape=(3, 32, 32))(lambda roots: synthetic())



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
RESIZE_CHUNK_BYTES = 64 << 20  # resize() works in batches of about this many bytes


def _check_image_size(image_size: int | None) -> None:
    low, high = IMAGE_SIZES
    if image_size is not None and not (type(image_size) is int and low <= image_size <= high):
        raise UsageError(f"--image-size {image_size!r} is not allowed: give a whole number from {low} to {high}")


def _chunked(f: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, out_shape: tuple[int, ...]
             ) -> torch.Tensor:
    """f applied to N x ... images a batch of about RESIZE_CHUNK_BYTES at a time, into one uint8
    tensor of out_shape: its intermediates (float copies on some paths) stay small."""
    if images.dim() < 4 or images.nbytes + math.prod(out_shape) <= RESIZE_CHUNK_BYTES:
        return f(images)
    step = max(1, RESIZE_CHUNK_BYTES // (math.prod(images.shape[1:]) + math.prod(out_shape[1:])))
    out = torch.empty(out_shape, dtype=torch.uint8)
    for i in range(0, len(images), step):
        out[i:i + step] = f(images[i:i + step])
    return out


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (... x C x H x W) made size x size: bilinear with antialias, back to uint8."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    from torchvision.transforms.v2.functional import resize as tv_resize

    return _chunked(lambda x: tv_resize(x, [size, size], antialias=True), images,
                    (*images.shape[:-2], size, size))


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 N x C x H x W with `channels` channels: gray -> RGB by repeating, RGB -> gray by luma."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if have == 3 and channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return _chunked(lambda x: (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8),
                        images, (len(images), 1, *images.shape[2:]))
    raise UsageError(f"cannot turn {have}-channel images into {channels}-channel ones: only 1 <-> 3 is allowed")


# ---------------------------------------------------------------- memory: checked before anything big is made

# What training does to the data, as bytes per uint8 byte of a split: train.py keeps the uint8
# images and normalises each split once, up front, into a float32 copy (4 bytes a pixel) made by
# concatenating float32 chunks: while a split's copy is assembled, its chunks are held too.
FLOAT_COPY = 4


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB"


def data_bytes(n_train: int, n_test: int, shape: tuple[int, ...], loading: int = 0) -> int:
    """Bytes of memory that n_train + n_test uint8 images of `shape` need, at their peak: the
    images, plus the float32 copy training normalises them into (the split being converted held
    twice, as chunks and as their concatenation), or `loading`, the peak of reading and resizing
    them, if that is larger."""
    image = math.prod(shape)
    train, test = n_train * image, n_test * image
    floats = max(2 * FLOAT_COPY * train, FLOAT_COPY * train + 2 * FLOAT_COPY * test)
    return max(loading, train + test + floats)


def _check_memory(what: str, n_train: int, n_test: int, shape: tuple[int, ...], loading: int = 0,
                  hint: str = "use a smaller --image-size or fewer images (--limit-train, --limit-test)") -> None:
    """Refuse data that would not fit in the memory available now, before it is made."""
    from ablate import machine

    need = data_bytes(n_train, n_test, shape, loading)
    free = machine.available_memory()
    if free is None or need <= free:
        return
    images = f"{n_train:,} + {n_test:,} images" if n_train else f"{n_test:,} images"
    raise UsageError(f"{what}: the data would need about {_gb(need)} in memory ({images} of "
                     f"{'x'.join(map(str, shape))}); {_gb(free)} are free; {hint}")


def _what(name: str, image_size: int | None) -> str:
    return f"--image-size {image_size}" if image_size is not None else f"--dataset {name}"


def _limited(limit: int | None, n: int) -> int:
    return n if limit is None else min(limit, n)


# ---------------------------------------------------------------- folder:PATH, the user's own images

FOLDER_PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
LAYOUT = "PATH/<class>/<image>, or PATH/train/<class>/<image> and PATH/test/<class>/<image>"
SPLIT_SEED = 0
CACHE_VERSION = 2  # 2: EXIF orientation, 16-bit images scaled to 8 bits, changes of ctime noticed


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:20])
    return "[" + shown + (f", ... ({len(names)} in all)" if len(names) > 20 else "") + "]"


def _folder_root(spec: str) -> Path:
    given = spec[len(FOLDER_PREFIX):]
    if not given:
        raise UsageError(f"{spec!r} names no folder: give folder:PATH with {LAYOUT}")
    root = Path(given).expanduser()
    if not root.is_dir():
        if root.is_symlink() and not root.exists():
            what = "is a broken symbolic link (or a loop of links)"
        else:
            what = "is not a folder" if root.exists() else "does not exist"
        raise UsageError(f"{str(root)!r} {what}: folder:PATH needs a folder of images, {LAYOUT}")
    if not os.access(root, os.R_OK | os.X_OK):  # else its train/ and test/ would look absent
        raise _unreadable_folder(root)
    return root


def _unreadable_folder(path: Path | str, error: OSError | None = None) -> UsageError:
    why = "permission denied" if error is None or isinstance(error, PermissionError) else \
        (error.strerror or type(error).__name__).lower()
    return UsageError(f"cannot read the folder {str(path)!r}: {why}")


def _entries(folder: Path) -> list[os.DirEntry]:
    """The entries of `folder`, sorted by name; a folder that cannot be listed is a usage error."""
    if not os.access(folder, os.R_OK | os.X_OK):
        raise _unreadable_folder(folder)
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as error:
        raise _unreadable_folder(folder, error) from None


def _kind(entry: os.DirEntry) -> str:
    """"dir" or "file" (following links), "broken" (a link to nothing, or a loop of links), or "other"."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
    except OSError:  # a loop of links, or a target the user may not look at
        return "broken"
    return "broken" if entry.is_symlink() else "other"  # FIFOs, devices and sockets are never opened


def _classes(tree: Path) -> list[str]:
    classes = []
    for entry in _entries(tree):
        if entry.name.startswith("."):
            continue
        kind = _kind(entry)
        if kind == "dir":
            classes.append(entry.name)
        elif kind == "broken":
            raise UsageError(f"{entry.path!r} is a broken symbolic link (or a loop of links): a class folder "
                             f"must be a folder; fix or remove it")
    if not classes:
        raise UsageError(f"{str(tree)!r} has no class folders: folder:PATH needs {LAYOUT}")
    return classes


def _trees(root: Path) -> tuple[list[str], dict[str, Path]]:
    """The class names, and the trees to read: {"train": .., "test": ..} or {"all": root}."""
    splits = [s for s in ("train", "test") if (root / s).is_dir()]
    if len(splits) == 1:
        other = root / ({"train", "test"} - set(splits)).pop()
        if other.exists() or other.is_symlink():
            raise UsageError(f"{str(other)!r} is not a folder: folder:PATH needs {LAYOUT}")
        raise UsageError(f"{str(root)!r} has {splits[0]}/ but no {other.name}/: folder:PATH needs {LAYOUT}")
    if not splits:
        return _classes(root), {"all": root}
    train, test = _classes(root / "train"), _classes(root / "test")
    if train != test:
        raise UsageError(f"the class folders of {str(root / 'train')!r} and {str(root / 'test')!r} differ: "
                         f"train has {_names(train)}, test has {_names(test)}; they must be the same")
    return train, {"train": root / "train", "test": root / "test"}


def _inode(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as error:
        raise _unreadable_folder(path, error) from None
    return stat.st_dev, stat.st_ino


def _image_paths(folder: Path, root: Path) -> list[Path]:
    """The image files under `folder` (a class folder under `root`), at any depth, sorted. Links
    are followed and each folder is read once: a link back to `folder` or to a folder above it, up
    to `root`, is a loop, not more images. A link to nothing named like an image is kept, to be
    reported as unreadable."""
    above = [root, *[p for p in folder.parents if root in p.parents]]
    seen, found, todo = {_inode(p) for p in above}, [], [folder]
    while todo:
        current = todo.pop()
        inode = _inode(current)
        if inode in seen:
            continue
        seen.add(inode)
        for entry in _entries(current):
            kind = _kind(entry)
            if kind == "dir":
                todo.append(Path(entry.path))
            elif kind in ("file", "broken") and entry.name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(entry.path))
    return sorted(found)


def _images(tree: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        found = _image_paths(tree / name, tree)
        if not found:
            raise UsageError(f"class folder {str(tree / name)!r} has no images (looked for "
                             f"{', '.join('*' + e for e in IMAGE_EXTENSIONS)})")
        files += [(p, label) for p in found]
    return files


class _Unreadable(Exception):
    """An image file that cannot be used; the message says why, in a few words."""


def _reason(error: Exception) -> str:
    from PIL import Image, UnidentifiedImageError

    if isinstance(error, _Unreadable):
        return str(error)
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, FileNotFoundError):
        return "no such file (a broken link?)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image file Pillow can read"
    if isinstance(error, Image.DecompressionBombError):
        return "too large: " + str(error).split(", could be")[0]
    if isinstance(error, MemoryError):
        return "too large to decode in memory"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    if isinstance(error, OSError) and str(error).strip():
        return first_line(error)[:100]
    return one_line(error)[:100 + len(type(error).__name__) + 2]


def _pixels(path: Path) -> torch.Tensor:
    """One image file as uint8 RGB, 3 x H x W, the way up its EXIF orientation says; 16-bit gray
    scaled to 8 bits. Raises an exception that _reason words."""
    import numpy as np
    from PIL import Image, ImageOps
    from torchvision.transforms.v2.functional import pil_to_tensor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large, not too large: decoded
        with Image.open(path) as image:
            if image.getexif().get(0x0112, 1) not in (1, None):  # 0x0112: Orientation
                image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I;16"):  # 16-bit gray: 0..65535 -> 0..255, not clipped at 255
                wide = np.asarray(image).astype(np.uint32)
                return torch.from_numpy(((wide + 128) // 257).astype(np.uint8)).expand(3, -1, -1).contiguous()
            if image.mode in ("I", "F"):
                raise _Unreadable(f"32-bit {'integer' if image.mode == 'I' else 'float'} pixels (mode "
                                  f"{image.mode}) have no 8-bit scale: save it with 8 or 16 bits")
            return pil_to_tensor(image.convert("RGB"))


def _skipped_warning(root: Path, skipped: list[str], first_reason: str) -> None:
    n = len(skipped)
    print(f"warning: skipped {n} unreadable image{'s' * (n != 1)} in {root} "
          f"(first: {root / skipped[0]}: {first_reason})", file=sys.stderr)


def _decode(files: list[tuple[Path, int]], image_size: int, root: Path
            ) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """Every readable image as RGB, resized to image_size x image_size; the unreadable ones' paths
    and why the first was. The images go straight into one tensor: no second copy while stacking."""
    out = torch.empty(len(files), 3, image_size, image_size, dtype=torch.uint8)
    labels, skipped, first_reason = [], [], ""
    for path, label in files:
        try:
            pixels = _pixels(path)
        except Exception as error:  # noqa: BLE001 - not an image, truncated, too large: skipped, in one warning
            skipped.append(path.relative_to(root).as_posix())
            first_reason = first_reason or _reason(error)
            continue
        out[len(labels)] = resize(pixels, image_size)
        labels.append(label)
    if not labels:
        raise UsageError(f"no readable images in {str(root)!r}: all {len(files)} failed to decode "
                         f"(first: {str(root / skipped[0])!r}: {first_reason})")
    if len(labels) < len(files):
        out = out[:len(labels)].clone()  # its own storage: torch.save writes a view's whole storage
    return out, torch.tensor(labels), skipped, first_reason


def _cache_file(root: Path, files: list[tuple[Path, int]], classes: list[str], image_size: int) -> Path:
    """The cache entry of these files decoded at image_size: keyed by each file's size and times
    (a chmod or a rewrite changes its ctime), the classes, and what decodes and resizes them."""
    import PIL
    import torchvision

    listing = []
    for path, label in files:
        try:
            stat = path.stat()
            listing.append([path.relative_to(root).as_posix(), label, stat.st_size, stat.st_mtime_ns,
                            stat.st_ctime_ns])
        except OSError:  # a link to nothing: decoding says so
            listing.append([path.relative_to(root).as_posix(), label, None, None, None])
    key = json.dumps([CACHE_VERSION, str(root.resolve()), image_size, classes, listing,
                      torch.__version__, torchvision.__version__, PIL.__version__])
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


_PENDING: list[list[tuple[dict, Path]]] = []  # the cache writes waiting for their blocks to end


@contextmanager
def deferred_cache_writes() -> Iterator[None]:
    """Cache writes made in the block happen when it ends without an exception, and not at all
    when it raises: a usage error found after the data was decoded leaves nothing on disk. Nested
    blocks hand their writes to the outermost one."""
    _PENDING.append([])
    try:
        yield
    except BaseException:
        _PENDING.pop()
        raise
    writes = _PENDING.pop()
    if _PENDING:
        _PENDING[-1].extend(writes)
    else:
        for content, path in writes:
            _save_atomically(content, path)


def _write_cache(content: dict, path: Path) -> None:
    if _PENDING:
        _PENDING[-1].append((content, path))
    else:
        _save_atomically(content, path)


@dataclass
class _Folder:
    """folder:PATH listed, nothing decoded: its classes, trees and image files per tree."""

    root: Path
    classes: list[str]
    trees: dict[str, Path]
    files: dict[str, list[tuple[Path, int]]]

    def count(self) -> int:
        return sum(len(f) for f in self.files.values())

    def per_class(self, split: str) -> list[int]:
        return torch.bincount(torch.tensor([label for _, label in self.files[split]]),
                              minlength=len(self.classes)).tolist()


def _list_folder(root: Path) -> _Folder:
    classes, trees = _trees(root)
    return _Folder(root, classes, trees, {split: _images(tree, classes) for split, tree in trees.items()})


def _why(path: Path) -> str | None:
    """Why the image at `path` cannot be used; None when it can."""
    try:
        _pixels(path)
    except Exception as error:  # noqa: BLE001 - every failure is worded
        return _reason(error)
    return None


def _cache_entry(content, folder: _Folder, image_size: int) -> dict | None:
    """A cache file's content where it is what `_read_folder` writes for this folder (each tree's
    images as uint8 N x 3 x size x size and N labels of its classes, fewer than listed by the
    skipped names), else None: a file edited or made by another program is decoded again."""
    if not isinstance(content, dict) or not isinstance(content.get("skipped"), list) \
            or not all(isinstance(rel, str) for rel in content["skipped"]):
        return None
    skipped = 0
    for split, listed in folder.files.items():
        x, y = content.get(f"{split}_x"), content.get(f"{split}_y")
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.dtype != torch.uint8 \
                or tuple(x.shape[1:]) != (3, image_size, image_size) or y.dtype != torch.int64 or y.dim() != 1 \
                or len(y) != len(x) or len(y) > len(listed) or (len(y) and not 0 <= int(y.min()) <= int(y.max())
                                                                < len(folder.classes)):
            return None
        skipped += len(listed) - len(y)
    return content if skipped == len(content["skipped"]) else None


def _stale(content: dict, root: Path) -> bool:
    """A cache entry is stale when an image it skipped as unreadable reads now (a file whose
    permissions were fixed, or a repaired one with its old size and times)."""
    return any(_why(root / rel) is None for rel in content["skipped"])


def _read_folder(folder: _Folder, image_size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each tree of folder:PATH as (images, labels); decoded once, then from the cache. Every class
    must keep a readable image in every tree; the cache is written only after that check (and, in
    a deferred_cache_writes block, only when the block ends well)."""
    root, classes = folder.root, folder.classes
    cache = _cache_file(root, [f for split in folder.files.values() for f in split], classes, image_size)
    content = None
    if cache.is_file():
        try:
            content = _cache_entry(torch.load(cache, weights_only=True), folder, image_size)
        except Exception:  # noqa: BLE001 - a truncated or foreign file: decode again and overwrite it
            content = None
    if content is not None and _stale(content, root):
        content = None
    fresh = content is None
    if fresh:
        content = {"skipped": []}
        for split, split_files in folder.files.items():
            x, y, skipped, _ = _decode(split_files, image_size, root)
            content[f"{split}_x"], content[f"{split}_y"] = x, y
            content["skipped"] += skipped
    for split, tree in folder.trees.items():
        kept = torch.bincount(content[f"{split}_y"], minlength=len(classes)).tolist()
        for name, n, listed in zip(classes, kept, folder.per_class(split)):
            if n == 0:
                prefix = (tree / name).relative_to(root).as_posix() + "/"
                first = next(rel for rel in content["skipped"] if rel.startswith(prefix))
                raise UsageError(f"class folder {str(tree / name)!r} has no readable images: all {listed} failed "
                                 f"to decode (first: {str(root / first)!r}: {_why(root / first)})")
    if fresh:
        _write_cache(content, cache)
    if content["skipped"]:
        first = content["skipped"][0]
        _skipped_warning(root, content["skipped"], _why(root / first) or "unreadable")
    return {split: (content[f"{split}_x"], content[f"{split}_y"]) for split in folder.trees}


def stratified_test_mask(labels: torch.Tensor, test_fraction: float, seed: int = SPLIT_SEED) -> torch.Tensor:
    """A seeded choice of round(n x test_fraction) images of every class (at least 1, and 1 left to train
    when the class has 2 or more), as a boolean mask over `labels`."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        n = len(members)
        n_test = _test_share(n, test_fraction)
        mask[members[torch.randperm(n, generator=gen)[:n_test]]] = True
    return mask


def _test_share(n: int, test_fraction: float) -> int:
    return min(max(round(n * test_fraction), 1), n - 1)


def _too_few(spec: str, folder: _Folder, counts: list[int], readable: bool) -> None:
    """One tree split per class needs 2 images of every class: 1 to train on, 1 to test."""
    for name, n in zip(folder.classes, counts):
        if n < 2:
            what = f"{n} readable image" if readable else f"{n} image"
            raise UsageError(f"class folder {str(folder.root / name)!r} has only {what}: to split off a test "
                             f"set, every class of {spec} needs 2 or more (or give train/ and test/ folders)")


def _planned_folder(spec: str, folder: _Folder, test_fraction: float) -> tuple[int, int]:
    """The train and test images folder:PATH will give, at most (the unreadable ones are not known yet)."""
    if "all" not in folder.trees:
        return len(folder.files["train"]), len(folder.files["test"])
    counts = folder.per_class("all")
    _too_few(spec, folder, counts, readable=False)
    test = sum(_test_share(n, test_fraction) for n in counts)
    return sum(counts) - test, test


def _load_folder(spec: str, folder: _Folder, image_size: int, test_fraction: float) -> list[torch.Tensor]:
    trees = _read_folder(folder, image_size)
    if "all" not in trees:
        return [*trees["train"], *trees["test"]]
    x, y = trees["all"]
    _too_few(spec, folder, torch.bincount(y, minlength=len(folder.classes)).tolist(), readable=True)
    test = stratified_test_mask(y, test_fraction)
    return [x[~test], y[~test], x[test], y[test]]


# ---------------------------------------------------------------- the entry points


def _check_data_dir(data_dir: Path | None) -> None:
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {str(data_dir)!r} is not a directory")


def _check_limit(name: str, split: str, limit: int | None, n: int) -> None:
    if limit is not None and not 1 <= limit <= n:
        raise UsageError(f"--limit-{split} {limit} is out of range: {name} has {n} {split} images")


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
    image_size: int | None = None,
    test_fraction: float = 0.2,
) -> Dataset:
    """A named dataset or folder:PATH. image_size None keeps the dataset's own size (32 for folders);
    test_fraction is the share of each class held out when a folder has no train/ and test/.

    Every check comes before anything big is made: the memory the images will need (data_bytes)
    is compared with the memory available before they are generated, decoded or resized, and a
    folder's cache is written only when everything passed."""
    _check_image_size(image_size)
    if not 0 < test_fraction < 1:
        raise UsageError(f"--test-fraction {test_fraction} is out of range: it must be between 0 and 1, e.g. 0.2")
    _check_data_dir(data_dir)
    limits = {"train": limit_train, "test": limit_test}
    with deferred_cache_writes():
        if name.startswith(FOLDER_PREFIX):
            size = image_size or DEFAULT_IMAGE_SIZE
            folder = _list_folder(_folder_root(name))
            if len(folder.classes) < 2:
                raise UsageError(f"{name} has one class folder, {folder.classes[0]!r}: a classifier needs 2 or "
                                 f"more classes to tell apart; folder:PATH needs {LAYOUT}")
            planned = dict(zip(("train", "test"), _planned_folder(name, folder, test_fraction)))
            for split, n in planned.items():
                _check_limit(name, split, limits[split], n)
            shape = (3, size, size)
            _check_memory(_what(name, image_size), _limited(limit_train, planned["train"]),
                          _limited(limit_test, planned["test"]), shape,
                          loading=2 * folder.count() * math.prod(shape))  # decoded, then split in two
            classes = folder.classes
            train_x, train_y, test_x, test_y = _load_folder(name, folder, size, test_fraction)
        else:
            if name not in DATASETS:
                raise unknown_name("dataset", name, [*DATASETS, "folder:PATH"])
            source = DATASETS.get(name)
            classes = source.classes
            if source.sizes is not None and source.shape is not None:  # known before anything is made
                size = image_size or source.shape[1]
                _check_memory(_what(name, image_size), _limited(limit_train, source.sizes[0]),
                              _limited(limit_test, source.sizes[1]), (source.shape[0], size, size))
            train_x, train_y, test_x, test_y = source.load(search_dirs(data_dir))
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            _check_limit(name, split, limits[split], len(y))
            if limits[split] is None:
                continue
            keep = balanced_subset(y, limits[split])
            if split == "train":
                train_x, train_y = x[keep], y[keep]
            else:
                test_x, test_y = x[keep], y[keep]
        shape, loading = tuple(train_x.shape[1:]), 0
        if image_size is not None and shape[1:] != (image_size, image_size):
            shape = (shape[0], image_size, image_size)  # the images as they are, and resized
            loading = train_x.nbytes + test_x.nbytes + (len(train_y) + len(test_y)) * math.prod(shape)
        _check_memory(_what(name, image_size), len(train_y), len(test_y), shape, loading)
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
    resized to image_size and given `channels` channels, so that the same model takes it. Its memory
    is checked before it is decoded or resized; a folder's cache is written only when it is taken."""
    _check_image_size(image_size)
    if channels not in (1, 3):
        raise UsageError(f"a test dataset can be given 1 or 3 channels, not {channels}")
    what = f"--test-dataset {spec}"
    hint = "use a smaller --image-size or a smaller test dataset"
    with deferred_cache_writes():
        folder = spec.startswith(FOLDER_PREFIX)
        if folder:
            root = _folder_root(spec)
            listed = _list_folder(root)
            found, short = listed.classes, root.resolve().name or spec
        else:
            _check_data_dir(data_dir)
            source = DATASETS.get(spec)
            found, short = source.classes, spec
        if list(found) != list(classes):
            raise UsageError(f"--test-dataset {spec} has the classes {_names(list(found))} but the model was "
                             f"trained on {_names(list(classes))}; they must be the same, in the same order")
        if folder:
            size = image_size or DEFAULT_IMAGE_SIZE
            decoded = listed.count() * 3 * size * size
            _check_memory(what, 0, listed.count(), (channels, size, size), loading=2 * decoded, hint=hint)
            trees = _read_folder(listed, size).values()
            x, y = torch.cat([x for x, _ in trees]), torch.cat([y for _, y in trees])
        else:
            if source.sizes is not None and source.shape is not None:
                size = image_size or source.shape[1]
                _check_memory(what, 0, source.sizes[1], (channels, size, size), hint=hint)
            x, y = source.load(search_dirs(data_dir))[2:]
        size = image_size or x.shape[-1]
        _check_memory(what, 0, len(y), (channels, size, size),
                      loading=x.nbytes + len(y) * (x.shape[1] + channels) * size * size, hint=hint)
        if image_size is not None:
            x = resize(x, image_size)
        return short, match_channels(x, channels), y


def on_disk(name: str, data_dir: Path | str | None) -> bool:
    """Whether this machine holds dataset `name`'s files without downloading them (a cluster
    sends the images only to workers that do not); False for a dataset it cannot tell of."""
    if name == "synthetic":
        return True
    try:
        if name.startswith(FOLDER_PREFIX):
            return _folder_root(name).is_dir()
        roots = search_dirs(Path(data_dir) if data_dir else None)
        if name == "cifar10":
            return any((root / "cifar-10-batches-py").is_dir() for root in roots)
        return any(all(_find_idx(f, stem) for pair in IDX_FILES.values() for stem in pair)
                   for f in _idx_folders(name, roots))
    except Exception:  # noqa: BLE001 - a name or folder it cannot read: the worker is sent the images
        return False
