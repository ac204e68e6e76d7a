"""Per-layer shapes, parameters, MACs and FLOPs, counted at torch's operator level.

The model runs one forward pass in eval mode under a TorchDispatchMode (the machinery of
`torch.utils.flop_counter`), so functional calls, `x @ w`, attention and residual adds are
counted, not only modules. Each operator is charged to the innermost module running.

The counting convention is CONVENTION below; it is printed by `ablate params --help`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field, fields

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ablate.arch import Shape
from ablate.errors import UsageError

aten = torch.ops.aten

CONVENTION = """\
Counting convention (per input image unless --batch is given):
- a conv or linear output element with K inputs (in_channels/groups x kh x kw, or in_features)
  costs K MACs and 2K FLOPs with a bias, 2K - 1 without: a multiply and an add are one FLOP each.
- other matrix products (x @ w, bmm) and attention: 2 FLOPs per multiply-accumulate;
  attention adds 3 FLOPs per score for its softmax.
- max-pool: k*k - 1 comparisons per output element; average pool: k*k per output element
  (adaptive pools: their actual window sizes); a mean over n values: n per output element.
- ReLU and other element-wise activations: 1 per element; batch norm (eval mode): 2 per
  element; layer and group norm: 5 per element (4 without affine); softmax: 3 per element;
  element-wise add, subtract, multiply, divide (residuals): 1 per output element.
- views, copies, concatenation and padding cost nothing. Any other operator that produces
  floating-point output has no rule: it is reported in a warning with its count of calls.
