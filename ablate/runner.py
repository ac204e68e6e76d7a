"""The variant x seed matrix of a study: plan the runs, train each, save each as it ends."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Callable

import pandas as pd
import torch

from ablate.count import count_model
from ablate.data import Dataset
from ablate.results import StudyFile
from ablate.studies import Study
from ablate.train import RunConfig, RunResult, build_model, train_run


@dataclass(frozen=True)
class Run:
    study: str
    variant: str
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        """A hash of everything that decides the run's numbers."""
        key = {"study": self.study, "variant": self.variant, "seed": self.seed, **self.config.columns()}
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def plan(study: Study, options: dict, seeds: int) -> list[Run]:
    """Every variant under seeds 0..seeds-1. Options left as None keep the defaults; a
    variant's own fields win over the options, and the options over the study's base."""
    given = {k: v for k, v in options.items() if v is not None}
    runs = []
    for variant, fields in study.variants.items():
        config = replace(RunConfig(), **{**study.base, **given, **fields})
        runs += [Run(study.name, variant, seed, config) for seed in range(seeds)]
    return runs


@functools.cache  # every seed of a variant has the same model
def model_size(config: RunConfig, shape: tuple[int, ...], classes: int) -> dict[str, int]:
    """Parameters and FLOPs per image of the run's model (ablate.count's convention)."""
    counts = count_model(build_model(config, shape[0], classes), shape)
    return {"params": counts.params, "flops": counts.flops}


def run_rows(run: Run, result: RunResult, device: str, data: Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy rows of one run: (variant, seed, epoch, split) rows, and per-class rows."""
    head = {"study": run.study, "variant": run.variant, "seed": run.seed}
    size = model_size(run.config, data.shape, len(data.classes))
    rows = pd.DataFrame([
        {**head, "epoch": r.epoch, "split": r.split, "loss": r.loss, "accuracy": r.accuracy,
         "lr": r.lr, "seconds": r.seconds, "status": result.status, "run_id": run.run_id,
         **run.config.columns(), **size, "device": device}
        for r in result.epochs
    ])
    for column in ("limit_train", "limit_test", "lr_step_size"):  # None where not used
        rows[column] = rows[column].astype("Int64")
    per_class = pd.DataFrame([
        {**head, "run_id": run.run_id, "class_index": i, "class_name": name, "accuracy": accuracy}
        for i, (name, accuracy) in enumerate(zip(data.classes, result.class_accuracy))
    ])
    return rows, per_class


def execute(
    runs: list[Run],
    data: Dataset,
    device: torch.device,
    store: StudyFile,
    metadata: dict[str, str],
    on_batch: Callable[[Run, int, int, float, float], None] | None = None,
    on_run: Callable[[Run, str], None] | None = None,
) -> None:
    """Train the runs not yet in `store`, saving each one as soon as it finishes."""
    done = store.done()
    for run in runs:
        if run.run_id in done:
            if on_run is not None:
                on_run(run, "skipped")
            continue
        report = None if on_batch is None else (lambda *progress, run=run: on_batch(run, *progress))
        result = train_run(run.config, data, run.seed, device, report)
        store.add(*run_rows(run, result, device.type, data), metadata)
        if on_run is not None:
            on_run(run, result.status)
