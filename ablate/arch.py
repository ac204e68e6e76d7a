"""Models: ablate's own registry, torchvision's classifiers, user modules and layer-stack specs.

`load_model(text)` turns any of the four ways of naming a model into an `nn.Module` and its
natural input shape (channels x height x width, no batch dimension).
"""

from __future__ import annotations

import ast
import re
import collections.abc
import dataclasses
import functools
import importlib
import inspect
import math
import os
import sys
import types
import typing
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ablate.schema import reserved_names
from ablate.errors import UsageError, describe_error, unknown_name  # noqa: F401 - describe_error: arch's too
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
    """Add a model builder to the registry under `name`; a name can be registered once. A
    registration that is not right (an input shape that is not channels x height x width) is
    refused in one line naming the model: its plugin does not load, everything else works."""
    shape_ok = isinstance(input_shape, tuple) and len(input_shape) == 3 and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in input_shape)
    if not shape_ok:
        raise UsageError(f"model {name!r}: input_shape must be (channels, height, width) of whole numbers >= 1, "
                         f"got {input_shape!r:.60}")
    if not isinstance(description, str):
        raise UsageError(f"model {name!r}: description must be a string, got {description!r:.60}")

    def decorator(build):
        if not callable(build):
            raise UsageError(f"model {name!r}: register_model decorates a function or class that builds the model")
        MODELS.register(name, ModelEntry(name, build, input_shape, description))
        return build

    return decorator


def registered_models() -> list[ModelEntry]:
    return [entry for _, entry in MODELS.items()]


ACTIVATIONS: Registry[Callable[[], nn.Module] | None] = Registry("activation")
for _name, _module in {"relu": nn.ReLU, "none": None, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}.items():
    ACTIVATIONS.register(_name, _module)


class _Layers:
    """An nn.Sequential under construction, with named layers and an activation after some."""

    def __init__(self, activation: str):
        self.layers: list[tuple[str, nn.Module]] = []
        self.activation = ACTIVATIONS.get(activation)
        self.acts = 0

    def add(self, name: str, module: nn.Module, activate: bool = False) -> None:
        self.layers.append((name, module))
        if activate and self.activation is not None:
            self.acts += 1
            self.layers.append((f"act{self.acts}", self.activation()))

    def dropout(self, p: float) -> None:
        if p > 0:  # no module at 0: the net is exactly the one without the knob
            self.layers.append(("dropout", nn.Dropout(p)))

    def build(self) -> nn.Sequential:
        return nn.Sequential(OrderedDict(self.layers))


def _check(name: str, value: float, low: float, high: float | None = None) -> None:
    if value < low or (high is not None and value >= high):
        allowed = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise UsageError(f"{name} must be {allowed}, got {value}")


