"""folder:PATH datasets, their cache, --image-size and a second test set, on tiny generated PNGs."""

import gzip
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from ablate.data import datasets as data
from ablate.errors import UsageError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Never the real cache: the folder the decoded images go to."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ablate" / "folders"


def png(path: Path, colour=RED, size=(10, 20), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def pets(root: Path) -> Path:
    """train/ and test/ with cat, dog, fish: solid colours of several sizes and modes, one bad file."""
    for split, n in (("train", 3), ("test", 2)):
        for name, colour in (("cat", RED), ("dog", GREEN), ("fish", BLUE)):
            for i in range(n):
                png(root / split / name / f"{i}.png", colour, size=(10 + 7 * i, 20))
    png(root / "train" / "dog" / "gray.png", 128, size=(16, 16), mode="L")
    png(root / "train" / "fish" / "rgba.png", (10, 20, 30, 255), size=(40, 30), mode="RGBA")
    (root / "train" / "cat" / "bad.png").write_bytes(b"these bytes are not an image")
    (root / "train" / "cat" / "notes.txt").write_text("not an image file name: not looked at")
    return root


def test_train_and_test_folders(tmp_path, capsys):
    spec = f"folder:{pets(tmp_path / 'pets')}"
    ds = data.load_dataset(spec)
    assert ds.name == spec and ds.classes == ["cat", "dog", "fish"]
    assert ds.train_x.shape == (11, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (6, 3, 32, 32) and ds.shape == (3, 32, 32)
    assert ds.train_y.tolist() == [0] * 3 + [1] * 4 + [2] * 4 and ds.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    # sorted file order: cat 0 1 2 | dog 0 1 2 gray | fish 0 1 2 rgba; each solid colour survives the resize
    assert (ds.train_x[0] == torch.tensor(RED, dtype=torch.uint8).view(3, 1, 1)).all()
    assert (ds.train_x[6] == 128).all()
    assert (ds.train_x[10] == torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1)).all()
    assert (ds.test_x[5] == torch.tensor(BLUE, dtype=torch.uint8).view(3, 1, 1)).all()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: skipped 1 unreadable image in {tmp_path / 'pets'} "
                   f"(first: {tmp_path / 'pets' / 'train' / 'cat' / 'bad.png'}: not an image file Pillow can read)"]
    small = data.load_dataset(spec, image_size=16, limit_train=6)
    assert small.train_x.shape == (6, 3, 16, 16) and small.test_x.shape == (6, 3, 16, 16)


def test_second_load_comes_from_the_cache_and_a_new_file_invalidates_it(tmp_path, monkeypatch, capsys, cache):
    root = pets(tmp_path / "pets")
    first = data.load_dataset(f"folder:{root}")
    assert len(list(cache.glob("*.pt"))) == 1 and not list(cache.glob("*.tmp"))
    capsys.readouterr()
    opened = Image.open
    with monkeypatch.context() as m:  # only the image skipped is tried again: it may read now
        m.setattr(Image, "open", lambda path, *a, **k: opened(path, *a, **k) if Path(path).name == "bad.png"
                  else pytest.fail(f"{path} decoded again"))
        again = data.load_dataset(f"folder:{root}")
    for a, b in ((first.train_x, again.train_x), (first.train_y, again.train_y), (first.test_x, again.test_x)):
        assert torch.equal(a, b)
    assert "skipped 1 unreadable image" in capsys.readouterr().err  # still said, from the cache
    png(root / "train" / "cat" / "3.png", RED)
    assert len(data.load_dataset(f"folder:{root}").train_y) == 12
    assert len(list(cache.glob("*.pt"))) == 2
    data.load_dataset(f"folder:{root}", image_size=16)  # another size, another entry
    assert len(list(cache.glob("*.pt"))) == 3


def _edited(content):
    """Cache contents a hand or another program made of a good entry: each must read as no entry."""
    x, y = content["train_x"], content["train_y"]
    return {
        "a list": [1, 2], "a number": 5, "empty": {}, "no skipped": {k: v for k, v in content.items() if k != "skipped"},
        "skipped not names": {**content, "skipped": [3]}, "skipped a string": {**content, "skipped": "bad.png"},
        "no labels": {k: v for k, v in content.items() if k != "train_y"},
        "labels a list": {**content, "train_y": y.tolist()}, "float labels": {**content, "train_y": y.float()},
        "a label too large": {**content, "train_y": torch.where(y == 0, 7, y)},
        "a negative label": {**content, "train_y": torch.where(y == 0, -1, y)},
        "fewer labels": {**content, "train_y": y[:-1]}, "2-d labels": {**content, "train_y": y[:, None]},
        "float images": {**content, "train_x": x.float()}, "another size": {**content, "train_x": x[..., :16, :16]},
        "grey images": {**content, "train_x": x[:, :1]},
        "an image missing, unsaid": {**content, "train_x": x[:-1], "train_y": y[:-1]},
        "more than listed": {**content, "train_x": torch.cat([x, x]), "train_y": torch.cat([y, y])},
    }


