"""Running a model without its weights: built with its parameters on the meta device, run on
fake CPU tensors (shapes, no data) under FakeTensorMode, and told apart when its forward needs
real values (NeedsRealTensors), so that the counting falls back to a real forward.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager, nullcontext
from typing import Callable, TypeVar

import torch
from torch import nn
from torch._subclasses import fake_tensor
from torch.utils._python_dispatch import TorchDispatchMode

from ablate.arch import Shape
from ablate.counting.tensor_tree import shapes
from ablate.errors import UsageError, describe_error, first_line

T = TypeVar("T")


class NeedsRealTensors(UsageError):
    """The forward pass needs real values (data-dependent shapes): it cannot run on fake tensors."""


def on_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def fake_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
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


class _FailureTracker:
    """Names the innermost module running when a forward pass raises: a module is on the stack
    from its first pre-hook until its forward returns (a raising forward never pops)."""

    def __init__(self, model: nn.Module):
        self.stack: list[tuple[str, nn.Module, str]] = []
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name), with_kwargs=True, prepend=True))
            self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name):
        def hook(module, args, kwargs):
            self.stack.append((name or "(model)", module, shapes((args, kwargs))))

        return hook

    def _leave(self, module, args, output):
        self.stack.pop()

    def error(self, error: Exception, input_shape: Shape) -> UsageError:
        message = first_line(error) if isinstance(error, RuntimeError) else describe_error(error)
        whole = "x".join(map(str, input_shape))
        if not self.stack:
            return UsageError(f"the model cannot take input {whole}: {message}")
        name, module, inputs = self.stack[-1]
        if len(self.stack) == 1:  # the model's own code, between its layers
            return UsageError(f"{type(module).__name__}.forward failed on input {whole}: {message}")
        return UsageError(
            f"layer {name!r} ({type(module).__name__}) failed on input {inputs} "
            f"(model input {whole}): {message}"
        )


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
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - a user's forward may raise anything (KeyError, their own)
        usage = tracker.error(error, tuple(x.shape[1:]))
        if fake and _needs_real(error):
            raise NeedsRealTensors(f"cannot count on fake tensors: {usage}") from None
        raise usage from None
    finally:
        for handle in tracker.handles:
            handle.remove()


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