def _small_convnet(in_channels, num_classes, conv1_channels, conv2_channels, kernel_size, fc1_features,
                   fc2_features, activation, pool, dropout, image_size) -> nn.Sequential:
    """conv, pool, conv, pool, fc1, fc2, fc(classes): LeNet-5 and the tutorial net."""
    for name, value in (("conv1_channels", conv1_channels), ("conv2_channels", conv2_channels),
                        ("kernel_size", kernel_size), ("fc1_features", fc1_features), ("fc2_features", fc2_features)):
        _check(name, value, 1)
    _check("dropout", dropout, 0, 1)
    side = ((image_size - kernel_size + 1) // 2 - kernel_size + 1) // 2
    if side < 1:
        raise UsageError(f"image size {image_size} is too small for kernel_size {kernel_size} in this net "
                         f"(needs >= {4 * kernel_size - 4})")
    net = _Layers(activation)
    net.add("conv1", nn.Conv2d(in_channels, conv1_channels, kernel_size), activate=True)
    net.add("pool1", pool())
    net.add("conv2", nn.Conv2d(conv1_channels, conv2_channels, kernel_size), activate=True)
    net.add("pool2", pool())
    net.add("flatten", nn.Flatten())
    net.add("fc1", nn.Linear(conv2_channels * side * side, fc1_features), activate=True)
    net.add("fc2", nn.Linear(fc1_features, fc2_features), activate=True)
    net.dropout(dropout)
    net.add("fc3", nn.Linear(fc2_features, num_classes))
    return net.build()


@register_model("lenet5", (1, 32, 32), "LeNet-5 (LeCun 1998): tanh, average-pool subsampling")
def lenet5(in_channels: int = 1, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    return _small_convnet(in_channels, num_classes, 6, 16, 5, 120, 84, "tanh", lambda: nn.AvgPool2d(2), 0.0,
                          image_size)


@register_model("tutorial", (3, 32, 32), "the PyTorch CIFAR-10 tutorial net: conv 6 and 16 k5, max-pool, fc 120, 84")
def tutorial(
    in_channels: int = 3,
    num_classes: int = 10,
    conv1_channels: int = 6,
    conv2_channels: int = 16,
    kernel_size: int = 5,
    fc1_features: int = 120,
    fc2_features: int = 84,
    activation: str = "relu",
    dropout: float = 0.0,
    image_size: int = 32,
) -> nn.Module:
    """dropout: before the last fc layer."""
    return _small_convnet(in_channels, num_classes, conv1_channels, conv2_channels, kernel_size, fc1_features,
                          fc2_features, activation, lambda: nn.MaxPool2d(2), dropout, image_size)


@register_model("threeconv", (3, 32, 32), "report 002's net: three convs (32, 64, 64) k5, max-pool, fc 1000")
def threeconv(
    in_channels: int = 3,
    num_classes: int = 10,
    conv1_channels: int = 32,
    conv2_channels: int = 64,
    conv3_channels: int = 64,
    kernel_size: int = 5,
    fc1_features: int = 1000,
    activation: str = "relu",
    dropout: float = 0.0,
    batchnorm: bool = False,
    image_size: int = 32,
) -> nn.Module:
    """dropout: before the last fc layer; batchnorm: after every conv."""
    channels = [in_channels, conv1_channels, conv2_channels, conv3_channels]
    for i, width in enumerate(channels[1:], 1):
        _check(f"conv{i}_channels", width, 1)
    _check("kernel_size", kernel_size, 1)
    _check("fc1_features", fc1_features, 1)
    _check("dropout", dropout, 0, 1)
    side = image_size // 8
    if side < 1:
        raise UsageError(f"image size {image_size} is too small for this net (needs >= 8)")
    net = _Layers(activation)
    for i in range(1, 4):
        net.add(f"conv{i}", nn.Conv2d(channels[i - 1], channels[i], kernel_size, padding=kernel_size // 2))
        if batchnorm:
            net.add(f"bn{i}", nn.BatchNorm2d(channels[i]))
        if net.activation is not None:
            net.acts += 1
            net.add(f"act{net.acts}", net.activation())
        net.add(f"pool{i}", nn.MaxPool2d(2))
    net.add("flatten", nn.Flatten())
    net.add("fc1", nn.Linear(conv3_channels * side * side, fc1_features), activate=True)
    net.dropout(dropout)
    net.add("fc2", nn.Linear(fc1_features, num_classes))
    return net.build()


@register_model("mlp", (3, 32, 32), "fully connected baseline: flatten, hidden layers (ReLU), fc")
def mlp(
    in_channels: int = 3,
    num_classes: int = 10,
    hidden: tuple = (512,),
    activation: str = "relu",
    dropout: float = 0.0,
    image_size: int = 32,
) -> nn.Module:
    """hidden: the widths of the hidden layers, e.g. (512, 256); dropout: before the last fc layer."""
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    if not all(isinstance(w, int) and w >= 1 for w in widths):
        raise UsageError(f"hidden must be whole numbers >= 1, like (512, 256); got {hidden!r}")
    _check("dropout", dropout, 0, 1)
    net = _Layers(activation)
    net.add("flatten", nn.Flatten())
    sizes = [in_channels * image_size * image_size, *widths]
    for i in range(len(widths)):
        net.add(f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]), activate=True)
    net.dropout(dropout)
    net.add(f"fc{len(widths) + 1}", nn.Linear(sizes[-1], num_classes))
    return net.build()


# ---------------------------------------------------------------- torchvision


def torchvision_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision_shape(name: str) -> Shape:
    """The input a torchvision architecture was made for: its ImageNet weights' crop."""
    import torchvision

    side = 224
    weights = torchvision.models.get_model_weights(name)
    v1 = getattr(weights, "IMAGENET1K_V1", None)
    if v1 is not None:
        side = v1.transforms.keywords.get("crop_size", 224)
    return 3, side, side


# ---------------------------------------------------------------- user modules


def _not_found(error: BaseException, module_name: str) -> bool:
    """The module itself (or a package above it) is missing, not something it imports."""
    name = getattr(error, "name", None)
    return isinstance(error, ModuleNotFoundError) and bool(name) and (
        module_name == name or module_name.startswith(name + "."))


def _import_object(text: str):
    """The object `package.module:attr` names, imported from the current directory."""
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise UsageError(f"{text!r}: write a user model as package.module:attr")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        with torch.device("cpu"):  # the module's own tensors are real, whoever imports it (count.build_meta)
            module = importlib.import_module(module_name)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the user's module raises is bad input
        if _not_found(error, module_name):
            raise UsageError(f"cannot import {module_name!r} from the current directory: {error}") from None
        raise UsageError(f"model {text!r}: importing {module_name!r} raised {describe_error(error)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def describe_output(output, depth: int = 0) -> str:
    """What a model's forward gave, in words: "outputs of shape (2, 17)", "a tuple of 2 (...)",
    "None"."""
    if isinstance(output, torch.Tensor):
        dtype = "" if output.is_floating_point() else f"{str(output.dtype).removeprefix('torch.')} "
        if output.dim() == 0:
            return f"{'an' if dtype[:1] == 'i' else 'a'} {dtype}scalar tensor"
        return f"{dtype}outputs of shape {tuple(output.shape)}"
    if output is None:
        return "None"
    kind = type(output).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    if isinstance(output, dict) and depth == 0:
        keys = ", ".join(repr(k) for k in list(output)[:4]) + (", ..." if len(output) > 4 else "")
        return f"{article} {kind} (keys {keys})" if output else f"an empty {kind}"
    if isinstance(output, (tuple, list)) and depth == 0:
        if not output:
            return f"an empty {kind}"
        items = "; ".join(describe_output(o, 1) for o in output[:3]) + ("; ..." if len(output) > 3 else "")
        return f"{article} {kind} of {len(output)} ({items})"
    return f"{article} {kind}"


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


_CALL = re.compile(r"\s*([A-Za-z_][\w.]*:[A-Za-z_][\w.]*|[A-Za-z_]\w*)\s*\((.*)\)\s*", re.S)


def model_call(text: str) -> tuple[str, dict]:
    """A model named with constructor arguments, `mynets:Net(width=32)` or `tutorial(kernel_size=3)`,
    as its name and the arguments (literals, by name); any other text as it is, with none
    (a layer stack, `Conv2d(16, 3), ReLU()`, is a spec, not a call)."""
    head = re.match(r"\s*([A-Za-z_][\w.]*:[A-Za-z_][\w.]*|[A-Za-z_]\w*)\s*\(", text)
    if head is None or (":" not in head[1] and head[1] not in MODELS):
        return text.strip(), {}
    match = _CALL.fullmatch(text)
    if match is None:
        raise UsageError(f"{text!r}: malformed arguments; write them by name in parentheses, like {head[1]}(width=32)")
    name, inner = match[1], match[2]
    try:
        call = ast.parse(f"f({inner})", mode="eval").body
    except SyntaxError:
        raise UsageError(f"{text!r}: malformed arguments; write them by name, like {name}(width=32)") from None
    if call.args or any(k.arg is None for k in call.keywords):
        raise UsageError(f"{text!r}: give the model's arguments by name, like {name}(width=32)")
    args = {}
    for keyword in call.keywords:
        try:
            args[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise UsageError(f"{text!r}: {keyword.arg} must be a literal (a number, a string, a tuple)") from None
    return name, args


def load_model(text: str, input_shape: Shape | None = None) -> tuple[nn.Module, Shape | None]:
    """A model named in any of the four ways (`model_source`), with constructor arguments or
    without (`model_call`), for counting, and its natural input shape (None when it has none).
    Built for `input_shape` where given: its channels are `in_channels`, its size
    `image_size`, for a model that takes them. A module instance that a user's file holds is
    taken as it is: counted, never trained."""
    name, args = model_call(text)
    user = ":" in name and not args
    if user and isinstance(obj := _import_object(name), nn.Module):
        return obj, None
    source = model_source(name)
    inputs = {}
    if input_shape is not None:
        if "in_channels" in source.inputs:
            inputs["in_channels"] = input_shape[0]
        if "image_size" in source.inputs and len(input_shape) == 3 and input_shape[1] == input_shape[2]:
            inputs["image_size"] = input_shape[1]
    typed = {k: source.typed(k, v) for k, v in args.items()}
    try:
        model = source.make(**inputs, **typed)
    except TypeError as error:
        if ":" not in name:
            raise
        raise UsageError(f"{text!r} must be callable with {', '.join(typed) or 'no arguments'}: {error}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{text!r} returned {type(model).__name__}, not an nn.Module")
    natural = source.input_shape
    if natural is not None and inputs.get("in_channels", natural[0]) != natural[0]:
        natural = None  # built for other data
    return model, natural


# ---------------------------------------------------------------- models to train


MODEL_INPUTS = ("in_channels", "num_classes", "image_size")  # set by the data, never by the user


class GrayToRGB(nn.Module):
    """Feeds a 1-channel image to a 3-channel model by repeating the channel (each channel three
    times: packed copies of the model, one channel each, stay apart)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.repeat_interleave(3, 1).contiguous(memory_format=torch.channels_last))



@dataclass(frozen=True)
class ArgType:
    """What a model's constructor argument takes: its annotation, else its default's type.
    `kind` is bool, int, float, str or tuple (a list, a Sequence or a tuple annotation: TOML
    and the command line write lists); None: any value (lists made tuples, to be hashable)."""

    kind: type | None
    optional: bool  # None is a value (the annotation allows it, or the default is None)
    item: type | None = None  # tuple[int, ...]: each element's kind
    choices: tuple = ()  # Literal["a", "b"]: the values it takes

    @staticmethod
    def of(annotation, default) -> ArgType:
        """An annotation of one kind (Optional allowed) is that kind; several kinds (`int | str`),
        `Any` or no annotation: the default's type, else any value."""
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)] if union \
            else [annotation] if annotation is not None else []
        optional = default is None or (union and len(kinds) < len(typing.get_args(annotation)))
        if len(kinds) > 1 or annotation is typing.Any:
            return ArgType(None, True)
        kind = kinds[0] if kinds else None
        if typing.get_origin(kind) is typing.Literal:
            choices = typing.get_args(kind)
            same = {type(c) for c in choices}
            return ArgType(same.pop() if len(same) == 1 and type(choices[0]) in _SCALARS else None, optional,
                           choices=choices)
        origin = typing.get_origin(kind) or kind
        if origin in (tuple, list) or (isinstance(origin, type) and origin is not str
                                       and issubclass(origin, collections.abc.Sequence)):
            items = [a for a in typing.get_args(kind) if a is not Ellipsis]
            item = items[0] if items and all(a == items[0] for a in items) and items[0] in _SCALARS else None
            if item is None and isinstance(default, (tuple, list)) and default and \
                    len({type(v) for v in default}) == 1 and type(default[0]) in _SCALARS:
                item = type(default[0])
            return ArgType(tuple, optional, item)
        if kind in _SCALARS:
            return ArgType(kind, optional)
        if default is not None and type(default) in (*_SCALARS, tuple):
            return ArgType.of(type(default), default)
        return ArgType(None, True)

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices)) + (" (or none)" if self.optional else "")
        words = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string",
                 tuple: "a list" + (f" of {_WORDS[self.item]}s" if self.item else "")}
        return words.get(self.kind, "any value") + (" (or none)" if self.optional and self.kind else "")

    def column(self, default) -> type:
        """The type of the argument's column: its kind, text for a tuple (its repr), else the default's."""
        return self.kind if self.kind in _SCALARS else str if self.kind is tuple else knob_type(default)

    def convert(self, value, where: str):
        if value is None or (self.kind is not str and isinstance(value, str) and value.strip().lower() == "none"
                             and self.optional):
            if self.optional:
                return None
            raise UsageError(f"{where} takes {self.describe()}, got none")
        if self.kind is None:
            value = _hashable(value)
            if self.choices and value not in self.choices:
                value = _literal_or(value) if isinstance(value, str) else value
            if self.choices and value not in self.choices:
                raise UsageError(f"{where} takes {self.describe()}, got {value!r}")
            return value
        if self.kind is tuple:
            if isinstance(value, str):
                value = _literal_or(value)
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if self.item is not None:
                try:
                    items = [_scalar(self.item, v, where, self.describe()) for v in items]
                except UsageError:
                    raise UsageError(f"{where} takes {self.describe()}, got {value!r}") from None
            return tuple(_hashable(v) for v in items)
        out = _scalar(self.kind, value, where, self.describe())
        if self.choices and out not in self.choices:
            raise UsageError(f"{where} takes {self.describe()}, got {value!r}")
        return out


