"""One training run: a model, in-memory data, an optimiser, a seed; per-epoch records out."""

from __future__ import annotations

import copy
import functools
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablate import arch, transforms
from ablate import pack as packing
from ablate.config import AMP, OPTIMIZERS, SCHEDULERS, RunConfig, checked, with_defaults
from ablate.data import Dataset, balanced_subset
from ablate.errors import UsageError, unknown_name
from ablate.registry import Registry


@dataclass
class EpochRecord:
    epoch: int
    split: str  # "train" or "test"
    loss: float
    accuracy: float | None  # None where the task has no accuracy
    lr: float
    seconds: float  # wall time of this epoch's training (train) or evaluation (test)


@dataclass
class RunResult:
    epochs: list[EpochRecord]
    class_accuracy: list[float | None]  # test split, per class, after the last epoch; None: no image
    status: str  # "ok", or "diverged" when the loss became NaN or infinite
    latent_corr: float | None = None  # a model with encode(): mean |Pearson r| of its code's coordinates
    state: dict | None = None  # the final weights, when asked for (keep_model)
    error: str | None = None  # status "failed": the first line of the exception the run raised
    packed: int = 1  # how many seeds trained together in one packed model (ablate.pack)


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """What a run learns: its loss on a batch, whether outputs are class scores, and what a
    model must output for it."""

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (output, x, y) -> mean
    classifies: bool  # outputs are class scores: accuracy and per-class accuracy are measured
    # (a model's output on a batch x of the data, the data) -> None, or what is wrong, as
    # "gives <what it gave> for a batch of N; task T needs <what it takes>"
    check_output: Callable[[object, torch.Tensor, Dataset], str | None] = lambda output, x, data: None
    # what the model sees of a batch x (its loss is scored against x and the labels), drawing any
    # randomness from the run's own generator: a denoising task adds noise here
    inputs: Callable[[torch.Tensor, torch.Generator], torch.Tensor] = lambda x, generator: x
    measures_code: bool = False  # after training, the model's encode() is measured (latent_corr)


def _output_check(task: str, need: Callable[[torch.Tensor, Dataset], tuple], why: Callable[[Dataset], str]):
    """A task's `check_output`: a floating-point tensor of the shape `need(x, data)`, any values
    (NaN too: a run that diverges says so itself)."""

    def check(output, x: torch.Tensor, data: Dataset) -> str | None:
        shape = need(x, data)
        tensor = isinstance(output, torch.Tensor) and output.is_floating_point()
        if tensor and tuple(output.shape) == shape:
            return None
        wanted = str(shape) if tensor else f"a floating-point tensor of shape {shape}"
        return (f"gives {arch.describe_output(output)} for a batch of {len(x)}; task {task} needs {wanted}: "
                f"{why(data)}")

    return check


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    """Add `task` under its name (a plugin's, or ablate's own)."""
    return TASKS.register(task.name, task)


register_task(Task(
    "classify", lambda out, x, y: F.cross_entropy(out, y), True,
    _output_check("classify", lambda x, data: (len(x), len(data.classes)),
                  lambda data: f"one score per class of {data.name}")))
# the output against the input, in the normalised space the run states (normalization none: [0, 1])
register_task(Task(
    "reconstruct", lambda out, x, y: F.mse_loss(out, x), False,
    _output_check("reconstruct", lambda x, data: tuple(x.shape),
                  lambda data: f"each image rebuilt, the shape of the input ({data.name})"), measures_code=True))

LATENT_CORR_IMAGES = 4000  # report 001, Q3


@torch.no_grad()
def latent_correlation(model: nn.Module, x: torch.Tensor, prepare) -> float | None:
    """Mean absolute Pearson correlation between pairs of the model's latent coordinates
    (`model.encode`) over `x`; None for a model without `encode` or a code of one coordinate."""
    if not callable(getattr(model, "encode", None)):
        return None
    model.eval()
    codes = torch.cat([model.encode(prepare(x[i:i + 1000]).contiguous(memory_format=torch.channels_last))
                       for i in range(0, len(x), 1000)]).double()
    if codes.shape[1] < 2:
        return None
    r = torch.corrcoef(codes.T)
    pairs = r[~torch.eye(len(r), dtype=torch.bool, device=r.device)]
    return pairs.abs().nanmean().item()  # a constant coordinate has no correlation: left out


