"""`ablate params` and `ablate list` through typer's CliRunner."""

import io
import json
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from ablate import arch
from ablate.cli import app
from ablate.count import COLUMNS
from ablate.results.files import read_metadata
from ablate.study import studies

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_params_table_shows_layers_and_totals():
    result = invoke("params", "lenet5")
    assert result.exit_code == 0, result.output
    for text in ("conv1", "AvgPool2d", "16x5x5", "61,706", "416,520", "845,852"):
        assert text in result.stdout


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_params_out_round_trip(tmp_path, suffix):
    path = tmp_path / f"counts{suffix}"
    result = invoke("params", "threeconv", "--out", path)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    assert list(frame.columns) == COLUMNS
    assert frame["params"].sum() == 1_191_170
    assert frame.loc[frame.layer == "pool3", "receptive_field"].item() == "36 (8)"
    assert "total" not in set(frame["layer"])
    assert frame.loc[frame.layer == "conv1", "output_shape"].item() == "32x32x32"
    if suffix == ".parquet":
        meta = read_metadata(path)
        assert meta["model"] == "threeconv" and meta["torch_version"] and "params" in meta["command"]


def test_params_json_and_csv_on_stdout():
    rows = json.loads(invoke("params", "Linear(3)", "--input", "5", "--format", "json").stdout)
    assert rows == [{
        "layer": "0", "type": "Linear", "input_shape": "5", "output_shape": "3", "weights": 15,
        "biases": 3, "params": 18, "shared": 0, "trainable": 18, "activations": 3, "receptive_field": "",
        "macs": 15, "flops": 30,
    }]
    csv = invoke("params", "lenet5", "--format", "csv").stdout.splitlines()
    assert csv[0] == ",".join(COLUMNS) and len(csv) == 13


def test_params_spec_from_the_issue():
    result = invoke("params", "Conv2d(20, 4, stride=2, padding=1), MaxPool2d(3, stride=1)",
                    "--input", "50x12x12", "--format", "csv")
    assert result.exit_code == 0, result.output
    # shared 0; 720 activations; a 4x4 window with stride 2
    assert "0,Conv2d,50x12x12,20x6x6,16000,20,16020,0,16020,720,4 (2),576000,1152000" in result.stdout


def test_params_batch():
    one = json.loads(invoke("params", "tutorial", "--format", "json").stdout)
    eight = json.loads(invoke("params", "tutorial", "--batch", 8, "--format", "json").stdout)
    assert [r["macs"] * 8 for r in one] == [r["macs"] for r in eight]


def test_params_user_module(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n"
        "class Tiny(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Conv2d(3, 4, 3, bias=False)\n"
        "    def forward(self, x):\n"
        "        return self.body(x).relu()\n"
        "def make():\n"
        "    return Tiny()\n"
    )
    monkeypatch.chdir(tmp_path)
    for target in ("mynets:Tiny", "mynets:make"):
        rows = json.loads(invoke("params", target, "--input", "3x8x8", "--format", "json").stdout)
        body, root = rows
        assert (body["layer"], body["macs"], body["flops"]) == ("body", 4 * 36 * 27, 4 * 36 * 53)
        assert (root["layer"], root["type"], root["flops"]) == ("(model)", "Tiny", 4 * 36)


def test_warning_for_operators_without_rule(tmp_path, monkeypatch):
    (tmp_path / "oddnet.py").write_text(
        "import torch\nclass Odd(torch.nn.Module):\n"
        "    def forward(self, x):\n        return torch.cumsum(x, 1)\n"
    )
    monkeypatch.chdir(tmp_path)
    result = invoke("params", "oddnet:Odd", "--input", "4")
    assert result.exit_code == 0
    assert "warning: no FLOP rule for aten.cumsum (1 calls)" in result.stderr


BROKEN_NETS = """
import torch
from torch import nn


class KeyNet(nn.Module):  # its own code fails, between its layers
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return {"a": self.fc(x.flatten(1)[:, :4])}["b"]


class Inner(nn.Module):
    def forward(self, x):
        raise LookupError("no such stage")


class Deep(nn.Module):  # a layer of the user's fails inside a container
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3), Inner())

    def forward(self, x):
        return self.body(x)


class Mine(Exception):
    pass


class Custom(nn.Module):  # the user's own exception, with no message
    def forward(self, x):
        raise Mine()


class LazyUnused(nn.Module):  # a lazy layer the forward never calls: no size
    def __init__(self):
        super().__init__()
        self.conv = nn.LazyConv2d(4, 3)
        self.spare = nn.LazyLinear(10)

    def forward(self, x):
        return self.conv(x)


class Lazy(nn.Module):  # lazy layers the forward sizes: counted
    def __init__(self):
        super().__init__()
        self.conv = nn.LazyConv2d(4, 3)
        self.fc = nn.LazyLinear(10)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))
"""


