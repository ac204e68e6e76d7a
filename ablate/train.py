"""One training run: a model, in-memory data, an optimiser, a seed; per-epoch records out."""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablate import arch, transforms
from ablate.data import Dataset
from ablate.errors import UsageError, unknown_name


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers, except the seed. Every field is a column."""

    dataset: str = "cifar10"
    model: str = "tutorial"
    conv1_channels: int = 6
    activation: str = "relu"
    fc1_features: int = 120
    dropout: float = 0.0
    batchnorm: bool = False
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.02
    optimizer: str = "momentum"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "none"
    normalization: str = "half"
    augment: str = "none"
    permutation: str = "none"
    limit_train: int | None = None
    limit_test: int | None = None

    def columns(self) -> dict:
        return asdict(self)


@dataclass
class EpochRecord:
    epoch: int
    split: str  # "train" or "test"
    loss: float
    accuracy: float
    lr: float
    seconds: float  # wall time of this epoch's training (train) or evaluation (test)


@dataclass
class RunResult:
    epochs: list[EpochRecord]
    class_accuracy: list[float]  # test split, per class, after the last epoch
    status: str  # "ok", or "diverged" when the loss became NaN or infinite


def build_model(config: RunConfig, in_channels: int, num_classes: int) -> nn.Module:
    """The registry model named by `config.model`, given the config fields it takes."""
    entry = {e.name: e for e in arch.registered_models()}.get(config.model)
    if entry is None:
        raise unknown_name("model", config.model, [e.name for e in arch.registered_models()])
    accepted = inspect.signature(entry.build).parameters
    kwargs = {k: v for k, v in config.columns().items() if k in accepted}
    return entry.build(in_channels=in_channels, num_classes=num_classes, **kwargs)


OPTIMIZERS: dict[str, Callable] = {
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, weight_decay=c.weight_decay),
    "momentum": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "nesterov": lambda p, c: torch.optim.SGD(
        p, lr=c.lr, momentum=c.momentum, nesterov=True, weight_decay=c.weight_decay),
    "rmsprop": lambda p, c: torch.optim.RMSprop(p, lr=c.lr, weight_decay=c.weight_decay),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay),
}

SCHEDULERS: dict[str, Callable] = {
    "none": lambda opt, c, steps: None,
}


def resolve_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. Asking for one that is not there is a usage error."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if name not in available:
        raise unknown_name("device", name, ["auto", *available])
    if not available[name]:
        raise UsageError(f"device {name!r} is not available here; use --device cpu or auto")
    return torch.device(name)


def seeded(seed: int, stream: int) -> torch.Generator:
    """One independent generator per purpose: 1 data order, 2 augmentation, 3 permutation."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


@torch.no_grad()
def evaluate(model, x_all, y_all, prepare, permute, num_classes, batch_size=1000):
    model.eval()
    loss_sum = torch.zeros((), device=x_all.device)
    correct = torch.zeros(num_classes, device=x_all.device)
    for i in range(0, len(y_all), batch_size):
        x = permute(prepare(x_all[i:i + batch_size])).contiguous(memory_format=torch.channels_last)
        y = y_all[i:i + batch_size]
        out = model(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum")
        correct += torch.bincount(y[out.argmax(1) == y], minlength=num_classes)
    counts = torch.bincount(y_all, minlength=num_classes).clamp(min=1)
    return (loss_sum / len(y_all)).item(), (correct.sum() / len(y_all)).item(), (correct / counts).tolist()


def train_run(
    config: RunConfig,
    data: Dataset,
    seed: int,
    device: torch.device,
    on_batch: Callable[[int, int, float], None] | None = None,
) -> RunResult:
    """Train one model; `on_batch(epoch, images done this epoch, running loss)` reports progress."""
    with torch.random.fork_rng(devices=[]):  # the seed alone fixes the initial weights
        torch.manual_seed(seed)
        model = build_model(config, data.shape[0], len(data.classes))
    # channels_last: 1.12-1.18x on this CPU for these nets (PERFORMANCE.md)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
    steps_per_epoch = math.ceil(len(data.train_y) / config.batch_size)
    scheduler = SCHEDULERS[config.scheduler](optimizer, config, steps_per_epoch)
    order_gen, augment_gen = seeded(seed, 1), seeded(seed, 2)
    permute = transforms.permutation(config.permutation, data.shape[1] * data.shape[2], seeded(seed, 3))
    augment = transforms.augmentation(config.augment)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    prepare = transforms.normalizer(config.normalization, train_x)

    records, status, n = [], "ok", len(train_y)
    for epoch in range(1, config.epochs + 1):
        model.train()
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        order = torch.randperm(n, generator=order_gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for step, i in enumerate(range(0, n, config.batch_size)):
            idx = order[i:i + config.batch_size]
            x, y = prepare(train_x[idx]), train_y[idx]
            if augment is not None:
                x = augment(x, augment_gen)
            x = permute(x).contiguous(memory_format=torch.channels_last)
            out = model(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None and getattr(scheduler, "per_step", False):
                scheduler.step()
            loss_sum += loss.detach() * len(idx)
            correct += (out.argmax(1) == y).sum()
            if on_batch is not None and step % 10 == 9:  # .item() is a sync point on a GPU
                on_batch(epoch, i + len(idx), loss_sum.item() / (i + len(idx)))
        train_loss = loss_sum.item() / n
        records.append(EpochRecord(epoch, "train", train_loss, correct.item() / n, lr,
                                   time.perf_counter() - start))
        if scheduler is not None and not getattr(scheduler, "per_step", False):
            scheduler.step()
        start = time.perf_counter()
        test_loss, test_acc, per_class = evaluate(
            model, test_x, test_y, prepare, permute, len(data.classes))
        records.append(EpochRecord(epoch, "test", test_loss, test_acc, lr, time.perf_counter() - start))
        if on_batch is not None:
            on_batch(epoch, n, train_loss)
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            status = "diverged"
            break
    return RunResult(records, per_class, status)
