"""`--pack auto`, the default: whether a variant's seeds train packed into one model, decided
on the machine itself. Which way is faster depends on the CPU or GPU, the model and the batch
size (benchmarks/speed.py), so no default per device can be right: before a variant trains,
3 to 10 training steps of each kind are timed on its real model, data and batch size (at most
BUDGET, 5 %, of the variant's planned training; a variant too short for that takes the
device's default: packed on a GPU, not on a CPU), and the faster is taken. A decision is remembered on the machine (in ablate's cache), so the same
command trains the same way again and gives the same numbers; packed and one-by-one training
agree only to float rounding.
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
from ablate.study.planning import Run, configurations
from ablate.training import train

PROBE_STEPS = (3, 10)  # timed training steps of each kind, after one untimed: as many as the budget allows
BUDGET = 0.05  # the probe's cost, at most this share of the variant's planned training


@dataclass(frozen=True)
class Choice:
    packed: bool
    ratio: float | None  # how many times faster packed training measured (None: not measured)
    why: str  # "measured", "remembered", "--pack", "--no-pack", or why it was not measured

    def said(self) -> str:
        """"packed (1.32 x faster, measured)", "one by one (0.76 x, remembered)"."""
        how = "packed" if self.packed else "one by one"
        return f"{how} ({self.ratio:.2f} x, {self.why})" if self.ratio is not None else f"{how} ({self.why})"

    def record(self) -> dict:
        return {"packed": self.packed, "ratio": None if self.ratio is None else round(self.ratio, 4), "why": self.why}


def choose(runs: list[Run], data: Dataset, device: torch.device, forced: bool | None,
           measure: bool = True) -> dict[str, Choice]:
    """Per configuration (config_id) of `runs`: whether its seeds train packed. `forced`: the
    --pack/--no-pack flag; None measures where it pays (`measure=False`: says what a decision
    would need, without measuring: for --dry-run where nothing is remembered)."""
    choices = {}
    for config_id, group in configurations(runs).items():
        k = pack_size(group, data, device)
        if forced is not None:
            choices[config_id] = Choice(forced and k > 1, None, "--pack" if forced else "--no-pack")
        elif k < 2:
            choices[config_id] = Choice(False, None, "one seed" if len(group) < 2 else "one seed fits in memory")
        else:
            choices[config_id] = _decide(group[0].config, data, device, k, measure)
    return choices


def _decide(config, data: Dataset, device: torch.device, k: int, measure: bool) -> Choice:
    steps = config.epochs * math.ceil(min(config.labels or len(data.train_y), len(data.train_y)) / config.batch_size)
    # the probe costs (timed + 1) x (1 + k) steps of one model: one copy's and the packed model's
    timed = min(PROBE_STEPS[1], int(BUDGET * steps * k / (1 + k)) - 1)
    if timed < PROBE_STEPS[0]:
        default = device.type == "cuda"  # where per-step costs dominate
        return Choice(default, None, f"too short to measure ({steps} steps): the {device.type} default")
    key = _key(config, data, device, k)
    remembered = _read_entry(_remembered().get(key))
    if remembered is not None:
        return remembered
    if not measure:
        return Choice(device.type == "cuda", None, "to be measured before it trains")
    ratio = train.packing_speedup(config, data, k, device, timed)
    if ratio is None:
        return Choice(False, None, "the model does not pack")
    choice = Choice(ratio > 1, ratio, "measured")
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


def _read_entry(entry) -> Choice | None:
    """A remembered decision, or None where the entry does not read as one (missing, or edited
    into another shape: `5`, `{"ratio": "fast"}`): that configuration is measured again."""
    if not isinstance(entry, dict) or not isinstance(entry.get("packed"), bool):
        return None
    ratio = entry.get("ratio")
    if ratio is not None and not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
                                  and math.isfinite(ratio) and ratio > 0):
        return None
    return Choice(entry["packed"], ratio, "remembered")


def _remember(key: str, choice: Choice) -> None:
    """Kept for the next run of the same command, the file rewritten whole with the entries that
    read (a damaged one is dropped); a cache that cannot be written is no error (the next run
    measures again)."""
    held = {k: v for k, v in _remembered().items() if _read_entry(v) is not None}
    held[key] = {"packed": choice.packed, "ratio": choice.ratio}
    try:
        _path().parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=_path().parent, prefix=".packing.", suffix=".tmp")
        with os.fdopen(fd, "w") as file:
            json.dump(held, file)
        os.replace(tmp, _path())
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)