def broken_nets(tmp_path, monkeypatch):
    (tmp_path / "brokennets.py").write_text(BROKEN_NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "brokennets", raising=False)  # this test's file, not another's
    arch.model_source.cache_clear()


@pytest.mark.parametrize("target,message", [
    ("KeyNet", "KeyNet.forward failed on input 1x8x8: KeyError: 'b' (at brokennets.py, line 12)"),
    ("Deep", "layer 'body.1' (Inner) failed on input 2x6x6 (model input 1x8x8): LookupError: no such stage "
             "(at brokennets.py, line 17)"),
    ("Custom", "Custom.forward failed on input 1x8x8: Mine (at brokennets.py, line 35)"),
    ("LazyUnused", "'spare.weight' is still uninitialised after a forward pass on input 1x8x8 (a lazy module its "
                   "forward never calls)"),
])
@pytest.mark.parametrize("compare", [False, True], ids=["fake", "real"])
def test_a_user_module_that_fails_to_count_is_one_line(tmp_path, monkeypatch, target, message, compare):
    broken_nets(tmp_path, monkeypatch)
    result = invoke("params", f"brokennets:{target}", "--input", "1x8x8", *(["--compare"] if compare else []))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"ablate params: error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_lazy_layers_a_forward_sizes_are_counted(tmp_path, monkeypatch):
    broken_nets(tmp_path, monkeypatch)
    rows = json.loads(invoke("params", "brokennets:Lazy", "--input", "1x8x8", "--format", "json").stdout)
    assert [(r["layer"], r["params"]) for r in rows] == [("conv", 4 * 9 + 4), ("fc", 4 * 36 * 10 + 10)]


def test_list_models():
    result = invoke("list", "models", "--json")
    listed = {m["name"]: m["source"] for m in json.loads(result.stdout)}
    assert {listed[m] for m in ("lenet5", "tutorial", "threeconv")} == {"ablate"}
    assert listed["resnet18"] == "torchvision"
    assert "lenet5" in invoke("params", "--list").stdout


def test_list_without_a_topic_lists_the_studies():
    rows = json.loads(invoke("list", "--json").stdout)
    assert [row["name"] for row in rows] == list(studies.STUDIES)


