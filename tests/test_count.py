"""Counts against hand-worked formulas and independent oracles (sum of numel, fvcore, torch)."""

import math

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from ablate import arch, count, machine
from ablate.count import build_meta, count_meta, count_model
from ablate.errors import UsageError


def torchvision(name):
    """A torchvision model built on the meta device (no weights: cheap), its input shape, and
    its parameters' total by the independent oracle sum(p.numel())."""
    with torch.device("meta"):
        model, shape = arch.load_model(name)
    return model, shape, sum(p.numel() for p in model.parameters())


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
    one = count_model(arch.MODELS.get("tutorial").build(), (3, 32, 32))
    four = count_model(arch.MODELS.get("tutorial").build(), (3, 32, 32), batch=4)
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
    linear = count_model(arch.MODELS.get("tutorial").build(activation="none", fc1_features=240), (3, 32, 32))
    assert not any(r.type == "ReLU" for r in linear.rows)
    assert {r.layer: r.params for r in linear.rows}["fc1"] == 400 * 240 + 240
    wide = count_model(arch.MODELS.get("tutorial").build(conv1_channels=36), (3, 32, 32))
    assert {r.layer: r.params for r in wide.rows}["conv2"] == 16 * 36 * 25 + 16


@pytest.mark.parametrize("entry", arch.registered_models(), ids=lambda e: e.name)
def test_every_registered_model_counts_the_same_on_meta_and_real(entry):
    model = entry.build()
    real = count_model(model, entry.input_shape, training=True, real=True)
    meta = count_meta(entry.build, entry.input_shape, training=True)
    assert real.params == sum(p.numel() for p in model.parameters())
    assert real.params == sum(r.params for r in real.rows)
    assert meta.frame().equals(real.frame())
    assert (meta.activation_bytes, meta.backward_flops) == (real.activation_bytes, real.backward_flops)
    out = model(torch.zeros(2, *entry.input_shape)).shape
    assert out == ((2, *entry.input_shape) if entry.name == "autoencoder" else (2, 10))


def test_resnet18_counts_the_same_on_meta_and_real():
    model, shape = arch.load_model("resnet18")
    real = count_model(model, shape, training=True, real=True)
    meta = count_meta(lambda: arch.load_model("resnet18")[0], shape, training=True)
    assert meta.frame().equals(real.frame())
    assert (meta.activation_bytes, meta.params) == (real.activation_bytes, real.params)
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model is left as it was


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
    first, second, last = counts.rows
    assert (first.params, first.shared, second.params, second.shared, second.biases) == (72, 0, 8, 64, 8)
    assert (last.params, last.trainable) == (18, 0)
    assert sum(r.params for r in counts.rows) == counts.params


