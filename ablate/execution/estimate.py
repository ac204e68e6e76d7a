"""`--dry-run`: what a study would train, what its file holds, and how long the rest would take.
Nothing is trained into the study or written.

The time comes from the study's own training code on the machine itself: each kind of run (its
model, batch, optimiser, augmentation, packing: what decides its speed) trains two short epochs
of a few batches through `train.train_runs`, whose records give the seconds per training image
(the second epoch, warm), per evaluated image and the fixed cost of a run; a run of the study is
those rates times its images, plus its fixed cost, plus the time this process took to start
(the real command pays it too: imports, the data, the checks).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass

import torch

from ablate.data.datasets import Dataset
from ablate.execution import autopack
from ablate.execution.checks import model_size
from ablate.execution.runner import Prepared
from ablate.study.planning import Run
from ablate.training import train
from ablate.training.train import RunConfig

PROBE_BATCHES = 3  # training batches in each of the probe's two epochs
PROBE_TEST = 256  # test images the probe evaluates


@dataclass(frozen=True)
class Cost:
    """What one training (a run, or a pack of seeds) costs on this machine."""

    fixed: float  # seconds: building the model, preparing the data, what is not per image
    train: float  # seconds per training image (of the pack: all its seeds)
    evaluate: float  # seconds per evaluated image

    def of(self, config: RunConfig, train_images: int, test_images: int) -> float:
        """A whole training of `config`: its epochs over the train images, an evaluation of the
        train split before training and of the test split before and after every epoch."""
        trained = min(config.labels or train_images, train_images)
        return (self.fixed + config.epochs * trained * self.train
                + (trained + (config.epochs + 1) * test_images) * self.evaluate)


def _probe_data(data: Dataset, config: RunConfig) -> Dataset:
    n = min(len(data.train_y), PROBE_BATCHES * config.batch_size)
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n],
                               test_x=data.test_x[:PROBE_TEST], test_y=data.test_y[:PROBE_TEST])


def measure(config: RunConfig, data: Dataset, device: torch.device, seeds: int = 1, packed: bool = False) -> Cost:
    """The `Cost` of training `config` (`seeds` of it, `packed` into one model or one after
    another), from two short epochs of the real training code on a few batches of `data`."""
    probe = _probe_data(data, config)
    short = dataclasses.replace(config, epochs=2, labels=None, pretrain_epochs=None, freeze_encoder=None)
    start = time.perf_counter()
    results = train.train_runs(short, probe, list(range(seeds)), device, pack=packed)
    wall = time.perf_counter() - start
    records = results[0].epochs  # a pack's seconds are each of its seeds'
    trained = [r for r in records if r.split == "train" and r.epoch >= 1]
    tested = [r.seconds for r in records if r.split == "test"]
    per_train = trained[-1].seconds / len(probe.train_y) if trained else 0.0  # the last epoch: warm
    per_eval = sum(tested) / len(tested) / len(probe.test_y) if tested else 0.0
    fixed = max(0.0, wall - sum(r.seconds for r in records))
    return Cost(fixed, per_train, per_eval)


def _speed_key(config: RunConfig) -> tuple:
    """What decides a training's speed (not its learning rate, seeds or schedule)."""
    return (config.model, config.model_args, config.strip_activations, config.task, config.batch_size,
            config.optimizer, config.augment, config.permutation, config.amp, config.compile, config.weights,
            config.trainable, config.threads, config.normalization)


def started_seconds() -> float:
    """How long this process has run: what the real command also takes before it trains."""
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process(os.getpid()).create_time())
    except Exception:  # noqa: BLE001 - no psutil, no /proc: the start is left out
        return 0.0


def dry_run(prepared: Prepared) -> tuple[list[dict], float]:
    """Per variant: its runs, what `--out` already holds, the model's size and an estimate of
    the time left; and the seconds the command takes to start (counted once)."""
    p = prepared
    start = started_seconds()
    existing = p.existing
    done = set(existing.loc[existing["status"] != "failed", "run_id"]) if len(existing) else set()
    train_images, test_images = len(p.data.train_y), len(p.data.test_y)
    choices = autopack.choose([r for r in p.runs if r.run_id not in done], p.data, p.device, p.pack)
    least = most = None  # --seeds auto: the next round's runs, and every run an undecided variant may need
    if p.auto is not None:
        least = {r.run_id for r in p.auto.next_round(existing, p.runs, set(), done)}
        decided = p.auto.decisions(existing, p.runs, set())
        going = any(not d.done for d in decided.values())
        most = {r.run_id for r in p.runs if going and (not decided[r.variant].done or r.variant == p.auto.baseline)}
    costs: dict[tuple, Cost] = {}
    pretrained: set[tuple] = set()  # (autoencoder, seed): trained once, for every run that starts from it

    def cost(config: RunConfig, seeds: int, packed: bool) -> Cost:
        key = (_speed_key(config), seeds if packed else 1, packed)
        if key not in costs:
            costs[key] = measure(config, p.data, p.device, seeds if packed else 1, packed)
        return costs[key]

    def seconds(runs: list[Run], choice) -> float:
        """The runs' share of the packs they train in (a pack of k costs what k seeds of one of
        its variants do), or their trainings one by one."""
        config = runs[0].config
        k = choice.size if choice is not None and choice.packed else 1
        shared = sum(c is choice for c in choices.values()) > 1  # other variants fill its packs
        packs = len(runs) / k if shared else math.ceil(len(runs) / k)
        total = packs * cost(config, k, k > 1).of(config, train_images, test_images)
        if config.pretrain_epochs:
            autoencoder = train.pretraining(config)
            for run in runs:
                if (autoencoder, run.seed) not in pretrained:
                    pretrained.add((autoencoder, run.seed))
                    total += cost(autoencoder, 1, False).of(autoencoder, train_images, test_images)
        return total

    rows = []
    for variant in dict.fromkeys(r.variant for r in p.runs):
        runs = [r for r in p.runs if r.variant == variant]
        config = runs[0].config
        size = model_size(config, p.data.shape, len(p.data.classes))
        todo = [r for r in runs if r.run_id not in done]
        choice = choices.get(runs[0].config_id)
        had = len(runs) - len(todo)
        if p.auto is None:
            left, time_left = len(todo), seconds(todo, choice) if todo else 0.0
        else:  # the fewest and the most
            fewest, every = [r for r in todo if r.run_id in least], [r for r in todo if r.run_id in most]
            left = (len(fewest), len(every))
            time_left = (seconds(fewest, choice) if fewest else 0.0, seconds(every, choice) if every else 0.0)
        rows.append({
            "variant": variant,
            "seeds": len(runs) if p.auto is None else (had + left[0], had + left[1]),
            **{f: config.columns().get(f) for f in p.study.factors if f not in ("params", "flops")},
            "params": size.params, "flops": size.flops, "epochs": config.epochs, "images": train_images,
            "done": had, "left": left, "packing": choice.said() if choice else "—",
            "seconds": time_left,
        })
    return rows, start
