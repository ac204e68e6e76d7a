"""The data layer and the batched transforms, on tiny generated data."""

import gzip
from pathlib import Path

import pytest
import torch

from ablate import transforms
from ablate.data import datasets as data
from ablate.errors import UsageError


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.to(torch.uint8).numpy().tobytes())


def fake_mnist(folder: Path, train: int = 30, test: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=gen))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n) % 10)


def test_idx_files_in_torchvision_layout_are_padded_to_32(tmp_path):
    fake_mnist(tmp_path / "MNIST" / "raw")
    ds = data.load_dataset("mnist", data_dir=tmp_path)
    assert ds.train_x.shape == (30, 1, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (20, 1, 32, 32)
    assert ds.train_x[:, :, :2].sum() == 0 and ds.train_x[:, :, :, -2:].sum() == 0
    assert ds.classes[3] == "3"


def test_data_dir_env_variable(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path))
    assert len(data.load_dataset("mnist").train_y) == 30


def test_corrupt_idx_is_a_usage_error(tmp_path):
    fake_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))
    with pytest.raises(UsageError, match="truncated or corrupt"):
        data.load_dataset("mnist", data_dir=tmp_path)


def test_missing_data_offline_says_where_it_looked(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="mnist not found .*looked in .*empty.*download failed"):
        data.load_dataset("mnist", data_dir=tmp_path / "empty")


def test_synthetic_is_seeded_and_cifar_shaped():
    a, b = data.load_dataset("synthetic"), data.load_dataset("synthetic")
    assert a.train_x.shape == (10_000, 3, 32, 32) and a.shape == (3, 32, 32)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)


