"""Pretrained weights for the models ablate trains (`--weights SPEC`): a torchvision weights
name for a torchvision classifier, or a local file (.safetensors, or a .pt/.pth state dict)
for any model. The classifier head is the model's own, fresh from the run's seed: every
entry that depends on the class count (found by building the model for one class more) is
left out of the weights, so that the head fits the dataset's classes."""

from __future__ import annotations

import functools
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ablate import arch
from ablate.counting.fake_run import build_meta
from ablate.errors import UsageError, first_line, unknown_name
from ablate.transforms import IMAGENET_MEAN, IMAGENET_STD

FILE_SUFFIXES = (".safetensors", ".pt", ".pth")


def is_file(spec: str) -> bool:
    """A path (it has a folder or a weights file's suffix), not a torchvision weights name."""
    return spec.lower().endswith(FILE_SUFFIXES) or "/" in spec or os.sep in spec or Path(spec).exists()


def describe(spec: str) -> str:
    return f"--weights {spec!r}"


def torchvision_weights(model: str, spec: str):
    """The torchvision weights `spec` names for `model`: DEFAULT, IMAGENET1K_V1, ... (or the
    enum's full name, ResNet18_Weights.IMAGENET1K_V1)."""
    if model not in arch.torchvision_models():
        arch.model_source(model)  # a name that is no model at all says so first
        raise UsageError(f"{describe(spec)}: model {model!r} has no torchvision weights; give a weights file "
                         f"({', '.join(FILE_SUFFIXES)}) or a torchvision classifier (`ablate list models`)")
    import torchvision

    enum = torchvision.models.get_model_weights(model)
    name = spec.removeprefix(f"{enum.__name__}.")
    names = [m.name for m in enum]
    if name == "DEFAULT":
        return enum.DEFAULT
    if name not in names:
        raise unknown_name(f"weights for {model}", spec, ["DEFAULT", *names],
                           hint=f"allowed: DEFAULT, {', '.join(names)}, or a weights file "
                                f"({', '.join(FILE_SUFFIXES)})")
    return enum[name]


def check(spec: str) -> None:
    """`spec` is not empty (what it names is looked up by `get`, once)."""
    if not spec.strip():
        raise UsageError("--weights is empty: give a torchvision weights name (DEFAULT, IMAGENET1K_V1, ...) or a "
                         f"weights file ({', '.join(FILE_SUFFIXES)})")


@dataclass(frozen=True)
class Preprocessing:
    """What the weights were trained to see: the side of their crop and their normalisation."""

    image_size: int
    normalization: str | None  # ablate's name for their mean and std; None: one ablate does not have
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def describe(self) -> str:
        return (f"{self.image_size}x{self.image_size}, mean {', '.join(map(str, self.mean))}, "
                f"std {', '.join(map(str, self.std))}")