"""


@dataclass
class LayerRow:
    layer: str
    type: str
    input_shape: str
    output_shape: str
    weights: int = 0
    biases: int = 0
    params: int = 0
    trainable: int = 0
    macs: int = 0
    flops: int = 0


COLUMNS = [f.name for f in fields(LayerRow)]


@dataclass
class Counts:
    rows: list[LayerRow]
    params: int  # unique tensors: a tied or shared parameter counts once
    trainable: int
    param_bytes: int
    input_shape: Shape
    batch: int
    uncounted: dict[str, int] = field(default_factory=dict)  # operator -> calls with no rule

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.rows)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.rows], columns=COLUMNS)


# ---------------------------------------------------------------- the rules, one per operator


def _numel(x) -> int:
    return (x[0] if isinstance(x, (tuple, list)) else x).numel()


def _per_element(n: int):
    return lambda args, kwargs, out, module: (0, n * _numel(out))


def _conv(args, kwargs, out, module):
    x, weight, bias, transposed = args[0], args[1], args[2], args[6]
    kernel = math.prod(weight.shape[2:])
    if transposed:  # every input element is scattered into Cout/groups x kernel outputs
        macs = x.numel() * weight.shape[1] * kernel
    else:
        macs = out.numel() * weight.shape[1] * kernel
    return macs, 2 * macs - (0 if bias is not None else out.numel())


def _mm(args, kwargs, out, module):
    a, b = args[0], args[1]
    macs = math.prod(a.shape) * b.shape[-1]
    if isinstance(module, nn.Linear):  # a Linear without bias: 2K - 1 per output element
        return macs, 2 * macs - out.numel()
    return macs, 2 * macs


def _addmm(args, kwargs, out, module):  # bias + a @ b: what a Linear with bias runs
    macs = math.prod(args[1].shape) * args[2].shape[-1]
    return macs, 2 * macs


def _attention(args, kwargs, out, module):
    q, k, v = args[:3]
    scores = math.prod(q.shape[:-1]) * k.shape[-2]
    macs = scores * (q.shape[-1] + v.shape[-1])
    return macs, 2 * macs + 3 * scores


def _kernel_size(x, kernel_size) -> int:
    spatial = len(kernel_size) if len(kernel_size) > 1 else x.dim() - 2
    return math.prod(kernel_size) if len(kernel_size) > 1 else kernel_size[0] ** spatial


def _max_pool(args, kwargs, out, module):
    return 0, (_kernel_size(args[0], args[1]) - 1) * _numel(out)


def _avg_pool(args, kwargs, out, module):
    return 0, _kernel_size(args[0], args[1]) * _numel(out)


def _adaptive_windows(x, out) -> tuple[int, int]:
    """Total window size over all outputs, and the number of outputs."""
    out = out[0] if isinstance(out, (tuple, list)) else out
    spatial = out.dim() - 2
    per_map = 1
    for size_in, size_out in zip(x.shape[-spatial:], out.shape[-spatial:]):
        per_map *= sum(
            -(-(i + 1) * size_in // size_out) - (i * size_in // size_out) for i in range(size_out)
        )
    maps = math.prod(out.shape[:-spatial])
    return per_map * maps, out.numel()


def _adaptive_avg(args, kwargs, out, module):
    return 0, _adaptive_windows(args[0], out)[0]


def _adaptive_max(args, kwargs, out, module):
    window, outputs = _adaptive_windows(args[0], out)
    return 0, window - outputs


def _mean(args, kwargs, out, module):
    return 0, args[0].numel()


def _sum(args, kwargs, out, module):
    return 0, args[0].numel() - out.numel()


def _norm(args, kwargs, out, module):
    affine = len(args) > 2 and args[2] is not None
    return 0, (5 if affine else 4) * args[0].numel()


def _group_norm(args, kwargs, out, module):
    affine = len(args) > 1 and args[1] is not None
    return 0, (5 if affine else 4) * args[0].numel()


ELEMENTWISE = """relu relu_ gelu gelu_ sigmoid sigmoid_ tanh tanh_ silu silu_ hardtanh hardtanh_
    leaky_relu leaky_relu_ elu elu_ hardswish hardswish_ hardsigmoid hardsigmoid_ softplus mish
    mish_ threshold threshold_ clamp clamp_ clamp_min clamp_min_ _prelu_kernel log_sigmoid_forward
    add add_ sub sub_ rsub mul mul_ div div_ neg exp sqrt rsqrt abs pow reciprocal""".split()

RULES = {
    aten.convolution: _conv,
    aten._convolution: _conv,
    aten.mm: _mm,
    aten.bmm: _mm,
    aten.addmm: _addmm,
    aten.baddbmm: _addmm,
    aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    aten._scaled_dot_product_flash_attention: _attention,
    aten._scaled_dot_product_efficient_attention: _attention,
    aten._scaled_dot_product_cudnn_attention: _attention,
    aten.max_pool1d: _max_pool,
    aten.max_pool2d: _max_pool,
    aten.max_pool3d: _max_pool,
    aten.max_pool2d_with_indices: _max_pool,
    aten.max_pool3d_with_indices: _max_pool,
    aten.avg_pool1d: _avg_pool,
    aten.avg_pool2d: _avg_pool,
    aten.avg_pool3d: _avg_pool,
    aten._adaptive_avg_pool2d: _adaptive_avg,
    aten._adaptive_avg_pool3d: _adaptive_avg,
    aten.adaptive_max_pool2d: _adaptive_max,
    aten.adaptive_max_pool3d: _adaptive_max,
    aten.mean: _mean,
    aten.sum: _sum,
    aten.native_batch_norm: _per_element(2),
    aten._native_batch_norm_legit: _per_element(2),
    aten._native_batch_norm_legit_no_training: _per_element(2),
    aten.native_layer_norm: _norm,
    aten.native_group_norm: _group_norm,
    aten._softmax: _per_element(3),
    aten._log_softmax: _per_element(3),
    **{getattr(aten, name): _per_element(1) for name in ELEMENTWISE},
}

# Operators that move, copy, create or select data without arithmetic.
FREE = {
    getattr(aten, name)
    for name in """_to_copy _unsafe_view clone contiguous copy_ cat stack split split_with_sizes
    chunk unbind constant_pad_nd reflection_pad2d replication_pad2d empty empty_like zeros
    zeros_like ones ones_like full full_like fill_ zero_ new_empty new_zeros new_ones lift_fresh
    lift_fresh_copy index index_select gather repeat roll flip dropout native_dropout arange
    scalar_tensor _local_scalar_dense upsample_nearest2d channel_shuffle pixel_shuffle as_strided_
    masked_fill""".split()
}


# ---------------------------------------------------------------- the counting pass


@dataclass
class _Frame:
    name: str
    module: nn.Module
    inputs: str
    row: LayerRow | None = None


def _shapes(value) -> str:
    """Shapes of the tensors in `value`, batch dimension left out: '6x28x28'."""
    tensors = []

    def walk(v):
        if isinstance(v, torch.Tensor):
            tensors.append(v)
        elif isinstance(v, (tuple, list)):
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)

    walk(value)
    return ", ".join("x".join(map(str, t.shape[1:])) or "scalar" for t in tensors)


def _own_parameters(module: nn.Module) -> tuple[int, int, int]:
    """(weights, biases, trainable) of the module's own parameters, not its children's."""
    weights = biases = trainable = 0
    for name, p in module.named_parameters(recurse=False):
        if name.endswith("bias"):
            biases += p.numel()
        else:
            weights += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return weights, biases, trainable


class _LayerCounter(TorchDispatchMode):
    """Charges each operator to the innermost running module; rows in forward order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.stack: list[_Frame] = []
        self.rows: list[LayerRow] = []
        self.uncounted: Counter[str] = Counter()
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name), with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._leave, always_call=True))

    def _enter(self, name):
        def hook(module, args, kwargs):
            frame = _Frame(name or "(model)", module, _shapes((args, kwargs)))
            self.stack.append(frame)
            if not any(True for _ in module.children()) or any(True for _ in module.parameters(False)):
                self._row(frame)

        return hook

    def _leave(self, module, args, output):
        frame = self.stack.pop()
        if frame.row is not None:
            frame.row.output_shape = _shapes(output)

    def _row(self, frame: _Frame) -> LayerRow:
        if frame.row is None:
            weights, biases, trainable = _own_parameters(frame.module)
            frame.row = LayerRow(
                frame.name, type(frame.module).__name__, frame.inputs, "",
                weights, biases, weights + biases, trainable,
            )
            self.rows.append(frame.row)
        return frame.row

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        rule = RULES.get(packet)
        if rule is None:
            if packet not in FREE and not func.is_view and _is_float(out):
                self.uncounted[str(packet)] += 1
            return out
        module = self.stack[-1].module if self.stack else self.model
        macs, flops = rule(args, kwargs, out, module)
        if flops and self.stack:
            row = self._row(self.stack[-1])
            row.macs += macs
            row.flops += flops
        return out

    def remove_hooks(self):
        for handle in self.handles:
            handle.remove()