class TiedLanguageModel(nn.Module):
    """An embedding tied to the output layer, a layer called twice, a parameter never used."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight
        self.spare = nn.Parameter(torch.zeros(3))

    def forward(self, x):  # x: B x 7 token ids (as floats)
        return self.head(self.body(self.body(self.embed(x.long()))))


def test_tied_weight_shared_layer_and_unused_parameter_each_in_one_row():
    model = TiedLanguageModel()
    counts = count_model(model, (7,))
    rows = [(r.layer, r.output_shape, r.weights, r.biases, r.params, r.shared) for r in counts.rows]
    assert rows == [
        ("embed", "7x16", 800, 0, 800, 0),
        ("body", "7x16", 256, 16, 272, 0),
        ("body", "7x16", 0, 0, 0, 272),  # the second call: shared, not counted again
        ("head", "7x50", 0, 0, 0, 800),  # the tied weight is the embedding's
        ("(model)", "not used", 3, 0, 3, 0),
    ]
    assert counts.params == sum(p.numel() for p in model.parameters()) == 800 + 272 + 3
    assert counts.params == sum(r.params for r in counts.rows)
    assert counts.uncounted == {}


# ---------------------------------------------------------------- every parameter in one row


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "inception_v3", "convnext_tiny", "maxvit_t", "googlenet"])
def test_rows_sum_to_the_total(name):
    model, shape, total = torchvision(name)
    counts = count_model(model, shape)
    assert counts.params == total
    assert sum(r.params for r in counts.rows) == total
    assert counts.frame()["params"].sum() == total
    assert counts.uncounted == {}


def test_functionally_used_parameters_belong_to_the_code_that_used_them():
    vit, shape, _ = torchvision("vit_b_16")
    rows = {r.layer: r for r in count_model(vit, shape).rows}
    attention = rows["encoder.layers.encoder_layer_0.self_attention"]
    d = 768  # in_proj (3d x d and 3d) and out_proj (d x d and d), used by F.multi_head_attention_forward
    assert (attention.weights, attention.biases) == (3 * d * d + d * d, 3 * d + d)
    assert not any(".out_proj" in layer for layer in rows)
    assert rows["(model)"].params == d  # the class token, used by VisionTransformer.forward
    assert rows["encoder"].params == 197 * d  # the position embedding
    swin, shape, _ = torchvision("swin_t")
    rows = {r.layer: r for r in count_model(swin, shape).rows}
    c, heads, window = 96, 3, 7  # qkv and proj, used by shifted_window_attention, and the bias table
    table = (2 * window - 1) ** 2 * heads
    assert rows["features.1.0.attn"].weights == c * 3 * c + c * c
    assert rows["features.1.0.attn"].biases == 3 * c + c + table  # a name containing "bias" is a bias


@pytest.mark.parametrize("fake", [True, False], ids=["fake", "real"])
def test_a_pruned_modules_parameters_and_mask_product_are_on_its_own_row(fake):
    """torch.nn.utils.prune keeps `weight_orig` (a parameter) and `weight_mask` (a buffer) and
    makes the weight in a forward pre-hook: all of it is the pruned module's."""
    from torch.nn.utils import prune

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    prune.l1_unstructured(model[0], "weight", 0.5)
    prune.random_unstructured(model[3], "bias", 0.5)
    counts = count_model(model, (1, 8, 8), real=not fake)
    rows = {r.layer: r for r in counts.rows}
    assert set(rows) == {"0", "1", "2", "3"}  # nothing charged to the Sequential
    assert (rows["0"].weights, rows["0"].biases, rows["0"].params) == (36, 4, 40)
    assert (rows["3"].weights, rows["3"].biases) == (144 * 10, 10)
    assert rows["0"].flops == 2 * (4 * 6 * 6) * 9 + 36  # 2 a multiply-add (bias included), the weight times its mask
    assert rows["3"].flops == 2 * 144 * 10 + 10  # and the bias times its mask
    assert counts.params == 40 + 1450


def test_modules_that_did_not_run_get_rows_of_their_own():
    model, shape, total = torchvision("inception_v3")
    counts = count_model(model, shape)
    not_run = [r for r in counts.rows if r.output_shape == "not run"]
    assert {r.layer.split(".")[0] for r in not_run} == {"AuxLogits"}  # eval mode: no auxiliary head
    assert sum(r.params for r in not_run) == sum(p.numel() for p in model.AuxLogits.parameters())
    assert all(r.macs == r.flops == r.activations == 0 for r in not_run)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "efficientnet_b0", "mobilenet_v3_small", "convnext_tiny"])
def test_modern_torchvision_models_leave_no_operator_uncounted(name):
    model, shape, total = torchvision(name)
    counts = count_model(model, shape, training=True)
    assert counts.uncounted == {}  # forward and backward
    assert counts.params == total
    assert counts.flops > 2 * counts.macs  # products plus the element-wise work around them
    assert 1.8 * counts.flops < counts.backward_flops < 2.2 * counts.flops


def _fvcore_macs(model, shape):
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, *shape))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.by_module()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
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
    resnet = count_model(*torchvision("resnet18")[:2])
    assert resnet.params == 11_689_512
    assert math.isclose(resnet.macs, 1.814e9, rel_tol=1e-3)
    assert any(r.type == "BasicBlock" and r.flops for r in resnet.rows), "residual adds are counted"
    vgg, vgg_shape, _ = torchvision("vgg16")
    counts = count_model(vgg, vgg_shape)
    assert counts.params == 138_357_544
    fc = sum(r.params for r in counts.rows if r.type == "Linear")
    assert fc / counts.params > 0.85  # the three fc layers hold most of VGG16's weights
    assert not counts.uncounted


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
        count_model(arch.MODELS.get("tutorial").build(), (3, 24, 24))