_SCALARS = (bool, int, float, str)
_WORDS = {bool: "true/false", int: "whole number", float: "number", str: "string"}


def _literal_or(text: str):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def _scalar(kind: type, value, where: str, allowed: str):
    """`value` as `kind`; a bool is never a number, and a number is a string only as its text."""
    out = None
    if kind is bool:
        if isinstance(value, bool):
            out = value
        elif isinstance(value, int) and value in (0, 1):
            out = bool(value)
        elif isinstance(value, str):
            out = {"true": True, "false": False}.get(value.strip().lower())
    elif isinstance(value, bool):
        out = None
    elif kind is int:
        if isinstance(value, int):
            out = value
        elif isinstance(value, float) and value.is_integer():
            out = int(value)
        elif isinstance(value, str):
            literal = _literal_or(value)
            out = literal if isinstance(literal, int) and not isinstance(literal, bool) else None
    elif kind is float:
        number = _literal_or(value) if isinstance(value, str) else value
        if isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number):
            out = float(number)
    elif kind is str:
        out = value if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else None
    if out is None:
        raise UsageError(f"{where} takes {allowed}, got {value!r}")
    return out


@dataclass(frozen=True)
class ModelSource:
    """A model named in any of the four ways, as a maker of fresh models: each seed of a run
    builds its own, from its own initial weights."""

    name: str
    make: Callable[..., nn.Module]
    knobs: dict  # constructor arguments a user may set -> their defaults
    inputs: frozenset  # the MODEL_INPUTS `make` takes
    rgb: bool = False  # takes 3 input channels only (torchvision): 1-channel data is repeated
    input_shape: Shape | None = None  # the input it was made for, where it has one
    arg_types: dict = dataclasses.field(default_factory=dict)  # knob -> ArgType: what its values are converted to

    def typed_args(self, args: dict) -> dict:
        """Every argument of `args` typed (`typed`), the model's own default where none is given."""
        return {**self.knobs, **{name: self.typed(name, value) for name, value in args.items()}}

    def typed(self, name: str, value):
        """`value` of the constructor argument `name` as the argument's declared type (see
        `ArgType`): one configuration has one value, however it was spelled. A name the
        model does not take, or a value that does not convert, is a usage error."""
        if name not in self.knobs:
            takes = ", ".join(self.knobs) or "no constructor arguments"
            raise UsageError(f"model {self.name!r} does not take {name}; it takes {takes}")
        return self.arg_types.get(name, ArgType(None, True)).convert(value, f"{self.name}'s argument {name}")

    def build(self, in_channels: int, num_classes: int, image_size: int, **knobs) -> nn.Module:
        given = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        if self.rgb and in_channels not in (1, 3):
            raise UsageError(f"model {self.name!r} takes 3 input channels (or 1, repeated); the data has {in_channels}")
        try:
            model = self.make(**{k: v for k, v in given.items() if k in self.inputs}, **knobs)
        except TypeError as error:
            raise UsageError(f"cannot build {self.name!r} with {knobs or 'its defaults'}: {error}") from None
        if not isinstance(model, nn.Module):
            raise UsageError(f"{self.name!r} returned {type(model).__name__}, not an nn.Module")
        return GrayToRGB(model) if self.rgb and in_channels == 1 else model


