"""The independent oracles: fvcore's and torch's FlopCounterMode's FLOPs for the same model and
input, set beside ablate's own on each row (`ablate params --compare`)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from ablate.errors import UsageError
from ablate.errors import first_line

if TYPE_CHECKING:  # annotations only: count.py imports this module
    from ablate.count import Counts


def compare(model: nn.Module, x: torch.Tensor, counts: Counts) -> None:
    """Add fvcore's and FlopCounterMode's FLOPs on input `x`, per row and in all, to `counts`.
    Both run a real forward pass: the model needs real weights."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with warnings.catch_warnings():  # torch.jit's deprecation: on importing fvcore, on every trace
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            fvcore = analysis.by_module()
    except Exception as error:  # noqa: BLE001 - fvcore's tracer fails on some models
        raise UsageError(f"fvcore cannot count this model: {first_line(error)}") from None
    with FlopCounterMode(display=False) as flop_counter:
        model(x)
    root = type(model).__name__
    flop_counts = {k.removeprefix(root).removeprefix("."): sum(v.values())
                   for k, v in flop_counter.get_flop_counts().items() if k == root or k.startswith(root + ".")}
    children = {name: [f"{name}.{c}" if name else c for c, _ in module.named_children()]
                for name, module in model.named_modules()}

    def own(totals, name):
        return totals.get(name, 0) - sum(totals.get(c, 0) for c in children.get(name, []))

    done = set()
    for row in counts.rows:
        name = "" if row.layer == "(model)" else row.layer
        first = name not in done and row.output_shape not in ("not run", "not used")
        row.fvcore_flops = own(fvcore, name) if first else 0
        row.torch_flops = own(flop_counts, name) if first else 0
        done.add(name)
    counts.compared = {"fvcore": int(analysis.total()), "FlopCounterMode": flop_counter.get_total_flops()}
