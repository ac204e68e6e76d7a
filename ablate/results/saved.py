"""Saved runs read back: a results row's configuration, and the weights --save-models kept
beside the results (the autoencoder figures use them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ablate import arch
from ablate import schema
from ablate.config import column
from ablate.data.datasets import Dataset
from ablate.errors import UsageError
from ablate.results import files as results
from ablate.training.train import RunConfig, build_model


def config_from_row(row: pd.Series) -> RunConfig:
    """The configuration a results row records: its fields and the model's arguments."""
    types = schema.types(schema.settings())
    values = {}
    for field_name in RunConfig.__dataclass_fields__:
        column_name = column(field_name)
        if field_name == "model_args" or column_name not in row:
            continue
        value = row[column_name]
        values[field_name] = None if pd.isna(value) else types[column_name](value)
    config = RunConfig(**values)
    source = arch.model_source(config.model)
    args = {}
    for name in source.knobs:  # each as its declared type: the text of a tuple is a tuple again
        if name in row and not pd.isna(row[name]):
            value = row[name]
            args[name] = source.typed(name, value.item() if hasattr(value, "item") else value)
    return config.with_fields(**args)


def load_run_model(path: Path, row: pd.Series, data: Dataset) -> torch.nn.Module:
    """The final weights of the run of `row`, saved beside the results `path` (--save-models)."""
    from safetensors.torch import load_file

    weights = results.models_path(path) / f"{row['run_id']}.safetensors"
    if not weights.exists():
        raise UsageError(f"no saved weights for {row['variant']} seed {row['seed']} ({weights}): train the study "
                         "with --save-models")
    model = build_model(config_from_row(row), data.shape[0], len(data.classes), data.shape[1])
    model.load_state_dict(load_file(weights))
    return model.eval()