@pytest.mark.parametrize(
    "args,message",
    [
        (["params", "lenet6"], "unknown model 'lenet6' (did you mean 'lenet5'"),
        (["params", "resnet19"], "ablate list models"),
        (["params", "tutorial", "--input", "3x8x8"], "image size 8 is too small for kernel_size 5 in this net (needs >= 16)"),
        (["params", "Conv2d(6, 5), Conv2d(16, 5)", "--input", "3x8x8"], "layer '1' (Conv2d) failed on input 6x4x4"),
        (["params", "tutorial", "--input", "3x32"], "failed"),
        (["params", "lenet5", "--input", "1xax32"], "malformed shape '1xax32'"),
        (["params", "Conv2d(20, 4", "--input", "3x8x8"], "malformed layer spec at column"),
        (["params", "Conv2d(20, 4)"], "give one with --input"),
        (["params", "nosuchmodule:Net", "--input", "3"], "cannot import 'nosuchmodule'"),
        (["params", "lenet5", "--format", "xml"], "'xml' is not one of"),
        (["params", "lenet5", "--batch", "0"], "--batch"),
        (["params", "lenet5", "--out", "counts.txt"], "must end in .parquet or .csv"),
        (["params"], "give a MODEL"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_unwritable_out_keeps_nothing_half_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    result = invoke("params", "lenet5", "--out", blocker / "counts.parquet")
    assert result.exit_code == 2 and "cannot write" in result.stderr
    assert blocker.read_text() == "keep me"


def test_help_states_the_convention():
    result = invoke("params", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for rule in ("2K - 1 without", "k*k - 1", "G*H*(I + H) MACs", "LSTM 9*H", "backward (--training)",
                 "2 FLOPs per MAC", "not run"):
        assert rule in text, rule


def test_params_training_adds_backward_and_a_training_step():
    result = invoke("params", "lenet5", "--training")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "backward_flops" in text and "1,456,482" in text  # the backward total
    assert "per image: forward 846 kFLOPs, backward 1.46 MFLOPs, training step 2.3 MFLOPs" in text
    assert "memory: parameters 247 kB, activations kept for a training step 32.3 kB per image (float32)" in text
    rows = json.loads(invoke("params", "lenet5", "--training", "--format", "json").stdout)
    assert rows[0]["backward_flops"] == 2 * 117_600 + 6 * (28 * 28 - 1)  # conv1: weight and bias gradients
    assert "backward_flops" not in json.loads(invoke("params", "lenet5", "--format", "json").stdout)[0]


def test_totals_line_puts_a_space_before_the_unit():
    result = invoke("params", "ReLU()", "--input", "3x4x4")
    assert result.exit_code == 0, result.output
    assert "0 MACs, 48 FLOPs per image" in result.stdout


def test_every_parameter_in_one_row_from_the_command_line():
    frame = pd.read_csv(io.StringIO(invoke("params", "vit_b_16", "--format", "csv").stdout))
    assert frame["params"].sum() == 86_567_656
    frame = pd.read_csv(io.StringIO(invoke("params", "inception_v3", "--format", "csv").stdout))
    assert frame["params"].sum() == 27_161_264
    assert (frame["output_shape"] == "not run").sum() == 5  # the auxiliary head, in eval mode


def test_huge_inputs_and_models_count_in_seconds():
    result = invoke("params", "Conv2d(3, 8, 3)", "--input", "3x999999x999999", "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    side = (999_999 - 8) // 3 + 1  # 3 channels out, kernel 8, stride 3
    assert row["output_shape"] == f"3x{side}x{side}" and row["macs"] == 3 * side * side * 3 * 64
    assert row["receptive_field"] == "8 (3)"
    result = invoke("params", "vit_h_14", "--training")
    assert result.exit_code == 0 and "632,045,800" in result.stdout


def test_a_forward_that_cannot_fit_is_exit_2_with_the_memory_it_needs(tmp_path, monkeypatch):
    (tmp_path / "picky.py").write_text(
        "import torch\nclass Picky(torch.nn.Module):\n"
        "    def forward(self, x):\n        return x[x > 0]\n"
    )
    monkeypatch.chdir(tmp_path)
    result = invoke("params", "picky:Picky", "--input", "100000x1000000x4")
    assert result.exit_code == 2, result.output
    assert "cannot count on fake tensors" in result.stderr and "its input alone needs 1.6e+03 GB" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert invoke("params", "picky:Picky", "--input", "3x4x4").exit_code == 0  # small: a real forward


def test_params_compare():
    result = invoke("params", "tutorial", "--compare")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "fvcore_flops" in text and "torch_flops" in text
    assert "fvcore 652 kFLOPs (0.50 x ablate's), FlopCounterMode 1.3 MFLOPs (0.99 x ablate's)" in text
    assert "fvcore counts a multiply-add as one flop" in text


SIZED_NETS = """
from torch import nn


class Net(nn.Module):  # made for 1x28x28 by default; a study builds it for its data
    def __init__(self, in_channels=1, num_classes=10, image_size=28, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.fc = nn.Linear(width * image_size * image_size, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))
"""


def test_params_of_a_users_model_takes_arguments_its_default_input_and_the_studys(tmp_path, monkeypatch):
    (tmp_path / "sizednets.py").write_text(SIZED_NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "sizednets", raising=False)
    arch.model_source.cache_clear()

    def total(*args):
        result = invoke("params", *args, "--format", "json")
        assert result.exit_code == 0, result.output
        return sum(row["params"] for row in json.loads(result.stdout))

    assert total("sizednets:Net") == 1 * 8 * 9 + 8 + 8 * 28 * 28 * 10 + 10  # in_channels=1, image_size=28
    assert total("sizednets:Net(width=2)") == 1 * 2 * 9 + 2 + 2 * 28 * 28 * 10 + 10
    assert total("sizednets:Net(width=2)", "--input", "3x16x16") == 3 * 2 * 9 + 2 + 2 * 16 * 16 * 10 + 10
    for bad, said in (("sizednets:Net(2)", "give the model's arguments by name"),
                      ("sizednets:Net(depth=2)", "does not take depth; it takes width"),
                      ("sizednets:Net(width='x')", "width takes a whole number, got 'x'"),
                      ("sizednets:Net(width=", "malformed arguments")):
        result = invoke("params", bad)
        assert result.exit_code == 2 and said in result.stderr, result.output
    out = tmp_path / "s.parquet"  # a study pads its data and builds the model for it: params counts the same
    study = runner.invoke(app, ["sweep", "--model", "sizednets:Net", "--vary", "width=2,4", "--dataset", "synthetic",
                                "--image-size", "20", "--limit-train", "60", "--limit-test", "30", "--epochs", "1",
                                "--batch-size", "30", "--device", "cpu", "--out", str(out)])
    assert study.exit_code == 0, study.output
    runs = pd.read_parquet(out).drop_duplicates("variant").set_index("width")
    assert set(runs["input_shape"]) == {"3x20x20"}
    for width, row in runs.iterrows():
        assert total(f"sizednets:Net(width={width})", "--input", row["input_shape"]) == row["params"]
    refused = runner.invoke(app, ["linearity", "--model", "sizednets:Net(width=3)", "--dataset", "synthetic"])
    assert refused.exit_code == 2 and "a study sets a model's arguments with `--vary width=...`" in refused.stderr
