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

The counting convention is `ablate.convention.CONVENTION`, beside this module: `ablate params
--help` prints it without importing torch.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, TypeVar

import pandas as pd
import torch
from torch import nn
from torch._subclasses import fake_tensor
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from ablate.arch import Shape, describe_error
from ablate.errors import UsageError

aten = torch.ops.aten
T = TypeVar("T")


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


# ---------------------------------------------------------------- the rules, one per operator
# rule(args, kwargs, out, module) -> (MACs, FLOPs); module is None in the backward pass.


def _numel(x) -> int:
    return (x[0] if isinstance(x, (tuple, list)) else x).numel()


def _per_element(n: int):
    return lambda args, kwargs, out, module: (0, n * _numel(out))


def _per_input_element(n: int):
    return lambda args, kwargs, out, module: (0, n * args[1].numel())


def _per_gradient_element(args, kwargs, out, module):  # max-pool backward: routes each gradient
    return 0, args[0].numel()


def _conv_macs(x, weight, out, transposed) -> int:
    kernel = math.prod(weight.shape[2:])
    if transposed:  # every input element is scattered into Cout/groups x kernel outputs
        return x.numel() * weight.shape[1] * kernel
    return out.numel() * weight.shape[1] * kernel


def _conv(args, kwargs, out, module):
    x, weight, bias, transposed = args[0], args[1], args[2], args[6]
    macs = _conv_macs(x, weight, out, transposed)
    return macs, 2 * macs - (0 if bias is not None else out.numel())


def _conv_backward(args, kwargs, out, module):
    grad, x, weight, transposed, mask = args[0], args[1], args[2], args[7], args[10]
    macs = _conv_macs(x, weight, grad, transposed) * (mask[0] + mask[1])
    bias = grad.numel() - grad.shape[1] if mask[2] else 0
    return macs, 2 * macs + bias


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


def _attention_backward(args, kwargs, out, module):
    macs, flops = _attention(args[1:4], kwargs, out, module)
    return 2 * macs, 2 * flops


def _kernel_size(x, kernel_size) -> int:
    """Elements in a pooling window: kernel_size is [k] (k in each spatial dim) or one per dim."""
    return math.prod(kernel_size) if len(kernel_size) > 1 else kernel_size[0] ** (x.dim() - 2)


def _max_pool(args, kwargs, out, module):
    return 0, (_kernel_size(args[0], args[1]) - 1) * _numel(out)


def _avg_pool(args, kwargs, out, module):
    return 0, _kernel_size(args[0], args[1]) * _numel(out)


def _avg_pool_backward(args, kwargs, out, module):  # (grad_output, input, kernel_size, ...)
    return _avg_pool(args[1:], kwargs, args[0], module)