def _knobs(function) -> tuple[dict, frozenset, dict]:
    """The constructor arguments of `function` a user may set (those with a default), the
    MODEL_INPUTS it takes, and each argument's `ArgType`."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}, frozenset(), {}
    reserved = reserved_names()  # a `seed` or `lr` argument would overwrite the run's own column
    knobs = {n: p.default for n, p in parameters.items()
             if n not in MODEL_INPUTS and n not in reserved and p.default is not inspect.Parameter.empty
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    try:  # a class's constructor's annotations (get_type_hints of a class reads its attributes')
        hints = typing.get_type_hints(function.__init__ if inspect.isclass(function) else function)
    except Exception:  # an annotation that names what its module cannot resolve: the defaults' types
        hints = {}
    arg_types = {}
    for name, default in knobs.items():  # the defaults typed too: `dropout: float = 0` is 0.0 given or not
        arg_types[name] = ArgType.of(hints.get(name), default)
        try:
            knobs[name] = arg_types[name].convert(default, name)
        except UsageError:  # a default its annotation does not allow: the argument takes any value
            arg_types[name] = ArgType(None, True)
            knobs[name] = _hashable(default)
    return knobs, frozenset(n for n in MODEL_INPUTS if n in parameters), arg_types


@functools.cache
def model_source(text: str) -> ModelSource:
    """`text` as in `load_model`; a user model must be a class or a factory (an instance cannot
    give each seed its own initial weights)."""
    text = text.strip()
    name, args = model_call(text)
    if args:
        raise UsageError(f"{text!r}: a study sets a model's arguments with `--vary "
                         f"{next(iter(args))}=...` (ablate sweep) or in a study file's [base]; --model names {name}")
    if "(" in text:
        parse_spec(text)  # rejects a malformed spec now
        return ModelSource(text, lambda: parse_spec(text), {}, frozenset())
    if ":" in text:
        obj = _import_object(text)
        if isinstance(obj, nn.Module):
            raise UsageError(f"{text!r} is an instance: to train it, name its class or a factory function, "
                             "so that every seed builds its own model")
        if not callable(obj):
            raise UsageError(f"{text!r} is neither an nn.Module class nor a factory function")
        knobs, inputs, arg_types = _knobs(obj)
        return ModelSource(text, obj, knobs, inputs, input_shape=_default_shape(obj), arg_types=arg_types)
    if text in MODELS:
        entry = MODELS.get(text)
        knobs, inputs, arg_types = _knobs(entry.build)
        return ModelSource(text, entry.build, knobs, inputs, input_shape=entry.input_shape, arg_types=arg_types)
    if text in torchvision_models():
        import torchvision

        def make(num_classes=1000):
            with warnings.catch_warnings():  # inception_v3 warns about a future change of its init
                warnings.simplefilter("ignore", FutureWarning)
                return torchvision.models.get_model(text, weights=None, num_classes=num_classes)

        return ModelSource(text, make, {}, frozenset({"num_classes"}), rgb=True, input_shape=_torchvision_shape(text))
    raise unknown_name("model", text, MODELS.names() + torchvision_models(),
                       hint="`ablate list models` lists them all")


def _default_shape(function) -> Shape | None:
    """The input a user's model is made for by default: C x S x S from the defaults of its
    `in_channels` and `image_size` (None unless it has both, as whole numbers)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    defaults = [parameters[n].default if n in parameters else None for n in ("in_channels", "image_size")]
    if all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in defaults):
        return (defaults[0], defaults[1], defaults[1])
    return None