def test_a_cache_entry_edited_into_another_shape_is_decoded_again_and_rewritten(tmp_path, cache, capsys):
    root = pets(tmp_path / "pets")
    first = data.load_dataset(f"folder:{root}")
    (entry,) = cache.glob("*.pt")
    good = torch.load(entry, weights_only=True)
    for what, edited in _edited(good).items():
        torch.save(edited, entry)
        again = data.load_dataset(f"folder:{root}")
        assert torch.equal(again.train_x, first.train_x) and torch.equal(again.train_y, first.train_y), what
        rewritten = torch.load(entry, weights_only=True)
        assert rewritten.keys() == good.keys() and torch.equal(rewritten["train_y"], good["train_y"]), what
    capsys.readouterr()


def test_one_tree_is_split_by_class_seeded(tmp_path, cache):
    counts = {"a": 10, "b": 5, "c": 20}
    for label, (name, n) in enumerate(counts.items()):
        for i in range(n):  # every image its own colour: (index, class, 0)
            png(tmp_path / "flat" / name / f"{i:02}.png", (i, 100 * label, 0), size=(8, 8))
    spec = f"folder:{tmp_path / 'flat'}"
    ds = data.load_dataset(spec)
    assert torch.bincount(ds.test_y).tolist() == [2, 1, 4] and torch.bincount(ds.train_y).tolist() == [8, 4, 16]
    pixels = lambda x: {tuple(p) for p in x[:, :2, 0, 0].tolist()}  # noqa: E731
    assert not pixels(ds.train_x) & pixels(ds.test_x) and len(pixels(ds.train_x) | pixels(ds.test_x)) == 35
    for path in cache.glob("*.pt"):
        path.unlink()
    again = data.load_dataset(spec)  # decoded afresh: the same split
    assert torch.equal(ds.test_x, again.test_x) and torch.equal(ds.train_y, again.train_y)
    half = data.load_dataset(spec, test_fraction=0.5)
    assert torch.bincount(half.test_y).tolist()[::2] == [5, 10]
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(UsageError, match="--test-fraction .* between 0 and 1"):
            data.load_dataset(spec, test_fraction=bad)


def test_train_and_test_with_different_classes_list_both(tmp_path, cache):
    root = pets(tmp_path / "pets")
    (root / "test" / "fish").rename(root / "test" / "cow")
    with pytest.raises(UsageError, match=r"train has \[cat, dog, fish\], test has \[cat, cow, dog\]"):
        data.load_dataset(f"folder:{root}")
    assert not cache.exists()


@pytest.mark.parametrize("layout,message", [
    ("missing", "does not exist"),
    ("file", "is not a folder"),
    ("empty", "has no class folders: folder:PATH needs PATH/<class>/<image>"),
    ("flat", "has no class folders"),
    ("no-images", r"class folder .*cat' has no images \(looked for \*.jpg"),
    ("train-only", "has train/ but no test/"),
    ("all-bad", "no readable images .*all 4 failed to decode .*: not an image file Pillow can read"),
])
def test_bad_folders_are_usage_errors(tmp_path, cache, layout, message):
    root = tmp_path / "d"
    if layout == "file":
        root.write_text("x")
    elif layout == "empty":
        root.mkdir()
    elif layout == "flat":
        png(root / "0.png")
    elif layout == "no-images":
        (root / "cat").mkdir(parents=True)
        (root / "cat" / "readme.txt").write_text("x")
    elif layout == "train-only":
        png(root / "train" / "cat" / "0.png")
    elif layout == "all-bad":
        for name in ("a", "b"):
            (root / name).mkdir(parents=True)
            for i in range(2):
                (root / name / f"{i}.png").write_bytes(b"junk")
    with pytest.raises(UsageError, match=message):
        data.load_dataset(f"folder:{root}")
    assert not cache.exists()


