"""`--pack auto`, the default: whether runs train packed into one model, and how many to a
pack, decided on the machine itself. Runs whose configurations share a network (the seeds of a
variant, and variants that differ only in what each member keeps its own: train.share_key) may
pack together. Which way is faster depends on the CPU or GPU, the model and the batch size
(benchmarks/speed.py), so no default per device can be right: before they train, 3 to 10
training steps of one model and of packs of 2, 4, 8, ... members (up to as many as fit in
memory) are timed on their real model, data and batch size (at most BUDGET, 5 %, of their
planned training; runs too short for that take the device's default: packed on a GPU, not on a
CPU), and the size that trains the most images a second is taken, or one by one where no pack
is faster. A decision is remembered on the machine (in ablate's cache), so the same command
trains the same way again and gives the same numbers; packed and one-by-one training agree
only to float rounding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ablate.data.datasets import Dataset, cache_dir
from ablate.execution.checks import pack_size
from ablate.study.planning import Run
from ablate.training import train

PROBE_STEPS = (3, 10)  # timed training steps of each kind, after one untimed: as many as the budget allows
BUDGET = 0.05  # the probe's cost, at most this share of the runs' planned training


@dataclass(frozen=True)
class Choice:
    packed: bool
    ratio: float | None  # how many times faster packed training measured (None: not measured)
    why: str  # "measured", "remembered", "--pack", "--no-pack", or why it was not measured
    size: int = 1  # members to a pack (1: one by one)

    def said(self) -> str:
        """"packed by 8 (1.32 x faster, measured)", "one by one (0.76 x, remembered)"."""
        how = f"packed by {self.size}" if self.packed else "one by one"
        return f"{how} ({self.ratio:.2f} x, {self.why})" if self.ratio is not None else f"{how} ({self.why})"

    def record(self) -> dict:
        return {"packed": self.packed, "size": self.size, "ratio": None if self.ratio is None else round(self.ratio, 4),
                "why": self.why}


def choose(runs: list[Run], data: Dataset, device: torch.device, forced: bool | None,
           measure: bool = True) -> dict[str, Choice]:
    """Per configuration (config_id) of `runs`: whether its runs train packed, and by how many.
    Configurations that share a network are decided together (one Choice). `forced`: the
    --pack/--no-pack flag; None measures where it pays (`measure=False`: says what a decision
    would need, without measuring: for --dry-run where nothing is remembered)."""
    kinds: dict[tuple, list[Run]] = {}
    for run in runs:
        kinds.setdefault(train.share_key(run.config, data.shape, len(data.classes)), []).append(run)
    choices = {}
    for group in kinds.values():
        k = pack_size(group, data, device)  # as many as fit in memory at once, at most all of them
        if forced is not None:
            choice = Choice(forced and k > 1, None, "--pack" if forced else "--no-pack", k if forced else 1)
        elif k < 2:
            choice = Choice(False, None, "one run" if len(group) < 2 else "one run fits in memory")
        else:
            choice = _decide(group, data, device, k, measure)
        choices.update({run.config_id: choice for run in group})
    return choices


def sizes(k: int) -> list[int]:
    """The pack sizes a probe tries for `k` members: 2, 4, 8, ... below k, and k."""
    return [2 ** i for i in range(1, max(1, k - 1).bit_length()) if 2 ** i < k] + [k]


def _decide(group: list[Run], data: Dataset, device: torch.device, k: int, measure: bool) -> Choice:
    config = group[0].config
    steps = config.epochs * math.ceil(min(config.labels or len(data.train_y), len(data.train_y)) / config.batch_size)
    # a size c costs (timed + 1) x (1 + c) steps of one model at most: one copy's and the pack's;
    # where the budget does not reach every size, the largest is kept and the ones between go
    candidates = sizes(k)
    while True:
        timed = min(PROBE_STEPS[1], int(BUDGET * steps * len(group) / sum(1 + c for c in candidates)) - 1)
        if timed >= PROBE_STEPS[0] or len(candidates) == 1:
            break
        del candidates[-2]
    if timed < PROBE_STEPS[0]:
        default = device.type == "cuda"  # where per-step costs dominate
        return Choice(default, None, f"too short to measure ({steps} steps): the {device.type} default",
                      k if default else 1)
    key = _key(config, data, device, k)
    remembered = _read_entry(_remembered().get(key), k)
    if remembered is not None:
        return remembered
    if not measure:
        return Choice(device.type == "cuda", None, "to be measured before it trains", k if device.type == "cuda" else 1)
    best: tuple[int, float] | None = None
    for size in candidates:
        ratio = train.packing_speedup(config, data, size, device, timed)
        if ratio is None:
            return Choice(False, None, "the model does not pack")
        if best is None or ratio > best[1]:
            best = (size, ratio)
        elif ratio < 0.9 * best[1]:  # slower per member as packs grow: the larger ones are not tried
            break
    size, ratio = best
    choice = Choice(ratio > 1, ratio, "measured", size if ratio > 1 else 1)
    _remember(key, choice)
    return choice


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _key(config, data: Dataset, device: torch.device, k: int) -> str:
    """What decides the speed of a training step: the machine, torch, the threads, the model
    and its input, the batch, the optimiser, the task and the number of seeds."""
    fields = ("model", "model_args", "strip_activations", "task", "batch_size", "optimizer", "amp", "compile",
              "augment", "permutation")
    what = {"machine": _machine(device), "device": device.type, "torch": torch.__version__,
            "threads": config.threads or torch.get_num_threads(), "shape": list(data.shape),
            "classes": len(data.classes), "k": k, **{f: repr(getattr(config, f)) for f in fields}}
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _path() -> Path:
    return cache_dir() / "packing.json"


def _remembered() -> dict:
    try:
        held = json.loads(_path().read_text())
        return held if isinstance(held, dict) else {}
    except (OSError, ValueError):  # none yet, or unreadable: measured again
        return {}


def _read_entry(entry, k: int) -> Choice | None:
    """A remembered decision for `k` members at most, or None where the entry does not read as
    one (missing, or edited into another shape: `5`, `{"ratio": "fast"}`, a size of 0 or over
    k): those runs are measured again. An entry of an earlier version, without a size, packed
    them all."""
    if not isinstance(entry, dict) or not isinstance(entry.get("packed"), bool):
        return None
    ratio, size = entry.get("ratio"), entry.get("size", k if entry["packed"] else 1)
    if ratio is not None and not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
                                  and math.isfinite(ratio) and ratio > 0):
        return None
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= k
            and (size > 1) == entry["packed"]):
        return None
    return Choice(entry["packed"], ratio, "remembered", size)


def _remember(key: str, choice: Choice) -> None:
    """Kept for the next run of the same command, the file rewritten whole with the entries that
    read (a damaged one is dropped); a cache that cannot be written is no error (the next run
    measures again)."""
    held = {k: v for k, v in _remembered().items() if _read_entry(v, 2 ** 31) is not None}
    held[key] = {"packed": choice.packed, "ratio": choice.ratio, "size": choice.size}
    try:
        _path().parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=_path().parent, prefix=".packing.", suffix=".tmp")
        with os.fdopen(fd, "w") as file:
            json.dump(held, file)
        os.replace(tmp, _path())
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)
