"""K copies of one network packed into one model: runs that build the same network train together.

The members of a pack are runs (a variant and a seed) whose models have the same layers; they
may differ in everything the optimiser, the data and dropout decide (learning rate, schedule,
augmentation, normalisation, dropout rate, ...): each member keeps its own optimiser over its own
block of the packed parameters (`MemberParameters`), its own data and its own dropout rate.

Member k's input channels, features and outputs are the k-th of K equal blocks along dimension 1:
a conv becomes a grouped conv with K times the groups, a linear a batched matmul over K,
batch norm a batch norm of K times the channels. Every parameter of the packed model is the K
copies' parameters side by side; summing the copies' losses gives each copy its own gradient,
and each member's optimiser steps views of its own blocks in place.

A model packs when every module that holds parameters or buffers has a rule below, no
parameter is shared between modules, the packed model's output equals the copies' outputs on
a probe batch, and a training-mode forward draws nothing from torch's global generator (its
randomness would be one draw for all the copies); anything else is trained one copy at a
time (`pack` returns None).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class PackedLinear(nn.Module):
    """K linear layers on (B, K * in_features) inputs: one batched matmul."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        self.copies, self.in_features = len(linears), linears[0].in_features
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]),
                                   requires_grad=linears[0].weight.requires_grad)
        self.bias = None if linears[0].bias is None else nn.Parameter(
            torch.stack([m.bias.detach() for m in linears]), requires_grad=linears[0].bias.requires_grad)

    def forward(self, x):
        x = x.reshape(len(x), self.copies, self.in_features).transpose(0, 1)  # K x B x in
        out = torch.bmm(x, self.weight.transpose(1, 2)) if self.bias is None else \
            torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
        return out.transpose(0, 1).flatten(1)  # B x (K * out)


class PackedDropout(nn.Module):
    """Dropout of rate `ps[k]` for copy k, its masks from copy k's own generator (a rate of 0
    draws nothing, as torch's dropout does not)."""

    def __init__(self, ps: list[float], generators: list[torch.Generator]):
        super().__init__()
        self.ps, self.generators = list(ps), generators

    def forward(self, x):
        if not self.training or not any(self.ps):
            return x
        return torch.cat([_dropout(part, p, gen) for part, p, gen in
                          zip(x.chunk(len(self.generators), 1), self.ps, self.generators)], 1)


