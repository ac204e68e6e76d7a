"""Per-layer shapes, parameters, activations, receptive fields, MACs and FLOPs, counted at
torch's operator level, forward and (with `training=True`) backward.

The model runs one forward pass in eval mode under a TorchDispatchMode (the machinery of
`torch.utils.flop_counter`), so functional calls, `x @ w`, attention and residual adds are
counted, not only modules. Each operator is charged to the innermost module running, each
parameter to the first row whose code uses it, each backward operator to the row whose forward
made its autograd node.

Nothing big is allocated: the pass runs under `FakeTensorMode` (shapes, no data), on fake CPU
tensors, so a model built on the meta device (`with torch.device("meta")`) counts as cheaply as
a small one and takes the same operators as a real CPU forward. A model whose forward needs
real values (data-dependent shapes) falls back to a real forward.

This module is the entry point and the counting pass; its parts, each imported from here:

    count_rules.py     each operator's MACs and FLOPs (convention.py: the same rules in words,
                       torch-free, what `ablate params --help` prints)
    receptive.py       the receptive field of every tensor computed from the input
    fake_run.py        building on the meta device, running on fake tensors, NeedsRealTensors
    other_counters.py  fvcore's and FlopCounterMode's FLOPs beside ours (compare=True)
    tensor_tree.py     the tensors in nested arguments and outputs, and their shapes
"""

from __future__ import annotations

import math
import re
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import pandas as pd
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from ablate import machine
from ablate.arch import Shape, describe_error
from ablate.counting import other_counters
from ablate.counting.count_rules import FORMULAS, RECURRENT, recurrent, recurrent_backward
from ablate.counting.fake_run import NeedsRealTensors, build_meta, run_forward  # ablate.count's public names too
from ablate.counting.fake_run import fake_state, on_meta
from ablate.counting.receptive import Fields
from ablate.counting.tensor_tree import shapes, tensors
from ablate.errors import UsageError, first_line


# ---------------------------------------------------------------- the records


@dataclass
class LayerRow:
    layer: str
    type: str
    input_shape: str
    output_shape: str
    weights: int = 0
    biases: int = 0
    params: int = 0
    shared: int = 0  # parameters this row uses that an earlier row holds
    trainable: int = 0
    activations: int = 0  # elements of the row's output
    receptive_field: str = ""  # "window (stride)" in input pixels
    macs: int = 0
    flops: int = 0
    backward_flops: int | None = None  # with training=True
    fvcore_flops: int | None = None  # with compare=True
    torch_flops: int | None = None  # with compare=True


OPTIONAL = ("backward_flops", "fvcore_flops", "torch_flops")
COLUMNS = [f.name for f in fields(LayerRow) if f.name not in OPTIONAL]


@dataclass
class Counts:
    rows: list[LayerRow]
    params: int  # unique tensors: a tied or shared parameter counts once
    trainable: int
    param_bytes: int
    input_shape: Shape
    batch: int
    activation_bytes: int = 0  # what a training step keeps for the backward, for the batch
    dtype: str = "float32"  # of the parameters, the input and the activations
    training: bool = False  # backward_flops counted
    uncounted: dict[str, int] = field(default_factory=dict)  # operator -> calls with no rule
    compared: dict[str, int] = field(default_factory=dict)  # counter -> its total FLOPs

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.rows)

    @property
    def backward_flops(self) -> int:
        return sum(r.backward_flops or 0 for r in self.rows)

    @property
    def columns(self) -> list[str]:
        return COLUMNS + [c for c in OPTIONAL if any(getattr(r, c) is not None for r in self.rows)]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.rows], columns=self.columns)


# ---------------------------------------------------------------- the counting pass