def knob_type(value) -> type:
    """The column type of a constructor argument's value: int, float, str or bool; anything
    else (a tuple of widths) is recorded as its text."""
    return type(value) if value is None or isinstance(value, (bool, int, float, str)) else str


def registry_knobs() -> dict[str, type]:
    """Every constructor argument of ablate's own models, with its column type."""
    types = {}
    for entry in registered_models():
        knobs, _, arg_types = _knobs(entry.build)
        for name, default in knobs.items():
            types.setdefault(name, arg_types[name].column(default))
    return types


ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
                      nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
                      nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink)


def strip_activations(model: nn.Module) -> dict[str, int]:
    """Replace every activation module by identity, in place; how many of each type."""
    replaced: dict[str, int] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ACTIVATION_MODULES):
                setattr(parent, name, nn.Identity())
                replaced[type(child).__name__] = replaced.get(type(child).__name__, 0) + 1
    return replaced


# ---------------------------------------------------------------- autoencoders (report 001)


def _encoder(in_channels: int, image_size: int, latent_dim: int, depth: int, width: int) -> tuple[nn.Sequential, int]:
    """3x3 convs of stride 2 (each halves the side, doubles the width) and a linear bottleneck."""
    _check("latent_dim", latent_dim, 1)
    _check("width", width, 1)
    if depth not in (1, 2, 3):
        raise UsageError(f"depth must be 1, 2 or 3 conv layers, got {depth}")
    if image_size % 2 ** depth:
        raise UsageError(f"image size {image_size} must be divisible by {2 ** depth} for depth {depth}")
    channels = [in_channels] + [width * 2 ** i for i in range(depth)]
    layers: list[tuple[str, nn.Module]] = []
    for i in range(depth):
        layers += [(f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1)),
                   (f"act{i + 1}", nn.ReLU())]
    side = image_size // 2 ** depth
    layers += [("flatten", nn.Flatten()), ("fc", nn.Linear(channels[-1] * side * side, latent_dim))]
    return nn.Sequential(OrderedDict(layers)), side


