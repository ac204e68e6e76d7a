"""Models: ablate's own registry, torchvision's classifiers, user modules and layer-stack specs.

`load_model(text)` turns any of the four ways of naming a model into an `nn.Module` and its
natural input shape (channels x height x width, no batch dimension).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ablate.errors import UsageError, unknown_name
from ablate.registry import Registry

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    input_shape: Shape
    description: str


MODELS: Registry[ModelEntry] = Registry("model", hint="`ablate list models` lists them all")


def register_model(name: str, input_shape: Shape, description: str):
    """Add a model builder to the registry under `name`; a name can be registered once."""

    def decorator(build):
        MODELS.register(name, ModelEntry(name, build, input_shape, description))
        return build

    return decorator


def registered_models() -> list[ModelEntry]:
    return [entry for _, entry in MODELS.items()]


def create_model(name: str, **kwargs) -> nn.Module:
    return MODELS.get(name).build(**kwargs)


def _small_convnet(
    in_channels: int,
    num_classes: int,
    conv1_channels: int,
    fc1_features: int,
    activation: Callable[[], nn.Module] | None,
    pool: Callable[[], nn.Module],
    image_size: int,
) -> nn.Sequential:
    """conv k5, pool, conv(16) k5, pool, fc1, fc(84), fc(classes): LeNet-5 and the tutorial net."""
    side = ((image_size - 4) // 2 - 4) // 2
    if side < 1:
        raise UsageError(f"image size {image_size} is too small for this net (needs >= 16)")
    layers: list[tuple[str, nn.Module]] = []

    def add(name, module, act_name=None):
        layers.append((name, module))
        if act_name and activation is not None:
            layers.append((act_name, activation()))

    add("conv1", nn.Conv2d(in_channels, conv1_channels, 5), "act1")
    add("pool1", pool())
    add("conv2", nn.Conv2d(conv1_channels, 16, 5), "act2")
    add("pool2", pool())
    add("flatten", nn.Flatten())
    add("fc1", nn.Linear(16 * side * side, fc1_features), "act3")
    add("fc2", nn.Linear(fc1_features, 84), "act4")
    add("fc3", nn.Linear(84, num_classes))
    return nn.Sequential(OrderedDict(layers))


ACTIVATIONS: Registry[Callable[[], nn.Module] | None] = Registry("activation")
for _name, _module in {"relu": nn.ReLU, "none": None, "tanh": nn.Tanh, "gelu": nn.GELU}.items():
    ACTIVATIONS.register(_name, _module)


@register_model("lenet5", (1, 32, 32), "LeNet-5 (LeCun 1998): tanh, average-pool subsampling")
def lenet5(in_channels: int = 1, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    return _small_convnet(in_channels, num_classes, 6, 120, nn.Tanh, lambda: nn.AvgPool2d(2), image_size)


@register_model("tutorial", (3, 32, 32), "the PyTorch CIFAR-10 tutorial net (ReLU, max-pool)")
def tutorial(
    in_channels: int = 3,
    num_classes: int = 10,
    conv1_channels: int = 6,
    activation: str = "relu",
    fc1_features: int = 120,
    image_size: int = 32,
) -> nn.Module:
    return _small_convnet(
        in_channels, num_classes, conv1_channels, fc1_features,
        ACTIVATIONS.get(activation), lambda: nn.MaxPool2d(2), image_size,
    )


@register_model("threeconv", (3, 32, 32), "three 5x5 convs (32, 64, 64), fc 1000; dropout/batch-norm switches")
def threeconv(
    in_channels: int = 3,
    num_classes: int = 10,
    dropout: float = 0.0,
    batchnorm: bool = False,
    image_size: int = 32,
) -> nn.Module:
    layers: list[tuple[str, nn.Module]] = []
    channels = [in_channels, 32, 64, 64]
    for i in range(1, 4):
        layers.append((f"conv{i}", nn.Conv2d(channels[i - 1], channels[i], 5, padding=2)))
        if batchnorm:
            layers.append((f"bn{i}", nn.BatchNorm2d(channels[i])))
        layers += [(f"act{i}", nn.ReLU()), (f"pool{i}", nn.MaxPool2d(2))]
    side = image_size // 8
    layers += [("flatten", nn.Flatten()), ("fc1", nn.Linear(64 * side * side, 1000)), ("act4", nn.ReLU())]
    if dropout > 0:
        layers.append(("dropout", nn.Dropout(dropout)))
    layers.append(("fc2", nn.Linear(1000, num_classes)))
    return nn.Sequential(OrderedDict(layers))


# ---------------------------------------------------------------- torchvision


def torchvision_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision_model(name: str) -> tuple[nn.Module, Shape]:
    import torchvision

    with warnings.catch_warnings():  # inception_v3 warns about a future change of its init
        warnings.simplefilter("ignore", FutureWarning)
        model = torchvision.models.get_model(name, weights=None)
    side = 224
    weights = torchvision.models.get_model_weights(name)
    v1 = getattr(weights, "IMAGENET1K_V1", None)  # the resolution the architecture was made for
    if v1 is not None:
        side = v1.transforms.keywords.get("crop_size", 224)
    return model, (3, side, side)


# ---------------------------------------------------------------- user modules


def _import_model(text: str) -> nn.Module:
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise UsageError(f"{text!r}: write a user model as package.module:attr")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"cannot import {module_name!r} from the current directory: {error}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise UsageError(f"{text!r} is neither an nn.Module class nor a zero-argument factory")
    try:
        model = obj()
    except TypeError as error:
        raise UsageError(f"{text!r} must be callable with no arguments: {error}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{text!r} returned {type(model).__name__}, not an nn.Module")
    return model


# ---------------------------------------------------------------- layer-stack specs


def _spec_classes() -> dict[str, type[nn.Module]]:
    return {
        name: obj
        for name, obj in vars(nn).items()
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and not name.startswith(("Lazy", "_"))
    }


def parse_spec(spec: str) -> nn.Sequential:
    """Build a stack from text like "Conv2d(20, 4, stride=2), ReLU(), MaxPool2d(3)".

    Each item is a torch.nn class with its own constructor arguments, less the input-size
    argument (in_channels, in_features, num_features), which the Lazy variant of the class
    infers from the shape flowing in. Arguments must be literals: nothing is evaluated.
    """
    try:
        tree = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError as error:
        pointer = f" at column {error.offset}" if error.offset else ""
        raise UsageError(f"malformed layer spec{pointer}: {error.msg} in {spec!r}") from None
    calls = tree.elts if isinstance(tree, ast.Tuple) else [tree]
    classes = _spec_classes()
    layers = []
    for call in calls:
        where = f"column {call.col_offset + 1} of the spec"
        if not isinstance(call, ast.Call):
            raise UsageError(f"malformed layer spec at {where}: expected Layer(args), got {ast.unparse(call)!r}")
        name = ast.unparse(call.func).removeprefix("torch.").removeprefix("nn.")
        if name not in classes:
            raise unknown_name("torch.nn layer", name, sorted(classes), hint=f"at {where}")
        try:
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except ValueError:
            raise UsageError(f"{ast.unparse(call)}: arguments must be literals (numbers, strings, tuples)") from None
        cls = getattr(nn, "Lazy" + name, classes[name])
        try:
            layers.append(cls(*args, **kwargs))
        except (TypeError, ValueError) as error:
            raise UsageError(f"{ast.unparse(call)}: {error}") from None
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- one entry point


def parse_shape(text: str) -> Shape:
    """'3x32x32' -> (3, 32, 32); any number of positive sizes."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise UsageError(f"malformed shape {text!r}: write positive sizes joined by x, like 3x32x32")
    return shape


def load_model(text: str) -> tuple[nn.Module, Shape | None]:
    """A model and its natural input shape (None when it has none) from a name, path or spec."""
    text = text.strip()
    if "(" in text:
        return parse_spec(text), None
    if ":" in text:
        return _import_model(text), None
    if text in MODELS:
        return create_model(text), MODELS.get(text).input_shape
    known = torchvision_models()
    if text in known:
        return _torchvision_model(text)
    raise unknown_name(
        "model", text, MODELS.names() + known, hint="`ablate list models` lists them all"
    )

