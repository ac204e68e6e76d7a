"""The tensors inside nested arguments and outputs, and their shapes as the rows print them."""

from __future__ import annotations

import torch
from torch import nn


def tensors(value) -> list[torch.Tensor]:
    """The tensors in `value`, depth first: in tuples, lists, dict values and PackedSequences."""
    found = []

    def walk(v):
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, nn.utils.rnn.PackedSequence):
            found.append(v.data)
        elif isinstance(v, (tuple, list)):
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)

    walk(value)
    return found


def shapes(value) -> str:
    """Shapes of the tensors in `value`, batch dimension left out: '6x28x28'."""
    return ", ".join("x".join(map(str, t.shape[1:])) or "scalar" for t in tensors(value))