def _storage(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _dtype(model: nn.Module) -> torch.dtype:
    """The parameters' floating-point dtype: that of the input and the activations too."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


def _is_float(out) -> bool:
    if isinstance(out, (tuple, list)):
        return any(_is_float(o) for o in out)
    return isinstance(out, torch.Tensor) and out.is_floating_point()


@dataclass
class _Param:
    owner: str  # the module that holds it
    numel: int
    bias: bool
    trainable: bool
    row: LayerRow | None = None  # the one row that holds it

    def hold(self, row: LayerRow) -> None:
        self.row = row
        row.params += self.numel
        row.trainable += self.numel if self.trainable else 0
        if self.bias:
            row.biases += self.numel
        else:
            row.weights += self.numel


@dataclass
class _Frame:
    name: str
    module: nn.Module
    inputs: str
    row: LayerRow | None = None
    used: set = field(default_factory=set)  # ids of the _Params this call used
    backward: bool = False  # a backward operator ran for it


NODE_KEY = "ablate_frame"


class _LayerCounter(TorchDispatchMode):
    """Charges each operator to the innermost running module (in the backward: to the frame
    whose forward made the autograd node running), each parameter to its first user."""

    def __init__(self, model: nn.Module, params: dict[int, list[_Param]], excluded: set[int]):
        super().__init__()
        self.model = model
        self.params = params  # storage address -> the parameters it holds
        self.excluded = excluded  # storages that are not activations: parameters, buffers, input
        self.stack: list[_Frame] = []
        self.rows: list[LayerRow] = []
        self.fields = Fields()
        self.field_of: dict[int, object] = {}  # id(row) -> the field of its output
        self.recurrent: list[_Frame] = []
        self.saved: dict[int, object] = {}  # address -> storage kept for the backward (held: no reuse)
        self.entered: set[int] = set()
        self.in_backward = False
        self.uncounted: Counter[str] = Counter()
        self.handles = []
        for name, module in model.named_modules():
            # first among the pre-hooks: what a module's own hooks compute (the weight a pruning
            # mask makes) is the module's, not its parent's
            self.handles.append(module.register_forward_pre_hook(self._enter(name), with_kwargs=True, prepend=True))
            self.handles.append(module.register_forward_hook(self._leave, always_call=True))

    def _enter(self, name):
        def hook(module, args, kwargs):
            frame = _Frame(name or "(model)", module, shapes((args, kwargs)))
            self.stack.append(frame)
            self.entered.add(id(module))
            if next(module.children(), None) is None:  # a container: once its own code computes
                self._row(frame)
            if isinstance(module, RECURRENT):
                frame.row.macs, frame.row.flops = recurrent(module, args)
                self.recurrent.append(frame)

        return hook

    def _leave(self, module, args, output):
        frame = self.stack.pop()
        self.fields.leave(module, args, output)
        if frame.row is not None:
            frame.row.output_shape = shapes(output)
            frame.row.activations = sum(t.numel() for t in tensors(output))
            self.field_of[id(frame.row)] = self.fields.get(output) if isinstance(output, torch.Tensor) else None

    def _row(self, frame: _Frame) -> LayerRow:
        if frame.row is None:
            frame.row = LayerRow(frame.name, type(frame.module).__name__, frame.inputs, "")
            self.rows.append(frame.row)
        return frame.row

    def _use_parameters(self, args, kwargs):
        frame = self.stack[-1]
        for t in tensors((args, kwargs)):
            for p in self.params.get(_storage(t), ()):
                if id(p) in frame.used:
                    continue
                frame.used.add(id(p))
                row = self._row(frame)
                if p.row is None:
                    p.hold(row)
                elif p.row is not row:
                    row.shared += p.numel

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """No torch._disable_dynamo around __torch_dispatch__: its first call imports torch._dynamo
        (over a second of a study's start), and nothing here is compiled."""
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.in_backward:
            node = torch._C._current_autograd_node()
            frame = node.metadata.get(NODE_KEY) if node is not None else None
        else:
            frame = self.stack[-1] if self.stack else None
            if frame is not None:
                self._use_parameters(args, kwargs)
            self.fields.after(func, args, kwargs, out)
        if frame is not None and isinstance(frame.module, RECURRENT):
            frame.backward |= self.in_backward
            return out  # counted by its formula, whichever operators the backend runs
        packet = func.overloadpacket
        formula = FORMULAS.get(packet)  # operators that cost nothing have a formula too
        if formula is None:
            if not func.is_view and _is_float(out):
                self.uncounted[str(packet) + (" (backward)" if self.in_backward else "")] += 1
            return out
        macs, flops = formula(args, kwargs, out, None if self.in_backward else frame and frame.module)
        if flops and frame is not None:
            row = self._row(frame)
            if self.in_backward:
                row.backward_flops = (row.backward_flops or 0) + flops
            else:
                row.macs += macs
                row.flops += flops
        return out

    def node_made(self, node):
        node.metadata[NODE_KEY] = self.stack[-1] if self.stack else None

    def pack(self, t: torch.Tensor):
        key = _storage(t)
        if key is not None and key not in self.excluded:
            self.saved[key] = t.untyped_storage()
        return t

    def backward(self, output, inputs: list[torch.Tensor]):
        """Gradients of the trainable parameters (and, on the way, of every activation that
        needs one) for an output gradient of ones, under this mode."""
        outputs = [t for t in tensors(output) if t.requires_grad]
        self.in_backward = True
        try:
            if outputs and inputs:
                seeds = [torch.ones_like(t) for t in outputs]
                torch.autograd.grad(outputs, inputs, seeds, allow_unused=True)
        finally:
            self.in_backward = False
        for frame in self.recurrent:  # by their formula, as their forward
            if frame.backward:
                frame.row.backward_flops = (frame.row.backward_flops or 0) + recurrent_backward(frame.row.flops)
        for row in self.rows:
            row.backward_flops = row.backward_flops or 0

    def finish(self) -> list[LayerRow]:
        for row in self.rows:
            row.receptive_field = self.fields.text(self.field_of.get(id(row)))
        return self.rows

    def remove_hooks(self):
        for handle in self.handles:
            handle.remove()


def _node_creation_hook(hook, training: bool):
    """Marks each autograd node with the row that made it, so that backward operators are
    charged to that row. torch.autograd.graph.node_creation_hook is recent: older torch counts
    the forward pass only."""
    if hasattr(torch.autograd.graph, "node_creation_hook") and hasattr(torch._C, "_current_autograd_node"):
        return torch.autograd.graph.node_creation_hook(hook)
    if training:
        raise UsageError(f"--training needs a torch with torch.autograd.graph.node_creation_hook and "
                         f"torch._C._current_autograd_node (such as 2.14); this is torch {torch.__version__}")
    return nullcontext()


def _count(model: nn.Module, input_shape: Shape, batch: int, training: bool, fake: bool) -> Counts:
    unique = list(model.parameters())  # each tensor once, however often it is shared
    dtype = _dtype(model)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
    with fake_mode or nullcontext():
        state, standins = fake_state(model) if fake else (None, {})
        device = "cpu" if fake else next((p.device for p in unique), "cpu")  # fake: all on CPU
        x = torch.zeros(batch, *input_shape, dtype=dtype, device=device)
    owners = {}  # id(parameter) -> (module name, module, attribute name), the first of its names
    for name, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), (name, module, attr))
    params: dict[int, list[_Param]] = {}
    records = []
    for p in unique:
        name, module, attr = owners[id(p)]
        record = _Param(name, p.numel(), "bias" in attr, p.requires_grad)
        records.append((record, module))
        params.setdefault(_storage(standins.get(id(p), p)), []).append(record)
    excluded = set(params) | {_storage(standins.get(id(b), b)) for b in model.buffers()} | {_storage(x)}
    counter = _LayerCounter(model, params, excluded)
    counter.fields.start(x)
    trainable = [standins.get(id(p), p) for p in unique if p.requires_grad]
    try:
        with fake_mode or nullcontext(), _node_creation_hook(counter.node_made, training), \
                torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            # Grad stays on: with it off, some modules (MultiheadAttention) take fused fast paths.
            output = run_forward(model, x, counter, state, fake)
        if training:
            with fake_mode or nullcontext(), counter:
                counter.backward(output, trainable)
    finally:
        counter.remove_hooks()
    rows = counter.finish() + _unused_rows(records, counter.entered, training)
    return Counts(
        rows=rows,
        params=sum(p.numel() for p in unique),
        trainable=sum(p.numel() for p in unique if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in unique),
        input_shape=tuple(input_shape),
        batch=batch,
        activation_bytes=sum(s.nbytes() for s in counter.saved.values()),
        dtype=str(dtype).removeprefix("torch."),
        training=training,
        uncounted=dict(counter.uncounted),
    )