def _adaptive_windows(x, out) -> tuple[int, int]:
    """Total window size over all outputs, and the number of outputs."""
    out = out[0] if isinstance(out, (tuple, list)) else out
    spatial = out.dim() - 2
    per_map = 1  # window i spans [floor(i * in / out), ceil((i + 1) * in / out))
    for size_in, size_out in zip(x.shape[-spatial:], out.shape[-spatial:]):
        per_map *= sum(-(-(i + 1) * size_in // size_out) - (i * size_in // size_out) for i in range(size_out))
    maps = math.prod(out.shape[:-spatial])
    return per_map * maps, out.numel()


def _adaptive_avg(args, kwargs, out, module):
    return 0, _adaptive_windows(args[0], out)[0]


def _adaptive_avg_backward(args, kwargs, out, module):  # (grad_output, input)
    return _adaptive_avg(args[1:], kwargs, args[0], module)


def _adaptive_max(args, kwargs, out, module):
    window, outputs = _adaptive_windows(args[0], out)
    return 0, window - outputs


def _mean(args, kwargs, out, module):
    return 0, args[0].numel()


def _sum(args, kwargs, out, module):
    return 0, args[0].numel() - out.numel()


def _vector_norm(args, kwargs, out, module):  # a square and an add per value
    return 0, 2 * args[0].numel()


def _norm(input_at: int, weight_at: int, times: int = 1):
    """Layer or group norm: 5 per element, 4 without affine; `times` 2 for the backward."""
    def rule(args, kwargs, out, module):
        affine = len(args) > weight_at and args[weight_at] is not None
        return 0, times * (5 if affine else 4) * args[input_at].numel()

    return rule


def _index_put(args, kwargs, out, module):  # index backward: gradients of repeated indices add up
    accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
    return 0, args[2].numel() if accumulate else 0


def _ops(names: str) -> list:
    return [getattr(aten, name) for name in names.split()]


ELEMENTWISE = """relu relu_ gelu gelu_ sigmoid sigmoid_ tanh tanh_ silu silu_ hardtanh hardtanh_
    leaky_relu leaky_relu_ elu elu_ hardswish hardswish_ hardsigmoid hardsigmoid_ softplus mish
    mish_ threshold threshold_ clamp clamp_ clamp_min clamp_min_ _prelu_kernel log_sigmoid_forward
    add add_ sub sub_ rsub mul mul_ div div_ neg exp sqrt rsqrt abs pow reciprocal
    native_dropout_backward"""
# Backward of ReLU-like activations: a comparison per element; of the others: derivative x gradient.
SELECTING_BACKWARD = "threshold_backward hardtanh_backward leaky_relu_backward"
ACTIVATION_BACKWARD = """tanh_backward sigmoid_backward gelu_backward silu_backward
    hardswish_backward hardsigmoid_backward elu_backward softplus_backward mish_backward
    log_sigmoid_backward"""
ATTENTION = """_scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
    _scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention"""

RULES = {
    aten.convolution: _conv,
    aten._convolution: _conv,
    aten.convolution_backward: _conv_backward,
    aten.mm: _mm,
    aten.bmm: _mm,
    aten.addmm: _addmm,
    aten.baddbmm: _addmm,
    **{op: _attention for op in _ops(ATTENTION)},
    **{op: _attention_backward for op in _ops(" ".join(n + "_backward" for n in ATTENTION.split()))},
    aten.max_pool1d: _max_pool,
    aten.max_pool2d: _max_pool,
    aten.max_pool3d: _max_pool,
    aten.max_pool2d_with_indices: _max_pool,
    aten.max_pool3d_with_indices: _max_pool,
    aten.max_pool2d_with_indices_backward: _per_gradient_element,
    aten.max_pool3d_with_indices_backward: _per_gradient_element,
    aten.avg_pool1d: _avg_pool,
    aten.avg_pool2d: _avg_pool,
    aten.avg_pool3d: _avg_pool,
    aten.avg_pool2d_backward: _avg_pool_backward,
    aten.avg_pool3d_backward: _avg_pool_backward,
    aten._adaptive_avg_pool2d: _adaptive_avg,
    aten._adaptive_avg_pool3d: _adaptive_avg,
    aten._adaptive_avg_pool2d_backward: _adaptive_avg_backward,
    aten._adaptive_avg_pool3d_backward: _adaptive_avg_backward,
    aten.adaptive_max_pool2d: _adaptive_max,
    aten.adaptive_max_pool3d: _adaptive_max,
    aten.adaptive_max_pool2d_backward: _per_gradient_element,
    aten.adaptive_max_pool3d_backward: _per_gradient_element,
    aten.mean: _mean,
    aten.sum: _sum,
    aten.linalg_vector_norm: _vector_norm,
    aten.native_batch_norm: _per_element(2),
    aten._native_batch_norm_legit: _per_element(2),
    aten._native_batch_norm_legit_no_training: _per_element(2),
    aten.native_batch_norm_backward: _per_input_element(4),
    aten.native_layer_norm: _norm(0, 2),  # (input, normalized_shape, weight, ...)
    aten.native_layer_norm_backward: _norm(1, 5, 2),  # (grad_out, input, normalized_shape, mean, rstd, weight, ...)
    aten.native_group_norm: _norm(0, 1),  # (input, weight, ...)
    aten.native_group_norm_backward: _norm(1, 4, 2),  # (grad_out, input, mean, rstd, weight, ...)
    aten._softmax: _per_element(3),
    aten._log_softmax: _per_element(3),
    aten._softmax_backward_data: _per_element(6),
    aten._log_softmax_backward_data: _per_element(6),
    aten.embedding_dense_backward: _per_gradient_element,
    aten.index_put: _index_put,
    aten.index_put_: _index_put,
    aten._index_put_impl_: _index_put,
    **{op: _per_element(1) for op in _ops(ELEMENTWISE + " " + SELECTING_BACKWARD)},
    **{op: _per_element(2) for op in _ops(ACTIVATION_BACKWARD)},
}

# Operators that move, copy, create or select data without arithmetic.
FREE = set(_ops("""_to_copy _unsafe_view clone contiguous copy_ cat stack split split_with_sizes
    chunk unbind constant_pad_nd reflection_pad2d replication_pad2d empty empty_like zeros
    zeros_like ones ones_like full full_like fill_ zero_ new_empty new_zeros new_ones lift_fresh
    lift_fresh_copy index index_select gather repeat roll flip dropout native_dropout arange
    scalar_tensor _local_scalar_dense upsample_nearest2d channel_shuffle pixel_shuffle as_strided_
    masked_fill masked_fill_ where slice_backward select_backward as_strided_scatter
    new_empty_strided empty_strided embedding"""))

RECURRENT = (nn.RNNBase, nn.RNNCellBase)
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
CELL_WORK = {"LSTM": 9, "GRU": 7, "RNN_TANH": 1, "RNN_RELU": 1}  # element-wise FLOPs per hidden unit


def _recurrent(module: nn.Module, args) -> tuple[int, int]:
    """(MACs, FLOPs) of a recurrent layer or cell on its input, by the convention's formula."""
    x = args[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = x.data.shape[0]  # time steps summed over the sequences of the batch
    elif isinstance(module, nn.RNNCellBase):
        steps = x.shape[0] if x.dim() == 2 else 1
    else:
        steps = x.shape[0] if x.dim() == 2 else x.shape[0] * x.shape[1]
    if isinstance(module, nn.RNNCellBase):
        mode = {nn.LSTMCell: "LSTM", nn.GRUCell: "GRU"}.get(type(module), "RNN_TANH")
        layers, directions, proj = 1, 1, 0
    else:
        mode, layers, proj = module.mode, module.num_layers, module.proj_size
        directions = 2 if module.bidirectional else 1
    gates, hidden = GATES[mode], module.hidden_size
    out = proj or hidden  # what the hidden state feeds back
    macs = flops = 0
    for layer in range(layers):
        inputs = module.input_size if layer == 0 else out * directions
        products = gates * hidden * (inputs + out)
        macs += products + hidden * proj
        flops += (2 * products + gates * hidden * (1 if module.bias else -1)
                  + CELL_WORK[mode] * hidden + (2 * hidden * proj - proj if proj else 0))
    return macs * directions * steps, flops * directions * steps


# ---------------------------------------------------------------- receptive fields
# For each tensor computed from the input: per dimension None (not spatial) or (window, stride)
# in input pixels; UNDEFINED once spatial positions are mixed (a flatten, attention).

UNDEFINED = "undefined"
CONV_OPS = {op for op, rule in RULES.items() if rule is _conv}
POOL_OPS = {op for op, rule in RULES.items() if rule in (_max_pool, _avg_pool)}
ADAPTIVE_OPS = {op for op, rule in RULES.items() if rule in (_adaptive_avg, _adaptive_max)}
POINTWISE = set(_ops(ELEMENTWISE)) | set(_ops("""native_batch_norm _native_batch_norm_legit
    _native_batch_norm_legit_no_training native_group_norm _to_copy clone contiguous dropout
    native_dropout masked_fill where copy_ fill_ zero_"""))
SAME_AS_INPUT = set(_ops("constant_pad_nd reflection_pad2d replication_pad2d"))
LAST_DIMS = {aten.native_layer_norm, aten._softmax, aten._log_softmax}
VIEWS = set(_ops("_unsafe_view view reshape alias detach expand squeeze unsqueeze slice"))
SPLITS = set(_ops("split split_with_sizes unbind"))


def _window(entry, kernel: int, stride: int, dilation: int):
    size, jump = entry
    return size + (kernel - 1) * dilation * jump, jump * stride


def _each(value, n: int, default: int) -> list[int]:
    """A per-dimension argument (an int or a list of 1 or n) as n values; [] -> default."""
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    if not value:
        return [default] * n
    return value * n if len(value) == 1 else value


class _Fields:
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
        tensors = _tensors((args, kwargs))
        found = [f for f in map(self.get, tensors) if f is not None]
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

    def _rule(self, op, func, args, out):
        source = self.get(args[0]) if isinstance(args[0], torch.Tensor) else None
        if op in POINTWISE:
            return self._combine(_tensors(args), out)
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

    def _combine(self, tensors, out):
        """Element-wise: the widest window at each dimension where the input is not broadcast."""
        result = [None] * out.dim()
        for t in tensors:
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


# ---------------------------------------------------------------- the counting pass


def _tensors(value) -> list[torch.Tensor]:
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


def _shapes(value) -> str:
    """Shapes of the tensors in `value`, batch dimension left out: '6x28x28'."""
    return ", ".join("x".join(map(str, t.shape[1:])) or "scalar" for t in _tensors(value))


def _storage(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, TypeError):
        return None


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
        self.fields = _Fields()
        self.field_of: dict[int, object] = {}  # id(row) -> the field of its output
        self.recurrent: list[_Frame] = []
        self.saved: dict[int, object] = {}  # address -> storage kept for the backward (held: no reuse)
        self.entered: set[int] = set()
        self.in_backward = False
        self.uncounted: Counter[str] = Counter()
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name), with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._leave, always_call=True))

    def _enter(self, name):
        def hook(module, args, kwargs):
            frame = _Frame(name or "(model)", module, _shapes((args, kwargs)))
            self.stack.append(frame)
            self.entered.add(id(module))
            if next(module.children(), None) is None:  # a container: once its own code computes
                self._row(frame)
            if isinstance(module, RECURRENT):
                frame.row.macs, frame.row.flops = _recurrent(module, args)
                self.recurrent.append(frame)

        return hook

    def _leave(self, module, args, output):
        frame = self.stack.pop()
        if isinstance(module, nn.Linear) and args:  # per position: keeps the field of its input
            source = self.fields.get(args[0])
            if isinstance(source, tuple) and not source[-1]:
                self.fields.set(output, source)
        if frame.row is not None:
            frame.row.output_shape = _shapes(output)
            frame.row.activations = sum(t.numel() for t in _tensors(output))
            self.field_of[id(frame.row)] = self.fields.get(output) if isinstance(output, torch.Tensor) else None

    def _row(self, frame: _Frame) -> LayerRow:
        if frame.row is None:
            frame.row = LayerRow(frame.name, type(frame.module).__name__, frame.inputs, "")
            self.rows.append(frame.row)
        return frame.row

    def _use_parameters(self, args, kwargs):
        frame = self.stack[-1]
        for t in _tensors((args, kwargs)):
            for p in self.params.get(_storage(t), ()):
                if id(p) in frame.used:
                    continue
                frame.used.add(id(p))
                row = self._row(frame)
                if p.row is None:
                    p.hold(row)
                elif p.row is not row:
                    row.shared += p.numel

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
        rule = RULES.get(packet)
        if rule is None:
            if packet not in FREE and not func.is_view and _is_float(out):
                self.uncounted[str(packet) + (" (backward)" if self.in_backward else "")] += 1
            return out
        macs, flops = rule(args, kwargs, out, None if self.in_backward else frame and frame.module)
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
        outputs = [t for t in _tensors(output) if t.requires_grad]
        self.in_backward = True
        try:
            if outputs and inputs:
                seeds = [torch.ones_like(t) for t in outputs]
                torch.autograd.grad(outputs, inputs, seeds, allow_unused=True)
        finally:
            self.in_backward = False
        for frame in self.recurrent:  # recurrent layers: twice their forward, by the convention
            if frame.backward:
                frame.row.backward_flops = (frame.row.backward_flops or 0) + 2 * frame.row.flops
        for row in self.rows:
            row.backward_flops = row.backward_flops or 0

    def finish(self) -> list[LayerRow]:
        for row in self.rows:
            row.receptive_field = self.fields.text(self.field_of.get(id(row)))
        return self.rows

    def remove_hooks(self):
        for handle in self.handles:
            handle.remove()


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _dtype(model: nn.Module) -> torch.dtype:
    """The parameters' floating-point dtype: that of the input and the activations too."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


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
        message = _first_line(error)
        whole = "x".join(map(str, input_shape))
        if not self.stack:
            return UsageError(f"the model cannot take input {whole}: {message}")
        name, module, shapes = self.stack[-1]
        return UsageError(
            f"layer {name!r} ({type(module).__name__}) failed on input {shapes} "
            f"(model input {whole}): {message}"
        )


class NeedsRealTensors(UsageError):
    """The forward pass needs real values (data-dependent shapes): it cannot run on fake tensors."""


def _needs_real(error: Exception) -> bool:
    if isinstance(error, (NotImplementedError, fake_tensor.DataDependentOutputException,
                          fake_tensor.DynamicOutputShapeException, fake_tensor.UnsupportedOperatorException,
                          fake_tensor.UnsupportedFakeTensorException)):
        return True
    return bool(re.search(r"\bmeta\b|fake|data.dependent|data pointer|symbolic", str(error), re.I))


@contextmanager
def _quiet_fake_tensor_log():
    """FakeTensorMode logs every failing operator with a traceback; the failure is ours to report."""
    log = logging.getLogger("torch._subclasses.fake_tensor")
    disabled, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = disabled


def run_forward(model: nn.Module, x: torch.Tensor, mode: TorchDispatchMode | None = None,
                state: dict | None = None, fake: bool = False):
    """One forward pass; a failure becomes a UsageError naming the layer and shapes.

    `state` replaces the model's parameters and buffers for the call (torch.func.functional_call);
    with `fake`, a failure that real values would avoid raises NeedsRealTensors."""
    tracker = _FailureTracker(model)
    try:
        with mode or nullcontext(), _quiet_fake_tensor_log():
            if state is None:
                return model(x)
            return torch.func.functional_call(model, state, (x,), strict=False)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as error:
        usage = tracker.error(error, tuple(x.shape[1:]))
        if fake and _needs_real(error):
            raise NeedsRealTensors(f"cannot count on fake tensors: {usage}") from None
        raise usage from None
    finally:
        for handle in tracker.handles:
            handle.remove()


def _fake_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
    """Under FakeTensorMode: fake CPU stand-ins (shapes, no data) for the model's parameters and
    buffers, meta or real: name -> tensor, and id(original) -> stand-in. Tied tensors share one."""
    made: dict[int, torch.Tensor] = {}
    state = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in named:
        if id(t) not in made:
            fake = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
            if isinstance(t, nn.Parameter):
                fake = nn.Parameter(fake, requires_grad=t.requires_grad)
            made[id(t)] = fake
        state[name] = made[id(t)]
    return state, made


def _on_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in (*model.parameters(), *model.buffers()))


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
        state, standins = _fake_state(model) if fake else (None, {})
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


def available_memory() -> int | None:
    """Bytes of memory available: Linux's MemAvailable, else the free pages; None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _count_real(model: nn.Module, input_shape: Shape, batch: int, training: bool, reason: str) -> Counts:
    """The fallback: a real forward pass, when it can fit."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    needed = batch * math.prod(input_shape) * _dtype(model).itemsize
    available = available_memory()
    if available is not None and needed > available:
        raise UsageError(f"{reason}; a real forward pass does not fit: its input alone needs "
                         f"{needed / 1e9:.3g} GB ({available / 1e9:.3g} GB of memory free)")
    try:
        return _count(model, input_shape, batch, training, fake=False)
    except (MemoryError, RuntimeError, UsageError) as error:
        first = _first_line(error)
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
    meta = _on_meta(model)
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
            _compare(model, input_shape, batch, counts)
        return counts
    finally:
        model.train(was_training)


@contextmanager
def _parameters_to_meta():
    """Tensors stay real while the model is built (a builder may call .tolist()), but each
    parameter moves to the meta device as it is registered, before it is initialised."""
    register = nn.Module.register_parameter

    def to_meta(module, name, param):
        if param is not None and not param.is_meta and not isinstance(param, nn.parameter.UninitializedParameter):
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = to_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def build_meta(build: Callable[[], T]) -> T | None:
    """What `build()` returns, built with its parameters on the meta device: under
    `torch.device("meta")`, else with each parameter moved there as it is registered. None
    when the builder cannot run either way (a UsageError is passed on)."""
    for where in (lambda: torch.device("meta"), _parameters_to_meta):
        try:
            with where():
                return build()
        except UsageError:
            raise
        except Exception:  # noqa: BLE001 - a builder that needs real values: try the next way
            continue
    return None


def count_meta(build: Callable[[], nn.Module], input_shape: Shape, batch: int = 1,
               training: bool = False) -> Counts:
    """Build the model with its parameters on the meta device (no weights allocated) and count
    it. A model that cannot be built or counted that way is built with real weights, if they
    fit in memory."""
    model = build_meta(build)
    if model is not None:
        try:
            return count_model(model, input_shape, batch, training)
        except NeedsRealTensors as error:
            weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
            available = available_memory()
            if available is not None and weights > available:
                raise UsageError(f"{error}; a real forward pass does not fit: its weights need "
                                 f"{weights / 1e9:.3g} GB ({available / 1e9:.3g} GB of memory free)") from None
    try:
        model = build()
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - a user's model whose constructor raises
        raise UsageError(f"the model failed to build: {describe_error(error)}") from None
    return count_model(model, input_shape, batch, training)


# ---------------------------------------------------------------- other counters


def _compare(model: nn.Module, input_shape: Shape, batch: int, counts: Counts) -> None:
    """Add fvcore's and FlopCounterMode's FLOPs for the same model and input, per row and in all."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, *input_shape, dtype=_dtype(model))
    try:
        with warnings.catch_warnings():  # torch.jit's deprecation: on importing fvcore, on every trace
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            fvcore = analysis.by_module()
    except Exception as error:  # noqa: BLE001 - fvcore's tracer fails on some models
        raise UsageError(f"fvcore cannot count this model: {_first_line(error)}") from None
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
