"""Receptive fields: for each tensor the forward computes from the input, per dimension None (not
spatial) or (window, stride) in input pixels; UNDEFINED once spatial positions are mixed (a
flatten, attention). A row shows the field of its output.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from ablate.counting.count_rules import (ACTIVATIONS, ADAPTIVE_AVG_POOLS, ADAPTIVE_MAX_POOLS, ARITHMETIC, AVG_POOLS,
                                CONVOLUTIONS, MAX_POOLS, operators)
from ablate.counting.tensor_tree import tensors

aten = torch.ops.aten

UNDEFINED = "undefined"
CONV_OPS = set(operators(CONVOLUTIONS))
POOL_OPS = set(operators(MAX_POOLS + " " + AVG_POOLS))
ADAPTIVE_OPS = set(operators(ADAPTIVE_AVG_POOLS + " " + ADAPTIVE_MAX_POOLS))
POINTWISE = set(operators(ACTIVATIONS + " " + ARITHMETIC + """ native_batch_norm _native_batch_norm_legit
    _native_batch_norm_legit_no_training native_group_norm _to_copy clone contiguous dropout
    native_dropout masked_fill where copy_ fill_ zero_"""))
SAME_AS_INPUT = set(operators("constant_pad_nd reflection_pad2d replication_pad2d"))
LAST_DIMS = {aten.native_layer_norm, aten._softmax, aten._log_softmax}
VIEWS = set(operators("_unsafe_view view reshape alias detach expand squeeze unsqueeze slice"))
SPLITS = set(operators("split split_with_sizes unbind"))


def _window(entry, kernel: int, stride: int, dilation: int):
    size, jump = entry
    return size + (kernel - 1) * dilation * jump, jump * stride


def _each(value, n: int, default: int) -> list[int]:
    """A per-dimension argument (an int or a list of 1 or n) as n values; [] -> default."""
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    if not value:
        return [default] * n
    return value * n if len(value) == 1 else value


class Fields:
    """The receptive field of every tensor the forward computes from the input."""

    def __init__(self):
        self.of: dict[int, object] = {}  # TensorImpl address -> field; every op output is (re)set
        self.convolved = False

    def get(self, t):
        return self.of.get(t._cdata) if isinstance(t, torch.Tensor) else None

    def set(self, t, value):
        if isinstance(t, torch.Tensor):
            if value is None:
                self.of.pop(t._cdata, None)
            else:
                self.of[t._cdata] = value

    def start(self, x: torch.Tensor):
        if x.dim() >= 3:  # N x C x spatial...
            self.set(x, (None, None) + ((1, 1),) * (x.dim() - 2))

    def after(self, func, args, kwargs, out):
        inputs = tensors((args, kwargs))
        found = [f for f in map(self.get, inputs) if f is not None]
        outs = out if isinstance(out, (tuple, list)) else [out]
        value = None
        if found and isinstance(outs[0], torch.Tensor):
            try:
                value = UNDEFINED if UNDEFINED in found else self._rule(func.overloadpacket, func, args, outs[0])
            except (IndexError, TypeError, ValueError, AttributeError):
                value = UNDEFINED  # an unexpected signature: never let the field break a count
        spread = func.overloadpacket in SPLITS
        for i, o in enumerate(outs):
            self.set(o, value if (i == 0 or spread) else None)

    def leave(self, module: nn.Module, args, output):
        """A module returns: a Linear works per position, so its output keeps its input's field."""
        if isinstance(module, nn.Linear) and args:
            source = self.get(args[0])
            if isinstance(source, tuple) and not source[-1]:
                self.set(output, source)

    def _rule(self, op, func, args, out):
        source = self.get(args[0]) if isinstance(args[0], torch.Tensor) else None
        if op in POINTWISE:
            return self._combine(tensors(args), out)
        if op is aten.cat:
            dim = (args[1] if len(args) > 1 else 0) % out.dim()
            if any(f[dim] for f in map(self.get, args[0]) if isinstance(f, tuple)):
                return UNDEFINED
            return self._combine(args[0], out)
        if source is None:
            return UNDEFINED
        if op in CONV_OPS or op in POOL_OPS:
            if op in CONV_OPS:
                if args[6]:  # transposed: no whole stride
                    return UNDEFINED
                self.convolved = True
                n = args[1].dim() - 2
                kernel, stride, dilation = args[1].shape[2:], _each(args[3], n, 1), _each(args[5], n, 1)
            else:
                n = int(re.search(r"(\d)d", str(op)).group(1))
                kernel = _each(args[1], n, 1)
                stride = [s or k for s, k in zip(_each(args[2] if len(args) > 2 else [], n, 0), kernel)]
                dilation = _each(args[4] if len(args) > 4 and "max" in str(op) else 1, n, 1)
            return source[:-n] + tuple(_window(e, k, s, d) if e else None
                                       for e, k, s, d in zip(source[-n:], kernel, stride, dilation))
        if op in ADAPTIVE_OPS:
            n = int(re.search(r"(\d)d", str(op)).group(1))
            entries = []
            for e, size_in, size_out in zip(source[-n:], args[0].shape[-n:], out.shape[-n:]):
                if e and size_in % size_out:
                    return UNDEFINED  # uneven windows: no one window size
                entries.append(_window(e, size_in // size_out, size_in // size_out, 1) if e else None)
            return source[:-n] + tuple(entries)
        if op in SAME_AS_INPUT:
            return source
        if op in LAST_DIMS:  # normalises over some dims: fine unless they are spatial
            dims = range(out.dim() - len(args[1]), out.dim()) if op is aten.native_layer_norm \
                else [args[1] % out.dim()]
            return UNDEFINED if any(source[d] for d in dims) else source
        if op in (aten.permute, aten.transpose, aten.t):
            order = list(range(len(source)))
            if op is aten.permute:
                order = [d % len(source) for d in args[1]]
            elif len(order) >= 2:
                i, j = (args[1] % len(order), args[2] % len(order)) if op is aten.transpose else (0, 1)
                order[i], order[j] = order[j], order[i]
            return tuple(source[d] for d in order)
        if op in (aten.select, aten.unbind):
            dim = (args[1] if len(args) > 1 else 0) % len(source)
            return source[:dim] + source[dim + 1:]
        if op in SPLITS:
            return UNDEFINED if source[(args[2] if len(args) > 2 else 0) % len(source)] else source
        if op is aten.mean and len(args) > 2 and args[2]:  # a mean over whole dims, keepdim
            dims = [d % len(source) for d in args[1]]
            return tuple(_window(e, size, size, 1) if e and d in dims else e
                         for d, (e, size) in enumerate(zip(source, args[0].shape)))
        if op in VIEWS or func.is_view:
            return _regroup(source, tuple(args[0].shape), tuple(out.shape))
        return UNDEFINED

    def _combine(self, inputs, out):
        """Element-wise: the widest window at each dimension where the input is not broadcast."""
        result = [None] * out.dim()
        for t in inputs:
            f = self.get(t)
            if not isinstance(f, tuple):
                continue
            offset = out.dim() - len(f)
            for d, entry in enumerate(f):
                if entry and 0 <= d + offset < out.dim() and t.shape[d] == out.shape[d + offset]:
                    result[d + offset] = max(result[d + offset] or entry, entry)
        return tuple(result)

    def text(self, value) -> str:
        if not self.convolved or not isinstance(value, tuple):
            return ""
        entries = [e for e in value if e]
        if not entries:
            return ""

        def join(values):  # one number when all spatial dimensions agree, else height x width
            return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))

        return f"{join([e[0] for e in entries])} ({join([e[1] for e in entries])})"


def _regroup(source, old: tuple, new: tuple):
    """The field of a reshape: a spatial dimension survives only if it keeps its size."""
    if source is UNDEFINED or 0 in old or 0 in new:
        return UNDEFINED
    if len(old) == len(new):
        return source
    if math.prod(old) != math.prod(new):
        return UNDEFINED
    result, i, j = [], 0, 0
    while i < len(old) and j < len(new):
        group_old, group_new, a, b = [i], [j], old[i], new[j]
        while a != b:
            if a < b:
                i += 1
                a *= old[i]
                group_old.append(i)
            else:
                j += 1
                b *= new[j]
                group_new.append(j)
        if len(group_old) == 1 and len(group_new) == 1:
            result.append(source[i])
        elif any(source[k] and old[k] > 1 for k in group_old):
            return UNDEFINED  # spatial positions merged with others or split
        else:
            result += [None] * len(group_new)
        i, j = i + 1, j + 1
    return tuple(result + [None] * (len(new) - len(result)))