@dataclass(eq=False)
class Weights:
    """--weights SPEC of one model, made once where the study is prepared: a file's absolute
    path, its SHA-256 and its tensors, read together from one reading of its bytes; or the
    torchvision weights a name chose (downloaded once, when first needed). Every run and every
    worker trains from these tensors (they travel with the work): a file changed while a study
    runs changes nothing."""

    model: str
    spec: str  # as the user wrote it: the `weights` column
    identity: str  # "sha256:..." of a file's bytes, or "ResNet18_Weights.IMAGENET1K_V1" for DEFAULT
    path: Path | None = None  # a file's absolute path
    torchvision: object = None  # the torchvision weights enum member a name chose
    _state: dict | None = None

    @property
    def preprocessing(self) -> Preprocessing | None:
        """The weights' own preprocessing, where they define one (torchvision's do; a file does not)."""
        if self.torchvision is None:
            return None
        transform = self.torchvision.transforms()
        mean, std = tuple(transform.mean), tuple(transform.std)
        side = transform.crop_size[0] if isinstance(transform.crop_size, (list, tuple)) else transform.crop_size
        return Preprocessing(int(side), "imagenet" if (mean, std) == (IMAGENET_MEAN, IMAGENET_STD) else None,
                             mean, std)

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors, on the CPU: a file's as read when made; torchvision's downloaded once."""
        if self._state is None:
            self._state = _torchvision_state(self.torchvision, self.model, self.spec)
        return self._state

    def describe(self) -> str:
        return describe(self.spec)


_MADE: dict[tuple[str, str], Weights] = {}  # (model, spec) -> its Weights: this process's, made once


def get(model: str, spec: str) -> Weights:
    """The `Weights` of `spec` for `model`, made on first use (the file read, or the torchvision
    name looked up) and the same object after: one reading per process. A worker is given the
    driver's (`provide`) with its work, before any run."""
    key = (model, spec)
    if key not in _MADE:
        check(spec)
        if is_file(spec):
            try:
                path = Path(spec).resolve()
            except (RuntimeError, OSError) as error:  # a loop of symbolic links, a name the system refuses
                raise UsageError(f"{describe(spec)}: cannot follow this path ({first_line(error)})") from None
            identity, state = _read(path, spec)
            _MADE[key] = Weights(model, spec, identity, path=path, _state=state)
        else:
            chosen = torchvision_weights(model, spec)
            _MADE[key] = Weights(model, spec, str(chosen), torchvision=chosen)
    return _MADE[key]


def provide(made: tuple[Weights, ...]) -> None:
    """Make `made` this process's weights (a worker: those its driver read)."""
    for one in made:
        _MADE[(one.model, one.spec)] = one


def preprocessing(model: str, spec: str | None) -> Preprocessing | None:
    return get(model, spec).preprocessing if spec else None


def weights_dir() -> Path:
    from ablate.data.datasets import cache_dir

    return cache_dir() / "weights"


@functools.cache
def _torchvision_state(weights, model: str, spec: str) -> dict[str, torch.Tensor]:
    """The state of torchvision's `weights` (an enum member), downloaded once into `weights_dir()`."""
    path = weights_dir() / Path(weights.url).name
    try:
        if not path.exists():  # torchvision's file names end in their hash's first digits: it is checked
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            try:
                torch.hub.download_url_to_file(weights.url, str(partial), _hash_prefix(path.name), progress=False)
                partial.replace(path)
            finally:
                partial.unlink(missing_ok=True)
    except Exception as error:  # offline, refused, disk full, a corrupt download: all end the same way
        raise UsageError(f"{describe(spec)}: cannot download {weights} for {model} from {weights.url} "
                         f"({type(error).__name__}: {first_line(error)[:120]}); on a machine without a network, "
                         f"put that file into {weights_dir()} or give a weights file") from None
    try:
        return _state_dict(torch.load(path, map_location="cpu", weights_only=True), describe(spec))
    except Exception as error:  # truncated or changed since it was downloaded
        raise UsageError(f"{describe(spec)}: the downloaded {path} cannot be read ({type(error).__name__}: "
                         f"{first_line(error)[:120]}); delete it to download it again") from None


def forget() -> None:
    """Read every weights file and torchvision's weights afresh (tests)."""
    _MADE.clear()
    _torchvision_state.cache_clear()


def _hash_prefix(name: str) -> str | None:
    """The SHA-256 prefix torchvision puts in its file names (resnet18-f37072fd.pth)."""
    tail = Path(name).stem.rpartition("-")[2]
    return tail if len(tail) >= 6 and all(c in "0123456789abcdef" for c in tail) else None


