"""`--dry-run`: what a study would train, what its file holds, and how long the rest would take,
from timing a few batches of each model. Nothing is trained or written."""

from __future__ import annotations

import time

import torch

from ablate.data.datasets import Dataset
from ablate.execution import autopack
from ablate.execution.checks import model_size
from ablate.execution.runner import Prepared
from ablate.results import files as results
from ablate.training.tasks import TASKS
from ablate.training.train import RunConfig, build_model


def seconds_per_image(config: RunConfig, data: Dataset, device: torch.device, steps: int = 3) -> float:
    """Training time per image of the run's model on `device`, from a few timed batches of
    real images (after one untimed batch: allocation and first-call costs)."""
    model = build_model(config, data.shape[0], len(data.classes), data.shape[1]).to(
        device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)
    x = (data.train_x[:config.batch_size].float() / 255).to(device).contiguous(memory_format=torch.channels_last)
    y = data.train_y[:config.batch_size].to(device)
    task = TASKS.get(config.task)
    timings = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for _ in range(steps + 1):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            task.loss(model(task.inputs(x, torch.Generator(device).manual_seed(0))), x, y).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings.append(time.perf_counter() - start)
    return min(timings[1:]) / len(y)


def dry_run(prepared: Prepared) -> list[dict]:
    """Per variant: its runs, what `--out` already holds, the model's size and an estimate of
    the time left (training, and evaluation at a third of the training cost per image)."""
    p = prepared
    existing = results.existing_runs(p.out, p.resume, p.force)
    done = set(existing.loc[existing["status"] != "failed", "run_id"]) if len(existing) else set()
    train_images, test_images = len(p.data.train_y), len(p.data.test_y)
    choices = autopack.choose([r for r in p.runs if r.run_id not in done], p.data, p.device, p.pack)
    least = most = None  # --seeds auto: the next round's runs, and every run an undecided variant may need
    if p.auto is not None:
        least = {r.run_id for r in p.auto.next_round(existing, p.runs, set(), done)}
        decided = p.auto.decisions(existing, p.runs, set())
        going = any(not d.done for d in decided.values())
        most = {r.run_id for r in p.runs if going and (not decided[r.variant].done or r.variant == p.auto.baseline)}
    rows = []
    for variant in dict.fromkeys(r.variant for r in p.runs):
        runs = [r for r in p.runs if r.variant == variant]
        config = runs[0].config
        size = model_size(config, p.data.shape, len(p.data.classes))
        left = sum(r.run_id not in done for r in runs)
        choice = choices.get(runs[0].config_id)
        per_image = seconds_per_image(config, p.data, p.device) if left else 0.0
        if choice is not None and choice.packed and choice.ratio:
            per_image /= choice.ratio
        evaluated = train_images + (config.epochs + 1) * test_images
        per_run = per_image * (config.epochs * train_images + evaluated / 3)
        had = len(runs) - left
        if p.auto is not None:  # the fewest and the most
            left = (sum(r.run_id in least for r in runs), sum(r.run_id in most and r.run_id not in done for r in runs))
        rows.append({
            "variant": variant,
            "seeds": len(runs) if p.auto is None else (had + left[0], had + left[1]),
            **{f: config.columns().get(f) for f in p.study.factors if f not in ("params", "flops")},
            "params": size.params, "flops": size.flops, "epochs": config.epochs, "images": train_images,
            "done": had, "left": left, "seeds train": choice.said() if choice else "—",
            "seconds": left * per_run if p.auto is None else (left[0] * per_run, left[1] * per_run),
        })
    return rows
