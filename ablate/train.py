"""One training run: a model, in-memory data, an optimiser, a seed; per-epoch records out."""

from __future__ import annotations

import inspect
import os
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
    momentum: float | None = 0.9  # SGD's momentum; None for the optimisers without one
    weight_decay: float = 0.0
    scheduler: str = "none"
    lr_step_size: int | None = None  # step: epochs between decays
    lr_gamma: float | None = None  # step, exponential: factor per decay
    lr_max: float | None = None  # onecycle: the peak learning rate
    normalization: str = "half"
    augment: str = "none"
    permutation: str = "none"
    limit_train: int | None = None
    limit_test: int | None = None
    deterministic: bool = False  # torch's deterministic algorithms (matters on GPUs)

    def columns(self) -> dict:
        """The fields as result columns; `lr` is `base_lr` there, `lr` being each epoch's."""
        return {("base_lr" if k == "lr" else k): v for k, v in asdict(self).items()}


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
    "rmsprop": lambda p, c: torch.optim.RMSprop(p, lr=c.lr, momentum=c.momentum or 0, weight_decay=c.weight_decay),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay),
}

# name -> (make(optimizer, config, steps per epoch), stepped after every batch?)
SCHEDULERS: dict[str, tuple[Callable, bool]] = {
    "none": (lambda opt, c, steps: None, False),
    "step": (lambda opt, c, steps: torch.optim.lr_scheduler.StepLR(opt, c.lr_step_size, c.lr_gamma), False),
    "exponential": (lambda opt, c, steps: torch.optim.lr_scheduler.ExponentialLR(opt, c.lr_gamma), False),
    "cosine": (lambda opt, c, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, c.epochs), False),
    "onecycle": (lambda opt, c, steps: torch.optim.lr_scheduler.OneCycleLR(
        opt, c.lr_max, total_steps=c.epochs * steps), True),
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
def evaluate(model, x_all, y_all, prepare, num_classes, batch_size=1000):
    model.eval()
    loss_sum = torch.zeros((), device=x_all.device)
    correct = torch.zeros(num_classes, device=x_all.device)
    for i in range(0, len(y_all), batch_size):
        x = prepare(x_all[i:i + batch_size]).contiguous(memory_format=torch.channels_last)
        y = y_all[i:i + batch_size]
        out = model(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum")
        correct += torch.bincount(y[out.argmax(1) == y], minlength=num_classes)
    counts = torch.bincount(y_all, minlength=num_classes).clamp(min=1)
    return (loss_sum / len(y_all)).item(), (correct.sum() / len(y_all)).item(), (correct / counts).tolist()


def _in_chunks(f, x, size=5000):
    return torch.cat([f(x[i:i + size]) for i in range(0, len(x), size)])


def train_run(
    config: RunConfig,
    data: Dataset,
    seed: int,
    device: torch.device,
    on_batch: Callable[[int, int, float, float], None] | None = None,
) -> RunResult:
    """Train one model. `on_batch(epoch, images done this epoch, running loss, seconds since
    the epoch began)` reports progress."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if config.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    torch.use_deterministic_algorithms(config.deterministic)
    try:
        return _train(config, data, seed, device, on_batch)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(config, data, seed, device, on_batch) -> RunResult:
    with torch.random.fork_rng(devices=[]):  # the seed alone fixes the initial weights
        torch.manual_seed(seed)
        model = build_model(config, data.shape[0], len(data.classes))
    # channels_last: 1.12-1.18x on this CPU for these nets (PERFORMANCE.md)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
    make_scheduler, per_step = SCHEDULERS[config.scheduler]
    scheduler = make_scheduler(optimizer, config, math.ceil(len(data.train_y) / config.batch_size))
    order_gen, augment_gen = seeded(seed, 1), seeded(seed, 2)
    permute = transforms.permutation(config.permutation, data.shape[1] * data.shape[2], seeded(seed, 3))
    augment = transforms.augmentation(config.augment)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    normalize = transforms.normalizer(config.normalization, train_x)
    unit = lambda x: x.float() / 255  # noqa: E731
    if augment is None:  # every image is the same each epoch: normalise once, up front
        train_x = _in_chunks(lambda x: normalize(unit(x)), train_x)
        test_x = _in_chunks(lambda x: normalize(unit(x)), test_x)
        train_prepare = test_prepare = permute
    else:
        train_prepare = lambda x: permute(normalize(augment(unit(x), augment_gen)))  # noqa: E731
        test_prepare = lambda x: permute(normalize(unit(x)))  # noqa: E731

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
            x = train_prepare(train_x[idx]).contiguous(memory_format=torch.channels_last)
            y = train_y[idx]
            out = model(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None and per_step:
                scheduler.step()
            loss_sum += loss.detach() * len(idx)
            correct += (out.argmax(1) == y).sum()
            if on_batch is not None and step % 10 == 9:  # .item() is a sync point on a GPU
                on_batch(epoch, i + len(idx), loss_sum.item() / (i + len(idx)), time.perf_counter() - start)
        train_loss = loss_sum.item() / n
        train_seconds = time.perf_counter() - start
        records.append(EpochRecord(epoch, "train", train_loss, correct.item() / n, lr, train_seconds))
        if scheduler is not None and not per_step:
            scheduler.step()
        start = time.perf_counter()
        test_loss, test_acc, per_class = evaluate(
            model, test_x, test_y, test_prepare, len(data.classes))
        records.append(EpochRecord(epoch, "test", test_loss, test_acc, lr, time.perf_counter() - start))
        if on_batch is not None:
            on_batch(epoch, n, train_loss, train_seconds)
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            status = "diverged"
            break
    return RunResult(records, per_class, status)