class AutoEncoder(nn.Module):
    """Conv encoder, linear bottleneck of `latent_dim`, mirrored decoder, sigmoid output."""

    def __init__(self, in_channels: int = 1, image_size: int = 32, latent_dim: int = 10, depth: int = 2,
                 width: int = 16):
        super().__init__()
        self.encoder, side = _encoder(in_channels, image_size, latent_dim, depth, width)
        channels = [in_channels] + [width * 2 ** i for i in range(depth)]
        layers: list[tuple[str, nn.Module]] = [
            ("fc", nn.Linear(latent_dim, channels[-1] * side * side)), ("act0", nn.ReLU()),
            ("unflatten", nn.Unflatten(1, (channels[-1], side, side)))]
        for i in reversed(range(depth)):  # the encoder's convs, mirrored
            layers.append((f"deconv{i + 1}", nn.ConvTranspose2d(channels[i + 1], channels[i], 3, stride=2,
                                                                padding=1, output_padding=1)))
            layers.append((f"act{i + 1}", nn.ReLU() if i else nn.Sigmoid()))
        self.decoder = nn.Sequential(OrderedDict(layers))

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))


@register_model("autoencoder", (1, 32, 32), "report 001's conv autoencoder: 3x3 convs, linear bottleneck, sigmoid")
def autoencoder(in_channels: int = 1, image_size: int = 32, latent_dim: int = 10, depth: int = 2,
                width: int = 16) -> nn.Module:
    """latent_dim: the bottleneck's size; depth: conv layers in the encoder (1 to 3), mirrored in
    the decoder; width: channels of the first conv, doubled by each next one."""
    return AutoEncoder(in_channels, image_size, latent_dim, depth, width)


