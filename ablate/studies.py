"""The studies: each a base configuration plus named variants, looked up by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from ablate.errors import unknown_name


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    variants: dict[str, dict]  # variant name -> the RunConfig fields it sets
    factors: tuple[str, ...]  # the fields the variants vary: the summary's columns
    base: dict = field(default_factory=dict)  # RunConfig fields every variant of the study sets


STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    if study.name in STUDIES:
        raise ValueError(f"study {study.name!r} is already registered")
    STUDIES[study.name] = study
    return study


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise unknown_name("study", name, list(STUDIES))
    return STUDIES[name]


register_study(Study(
    "linearity",
    "The tutorial net with its ReLUs, without them (max-pools kept), and without them with fc1 doubled.",
    variants={
        "relu": {"activation": "relu", "fc1_features": 120},
        "linear": {"activation": "none", "fc1_features": 120},
        "linear-wide": {"activation": "none", "fc1_features": 240},
    },
    factors=("activation", "fc1_features"),
))