# ---------------------------------------------------------------- recurrent layers


class Recurrent(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.rnn = layer

    def forward(self, x):
        return self.rnn(x)[0]


def lstm_by_hand():
    # LSTM(10, 20, 2 layers) over 5 time steps: 4 gates of 20 units; layer 1 reads 10 inputs,
    # layer 2 reads layer 1's 20; each reads its own 20 hidden state back.
    steps, gates, hidden = 5, 4, 20
    macs = flops = 0
    for inputs in (10, 20):
        products = gates * hidden * (inputs + hidden)  # W_ih x and W_hh h
        macs += products
        flops += 2 * products + gates * hidden  # + one add joining the two products
        flops += 9 * hidden  # 3 sigmoids, tanh, c = f*c + i*g (3), h = o*tanh(c) (2)
    return steps * macs, steps * flops


def gru_by_hand():
    # GRU(8, 16), bidirectional, batch first, 5 steps: 3 gates of 16 units, 2 directions
    steps, gates, hidden, inputs, directions = 5, 3, 16, 8, 2
    products = gates * hidden * (inputs + hidden)
    flops = 2 * products + gates * hidden + 7 * hidden  # 2 sigmoids, tanh, r*(..), h = n + z*(h - n) (3)
    return steps * directions * products, steps * directions * flops


@pytest.mark.filterwarnings("ignore:TF32")
@pytest.mark.parametrize("mkldnn", [True, False])
def test_lstm_and_gru_by_hand_on_every_backend(mkldnn):
    with torch.backends.mkldnn.flags(enabled=mkldnn):  # two different sets of operators
        lstm = count_model(Recurrent(nn.LSTM(10, 20, num_layers=2)), (5, 10), training=True, real=True)
        gru = count_model(Recurrent(nn.GRU(8, 16, bidirectional=True, batch_first=True)), (5, 8),
                          training=True)
    (row,) = lstm.rows
    assert (row.macs, row.flops) == lstm_by_hand()
    assert (row.weights, row.biases) == (4 * 20 * (10 + 20) + 4 * 20 * (20 + 20), 2 * 2 * 4 * 20)
    assert row.backward_flops == 2 * row.flops
    (row,) = gru.rows
    assert (row.macs, row.flops) == gru_by_hand()
    assert row.biases == 2 * 2 * 3 * 16  # bias_ih_l0, bias_hh_l0 and their _reverse
    assert lstm.uncounted == gru.uncounted == {}


def test_recurrent_cells_and_no_bias_by_hand():
    cell = count_model(nn.Sequential(nn.LSTMCell(10, 20)), (10,)).rows[0]
    assert (cell.macs, cell.flops) == (4 * 20 * 30, 2 * 4 * 20 * 30 + 4 * 20 + 9 * 20)
    rnn = count_model(Recurrent(nn.RNN(5, 7, bias=False)), (3, 5)).rows[0]
    assert (rnn.macs, rnn.flops) == (3 * 7 * 12, 3 * (2 * 7 * 12 - 7 + 7))  # 2K - 1 per product


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_recurrent_counts_the_same_on_meta_and_real():
    build = lambda: Recurrent(nn.LSTM(6, 12, proj_size=4))  # noqa: E731
    meta = count_meta(build, (5, 6), training=True)
    real = count_model(build(), (5, 6), training=True, real=True)
    assert meta.frame().equals(real.frame())
    row = meta.rows[0]  # a projection to 4: the state fed back has 4 values
    assert row.macs == 5 * (4 * 12 * (6 + 4) + 12 * 4)


# ---------------------------------------------------------------- backward


def test_backward_of_a_first_conv_is_its_weight_and_bias_gradients():
    cin, cout, side = 4, 6, 8
    counts = count_model(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1)), (cin, side, side), training=True)
    macs = cout * side * side * cin * 9
    # no input gradient for the image; weight gradient: the forward's MACs; bias: a sum of 64 per channel
    assert counts.rows[0].backward_flops == 2 * macs + cout * (side * side - 1)


