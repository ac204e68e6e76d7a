"""The results schema, its one owner: every column of a study file, with its Python type and
its kind. Every list of columns ablate uses (a file's Arrow schema, what a reader checks, the
outcomes that are no setting, the names a model argument or a plugin's metric may not take)
is derived from this table.

Kinds: `key` (which run, epoch and split a row is), `setting` (a RunConfig field), `argument`
(a constructor argument of the run's model), `outcome` (what the run measured or was), and
`metric` (a task's metric: accuracy, PSNR, a plugin's). No torch is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ablate.config import FIELDS, SETTINGS, column
from ablate.metrics import METRICS

KEY, SETTING, ARGUMENT, OUTCOME, METRIC = "key", "setting", "argument", "outcome", "metric"


@dataclass(frozen=True)
class Column:
    name: str
    type: type  # int, float, str or bool; every column may be null
    kind: str


# In file order: the head, then the settings and the models' arguments, then the tail.
HEAD = (
    Column("study", str, KEY), Column("variant", str, KEY), Column("seed", int, KEY), Column("epoch", int, KEY),
    Column("split", str, KEY), Column("loss", float, OUTCOME), Column("accuracy", float, METRIC),
    Column("psnr", float, METRIC), Column("lr", float, OUTCOME),  # lr: each epoch's rate (base_lr: the setting)
    Column("seconds", float, OUTCOME), Column("status", str, OUTCOME), Column("error", str, OUTCOME),
    Column("run_id", str, KEY), Column("config_id", str, KEY),
)
TAIL = (
    Column("latent_corr", float, OUTCOME),  # a model with encode(): mean |Pearson r| of its code, last epoch
    Column("params", int, OUTCOME), Column("trainable_params", int, OUTCOME), Column("flops", int, OUTCOME),
    Column("train_flops", int, OUTCOME),  # forward and backward FLOPs of the training up to this epoch
    Column("input_shape", str, OUTCOME),  # CxHxW the model was given (after --image-size, padding): `ablate params --input`
    Column("device", str, OUTCOME), Column("packed", int, OUTCOME),  # seeds trained as one model with it
)
# A row's identity: never null (`status` too), and what a reader needs to tell runs apart.
IDENTITY = ("study", "variant", "seed", "run_id", "config_id", "status")
REQUIRED = ("study", "variant", "seed", "epoch", "split", "run_id", "config_id", "status", "loss", "accuracy")
# The per-class file beside a study file (_per_class/): one row per (run, class) of the last epoch's test split.
PER_CLASS = (
    Column("study", str, KEY), Column("variant", str, KEY), Column("seed", int, KEY), Column("run_id", str, KEY),
    Column("config_id", str, KEY), Column("class_index", int, KEY), Column("class_name", str, KEY),
    Column("images", int, OUTCOME), Column("accuracy", float, METRIC),
)
PER_CLASS_REQUIRED = ("study", "seed", "run_id", "class_index", "class_name", "accuracy")  # what its readers need


def settings() -> tuple[Column, ...]:
    """Each RunConfig field's column (`lr` is `base_lr` there)."""
    return tuple(Column(column(name), s.kind, SETTING) for name, s in SETTINGS.items())


def table(arguments: dict[str, type] | None = None, metrics: tuple[str, ...] = ()) -> tuple[Column, ...]:
    """Every column of a study file, in file order: `arguments` are the models' constructor
    arguments with their column types, `metrics` the tasks' metrics beyond accuracy and PSNR."""
    known = {c.name for c in (*HEAD, *TAIL)}
    return (*HEAD, *settings(), *(Column(n, t, ARGUMENT) for n, t in (arguments or {}).items()), *TAIL,
            *(Column(n, float, METRIC) for n in dict.fromkeys(metrics) if n not in known))


def types(columns: tuple[Column, ...]) -> dict[str, type]:
    return {c.name: c.type for c in columns}


def of_kind(*kinds: str) -> tuple[Column, ...]:
    """The fixed columns (head, settings, tail) of these kinds, a plugin's metrics too."""
    return tuple(c for c in table(metrics=tuple(METRICS)) if c.kind in kinds)


def outcome_names() -> set[str]:
    """The columns a run's outcome fills, never one of its settings: everything but the
    study, the variant, the settings and the models' arguments."""
    return {c.name for c in of_kind(KEY, OUTCOME, METRIC)} - {"study", "variant"}


def reserved_names() -> set[str]:
    """Names a model's constructor argument cannot be set or recorded under, nor a plugin's
    metric take: the columns ablate fills and the settings (a model's `seed` or `lr` argument
    keeps its own default)."""
    return {c.name for c in table(metrics=tuple(METRICS))} | FIELDS | {"model_args"}