# ---------------------------------------------------------------- models


def resolve(config: RunConfig) -> RunConfig:
    """`config` checked, with every constructor argument of its model in `model_args` (the
    model's own default where none is given). Every named choice must exist, and an argument
    the model does not take is a usage error: a row records only what decided the run."""
    config = checked(config)  # every field's type and range (config.SETTINGS)
    for registry, name in ((TASKS, config.task), (OPTIMIZERS, config.optimizer),
                           (SCHEDULERS, config.scheduler), (transforms.NORMALIZATIONS, config.normalization),
                           (transforms.PERMUTATIONS, config.permutation)):
        registry.get(name)
    config = checked(with_defaults(config))  # the defaults filled in are checked too (lr_max = 4 x lr)
    transforms.augmentation(config.augment)
    if config.amp not in AMP:
        raise unknown_name("amp", config.amp, AMP)
    source = arch.model_source(config.model)
    unknown = [k for k, _ in config.model_args if k not in source.knobs]
    if unknown:
        takes = ", ".join(source.knobs) or "no constructor arguments"
        raise UsageError(f"model {config.model!r} does not take {', '.join(unknown)}; it takes {takes}")
    return replace(config, model_args=tuple(sorted({**source.knobs, **dict(config.model_args)}.items())))


def build_model(config: RunConfig, in_channels: int, num_classes: int, image_size: int = 32) -> nn.Module:
    """A fresh model of `config` (resolved), for data of `in_channels` x `image_size`^2."""
    model = arch.model_source(config.model).build(in_channels, num_classes, image_size, **dict(config.model_args))
    if any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules()):
        model.eval()  # a layer spec's Lazy layers take their sizes from a first batch
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
        model.train()
    if config.strip_activations:
        arch.strip_activations(model)
    return model


# ---------------------------------------------------------------- optimisers and schedulers


def make_optimizer(parameters, config: RunConfig) -> torch.optim.Optimizer:
    entry = OPTIMIZERS.get(config.optimizer)
    return getattr(torch.optim, entry.torch_class)(parameters, **entry.options(config))


def make_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig, steps_per_epoch: int):
    """The run's learning-rate scheduler, or None for a constant rate."""
    entry = SCHEDULERS.get(config.scheduler)
    if entry.torch_class is None:
        return None
    return getattr(torch.optim.lr_scheduler, entry.torch_class)(optimizer, **entry.options(config, steps_per_epoch))


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


# Independent random streams of a run, each seeded from the run's seed: the initial weights
# and then dropout draw from torch's global generator, forked for the run and re-seeded.
INIT, ORDER, AUGMENT, PERMUTE, EVAL_PERMUTE, DROPOUT, INPUT, EVAL_INPUT = range(8)


def stream_seed(seed: int, stream: int) -> int:
    return seed * 1_000_003 + stream