def test_backward_of_inner_conv_and_linear_layers_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3, bias=False), nn.Flatten(),
                          nn.Linear(5 * 6 * 6, 7), nn.Linear(7, 3, bias=False))
    counts = count_model(model, (3, 10, 10), batch=2, training=True)
    conv1, relu, conv2, flatten, fc1, fc2 = counts.rows
    assert conv1.backward_flops == 2 * conv1.macs + 2 * (4 * 8 * 8) - 4  # weight + bias (2 images)
    assert relu.backward_flops == 2 * 4 * 8 * 8  # one per element
    assert conv2.backward_flops == 2 * 2 * conv2.macs  # input and weight gradients, no bias
    assert fc1.backward_flops == 2 * 2 * (2 * 180 * 7) + (2 * 7 - 7)  # input, weight; bias: sum of 2
    assert fc2.backward_flops == 2 * 2 * (2 * 7 * 3)
    assert counts.backward_flops == sum(r.backward_flops for r in counts.rows)


def test_backward_of_norms_pools_and_activations_by_hand():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.AvgPool2d(2), nn.Tanh(), nn.Flatten(),
                          nn.LayerNorm(64), nn.AdaptiveAvgPool1d(3), nn.LayerNorm(3, elementwise_affine=False))
    counts = count_model(model, (2, 10, 10), training=True)
    conv, group, pool, tanh, flatten, layer, adaptive, plain = counts.rows
    assert group.backward_flops == 2 * 5 * 4 * 8 * 8  # norms: twice their forward
    assert pool.backward_flops == 4 * 4 * 4 * 4  # as its forward: k*k per output element
    assert tanh.backward_flops == 2 * 64  # the derivative and the product
    assert layer.backward_flops == 2 * 5 * 64 and plain.backward_flops == 2 * 4 * 3
    assert adaptive.backward_flops == 22 + 22 + 22  # 64 -> 3: windows 22, 22, 22 (they overlap)
    assert flatten.backward_flops == 0 and counts.uncounted == {}


def test_backward_products_agree_with_torch():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, bias=False),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 10, bias=False))
    x = torch.zeros(2, 3, 16, 16)
    with FlopCounterMode(display=False) as forward_only:
        model(x)
    with FlopCounterMode(display=False) as both:
        model(x).sum().backward()
    counts = count_model(model, (3, 16, 16), batch=2, training=True)
    products = sum(r.backward_flops for r in counts.rows if r.type in ("Conv2d", "Linear"))
    assert products == both.get_total_flops() - forward_only.get_total_flops()


def test_frozen_layers_compute_no_weight_gradient():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    model[1].requires_grad_(False)  # the gradient reaches no trainable weight through it but fc 0
    counts = count_model(model, (10,), training=True)
    assert counts.rows[1].backward_flops == 2 * 100  # input gradient only
    model[0].requires_grad_(False)
    assert count_model(model, (10,), training=True).backward_flops == 0


# ---------------------------------------------------------------- activations and memory


def test_activations_and_kept_memory_of_lenet5_by_hand():
    counts = count_model(*arch.load_model("lenet5"))
    assert [r.activations for r in counts.rows] == [4704, 4704, 1176, 1600, 1600, 400, 400, 120, 120, 84, 84, 10]
    # what the backward needs, once per tensor: the outputs of the 4 tanh (28x28x6, 10x10x16, 120, 84),
    # the inputs of conv2 (pool1: 14x14x6) and fc1 (pool2: 400); conv1's input is the image, and
    # the pools' and linears' other inputs are tanh outputs already kept
    assert counts.activation_bytes == 4 * (4704 + 1600 + 120 + 84 + 1176 + 400)
    assert count_model(*arch.load_model("lenet5"), batch=3).activation_bytes == 3 * counts.activation_bytes
    model, shape = arch.load_model("lenet5")
    double = count_model(model.double(), shape)  # kept at the parameters' dtype
    assert (double.dtype, double.activation_bytes, double.param_bytes) == (
        "float64", 2 * counts.activation_bytes, 2 * counts.param_bytes)


# ---------------------------------------------------------------- receptive fields


def fields(model, shape):
    return [(r.layer, r.receptive_field) for r in count_model(model, shape).rows]