class LatentClassifier(nn.Module):
    """The autoencoder's encoder, then an MLP latent -> 20 -> 30 -> classes (report 001, Q4)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 32, latent_dim: int = 10,
                 depth: int = 2, width: int = 16):
        super().__init__()
        self.encoder, _ = _encoder(in_channels, image_size, latent_dim, depth, width)
        self.head = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(latent_dim, 20)), ("act1", nn.ReLU()), ("fc2", nn.Linear(20, 30)),
            ("act2", nn.ReLU()), ("fc3", nn.Linear(30, num_classes))]))

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.head(self.encoder(x))


@register_model("latent-mlp", (1, 32, 32), "the autoencoder's encoder and an MLP 20, 30 on its code: transfer")
def latent_mlp(in_channels: int = 1, num_classes: int = 10, image_size: int = 32, latent_dim: int = 10,
               depth: int = 2, width: int = 16) -> nn.Module:
    return LatentClassifier(in_channels, num_classes, image_size, latent_dim, depth, width)


@register_model("latent-linear", (1, 32, 32), "the autoencoder's encoder and one linear layer on its code: a probe")
def latent_linear(in_channels: int = 1, num_classes: int = 10, image_size: int = 32, latent_dim: int = 10,
                  depth: int = 2, width: int = 16) -> nn.Module:
    model = LatentClassifier(in_channels, num_classes, image_size, latent_dim, depth, width)
    model.head = nn.Linear(latent_dim, num_classes)  # one linear layer on the code: a probe (transfer)
    return model