def seeded(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(stream_seed(seed, stream))


def _forward(model: nn.Module, xs: list[torch.Tensor], amp: bool) -> list[torch.Tensor]:
    """`model` on the K copies' inputs side by side (K = 1: a model that is not packed), and
    each copy's output, in float32."""
    x = xs[0] if len(xs) == 1 else torch.cat(xs, 1)
    with torch.autocast(x.device.type, torch.bfloat16, enabled=amp):
        out = model(x)
    return [o.float() for o in out.chunk(len(xs), 1)]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # 1.12-1.18x on this CPU for these nets (measured in benchmarks/speed.py)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate(model, x_all, y_all, prepare, task: Task, num_classes: int, batch_size=1000) -> dict:
    """Mean loss over the split and, for a classifier, accuracy and per-class accuracy (None
    for a class with no image in the split)."""
    return evaluate_copies(model, x_all, y_all, [prepare], task, num_classes, batch_size)[0]


@torch.no_grad()
def evaluate_copies(model, x_all, y_all, prepares: list, task: Task, num_classes: int, batch_size=None,
                    amp: bool = False, generators: list | None = None) -> list[dict]:
    """`evaluate` for each of the K copies of a packed model, copy k's images made by `prepares[k]`
    and shown to it through `task.inputs` with `generators[k]`, in batches of 1000 images in all."""
    model.eval()
    k = len(prepares)
    batch_size = batch_size or max(1, 1000 // k)
    loss_sum = torch.zeros(k, device=x_all.device)
    correct = torch.zeros(k, num_classes, device=x_all.device)
    for i in range(0, len(y_all), batch_size):
        xs = [_channels_last(prepare(x_all[i:i + batch_size])) for prepare in prepares]
        y = y_all[i:i + batch_size]
        feeds = [task.inputs(x, g) for x, g in zip(xs, generators or [None] * k)]
        for c, (out, x) in enumerate(zip(_forward(model, feeds, amp), xs)):
            loss_sum[c] += task.loss(out, x, y) * len(y)
            if task.classifies:
                correct[c] += torch.bincount(y[out.argmax(1) == y], minlength=num_classes)
    metrics = [{"loss": loss, "accuracy": None, "class_accuracy": []} for loss in (loss_sum / len(y_all)).tolist()]
    if task.classifies:
        images = torch.bincount(y_all, minlength=num_classes).tolist()
        for m, hits, accuracy in zip(metrics, correct.tolist(), (correct.sum(1) / len(y_all)).tolist()):
            m["accuracy"] = accuracy
            m["class_accuracy"] = [None if n == 0 else c / n for c, n in zip(hits, images)]
    return metrics


def _in_chunks(f, x, size=5000):
    return torch.cat([f(x[i:i + size]) for i in range(0, len(x), size)])


def train_run(config: RunConfig, data: Dataset, seed: int, device: torch.device,
              on_batch: Callable[[int, int, float, float], None] | None = None,
              other_test: tuple[str, torch.Tensor, torch.Tensor] | None = None,
              keep_model: bool = False) -> RunResult:
    """One run of `config` under `seed`: `train_runs` for one seed."""
    return train_runs(config, data, [seed], device, on_batch, other_test, keep_model)[0]


def train_runs(
    config: RunConfig,
    data: Dataset,
    seeds: list[int],
    device: torch.device,
    on_batch: Callable[[int, int, float, float], None] | None = None,
    other_test: tuple[str, torch.Tensor, torch.Tensor] | None = None,
    keep_model: bool = False,
    pack: bool = True,
) -> list[RunResult]:
    """Train one model per seed, evaluating each before training (epoch 0) and after every
    epoch; the seeds train together as one packed model (ablate.pack) when the model packs and
    `pack` is set, else one after another. `on_batch(epoch, images trained so far by all the
    seeds, running loss, images per second)` reports progress; `other_test`
    (name, images, labels) is evaluated too, as split `test:NAME`. Nothing outside a run's seed
    decides its numbers: the global random state is forked and given back as it was."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if config.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    torch.use_deterministic_algorithms(config.deterministic)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            copies = [_model(config, data, seed, device) for seed in seeds]
            packed = None
            if pack and len(seeds) > 1:
                dropout = [seeded(seed, DROPOUT, device) for seed in seeds]
                packed = packing.pack(copies, dropout, _probe(data))
            if packed is not None:
                return _train(config, data, seeds, packed, copies, device, on_batch, other_test, keep_model)
            results, images = [], min(config.labels or len(data.train_y), len(data.train_y))
            for i, (seed, model) in enumerate(zip(seeds, copies)):
                torch.manual_seed(stream_seed(seed, DROPOUT))
                report = on_batch and functools.partial(_after, on_batch, i * config.epochs * images)
                results += _train(config, data, [seed], model, [model], device, report, other_test, keep_model)
            return results
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _after(on_batch, images_before: int, epoch: int, images: int, loss: float, speed: float) -> None:
    """`on_batch` of a seed trained after others of its pack: their images count too."""
    on_batch(epoch, images_before + images, loss, speed)


def _model(config: RunConfig, data: Dataset, seed: int, device: torch.device) -> nn.Module:
    """The run's initial model: its weights drawn from the seed's init stream (or pretrained)."""
    torch.manual_seed(stream_seed(seed, INIT))
    model = build_model(config, data.shape[0], len(data.classes), data.shape[1])
    if config.pretrain_epochs:
        model.encoder.load_state_dict(pretrained_encoder(config, data, seed, device))
        if config.freeze_encoder:
            model.encoder.requires_grad_(False)
    return model


def _probe(data: Dataset) -> torch.Tensor:
    """A few images on which a packed model must agree with its copies."""
    return data.test_x[:2].float() / 255


def _train(config, data, seeds, net, copies, device, on_batch, other_test, keep_model) -> list[RunResult]:
    """Train `net`: one model (one seed), or the seeds' `copies` packed into one."""
    task, k, amp = TASKS.get(config.task), len(seeds), config.amp == "bf16"
    net = net.to(device, memory_format=torch.channels_last)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)
    schedule = SCHEDULERS.get(config.scheduler)
    scheduler = make_scheduler(optimizer, config, math.ceil(len(data.train_y) / config.batch_size))
    step_net = torch.compile(net) if config.compile else net
    order_gens, augment_gens = [seeded(s, ORDER) for s in seeds], [seeded(s, AUGMENT) for s in seeds]
    input_gens = [seeded(s, INPUT, device) for s in seeds]
    pixels = data.shape[1] * data.shape[2]
    permutes = [transforms.permutation(config.permutation, pixels, seeded(s, PERMUTE)) for s in seeds]
    # evaluation draws fresh permutations from its own stream: the test split's size must
    # not change what training sees (a fixed permutation is the same for both)
    eval_permutes = [transforms.permutation(config.permutation, pixels, seeded(s, EVAL_PERMUTE)) for s in seeds] \
        if config.permutation == "fresh" else permutes
    augment = transforms.augmentation(config.augment)
    train_x, train_y = data.train_x, data.train_y
    if config.labels is not None:  # the labelled few; pretraining saw them all, without labels
        keep = balanced_subset(train_y, config.labels)
        train_x, train_y = train_x[keep], train_y[keep]
    train_x, train_y = train_x.to(device), train_y.to(device)
    tests = {"test": (data.test_x.to(device), data.test_y.to(device))}
    if other_test is not None:
        tests[f"test:{other_test[0]}"] = (other_test[1].to(device), other_test[2].to(device))
    normalize = transforms.normalizer(config.normalization, train_x)
    unit = lambda x: x.float() / 255  # noqa: E731
    if augment is None:  # every image is the same each epoch: normalise once, up front
        train_x = _in_chunks(lambda x: normalize(unit(x)), train_x)
        tests = {split: (_in_chunks(lambda x: normalize(unit(x)), x), y) for split, (x, y) in tests.items()}
        train_prepares, test_prepares = permutes, eval_permutes
    else:
        train_prepares = [lambda x, p=p, g=g: p(normalize(augment(unit(x), g))) for p, g in zip(permutes, augment_gens)]
        test_prepares = [lambda x, p=p: p(normalize(unit(x))) for p in eval_permutes]
    classes = len(data.classes)
    records: list[list[EpochRecord]] = [[] for _ in seeds]
    class_accuracy: list[list] = [[] for _ in seeds]
    status, live = ["ok"] * k, list(range(k))  # live: the copies still training
    stopped: dict[int, dict] = {}  # a copy that diverged: its weights when it stopped

    def eval_generators() -> list[torch.Generator]:  # the same draws at every evaluation
        return [seeded(s, EVAL_INPUT, device) for s in seeds]

    def evaluations(epoch: int, lr: float) -> None:
        for split, (x, y) in tests.items():
            start = time.perf_counter()
            metrics = evaluate_copies(net, x, y, test_prepares, task, classes, amp=amp, generators=eval_generators())
            for c in live:
                m = metrics[c]
                records[c].append(EpochRecord(epoch, split, m["loss"], m["accuracy"], lr, time.perf_counter() - start))
                if split == "test":
                    class_accuracy[c] = m["class_accuracy"]

    # epoch 0: the untrained model on both splits (the train split as it is, unaugmented)
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    for c, m in enumerate(evaluate_copies(net, train_x, train_y, test_prepares, task, classes, amp=amp,
                                          generators=eval_generators())):
        records[c].append(EpochRecord(0, "train", m["loss"], m["accuracy"], lr, time.perf_counter() - start))
    evaluations(0, lr)
    n = len(train_y)
    for epoch in range(1, config.epochs + 1):
        net.train()
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        orders = [torch.randperm(n, generator=g).to(device) for g in order_gens]
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device)
        for step, i in enumerate(range(0, n, config.batch_size)):
            idxs = [order[i:i + config.batch_size] for order in orders]
            xs = [_channels_last(prepare(train_x[idx])) for prepare, idx in zip(train_prepares, idxs)]
            ys = [train_y[idx] for idx in idxs]
            outs = _forward(step_net, [task.inputs(x, g) for x, g in zip(xs, input_gens)], amp)
            # each copy's own mean loss; their sum gives each copy its own gradient
            losses = torch.stack([task.loss(out, x, y) for out, x, y in zip(outs, xs, ys)])
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            if scheduler is not None and schedule.per_step:
                scheduler.step()
            loss_sum += losses.detach() * len(ys[0])
            if task.classifies:
                correct += torch.stack([(out.argmax(1) == y).sum() for out, y in zip(outs, ys)])
            if on_batch is not None and step % 10 == 9:  # .item() is a sync point on a GPU
                done = i + len(ys[0])
                on_batch(epoch, k * ((epoch - 1) * n + done), loss_sum[live].mean().item() / done,
                         k * done / (time.perf_counter() - start))
        train_loss, train_seconds = [v / n for v in loss_sum.tolist()], time.perf_counter() - start
        train_accuracy = [v / n for v in correct.tolist()] if task.classifies else [None] * k
        for c in live:
            records[c].append(EpochRecord(epoch, "train", train_loss[c], train_accuracy[c], lr, train_seconds))
        if scheduler is not None and not schedule.per_step:
            scheduler.step()
        evaluations(epoch, lr)
        if on_batch is not None:
            on_batch(epoch, k * epoch * n, sum(train_loss[c] for c in live) / len(live), k * n / train_seconds)
        for c in list(live):  # a copy whose loss became NaN or infinite stops; the others go on
            if not all(math.isfinite(r.loss) for r in records[c][-len(tests) - 1:]):
                status[c] = "diverged"
                live.remove(c)
                if k > 1:  # the others train on; its weights stay as the unpacked run's would
                    packing.unpack(net, copies)
                    stopped[c] = copy.deepcopy(copies[c].state_dict())
        if not live:
            break
    if k > 1:
        packing.unpack(net, copies)
        for c, state in stopped.items():
            copies[c].load_state_dict(state)
    return [_result(task, model, records[c], class_accuracy[c], status[c], train_x, test_prepares[c],
                    keep_model, k) for c, model in enumerate(copies)]


