"""The memory the data needs is checked before it is generated, decoded or resized: a refusal is
one line and quick, with nothing big allocated. Every test here fakes the memory available."""

import time

import pytest
import torch

from ablate import machine
from ablate.data import datasets as data
from ablate.errors import UsageError
from test_folder_data import fake_mnist, pets

SYNTHETIC_1024 = "--image-size 1024: the data would need about 289.4 GB in memory (10,000 + 2,000 images of 3x1024x1024)"


@pytest.fixture
def free(monkeypatch):
    """free(bytes): the memory available, as ablate.machine.available_memory says."""
    def set_free(n):
        monkeypatch.setattr(machine, "available_memory", lambda: n)
    set_free(20_100_000_000)
    return set_free


@pytest.fixture
def nothing_made(monkeypatch):
    """Generating, decoding or resizing anything fails the test."""
    def fail(*args, **kwargs):
        pytest.fail("the data was made before its memory was checked")
    for name in ("synthetic", "resize", "_pixels", "read_idx"):
        monkeypatch.setattr(data, name, fail)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ablate" / "folders"


def test_the_estimate():
    image = 3 * 1024 * 1024
    train, test = 10_000 * image, 2_000 * image
    # the uint8 images, and the float32 copy of both splits, the train split's held twice while it is made
    assert data.data_bytes(10_000, 2_000, (3, 1024, 1024)) == train + test + 8 * train == 289_406_976_000
    assert data.data_bytes(100, 2_000, (3, 32, 32)) == (100 + 2_000) * 3072 + 4 * 100 * 3072 + 8 * 2_000 * 3072
    assert data.data_bytes(1, 1, (1, 8, 8), loading=10**9) == 10**9


def test_synthetic_at_1024_is_refused_before_it_is_generated(free, nothing_made, ablate, tmp_path, monkeypatch):
    start = time.perf_counter()
    with pytest.raises(UsageError) as error:
        data.load_dataset("synthetic", image_size=1024)
    assert str(error.value) == (f"{SYNTHETIC_1024}; 20.1 GB are free; use a smaller --image-size or fewer "
                                f"images (--limit-train, --limit-test)")
    assert time.perf_counter() - start < 1
    monkeypatch.chdir(tmp_path)
    result = ablate(["linearity", "--dataset", "synthetic", "--image-size", "1024"])
    assert result.exit_code == 2 and result.output == f"ablate linearity: error: {error.value}\n"
    assert list(tmp_path.iterdir()) == []  # no results/, no cache
    free(5_000_000_000)
    with pytest.raises(UsageError, match=r"^--image-size 1024: .* 8.8 GB .* \(300 \+ 100 images of 3x1024x1024\); "
                                         r"5.0 GB are free"):
        data.load_dataset("synthetic", image_size=1024, limit_train=300, limit_test=100)


def test_every_dataset_is_checked(free, tmp_path, monkeypatch):
    free(50_000_000)
    with pytest.raises(UsageError, match=r"^--dataset synthetic: the data would need about 283 MB in memory "
                                         r"\(10,000 \+ 2,000 images of 3x32x32\); 50 MB are free"):
        data.load_dataset("synthetic")  # no --image-size: its own
    with pytest.raises(UsageError, match=r"^--dataset cifar10: .* \(50,000 \+ 10,000 images of 3x32x32\)"):
        data.load_dataset("cifar10", tmp_path)  # before looking for its files, or downloading them
    fake_mnist(tmp_path / "digits")  # 30 + 20 images: their size known once their files are read
    for name in ("resize", "synthetic", "_pixels"):
        monkeypatch.setattr(data, name, lambda *a, **k: pytest.fail("made before its memory was checked"))
    with pytest.raises(UsageError, match=r"^--image-size 1024: .* \(30 \+ 20 images of 1x1024x1024\)"):
        data.load_dataset("mnist", tmp_path / "digits", image_size=1024)
    root = pets(tmp_path / "pets")
    with pytest.raises(UsageError, match=r"^--image-size 512: .* \(12 \+ 6 images of 3x512x512\)"):
        data.load_dataset(f"folder:{root}", image_size=512)
    with pytest.raises(UsageError, match=r"^--test-dataset folder:.*pets: .* \(18 images of 1x1024x1024\); .* "
                                         r"use a smaller --image-size or a smaller test dataset"):
        data.load_test_dataset(f"folder:{root}", ["cat", "dog", "fish"], None, 1024, 1)
    assert not (tmp_path / "cache").exists()
    assert data.load_dataset("mnist", tmp_path / "digits").shape == (1, 32, 32)  # 2 MB fit


def test_what_fits_loads(free, tmp_path):
    free(None)  # the system does not say: not checked
    assert data.load_dataset("synthetic", limit_train=20, limit_test=10, image_size=8).shape == (3, 8, 8)
    free(10**9)
    ds = data.load_dataset("synthetic", limit_train=300, image_size=64)
    assert ds.train_x.shape == (300, 3, 64, 64) and ds.test_x.shape == (2000, 3, 64, 64)


def test_resizing_in_chunks_gives_the_same_bytes(monkeypatch):
    from torchvision.transforms.v2.functional import resize

    images = torch.randint(0, 256, (37, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = resize(images, [48, 48], antialias=True)
    monkeypatch.setattr(data, "RESIZE_CHUNK_BYTES", 5 * (3 * 20 * 20 + 3 * 48 * 48))  # 5 images a chunk
    assert torch.equal(data.resize(images, 48), whole)
    gray = data.match_channels(images, 1)
    assert gray.shape == (37, 1, 20, 20)
    monkeypatch.setattr(data, "RESIZE_CHUNK_BYTES", 64 << 20)
    assert torch.equal(data.match_channels(images, 1), gray)


def test_a_small_run_at_64_still_trains(ablate, tmp_path):
    result = ablate(["linearity", "--dataset", "synthetic", "--image-size", "64", "--limit-train", "300",
                     "--limit-test", "100", "--epochs", "1", "--batch-size", "50", "--device", "cpu",
                     "--out", tmp_path / "r.parquet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.parquet").exists()
