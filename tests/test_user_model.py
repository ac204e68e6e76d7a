"""A user's model that cannot train is refused before anything trains, in one line that names the
model and what went wrong: a module that raises on import, a constructor or a forward pass that
raises, an output that is not what the task takes (checked on one batch of real images)."""

import itertools
import sys
import textwrap

import pytest
import torch

from ablate import arch
from ablate.data.datasets import Dataset
from ablate.errors import UsageError
from ablate.execution import checks, runner
from ablate.study import planning
from ablate.study.planning import resolve
from ablate.training.train import RunConfig

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, outputs=None):
        super().__init__()
        {init}
        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4, outputs or num_classes))

    def forward(self, x):
        {forward}
'''
_names = itertools.count()


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """`write(source)` -> "MODULE:Net" for a module of that source in the current directory (a
    name of its own each time: imported modules and model sources are cached)."""
    monkeypatch.chdir(tmp_path)
    written = []

    def write(source=None, init="pass", forward="return self.body(x)"):
        name = f"usermod_{next(_names)}"
        text = source if source is not None else NET.format(init=init, forward=forward)
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
        written.append(name)
        return f"{name}:Net"

    yield write
    arch.model_source.cache_clear()
    checks.model_size.cache_clear()
    for name in written:
        sys.modules.pop(name, None)


def files(root) -> list:
    return sorted(p for p in root.rglob("*") if "__pycache__" not in p.parts)  # the import's own


def refused(ablate, tmp_path, args) -> str:
    """The one error line of a command that must exit 2 having created nothing."""
    before = files(tmp_path)
    result = ablate(args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert files(tmp_path) == before  # no results folder, no file
    return lines[0]


# ---------------------------------------------------------------- import, constructor, forward


@pytest.mark.parametrize("source,error", [
    ("1/0\n", "ZeroDivisionError: division by zero (at {module}.py, line 1)"),
    ("raise RuntimeError('no GPU here\\nsee the docs')\n", "RuntimeError: no GPU here (at {module}.py, line 1)"),
    ("def f(:\n    pass\n", "SyntaxError: "),  # then the message and place Python's version gives
    ("import nosuchdependency_of_ablate\n",
     "ModuleNotFoundError: No module named 'nosuchdependency_of_ablate' (at {module}.py, line 1)"),
    ("import sys\nsys.exit(3)\n", "SystemExit: 3 (at {module}.py, line 2)"),
])
def test_a_module_that_raises_on_import(ablate, tiny, tmp_path, user_module, source, error):
    model = user_module(source)
    module = model.split(":")[0]
    line = refused(ablate, tmp_path, ["linearity", *tiny, "--model", model])
    expected = f"ablate linearity: error: model {model!r}: importing {module!r} raised " + error.format(module=module)
    assert line == expected or (error == "SyntaxError: " and line.startswith(expected) and f"{module}.py" in line)


def test_a_missing_module_is_still_not_found(ablate, tiny, tmp_path, user_module):
    line = refused(ablate, tmp_path, ["linearity", *tiny, "--model", "nosuchmodule_xyz:Net"])
    assert "cannot import 'nosuchmodule_xyz' from the current directory" in line


@pytest.mark.parametrize("study", [["linearity"], ["sweep", "--vary", "lr=0.05,0.1"]])  # with and without stripping
@pytest.mark.parametrize("statement,error", [
    ("raise RuntimeError('constructor broke')", "RuntimeError: constructor broke"),
    ("raise ValueError('bad value')", "ValueError: bad value"),
    ("{}['missing']", "KeyError: 'missing'"),
])
def test_a_constructor_that_raises(ablate, tiny, tmp_path, user_module, study, statement, error):
    model = user_module(init=statement)
    line = refused(ablate, tmp_path, [*study, *tiny, "--model", model])
    module = model.split(":")[0]
    assert line.endswith(f"error: model {model!r} failed to build: {error} (at {module}.py, line 9)"), line


@pytest.mark.parametrize("statement,error", [
    ("raise RuntimeError('forward broke')", "RuntimeError: forward broke"),
    ("return {}['k']", "KeyError: 'k'"),
    ("return self.body(x.flatten(1))", "RuntimeError: Expected 3D (unbatched) or 4D (batched) input"),
])
def test_a_forward_that_raises(ablate, tiny, tmp_path, user_module, statement, error):
    model = user_module(forward=statement)
    line = refused(ablate, tmp_path, ["sweep", *tiny, "--vary", "lr=0.05,0.1", "--model", model])
    assert f"error: model {model!r} failed" in line and "on a batch of 2 synthetic images (3x32x32): " in line
    assert error in line


def test_the_failing_layer_is_named(ablate, tiny, tmp_path, user_module):
    model = user_module(init="self.extra = nn.Linear(3, 3)", forward="return self.extra(self.body(x))")
    line = refused(ablate, tmp_path, ["sweep", *tiny, "--vary", "lr=0.05,0.1", "--model", model])
    assert f"model {model!r} failed in layer 'extra' (Linear) on a batch of 2 synthetic images" in line
    assert "mat1 and mat2 shapes cannot be multiplied" in line


# ---------------------------------------------------------------- outputs against the task


def test_a_classifier_with_the_wrong_number_of_outputs(ablate, tiny, tmp_path, user_module):
    model = user_module(init="outputs = 17")
    line = refused(ablate, tmp_path, ["sweep", *tiny, "--vary", "lr=0.05,0.1", "--model", model])
    assert line == (f"ablate sweep: error: model {model!r} gives outputs of shape (2, 17) for a batch of 2; "
                    "task classify needs (2, 10): one score per class of synthetic")


def test_linearity_names_the_variant(ablate, tiny, tmp_path, user_module):
    model = user_module(init="outputs = 5")
    line = refused(ablate, tmp_path, ["linearity", *tiny, "--model", model])
    assert f"model {model!r} (variant 'original') gives outputs of shape (2, 5) for a batch of 2; " in line


@pytest.mark.parametrize("forward,gives", [
    ("y = self.body(x)\n        return y, y", "gives a tuple of 2 (outputs of shape (2, 10); outputs of shape (2, 10))"),
    ("return {'logits': self.body(x)}", "gives a dict (keys 'logits')"),
    ("return [self.body(x)]", "gives a list of 1 (outputs of shape (2, 10))"),
    ("self.body(x)", "gives None"),
    ("return self.body(x).sum()", "gives a scalar tensor"),
    ("return self.body(x).unsqueeze(1)", "gives outputs of shape (2, 1, 10)"),
    ("return self.body(x).long()", "gives int64 outputs of shape (2, 10)"),
    ("return 3.0", "gives a float"),
])
def test_an_output_that_is_not_class_scores(ablate, tiny, tmp_path, user_module, forward, gives):
    model = user_module(forward=forward)
    line = refused(ablate, tmp_path, ["sweep", *tiny, "--vary", "lr=0.05,0.1", "--model", model])
    assert f"model {model!r} {gives} for a batch of 2; task classify needs " in line, line
    assert line.endswith("(2, 10): one score per class of synthetic")


@pytest.mark.parametrize("forward", ["return torch.zeros(len(x), 10)", "return self.body(x).detach()"])
def test_an_output_no_gradient_reaches(ablate, tiny, tmp_path, user_module, forward):
    model = user_module(forward=forward)
    line = refused(ablate, tmp_path, ["sweep", *tiny, "--vary", "lr=0.05,0.1", "--model", model])
    assert f"model {model!r} gives outputs that depend on no trainable parameter" in line


def test_an_output_only_training_mode_gets_wrong(ablate, tiny, tmp_path, user_module):
    model = user_module(forward="y = self.body(x)\n        return (y, y) if self.training else y")
    line = refused(ablate, tmp_path, ["sweep", *tiny, "--vary", "lr=0.05,0.1", "--model", model])
    assert f"model {model!r} in training mode gives a tuple of 2" in line


@pytest.mark.parametrize("forward", [
    "return self.body(x) * float('nan')",  # diverges: recorded as such, not refused
    "print('forward', tuple(x.shape))\n        return self.body(x)",
    "return self.body(x).double()",
])
def test_models_that_train(ablate, tiny, tmp_path, user_module, forward):
    model = user_module(forward=forward)
    result = ablate(["sweep", *tiny, "--vary", "lr=0.05", "--model", model, "--out", tmp_path / "ok.parquet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ok.parquet").exists()


def test_a_reconstruction_of_another_shape(tiny_data, user_module):
    model = user_module(init="outputs = 10")
    runs = [planning.Run("s", "v", 0, resolve(RunConfig(model=model, task="reconstruct")))]
    with pytest.raises(UsageError) as error:
        checks.check_outputs(runs, tiny_data)
    assert str(error.value) == (f"model {model!r} gives outputs of shape (2, 10) for a batch of 2; task reconstruct "
                                "needs (2, 3, 32, 32): each image rebuilt, the shape of the input (synthetic)")


# ---------------------------------------------------------------- what must still pass, unchanged


def gray(data: Dataset) -> Dataset:
    return Dataset("gray", data.train_x[:, :1], data.train_y, data.test_x[:, :1], data.test_y, data.classes)


@pytest.mark.parametrize("model,task", [
    ("tutorial", "classify"), ("lenet5", "classify"), ("threeconv", "classify"), ("mlp", "classify"),
    ("autoencoder", "reconstruct"), ("latent-mlp", "classify"), ("resnet18", "classify"),
    ("Conv2d(8, 3), ReLU(), Flatten(), Linear(10)", "classify"),  # Lazy layers
])
@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("channels", [3, 1])  # 1: GrayToRGB for torchvision's
def test_ablates_own_and_torchvision_models_pass(tiny_data, model, task, strip, channels):
    data = tiny_data if channels == 3 else gray(tiny_data)
    runs = [planning.Run("s", "v", 0, resolve(RunConfig(model=model, task=task, strip_activations=strip)))]
    state = torch.random.get_rng_state()
    checks.check_outputs(runs, data)
    assert torch.equal(torch.random.get_rng_state(), state)  # no run's numbers change


def test_the_transfer_study_is_not_pretrained_by_the_check(tiny_data, monkeypatch):
    from ablate.training import train

    monkeypatch.setattr(train, "pretrained_encoder", lambda *a: pytest.fail("the check pretrained"))
    config = resolve(RunConfig(model="latent-mlp", dataset="synthetic", pretrain_epochs=1, freeze_encoder=True))
    checks.check_outputs([planning.Run("transfer", "frozen", 0, config)], tiny_data)


def test_one_model_per_configuration(tiny_data, monkeypatch):
    built = []
    real = checks.build_model
    monkeypatch.setattr(checks, "build_model", lambda *a: built.append(a) or real(*a))
    runs = [planning.Run("sweep", f"lr={lr}", seed, resolve(RunConfig(model="tutorial", lr=lr)))
            for lr in (0.01, 0.1, 1.0) for seed in range(3)]
    checks.check_outputs(runs, tiny_data)
    assert len(built) == 2  # on the meta device (its size), then with real weights: once for 9 runs


def test_the_check_changes_no_number(ablate, tiny, tmp_path, numbers, monkeypatch):
    import pandas as pd

    assert ablate(["linearity", *tiny, "--out", tmp_path / "checked.parquet"]).exit_code == 0
    monkeypatch.setattr(runner, "check_outputs", lambda runs, data: None)
    assert ablate(["linearity", *tiny, "--out", tmp_path / "unchecked.parquet"]).exit_code == 0
    checked, unchecked = (pd.read_parquet(tmp_path / f"{n}.parquet")[numbers] for n in ("checked", "unchecked"))
    pd.testing.assert_frame_equal(checked, unchecked, check_exact=True)
