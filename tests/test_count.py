"""Counts against hand-worked formulas and independent oracles (sum of numel, fvcore, torch)."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from ablate import arch
from ablate.count import count_model
from ablate.errors import UsageError


def one_layer(module, shape):
    counts = count_model(nn.Sequential(module), shape)
    assert len(counts.rows) == 1, counts.rows
    return counts.rows[0]


def conv_out(w, k, s=1, p=0, d=1):
    return (w + 2 * p - d * (k - 1) - 1) // s + 1


# ---------------------------------------------------------------- one layer of every type


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k,s,p,d,groups", [(3, 1, 1, 1, 1), (5, 2, 0, 1, 1), (3, 2, 1, 2, 1), (3, 1, 1, 1, 4), (1, 1, 0, 1, 1)])
def test_conv2d_by_hand(bias, k, s, p, d, groups):
    cin, cout, w = 8, 12, 13
    row = one_layer(nn.Conv2d(cin, cout, k, s, p, d, groups, bias=bias), (cin, w, w))
    side = conv_out(w, k, s, p, d)
    assert row.output_shape == f"{cout}x{side}x{side}"
    assert row.weights == cout * (cin // groups) * k * k
    assert row.biases == (cout if bias else 0)
    K = cin // groups * k * k
    outputs = cout * side * side
    assert row.macs == outputs * K
    assert row.flops == outputs * (2 * K if bias else 2 * K - 1)


def test_stride2_size_rounds_down():
    # the reports' slip: a stride-2 5x5 conv on 32 with padding 2 gives 16, a 3x3 on 7 gives 3
    assert one_layer(nn.Conv2d(1, 1, 3, stride=2), (1, 7, 7)).output_shape == "1x3x3"
    assert one_layer(nn.Conv2d(1, 1, 5, stride=2, padding=2), (1, 32, 32)).output_shape == "1x16x16"


@pytest.mark.parametrize("bias", [True, False])
def test_linear_by_hand(bias):
    row = one_layer(nn.Linear(20, 7, bias=bias), (20,))
    assert (row.weights, row.biases, row.macs) == (140, 7 if bias else 0, 140)
    assert row.flops == 7 * (40 if bias else 39)


def test_linear_on_sequences_by_hand():
    row = one_layer(nn.Linear(16, 4), (5, 16))  # 5 tokens of 16 features
    assert (row.output_shape, row.macs, row.flops) == ("5x4", 5 * 4 * 16, 5 * 4 * 32)


def test_conv_transpose_by_hand():
    row = one_layer(nn.ConvTranspose2d(4, 6, 3, stride=2), (4, 5, 5))
    assert row.output_shape == "6x11x11"
    assert row.macs == 4 * 5 * 5 * 6 * 9  # every input element scatters into 6 x 3 x 3 outputs


@pytest.mark.parametrize(
    "module,expected",
    [
        (nn.MaxPool2d(2), 4 * 4 * 4 * (2 * 2 - 1)),  # k*k - 1 comparisons per output
        (nn.MaxPool2d(3, stride=1), 6 * 6 * 4 * 8),
        (nn.AvgPool2d(2), 4 * 4 * 4 * 4),
        (nn.ReLU(), 4 * 8 * 8),
        (nn.Tanh(), 4 * 8 * 8),
        (nn.BatchNorm2d(4), 2 * 4 * 8 * 8),
        (nn.AdaptiveAvgPool2d(1), 4 * 8 * 8),
        (nn.AdaptiveAvgPool2d(3), 4 * 10 * 10),  # 8 -> 3: windows of 3, 4, 3 per axis (sum 10)
        (nn.GroupNorm(2, 4), 5 * 4 * 8 * 8),
    ],
)
def test_elementwise_and_pooling_by_hand(module, expected):
    row = one_layer(module, (4, 8, 8))
    assert row.macs == 0
    assert row.flops == expected


def test_functional_matmul_residual_and_attention():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(16, 16))

        def forward(self, x):  # x: B x 10 x 16
            y = x @ self.w
            y = F.scaled_dot_product_attention(y.unsqueeze(1), y.unsqueeze(1), y.unsqueeze(1))
            return x + y.squeeze(1)

    counts = count_model(Block(), (10, 16))
    (row,) = counts.rows
    matmul = 10 * 16 * 16
    attention = 10 * 10 * (16 + 16)
    assert row.macs == matmul + attention
    assert row.flops == 2 * matmul + 2 * attention + 3 * 10 * 10 + 10 * 16
    assert row.type == "Block" and row.params == 256


def test_operator_without_rule_is_reported_not_hidden():
    class Cumulative(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=-1)

    counts = count_model(nn.Sequential(Cumulative()), (3, 4))
    assert counts.uncounted == {"aten.cumsum": 1}


def test_batch_multiplies_counts_not_shapes():
    one = count_model(arch.create_model("tutorial"), (3, 32, 32))
    four = count_model(arch.create_model("tutorial"), (3, 32, 32), batch=4)
    assert four.macs == 4 * one.macs and four.flops == 4 * one.flops
    assert [r.output_shape for r in four.rows] == [r.output_shape for r in one.rows]


# ---------------------------------------------------------------- whole models


LENET5 = [  # layer, output, weights, biases, macs: worked by hand
    ("conv1", "6x28x28", 6 * 25, 6, 6 * 28 * 28 * 25),
    ("conv2", "16x10x10", 16 * 6 * 25, 16, 16 * 10 * 10 * 150),
    ("fc1", "120", 400 * 120, 120, 400 * 120),
    ("fc2", "84", 120 * 84, 84, 120 * 84),
    ("fc3", "10", 84 * 10, 10, 84 * 10),
]


def test_lenet5_layer_by_layer():
    counts = count_model(*arch.load_model("lenet5"))
    rows = {r.layer: r for r in counts.rows}
    for layer, out, weights, biases, macs in LENET5:
        row = rows[layer]
        assert (row.output_shape, row.weights, row.biases, row.macs) == (out, weights, biases, macs)
    assert counts.params == 61_706
    pools = 6 * 14 * 14 * 4 + 16 * 5 * 5 * 4
    tanh = 6 * 28 * 28 + 16 * 10 * 10 + 120 + 84
    assert counts.flops == 2 * counts.macs + pools + tanh


def test_threeconv_matches_the_report():
    counts = count_model(*arch.load_model("threeconv"))
    params = [r.params for r in counts.rows if r.params]
    assert params == [2_432, 51_264, 102_464, 1_025_000, 10_010]
    assert counts.params == 1_191_170
    assert [r.output_shape for r in counts.rows if r.type == "MaxPool2d"] == ["32x16x16", "64x8x8", "64x4x4"]


def test_tutorial_variants():
    linear = count_model(arch.create_model("tutorial", activation="none", fc1_features=240), (3, 32, 32))
    assert not any(r.type == "ReLU" for r in linear.rows)
    assert {r.layer: r.params for r in linear.rows}["fc1"] == 400 * 240 + 240
    wide = count_model(arch.create_model("tutorial", conv1_channels=36), (3, 32, 32))
    assert {r.layer: r.params for r in wide.rows}["conv2"] == 16 * 36 * 25 + 16


@pytest.mark.parametrize("entry", arch.registered_models(), ids=lambda e: e.name)
def test_every_registered_model_counts(entry):
    model = entry.build()
    counts = count_model(model, entry.input_shape)
    assert counts.params == sum(p.numel() for p in model.parameters())
    assert counts.params == sum(r.params for r in counts.rows)
    assert model(torch.zeros(2, *entry.input_shape)).shape == (2, 10)


def test_tied_parameters_count_once():
    a, b = nn.Linear(8, 8), nn.Linear(8, 8)
    b.weight = a.weight
    b.weight.requires_grad_(True)
    frozen = nn.Linear(8, 2)
    frozen.requires_grad_(False)
    counts = count_model(nn.Sequential(a, b, frozen), (8,))
    assert counts.params == 64 + 8 + 8 + 18
    assert counts.trainable == 64 + 8 + 8
    assert counts.param_bytes == 4 * counts.params


def _fvcore_macs(model, shape):
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, *shape))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.by_module()


@pytest.mark.parametrize("name,shape", [("lenet5", None), ("tutorial", None), ("threeconv", None),
                                        ("resnet18", (3, 64, 64)), ("mobilenet_v3_small", (3, 64, 64))])
def test_conv_and_linear_macs_agree_with_fvcore(name, shape):
    model, natural = arch.load_model(name)
    shape = shape or natural
    ours = count_model(model, shape)
    theirs = _fvcore_macs(model, shape)
    layers = [r for r in ours.rows if r.type in ("Conv2d", "Linear")]
    assert layers
    for row in layers:
        assert row.macs == theirs[row.layer], row.layer


def test_biased_conv_and_linear_flops_agree_with_torch():
    model, shape = arch.load_model("threeconv")
    with FlopCounterMode(display=False) as torch_counter:
        model.eval()(torch.zeros(1, *shape))
    ours = count_model(model, shape)
    products = sum(r.flops for r in ours.rows if r.type in ("Conv2d", "Linear"))
    assert products == torch_counter.get_total_flops()


def test_resnet18_and_vgg16_totals():
    resnet = count_model(*arch.load_model("resnet18"))
    assert resnet.params == 11_689_512
    assert math.isclose(resnet.macs, 1.814e9, rel_tol=1e-3)
    assert any(r.type == "BasicBlock" and r.flops for r in resnet.rows), "residual adds are counted"
    vgg, vgg_shape = arch.load_model("vgg16")
    counts = count_model(vgg, vgg_shape)
    assert counts.params == 138_357_544
    fc = sum(r.params for r in counts.rows if r.type == "Linear")
    assert fc / counts.params > 0.85  # the three fc layers hold most of VGG16's weights
    assert not counts.uncounted


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "efficientnet_b0", "mobilenet_v3_small", "convnext_tiny"])
def test_modern_torchvision_models_leave_no_operator_uncounted(name):
    model, shape = arch.load_model(name)
    counts = count_model(model, shape)
    assert counts.uncounted == {}
    assert counts.params == sum(p.numel() for p in model.parameters())
    assert counts.flops > 2 * counts.macs  # products plus the element-wise work around them


# ---------------------------------------------------------------- specs and shapes


def test_spec_infers_input_sizes():
    model = arch.parse_spec("Conv2d(20, 4, stride=2, padding=1), MaxPool2d(3, stride=1)")
    counts = count_model(model, (50, 12, 12))
    conv, pool = counts.rows
    assert (conv.input_shape, conv.output_shape, conv.weights) == ("50x12x12", "20x6x6", 20 * 50 * 16)
    assert (pool.output_shape, pool.flops) == ("20x4x4", 20 * 4 * 4 * 8)
    assert type(model[0]) is nn.Conv2d  # the Lazy module became a plain one


def test_spec_with_linear_and_batchnorm():
    model = arch.parse_spec("Conv2d(8, 3), BatchNorm2d(), ReLU(), Flatten(), Linear(10)")
    counts = count_model(model, (3, 10, 10))
    assert counts.rows[-1].weights == 8 * 8 * 8 * 10


@pytest.mark.parametrize(
    "spec,message",
    [
        ("Conv2d(20, 4", "malformed layer spec"),
        ("Conv2d(x)", "must be literals"),
        ("__import__('os').system('true')", "unknown torch.nn layer"),
        ("Conv2d(1, 2).__class__", "expected Layer(args)"),
        ("Conv3x3(4)", "unknown torch.nn layer"),
        ("Linear(1, 2, 3, 4, 5)", "Linear(1, 2, 3, 4, 5)"),
    ],
)
def test_bad_specs_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        arch.parse_spec(spec)


@pytest.mark.parametrize("text", ["3x32", "3 x 32", "0x4", "-1x3", "", "axb"])
def test_parse_shape(text):
    if text in ("3x32", "3 x 32"):
        assert arch.parse_shape(text) == (3, 32)
    else:
        with pytest.raises(UsageError, match="malformed shape"):
            arch.parse_shape(text)


def test_shape_failure_names_the_layer():
    with pytest.raises(UsageError, match=r"layer 'fc1' \(Linear\) failed on input 144"):
        count_model(arch.create_model("tutorial"), (3, 24, 24))