def test_receptive_fields_of_the_tutorial_net():
    rows = dict(fields(arch.MODELS.get("tutorial").build(), (3, 32, 32)))
    # conv 5x5: 5; max-pool 2: 5 + 1 x 1 = 6, stride 2; conv 5: 6 + 4 x 2 = 14; pool: 14 + 1 x 2 = 16
    layers = ("conv1", "act1", "pool1", "conv2", "pool2")
    assert [rows[k] for k in layers] == ["5 (1)", "5 (1)", "6 (2)", "14 (2)", "16 (4)"]
    assert rows["flatten"] == rows["fc1"] == rows["fc3"] == ""  # after a flatten: no window


def test_receptive_fields_of_dilated_strided_and_oblong_convs():
    dilated = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, 3))
    assert fields(dilated, (1, 20, 20)) == [("0", "5 (1)"), ("1", "7 (1)")]  # 1 + 2 x 2; 5 + 2
    strided = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3), nn.MaxPool2d(3, stride=2))
    assert fields(strided, (1, 20, 20)) == [("0", "3 (2)"), ("1", "7 (2)"), ("2", "11 (4)")]  # 3 + 2 x 2; 7 + 2 x 2
    oblong = nn.Sequential(nn.Conv2d(1, 1, (1, 7)), nn.Conv2d(1, 1, (7, 1), stride=(2, 1)))
    assert fields(oblong, (1, 20, 20)) == [("0", "1x7 (1)"), ("1", "7 (2x1)")]  # height x width if they differ


def test_receptive_field_through_residuals_and_attention():
    rows = dict(fields(*torchvision("resnet18")[:2]))
    assert rows["conv1"] == "7 (2)" and rows["maxpool"] == "11 (4)"
    assert rows["layer1.0"] == "27 (4)"  # the block's output: the wider of its branches
    vit = dict(fields(*torchvision("vit_b_16")[:2]))
    assert vit["conv_proj"] == "16 (16)"
    assert vit["encoder.layers.encoder_layer_0.self_attention"] == ""  # attention: not defined
    assert fields(nn.Sequential(nn.Linear(4, 4)), (4,)) == [("0", "")]  # no convolution: no column


# ---------------------------------------------------------------- any size, no memory


def real_outputs(model: nn.Module) -> list:
    """Records, for every module of `model`, whether its forward made real tensors (with data),
    not fake or meta ones (shapes only)."""
    seen = []

    def hook(module, args, output):
        seen.append(any(not (isinstance(t, FakeTensor) or t.is_meta) for t in _tensors(output)))

    for module in model.modules():
        module.register_forward_hook(hook)
    return seen