def _read(path: Path, spec: str) -> tuple[str, dict[str, torch.Tensor]]:
    """A weights file's SHA-256 and its tensors, from one reading of its bytes."""
    where = describe(spec)
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise UsageError(f"{where}: a weights file ends in {', '.join(FILE_SUFFIXES)}")
    if not path.is_file():
        raise UsageError(f"{where}: no such file" if not path.exists() else f"{where}: not a file")
    try:
        content = path.read_bytes()
    except OSError as error:
        raise UsageError(f"{where}: cannot read it ({error.strerror or error})") from None
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load as load_bytes

            state = load_bytes(content)
        else:
            state = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable, truncated, a pickle of more than tensors
        raise UsageError(f"{where}: cannot read it as weights ({type(error).__name__}: "
                         f"{first_line(error)[:160]})") from None
    return f"sha256:{hashlib.sha256(content).hexdigest()}", _state_dict(state, where)


def _state_dict(state, where: str) -> dict[str, torch.Tensor]:
    """What a weights file holds, where it is a state dict (or a training checkpoint holding one)."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UsageError(f"{where}: holds {type(state).__name__ if not isinstance(state, dict) else 'a dict'} "
                         "that is not a state dict (parameter names to tensors)")
    return state


# ---------------------------------------------------------------- the head


def class_dependent(build: Callable[[int], nn.Module], classes: int) -> list[str]:
    """The state entries of `build(classes)` whose shape changes with the class count: the
    classifier head(s) (ResNet's fc, VGG's classifier.6, GoogLeNet's fc and its aux heads).
    Built on the meta device; none for a model whose outputs do not follow `num_classes`."""
    with torch.random.fork_rng(devices=[]):
        models = [build_meta(lambda n=n: build(n)) for n in (classes, classes + 1)]
    if models[0] is None or models[1] is None:
        return []
    other = models[1].state_dict()
    return [k for k, v in models[0].state_dict().items() if k in other and other[k].shape != v.shape]


def head_entries(model: nn.Module, dependent: list[str]) -> list[str]:
    """The entries `--trainable head` trains: the class-dependent ones, or, for a model that
    has none (a layer stack), those of its last module with parameters."""
    if dependent:
        return [k for k in model.state_dict() if _module_of(k) in {_module_of(d) for d in dependent}]
    last = [name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if not last:
        raise UsageError("the model has no parameter to train")
    return [k for k in model.state_dict() if _module_of(k) == last[-1]]


def _module_of(entry: str) -> str:
    return entry.rpartition(".")[0]


def _aligned(state: dict, own: dict) -> dict:
    """`state` with the keys of `own`'s wrapper: a torchvision net's weights fit ablate's
    GrayToRGB(net) ("model." in front), and the weights of one fit the bare net."""
    if set(state) & set(own):
        return state
    prefix = "model."
    if all(k.startswith(prefix) for k in own):
        return {prefix + k: v for k, v in state.items()}
    if all(k.startswith(prefix) for k in state):
        return {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def load(model: nn.Module, state: dict, head: list[str], where: str) -> str:
    """Load `state` into `model`, every entry but `head` (kept as initialised); say what was
    replaced. Weights that do not fit: one line naming the first entry that does not."""
    own = model.state_dict()
    state = _aligned(state, own)
    for name, tensor in own.items():
        if name in head:
            continue
        if name not in state:
            raise UsageError(f"{where} do not fit the model: they have no {name!r} "
                             f"(shape {tuple(tensor.shape)} in the model)")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UsageError(f"{where} do not fit the model: {name!r} has shape {tuple(state[name].shape)} there "
                             f"and {tuple(tensor.shape)} in the model")
    extra = [k for k in state if k not in own]
    if extra:
        raise UsageError(f"{where} do not fit the model: they hold {extra[0]!r}, which the model has not")
    with torch.no_grad():
        for name, tensor in own.items():
            if name not in head:
                tensor.copy_(state[name])
    modules = list(dict.fromkeys(_module_of(k) for k in head))
    if not modules:
        return f"{where}: every entry loaded (no entry depends on the class count)"
    shapes = ", ".join(f"{k} {tuple(state[k].shape)} -> {tuple(own[k].shape)}" for k in head
                       if k.endswith("weight") and k in state)
    return (f"{where}: head {', '.join(modules)} replaced by a fresh one for the data's classes"
            + (f" ({shapes})" if shapes else ""))