def _unused_rows(records: list[tuple[_Param, nn.Module]], entered: set[int], training: bool) -> list[LayerRow]:
    """A row per module holding parameters that no code used, as `not run` (or `not used`)."""
    rows: dict[str, LayerRow] = {}
    for p, module in records:
        if p.row is not None:
            continue
        if p.owner not in rows:
            state = "not used" if id(module) in entered else "not run"
            rows[p.owner] = LayerRow(p.owner or "(model)", type(module).__name__, "", state,
                                     backward_flops=0 if training else None)
        p.hold(rows[p.owner])
    return list(rows.values())


# ---------------------------------------------------------------- on fake tensors, else a real forward


def _count_real(model: nn.Module, input_shape: Shape, batch: int, training: bool, reason: str) -> Counts:
    """The fallback: a real forward pass, when it can fit."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    needed = batch * math.prod(input_shape) * _dtype(model).itemsize
    available = machine.available_memory()
    if available is not None and needed > available:
        raise UsageError(f"{reason}; a real forward pass does not fit: its input alone needs "
                         f"{needed / 1e9:.3g} GB ({available / 1e9:.3g} GB of memory free)")
    try:
        return _count(model, input_shape, batch, training, fake=False)
    except (MemoryError, RuntimeError, UsageError) as error:
        first = first_line(error)
        if not isinstance(error, MemoryError) and not re.search(r"can't allocate|out of memory", first, re.I):
            raise
        raise UsageError(f"{reason}; a real forward pass does not fit: it needs more than "
                         f"{(params + needed) / 1e9:.3g} GB ({first})") from None


def count_model(model: nn.Module, input_shape: Shape, batch: int = 1, training: bool = False,
                compare: bool = False, real: bool = False) -> Counts:
    """Count `model` on a zero input of `batch` x `input_shape`, in eval mode.

    The pass runs on fake tensors: nothing big is allocated, and parameters may be on the meta
    device. `training` also counts the backward pass; `compare` adds fvcore's and
    FlopCounterMode's FLOPs (a real forward: the model must have real weights); `real` counts
    on a real forward pass."""
    if batch < 1:
        raise UsageError(f"batch must be >= 1, got {batch}")
    meta = on_meta(model)
    if meta and (real or compare):
        raise UsageError("counting on a real forward pass (or --compare) needs real weights, "
                         "not a model on the meta device")
    was_training = model.training
    model.eval()
    try:
        if any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules()):
            x = torch.zeros(batch, *input_shape, device="meta" if meta else None)
            with torch.no_grad():  # Lazy modules take their sizes here, before anything is counted
                run_forward(model, x, fake=meta)
            unsized = [name for name, t in (*model.named_parameters(), *model.named_buffers())
                       if nn.parameter.is_lazy(t)]
            if unsized:
                raise UsageError(f"{unsized[0]!r} is still uninitialised after a forward pass on input "
                                 f"{'x'.join(map(str, input_shape))} (a lazy module its forward never calls): "
                                 "its size, and so the model's, is unknown")
        if real:
            counts = _count(model, input_shape, batch, training, fake=False)
        else:
            try:
                counts = _count(model, input_shape, batch, training, fake=True)
            except NeedsRealTensors as error:
                if meta:  # no real weights to fall back on: count_meta builds them
                    raise
                counts = _count_real(model, input_shape, batch, training, str(error))
        if compare:
            other_counters.compare(model, torch.zeros(batch, *input_shape, dtype=_dtype(model)), counts)
        return counts
    finally:
        model.train(was_training)


def count_meta(build: Callable[[], nn.Module], input_shape: Shape, batch: int = 1,
               training: bool = False, real_below: int = 0) -> Counts:
    """Build the model with its parameters on the meta device (no weights allocated) and count
    it. A model that cannot be built or counted that way is built with real weights, if they
    fit in memory. A model of at most `real_below` bytes of weights is counted on a real forward
    pass at once: the same counts, and no fake tensors, whose import (torch._dynamo) costs more
    than the pass. Everything runs under a forked random state: nothing else changes."""
    with torch.random.fork_rng(devices=[]):
        return _count_meta(build, input_shape, batch, training, real_below)


def _count_meta(build: Callable[[], nn.Module], input_shape: Shape, batch: int, training: bool,
                real_below: float) -> Counts:
    model = build_meta(build)
    if model is not None and _weight_bytes(model) <= real_below and not _activations_too_big(input_shape, batch):
        try:
            return count_model(_build(build), input_shape, batch, training, real=True)
        except Exception:  # noqa: BLE001 - whatever fails on real weights, the fake pass counts or says why
            pass
    if model is not None:
        try:
            return count_model(model, input_shape, batch, training)
        except NeedsRealTensors as error:
            weights = _weight_bytes(model)
            available = machine.available_memory()
            if available is not None and weights > available:
                raise UsageError(f"{error}; a real forward pass does not fit: its weights need "
                                 f"{weights / 1e9:.3g} GB ({available / 1e9:.3g} GB of memory free)") from None
    return count_model(_build(build), input_shape, batch, training)


REAL_BYTES = 256 * 2 ** 20  # a model with fewer bytes of weights is counted on a real forward pass


def real_below() -> float:
    """The weights up to which `count_meta` may count on a real forward pass (a small model
    builds faster than fake tensors import), at most a quarter of the free memory."""
    return min(REAL_BYTES, (machine.available_memory() or float("inf")) / 4)


def _build(build: Callable[[], nn.Module]) -> nn.Module:
    try:
        return build()
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - a user's model whose constructor raises
        raise UsageError(f"the model failed to build: {describe_error(error)}") from None


def _weight_bytes(model: nn.Module) -> float:
    """The bytes of the model's weights (infinite while a lazy module has not taken its size)."""
    tensors = (*model.parameters(), *model.buffers())
    if any(nn.parameter.is_lazy(t) for t in tensors):
        return float("inf")
    return sum(t.numel() * t.element_size() for t in tensors)


def _activations_too_big(input_shape: Shape, batch: int) -> bool:
    """An input of more than 64 MB: counted on fake tensors, whatever the weights."""
    return batch * math.prod(input_shape) * 4 > 64 * 2 ** 20