def _tensors(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def test_huge_models_and_inputs_count_without_memory():
    """Nothing big is allocated: the weights stay on the meta device and every layer computes
    on fake tensors (shapes, no data); no wall-clock limit (timings: benchmarks/)."""
    built, real = [], []

    def keep(build):
        def make():
            model = build()
            built.append(model)
            real.append(real_outputs(model))
            return model
        return make

    vit = count_meta(keep(lambda: arch.load_model("vit_h_14")[0]), (3, 224, 224))
    assert vit.params == 632_045_800 == sum(r.params for r in vit.rows)
    big = count_meta(keep(lambda: nn.Sequential(nn.Linear(100_000, 100_000))), (100_000,))  # 40 GB of weights
    assert big.params == 100_000 * 100_001 and big.param_bytes == 4 * big.params
    assert len(built) == 2 and all(t.is_meta for model in built for t in (*model.parameters(), *model.buffers()))
    assert all(seen and not any(seen) for seen in real)  # every module ran, none on real tensors
    conv = nn.Sequential(nn.Conv2d(3, 8, 3))
    seen = real_outputs(conv)
    image = count_model(conv, (3, 4096, 4096), training=True)  # 2 GB of activations
    assert image.rows[0].activations == 8 * 4094 * 4094
    assert seen and not any(seen)  # real weights, fake activations
    assert all(not p.is_meta for p in conv.parameters())  # and the model is left as it was


class TolistInInit(nn.Module):
    """A builder that needs real values (as torchvision's RegNets): no torch.device("meta")."""

    def __init__(self):
        super().__init__()
        widths = torch.tensor([10.0, 20.0]).int().tolist()
        self.fc = nn.Linear(widths[0] * 5_000, widths[1] * 5_000)  # 10^9 weights: 4 GB

    def forward(self, x):
        return self.fc(x)


def test_a_builder_that_needs_real_values_still_gets_meta_parameters():
    with pytest.raises(NotImplementedError, match="meta"), torch.device("meta"):
        TolistInInit()  # .tolist() of a meta tensor: the first way to build on meta fails
    assert all(p.is_meta for p in build_meta(TolistInInit).parameters())  # the second does not
    counts = count_meta(TolistInInit, (50_000,))
    assert counts.params == 50_000 * 100_000 + 100_000


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return y[y > 0]  # a shape that depends on the values


class BigDataDependent(DataDependent):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(100_000, 100_000)  # 40 GB


def test_data_dependent_models_fall_back_to_a_real_forward(monkeypatch):
    monkeypatch.setattr(machine, "available_memory", lambda: 8 * 10 ** 9)  # whatever this machine has free
    counts = count_meta(DataDependent, (4,))
    assert (counts.rows[0].macs, counts.params) == (16, 20)
    with pytest.raises(UsageError, match=r"cannot count on fake tensors.*input alone needs 1.6e\+03 GB \(8 GB of"):
        count_meta(DataDependent, (100_000, 1_000_000, 4))
    with pytest.raises(UsageError, match=r"cannot count on fake tensors.*its weights need 40 GB \(8 GB of memory"):
        count_meta(BigDataDependent, (100_000,))


def test_a_model_on_the_meta_device_is_counted_as_it_is():
    with torch.device("meta"):
        model = arch.MODELS.get("threeconv").build()
    counts = count_model(model, (3, 32, 32))
    assert counts.params == 1_191_170 and counts.param_bytes == 4 * 1_191_170
    assert all(p.is_meta for p in model.parameters())
    with torch.device("meta"):
        data_dependent = DataDependent()
    with pytest.raises(UsageError, match="cannot count on fake tensors"):  # and no real weights
        count_model(data_dependent, (4,))


# ---------------------------------------------------------------- other counters


def test_compare_with_fvcore_and_flop_counter_mode():
    model, shape = arch.load_model("threeconv")
    counts = count_model(model, shape, compare=True)
    for row in counts.rows:
        if row.type in ("Conv2d", "Linear"):
            assert row.fvcore_flops == row.macs  # one flop per fused multiply-add
            assert row.torch_flops == 2 * row.macs  # two per MAC, bias or not
        elif row.type in ("ReLU", "MaxPool2d"):
            assert row.fvcore_flops == row.torch_flops == 0 < row.flops
    assert counts.compared["fvcore"] == sum(r.fvcore_flops for r in counts.rows)
    assert counts.compared["FlopCounterMode"] == sum(r.torch_flops for r in counts.rows)
    with pytest.raises(UsageError, match="needs real weights"):
        count_model(torchvision("resnet18")[0], (3, 32, 32), compare=True)


@pytest.mark.parametrize("name", ["tutorial", "threeconv", "resnet18", "lenet5", "autoencoder"])
def test_a_small_model_counted_on_a_real_pass_gives_the_fake_passs_counts(name):
    """count_meta counts a small model on a real forward pass (no fake tensors, whose import of
    torch._dynamo costs more than the pass): every row, FLOP and byte as on fake tensors, and
    the global random state as it was."""
    build = lambda: arch.load_model(name)[0]  # noqa: E731
    shape = arch.load_model(name)[1]
    for training in (False, True):
        before = torch.get_rng_state()
        real = count_meta(build, shape, training=training, real_below=count.real_below())
        assert torch.equal(before, torch.get_rng_state())
        fake = count_meta(build, shape, training=training)  # real_below 0: the fake pass
        assert real.frame().equals(fake.frame()), (name, training)
        assert (real.params, real.flops, real.activation_bytes, real.backward_flops) == \
            (fake.params, fake.flops, fake.activation_bytes, fake.backward_flops)


def test_a_studys_checks_import_no_dynamo():
    """The checks count each model on a real pass: no FakeTensorMode, so no torch._dynamo for
    counting (training's torch.optim imports it all the same, at its first step)."""
    import subprocess
    import sys

    code = ("import sys; from ablate.execution import checks; from ablate.study.planning import resolve; "
            "from ablate.config import RunConfig; c = resolve(RunConfig(model='threeconv')); "
            "checks.model_size(c, (3, 32, 32), 10); checks.training_flops(c, (3, 32, 32), 10); "
            "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