def test_bad_arguments_are_usage_errors_before_anything_is_read(tmp_path, cache):
    with pytest.raises(UsageError, match="names no folder"):
        data.load_dataset("folder:")
    for size in (4, 2000, 32.5, True):
        with pytest.raises(UsageError, match="--image-size .* whole number from 8 to 1024"):
            data.load_dataset(f"folder:{tmp_path / 'nowhere'}", image_size=size)
    assert not cache.exists()


def fake_mnist(folder: Path, test: int = 20, value: int | None = 200) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 30), ("t10k", test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen) if value is None else torch.full((n, 28, 28), value)
        for kind, array in (("images", images), ("labels", torch.arange(n) % 10)):
            header = bytes([0, 0, 0x08, array.dim()]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            with gzip.open(folder / f"{prefix}-{kind}-idx{array.dim()}-ubyte.gz", "wb") as f:
                f.write(header + array.to(torch.uint8).numpy().tobytes())


def test_a_second_test_set_from_a_folder_or_a_name(tmp_path, cache):
    root = pets(tmp_path / "pets")
    name, x, y = data.load_test_dataset(f"folder:{root}", ["cat", "dog", "fish"], None, 16, 1)
    assert name == "pets" and x.shape == (17, 1, 16, 16) and x.dtype == torch.uint8  # both splits
    assert y.tolist() == [0] * 3 + [1] * 4 + [2] * 4 + [0, 0, 1, 1, 2, 2]
    assert x[0].unique().tolist() == [76] and x[3].unique().tolist() == [150]  # luma of red, green
    _, rgb, _ = data.load_test_dataset(f"folder:{root}", ["cat", "dog", "fish"], None, None, 3)
    assert rgb.shape == (17, 3, 32, 32)

    fake_mnist(tmp_path / "mnist")
    digits = [str(i) for i in range(10)]
    name, x, y = data.load_test_dataset("mnist", digits, tmp_path, 32, 3)
    assert name == "mnist" and x.shape == (20, 3, 32, 32) and y.tolist() == [i % 10 for i in range(20)]
    assert torch.equal(x[:, 0], x[:, 2]) and x[0, 0, 16, 16] == 200  # gray repeated into R, G and B


def test_image_size_resizes_named_datasets_once(tmp_path):
    fake_mnist(tmp_path, value=None)
    plain = data.load_dataset("mnist", tmp_path, limit_train=20)
    assert plain.shape == (1, 32, 32)
    big = data.load_dataset("mnist", tmp_path, limit_train=20, image_size=64)
    small = data.load_dataset("mnist", tmp_path, limit_train=20, image_size=8)
    assert big.shape == (1, 64, 64) and small.shape == (1, 8, 8) and big.train_x.dtype == torch.uint8
    assert torch.equal(big.train_y, plain.train_y) and small.test_x.shape == (20, 1, 8, 8)
    means = [d.train_x.float().mean() for d in (plain, big, small)]
    assert all(abs(m - means[0]) < 5 for m in means)  # the same picture, smaller or larger
    assert torch.equal(big.train_x, data.resize(plain.train_x, 64))
    solid = torch.full((2, 1, 32, 32), 77, dtype=torch.uint8)
    assert (data.resize(solid, 12) == 77).all() and data.resize(solid, 32) is solid


def test_a_second_test_set_with_other_classes_lists_both(tmp_path, cache):
    root = pets(tmp_path / "pets")
    with pytest.raises(UsageError, match=r"classes \[cat, dog, fish\] but the model was trained on \[cat, dog\]"):
        data.load_test_dataset(f"folder:{root}", ["cat", "dog"], None, 32, 3)
    assert not cache.exists()
    with pytest.raises(UsageError, match=r"synthetic has the classes \[class 0, .*trained on \[cat, dog, fish\]"):
        data.load_test_dataset("synthetic", ["cat", "dog", "fish"], None, 32, 3)
    with pytest.raises(UsageError, match="unknown dataset 'cifar100'"):
        data.load_test_dataset("cifar100", ["cat"], None, 32, 3)
    with pytest.raises(UsageError, match="1 or 3 channels, not 4"):
        data.load_test_dataset(f"folder:{root}", ["cat", "dog", "fish"], None, 32, 4)


def test_train_on_one_folder_and_test_on_another(tmp_path, ablate, tiny):
    """Report 004's domain shift in one command: rows of split test:NAME beside test."""
    train, other = pets(tmp_path / "pets"), pets(tmp_path / "street")
    out = tmp_path / "shift.parquet"
    result = ablate(["sweep", "--vary", "lr=0.01", "--dataset", f"folder:{train}", "--test-dataset",
                     f"folder:{other}", "--image-size", "16", "--model", "mlp", "--epochs", "2",
                     "--batch-size", "4", "--device", "cpu", "--out", out])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image" in result.stderr
    frame = pd.read_parquet(out)
    assert frame.groupby("split").size().to_dict() == {"train": 3, "test": 3, "test:street": 3}
    assert set(frame["image_size"]) == {16} and set(frame["test_dataset"]) == {f"folder:{other}"}
    assert frame["params"].iloc[0] == 3 * 16 * 16 * 512 + 512 + 512 * 3 + 3  # three classes
    per_class = pd.read_parquet(tmp_path / "_per_class" / "shift.parquet")
    assert per_class["class_name"].tolist() == ["cat", "dog", "fish"] and per_class["images"].tolist() == [2, 2, 2]


# ---------------------------------------------------------------- hostile folders

@pytest.fixture
def deny(monkeypatch):
    """deny(path): `path` reads as permission denied, for root too (root reads any file whatever its
    mode): chmod 000, and os.access, os.scandir and Image.open refuse it as they would for a user."""
    denied = set()
    access, scandir, opened = os.access, os.scandir, Image.open

    def refused(path):
        return os.path.abspath(os.fspath(path)) in denied

    def fake_access(path, mode, *args, **kwargs):
        return False if refused(path) else access(path, mode, *args, **kwargs)

    def fake_scandir(path="."):
        if refused(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    def fake_open(path, *args, **kwargs):
        if isinstance(path, (str, Path)) and refused(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(os, "access", fake_access)
    monkeypatch.setattr(os, "scandir", fake_scandir)
    monkeypatch.setattr(Image, "open", fake_open)
    modes = {}

    def deny_(path: Path) -> None:
        modes[path] = path.stat().st_mode
        path.chmod(0)
        denied.add(os.path.abspath(path))

    def allow(path: Path) -> None:
        path.chmod(modes.pop(path))
        denied.discard(os.path.abspath(path))

    deny_.allow = allow
    yield deny_
    for path in list(modes):
        allow(path)


@pytest.mark.parametrize("which", ["root", "class", "subfolder"])
def test_an_unreadable_folder_is_named(tmp_path, cache, deny, ablate, which):
    root = pets(tmp_path / "my pets")  # a space in the PATH too
    target = {"root": root, "class": root / "train" / "dog", "subfolder": root / "train" / "dog" / "more"}[which]
    png(root / "train" / "dog" / "more" / "0.png", GREEN)
    deny(target)
    with pytest.raises(UsageError, match=f"^cannot read the folder '{target}': permission denied$"):
        data.load_dataset(f"folder:{root}")
    result = ablate(["linearity", "--dataset", f"folder:{root}", "--epochs", "1", "--device", "cpu",
                     "--out", tmp_path / "out.parquet"])
    assert result.exit_code == 2 and result.output == (f"ablate linearity: error: cannot read the folder "
                                                       f"'{target}': permission denied\n")
    assert not cache.exists() and not (tmp_path / "out.parquet").exists()


def test_an_image_unreadable_once_is_used_when_it_reads(tmp_path, cache, deny, capsys):
    root = pets(tmp_path / "pets")
    (root / "train" / "cat" / "bad.png").unlink()
    locked = root / "train" / "cat" / "1.png"
    deny(locked)
    first = data.load_dataset(f"folder:{root}")
    assert len(first.train_y) == 10 and f"(first: {locked}: permission denied)" in capsys.readouterr().err
    deny.allow(locked)  # a chmod: its size and mtime are as they were
    again = data.load_dataset(f"folder:{root}")
    assert len(again.train_y) == 11 and capsys.readouterr().err == ""
    assert len(list(cache.glob("*.pt"))) == 2  # the chmod changed its ctime: a new key
    # a cache entry whose skipped image reads now, under the same key: decoded again, overwritten
    [entry] = [p for p in cache.glob("*.pt") if len(torch.load(p)["train_y"]) == 11]
    content = torch.load(entry)
    content["skipped"], content["train_x"], content["train_y"] = (
        ["train/cat/1.png"], content["train_x"][1:], content["train_y"][1:])
    torch.save(content, entry)
    assert len(data.load_dataset(f"folder:{root}").train_y) == 11
    assert torch.load(entry)["skipped"] == [] and capsys.readouterr().err == ""


def test_a_repaired_image_with_its_old_size_and_time_is_used(tmp_path, cache, capsys):
    root = pets(tmp_path / "pets")
    bad = root / "train" / "cat" / "bad.png"
    good = root / "train" / "cat" / "0.png"
    bad.write_bytes(b"\0" * good.stat().st_size)
    os.utime(bad, ns=(good.stat().st_atime_ns, good.stat().st_mtime_ns))
    assert len(data.load_dataset(f"folder:{root}").train_y) == 11
    assert "skipped 1 unreadable image" in capsys.readouterr().err
    bad.write_bytes(good.read_bytes())
    os.utime(bad, ns=(good.stat().st_atime_ns, good.stat().st_mtime_ns))
    assert len(data.load_dataset(f"folder:{root}").train_y) == 12 and capsys.readouterr().err == ""


def test_one_class_is_refused(tmp_path, cache):
    for layout in ("flat", "split"):
        root = tmp_path / layout
        for i in range(3):
            png(root / ("" if layout == "flat" else "train") / "cat" / f"{i}.png")
            png(root / ("" if layout == "flat" else "test") / "cat" / f"{i}.png")
        with pytest.raises(UsageError, match=r"has one class folder, 'cat': a classifier needs 2 or more classes"):
            data.load_dataset(f"folder:{root}")
    assert not cache.exists()


def test_a_rejected_test_dataset_or_limit_writes_no_cache(tmp_path, cache, ablate, tiny):
    root = pets(tmp_path / "pets")
    two = tmp_path / "two"
    for name in ("cat", "dog"):
        for split in ("train", "test"):
            png(two / split / name / "0.png")
    result = ablate(["linearity", *tiny, "--test-dataset", f"folder:{root}", "--out", tmp_path / "o.parquet"])
    assert result.exit_code == 2 and "--test-dataset folder:" in result.output and "class 0" in result.output
    result = ablate(["linearity", "--dataset", f"folder:{root}", "--limit-train", "500", "--epochs", "1",
                     "--out", tmp_path / "o.parquet"])
    assert result.exit_code == 2 and "--limit-train 500 is out of range" in result.output
    with pytest.raises(UsageError, match="--limit-test 7 is out of range: folder:.* has 6 test images"):
        data.load_dataset(f"folder:{root}", limit_test=7)
    with pytest.raises(UsageError, match="--limit-train 12 is out of range: folder:.* has 11 train images"):
        data.load_dataset(f"folder:{root}", limit_train=12, image_size=8)  # known after decoding: bad.png
    assert not cache.exists() and not (tmp_path / "o.parquet").exists()
    # one block around training data, test data and every check after them: a refusal anywhere in it
    with pytest.raises(UsageError, match="trained on"), data.deferred_cache_writes():
        ds = data.load_dataset(f"folder:{root}")
        data.load_test_dataset(f"folder:{two}", ds.classes, None, 32, 3)
    assert not cache.exists()
    with data.deferred_cache_writes():
        ds = data.load_dataset(f"folder:{root}")
        data.load_test_dataset(f"folder:{root}", ds.classes, None, 16, 3)
        assert not cache.exists()
    assert len(list(cache.glob("*.pt"))) == 2


def test_a_rejected_test_dataset_leaves_no_cache_of_the_training_folder(tmp_path, cache, ablate):
    root, three = tmp_path / "two", pets(tmp_path / "pets")
    for name in ("cat", "dog"):
        for split in ("train", "test"):
            png(root / split / name / "0.png")
    result = ablate(["linearity", "--dataset", f"folder:{root}", "--test-dataset", f"folder:{three}",
                     "--epochs", "1", "--device", "cpu", "--out", tmp_path / "o.parquet"])
    assert result.exit_code == 2 and "but the model was trained on [cat, dog]" in result.output
    assert not cache.exists()


def test_every_class_needs_a_readable_image_and_two_to_split(tmp_path, cache):
    root = pets(tmp_path / "pets")
    for path in (root / "test" / "dog").iterdir():
        path.write_bytes(b"junk")
    with pytest.raises(UsageError, match=r"class folder '.*test/dog' has no readable images: all 2 failed to "
                                         r"decode \(first: '.*test/dog/0.png': not an image file Pillow can read\)"):
        data.load_dataset(f"folder:{root}")
    flat = tmp_path / "flat"
    for name, n in (("a", 3), ("b", 1)):
        for i in range(n):
            png(flat / name / f"{i}.png")
    with pytest.raises(UsageError, match=r"class folder '.*flat/b' has only 1 image: to split off a test set"):
        data.load_dataset(f"folder:{flat}")
    (flat / "b" / "1.png").write_bytes(b"junk")
    with pytest.raises(UsageError, match=r"class folder '.*flat/b' has only 1 readable image"):
        data.load_dataset(f"folder:{flat}")
    assert not cache.exists()


def test_links_loops_and_things_that_are_not_files(tmp_path, cache, capsys):
    root = pets(tmp_path / "pets")
    cat = root / "train" / "cat"
    (cat / "loop").symlink_to("..")  # up to train/: a loop, not the other classes' images
    (cat / "self").symlink_to(".")
    (cat / "a.png").symlink_to("a.png")  # a link to itself
    (cat / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(cat / "fifo.png")  # never opened: it would wait for a writer
    shared = tmp_path / "elsewhere"
    png(shared / "x.png", RED)
    (cat / "linked").symlink_to(shared)  # a linked folder is read, as ImageFolder does
    ds = data.load_dataset(f"folder:{root}")
    assert ds.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    err = capsys.readouterr().err
    assert "skipped 3 unreadable images" in err and f"(first: {cat / 'a.png'}: " in err
    (root / "test" / "bird").symlink_to(tmp_path / "no-birds")
    with pytest.raises(UsageError, match=r"'.*test/bird' is a broken symbolic link \(or a loop of links\)"):
        data.load_dataset(f"folder:{root}")
    (root / "test" / "bird").unlink()
    (root / "test2").symlink_to("test2")
    with pytest.raises(UsageError, match="is a broken symbolic link"):
        data.load_dataset(f"folder:{root / 'test2'}")


def test_a_file_where_a_folder_is_expected(tmp_path, cache):
    root = pets(tmp_path / "pets")
    (root / "train").rename(tmp_path / "train")
    (root / "train").write_text("not a folder")
    with pytest.raises(UsageError, match=r"'.*pets/train' is not a folder: folder:PATH needs"):
        data.load_dataset(f"folder:{root}")


def test_modes_depths_orientation_and_size(tmp_path, cache, monkeypatch, capsys):
    import numpy as np

    root = tmp_path / "modes"
    png(root / "a" / "p.png", 1, mode="P")
    png(root / "a" / "la.png", (90, 255), mode="LA")
    png(root / "a" / "one.png", 1, mode="1")
    Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)).save(root / "a" / "sixteen.png")
    (root / "b").mkdir()
    Image.fromarray(np.full((6, 6), 257 * 40, dtype=np.uint16)).save(root / "b" / "sixteen.tif")
    Image.fromarray(np.full((6, 6), 0.5, dtype=np.float32)).save(root / "b" / "float.tif")
    Image.new("CMYK", (6, 6), (0, 0, 0, 0)).save(root / "b" / "cmyk.jpg")
    rotated = Image.new("RGB", (20, 10), RED)
    rotated.paste(BLUE, (0, 0, 10, 10))  # the left half blue, as stored; EXIF: turn it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(root / "b" / "rotated.png", exif=exif)
    colour = {name: data._pixels(root / name)[:, 0, 0].tolist()
              for name in ("a/la.png", "a/one.png", "a/sixteen.png", "b/sixteen.tif", "b/cmyk.jpg")}
    assert colour == {"a/la.png": [90] * 3, "a/one.png": [255] * 3, "a/sixteen.png": [255] * 3,  # 16 bits:
                      "b/sixteen.tif": [40] * 3, "b/cmyk.jpg": [255] * 3}  # scaled, not clipped at 255
    upright = data._pixels(root / "b" / "rotated.png")
    assert upright.shape == (3, 20, 10) and upright[:, 0, 0].tolist() == list(BLUE)
    assert upright[:, -1, 0].tolist() == list(RED)
    ds = data.load_dataset(f"folder:{root}", test_fraction=0.5, image_size=8)
    assert len(ds.train_y) + len(ds.test_y) == 7
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image" in err and "float.tif: 32-bit float pixels (mode F) have no 8-bit scale" in err
    for path in cache.glob("*.pt"):  # else the images decoded above come from it
        path.unlink()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # more than 2 x 10 pixels: too large to decode
    with pytest.raises(UsageError, match=r"all 8 failed to decode \(first: .*la.png': too large: Image size "
                                         r"\(200 pixels\) exceeds limit of 20 pixels\)$"):
        data.load_dataset(f"folder:{root}", image_size=8)
