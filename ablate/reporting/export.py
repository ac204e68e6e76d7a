"""`ablate export`: a study's runs into the trackers people already use. One tracked run per
ablate run: its settings and model arguments as parameters, its loss and metrics per epoch
and split as steps, its study, variant, seed and ids as tags. The trackers' own libraries
write them (`tensorboard`, `mlflow-skinny`: the extras `ablate[tensorboard]`, `ablate[mlflow]`).
A run already exported (its directory, or its `ablate.run_id` tag) is left as it is, so
exporting again after a `--resume` adds only the new runs."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ablate import metrics as task_metrics
from ablate import schema
from ablate.errors import UsageError

TRACKERS = ("tensorboard", "mlflow")


@dataclass(frozen=True)
class Exported:
    runs: int  # exported now
    kept: int  # already there, left as they were
    failed: int  # failed runs: no epoch to export
    where: str


def _library(name: str, package: str, extra: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise UsageError(f"--to {extra} needs the {package} package: pip install 'ablate[{extra}]'") from None


def _params(first: pd.Series) -> dict:
    """A run's settings and model arguments with a value (nulls are settings it does not use)."""
    outcomes = schema.outcome_names() | {c.name for c in schema.of_kind(schema.KEY)}
    said = {}
    for name, value in first.items():
        if name in outcomes or name == "error" or value is None or value is pd.NA or \
                (isinstance(value, float) and value != value):
            continue
        said[name] = value.item() if hasattr(value, "item") else value
    return said


def _scalars(rows: pd.DataFrame) -> list[tuple[str, str, int, float]]:
    """(split, name, epoch, value) of every number a run recorded: the loss and its task's
    metrics per split, the learning rate of each epoch."""
    metrics = ["loss", *(m.name for m in task_metrics.present(rows))]
    out = []
    for _, row in rows.sort_values(["epoch", "split"]).iterrows():
        epoch = int(row["epoch"])
        for name in metrics:
            if pd.notna(row[name]):
                out.append((row["split"], name, epoch, float(row[name])))
        if row["split"] == "train" and epoch >= 1 and pd.notna(row["lr"]):
            out.append(("train", "lr", epoch, float(row["lr"])))
    return out


def _runs(frame: pd.DataFrame):
    """Each run's rows, in the file's order; the failed ones (no epoch) counted apart."""
    for run_id, rows in frame.groupby("run_id", sort=False):
        yield run_id, rows


_SAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


def _component(text: str) -> str:
    """A name from a results file as one folder name: it never leaves the export folder."""
    safe = _SAFE.sub("_", str(text)).strip(".") or "_"
    return safe[:100]


def to_tensorboard(frame: pd.DataFrame, folder: Path) -> Exported:
    """TensorBoard event files, a folder per run: FOLDER/STUDY/VARIANT/seed-N (`tensorboard
    --logdir FOLDER`): scalars `loss/test`, `accuracy/test`, `lr/train`, ... at each epoch, the
    settings as hyper-parameters (the HParams tab), the ids as text."""
    _library("tensorboard", "tensorboard", "tensorboard")
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    folder = Path(folder)
    done = kept = failed = 0
    for run_id, rows in _runs(frame):
        first = rows.iloc[0]
        finished = rows[rows["epoch"].notna()]
        if finished.empty:
            failed += 1
            continue
        where = folder / _component(first["study"]) / _component(first["variant"]) / f"seed-{int(first['seed'])}"
        if where.is_dir() and any(where.glob("events.out.tfevents.*")):
            kept += 1
            continue
        with SummaryWriter(log_dir=str(where)) as writer:
            for split, name, epoch, value in _scalars(finished):
                writer.add_scalar(f"{name}/{split}", value, epoch)
            ids = {k: str(first[k]) for k in ("study", "variant", "seed", "run_id", "config_id", "status")}
            writer.add_text("ablate", "  \n".join(f"{k}: {v}" for k, v in ids.items()), 0)
            last = finished[finished["epoch"] == finished["epoch"].max()]
            final = {f"final/{split}_{name}": value for split, name, epoch, value in _scalars(last)
                     if name != "lr"}
            params = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in _params(first).items()}
            for summary in hparams(params, final):  # the HParams tab, in this run's own event file
                writer.file_writer.add_summary(summary)
            for name, value in final.items():
                writer.add_scalar(name, value, int(last["epoch"].iloc[0]))
        done += 1
    return Exported(done, kept, failed, str(folder))


def mlflow_uri(where: str | None) -> str:
    """The tracking URI: a URI as given (http://, file:, sqlite:, databricks), else a folder
    (default mlruns/) as a file URI."""
    if where and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", where) and not re.match(r"^[A-Za-z]:[\\/]", where):
        return where
    return Path(where or "mlruns").resolve().as_uri()


def to_mlflow(frame: pd.DataFrame, where: str | None) -> Exported:
    """MLflow: an experiment per study, a run per ablate run (named `VARIANT seed N`), its
    settings as params, `train_loss`, `test_loss`, `test_accuracy`, `lr`, ... per epoch as
    steps, and tags `ablate.study`, `ablate.variant`, `ablate.seed`, `ablate.run_id`."""
    _library("mlflow", "mlflow-skinny", "mlflow")
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri(where)
    if uri.startswith("file:"):  # MLflow 3 keeps its folder store for those who ask: this export does
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    done = kept = failed = 0
    now = int(time.time() * 1000)
    experiments: dict[str, tuple[str, set]] = {}
    for run_id, rows in _runs(frame):
        first = rows.iloc[0]
        study = str(first["study"])
        if study not in experiments:
            found = client.get_experiment_by_name(study)
            experiment = found.experiment_id if found is not None else client.create_experiment(study)
            there, token = set(), None
            while True:
                page = client.search_runs([experiment], max_results=1000, page_token=token)
                there |= {r.data.tags.get("ablate.run_id") for r in page}
                token = page.token
                if not token:
                    break
            experiments[study] = (experiment, there)
        experiment, there = experiments[study]
        if run_id in there:
            kept += 1
            continue
        finished = rows[rows["epoch"].notna()]
        tags = {"ablate.study": study, "ablate.variant": str(first["variant"]), "ablate.seed": str(int(first["seed"])),
                "ablate.run_id": str(run_id), "ablate.config_id": str(first["config_id"]),
                "ablate.status": str(first["status"])}
        run = client.create_run(experiment, run_name=f"{first['variant']} seed {int(first['seed'])}", tags=tags)
        params = [Param(k, str(v)[:6000]) for k, v in _params(first).items()]
        metrics = [Metric(f"{split}_{name}" if name != "lr" else "lr", value, now, epoch)
                   for split, name, epoch, value in _scalars(finished)]
        for start in range(0, len(params), 100):  # MLflow's limits: 100 params, 1,000 metrics a batch
            client.log_batch(run.info.run_id, params=params[start:start + 100])
        for start in range(0, len(metrics), 1000):
            client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000])
        if finished.empty and pd.notna(first.get("error")):
            client.set_tag(run.info.run_id, "ablate.error", str(first["error"])[:5000])
        client.set_terminated(run.info.run_id, "FAILED" if finished.empty else "FINISHED")
        there.add(run_id)
        failed += finished.empty
        done += 1
    return Exported(done, kept, failed, uri)