def _result(task, model, records, class_accuracy, status, train_x, prepare, keep_model, packed) -> RunResult:
    model = model.to(train_x.device, memory_format=torch.channels_last)
    latent_corr = latent_correlation(model, train_x[:LATENT_CORR_IMAGES], prepare) \
        if task.measures_code and status == "ok" else None
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()} if keep_model else None
    return RunResult(records, class_accuracy, status, latent_corr, state, packed=packed)


_PRETRAINED: dict = {}  # (autoencoder config, seed, data) -> encoder weights: frozen and finetune share one


def pretrained_encoder(config: RunConfig, data: Dataset, seed: int, device: torch.device) -> dict:
    """The encoder of an autoencoder trained for `config.pretrain_epochs` on the whole train
    split without labels, from the run's seed, with report 001's setting (AdamW, lr 0.001,
    batch 32, pixels in [0, 1]); the same weights for every run that asks with this seed."""
    knobs = {k: v for k, v in config.model_args if k in ("latent_dim", "depth", "width")}
    autoencoder = resolve(RunConfig(task="reconstruct", dataset=config.dataset, model="autoencoder",
                                    epochs=config.pretrain_epochs, batch_size=32, lr=0.001, optimizer="adamw",
                                    momentum=None, weight_decay=OPTIMIZERS.get("adamw").weight_decay,
                                    normalization="none", image_size=config.image_size,
                                    limit_train=config.limit_train, limit_test=config.limit_test,
                                    deterministic=config.deterministic).with_fields(**knobs))
    key = (autoencoder, seed, data.name, len(data.train_y), str(device))
    if key not in _PRETRAINED:
        state = train_run(autoencoder, data, seed, device, keep_model=True).state
        _PRETRAINED[key] = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    return _PRETRAINED[key]
