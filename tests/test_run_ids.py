"""Run ids of the previous release: every built-in study's, and sweeps whose values are written
in their argument's type. A change re-identifies saved runs (--resume would train them again)."""

import json
from pathlib import Path

import pytest

from ablate.study import planning, studies

PREVIOUS = json.loads((Path(__file__).parent / "data" / "run_ids_previous_release.json").read_text())
# Changed on purpose, each a row that recorded what its run did not train with: onecycle used to cycle the
# momentum (torch's default) and start at lr_max / 25 whatever lr was, and now follows what was asked and
# records cycle_momentum = False; rmsprop recorded momentum null and trained with 0, and now records 0.0.
CHANGED = {("scheduler", "onecycle"), ("optimizer", "rmsprop")}
SWEEPS = {  # the sweeps of the recorded file: --vary items, --model
    "sweep lr=0.01,0.1": (["lr=0.01,0.1"], None),
    "sweep dropout=0.0,0.5 batchnorm=False,True": (["dropout=0.0,0.5", "batchnorm=False,True"], "threeconv"),
    "sweep activation=relu,tanh conv1_channels=6,12": (["activation=relu,tanh", "conv1_channels=6,12"], None),
    "sweep hidden=(512,),(32, 16)": (["hidden=(512,),(32, 16)"], "mlp"),
    "sweep scheduler=cosine,step,exponential": (["scheduler=cosine,step,exponential"], None),
    "sweep optimizer=sgd,adam": (["optimizer=sgd,adam"], None),
}
COMPONENTS = {  # component studies, made from their --component items like sweeps: --component items, --model
    "components normalization=none,standard dropout=0,0.5": (["normalization=none,standard", "dropout=0,0.5"],
                                                              "threeconv"),
}


def _ids(study, options):
    return {r.variant: r.run_id for r in planning.plan(study, {"dataset": "synthetic", "epochs": 2, **options}, 1)}


@pytest.mark.parametrize("name", [n for n in PREVIOUS if not n.startswith(("sweep ", "components "))])
def test_a_built_in_study_keeps_its_run_ids(name):
    now = _ids(studies.get_study(name), {})
    before = PREVIOUS[name]
    assert list(now) == list(before)
    for variant, run_id in now.items():
        assert (run_id == before[variant]) != ((name, variant) in CHANGED), (name, variant)


@pytest.mark.parametrize("name", list(SWEEPS))
def test_a_sweep_written_in_its_arguments_types_keeps_its_run_ids(name):
    vary, model = SWEEPS[name]
    study = studies.get_study("sweep", vary=vary, model=model)
    assert _ids(study, {"model": model} if model else {}) == PREVIOUS[name]


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_a_component_study_keeps_its_run_ids(name):
    component, model = COMPONENTS[name]
    study = studies.get_study("components", component=component, model=model)
    assert _ids(study, {"model": model}) == PREVIOUS[name]


def test_the_file_covers_every_built_in_study():
    built_in = {n for n, owner in studies.STUDIES.owners.items() if owner == "ablate"}
    assert built_in - {"sweep", "components"} <= set(PREVIOUS)