def _dropout(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    if p == 0:
        return x
    if p == 1:
        return x * 0
    return x * torch.empty_like(x).bernoulli_(1 - p, generator=generator) / (1 - p)


def _cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.cat([t.detach() for t in tensors])


def _copy_into(packed: nn.Module, copies: list[nn.Module], split: Callable) -> None:
    """Write each copy's block of `packed`'s parameters and buffers back into that copy."""
    with torch.no_grad():
        for name, tensor in [*packed.named_parameters(recurse=False), *packed.named_buffers(recurse=False)]:
            for copy_, block in zip(copies, split(tensor, len(copies))):
                getattr(copy_, name).copy_(block)


def _pack_conv(convs: list[nn.Conv2d | nn.ConvTranspose2d]) -> nn.Module:
    k, first = len(convs), convs[0]
    packed = copy.deepcopy(first)  # the same kind of conv with K times the channels and groups
    packed.in_channels, packed.out_channels, packed.groups = k * first.in_channels, k * first.out_channels, \
        k * first.groups
    packed.weight = nn.Parameter(_cat([m.weight for m in convs]), requires_grad=first.weight.requires_grad)
    if first.bias is not None:
        packed.bias = nn.Parameter(_cat([m.bias for m in convs]), requires_grad=first.bias.requires_grad)
    return packed


def _pack_norm(norms: list[nn.modules.batchnorm._BatchNorm]) -> nn.Module:
    first = norms[0]
    packed = copy.deepcopy(first)
    packed.num_features = len(norms) * first.num_features
    for name, tensor in first.named_parameters(recurse=False):
        setattr(packed, name, nn.Parameter(_cat([getattr(m, name) for m in norms]),
                                           requires_grad=tensor.requires_grad))
    for name, tensor in first.named_buffers(recurse=False):
        if tensor.dim():  # running mean and variance; num_batches_tracked is shared
            setattr(packed, name, _cat([getattr(m, name) for m in norms]))
    return packed


def _unflatten(modules: list[nn.Unflatten]) -> nn.Module:
    first = modules[0]
    if first.dim != 1:
        raise ValueError("only an Unflatten of dimension 1 packs")
    return nn.Unflatten(1, (len(modules) * first.unflattened_size[0], *first.unflattened_size[1:]))


def _blocks(tensor: torch.Tensor, k: int):
    return tensor.chunk(k) if tensor.dim() else [tensor] * k


@dataclass(frozen=True)
class Rule:
    pack: Callable[[list[nn.Module]], nn.Module]  # the K copies of a module -> its packed form
    unpack: Callable[[torch.Tensor, int], list[torch.Tensor]]  # a packed tensor -> the copies' blocks


RULES: dict[type, Rule] = {  # modules that hold parameters or buffers; the rest are shared as they are
    nn.Conv1d: Rule(_pack_conv, _blocks),
    nn.Conv2d: Rule(_pack_conv, _blocks),
    nn.ConvTranspose2d: Rule(_pack_conv, _blocks),
    nn.Linear: Rule(PackedLinear, lambda t, k: t.unbind(0)),
    nn.BatchNorm1d: Rule(_pack_norm, _blocks),
    nn.BatchNorm2d: Rule(_pack_norm, _blocks),
    nn.Unflatten: Rule(_unflatten, _blocks),
}
STATELESS = (  # modules without parameters that act per element, per channel or on dimension >= 2
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardswish, nn.Hardtanh,
    nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
    nn.Sequential, nn.ModuleList, nn.ModuleDict,
)


def _own_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(
        b is not None for b in module._buffers.values())


def packs(model: nn.Module) -> bool:
    """Whether every module of `model` has a packing rule or needs none, and none is shared."""
    if len(list(model.named_parameters(remove_duplicate=False))) != len(list(model.parameters())) or \
            len(list(model.named_modules(remove_duplicate=False))) != len(list(model.modules())):
        return False  # tied weights would be untied: each place gets its own packed copy
    for module in model.modules():
        kind = type(module)
        if kind in RULES or kind is nn.Dropout or kind in STATELESS:
            continue
        if _own_state(module) or kind.__module__.split(".")[0] in ("torch", "torchvision"):
            return False  # a library module we have no rule for might mix dimension 1 (Softmax(1), ...)
    return True


def network(model: nn.Module) -> tuple:
    """What makes two models the same network for packing: their modules by name, kind and
    settings (a library module's extra_repr; a user's module's own attributes too, which its
    forward may read), and the shapes of their parameters and buffers; a dropout's rate is left
    out (each member keeps its own)."""
    return tuple((name, type(module).__qualname__, type(module).__module__,
                  "" if type(module) is nn.Dropout else module.extra_repr(), _attributes(module),
                  tuple((n, tuple(t.shape), t.requires_grad) for n, t in module.named_parameters(recurse=False)),
                  tuple((n, tuple(t.shape)) for n, t in module.named_buffers(recurse=False)))
                 for name, module in model.named_modules())


def _attributes(module: nn.Module) -> tuple:
    """A user's module's public attributes that are neither modules nor tensors (a scale, a
    flag): two members whose forwards read different ones are not one network."""
    if type(module).__module__.split(".")[0] in ("torch", "torchvision"):
        return ()
    return tuple(sorted((k, repr(v)) for k, v in vars(module).items()
                        if not k.startswith("_") and k != "training" and not isinstance(v, (nn.Module, torch.Tensor))))


def pack(copies: list[nn.Module], dropout: list[torch.Generator], probe: torch.Tensor) -> nn.Module | None:
    """One model that computes the K `copies` side by side, or None when they do not pack.
    `dropout`: one generator per copy for its dropout masks. `probe`: a few inputs of one copy,
    on which the packed model must agree with every copy, in evaluation and in training mode."""
    if len(copies) < 2 or not packs(copies[0]) or len({network(c) for c in copies}) > 1:
        return None
    packed = copy.deepcopy(copies[0])
    for name, module in copies[0].named_modules():
        kind = type(module)
        if kind in RULES or kind is nn.Dropout:
            same = [c.get_submodule(name) for c in copies]
            try:
                new = PackedDropout([m.p for m in same], dropout) if kind is nn.Dropout else RULES[kind].pack(same)
            except ValueError:
                return None
            parent, _, child = name.rpartition(".")
            setattr(packed.get_submodule(parent), child, new)
    agrees = _agrees(packed, copies, probe, training=False) and _agrees(packed, copies, probe, training=True)
    return packed if agrees else None


def _packed_input(probe: torch.Tensor, k: int) -> torch.Tensor:
    return probe.repeat(1, k, *[1] * (probe.dim() - 2))  # every copy sees the probe


@torch.no_grad()
def _agrees(packed: nn.Module, copies: list[nn.Module], probe: torch.Tensor, training: bool) -> bool:
    """Whether the packed model's outputs are the copies' outputs on `probe`. In training mode
    (dropout off, buffers given back after: nothing changes) this also tells a forward that
    trains otherwise than it evaluates (a member's own argument read there), and the packed
    forward must draw nothing from torch's global generator: stochastic depth, F.dropout or
    randn_like in a forward would be one draw for all the copies."""
    models = (packed, *copies)
    modes = [m.training for m in models]
    buffers = [{n: b.clone() for n, b in m.named_buffers()} for m in models]
    try:
        for m in models:
            m.train(training)
            for module in m.modules():
                if type(module) in (nn.Dropout, PackedDropout):  # a subclass of Dropout may draw globally
                    module.eval()
        with torch.random.fork_rng(devices=[]):
            expected = [c(probe) for c in copies]
            before = torch.get_rng_state()
            out = packed(_packed_input(probe, len(copies)))
            if not torch.equal(before, torch.get_rng_state()):
                return False
        if out.shape != (len(probe), sum(e.shape[1] for e in expected), *expected[0].shape[2:]):
            return False
        return all(torch.allclose(o, e, rtol=1e-3, atol=1e-4)
                   for o, e in zip(out.chunk(len(copies), 1), expected))
    except Exception:  # noqa: BLE001 - a forward that cannot take packed inputs: it does not pack
        return False
    finally:
        for m, mode, held in zip(models, modes, buffers):
            m.train(mode)
            for name, buffer in m.named_buffers():
                buffer.copy_(held[name])


def unpack(packed: nn.Module, copies: list[nn.Module]) -> None:
    """Write the packed model's parameters and buffers back into the K `copies`."""
    for name, module in copies[0].named_modules():
        rule = RULES.get(type(module))
        if rule is not None:
            _copy_into(packed.get_submodule(name), [c.get_submodule(name) for c in copies], rule.unpack)


# ---------------------------------------------------------------- the seeds of one training

# Independent random streams of a run, each seeded from the run's seed: the initial weights
# and then dropout draw from torch's global generator, forked for the run and re-seeded.
INIT, ORDER, AUGMENT, PERMUTE, EVAL_PERMUTE, DROPOUT, INPUT, EVAL_INPUT = range(8)
SOURCE = {INIT: "init", ORDER: "order", AUGMENT: "augment", PERMUTE: "augment", EVAL_PERMUTE: "augment",
          DROPOUT: "dropout", INPUT: "augment", EVAL_INPUT: "augment"}  # config.SEED_SOURCES, per stream
FIXED = -1  # the seed of the streams a run does not vary (config.seed_source): no run's own


def stream_seed(seed: int, stream: int, source: str = "all") -> int:
    """The seed of a run's `stream`: from the run's seed where its `source` (config.seed_source)
    varies it, else from FIXED, the same for every seed."""
    return source_seed(seed, stream, source) * 1_000_003 + stream


def source_seed(seed: int, stream: int, source: str = "all") -> int:
    """The seed `stream` of a run of `seed` draws from: its own where `source` varies the stream, FIXED otherwise."""
    return seed if source == "all" or SOURCE[stream] == source else FIXED


def seeded(seed: int, stream: int, device: torch.device | str = "cpu", source: str = "all") -> torch.Generator:
    return torch.Generator(device).manual_seed(stream_seed(seed, stream, source))


class MemberParameters:
    """Each member's trainable parameters as views of its blocks of the packed model's: an
    optimiser given a member's views steps that member alone, in place, with its own settings.
    `share_grads` hands each member its blocks of the packed gradients after a backward."""

    def __init__(self, packed: nn.Module, template: nn.Module, k: int):
        self.pairs: list[tuple[torch.Tensor, Rule, list[torch.Tensor]]] = []
        self.k = k
        for name, module in template.named_modules():
            rule = RULES.get(type(module))
            if rule is None:
                continue
            for parameter in packed.get_submodule(name).parameters(recurse=False):
                if parameter.requires_grad:
                    self.pairs.append((parameter, rule, list(rule.unpack(parameter.detach(), k))))

    def of(self, member: int) -> list[torch.Tensor]:
        return [views[member] for _, _, views in self.pairs]

    def share_grads(self) -> None:
        for parameter, rule, views in self.pairs:
            grads = [None] * self.k if parameter.grad is None else rule.unpack(parameter.grad, self.k)
            for view, grad in zip(views, grads):
                view.grad = grad

    def zero_grad(self) -> None:
        for parameter, _, views in self.pairs:
            parameter.grad = None
            for view in views:
                view.grad = None


class Members:
    """The K runs training together in `net` (K = 1: one model, `net` is its only copy): each
    member's seed and seed source, its generators, which members still train, and the weights a
    diverged one stopped with."""

    def __init__(self, seeds: list[int], net: nn.Module, copies: list[nn.Module], sources: list[str] | None = None):
        self.seeds, self.net, self.copies = list(seeds), net, copies
        self.sources = list(sources or ["all"] * len(seeds))
        self.status = ["ok"] * len(seeds)
        self.live = list(range(len(seeds)))  # the copies still training
        self._stopped: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.seeds)

    def generators(self, stream: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
        """One generator per member for `stream`, each at its start."""
        return [seeded(seed, stream, device, source) for seed, source in zip(self.seeds, self.sources)]

    def parameters(self) -> MemberParameters | None:
        """The members' own parameters in the packed model (None for one model: its own)."""
        return MemberParameters(self.net, self.copies[0], len(self)) if len(self) > 1 else None

    def stop(self, c: int) -> None:
        """Copy `c` diverged: it trains no more, and keeps the weights it has now, as its
        unpacked run's would."""
        self.status[c] = "diverged"
        self.live.remove(c)
        if len(self) > 1:
            unpack(self.net, self.copies)
            self._stopped[c] = copy.deepcopy(self.copies[c].state_dict())

    def models(self) -> list[nn.Module]:
        """Each member's model with its final weights."""
        if len(self) > 1:
            unpack(self.net, self.copies)
            for c, state in self._stopped.items():
                self.copies[c].load_state_dict(state)
        return self.copies