@pytest.mark.parametrize("sizes", [(), (300, 70, 3)])
def test_synthetic_gives_the_bytes_of_its_plain_formula(sizes):
    """synthetic() computes in place for speed; saved results depend on its exact bytes."""
    train, test, seed = sizes or (*data.SYNTHETIC_SIZES, 0)
    gen = torch.Generator().manual_seed(seed)
    templates = torch.nn.functional.interpolate(torch.rand(10, 3, 4, 4, generator=gen), size=32, mode="bilinear")
    expected = []
    for n in (train, test):
        labels = (torch.arange(n) % 10)[torch.randperm(n, generator=gen)]
        noise = torch.randn(n, 3, 32, 32, generator=gen) * 0.3
        expected += [(templates[labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8), labels]
    assert all(torch.equal(a, b) for a, b in zip(data.synthetic(*sizes), expected))


def test_limits_are_class_balanced_and_checked():
    ds = data.load_dataset("synthetic", limit_train=105, limit_test=20)
    assert len(ds.train_y) == 105 and len(ds.test_y) == 20
    assert sorted(torch.bincount(ds.train_y).tolist()) == [10] * 5 + [11] * 5
    with pytest.raises(UsageError, match="--limit-train 20000 is out of range: synthetic has 10000"):
        data.load_dataset("synthetic", limit_train=20_000)


def test_balanced_subset_fills_from_other_classes_when_one_runs_short():
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    assert len(data.balanced_subset(labels, 5)) == 5


# ---------------------------------------------------------------- transforms


def ramp(batch: int) -> torch.Tensor:
    """Images whose pixels all differ, so any move is visible."""
    return torch.arange(batch * 2 * 8 * 8, dtype=torch.float).view(batch, 2, 8, 8)


@pytest.mark.parametrize("name,dim", [("flip", 2), ("vflip", 1)])  # of an image: C x H x W
def test_flip_is_random_per_image(name, dim):
    x = ramp(64)
    y = transforms.AUGMENTATIONS.get(name)(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(y[i], x[i].flip(dim)) for i in range(64)]
    kept = [torch.equal(y[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_crop_shifts_each_image_within_the_padding():
    x = ramp(64)
    y = transforms.crop(x, torch.Generator().manual_seed(0), pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = []
    for i in range(64):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(y[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert len(found) == 1, i
        offsets += found
    assert len(set(offsets)) > 10  # a different crop for different images


def test_fixed_permutation_is_one_for_all_images_and_channels():
    x = ramp(4)
    permute = transforms.permutation("fixed", 64, torch.Generator().manual_seed(0))
    y = permute(x)
    moves = [(y[i, c].flatten()[None] == x[i, c].flatten()[:, None]).nonzero()[:, 0] for i in range(4) for c in range(2)]
    assert all(torch.equal(m, moves[0]) for m in moves)
    assert not torch.equal(y, x)
    assert torch.equal(permute(x), y)  # the same on every call
    assert torch.equal(y.sort(-1).values.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)


def test_fresh_permutation_differs_per_image_and_call():
    x = ramp(1).expand(8, 2, 8, 8)
    permute = transforms.permutation("fresh", 64, torch.Generator().manual_seed(0))
    y, z = permute(x), permute(x)
    assert len({tuple(y[i, 0].flatten().tolist()) for i in range(8)}) == 8
    assert not torch.equal(y, z)
    assert torch.equal(y[:, 1] - y[:, 0], torch.full_like(y[:, 0], 64.0))  # channels move together


def test_standard_normalization_uses_train_statistics():
    train_x = torch.randint(0, 256, (500, 3, 4, 4), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    z = transforms.normalizer("standard", train_x)(train_x.float() / 255)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    half = transforms.normalizer("half", train_x)(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 3, 1, 1))
    assert half[:, 0].flatten().tolist() == [-1.0, 1.0]


def correlated_pixels(n=4000):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(n, 12, generator=gen) @ (torch.eye(12) + torch.rand(12, 12, generator=gen))
    z = (z - z.min()) / (z.max() - z.min())
    return (z * 255).round().to(torch.uint8).view(n, 3, 2, 2)


def test_zca_whitens_the_train_pixels():
    train_x = correlated_pixels()
    z = transforms.zca(train_x, epsilon=1e-8)(train_x.float() / 255).flatten(1)
    assert torch.allclose(torch.cov(z.T), torch.eye(12), atol=0.02)
    z = transforms.normalizer("zca", train_x)(train_x.float() / 255).flatten(1)  # epsilon 1e-2
    correlation = torch.corrcoef(z.T) - torch.eye(12)
    before = torch.corrcoef(train_x.flatten(1).float().T) - torch.eye(12)
    assert correlation.abs().mean() < before.abs().mean() / 2


# Every registered augmentation keeps shape, dtype and range and is seeded per image:
# tests/test_registries.py, over transforms.AUGMENTATIONS (a new one is tested without a name here).


def test_perspective_keeps_undistorted_images_and_shrinks_the_others():
    x = torch.ones(64, 1, 16, 16)
    y = transforms.perspective(x, torch.Generator().manual_seed(0))
    unchanged = [torch.allclose(y[i], x[i], atol=1e-5) for i in range(64)]
    assert 10 < sum(unchanged) < 54  # p = 0.5
    warped = [i for i in range(64) if not unchanged[i]]
    assert all(y[i].mean() < 1 for i in warped)  # the image shrank inside black borders


def test_combined_augmentations_apply_in_order():
    x = torch.rand(8, 3, 8, 8)
    combined = transforms.augmentation("crop-flip+rotation")(x, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    by_hand = transforms.rotation(transforms.flip(transforms.crop(x, gen), gen), gen)
    assert torch.equal(combined, by_hand)
    gen = torch.Generator().manual_seed(0)
    reversed_order = transforms.flip(transforms.crop(transforms.rotation(x, gen), gen), gen)
    assert not torch.allclose(combined, reversed_order)


def test_every_normalization_and_permutation_is_registered_and_listed():
    # the documented ones, "none" first (the errors list it first); more may be registered
    normalizations, permutations = transforms.NORMALIZATIONS.names(), transforms.PERMUTATIONS.names()
    assert normalizations[0] == "none" and {"half", "standard", "zca"} <= set(normalizations)
    assert permutations[0] == "none" and {"fixed", "fresh"} <= set(permutations)
    train = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8)
    half = transforms.normalizer("half", train)(torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4))
    assert half[0, :, 0, 0].tolist() == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize("kind,name", [("augmentation", "flips"), ("permutation", "shuffled"),
                                       ("normalization", "whiten")])
def test_unknown_transform_names_list_the_choices(kind, name):
    with pytest.raises(UsageError, match=f"unknown {kind} '{name}'.*allowed: none, "):
        if kind == "augmentation":
            transforms.augmentation(f"crop+{name}")
        elif kind == "permutation":
            transforms.permutation(name, 4, torch.Generator())
        else:
            transforms.normalizer(name, torch.zeros(2, 1, 2, 2, dtype=torch.uint8))
