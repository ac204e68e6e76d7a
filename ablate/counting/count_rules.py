"""The counting rules: each aten operator's MACs and FLOPs from its arguments and output, and the
recurrent layers' by formula, whichever operators their backend runs.

RULES groups the operators by rule name; a rule's words, what `ablate params --help` prints, are
`ablate.counting.convention.RULES[name]` (torch-free, so that the help loads no torch).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

aten = torch.ops.aten

# formula(args, kwargs, out, module) -> (MACs, FLOPs); module is None in the backward pass.
Formula = Callable[..., tuple[int, int]]


def operators(names: str) -> list:
    """The aten operators named in `names`, separated by whitespace."""
    return [getattr(aten, name) for name in names.split()]


def _numel(x) -> int:
    return (x[0] if isinstance(x, (tuple, list)) else x).numel()


def _free(args, kwargs, out, module):
    return 0, 0


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


CONVOLUTIONS = "convolution _convolution"
ATTENTION = """_scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
    _scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention"""
MAX_POOLS = "max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices"
AVG_POOLS = "avg_pool1d avg_pool2d avg_pool3d"
ADAPTIVE_AVG_POOLS = "_adaptive_avg_pool2d _adaptive_avg_pool3d"
ADAPTIVE_MAX_POOLS = "adaptive_max_pool2d adaptive_max_pool3d"
ACTIVATIONS = """relu relu_ gelu gelu_ sigmoid sigmoid_ tanh tanh_ silu silu_ hardtanh hardtanh_
    leaky_relu leaky_relu_ elu elu_ hardswish hardswish_ hardsigmoid hardsigmoid_ softplus mish
    mish_ threshold threshold_ clamp clamp_ clamp_min clamp_min_ _prelu_kernel log_sigmoid_forward"""
ARITHMETIC = """add add_ sub sub_ rsub mul mul_ div div_ neg exp sqrt rsqrt abs pow reciprocal
    native_dropout_backward"""
# Backward of ReLU-like activations: a comparison per element; of the others: derivative x gradient.
SELECTING_BACKWARD = "threshold_backward hardtanh_backward leaky_relu_backward"
ACTIVATION_BACKWARD = """tanh_backward sigmoid_backward gelu_backward silu_backward
    hardswish_backward hardsigmoid_backward elu_backward softplus_backward mish_backward
    log_sigmoid_backward"""
# Operators that move, copy, create or select data without arithmetic.
FREE = """_to_copy _unsafe_view clone contiguous copy_ cat stack split split_with_sizes
    chunk unbind constant_pad_nd reflection_pad2d replication_pad2d empty empty_like zeros
    zeros_like ones ones_like full full_like fill_ zero_ new_empty new_zeros new_ones lift_fresh
    lift_fresh_copy index index_select gather repeat roll flip dropout native_dropout arange
    scalar_tensor _local_scalar_dense upsample_nearest2d channel_shuffle pixel_shuffle as_strided_
    masked_fill masked_fill_ where slice_backward select_backward as_strided_scatter
    new_empty_strided empty_strided embedding"""


def _counted_by(formula: Formula, names: str) -> dict:
    return dict.fromkeys(operators(names), formula)


RULES: dict[str, dict] = {  # rule name -> {operator: formula}; its words: ablate.counting.convention.RULES
    "products": {**_counted_by(_conv, CONVOLUTIONS), **_counted_by(_mm, "mm bmm"),
                 **_counted_by(_addmm, "addmm baddbmm")},
    "attention": _counted_by(_attention, ATTENTION),
    "pools": {**_counted_by(_max_pool, MAX_POOLS), **_counted_by(_avg_pool, AVG_POOLS),
              **_counted_by(_adaptive_avg, ADAPTIVE_AVG_POOLS), **_counted_by(_adaptive_max, ADAPTIVE_MAX_POOLS)},
    "mean": {aten.mean: _mean},
    "sum": {aten.sum: _sum},
    "vector_norm": {aten.linalg_vector_norm: _vector_norm},
    "activations": _counted_by(_per_element(1), ACTIVATIONS),
    "batch_norm": _counted_by(_per_element(2), "native_batch_norm _native_batch_norm_legit "
                                               "_native_batch_norm_legit_no_training"),
    "norms": {aten.native_layer_norm: _norm(0, 2),  # (input, normalized_shape, weight, ...)
              aten.native_group_norm: _norm(0, 1)},  # (input, weight, ...)
    "softmax": _counted_by(_per_element(3), "_softmax _log_softmax"),
    "arithmetic": _counted_by(_per_element(1), ARITHMETIC),
    "product_gradients": {aten.convolution_backward: _conv_backward},
    "selecting_gradients": _counted_by(_per_element(1), SELECTING_BACKWARD),
    "activation_gradients": _counted_by(_per_element(2), ACTIVATION_BACKWARD),
    "twice_forward": {
        **_counted_by(_attention_backward, " ".join(n + "_backward" for n in ATTENTION.split())),
        aten.native_batch_norm_backward: _per_input_element(4),
        aten.native_layer_norm_backward: _norm(1, 5, 2),  # (grad_out, input, normalized_shape, mean, rstd, weight, ...)
        aten.native_group_norm_backward: _norm(1, 4, 2),  # (grad_out, input, mean, rstd, weight, ...)
        **_counted_by(_per_element(6), "_softmax_backward_data _log_softmax_backward_data"),
    },
    "pool_gradients": {
        **_counted_by(_per_gradient_element, "max_pool2d_with_indices_backward max_pool3d_with_indices_backward "
                                             "adaptive_max_pool2d_backward adaptive_max_pool3d_backward"),
        **_counted_by(_avg_pool_backward, "avg_pool2d_backward avg_pool3d_backward"),
        **_counted_by(_adaptive_avg_backward, "_adaptive_avg_pool2d_backward _adaptive_avg_pool3d_backward"),
    },
    "gather_gradients": {aten.embedding_dense_backward: _per_gradient_element,
                         **_counted_by(_index_put, "index_put index_put_ _index_put_impl_")},
    "free": _counted_by(_free, FREE),
}
FORMULAS: dict = {op: formula for ops in RULES.values() for op, formula in ops.items()}

# ---------------------------------------------------------------- recurrent layers, by module

RECURRENT = (nn.RNNBase, nn.RNNCellBase)
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
CELL_WORK = {"LSTM": 9, "GRU": 7, "RNN_TANH": 1, "RNN_RELU": 1}  # element-wise FLOPs per hidden unit


def recurrent(module: nn.Module, args) -> tuple[int, int]:
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


def recurrent_backward(forward_flops: int) -> int:
    """The backward FLOPs of a recurrent layer or cell, from its forward's."""
    return 2 * forward_flops


# Rules on modules of RECURRENT types, whichever operators they run; their words are convention.RULES's too.
MODULE_RULES = {"recurrent": recurrent, "recurrent_gradients": recurrent_backward}