def _is_float(out) -> bool:
    if isinstance(out, (tuple, list)):
        return any(_is_float(o) for o in out)
    return isinstance(out, torch.Tensor) and out.is_floating_point()


class _FailureTracker:
    """Names the innermost module running when a forward pass raises."""

    def __init__(self, model: nn.Module):
        self.stack: list[tuple[str, nn.Module, str]] = []
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name), with_kwargs=True))

    def _enter(self, name):
        def hook(module, args, kwargs):
            self.stack.append((name or "(model)", module, _shapes((args, kwargs))))

        return hook

    def error(self, error: Exception, input_shape: Shape) -> UsageError:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        whole = "x".join(map(str, input_shape))
        if not self.stack:
            return UsageError(f"the model cannot take input {whole}: {message}")
        name, module, shapes = self.stack[-1]
        return UsageError(
            f"layer {name!r} ({type(module).__name__}) failed on input {shapes} "
            f"(model input {whole}): {message}"
        )


def run_forward(model: nn.Module, x: torch.Tensor, mode: TorchDispatchMode | None = None):
    """One forward pass; a failure becomes a UsageError naming the layer and shapes."""
    tracker = _FailureTracker(model)
    try:
        if mode is None:
            return model(x)
        with mode:
            return model(x)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as error:
        raise tracker.error(error, tuple(x.shape[1:])) from None
    finally:
        for handle in tracker.handles:
            handle.remove()


def count_model(model: nn.Module, input_shape: Shape, batch: int = 1) -> Counts:
    """Count `model` on a zero input of `batch` x `input_shape`, in eval mode."""
    if batch < 1:
        raise UsageError(f"batch must be >= 1, got {batch}")
    was_training = model.training
    model.eval()
    x = torch.zeros(batch, *input_shape)
    if any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules()):
        with torch.no_grad():  # Lazy modules take their sizes here, before anything is counted
            run_forward(model, x)
    counter = _LayerCounter(model)
    try:
        # Grad stays on: with it off, some modules (MultiheadAttention) take fused fast paths.
        run_forward(model, x, counter)
    finally:
        counter.remove_hooks()
        model.train(was_training)
    unique = list(model.parameters())  # each tensor once, however often it is shared
    return Counts(
        rows=counter.rows,
        params=sum(p.numel() for p in unique),
        trainable=sum(p.numel() for p in unique if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in unique),
        input_shape=tuple(input_shape),
        batch=batch,
        uncounted=dict(counter.uncounted),
    )
